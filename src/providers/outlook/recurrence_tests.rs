use super::*;

fn zoned(y: i32, m: u32, d: u32, h: u32, zone: &str) -> EventTime {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let local = NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(h, 0, 0).unwrap();
    let utc = tz.from_local_datetime(&local).single().unwrap().with_timezone(&Utc);
    EventTime::DateTime { utc, local, zone: Some(zone.into()) }
}

fn rt(rule: &str, start: &EventTime) -> String {
    let g = to_graph(&[rule.to_string()], start).unwrap().unwrap();
    // Through JSON too: what Graph stores is what we serialize.
    let g: PatternedRecurrence = serde_json::from_value(serde_json::to_value(&g).unwrap()).unwrap();
    from_graph(&g, start).unwrap().join("\n")
}

#[test]
fn the_expressible_subset_round_trips() {
    // 2031-05-14 is a Wednesday, 09:00 in Berlin.
    let s = zoned(2031, 5, 14, 9, "Europe/Berlin");
    for rule in [
        "RRULE:FREQ=DAILY",
        "RRULE:FREQ=DAILY;INTERVAL=3;COUNT=10",
        "RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR",
        "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;WKST=SU;COUNT=4",
        "RRULE:FREQ=MONTHLY;BYMONTHDAY=14",
        "RRULE:FREQ=MONTHLY;BYDAY=2TU",
        "RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=6",
        "RRULE:FREQ=MONTHLY;BYDAY=SA,SU;BYSETPOS=1",
        "RRULE:FREQ=YEARLY;BYMONTH=5;BYMONTHDAY=14",
        "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH",
    ] {
        assert_eq!(rt(rule, &s), rule, "round trip of {rule}");
    }
}

#[test]
fn defaults_come_from_the_start_and_normalise() {
    let s = zoned(2031, 5, 14, 9, "Europe/Berlin");
    assert_eq!(rt("RRULE:FREQ=WEEKLY", &s), "RRULE:FREQ=WEEKLY;BYDAY=WE");
    assert_eq!(rt("RRULE:FREQ=MONTHLY", &s), "RRULE:FREQ=MONTHLY;BYMONTHDAY=14");
    assert_eq!(rt("RRULE:FREQ=YEARLY", &s), "RRULE:FREQ=YEARLY;BYMONTH=5;BYMONTHDAY=14");
    assert_eq!(rt("rrule:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR", &s), "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR");
    let g = to_graph(&["RRULE:FREQ=WEEKLY;BYDAY=WE".into()], &s).unwrap().unwrap();
    assert_eq!(g.pattern.first_day_of_week.as_deref(), Some("monday"), "RFC 5545's week start, said explicitly");
    assert_eq!(g.range.start_date, NaiveDate::from_ymd_opt(2031, 5, 14).unwrap());
    assert_eq!(g.range.recurrence_time_zone.as_deref(), Some("Europe/Berlin"));
}

#[test]
fn until_is_the_last_local_day_both_ways() {
    let s = zoned(2031, 5, 14, 9, "America/New_York");
    // 03:59:59Z on the 1st of June is still 31 May in New York.
    let g = to_graph(&["RRULE:FREQ=DAILY;UNTIL=20310601T035959Z".into()], &s).unwrap().unwrap();
    assert_eq!((g.range.kind.as_str(), g.range.end_date), ("endDate", NaiveDate::from_ymd_opt(2031, 5, 31)));
    assert_eq!(from_graph(&g, &s).unwrap(), vec!["RRULE:FREQ=DAILY;UNTIL=20310601T035959Z".to_string()]);
    let day = EventTime::Date(NaiveDate::from_ymd_opt(2031, 5, 14).unwrap());
    assert_eq!(rt("RRULE:FREQ=WEEKLY;BYDAY=WE;UNTIL=20310730", &day), "RRULE:FREQ=WEEKLY;BYDAY=WE;UNTIL=20310730");
}

#[test]
fn what_graph_cannot_say_is_refused_by_name() {
    let s = zoned(2031, 5, 14, 9, "Europe/Berlin");
    let refused = |lines: &[&str], needle: &str| {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        match to_graph(&lines, &s) {
            Err(ProviderError::Invalid { message }) => assert!(message.contains(needle), "{message}"),
            other => panic!("{lines:?} must be refused, got {other:?}"),
        }
    };
    refused(&["RRULE:FREQ=HOURLY"], "FREQ=HOURLY");
    refused(&["RRULE:FREQ=DAILY;BYHOUR=9,17"], "BYHOUR");
    refused(&["RRULE:FREQ=YEARLY;BYWEEKNO=20"], "BYWEEKNO");
    refused(&["RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15"], "BYMONTHDAY=1,15");
    refused(&["RRULE:FREQ=MONTHLY;BYDAY=5MO"], "position 5");
    refused(&["RRULE:FREQ=WEEKLY;BYDAY=1MO"], "BYDAY with position");
    refused(&["RRULE:FREQ=DAILY;COUNT=3;UNTIL=20310601"], "COUNT and UNTIL");
    refused(&["RRULE:FREQ=DAILY", "EXDATE;TZID=Europe/Berlin:20310515T090000"], "EXDATE");
    refused(&["RRULE:FREQ=DAILY", "RRULE:FREQ=WEEKLY"], "more than one RRULE");
    refused(&["RRULE:INTERVAL=2"], "without FREQ");
    assert_eq!(to_graph(&[], &s).unwrap(), None);
}

#[test]
fn graph_json_shape_is_what_the_docs_show() {
    let s = zoned(2031, 5, 14, 9, "Europe/Berlin");
    let g = to_graph(&["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=6".into()], &s).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&g).unwrap(),
        serde_json::json!({
            "pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
            "range": {"type": "numbered", "startDate": "2031-05-14", "numberOfOccurrences": 6,
                      "recurrenceTimeZone": "Europe/Berlin"}
        })
    );
    // Graph answers with every field filled in (zeros, `0001-01-01`, Sunday); those must not leak.
    let from_graph_json: PatternedRecurrence = serde_json::from_value(serde_json::json!({
        "pattern": {"type": "weekly", "interval": 1, "month": 0, "dayOfMonth": 0,
                    "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday", "index": "first"},
        "range": {"type": "noEnd", "startDate": "2031-05-12", "endDate": "0001-01-01",
                  "recurrenceTimeZone": "W. Europe Standard Time", "numberOfOccurrences": 0}
    }))
    .unwrap();
    assert_eq!(from_graph(&from_graph_json, &s).unwrap(), vec!["RRULE:FREQ=WEEKLY;BYDAY=MO".to_string()]);
}
