//! Client-side admission for `calsync apply`: what the Kubernetes API server would refuse, we
//! refuse, with the same kind of message. Checks, in the API server's order: strict decoding
//! (unknown fields), `metadata.name`, the CRD's `openAPIV3Schema` (types, enums, patterns,
//! lengths, required), then the CEL rules (`x-kubernetes-validations`, transition rules against
//! the stored object on update).
//!
//! Owns: validation of CalendarConnection and TaskSync documents. Must not touch: storage.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::resources::{CalendarConnection, TaskSync};

/// One kind's schema, compiled once.
struct KindSchema {
    schema: Value,
    validator: Option<jsonschema::Validator>,
    /// CEL rules compiled once (compiling them per document dominated `apply` time).
    cel: kube::core::cel::CompiledSchema,
}

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> KindSchema {
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => Some(v),
        Err(e) => {
            // Only a bug in the generated CRD gets here; CEL still runs.
            tracing::error!(error = %e, "the generated CRD schema does not compile as JSON Schema");
            None
        }
    };
    let cel = kube::core::cel::compile_schema(&schema);
    KindSchema { schema, validator, cel }
}

fn schemas(kind: &str) -> Option<&'static KindSchema> {
    static CONN: OnceLock<KindSchema> = OnceLock::new();
    static TASK: OnceLock<KindSchema> = OnceLock::new();
    match kind {
        "CalendarConnection" => Some(CONN.get_or_init(|| schema_of(CalendarConnection::crd()))),
        "TaskSync" => Some(TASK.get_or_init(|| schema_of(TaskSync::crd()))),
        _ => None,
    }
}

/// Why an object was refused, formatted like the API server's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `The TaskSync "x" is invalid: spec.start: Invalid value: ...`
    #[error("The {kind} {name:?} is invalid: {}", join(.causes))]
    Invalid { kind: String, name: String, causes: Vec<String> },
    /// Unknown or mistyped fields (kubectl's strict field validation).
    #[error("{kind} {name:?} cannot be handled as a {kind}: strict decoding error: {}", .fields.iter().map(|f| format!("unknown field {f:?}")).collect::<Vec<_>>().join(", "))]
    UnknownFields { kind: String, name: String, fields: Vec<String> },
}

fn join(causes: &[String]) -> String {
    if causes.len() == 1 { causes[0].clone() } else { format!("[{}]", causes.join(", ")) }
}

fn pointer_to_path(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

fn short(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 80 { format!("{}...\"", s.chars().take(76).collect::<String>()) } else { s }
        }
    }
}

fn schema_cause(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let path = pointer_to_path(e.instance_path().as_str());
    let value = short(e.instance());
    match e.kind() {
        K::Required { property } => {
            let field = property.as_str().unwrap_or_default();
            if path.is_empty() { format!("{field}: Required value") } else { format!("{path}.{field}: Required value") }
        }
        K::Enum { options } => {
            let opts = options
                .as_array()
                .map(|a| a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            format!("{path}: Unsupported value: {value}: supported values: {opts}")
        }
        K::Pattern { pattern } => {
            format!("{path}: Invalid value: {value}: {path} in body should match '{pattern}'")
        }
        K::MaxLength { limit } => format!("{path}: Too long: may not be more than {limit} bytes"),
        K::MinLength { limit } => {
            format!("{path}: Invalid value: {value}: {path} in body should be at least {limit} chars long")
        }
        K::Type { .. } => format!("{path}: Invalid value: {value}: {e}"),
        _ => format!("{path}: Invalid value: {value}: {e}"),
    }
}

/// Fields the schema does not know (only where the schema lists properties and does not keep
/// unknown fields). `metadata` is checked by the caller.
fn unknown_fields(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                    for (k, v) in map {
                        unknown_fields(extra, v, &format!("{path}.{k}"), out);
                    }
                }
                return;
            };
            if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                return;
            }
            for (k, v) in map {
                let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match props.get(k) {
                    Some(s) => unknown_fields(s, v, &child, out),
                    None => out.push(child),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A namespace name: an RFC 1123 label (at most 63 characters).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// Check `object` (a whole CalendarConnection or TaskSync document, defaults applied) as the API
/// server would; `old` is the stored object on update (transition rules).
pub fn validate(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), Refusal> {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(ks) = schemas(kind) else {
        return Err(Refusal::Invalid {
            kind: kind.into(),
            name,
            causes: vec![format!("kind: Unsupported value: {kind:?}")],
        });
    };
    let mut unknown = Vec::new();
    unknown_fields(&ks.schema, object, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(Refusal::UnknownFields { kind: kind.into(), name, fields: unknown });
    }
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push("metadata.name: Required value: name or generateName is required".to_string());
    } else if !is_dns_subdomain(&name) {
        causes.push(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
        ));
    }
    if let Some(ns) = object.pointer("/metadata/namespace").and_then(Value::as_str)
        && !is_dns_label(ns)
    {
        causes.push(format!(
            "metadata.namespace: Invalid value: {ns:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name')"
        ));
    }
    if let Some(v) = &ks.validator {
        causes.extend(v.iter_errors(object).map(|e| schema_cause(&e)));
    }
    // Like the API server, CEL runs only on a schema-valid object.
    if causes.is_empty()
        && let Err(errors) = kube::core::cel::Validator::new().validate_compiled(&ks.cel, object, old)
    {
        for e in errors.as_slice() {
            let path = if e.field_path.is_empty() { "<root>".to_string() } else { e.field_path.clone() };
            let value = object
                .pointer(&format!("/{}", path.replace('.', "/")))
                .map(short)
                .unwrap_or_else(|| "\"object\"".into());
            let label = match e.reason.as_deref() {
                Some("FieldValueRequired") => "Required value".to_string(),
                Some("FieldValueForbidden") => "Forbidden".to_string(),
                _ => format!("Invalid value: {value}"),
            };
            causes.push(format!("{path}: {label}: {}", e.message));
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(Refusal::Invalid { kind: kind.into(), name, causes }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(spec: Value) -> Value {
        json!({"apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync", "metadata": {"name": "t1"}, "spec": spec})
    }

    fn base() -> Value {
        json!({"connectionRef": {"name": "c"}, "taskId": "1", "title": "T", "start": "2026-03-05T14:00:00Z", "deletionPolicy": "Delete", "conflictPolicy": "Manual"})
    }

    #[test]
    fn accepts_a_valid_task_sync() {
        validate("TaskSync", &task(base()), None).unwrap();
    }

    #[test]
    fn refuses_schema_and_cel_violations() {
        let mut s = base();
        s["end"] = json!("2026-03-05T13:00:00Z");
        let err = validate("TaskSync", &task(s), None).unwrap_err().to_string();
        assert!(err.starts_with("The TaskSync \"t1\" is invalid: "), "{err}");
        assert!(err.contains("end must be after start"), "{err}");

        let mut s = base();
        s["timeZone"] = json!("not a zone!");
        let err = validate("TaskSync", &task(s), None).unwrap_err().to_string();
        assert!(err.contains("spec.timeZone: Invalid value: \"not a zone!\""), "{err}");

        let mut s = base();
        s["bogus"] = json!(1);
        let err = validate("TaskSync", &task(s), None).unwrap_err().to_string();
        assert!(err.contains("unknown field \"spec.bogus\""), "{err}");

        let mut s = base();
        s.as_object_mut().unwrap().remove("title");
        let err = validate("TaskSync", &task(s), None).unwrap_err().to_string();
        assert!(err.contains("spec.title: Required value"), "{err}");
    }

    #[test]
    fn exceptions_cancel_or_move_and_need_recurrence() {
        let mut s = base();
        s["timeZone"] = json!("America/New_York");
        s["recurrence"] = json!(["RRULE:FREQ=WEEKLY"]);
        s["exceptions"] = json!([{"originalStart": "2026-03-12T14:00:00Z", "cancelled": true},
                                 {"originalStart": "2026-03-19T14:00:00Z", "start": "2026-03-20T09:00:00"}]);
        validate("TaskSync", &task(s.clone()), None).unwrap();
        let mut both = s.clone();
        both["exceptions"] =
            json!([{"originalStart": "2026-03-12T14:00:00Z", "cancelled": true, "start": "2026-03-13T09:00:00"}]);
        let err = validate("TaskSync", &task(both), None).unwrap_err().to_string();
        assert!(err.contains("either cancels its occurrence"), "{err}");
        let mut neither = s.clone();
        neither["exceptions"] = json!([{"originalStart": "2026-03-12T14:00:00Z"}]);
        assert!(validate("TaskSync", &task(neither), None).unwrap_err().to_string().contains("either cancels"));
        let mut single = s;
        single.as_object_mut().unwrap().remove("recurrence");
        let err = validate("TaskSync", &task(single), None).unwrap_err().to_string();
        assert!(err.contains("exceptions need recurrence"), "{err}");
    }

    #[test]
    fn refuses_unknown_provider_and_immutable_changes() {
        let conn = |provider: &str, user: &str| {
            json!({"apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection", "metadata": {"name": "c"},
                   "spec": {"userId": user, "provider": provider, "credentialsSecretRef": {"name": "s"}, "active": true}})
        };
        let err = validate("CalendarConnection", &conn("yahoo", "u"), None).unwrap_err().to_string();
        assert!(err.contains("spec.provider: Unsupported value: \"yahoo\""), "{err}");
        validate("CalendarConnection", &conn("apple", "u"), None).unwrap();
        let err =
            validate("CalendarConnection", &conn("apple", "v"), Some(&conn("apple", "u"))).unwrap_err().to_string();
        assert!(err.contains("userId is immutable"), "{err}");
        let err = validate("CalendarConnection", &conn("caldav", "u"), None).unwrap_err().to_string();
        assert!(err.contains("serverUrl"), "{err}");
    }

    #[test]
    fn refuses_bad_names() {
        let mut t = task(base());
        t["metadata"]["name"] = json!("Bad_Name");
        assert!(validate("TaskSync", &t, None).unwrap_err().to_string().contains("RFC 1123"));
        let mut t = task(base());
        t["metadata"]["namespace"] = json!("Bad NS");
        assert!(validate("TaskSync", &t, None).unwrap_err().to_string().contains("metadata.namespace"));
    }
}
