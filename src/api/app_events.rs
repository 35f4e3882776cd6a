//! The events the app hears about (`task.synced`, `task.failed`, `task.conflict`,
//! `task.deleted_in_calendar`, `task.unschedulable`, `connection.connected`, `connection.disconnected`,
//! `connection.reconnect_required`, `connection.deletions_held`, `calendar.changed`), derived from what changed in a
//! TaskSync's or CalendarConnection's status. Every REST replica derives the same events from
//! its own watches, with the same ids (the object's resourceVersion), so a stream can resume on
//! another replica.
//!
//! Owns: which status transitions are events and what their data says. Must not touch: how
//! events travel (the stream hub, later webhooks) or any store write.

use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::resources::condition::find;
use crate::resources::{CalendarConnection, CalendarEdit, ConditionStatus, TaskSync};

/// One event for the app.
#[derive(Clone, Debug, PartialEq)]
pub struct AppEvent {
    /// `<resourceVersion>.<n>`: ordered across objects, equal on every replica.
    pub id: String,
    pub user_id: String,
    pub kind: &'static str,
    pub timestamp: DateTime<Utc>,
    pub data: Value,
}

impl AppEvent {
    /// The wire form (webhook body, SSE data): `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> Value {
        json!({"type": self.kind, "timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "data": self.data})
    }

    /// `(resourceVersion, n)` of an id, for ordering and resume.
    pub fn order(id: &str) -> Option<(u64, u32)> {
        let (rv, n) = id.split_once('.')?;
        Some((rv.parse().ok()?, n.parse().ok()?))
    }
}

/// What of an object events are derived from; kept per object between changes (and, on
/// Kubernetes, as the app webhooks' delivered checkpoint in an annotation, hence serde).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Snapshot {
    synced: Option<(ConditionStatus, String)>,
    last_sync: Option<DateTime<Utc>>,
    edit: Option<(String, bool)>,
    ready: Option<(ConditionStatus, String)>,
    /// The `Scheduled` condition of a task that places itself.
    scheduled: Option<(ConditionStatus, String)>,
    /// Per watched calendar: (id, lastChangeTime, changeCount).
    changes: Vec<(String, Option<DateTime<Utc>>, u64)>,
    /// The connection's `DeletionGuard` condition.
    guard: Option<(ConditionStatus, String)>,
}

fn cond(conds: &[crate::resources::Condition], t: &str) -> Option<(ConditionStatus, String)> {
    find(conds, t).map(|c| (c.status, c.reason.clone()))
}

pub fn task_snapshot(ts: &TaskSync) -> Snapshot {
    let st = ts.status.clone().unwrap_or_default();
    Snapshot {
        synced: cond(&st.conditions, "Synced"),
        last_sync: st.last_sync_time,
        edit: st.calendar_edit.as_ref().map(|e| (e.etag.clone(), e.deleted)),
        scheduled: cond(&st.conditions, "Scheduled"),
        ..Snapshot::default()
    }
}

pub fn connection_snapshot(c: &CalendarConnection) -> Snapshot {
    let st = c.status.clone().unwrap_or_default();
    let changes = st
        .push
        .map(|p| p.calendars.into_iter().map(|w| (w.calendar_id, w.last_change_time, w.change_count)).collect())
        .unwrap_or_default();
    Snapshot {
        ready: cond(&st.conditions, "Ready"),
        changes,
        guard: cond(&st.conditions, crate::engine::guard::CONDITION),
        ..Snapshot::default()
    }
}

fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn number(events: Vec<(&'static str, Value)>, rv: u64, user: &str, now: DateTime<Utc>) -> Vec<AppEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(n, (kind, data))| AppEvent {
            id: format!("{rv}.{n}"),
            user_id: user.to_string(),
            kind,
            timestamp: now,
            data,
        })
        .collect()
}

/// `value` (RFC 3339, local or a date) as a local time in `zone` when it names an instant.
fn in_zone(value: &str, zone: Option<&str>) -> String {
    let tz = zone.and_then(|z| z.parse::<chrono_tz::Tz>().ok());
    match (chrono::DateTime::parse_from_rfc3339(value), tz) {
        (Ok(t), Some(tz)) => t.with_timezone(&tz).naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(),
        _ => value.to_string(),
    }
}

/// The fields an edit in the calendar app changed: `(field, task's value, calendar's value)`,
/// times in the task's zone (its `timeZone`; as written when it has none). Shared by
/// `task.conflict` and `GET /conflicts`.
pub fn conflict_diff(ts: &TaskSync, edit: &CalendarEdit) -> Vec<(String, Option<String>, Option<String>)> {
    let spec = &ts.spec;
    let zone = spec.time_zone.as_deref();
    let time = |v: Option<&str>| v.map(|v| in_zone(v, zone));
    edit.changed
        .iter()
        .map(|field| {
            let (task, calendar) = match field.as_str() {
                "title" => (Some(spec.title.clone()), edit.title.clone()),
                "start" => (time(Some(&spec.start)), time(edit.start.as_deref())),
                "end" => (time(spec.end.as_deref()), time(edit.end.as_deref())),
                "description" => (spec.description.clone(), edit.description.clone()),
                "category" => (spec.category.clone(), None),
                _ => (None, None),
            };
            (field.clone(), task, calendar)
        })
        .collect()
}

/// Events of a TaskSync that went from `before` to `ts`. `calendar_type` is its connection's
/// provider.
pub fn task_events(
    before: &Snapshot,
    ts: &TaskSync,
    user: &str,
    calendar_type: &str,
    now: DateTime<Utc>,
) -> Vec<AppEvent> {
    let after = task_snapshot(ts);
    let st = ts.status.clone().unwrap_or_default();
    let base = |extra: Value| {
        let mut d = json!({"user_id": user, "task_id": ts.spec.task_id, "calendar_type": calendar_type,
            "event_id": st.event_id, "task_sync": ts.name_any()});
        if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(extra.clone());
        }
        d
    };
    let mut out = Vec::new();
    if after.edit != before.edit
        && let Some(edit) = &st.calendar_edit
    {
        if edit.deleted {
            out.push(("task.deleted_in_calendar", base(json!({}))));
        } else {
            let diff: Vec<Value> = conflict_diff(ts, edit)
                .into_iter()
                .map(|(field, task, calendar)| json!({"field": field, "task": task, "calendar": calendar}))
                .collect();
            out.push(("task.conflict", base(json!({"resolution": edit.resolution, "diff": diff}))));
        }
    }
    let synced_now = after.synced.as_ref().is_some_and(|(s, _)| *s == ConditionStatus::True);
    if synced_now && after.last_sync != before.last_sync && after.last_sync.is_some() {
        out.push(("task.synced", base(json!({"event_link": st.event_link}))));
    }
    if let Some((ConditionStatus::False, reason)) = &after.scheduled
        && after.scheduled != before.scheduled
        && reason == "NoRoom"
    {
        let message = find(&st.conditions, "Scheduled").map(|c| c.message.clone()).unwrap_or_default();
        let deadline = ts.spec.schedule.as_ref().and_then(|s| s.deadline.clone());
        out.push((
            "task.unschedulable",
            base(json!({"reason": "no_room", "message": message, "deadline": deadline,
                "scheduled_start": st.scheduled_start, "scheduled_end": st.scheduled_end})),
        ));
    }
    if let Some((ConditionStatus::False, reason)) = &after.synced
        && after.synced != before.synced
        // A held deletion is the connection's news (`connection.deletions_held`), once, not
        // one `task.failed` per deleted task; no room is `task.unschedulable`'s.
        && !matches!(reason.as_str(), "ConflictDetected" | "DeletedInCalendar" | "NoRoom" | crate::engine::guard::HELD_REASON)
    {
        let message = find(&st.conditions, "Synced").map(|c| c.message.clone()).unwrap_or_default();
        out.push(("task.failed", base(json!({"reason": reason, "message": message}))));
    }
    number(out, rv(ts.meta()), user, now)
}

/// Events of a CalendarConnection that went from `before` to `c`.
pub fn connection_events(before: &Snapshot, c: &CalendarConnection, now: DateTime<Utc>) -> Vec<AppEvent> {
    let after = connection_snapshot(c);
    let user = c.spec.user_id.as_str();
    let data = json!({"user_id": user, "calendar_type": c.spec.provider.as_str(), "connection": c.name_any()});
    let mut out = Vec::new();
    if after.ready != before.ready {
        match &after.ready {
            Some((ConditionStatus::True, _)) => out.push(("connection.connected", data.clone())),
            Some((ConditionStatus::False, r)) if r == "ReconnectRequired" => {
                out.push(("connection.reconnect_required", data.clone()))
            }
            Some((ConditionStatus::False, r)) if r == "Disconnected" => {
                out.push(("connection.disconnected", data.clone()))
            }
            _ => {}
        }
    }
    let held = |s: &Snapshot| s.guard.as_ref().is_some_and(|(s, _)| *s == ConditionStatus::True);
    if held(&after) && !held(before) {
        let g = c.status.as_ref().and_then(|s| s.deletion_guard.clone()).unwrap_or_default();
        let mut d = data.clone();
        if let Some(m) = d.as_object_mut() {
            m.insert("held".into(), json!(g.held));
            m.insert("deleted_in_window".into(), json!(g.deleted_in_window));
            m.insert("total".into(), json!(g.total));
            m.insert("window_start".into(), json!(g.window_start));
        }
        out.push(("connection.deletions_held", d));
    }
    for (calendar, at, count) in &after.changes {
        let was = before.changes.iter().find(|(c, _, _)| c == calendar).map(|(_, t, n)| (*t, *n));
        if at.is_some() && was != Some((*at, *count)) && !before.changes.is_empty() {
            let mut d = data.clone();
            if let Some(m) = d.as_object_mut() {
                m.insert("calendar_id".into(), json!(calendar));
            }
            out.push(("calendar.changed", d));
        }
    }
    number(out, rv(c.meta()), user, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::condition::{Condition, set_condition};
    use crate::resources::*;

    fn ts(status: TaskSyncStatus, rv: &str) -> TaskSync {
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
            exceptions: Vec::new(),
            calendar_id: None,
            deletion_policy: DeletionPolicy::Delete,
            conflict_policy: ConflictPolicy::Manual,
            schedule: None,
        };
        let mut t = TaskSync::new("ts", spec);
        t.metadata.resource_version = Some(rv.into());
        t.status = Some(status);
        t
    }

    fn with(cond_type: &str, ok: bool, reason: &str) -> Vec<Condition> {
        let mut c = Vec::new();
        let s = if ok { ConditionStatus::True } else { ConditionStatus::False };
        set_condition(&mut c, Condition::new(cond_type, s, reason, "why"), Some(1), Utc::now());
        c
    }

    fn kinds(events: &[AppEvent]) -> Vec<&str> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn task_transitions_become_events_once() {
        let now = Utc::now();
        let failed = ts(TaskSyncStatus { conditions: with("Synced", false, "RateLimited"), ..Default::default() }, "7");
        let e = task_events(&Snapshot::default(), &failed, "alice", "google", now);
        assert_eq!(kinds(&e), ["task.failed"]);
        assert_eq!((e[0].id.as_str(), e[0].data["reason"].as_str()), ("7.0", Some("RateLimited")));
        // The same state again is no news.
        assert!(task_events(&task_snapshot(&failed), &failed, "alice", "google", now).is_empty());

        let deleted = ts(
            TaskSyncStatus {
                conditions: with("Synced", false, "DeletedInCalendar"),
                calendar_edit: Some(Box::new(CalendarEdit {
                    detected_at: now,
                    generation: 1,
                    etag: String::new(),
                    deleted: true,
                    changed: vec![],
                    title: None,
                    start: None,
                    end: None,
                    description: None,
                    resolution: ConflictPolicy::Manual,
                })),
                ..Default::default()
            },
            "8",
        );
        let e = task_events(&task_snapshot(&failed), &deleted, "alice", "google", now);
        assert_eq!(kinds(&e), ["task.deleted_in_calendar"], "a reported deletion is not also a failure");
        assert_eq!(e[0].body()["type"], "task.deleted_in_calendar");
    }

    #[test]
    fn connection_transitions_become_events() {
        let now = Utc::now();
        let conn = |reason: &str, ok: bool, changed: Option<DateTime<Utc>>| {
            let mut c = CalendarConnection::new(
                "c",
                CalendarConnectionSpec {
                    user_id: "alice".into(),
                    provider: ProviderKind::Outlook,
                    credentials_secret_ref: SecretRef { name: "s".into(), key: None },
                    calendar_id: None,
                    server_url: None,
                    category_calendars: Default::default(),
                    user_default: false,
                    import: None,
                    active: true,
                },
            );
            let mut w = WatchedCalendar::polled("primary");
            w.last_change_time = changed;
            c.status = Some(CalendarConnectionStatus {
                conditions: with("Ready", ok, reason),
                push: Some(PushStatus { calendars: vec![w], ..Default::default() }),
                ..Default::default()
            });
            c.metadata.resource_version = Some("3".into());
            c
        };
        let ready = conn("Connected", true, None);
        assert_eq!(kinds(&connection_events(&Snapshot::default(), &ready, now)), ["connection.connected"]);
        let revoked = conn("ReconnectRequired", false, None);
        assert_eq!(
            kinds(&connection_events(&connection_snapshot(&ready), &revoked, now)),
            ["connection.reconnect_required"]
        );
        let gone = conn("Disconnected", false, None);
        assert_eq!(kinds(&connection_events(&connection_snapshot(&ready), &gone, now)), ["connection.disconnected"]);
        let mut held = conn("Connected", true, None);
        if let Some(st) = held.status.as_mut() {
            st.conditions.extend(with("DeletionGuard", true, "DeletionsHeld"));
            st.deletion_guard =
                Some(DeletionGuardStatus { held: 100, deleted_in_window: 100, total: 200, ..Default::default() });
        }
        let e = connection_events(&connection_snapshot(&ready), &held, now);
        assert_eq!(kinds(&e), ["connection.deletions_held"]);
        assert_eq!((e[0].data["held"].as_u64(), e[0].data["total"].as_u64()), (Some(100), Some(200)));
        assert!(connection_events(&connection_snapshot(&held), &held, now).is_empty(), "once per hold");
        let changed = conn("Connected", true, Some(now));
        let e = connection_events(&connection_snapshot(&ready), &changed, now);
        assert_eq!(kinds(&e), ["calendar.changed"]);
        assert_eq!(
            (e[0].data["calendar_id"].as_str(), e[0].data["calendar_type"].as_str()),
            (Some("primary"), Some("outlook"))
        );
        // A second change within the same second (status times have second precision).
        let mut again = changed.clone();
        if let Some(p) = again.status.as_mut().and_then(|s| s.push.as_mut()) {
            p.calendars[0].change_count += 1;
        }
        assert_eq!(kinds(&connection_events(&connection_snapshot(&changed), &again, now)), ["calendar.changed"]);
        assert!(connection_events(&connection_snapshot(&again), &again, now).is_empty());
    }

    #[test]
    fn ids_order_across_objects() {
        assert!(AppEvent::order("12.1") > AppEvent::order("12.0"));
        assert!(AppEvent::order("13.0") > AppEvent::order("12.9"));
        assert_eq!(AppEvent::order("junk"), None);
    }
}
