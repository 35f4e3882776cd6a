//! Status conditions in the `metav1.Condition` shape, and the merge rule every writer uses.
//!
//! Owns: the condition type and `set_condition`. Must not touch: anything beyond one status'
//! condition list (callers decide which conditions exist).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `True`, `False` or `Unknown`, as in `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of the object's state, shaped exactly like `metav1.Condition` so that
/// `kubectl wait --for=condition=Ready` and generic tooling understand it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, e.g. `Ready`, `Synced`, `Authenticated`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds: True, False or Unknown.
    pub status: ConditionStatus,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (not when the condition was last written).
    pub last_transition_time: DateTime<Utc>,
    /// Machine-readable CamelCase reason for the last transition, e.g. `ReconnectRequired`.
    #[schemars(regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"))]
    pub reason: String,
    /// Human-readable message: what happened and what to do about it.
    #[serde(default)]
    pub message: String,
}

impl Condition {
    pub fn new(type_: &str, status: ConditionStatus, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_string(),
            status,
            observed_generation: None,
            last_transition_time: DateTime::<Utc>::UNIX_EPOCH,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Insert or replace the condition of the same type. `lastTransitionTime` moves only when the
/// status flips, so re-writing an unchanged condition leaves the status byte-identical (and the
/// "write status only when changed" guard then skips the write).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, generation: Option<i64>, now: DateTime<Utc>) {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status { old.last_transition_time } else { now };
            *old = new;
        }
        None => {
            new.last_transition_time = now;
            conditions.push(new);
        }
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let t1 = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        let mut cs = Vec::new();
        set_condition(&mut cs, Condition::new("Ready", ConditionStatus::True, "Ok", "fine"), Some(1), t0);
        set_condition(&mut cs, Condition::new("Ready", ConditionStatus::True, "Ok", "still"), Some(2), t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, t0);
        assert_eq!(cs[0].message, "still");
        assert_eq!(cs[0].observed_generation, Some(2));
        set_condition(&mut cs, Condition::new("Ready", ConditionStatus::False, "Bad", "x"), Some(2), t1);
        assert_eq!(cs[0].last_transition_time, t1);
        assert!(!is_true(&cs, "Ready"));
    }
}
