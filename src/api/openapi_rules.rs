//! The rules the API enforces on request fields, stated in the OpenAPI document so generated
//! clients and fuzzers agree with the server (`mapping`, the handlers' checks): ids without
//! control characters, times in the shapes `mapping::check_time` accepts with real month/day/hour
//! ranges, IANA zones as the list this build knows, calendar types and `keep` as enums, and
//! update/delete naming exactly one of `event_id`/`task_id`. Applied by field name to the schemas
//! that request bodies reach and to path parameters, so a new request field named like an
//! existing one gets the same rule.
//!
//! Owns: those document edits. Must not touch: the checks themselves (they stay in the handlers
//! and `mapping`; this only describes them) or response schemas.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// No C0/C1 control characters except tab and newline (`char::is_control` minus those two).
const NO_CONTROL: &str = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$";
/// At least one visible character, no control characters (trimmed non-empty).
const VISIBLE: &str = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b-\x1f\x7f-\x9f]*$";
const DATE: &str = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])";
const CLOCK: &str = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?";
const OFFSET: &str = "(Z|z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";

/// A task time: RFC 3339, a local date-time, or a date.
fn task_time() -> String {
    format!("^{DATE}(T{CLOCK}{OFFSET}?)?$")
}

/// An instant: RFC 3339, seconds and offset included.
fn instant() -> String {
    format!(r"^{DATE}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{{1,9}})?{OFFSET}$")
}

/// A local date-time (no offset): read in `timezone`, which must then be given.
fn local_time() -> String {
    format!("^{DATE}T{CLOCK}$")
}

const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// Apply the rules to `doc` (the document as JSON).
pub fn apply(doc: &mut Value) {
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
    let reachable = request_schemas(doc);
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.insert(
            "TimeZone".into(),
            json!({"type": "string", "description": "An IANA time zone name.", "enum": zones}),
        );
        for name in &reachable {
            if let Some(schema) = schemas.get_mut(name) {
                schema_rules(name, schema);
            }
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else { continue };
            for op in ops.values_mut() {
                for p in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
                    param_rules(path, p);
                }
            }
        }
    }
}

/// Names of the component schemas a request body reaches (through `$ref`s, transitively).
fn request_schemas(doc: &Value) -> BTreeSet<String> {
    let mut todo: Vec<String> = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for ops in paths.values().filter_map(Value::as_object) {
            for op in ops.values() {
                if let Some(body) = op.get("requestBody") {
                    refs(body, &mut todo);
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone())
            && let Some(schema) = doc.pointer(&format!("/components/schemas/{name}"))
        {
            refs(schema, &mut todo);
        }
    }
    seen
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) =
                m.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.push(name.to_string());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn nullable(p: &Value) -> bool {
    p.get("type").and_then(Value::as_array).is_some_and(|t| t.iter().any(|x| x == "null"))
}

fn set(p: &mut Value, key: &str, value: Value) {
    if let Some(m) = p.as_object_mut() {
        m.insert(key.into(), value);
    }
}

/// The string's enum, keeping `null` allowed where it was.
fn one_of_values(p: &mut Value, values: &[&str]) {
    let mut values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    if nullable(p) {
        values.push(Value::Null);
    }
    set(p, "enum", Value::Array(values));
}

fn schema_rules(schema_name: &str, schema: &mut Value) {
    field_rules(schema_name, schema);
    object_rules(schema_name, schema);
}

fn field_rules(schema_name: &str, schema: &mut Value) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    for (field, p) in props.iter_mut() {
        match field.as_str() {
            "user_id" | "task_id" | "event_id" | "calendar_id" | "version" => {
                set(p, "pattern", json!(NO_CONTROL));
                // The server refuses empty ids (`mapping::text`), whatever the field's type says.
                if p.get("minLength").is_none() {
                    set(p, "minLength", json!(1));
                }
            }
            "category" => set(p, "pattern", json!(NO_CONTROL)),
            "start" if schema_name == "HoursRange" => set(p, "pattern", json!("^([01][0-9]|2[0-3]):[0-5][0-9]$")),
            "end" if schema_name == "HoursRange" => set(p, "pattern", json!("^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")),
            "id" if schema_name == "TaskData" => set(p, "pattern", json!(NO_CONTROL)),
            "apple_id" | "app_password" => {
                set(p, "pattern", json!(VISIBLE));
                // The password's limit is 1,024 bytes; 256 characters fit in any encoding.
                if field == "app_password" {
                    set(p, "maxLength", json!(256));
                }
            }
            "timezone" => {
                let zone = json!({"$ref": "#/components/schemas/TimeZone"});
                *p = if nullable(p) { json!({"anyOf": [zone, {"type": "null"}]}) } else { zone };
            }
            "scheduled_time" => set(p, "pattern", json!(task_time())),
            "start" | "end" if schema_name == "OccurrenceException" => set(p, "pattern", json!(task_time())),
            "start" | "end" if schema_name == "TimeWindow" => set(p, "pattern", json!(instant())),
            "earliest_start" | "deadline" => set(p, "pattern", json!(instant())),
            "calendar_type" | "default_calendar_type" => {
                // Category routes and preferences name YAML-made `caldav` accounts too.
                let kinds: &[&str] = if schema_name.starts_with("Category") || field == "default_calendar_type" {
                    &["google", "outlook", "apple", "caldav"]
                } else {
                    &["google", "outlook", "apple"]
                };
                one_of_values(p, kinds);
            }
            "keep" => one_of_values(p, &["task", "calendar"]),
            _ => {}
        }
    }
    // The task is named by one id or the other, never null (see `object_rules`).
    if matches!(schema_name, "UpdateEventRequest" | "DeleteEventRequest" | "ResolveConflictRequest") {
        for id in ["event_id", "task_id"] {
            if let Some(p) = props.get_mut(id) {
                set(p, "type", json!("string"));
            }
        }
    }
}

fn object_rules(schema_name: &str, schema: &mut Value) {
    match schema_name {
        // A local scheduled_time is read in the task's zone, so the zone must come with it.
        "TaskData" => set(
            schema,
            "if",
            json!({"properties": {"scheduled_time": {"pattern": local_time()}}, "required": ["scheduled_time"]}),
        ),
        "SuggestTimesRequest" => set(schema, "not", json!({"required": ["window", "window_days"]})),
        // At least one day with hours (the server refuses a week without any).
        "WeekHours" => {
            let any_day: Vec<Value> = DAYS
                .iter()
                .map(|d| json!({"required": [d], "properties": {*d: {"type": "array", "minItems": 1}}}))
                .collect();
            set(schema, "anyOf", Value::Array(any_day));
        }
        _ => {}
    }
    if schema_name == "TaskData" {
        set(
            schema,
            "then",
            json!({"required": ["timezone"], "properties": {"timezone": {"$ref": "#/components/schemas/TimeZone"}}}),
        );
    }
    // update-event, delete-event and resolve-conflict name the task by exactly one of the ids.
    if matches!(schema_name, "UpdateEventRequest" | "DeleteEventRequest" | "ResolveConflictRequest") {
        set(
            schema,
            "oneOf",
            json!([
                {"required": ["event_id"], "not": {"required": ["task_id"]}},
                {"required": ["task_id"], "not": {"required": ["event_id"]}}
            ]),
        );
    }
}

fn param_rules(path: &str, p: &mut Value) {
    let (Some(name), Some(schema)) = (p.get("name").and_then(Value::as_str).map(str::to_string), p.get_mut("schema"))
    else {
        return;
    };
    match name.as_str() {
        "user_id" => {
            let m: &mut Map<String, Value> = match schema.as_object_mut() {
                Some(m) => m,
                None => return,
            };
            m.insert("pattern".into(), json!(NO_CONTROL));
            m.insert("minLength".into(), json!(1));
            m.insert("maxLength".into(), json!(200));
        }
        "calendar_type" if path.contains("/connect/") => {
            // Apple connects through /apple/connect (this one answers with where to go).
            one_of_values(schema, &["google", "outlook", "apple"]);
        }
        "calendar_type" => one_of_values(schema, &["google", "outlook", "apple", "caldav"]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let mut d = serde_json::to_value(crate::api::openapi::raw_document()).unwrap();
        apply(&mut d);
        d
    }

    #[test]
    fn request_fields_carry_the_servers_rules_and_responses_do_not() {
        let d = doc();
        let s = |p: &str| d.pointer(p).cloned().unwrap_or(Value::Null);
        assert_eq!(s("/components/schemas/TaskToCalendarRequest/properties/user_id/pattern"), json!(NO_CONTROL));
        assert_eq!(s("/components/schemas/TaskData/properties/scheduled_time/pattern"), json!(task_time()));
        assert_eq!(s("/components/schemas/ResolveConflictRequest/properties/keep/enum"), json!(["task", "calendar"]));
        assert!(
            s("/components/schemas/TimeZone/enum").as_array().is_some_and(|z| z.contains(&json!("America/New_York")))
        );
        assert!(s("/components/schemas/UpdateEventRequest/oneOf").is_array());
        // Responses describe what the server sends, not rules on input.
        assert_eq!(s("/components/schemas/SyncRecord/properties/user_id/pattern"), Value::Null);
    }

    #[test]
    fn the_patterns_accept_what_the_server_accepts_and_refuse_what_it_refuses() {
        let time = regex::Regex::new(&task_time()).unwrap();
        let shape = regex::Regex::new(crate::resources::tasksync::TIME_PATTERN).unwrap();
        for ok in [
            "2025-10-17",
            "2025-10-17T14:00",
            "2025-10-17T14:00:00",
            "2025-10-17T14:00:00Z",
            "2025-10-17T14:00:00.5-05:00",
        ] {
            assert!(time.is_match(ok), "{ok}");
            assert!(
                shape.is_match(ok) && crate::engine::desired::parse_time("t", ok).is_ok(),
                "the server accepts {ok}"
            );
        }
        for bad in ["0000-00-00", "2025-13-01", "2025-10-17T24:00", "2025-10-17 14:00", "17/10/2025"] {
            assert!(!time.is_match(bad), "{bad}");
        }
        let no_control = regex::Regex::new(NO_CONTROL).unwrap();
        assert!(
            no_control.is_match("user 123\twith tab")
                && !no_control.is_match("a\u{7}b")
                && !no_control.is_match("\u{85}")
        );
        let visible = regex::Regex::new(VISIBLE).unwrap();
        assert!(visible.is_match(" me@icloud.com ") && !visible.is_match("   ") && !visible.is_match(""));
    }
}
