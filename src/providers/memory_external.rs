//! The in-memory service as a test sees its calendars: what is stored (per calendar, per
//! TaskSync uid), and what a user does in the calendar app (edits, deletes, new events) or a
//! server does with time (expired cursors), each with a new version in the change log.
//!
//! Owns: those test controls. Must not touch: the `Provider` contract (the parent module's).

use super::MemoryCalendar;
use crate::providers::RemoteEvent;

impl MemoryCalendar {
    /// All events of a calendar, including cancelled ones.
    pub fn events(&self, calendar: &str) -> Vec<RemoteEvent> {
        self.lock().events.get(calendar).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Events with our marker for this TaskSync uid (what "no duplicates" is checked against).
    pub fn events_for_uid(&self, uid: &str) -> Vec<RemoteEvent> {
        let s = self.lock();
        s.events
            .values()
            .flat_map(|m| m.values())
            .filter(|e| !e.cancelled && e.marker.as_ref().is_some_and(|m| m.uid == uid))
            .cloned()
            .collect()
    }

    /// Simulate the user editing an event in the calendar app (new etag).
    pub fn edit_external(&self, calendar: &str, id: &str, edit: impl FnOnce(&mut RemoteEvent)) -> bool {
        let mut s = self.lock();
        let version = s.next_version();
        let Some(ev) = s.events.get_mut(calendar).and_then(|m| m.get_mut(id)) else { return false };
        edit(ev);
        ev.etag = Some(format!("\"{version}\""));
        s.changes.push((version, calendar.to_string(), id.to_string()));
        true
    }

    /// Forget the change log, as a server does after a while: every cursor issued so far gets a
    /// full listing with `full_resync`.
    pub fn expire_cursors(&self) {
        let mut s = self.lock();
        s.changes.clear();
        s.oldest_cursor = s.next_version();
    }

    /// Simulate the user deleting an event in the calendar app.
    pub fn delete_external(&self, calendar: &str, id: &str) -> bool {
        let mut s = self.lock();
        let version = s.next_version();
        let removed = s.events.get_mut(calendar).and_then(|m| m.remove(id)).is_some();
        s.changes.push((version, calendar.to_string(), id.to_string()));
        removed
    }

    /// Put an event the user made (no marker) into a calendar.
    pub fn insert_external(&self, calendar: &str, mut event: RemoteEvent) {
        let mut s = self.lock();
        let version = s.next_version();
        event.etag = Some(format!("\"{version}\""));
        event.marker = None;
        // Like a real calendar: a new event gets a creation time, an edit keeps the first one.
        let first = s.events.get(calendar).and_then(|evs| evs.get(&event.id)).and_then(|e| e.created);
        event.created = first.or(event.created).or_else(|| Some(chrono::Utc::now()));
        s.changes.push((version, calendar.to_string(), event.id.clone()));
        s.events.entry(calendar.to_string()).or_default().insert(event.id.clone(), event);
    }
}
