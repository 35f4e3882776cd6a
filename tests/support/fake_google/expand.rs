//! Recurrence expansion for the fake (`singleEvents=true`, window checks of recurring masters):
//! the event's `recurrence` lines plus a DTSTART built from its `start` go to the `rrule` crate;
//! instances get Google's ids (`<masterId>_<yyyymmddThhmmssZ>`, `<masterId>_<yyyymmdd>` for
//! all-day), `recurringEventId`, `originalStartTime` and the master's other fields.
//! Owns no state.

use chrono::{DateTime, Duration, Utc};
use rrule::RRuleSet;
use serde_json::{Map, Value, json};

use super::event::{When, parse_when};

/// Most instances one master expands to in one answer (Google caps expansion too).
const MAX_INSTANCES: u16 = 1000;

/// The master's rule set, DTSTART in the start's zone (dates: midnight UTC, mapped back later).
pub fn rule_set(ev: &Map<String, Value>) -> Result<RRuleSet, String> {
    let start = parse_when(ev.get("start"), "start").map_err(|e| e.message)?;
    let lines: Vec<&str> = ev
        .get("recurrence")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (dtstart, all_day) = match start {
        When::Date(d) => (format!("DTSTART:{}T000000Z", d.format("%Y%m%d")), true),
        When::DateTime(t, Some(tz)) => {
            (format!("DTSTART;TZID={}:{}", tz.name(), t.with_timezone(&tz).format("%Y%m%dT%H%M%S")), false)
        }
        When::DateTime(_, None) => return Err("recurring events need start.timeZone".into()),
    };
    let mut text = dtstart;
    for line in lines {
        text.push('\n');
        if all_day {
            text.push_str(&date_values_to_utc(line));
        } else {
            text.push_str(line);
        }
    }
    text.parse::<RRuleSet>().map_err(|e| e.to_string())
}

/// `EXDATE;VALUE=DATE:20250105,20250112` → `EXDATE:20250105T000000Z,20250112T000000Z`, matching
/// the midnight-UTC DTSTART used for all-day series.
fn date_values_to_utc(line: &str) -> String {
    let Some((head, values)) = line.split_once(':') else { return line.to_string() };
    if !head.to_ascii_uppercase().contains("VALUE=DATE") || head.to_ascii_uppercase().starts_with("RRULE") {
        return line.to_string();
    }
    let name = head.split(';').next().unwrap_or(head);
    let values: Vec<String> = values.split(',').map(|v| format!("{}T000000Z", v.trim())).collect();
    format!("{name}:{}", values.join(","))
}

/// One expanded instance.
pub struct Instance {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub resource: Value,
}

/// The instances of recurring `master` whose start lies in `[from, to)` (loosely; callers apply
/// the exact END/START bounds), as Google returns them with `singleEvents=true`.
pub fn instances(
    master: &Map<String, Value>,
    calendar_tz: chrono_tz::Tz,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Vec<Instance> {
    let (Ok(start), Ok(end)) = (parse_when(master.get("start"), "start"), parse_when(master.get("end"), "end")) else {
        return Vec::new();
    };
    let Ok(mut set) = rule_set(master) else { return Vec::new() };
    let length = end.instant(calendar_tz) - start.instant(calendar_tz);
    // An instance that starts before `from` can still end after it.
    if let Some(from) = from {
        set = set.after((from - length - Duration::days(1)).with_timezone(&rrule::Tz::UTC));
    }
    if let Some(to) = to {
        set = set.before((to + Duration::days(1)).with_timezone(&rrule::Tz::UTC));
    }
    let master_id = master.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut out = Vec::new();
    for occurrence in set.all(MAX_INSTANCES).dates {
        let utc = occurrence.with_timezone(&Utc);
        let (id, start_json, end_json) = match (start, end) {
            (When::Date(_), When::Date(end_date)) => {
                let day = utc.date_naive();
                let days = (end_date - start_date(start)).num_days();
                let end_day = day + Duration::days(days);
                (
                    format!("{master_id}_{}", day.format("%Y%m%d")),
                    json!({ "date": day.format("%Y-%m-%d").to_string() }),
                    json!({ "date": end_day.format("%Y-%m-%d").to_string() }),
                )
            }
            (When::DateTime(_, start_tz), When::DateTime(_, end_tz)) => {
                let stz = start_tz.unwrap_or(calendar_tz);
                let etz = end_tz.unwrap_or(stz);
                let end_at = utc + length;
                (
                    format!("{master_id}_{}", utc.format("%Y%m%dT%H%M%SZ")),
                    json!({ "dateTime": utc.with_timezone(&stz).to_rfc3339(), "timeZone": stz.name() }),
                    json!({ "dateTime": end_at.with_timezone(&etz).to_rfc3339(), "timeZone": etz.name() }),
                )
            }
            _ => continue,
        };
        let mut resource = master.clone();
        resource.remove("recurrence");
        resource.insert("id".into(), json!(id));
        resource.insert("recurringEventId".into(), json!(master_id));
        resource.insert("originalStartTime".into(), start_json.clone());
        resource.insert("start".into(), start_json.clone());
        resource.insert("end".into(), end_json.clone());
        let s = parse_when(Some(&start_json), "start").map(|w| w.instant(calendar_tz)).unwrap_or(utc);
        let e = parse_when(Some(&end_json), "end").map(|w| w.instant(calendar_tz)).unwrap_or(utc);
        out.push(Instance { start: s, end: e, resource: Value::Object(resource) });
    }
    out
}

fn start_date(w: When) -> chrono::NaiveDate {
    match w {
        When::Date(d) => d,
        When::DateTime(t, _) => t.date_naive(),
    }
}

/// Whether `ev` is recurring.
pub fn is_recurring(ev: &Map<String, Value>) -> bool {
    ev.get("recurrence").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}
