//! Calendar events → the seed's task shape: an imported event as a task (a series as one task
//! with its next occurrence), its time as `scheduled_time`/`timezone`, and which task fields a
//! calendar edit changed.
//!
//! Owns: that direction of the mapping. Must not touch: I/O, nor input validation (the parent's).

use crate::api::dto::{ImportedTask, OccurrenceException};
use crate::engine::desired::{desired_event, parse_zone};
use crate::providers::{EventTime, RemoteEvent, Window, recurrence};
use crate::resources::{ProviderKind, TaskSyncSpec};

/// How an event's time reads in the seed's task shape: (scheduled_time, timezone, all_day).
pub fn task_time(start: &EventTime, zone: Option<&str>) -> (String, String, bool) {
    match start {
        EventTime::Date(d) => (d.format("%Y-%m-%d").to_string(), zone.unwrap_or("UTC").to_string(), true),
        EventTime::DateTime { utc, zone: own, .. } => {
            let tz = own.as_deref().or(zone).and_then(|z| parse_zone(z).ok());
            match tz {
                Some(tz) => {
                    (utc.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string(), tz.name().to_string(), false)
                }
                None => (utc.format("%Y-%m-%dT%H:%M:%S").to_string(), "UTC".to_string(), false),
            }
        }
    }
}

fn minutes_between(start: &EventTime, end: &EventTime) -> i64 {
    match (start, end) {
        (EventTime::Date(a), EventTime::Date(b)) => (*b - *a).num_minutes(),
        (EventTime::DateTime { utc: a, .. }, EventTime::DateTime { utc: b, .. }) => (*b - *a).num_minutes(),
        _ => 0,
    }
}

/// A calendar event in the seed's task shape. A recurring event is one task: its `recurrence`
/// lines, `series_start`, `exceptions`, and as `scheduled_time` its next occurrence from `now`
/// (the series' start when none follows within a year).
pub fn imported_task(ev: &RemoteEvent, provider: ProviderKind) -> ImportedTask {
    imported_task_at(ev, provider, chrono::Utc::now())
}

/// `imported_task` with the clock given.
pub fn imported_task_at(ev: &RemoteEvent, provider: ProviderKind, now: chrono::DateTime<chrono::Utc>) -> ImportedTask {
    let zone = ev.zone.as_deref();
    let (series_start, timezone, all_day) = task_time(&ev.start, zone);
    let recurring = !ev.recurrence.is_empty();
    let next = recurring
        .then(|| {
            let year = Window { from: now, to: now + chrono::Duration::days(366) };
            recurrence::occurrences(ev, &year).ok().and_then(|o| o.into_iter().next())
        })
        .flatten();
    let (start, end) = next.as_ref().map_or((&ev.start, &ev.end), |(s, e)| (s, e));
    let local = |t: &EventTime| task_time(t, zone).0;
    let exceptions = ev
        .exceptions
        .iter()
        .map(|x| OccurrenceException {
            original_start: local(&x.original_start),
            start: x.start.as_ref().map(local),
            end: x.end.as_ref().map(local),
            cancelled: x.cancelled,
        })
        .collect();
    ImportedTask {
        name: ev.title.clone(),
        scheduled_time: local(start),
        category: ev.category.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "General".to_string()),
        calendar_event_id: ev.id.clone(),
        calendar_source: provider.as_str().to_string(),
        calendar_link: ev.link.clone(),
        timezone,
        all_day,
        duration_minutes: minutes_between(start, end).max(0),
        recurrence: ev.recurrence.clone(),
        series_start: recurring.then_some(series_start),
        exceptions: recurring.then_some(exceptions),
    }
}

/// Which of the task's fields the calendar's version of the event differs in (seed names).
pub fn changed_fields(spec: &TaskSyncSpec, ev: &RemoteEvent) -> Vec<String> {
    let Ok(want) = desired_event(spec, "", "") else {
        return vec!["scheduled_time".into()];
    };
    let mut changed = Vec::new();
    if want.title != ev.title {
        changed.push("name".to_string());
    }
    if want.start != ev.start {
        changed.push("scheduled_time".to_string());
    }
    if want.end != ev.end {
        changed.push("end".to_string());
    }
    if want.description != ev.description {
        changed.push("description".to_string());
    }
    if want.category != ev.category {
        changed.push("category".to_string());
    }
    changed
}
