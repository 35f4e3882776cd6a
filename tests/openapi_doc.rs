//! The OpenAPI document is valid, as someone else's validator reads it: the reference
//! `openapi-spec-validator` (PyPI) checks the served document against the OpenAPI 3.1 schema
//! and its semantic rules (every path parameter declared in the path, and so on).

#[path = "support/pyvenv.rs"]
mod pyvenv;

const VALIDATE: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
spec, _ = read_from_filename(sys.stdin.read().strip())
validate(spec)
print("valid", len(spec["paths"]))
"#;

#[test]
fn the_served_document_passes_openapi_spec_validator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    let doc = calsync::api::openapi::document();
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let py = pyvenv::venv("openapi-spec-validator", &["openapi-spec-validator==0.9.0"]);
    let out = pyvenv::run_python(&py, VALIDATE, path.to_str().unwrap());
    let paths = doc["paths"].as_object().map_or(0, |p| p.len());
    assert_eq!(out.trim(), format!("valid {paths}"));
}

/// The validator is not a rubber stamp: the mistake it found in the document before (a query
/// parameter declared as a path parameter) is refused.
#[test]
fn the_validator_refuses_a_parameter_missing_from_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    let mut doc = calsync::api::openapi::document();
    let op = &mut doc["paths"]["/api/calendar/disconnect/{user_id}"]["post"]["parameters"];
    op.as_array_mut().unwrap().push(serde_json::json!({"name": "calendar_type", "in": "path", "required": true,
        "schema": {"type": "string"}}));
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let py = pyvenv::venv("openapi-spec-validator", &["openapi-spec-validator==0.9.0"]);
    let script = format!(
        "import sys\ntry:\n{}\nexcept Exception as e:\n    print('refused:', type(e).__name__)\n",
        VALIDATE.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    );
    let out = pyvenv::run_python(&py, &script, path.to_str().unwrap());
    assert!(out.starts_with("refused:"), "{out}");
}
