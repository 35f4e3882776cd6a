use super::*;

fn marker() -> Marker {
    Marker { owner: "calsync".into(), uid: "u-1".into(), task_id: "t;1".into(), hash: "abc".into() }
}

fn zoned(h: u32, zone: &str) -> EventTime {
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let local = NaiveDate::from_ymd_opt(2031, 3, 30).unwrap().and_hms_opt(h, 0, 0).unwrap();
    let utc = tz.from_local_datetime(&local).single().unwrap().with_timezone(&Utc);
    EventTime::DateTime { utc, local, zone: Some(zone.into()) }
}

fn event() -> EventData {
    EventData {
        title: "Dentist".into(),
        description: Some("bring the card".into()),
        category: Some("Health".into()),
        start: zoned(9, "Europe/Berlin"),
        end: zoned(10, "Europe/Berlin"),
        transparent: false,
        recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=SU".into()],
        exceptions: Vec::new(),
        marker: marker(),
    }
}

/// What Graph answers for a stored body, in UTC (as `Prefer: outlook.timezone="UTC"` asks).
fn graph_answer(body: &Value, id: &str) -> GraphEvent {
    let utc = |t: &Value| {
        let dt = DateTimeTimeZone {
            date_time: t["dateTime"].as_str().unwrap().into(),
            time_zone: t["timeZone"].as_str().unwrap().into(),
        };
        if body["isAllDay"] == json!(true) {
            return json!({"dateTime": format!("{}.0000000", dt.date_time), "timeZone": "UTC"});
        }
        let i = instant(&dt).unwrap();
        json!({"dateTime": i.format("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": "UTC"})
    };
    let mut v = body.clone();
    v["id"] = json!(id);
    v["@odata.etag"] = json!("W/\"ck1\"");
    v["webLink"] = json!("https://outlook.office365.com/owa/?itemid=x");
    v["originalStartTimeZone"] = body["start"]["timeZone"].clone();
    v["start"] = utc(&body["start"]);
    v["end"] = utc(&body["end"]);
    serde_json::from_value(v).unwrap()
}

#[test]
fn timed_event_with_zone_is_sent_as_local_time_and_reads_back() {
    let ev = event();
    let body = create_body(&ev, "cs0123").unwrap();
    // 09:00 on the day Berlin switches to summer time: local wall clock, IANA zone.
    assert_eq!(body["start"], json!({"dateTime": "2031-03-30T09:00:00", "timeZone": "Europe/Berlin"}));
    assert_eq!(body["isAllDay"], json!(false));
    assert_eq!(body["transactionId"], json!("cs0123"));
    assert_eq!(body["categories"], json!(["Health"]));
    assert_eq!(body["body"], json!({"contentType": "text", "content": "bring the card"}));
    assert_eq!(body["recurrence"]["pattern"]["daysOfWeek"], json!(["sunday"]));
    let r = to_remote(&graph_answer(&body, "AAMkAD1"), Some(&ev.marker)).unwrap();
    assert_eq!((r.start.clone(), r.end.clone()), (ev.start.clone(), ev.end.clone()));
    assert_eq!(r.zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(r.recurrence, ev.recurrence);
    assert_eq!(
        (r.title.as_str(), r.description.as_deref(), r.category.as_deref()),
        ("Dentist", Some("bring the card"), Some("Health"))
    );
    assert_eq!(r.etag.as_deref(), Some("W/\"ck1\""));
    assert_eq!(r.link.as_deref(), Some("https://outlook.office365.com/owa/?itemid=x"));
}

#[test]
fn all_day_is_midnight_dates_and_reads_back_as_dates() {
    let mut ev = event();
    let d = NaiveDate::from_ymd_opt(2031, 5, 14).unwrap();
    ev.start = EventTime::Date(d);
    ev.end = EventTime::Date(d.succ_opt().unwrap());
    ev.recurrence.clear();
    let body = patch_body(&ev).unwrap();
    assert_eq!(body["isAllDay"], json!(true));
    assert_eq!(body["start"], json!({"dateTime": "2031-05-14T00:00:00", "timeZone": "UTC"}));
    assert_eq!(body["end"], json!({"dateTime": "2031-05-15T00:00:00", "timeZone": "UTC"}));
    let r = to_remote(&graph_answer(&body, "AAMkAD2"), None).unwrap();
    assert_eq!((r.start, r.end, r.zone), (EventTime::Date(d), EventTime::Date(d.succ_opt().unwrap()), None));
    let mut mixed = event();
    mixed.end = EventTime::Date(d);
    assert!(matches!(create_body(&mixed, "k"), Err(ProviderError::Invalid { .. })));
}

#[test]
fn marker_round_trips_through_the_extended_property() {
    let ev = event();
    let body = create_body(&ev, "cs9").unwrap();
    let props = body["singleValueExtendedProperties"].as_array().unwrap();
    assert_eq!(props.len(), 2);
    assert_eq!(props[0], json!({"id": marker_prop(), "value": "v1;calsync;u-1;t;1;abc"}));
    assert_eq!(props[1], json!({"id": key_prop(), "value": "cs9"}));
    // Read back with another GUID case, as Graph may echo it: still ours.
    let mut g = graph_answer(&body, "AAMkAD3");
    g.single_value_extended_properties = Some(vec![ExtProp {
        id: marker_prop().to_lowercase().replace("name calsyncmarker", "Name calsyncMarker"),
        value: Some(ev.marker.encode()),
    }]);
    assert_eq!(to_remote(&g, None).unwrap().marker, Some(marker()));
    // The Name part is case-sensitive: another name is not our property.
    g.single_value_extended_properties = Some(vec![ExtProp {
        id: marker_prop().replace("calsyncMarker", "CalsyncMarker"),
        value: Some(ev.marker.encode()),
    }]);
    assert_eq!(to_remote(&g, None).unwrap().marker, None);
    g.single_value_extended_properties = None;
    assert_eq!(to_remote(&g, None).unwrap().marker, None, "no property, no stand-in: not ours");
}

#[test]
fn patch_body_clears_removed_fields() {
    let mut ev = event();
    ev.description = None;
    ev.category = None;
    ev.recurrence.clear();
    let body = patch_body(&ev).unwrap();
    assert_eq!(body["body"]["content"], json!(""));
    assert_eq!(body["categories"], json!([]));
    assert_eq!(body.get("recurrence"), Some(&Value::Null), "an explicit null removes the series pattern");
    assert!(body.get("transactionId").is_none(), "transactionId cannot change after create");
    assert_eq!(body["singleValueExtendedProperties"][0]["value"], json!(ev.marker.encode()), "new hash written");
}

#[test]
fn filters_quote_literals() {
    assert_eq!(
        key_filter("cs1'x"),
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq 'cs1''x')", key_prop())
    );
    assert!(expand().starts_with("singleValueExtendedProperties($filter=id eq 'String {"));
}

#[test]
fn windows_zone_names_and_partial_items() {
    assert_eq!(iana_zone("Pacific Standard Time").as_deref(), Some("America/Los_Angeles"));
    assert_eq!(iana_zone("Europe/Berlin").as_deref(), Some("Europe/Berlin"));
    assert_eq!(iana_zone("Mars Standard Time"), None);
    let partial: GraphEvent = serde_json::from_value(json!({"id": "x", "subject": "only this"})).unwrap();
    assert!(!partial.is_complete());
    assert!(matches!(to_remote(&partial, None), Err(ProviderError::Invalid { .. })));
    let occ: GraphEvent =
        serde_json::from_value(json!({"id": "o1", "type": "occurrence", "seriesMasterId": "m1"})).unwrap();
    assert_eq!(occ.series(), Some("m1"));
}

#[test]
fn a_free_block_shows_as_free() {
    let mut ev = event();
    assert_eq!(create_body(&ev, "k").unwrap()["showAs"], "busy");
    ev.transparent = true;
    assert_eq!(create_body(&ev, "k").unwrap()["showAs"], "free");
    assert_eq!(patch_body(&ev).unwrap()["showAs"], "free");
}
