//! Status of the mass-deletion guard of one CalendarConnection (`status.deletionGuard`) and the
//! annotation users decide with. The rules live in `engine::guard`.
//!
//! Owns: the persisted shape (it must survive a restart: a guard that is holding keeps holding).
//! Must not touch: any decision.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a CalendarConnection whose guard is holding deletions: the number of held
/// deletions to let through (it must equal the number held now), or `cancel` to keep the events
/// in the calendar and release the TaskSyncs. Removed by the engine once acted on.
pub const CONFIRM_DELETIONS_ANNOTATION: &str = "calendar.getitdone.app/confirm-deletions";

/// Where the guard of a connection stands.
///
/// The `Option` fields serialize as `null` rather than being left out: on Kubernetes the status
/// is written with a JSON merge patch, where a key left out keeps its old value and only `null`
/// clears it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionGuardStatus {
    /// Start of the current counting window.
    #[serde(default)]
    pub window_start: Option<DateTime<Utc>>,
    /// Calendar deletions let through since `windowStart`.
    #[serde(default)]
    pub deleted_in_window: u32,
    /// Deletions waiting for a decision (0 when not holding).
    #[serde(default)]
    pub held: u32,
    /// The connection's events when last counted (those deleted in the window included).
    #[serde(default)]
    pub total: u32,
    /// When the guard started holding; unset when it is not.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// The last decision taken; it applies to the TaskSyncs that were held when it was taken
    /// (see `coversMarkedUntil`).
    #[serde(default)]
    pub decision: Option<GuardDecision>,
}

impl DeletionGuardStatus {
    pub fn holding(&self) -> bool {
        self.since.is_some()
    }
}

/// A decision about held deletions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardDecision {
    pub action: GuardAction,
    /// When the decision was taken.
    pub at: DateTime<Utc>,
    /// How many deletions were held then.
    pub count: u32,
    /// The latest deletion mark (`deletionTimestamp`) among those held: the decision applies to
    /// TaskSyncs marked at or before it. Store time, so it never mixes clocks with `at`.
    #[serde(default)]
    pub covers_marked_until: Option<DateTime<Utc>>,
}

/// Confirm (delete the held events) or cancel (keep them, release the TaskSyncs).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GuardAction {
    Confirm,
    Cancel,
}
