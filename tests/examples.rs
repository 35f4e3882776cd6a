//! Every manifest in examples/ is accepted by the CRDs' openAPIV3Schema and CEL rules (the same
//! validation `calsync apply` does, standing in for the API server), and a broken copy is not.

use calsync::standalone::cli::documents;
use calsync::standalone::validate::validate;
use serde_json::Value;

fn example_docs() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("examples/").flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).expect("read example");
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for doc in documents(&text, &name).unwrap_or_else(|e| panic!("{e}")) {
            out.push((name.clone(), doc));
        }
    }
    out
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

#[test]
fn every_example_validates_against_the_crds() {
    let docs = example_docs();
    let custom: Vec<_> = docs.iter().filter(|(_, d)| matches!(kind(d), "CalendarConnection" | "TaskSync")).collect();
    assert!(custom.len() >= 7, "expected the connection and task examples, found {}", custom.len());
    for (file, doc) in &custom {
        if let Err(e) = validate(kind(doc), doc, None) {
            panic!("{file}: {e}");
        }
    }
    // The other documents are Secrets with the keys calsync reads.
    for (file, doc) in docs.iter().filter(|(_, d)| kind(d) == "Secret") {
        let keys: Vec<&str> =
            doc["stringData"].as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        assert!(keys.contains(&"password") || keys.contains(&"refresh_token"), "{file}: Secret keys {keys:?}");
    }
}

#[test]
fn a_broken_example_is_refused() {
    let docs = example_docs();
    let task = docs.iter().find(|(_, d)| kind(d) == "TaskSync").map(|(_, d)| d.clone()).expect("a TaskSync example");
    let conn =
        docs.iter().find(|(_, d)| kind(d) == "CalendarConnection").map(|(_, d)| d.clone()).expect("a connection");
    let broken: Vec<(&str, Value, &str)> = vec![
        (
            "end before start",
            with(&task, "/spec", |s| {
                s["start"] = "2026-10-17T14:00:00Z".into();
                s["end"] = "2026-10-17T13:00:00Z".into();
                s.as_object_mut().map(|m| m.remove("duration"));
            }),
            "end must be after start",
        ),
        ("bad time zone", with(&task, "/spec", |s| s["timeZone"] = "New York".into()), "timeZone"),
        ("unknown field", with(&task, "/spec", |s| s["titel"] = "typo".into()), "unknown field"),
        ("unknown provider", with(&conn, "/spec", |s| s["provider"] = "icloud".into()), "provider"),
    ];
    for (what, doc, want) in broken {
        let err = validate(kind(&doc), &doc, None).err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(err.to_string().contains(want), "{what}: wanted {want:?} in {err}");
    }
}

fn with(doc: &Value, pointer: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut d = doc.clone();
    if let Some(v) = d.pointer_mut(pointer) {
        f(v);
    }
    d
}
