//! What live sync asks of the bench calendar service, in live mode (`BenchService::new_live`):
//! a probe answering a per-calendar version (CalDAV's sync-token/getctag), incremental listings
//! from a cursor (the sync-collection REPORT), edits made by a user in the calendar app (no
//! calsync call, no quota), and calls counted per connection, so a scenario can tell what one
//! notification or one poll cost while thousands of other connections are busy.
//!
//! Owns: the per-connection journal. Must not touch: quota, faults or the `Provider` contract
//! (the parent module's), nor anything outside the bench.

use std::collections::HashMap;
use std::sync::Arc;

use super::{BenchService, EventMap, Op, Profile};
use calsync::providers::{EventPage, EventTime, RemoteEvent};

/// Calls one connection made, by kind (counted whether admitted or refused, like `Stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCalls {
    pub probe: u64,
    pub list: u64,
    pub get: u64,
    /// Account, create, update, delete, find-by-key.
    pub other: u64,
}

impl ConnCalls {
    pub(super) fn count(&mut self, op: Op) {
        match op {
            Op::Probe => self.probe += 1,
            Op::List => self.list += 1,
            Op::Get => self.get += 1,
            _ => self.other += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.probe + self.list + self.get + self.other
    }

    /// Calls made since `earlier` (a snapshot of the same connection).
    pub fn since(&self, earlier: &ConnCalls) -> ConnCalls {
        ConnCalls {
            probe: self.probe.saturating_sub(earlier.probe),
            list: self.list.saturating_sub(earlier.list),
            get: self.get.saturating_sub(earlier.get),
            other: self.other.saturating_sub(earlier.other),
        }
    }
}

/// One connection's calendar history, as far as cursors and probes need it.
#[derive(Default)]
pub(super) struct Journal {
    /// Service version of the calendar's last change: what the probe answers.
    version: u64,
    /// Event id → version of its last write, for events that exist.
    written: HashMap<String, u64>,
    /// Event id → version of its deletion (tombstones, kept: bench runs are short).
    deleted: HashMap<String, u64>,
    pub(super) calls: ConnCalls,
}

impl Journal {
    pub(super) fn changed(&mut self, id: &str, version: u64) {
        self.version = version;
        self.deleted.remove(id);
        self.written.insert(id.to_string(), version);
    }

    pub(super) fn removed(&mut self, id: &str, version: u64) {
        self.version = version;
        self.written.remove(id);
        self.deleted.insert(id.to_string(), version);
    }
}

impl EventMap<'_> {
    /// The calendar's fingerprint: changes with every write or deletion on this connection only.
    pub(super) fn probe(&self) -> String {
        format!("ctag-{}", self.journal.version)
    }

    /// Changes since `cursor` (a version this service handed out); everything without one, or
    /// with one it cannot read (then flagged `full_resync`, as a CalDAV server answers an
    /// invalid sync-token).
    pub(super) fn changes_since(&self, cursor: Option<&str>) -> EventPage {
        let since = cursor.map(|c| c.parse::<u64>().ok());
        let next_cursor = Some(self.journal.version.to_string());
        match since {
            Some(Some(v)) => {
                let newer = |id: &String| self.journal.written.get(id).is_some_and(|w| *w > v);
                EventPage {
                    events: self.events.iter().filter(|(id, _)| newer(id)).map(|(_, e)| e.clone()).collect(),
                    removed: self.journal.deleted.iter().filter(|(_, d)| **d > v).map(|(id, _)| id.clone()).collect(),
                    next_cursor,
                    full_resync: false,
                }
            }
            bad_or_none => EventPage {
                events: self.all(),
                removed: vec![],
                next_cursor,
                full_resync: matches!(bad_or_none, Some(None)),
            },
        }
    }

    /// Store `ev` as a new version of itself (a user's save in the calendar app).
    fn replace(&mut self, mut ev: RemoteEvent) -> RemoteEvent {
        *self.version += 1;
        ev.etag = Some(format!("\"{}\"", self.version));
        self.events.insert(ev.id.clone(), ev.clone());
        self.journal.changed(&ev.id, *self.version);
        ev
    }
}

fn shifted(t: &EventTime, by: chrono::Duration) -> EventTime {
    match t {
        EventTime::DateTime { utc, local, zone } => {
            EventTime::DateTime { utc: *utc + by, local: *local + by, zone: zone.clone() }
        }
        EventTime::Date(d) => EventTime::Date(*d + chrono::Duration::days(1)),
    }
}

impl BenchService {
    /// A service that answers probes and honours cursors (what live-sync scenarios need).
    pub fn new_live(profile: Profile) -> Arc<Self> {
        Self::build(profile, true)
    }

    /// A user moves event `id` of connection `conn` by `by` in the calendar app: new times, new
    /// etag, new calendar version. Not a calsync call, so neither counted nor held to the quota.
    /// `None` when the event does not exist.
    pub fn user_edit(&self, conn: &str, id: &str, by: chrono::Duration) -> Option<RemoteEvent> {
        let mut s = self.lock();
        let super::State { events, version, journals, .. } = &mut *s;
        let mut map = EventMap {
            events: events.entry(conn.to_string()).or_default(),
            version,
            journal: journals.entry(conn.to_string()).or_default(),
        };
        let mut ev = map.get(id)?;
        ev.start = shifted(&ev.start, by);
        ev.end = shifted(&ev.end, by);
        Some(map.replace(ev))
    }

    /// Calls connection `conn` made so far.
    pub fn conn_calls(&self, conn: &str) -> ConnCalls {
        self.lock().journals.get(conn).map(|j| j.calls).unwrap_or_default()
    }

    /// Calls of one kind over all connections (cheaper than `stats`, for sampling).
    pub fn calls_of(&self, op: Op) -> u64 {
        let idx = super::OPS.iter().position(|o| *o == op).unwrap_or(0);
        self.calls[idx].load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::CALENDAR;
    use crate::provider::client::BenchProvider;
    use calsync::providers::{Created, Provider, Window};
    use chrono::Utc;

    use crate::provider::tests::event;

    fn window() -> Window {
        Window { from: Utc::now() - chrono::Duration::days(1), to: Utc::now() + chrono::Duration::days(3650) }
    }

    fn unlimited() -> Profile {
        Profile { latency_ms: 0, quota_rps: 0, quota_concurrency: 0, ..Profile::default() }
    }

    #[tokio::test]
    async fn probe_moves_with_own_calendar_only_and_cursors_list_changes() {
        let s = BenchService::new_live(unlimited());
        let (a, b) = (
            BenchProvider { service: s.clone(), conn: "ns/a".into() },
            BenchProvider { service: s.clone(), conn: "ns/b".into() },
        );
        let Created::New(e1) = a.create(CALENDAR, "k1", &event("u1")).await.expect("create") else {
            panic!("a new event")
        };
        a.create(CALENDAR, "k2", &event("u2")).await.expect("create");
        let full = a.list(CALENDAR, window(), None).await.expect("full listing");
        assert_eq!((full.events.len(), full.full_resync), (2, false));
        let (probe_a, probe_b) = (a.probe(CALENDAR).await.expect("probe"), b.probe(CALENDAR).await.expect("probe"));
        b.create(CALENDAR, "k3", &event("u3")).await.expect("create on b");
        assert_eq!(a.probe(CALENDAR).await.expect("probe"), probe_a, "b's writes leave a's calendar version");
        assert_ne!(b.probe(CALENDAR).await.expect("probe"), probe_b);

        let edited = s.user_edit("ns/a", &e1.id, chrono::Duration::minutes(30)).expect("edited");
        assert_ne!(edited.etag, e1.etag);
        assert_ne!(a.probe(CALENDAR).await.expect("probe"), probe_a);
        let inc = a.list(CALENDAR, window(), full.next_cursor.as_deref()).await.expect("incremental");
        assert_eq!(inc.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec![e1.id.as_str()]);
        a.delete(CALENDAR, "k2", None).await.expect("delete");
        let after = a.list(CALENDAR, window(), inc.next_cursor.as_deref()).await.expect("incremental");
        assert_eq!((after.events.len(), after.removed.clone()), (0, vec!["k2".to_string()]));
        let bad = a.list(CALENDAR, window(), Some("not-a-token")).await.expect("rejected cursor");
        assert!(bad.full_resync && bad.events.len() == 1);

        let calls = s.conn_calls("ns/a");
        assert_eq!((calls.probe, calls.list, calls.get, calls.other), (3, 4, 0, 3));
        assert_eq!(s.calls_of(Op::Probe), 5);
    }

    #[tokio::test]
    async fn without_live_mode_nothing_changes() {
        let s = BenchService::new(unlimited());
        let a = BenchProvider { service: s.clone(), conn: "ns/a".into() };
        a.create(CALENDAR, "k1", &event("u1")).await.expect("create");
        assert_eq!(a.probe(CALENDAR).await.expect("no probe"), None);
        let page = a.list(CALENDAR, window(), None).await.expect("listing");
        assert_eq!((page.events.len(), page.next_cursor), (1, None));
        assert_eq!(s.stats().calls_of(Op::Probe), 0);
    }
}
