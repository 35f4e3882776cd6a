//! The CRDs in `crds/` are exactly what `calsync crdgen` prints, are structural, describe every
//! field, and their CEL rules accept good objects and refuse bad ones.

use std::process::Command;

use calsync::resources::{CalendarConnection, TaskSync};
use kube::CustomResourceExt;
use serde_json::Value;

#[test]
fn crds_dir_matches_crdgen() {
    let out = Command::new(env!("CARGO_BIN_EXE_calsync")).arg("crdgen").output().expect("run calsync crdgen");
    assert!(out.status.success(), "crdgen failed: {}", String::from_utf8_lossy(&out.stderr));
    let committed =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/calsync.yaml")).expect("read crds/calsync.yaml");
    assert!(
        out.stdout == committed,
        "crds/calsync.yaml is stale: run `cargo run -- crdgen > crds/calsync.yaml` and commit it"
    );
}

/// Walk a schema node; collect problems with their JSON path.
fn check_node(path: &str, node: &Value, problems: &mut Vec<String>, needs_description: bool) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    for banned in ["$ref", "oneOf", "anyOf", "allOf", "definitions", "$schema"] {
        if obj.contains_key(banned) {
            problems.push(format!("{path}: has {banned} (not structural)"));
        }
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !preserve && obj.get("x-kubernetes-int-or-string").is_none() {
        problems.push(format!("{path}: no type"));
    }
    if needs_description && !obj.contains_key("description") {
        problems.push(format!("{path}: no description"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_node(&format!("{path}.{k}"), v, problems, true);
        }
    }
    if let Some(items) = obj.get("items") {
        // Items of a described list need no description of their own, their fields do.
        check_node(&format!("{path}[]"), items, problems, false);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_node(&format!("{path}{{}}"), ap, problems, false);
    }
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let v = serde_json::to_value(crd).unwrap();
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn crds_are_structural_and_fully_described() {
    for crd in [CalendarConnection::crd(), TaskSync::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        let v = serde_json::to_value(&crd).unwrap();
        let version = &v["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object(), "{name}: no status subresource");
        assert!(
            version["additionalPrinterColumns"].as_array().is_some_and(|a| a.len() >= 4),
            "{name}: printer columns"
        );
        assert_eq!(v["spec"]["names"]["categories"][0], "getitdone", "{name}");
        assert!(v["spec"]["names"]["shortNames"].as_array().is_some_and(|a| !a.is_empty()), "{name}");
        let schema = schema_of(&crd);
        let mut problems = Vec::new();
        for part in ["spec", "status"] {
            check_node(&format!("{name}.{part}"), &schema["properties"][part], &mut problems, true);
        }
        assert!(problems.is_empty(), "schema problems:\n{}", problems.join("\n"));
    }
}

fn task_sync(spec: Value) -> TaskSync {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "calendar.getitdone.app/v1alpha1",
        "kind": "TaskSync",
        "metadata": {"name": "t"},
        "spec": spec,
    }))
    .expect("valid TaskSync shape")
}

#[test]
fn cel_rules_accept_good_and_refuse_bad_task_syncs() {
    let base = serde_json::json!({"connectionRef": {"name": "c"}, "taskId": "t1", "title": "x"});
    let with = |extra: Value| {
        let mut v = base.clone();
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        task_sync(v)
    };
    let good = [
        serde_json::json!({"start": "2026-03-05T14:00:00Z", "duration": "30m"}),
        serde_json::json!({"start": "2026-03-05T14:00:00", "timeZone": "Europe/Berlin", "end": "2026-03-05T15:00:00"}),
        serde_json::json!({"start": "2026-03-05", "allDay": true}),
        serde_json::json!({"start": "2026-03-05T14:00:00+01:00", "end": "2026-03-05T15:00:00+01:00"}),
        // A task calsync places: no start, a schedule and a zone.
        serde_json::json!({"timeZone": "America/New_York", "schedule": {"durationMinutes": 60,
            "deadline": "2027-03-12T17:00:00", "workingHours": {"monday": [{"start": "09:00", "end": "12:00"}]}}}),
    ];
    for g in good {
        let ts = with(g.clone());
        assert!(ts.validate_cel().is_ok(), "refused good spec {g}: {:?}", ts.validate_cel());
    }
    let bad = [
        (
            serde_json::json!({"start": "2026-03-05T14:00:00Z", "duration": "30m", "end": "2026-03-05T15:00:00Z"}),
            "either duration or end",
        ),
        (serde_json::json!({"start": "2026-03-05T14:00:00", "duration": "30m"}), "needs timeZone"),
        (serde_json::json!({"start": "2026-03-05T14:00:00Z", "allDay": true}), "allDay needs start as a date"),
        (
            serde_json::json!({"start": "2026-03-05T14:00:00Z", "end": "2026-03-05T13:00:00Z"}),
            "end must be after start",
        ),
        (
            serde_json::json!({"start": "2026-03-05T14:00:00Z", "timeZone": "UTC", "schedule": {"durationMinutes": 30}}),
            "exactly one of start",
        ),
        (serde_json::json!({"timeZone": "UTC"}), "exactly one of start"),
        (serde_json::json!({"schedule": {"durationMinutes": 30}}), "schedule needs timeZone"),
        (serde_json::json!({"timeZone": "UTC", "duration": "30m", "schedule": {"durationMinutes": 30}}), "one block"),
        (
            serde_json::json!({"timeZone": "UTC", "recurrence": ["RRULE:FREQ=DAILY"], "schedule": {"durationMinutes": 30}}),
            "one block",
        ),
    ];
    for (b, want) in bad {
        let err = with(b.clone()).validate_cel().expect_err(&format!("accepted bad spec {b}"));
        assert!(format!("{err:?}").contains(want), "spec {b}: wanted {want:?}, got {err:?}");
    }
}

#[test]
fn cel_rules_check_connections() {
    let conn = |spec: Value| -> CalendarConnection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
            "metadata": {"name": "c"}, "spec": spec,
        }))
        .unwrap()
    };
    let ok = conn(
        serde_json::json!({"userId": "u", "provider": "caldav", "serverUrl": "http://127.0.0.1:5232/", "credentialsSecretRef": {"name": "s"}}),
    );
    assert!(ok.validate_cel().is_ok(), "{:?}", ok.validate_cel());
    let bad = conn(serde_json::json!({"userId": "u", "provider": "caldav", "credentialsSecretRef": {"name": "s"}}));
    assert!(format!("{:?}", bad.validate_cel()).contains("needs spec.serverUrl"));
    let mut changed = ok.clone();
    changed.spec.provider = calsync::resources::ProviderKind::Google;
    assert!(format!("{:?}", changed.validate_cel_update(&ok)).contains("provider is immutable"));
}
