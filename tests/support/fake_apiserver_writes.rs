//! The fake API server's PATCH (merge, strategic as merge, JSON patch with `test`, server-side
//! apply) and DELETE (finalizers, deletion mark, owner references) semantics.

use http::StatusCode;
use serde_json::{Value, json};

use super::paths::{Parsed, ResourceType};
use super::{FakeApiServer, Reply, State, err, finalizers, now};

impl FakeApiServer {
    pub(super) fn patch(s: &mut State, p: &Parsed, ns: &str, name: &str, content_type: &str, body: Value) -> Reply {
        let key = (p.rt.clone(), ns.to_string(), name.to_string());
        let apply = content_type.starts_with("application/apply-patch");
        let current = match s.objects.get(&key) {
            Some(c) => c.clone(),
            None if apply && !p.status => {
                let mut obj = body;
                obj["metadata"]["name"] = json!(name);
                return Self::create(s, &p.rt, ns, obj);
            }
            None => {
                return err(404, "NotFound", format!("{} \"{name}\" not found", p.rt.plural));
            }
        };
        let mut doc = current.clone();
        if content_type.starts_with("application/json-patch+json") {
            let mut ops: json_patch::Patch = match serde_json::from_value(body) {
                Ok(ops) => ops,
                Err(e) => return err(400, "BadRequest", format!("invalid JSON patch: {e}")),
            };
            // The API server's JSON patch library (evanphx/json-patch) lets `test` of a missing
            // member against null pass; kube's finalizer helper relies on that.
            ops.0.retain(|op| match op {
                json_patch::PatchOperation::Test(t) => !(t.value.is_null() && doc.pointer(t.path.as_str()).is_none()),
                _ => true,
            });
            if let Err(e) = json_patch::patch(&mut doc, &ops) {
                return err(422, "Invalid", format!("the JSON patch could not be applied: {e}"));
            }
        } else if content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
            || apply
        {
            json_patch::merge(&mut doc, &body);
        } else {
            return err(415, "UnsupportedMediaType", format!("unsupported patch type {content_type}"));
        }
        // A resourceVersion the patch set is a precondition; otherwise the patch applies to
        // whatever is current.
        let wanted = doc["metadata"]["resourceVersion"].clone();
        if wanted != current["metadata"]["resourceVersion"] {
            if !wanted.is_null() {
                return err(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        p.rt.plural
                    ),
                );
            }
            doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        Self::update(s, p, ns, name, doc, Some(&current))
    }

    pub(super) fn delete(s: &mut State, rt: &ResourceType, ns: &str, name: &str) -> Reply {
        let key = (rt.clone(), ns.to_string(), name.to_string());
        let Some(mut obj) = s.objects.get(&key).cloned() else {
            return err(404, "NotFound", format!("{} \"{name}\" not found", rt.plural));
        };
        s.resource_version += 1;
        let rv = s.resource_version;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if finalizers(&obj).is_empty() {
            s.objects.remove(&key);
            Self::emit(s, rv, rt, ns, "DELETED", obj.clone());
            // Owner references: what this object owned goes too (the garbage collector's job).
            if let Some(uid) = obj["metadata"]["uid"].as_str().map(String::from) {
                let owned: Vec<_> = s
                    .objects
                    .iter()
                    .filter(|(_, o)| {
                        o["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in owned {
                    let (krt, kns, kname) = k.clone();
                    let _ = Self::delete(s, &krt, &kns, &kname);
                }
            }
            return (
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                       "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]}}),
            );
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now());
            if rt.is_custom() {
                let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                obj["metadata"]["generation"] = json!(g + 1);
            }
        }
        s.objects.insert(key, obj.clone());
        Self::emit(s, rv, rt, ns, "MODIFIED", obj.clone());
        (StatusCode::OK, obj)
    }
}
