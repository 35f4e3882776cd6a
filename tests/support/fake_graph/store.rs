//! The fake Graph's event model: strict validation of event bodies (POST and PATCH), rendering
//! in Graph's documented shape (`@odata.etag` W/"changeKey", times in the `Prefer`red zone,
//! recurrence with every field filled in as Graph answers), and the expansion of a series into
//! occurrences for calendarView (daily and weekly patterns; other patterns show their first
//! instance only).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::odata::{check_prop_id, parse_local, same_prop};

/// A 4xx answer: status, Graph error code, message.
pub type Reject = (u16, &'static str, String);

fn reject(status: u16, code: &'static str, msg: impl Into<String>) -> Reject {
    (status, code, msg.into())
}

pub struct Calendar {
    pub id: String,
    pub name: String,
    pub default: bool,
    pub can_edit: bool,
}

pub struct Event {
    pub id: String,
    pub calendar: String,
    pub change_key: String,
    /// Global write sequence of the last change (delta tracking).
    pub seq: u64,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    /// Validated event fields (subject, body, start, end, isAllDay, categories, recurrence...).
    pub fields: Map<String, Value>,
    pub transaction_id: Option<String>,
    pub props: Vec<(String, String)>,
}

const ALLOWED: [&str; 15] = [
    "subject",
    "body",
    "start",
    "end",
    "isAllDay",
    "categories",
    "recurrence",
    "transactionId",
    "singleValueExtendedProperties",
    "location",
    "showAs",
    "importance",
    "sensitivity",
    "isReminderOn",
    "reminderMinutesBeforeStart",
];

pub fn zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

fn check_time(k: &str, v: &Value) -> Result<(), Reject> {
    let o = v.as_object().ok_or_else(|| reject(400, "RequestBodyRead", format!("{k} must be a dateTimeTimeZone")))?;
    if o.keys().any(|x| x != "dateTime" && x != "timeZone") {
        return Err(reject(400, "RequestBodyRead", format!("{k} has properties dateTimeTimeZone does not have")));
    }
    let dt = o.get("dateTime").and_then(Value::as_str).unwrap_or_default();
    if parse_local(dt).is_none() {
        return Err(reject(
            400,
            "ErrorInvalidRequest",
            format!("{k}.dateTime {dt:?} is not a local ISO 8601 date-time"),
        ));
    }
    let tz = o.get("timeZone").and_then(Value::as_str).unwrap_or_default();
    if zone(tz).is_none() {
        return Err(reject(
            400,
            "TimeZoneNotSupportedException",
            format!("A valid TimeZone value must be specified. {tz:?}"),
        ));
    }
    Ok(())
}

fn check_recurrence(v: &Value) -> Result<(), Reject> {
    if v.is_null() {
        return Ok(());
    }
    let bad = |m: &str| reject(400, "ErrorInvalidRequest", format!("recurrence: {m}"));
    let p = &v["pattern"];
    let r = &v["range"];
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let days = p.get("daysOfWeek").and_then(Value::as_array).map(|d| d.len()).unwrap_or(0);
    if num(p, "interval") == 0 {
        return Err(bad("pattern.interval must be at least 1"));
    }
    let ok = match p["type"].as_str().unwrap_or_default() {
        "daily" => true,
        "weekly" => days > 0,
        "absoluteMonthly" => (1..=31).contains(&num(p, "dayOfMonth")),
        "relativeMonthly" => days > 0 && p["index"].is_string(),
        "absoluteYearly" => (1..=12).contains(&num(p, "month")) && (1..=31).contains(&num(p, "dayOfMonth")),
        "relativeYearly" => (1..=12).contains(&num(p, "month")) && days > 0 && p["index"].is_string(),
        _ => return Err(bad("unknown pattern.type")),
    };
    if !ok {
        return Err(bad("pattern is missing properties its type needs"));
    }
    let date = |k: &str| r.get(k).and_then(Value::as_str).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    if date("startDate").is_none() {
        return Err(bad("range.startDate is required"));
    }
    match r["type"].as_str().unwrap_or_default() {
        "noEnd" => Ok(()),
        "endDate" if date("endDate").is_some() => Ok(()),
        "numbered" if num(r, "numberOfOccurrences") > 0 => Ok(()),
        _ => Err(bad("range.type and its end do not match")),
    }
}

/// Validate a POST (`creating`) or PATCH body.
pub fn validate(body: &Value, creating: bool) -> Result<(), Reject> {
    let o = body.as_object().ok_or_else(|| reject(400, "RequestBodyRead", "the body must be a JSON object"))?;
    for (k, v) in o {
        if !ALLOWED.contains(&k.as_str()) {
            return Err(reject(
                400,
                "RequestBodyRead",
                format!("The property '{k}' does not exist on type 'microsoft.graph.event'"),
            ));
        }
        let ok = match k.as_str() {
            "subject" => v.is_string(),
            "body" => {
                v.get("content").is_some_and(Value::is_string)
                    && v.get("contentType")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.eq_ignore_ascii_case("text") || t.eq_ignore_ascii_case("html"))
            }
            "start" | "end" => {
                check_time(k, v)?;
                true
            }
            "isAllDay" => v.is_boolean(),
            "categories" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "recurrence" => {
                check_recurrence(v)?;
                true
            }
            "transactionId" if !creating => {
                return Err(reject(
                    400,
                    "ErrorInvalidRequest",
                    "transactionId cannot be changed after the event is created",
                ));
            }
            "transactionId" => v.is_string(),
            "singleValueExtendedProperties" => {
                for p in v.as_array().into_iter().flatten() {
                    let id = p["id"].as_str().unwrap_or_default();
                    check_prop_id(id).map_err(|m| reject(400, "ErrorInvalidProperty", m))?;
                    if !p["value"].is_string() {
                        return Err(reject(400, "ErrorInvalidProperty", "extended property values must be strings"));
                    }
                }
                v.is_array()
            }
            _ => true,
        };
        if !ok {
            return Err(reject(400, "RequestBodyRead", format!("invalid value for property '{k}'")));
        }
    }
    if creating && (!o.contains_key("start") || !o.contains_key("end")) {
        return Err(reject(400, "ErrorInvalidRequest", "start and end are required"));
    }
    Ok(())
}

/// Rules across fields, checked on the merged event.
pub fn check_merged(f: &Map<String, Value>) -> Result<(), Reject> {
    let t = |k: &str| {
        (f[k]["dateTime"].as_str().and_then(parse_local), f[k]["timeZone"].as_str().unwrap_or_default().to_string())
    };
    let ((Some(s), sz), (Some(e), ez)) = (t("start"), t("end")) else {
        return Err(reject(400, "ErrorInvalidRequest", "start and end are required"));
    };
    if f.get("isAllDay") == Some(&json!(true)) {
        let midnight = |n: &NaiveDateTime| n.time() == chrono::NaiveTime::MIN;
        if !midnight(&s) || !midnight(&e) || sz != ez {
            return Err(reject(
                400,
                "ErrorPropertyValidationFailure",
                "If isAllDay is true, start and end must be set to midnight and be in the same time zone",
            ));
        }
    }
    let (Some(a), Some(b)) = (instant(&f["start"]), instant(&f["end"])) else {
        return Err(reject(400, "ErrorInvalidRequest", "start or end does not exist in its time zone"));
    };
    if b < a {
        return Err(reject(400, "ErrorInvalidRequest", "The event's end is before its start"));
    }
    Ok(())
}

/// The instant of a stored dateTimeTimeZone.
pub fn instant(v: &Value) -> Option<DateTime<Utc>> {
    let local = parse_local(v["dateTime"].as_str()?)?;
    let tz = zone(v["timeZone"].as_str()?)?;
    tz.from_local_datetime(&local).earliest().map(|t| t.with_timezone(&Utc))
}

impl Event {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.change_key)
    }

    pub fn span(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let s = instant(&self.fields["start"]).unwrap_or_default();
        (s, instant(&self.fields["end"]).unwrap_or(s))
    }

    fn all_day(&self) -> bool {
        self.fields.get("isAllDay") == Some(&json!(true))
    }

    /// (start, end) of every instance overlapping `[from, to)`, with an occurrence id for
    /// instances of a series (`None` for a single event).
    pub fn instances(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(Option<String>, DateTime<Utc>, DateTime<Utc>)> {
        let (s, e) = self.span();
        let overlaps = |a: DateTime<Utc>, b: DateTime<Utc>| a < to && (b > from || (a == b && a >= from));
        let rec = self.fields.get("recurrence").filter(|r| !r.is_null());
        let Some(rec) = rec else {
            return if overlaps(s, e) { vec![(None, s, e)] } else { vec![] };
        };
        let tz = self.fields["start"]["timeZone"].as_str().and_then(zone).unwrap_or(Tz::UTC);
        let local = self.fields["start"]["dateTime"].as_str().and_then(parse_local).unwrap_or_default();
        let len = e - s;
        let p = &rec["pattern"];
        let r = &rec["range"];
        let interval = p["interval"].as_i64().unwrap_or(1).max(1);
        let first =
            r["startDate"].as_str().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()).unwrap_or(local.date());
        let until = r["endDate"]
            .as_str()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .filter(|_| r["type"] == "endDate");
        let max =
            if r["type"] == "numbered" { r["numberOfOccurrences"].as_u64().unwrap_or(0) as usize } else { usize::MAX };
        let days: Vec<String> = p["daysOfWeek"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_lowercase))
            .collect();
        let week_start = |d: NaiveDate| d - Duration::days(d.weekday().num_days_from_sunday() as i64);
        let kind = p["type"].as_str().unwrap_or_default();
        let mut out = Vec::new();
        let mut count = 0;
        let mut d = first;
        while count < max && until.is_none_or(|u| d <= u) && d <= to.date_naive() + Duration::days(1) {
            let hit = match kind {
                "daily" => (d - first).num_days() % interval == 0,
                "weekly" => {
                    let name = format!("{:?}", d.weekday()).to_lowercase();
                    days.iter().any(|x| x.starts_with(&name[..3]))
                        && ((week_start(d) - week_start(first)).num_days() / 7) % interval == 0
                }
                // The fake expands daily and weekly series; others show their first instance.
                _ => d == local.date(),
            };
            if hit {
                count += 1;
                let at = if self.all_day() { d.and_time(chrono::NaiveTime::MIN) } else { d.and_time(local.time()) };
                if let Some(a) = tz.from_local_datetime(&at).earliest().map(|t| t.with_timezone(&Utc))
                    && overlaps(a, a + len)
                {
                    out.push((Some(format!("{}OCC{}", self.id.trim_end_matches('='), d.format("%Y%m%d"))), a, a + len));
                }
            }
            d += Duration::days(1);
            if (d - first).num_days() > 3700 {
                break;
            }
        }
        out
    }

    /// The event as Graph returns it, times in `tz`. `expand` names the extended properties to
    /// include; `delta` gives the calendarView/delta item shape.
    pub fn render(&self, tz: Tz, expand: Option<&[String]>, delta: bool) -> Value {
        let mut v = Map::new();
        if delta {
            v.insert("@odata.type".into(), json!("#microsoft.graph.event"));
        }
        v.insert("@odata.etag".into(), json!(self.etag()));
        v.insert("id".into(), json!(self.id));
        v.insert("createdDateTime".into(), json!(self.created.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
        v.insert(
            "lastModifiedDateTime".into(),
            json!(self.modified.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        v.insert("changeKey".into(), json!(self.change_key));
        v.insert("categories".into(), self.fields.get("categories").cloned().unwrap_or(json!([])));
        if self.transaction_id.is_some() || delta {
            v.insert("transactionId".into(), json!(self.transaction_id));
        }
        v.insert("originalStartTimeZone".into(), self.fields["start"]["timeZone"].clone());
        v.insert("originalEndTimeZone".into(), self.fields["end"]["timeZone"].clone());
        v.insert("iCalUId".into(), json!(format!("040000008200E00074C5B7101A82E008{}", self.id.len())));
        v.insert("subject".into(), self.fields.get("subject").cloned().unwrap_or(json!("")));
        v.insert(
            "body".into(),
            self.fields.get("body").cloned().unwrap_or(json!({"contentType": "text", "content": ""})),
        );
        v.insert("isAllDay".into(), json!(self.all_day()));
        v.insert("isCancelled".into(), json!(false));
        v.insert("showAs".into(), self.fields.get("showAs").cloned().unwrap_or(json!("busy")));
        let (s, e) = self.span();
        v.insert("start".into(), self.time(&self.fields["start"], s, tz));
        v.insert("end".into(), self.time(&self.fields["end"], e, tz));
        let rec = self.fields.get("recurrence").filter(|r| !r.is_null()).map(|r| filled(r, &self.fields["start"]));
        v.insert("type".into(), json!(if rec.is_some() { "seriesMaster" } else { "singleInstance" }));
        v.insert("recurrence".into(), rec.unwrap_or(Value::Null));
        v.insert(
            "webLink".into(),
            json!(format!("https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item", self.id)),
        );
        if let Some(ids) = expand {
            let props: Vec<Value> = self
                .props
                .iter()
                .filter(|(id, _)| ids.iter().any(|x| same_prop(x, id)))
                .map(|(id, value)| json!({"id": id, "value": value}))
                .collect();
            if !props.is_empty() {
                v.insert("singleValueExtendedProperties".into(), json!(props));
            }
        }
        Value::Object(v)
    }

    /// One occurrence of a series, as calendarView lists it.
    pub fn render_occurrence(
        &self,
        id: &str,
        s: DateTime<Utc>,
        e: DateTime<Utc>,
        tz: Tz,
        expand: Option<&[String]>,
    ) -> Value {
        let mut v = self.render(tz, expand, false);
        v["id"] = json!(id);
        v["type"] = json!("occurrence");
        v["seriesMasterId"] = json!(self.id);
        v["recurrence"] = Value::Null;
        v["start"] = self.time(&self.fields["start"], s, tz);
        v["end"] = self.time(&self.fields["end"], e, tz);
        v
    }

    fn time(&self, stored: &Value, at: DateTime<Utc>, tz: Tz) -> Value {
        let name = if tz == Tz::UTC { "UTC".to_string() } else { tz.name().to_string() };
        if self.all_day() {
            // All-day boundaries float: midnight of the same date whatever zone is asked for.
            let d = at.with_timezone(&stored["timeZone"].as_str().and_then(zone).unwrap_or(Tz::UTC)).date_naive();
            return json!({"dateTime": format!("{}T00:00:00.0000000", d.format("%Y-%m-%d")), "timeZone": name});
        }
        json!({"dateTime": at.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": name})
    }
}

/// A stored recurrence with every field Graph fills in.
fn filled(r: &Value, start: &Value) -> Value {
    let mut r = r.clone();
    let p = &mut r["pattern"];
    for (k, d) in
        [("month", json!(0)), ("dayOfMonth", json!(0)), ("firstDayOfWeek", json!("sunday")), ("index", json!("first"))]
    {
        if p.get(k).is_none() {
            p[k] = d;
        }
    }
    if p.get("daysOfWeek").is_none() {
        p["daysOfWeek"] = json!([]);
    }
    let g = &mut r["range"];
    for (k, d) in [
        ("endDate", json!("0001-01-01")),
        ("numberOfOccurrences", json!(0)),
        ("recurrenceTimeZone", start["timeZone"].clone()),
    ] {
        if g.get(k).is_none() {
            g[k] = d;
        }
    }
    r
}
