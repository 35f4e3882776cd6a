//! The standalone status tap: inside the SQLite transaction of a status write, derives the app
//! events of the change (`app_events`, the same pure functions the SSE hub uses) and turns them
//! into outbox messages with stable ids; after the commit it wakes the dispatcher.
//!
//! Owns: an event's transition key (what makes its `webhook-id`) and the outbox bound. Must not
//! touch: SQL (the store inserts what this returns) or HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};
use kube::ResourceExt;
use tokio::sync::Notify;

use super::super::app_events::{self, AppEvent};
use super::{message_body, message_id, stats};
use crate::resources::condition::find;
use crate::resources::{CalendarConnection, TaskSync};
use crate::standalone::store::{OutboxMessage, StatusTap};

fn time(t: Option<chrono::DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)).unwrap_or_default()
}

/// What in a TaskSync's status makes this event new: equal for the same transition whoever
/// derives it, different for the next one of the same type.
pub fn task_transition(kind: &str, ts: &TaskSync) -> String {
    let st = ts.status.clone().unwrap_or_default();
    let synced = find(&st.conditions, "Synced");
    match kind {
        // An etag or hash change is a new write even within one second of the last.
        "task.synced" => format!(
            "{}|{}|{}|{}",
            time(st.last_sync_time),
            st.etag.unwrap_or_default(),
            st.applied_hash.unwrap_or_default(),
            st.observed_generation.unwrap_or_default()
        ),
        "task.failed" => format!(
            "{}|{}|{}",
            synced.map(|c| c.reason.as_str()).unwrap_or_default(),
            time(synced.map(|c| c.last_transition_time)),
            st.failed_attempts
        ),
        "task.unschedulable" => {
            let c = find(&st.conditions, "Scheduled");
            format!("{}|{}", c.map(|c| c.reason.as_str()).unwrap_or_default(), time(c.map(|c| c.last_transition_time)))
        }
        _ => st
            .calendar_edit
            .map(|e| format!("{}|{}|{}", time(Some(e.detected_at)), e.etag, e.deleted))
            .unwrap_or_default(),
    }
}

/// What in a CalendarConnection's status makes this event new.
pub fn connection_transition(event: &AppEvent, c: &CalendarConnection) -> String {
    let st = c.status.clone().unwrap_or_default();
    if event.kind == "calendar.changed" {
        let calendar = event.data["calendar_id"].as_str().unwrap_or_default();
        let at = st
            .push
            .and_then(|p| p.calendars.into_iter().find(|w| w.calendar_id == calendar))
            .and_then(|w| w.last_change_time);
        return format!("{calendar}|{}", time(at));
    }
    let ready = find(&st.conditions, "Ready");
    format!(
        "{}|{}|{}",
        ready.map(|c| c.reason.as_str()).unwrap_or_default(),
        time(ready.map(|c| c.last_transition_time)),
        ready.and_then(|c| c.observed_generation).unwrap_or_default()
    )
}

/// When the transition behind a TaskSync event happened (to tell old news on Kubernetes).
pub fn task_transition_time(kind: &str, ts: &TaskSync) -> Option<chrono::DateTime<Utc>> {
    let st = ts.status.as_ref()?;
    match kind {
        "task.synced" => st.last_sync_time,
        "task.failed" => find(&st.conditions, "Synced").map(|c| c.last_transition_time),
        "task.unschedulable" => find(&st.conditions, "Scheduled").map(|c| c.last_transition_time),
        _ => st.calendar_edit.as_ref().map(|e| e.detected_at),
    }
}

/// When the transition behind a CalendarConnection event happened.
pub fn connection_transition_time(event: &AppEvent, c: &CalendarConnection) -> Option<chrono::DateTime<Utc>> {
    let st = c.status.as_ref()?;
    if event.kind == "calendar.changed" {
        let calendar = event.data["calendar_id"].as_str().unwrap_or_default();
        return st.push.as_ref()?.calendars.iter().find(|w| w.calendar_id == calendar)?.last_change_time;
    }
    find(&st.conditions, "Ready").map(|c| c.last_transition_time)
}

/// Installed into the SQLite store when webhooks are configured.
pub struct Tap {
    wake: Arc<Notify>,
    max_pending: AtomicU64,
}

impl Tap {
    pub fn new(max_pending: u64) -> Arc<Tap> {
        Arc::new(Tap { wake: Arc::new(Notify::new()), max_pending: AtomicU64::new(max_pending) })
    }

    pub fn set_max_pending(&self, max: u64) {
        self.max_pending.store(max, Ordering::Relaxed);
    }

    /// Notified whenever messages were committed.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Keep `messages` unless the outbox is full (then count them as dropped). The count is
    /// the dispatcher's last reading plus what was recorded since: close enough for a bound.
    fn bounded(&self, messages: Vec<OutboxMessage>) -> Vec<OutboxMessage> {
        let s = stats();
        let max = self.max_pending.load(Ordering::Relaxed);
        if !messages.is_empty() && s.pending.load(Ordering::Relaxed) >= max {
            s.dropped.fetch_add(messages.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped = messages.len(),
                max_pending = max,
                "app webhook outbox is full; messages dropped (see calsync_app_webhook_dropped_total)"
            );
            return Vec::new();
        }
        messages
    }
}

/// Outbox messages of `events` of the object with `uid`.
fn messages(uid: &str, events: Vec<AppEvent>, transition: impl Fn(&AppEvent) -> String) -> Vec<OutboxMessage> {
    events
        .into_iter()
        .map(|e| OutboxMessage { id: message_id(uid, e.kind, &transition(&e)), body: message_body(&e) })
        .collect()
}

impl StatusTap for Tap {
    fn task_sync(
        &self,
        before: &TaskSync,
        after: &TaskSync,
        owner: &dyn Fn(&str) -> Option<(String, String)>,
    ) -> Vec<OutboxMessage> {
        let before = app_events::task_snapshot(before);
        if before == app_events::task_snapshot(after) {
            return Vec::new();
        }
        // A TaskSync whose connection is gone has nobody to report to (as in the SSE hub).
        let Some((user, provider)) = owner(&after.spec.connection_ref.name) else { return Vec::new() };
        let events = app_events::task_events(&before, after, &user, &provider, Utc::now());
        let uid = after.uid().unwrap_or_default();
        self.bounded(messages(&uid, events, |e| task_transition(e.kind, after)))
    }

    fn connection(&self, before: &CalendarConnection, after: &CalendarConnection) -> Vec<OutboxMessage> {
        let before = app_events::connection_snapshot(before);
        let events = app_events::connection_events(&before, after, Utc::now());
        let uid = after.uid().unwrap_or_default();
        self.bounded(messages(&uid, events, |e| connection_transition(e, after)))
    }

    fn recorded(&self, n: usize) {
        stats().pending.fetch_add(n as u64, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::condition::{Condition, set_condition};
    use crate::resources::*;

    fn ts(synced_at: chrono::DateTime<Utc>, etag: &str) -> TaskSync {
        let spec = TaskSyncSpec {
            connection_ref: ConnectionRef { name: "c".into() },
            task_id: "t1".into(),
            title: "Essay".into(),
            start: "2026-12-10T10:00:00Z".into(),
            time_zone: None,
            duration: None,
            end: None,
            all_day: None,
            category: None,
            description: None,
            recurrence: vec![],
            exceptions: vec![],
            calendar_id: None,
            deletion_policy: DeletionPolicy::Delete,
            conflict_policy: ConflictPolicy::Manual,
            schedule: None,
        };
        let mut t = TaskSync::new("ts", spec);
        t.metadata.uid = Some("uid-1".into());
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            Condition::new("Synced", ConditionStatus::True, "Synced", ""),
            Some(1),
            synced_at,
        );
        t.status = Some(TaskSyncStatus {
            conditions,
            last_sync_time: Some(synced_at),
            etag: Some(etag.into()),
            ..Default::default()
        });
        t
    }

    #[test]
    fn the_same_transition_gets_the_same_id_and_the_next_one_another() {
        let tap = Tap::new(1000);
        let owner = |_: &str| Some(("alice".to_string(), "google".to_string()));
        let blank = TaskSync { status: None, ..ts(Utc::now(), "") };
        let at = Utc::now();
        let first = tap.task_sync(&blank, &ts(at, "\"1\""), &owner);
        let again = tap.task_sync(&blank, &ts(at, "\"1\""), &owner);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, again[0].id, "derived twice, one id");
        let body: serde_json::Value = serde_json::from_str(&first[0].body).unwrap();
        assert_eq!((body["type"].as_str(), body["data"]["user_id"].as_str()), (Some("task.synced"), Some("alice")));
        // Synced again within the same second (new etag): new news, new id.
        let next = tap.task_sync(&ts(at, "\"1\""), &ts(at + chrono::Duration::milliseconds(300), "\"2\""), &owner);
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].id, first[0].id);
        // Nothing changed: nothing owed. No owner: nobody to tell.
        assert!(tap.task_sync(&ts(at, "\"1\""), &ts(at, "\"1\""), &owner).is_empty());
        assert!(tap.task_sync(&blank, &ts(at, "\"1\""), &|_| None).is_empty());
    }

    #[test]
    fn a_full_outbox_drops_and_counts() {
        let tap = Tap::new(0);
        let owner = |_: &str| Some(("alice".to_string(), "google".to_string()));
        let blank = TaskSync { status: None, ..ts(Utc::now(), "") };
        let before = stats().dropped.load(Ordering::Relaxed);
        assert!(tap.task_sync(&blank, &ts(Utc::now(), "\"1\""), &owner).is_empty());
        assert!(stats().dropped.load(Ordering::Relaxed) > before);
    }
}
