//! The two custom resources (`CalendarConnection`, `TaskSync`), their conditions and history,
//! the labels and deterministic names that tie them together, and CRD generation.
//!
//! Owns: what users write as YAML and read as status. Must not touch: any I/O; reconcile
//! decisions live in `engine`, storage in the `Objects` implementations.

pub mod condition;
pub mod connection;
pub mod guard;
pub mod history;
pub mod push;
pub mod tasksync;

use std::collections::BTreeMap;

use kube::CustomResourceExt;
use sha2::{Digest, Sha256};

pub use condition::{Condition, ConditionStatus};
pub use connection::{
    AUTO_CALENDAR, CalendarConnection, CalendarConnectionSpec, CalendarConnectionStatus, CalendarInfo, ImportSpec,
    ProviderKind, SecretRef,
};
pub use guard::{CONFIRM_DELETIONS_ANNOTATION, DeletionGuardStatus, GuardAction, GuardDecision};
pub use history::{Direction, History, HistoryEntry, Operation, SyncStatus};
pub use push::{PushMode, PushStatus, WatchedCalendar};
pub use tasksync::{
    CalendarEdit, ConflictPolicy, ConnectionRef, DeletionPolicy, HoursRange, MovingFrom, OccurrenceException,
    TaskSchedule, TaskSync, TaskSyncSpec, TaskSyncStatus, Transparency, WorkingHoursSpec,
};

/// API group of both kinds.
pub const GROUP: &str = "calendar.getitdone.app";
/// Finalizer that keeps a TaskSync until its event is deleted (or orphaned).
pub const FINALIZER: &str = "calendar.getitdone.app/event-cleanup";
/// Label with a hash of the user id (user ids need not be valid label values).
pub const USER_LABEL: &str = "calendar.getitdone.app/user";
/// Annotation on a TaskSync with a held conflict: the user's choice, `task` (write the task's
/// version over the calendar's) or `calendar` (the task follows the calendar). Removed by the
/// engine once acted on.
pub const RESOLVE_ANNOTATION: &str = "calendar.getitdone.app/resolve";
/// Who made that choice (recorded in history and the Event); `annotation` when unset.
pub const RESOLVE_BY_ANNOTATION: &str = "calendar.getitdone.app/resolve-by";
/// Label naming the CalendarConnection a TaskSync uses.
pub const CONNECTION_LABEL: &str = "calendar.getitdone.app/connection";
/// Label with a hash of the task id, so a TaskSync can be found by task.
pub const TASK_LABEL: &str = "calendar.getitdone.app/task";

/// Label on a TaskSync of a user who has no connected calendar but an ICS feed: the engine
/// marks it `Synced` (reason `FeedOnly`) without calling any calendar, and the feed serves it.
pub const FEED_ONLY_LABEL: &str = "calendar.getitdone.app/feed-only";
/// `connectionRef.name` of a feed-only TaskSync (the field is required). Reserved: a
/// CalendarConnection of this name is never used for a feed-only TaskSync.
pub const FEED_ONLY_CONNECTION: &str = "ics-feed";

/// Whether a TaskSync is served by the ICS feed only (no calendar).
pub fn is_feed_only(ts: &TaskSync) -> bool {
    ts.metadata.labels.as_ref().and_then(|l| l.get(FEED_ONLY_LABEL)).is_some_and(|v| v == "true")
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// Value of the user label: a stable hash, valid as a label value whatever the user id is.
pub fn user_label_value(user_id: &str) -> String {
    short_hash(&[user_id])
}

/// Value of the task label.
pub fn task_label_value(task_id: &str) -> String {
    short_hash(&[task_id])
}

/// Deterministic CalendarConnection name for (user, provider): repeating a connect never makes
/// a second object.
pub fn connection_name(user_id: &str, provider: ProviderKind) -> String {
    format!("{}-{}", provider.as_str(), short_hash(&[user_id, provider.as_str()]))
}

/// Deterministic TaskSync name for (user, task).
pub fn task_sync_name(user_id: &str, task_id: &str) -> String {
    format!("task-{}", short_hash(&[user_id, task_id]))
}

/// The labels a TaskSync of `user_id` on connection `connection` must carry.
pub fn task_sync_labels(user_id: &str, connection: &str, task_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (USER_LABEL.to_string(), user_label_value(user_id)),
        (CONNECTION_LABEL.to_string(), connection.to_string()),
        (TASK_LABEL.to_string(), task_label_value(task_id)),
    ])
}

/// Both CRDs as one multi-document YAML stream, exactly what `calsync crdgen` prints and what
/// `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in [CalendarConnection::crd(), TaskSync::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_distinct() {
        assert_eq!(task_sync_name("u", "t"), task_sync_name("u", "t"));
        assert_ne!(task_sync_name("u", "t1"), task_sync_name("u", "t2"));
        assert_ne!(task_sync_name("ab", "c"), task_sync_name("a", "bc"));
        assert_ne!(connection_name("u", ProviderKind::Apple), connection_name("u", ProviderKind::Google));
        let v = user_label_value("someone@example.com / with spaces");
        assert!(v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
