//! Sync history entries and the bounded rings that hold them in resource status.
//!
//! Owns: the entry shape and ring arithmetic. Must not touch: where a ring lives (the store) or
//! when an entry is written (the engine).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Entries kept on a CalendarConnection: the user's sync history, served by `/sync-history`.
pub const CONNECTION_HISTORY_LIMIT: usize = 200;
/// Entries kept on a TaskSync.
pub const TASK_HISTORY_LIMIT: usize = 20;

/// Which way a sync went, as in the seed's `sync_direction`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ToCalendar,
    FromCalendar,
}

/// Outcome of one operation, as in the seed's `sync_status`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Pending,
    Success,
    Failed,
}

/// What was done to the calendar event.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    Create,
    Adopt,
    Update,
    Delete,
    Orphan,
    Conflict,
    Import,
    /// The user chose a side in a held conflict.
    Resolve,
}

/// One sync operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Monotonically increasing id within the ring that holds the entry.
    pub id: u64,
    /// When the operation finished.
    pub time: DateTime<Utc>,
    /// The app's task id, when the operation concerned a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The provider's event id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `to_calendar` or `from_calendar`.
    pub direction: Direction,
    /// What was done: create, adopt, update, delete, orphan, conflict or import.
    pub operation: Operation,
    /// `pending`, `success` or `failed`.
    pub status: SyncStatus,
    /// Why it failed (no secrets), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was decided and by whom, for a resolved conflict (`kept the calendar's version,
    /// chosen by user:alice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A history ring, shared until it is changed: cloning an object clones its ring by reference.
///
/// Why: a connection's ring holds up to 200 entries of several strings each, and connections
/// are cloned on hot paths (every TaskSync reconcile reads its connection, every REST request
/// lists the user's connections, every committed write goes to the cache): `perf` of the REST
/// write path put 6.7% of the request workers' CPU in cloning history entries. Reads go through
/// `Deref`; a write (`DerefMut`, `push`) copies the ring first when another clone shares it.
/// On the wire it is the plain array it always was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History(std::sync::Arc<Vec<HistoryEntry>>);

impl std::ops::Deref for History {
    type Target = Vec<HistoryEntry>;
    fn deref(&self) -> &Vec<HistoryEntry> {
        &self.0
    }
}

impl std::ops::DerefMut for History {
    fn deref_mut(&mut self) -> &mut Vec<HistoryEntry> {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl From<Vec<HistoryEntry>> for History {
    fn from(v: Vec<HistoryEntry>) -> Self {
        History(std::sync::Arc::new(v))
    }
}

impl<'a> IntoIterator for &'a History {
    type Item = &'a HistoryEntry;
    type IntoIter = std::slice::Iter<'a, HistoryEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<HistoryEntry>::deserialize(d).map(History::from)
    }
}

impl JsonSchema for History {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <Vec<HistoryEntry>>::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Vec<HistoryEntry>>::json_schema(generator)
    }
    fn inline_schema() -> bool {
        <Vec<HistoryEntry>>::inline_schema()
    }
}

/// Append `entry` with the next id and drop the oldest entries beyond `limit`. Ids keep growing
/// even when old entries are dropped, because the next id derives from the newest entry.
pub fn push(ring: &mut Vec<HistoryEntry>, mut entry: HistoryEntry, limit: usize) -> HistoryEntry {
    entry.id = ring.last().map_or(1, |e| e.id + 1);
    ring.push(entry.clone());
    if ring.len() > limit {
        let excess = ring.len() - limit;
        ring.drain(..excess);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HistoryEntry {
        HistoryEntry {
            id: 0,
            time: DateTime::<Utc>::UNIX_EPOCH,
            task_id: Some("t".into()),
            event_id: None,
            direction: Direction::ToCalendar,
            operation: Operation::Create,
            status: SyncStatus::Success,
            error: None,
            note: None,
        }
    }

    #[test]
    fn ring_is_bounded_and_ids_keep_growing() {
        let mut ring = Vec::new();
        for _ in 0..25 {
            push(&mut ring, entry(), 20);
        }
        assert_eq!(ring.len(), 20);
        assert_eq!(ring.first().map(|e| e.id), Some(6));
        assert_eq!(ring.last().map(|e| e.id), Some(25));
    }

    #[test]
    fn a_cloned_ring_is_shared_until_one_side_writes() {
        let mut a = History::default();
        push(&mut a, entry(), 20);
        let b = a.clone();
        assert!(std::sync::Arc::ptr_eq(&a.0, &b.0), "a clone shares the entries");
        push(&mut a, entry(), 20);
        assert_eq!((a.len(), b.len()), (2, 1), "a write copies first: the clone keeps what it had");
        assert!(!std::sync::Arc::ptr_eq(&a.0, &b.0));
    }

    #[test]
    fn on_the_wire_it_is_a_plain_array() {
        let mut ring = History::default();
        push(&mut ring, entry(), 20);
        let json = serde_json::to_value(&ring).unwrap();
        assert!(json.is_array() && json[0]["id"] == 1, "{json}");
        let back: History = serde_json::from_value(json).unwrap();
        assert_eq!(back, ring);
        let schema = serde_json::to_value(schemars::schema_for!(History)).unwrap();
        assert_eq!(schema["type"], "array", "{schema}");
    }
}
