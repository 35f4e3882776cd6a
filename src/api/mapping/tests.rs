//! Unit tests of the task_data → TaskSyncSpec mapping: time forms, zones, patches, recurrence.

use super::*;

fn data(start: &str, tz: Option<&str>) -> TaskData {
    TaskData {
        id: Id("t1".into()),
        name: "Homework".into(),
        scheduled_time: Some(start.into()),
        auto_schedule: None,
        category: Some("School".into()),
        timezone: tz.map(String::from),
        duration_minutes: None,
        description: None,
        recurrence: None,
        exceptions: None,
    }
}

#[test]
fn maps_the_three_time_forms() {
    let s = spec_from_task(None, "c", &data("2025-10-17T14:00:00", Some("America/New_York"))).unwrap();
    assert_eq!(s.time_zone.as_deref(), Some("America/New_York"));
    assert_eq!(s.all_day, None);
    assert_eq!(s.title, "Homework");
    let s = spec_from_task(None, "c", &data("2025-10-17T14:00:00.5Z", None)).unwrap();
    assert_eq!(s.start, "2025-10-17T14:00:00.5Z");
    let mut d = data("2025-10-17", None);
    d.duration_minutes = Some(2880);
    let s = spec_from_task(None, "c", &d).unwrap();
    assert_eq!((s.all_day, s.duration.as_deref()), (Some(true), Some("48h")));
}

#[test]
fn refuses_bad_times_and_zones() {
    let code = |d: TaskData| spec_from_task(None, "c", &d).unwrap_err().code;
    assert_eq!(code(data("2025-10-17T14:00:00", None)), "timezone_required");
    assert_eq!(code(data("2025-13-45T14:00:00Z", None)), "invalid_time");
    assert_eq!(code(data("tomorrow", None)), "invalid_time");
    assert_eq!(code(data("2025-10-17T14:00:00", Some("Mars/Base"))), "invalid_timezone");
    assert_eq!(code(data("2026-03-08T02:30:00", Some("America/New_York"))), "invalid_task");
    let mut d = data("2025-10-17", None);
    d.duration_minutes = Some(90);
    assert_eq!(code(d), "invalid_field");
    let mut d = data("2025-10-17T10:00:00Z", None);
    d.name = String::new();
    assert_eq!(code(d), "invalid_field");
}

#[test]
fn patch_keeps_zone_and_changes_only_given_fields() {
    let s = spec_from_task(None, "c", &data("2025-10-17T14:00:00", Some("Europe/Berlin"))).unwrap();
    let p = TaskPatch { scheduled_time: Some("2025-10-17T15:00:00".into()), ..Default::default() };
    let s2 = spec_with_patch(&s, &p).unwrap();
    assert_eq!(s2.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(s2.start, "2025-10-17T15:00:00");
    assert_eq!(s2.title, "Homework");
    assert_eq!(s2.category.as_deref(), Some("School"));
}

#[test]
fn recurrence_and_exceptions_reach_the_spec_and_are_checked() {
    let mut d = data("2027-02-24T09:00:00", Some("America/New_York"));
    d.recurrence = Some(vec!["RRULE:FREQ=WEEKLY;BYDAY=WE".into()]);
    d.exceptions = Some(vec![OccurrenceException {
        original_start: "2027-03-03T09:00:00".into(),
        start: None,
        end: None,
        cancelled: true,
    }]);
    let s = spec_from_task(None, "c", &d).unwrap();
    assert_eq!(s.recurrence, vec!["RRULE:FREQ=WEEKLY;BYDAY=WE".to_string()]);
    assert_eq!(s.exceptions.len(), 1);
    // A later task-to-calendar without the fields keeps them; update-event can clear them.
    let mut again = data("2027-02-24T09:00:00", Some("America/New_York"));
    again.name = "Renamed".into();
    let s2 = spec_from_task(Some(&s), "c", &again).unwrap();
    assert_eq!((s2.recurrence.len(), s2.exceptions.len()), (1, 1));
    let p = TaskPatch { exceptions: Some(vec![]), ..Default::default() };
    assert!(spec_with_patch(&s2, &p).unwrap().exceptions.is_empty());
    // Bad input: a line that is no recurrence line, an occurrence the rule does not have.
    let code = |d: &TaskData| spec_from_task(None, "c", d).unwrap_err().code;
    let mut bad = d.clone();
    bad.recurrence = Some(vec!["FREQ=WEEKLY".into()]);
    assert_eq!(code(&bad), "invalid_recurrence");
    let mut bad = d.clone();
    bad.exceptions.as_mut().unwrap()[0].original_start = "2027-03-04T09:00:00".into();
    let e = spec_from_task(None, "c", &bad).unwrap_err();
    assert_eq!(e.code, "invalid_task");
    assert!(e.message.contains("not an occurrence"), "{}", e.message);
}
