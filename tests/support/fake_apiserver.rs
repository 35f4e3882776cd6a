//! A strict in-process Kubernetes API server: a tower `Service` that `kube::Client::new` takes,
//! holding objects as JSON in memory, so the real kube-runtime `Controller` runs in tests.
//!
//! Conventions it enforces (the ones calsync relies on, and that a lax fake would hide):
//! - every write bumps a global `resourceVersion`; PUT needs the current one (409 when stale,
//!   422 when missing); a `metadata.resourceVersion` inside a PATCH body is a precondition;
//! - custom resources: `generation` starts at 1 and moves only when `spec` changes (and when the
//!   deletion mark is set, as the real server does); writes to the main resource never change
//!   `status`, writes to `/status` change nothing but `status`;
//! - DELETE of an object with finalizers only sets `deletionTimestamp` (and answers with the
//!   object); removing the last finalizer of a marked object deletes it; no new finalizers
//!   on a marked object (422);
//! - PATCH: JSON merge patch, strategic merge patch (as merge; enough for the Lease fields),
//!   JSON patch with `test` ops (422 when a test fails), server-side apply (merge of the applied
//!   fields, create when absent; no managed-fields conflict detection);
//! - LIST with `labelSelector` (equality terms) and chunking (`limit`, `continue`,
//!   `remainingItemCount`; kube's watcher lists in pages of 500), WATCH from a resourceVersion as a stream of
//!   newline-delimited `{"type","object"}` JSON;
//! - Secrets, events.k8s.io Events and coordination.k8s.io Leases as plain objects.
//!
//! Every request is recorded, so tests can assert "no API write happened".

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};

#[path = "fake_apiserver_paths.rs"]
mod paths;
#[path = "fake_apiserver_writes.rs"]
mod writes;

use paths::{Parsed, ResourceType, labels_match, parse_path, query_param};

pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
    }
}

struct Watcher {
    rt: ResourceType,
    namespace: Option<String>,
    selector: Option<String>,
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    /// (type, namespace, name) → object.
    objects: BTreeMap<(ResourceType, String, String), Value>,
    /// Every change: (rv, type, namespace, event type, object) — watches replay from here.
    log: Vec<(u64, ResourceType, String, &'static str, Value)>,
    watchers: Vec<Watcher>,
    requests: Vec<Recorded>,
    /// While set, every request fails with 503 (an API server outage).
    unavailable: bool,
}

/// The fake API server. Cloning shares the state.
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

type Reply = (StatusCode, Value);

fn err(code: u16, reason: &str, message: impl Into<String>) -> Reply {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        status_body(code, reason, &message.into()),
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

impl FakeApiServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client talking to this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests that write (anything but GET), optionally only those whose path contains `part`.
    pub fn writes(&self, part: &str) -> Vec<Recorded> {
        self.lock().requests.iter().filter(|r| r.is_write() && r.path.contains(part)).cloned().collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Make every request fail with 503 (or serve again).
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// The stored object at an API path like `/apis/g/v/namespaces/ns/plural/name`.
    pub fn get(&self, path: &str) -> Option<Value> {
        let p = parse_path(path)?;
        let s = self.lock();
        s.objects.get(&(p.rt, p.namespace.unwrap_or_default(), p.name?)).cloned()
    }

    /// Objects of a collection path (`/api/v1/namespaces/ns/secrets`, or without namespace).
    pub fn list(&self, path: &str) -> Vec<Value> {
        let Some(p) = parse_path(path) else {
            return vec![];
        };
        let s = self.lock();
        s.objects
            .iter()
            .filter(|((rt, ns, _), _)| *rt == p.rt && p.namespace.as_ref().is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Store an object as it is (no validation): for malformed objects a real server could
    /// hold after a schema change.
    pub fn insert_raw(&self, path: &str, mut object: Value) {
        let Some(p) = parse_path(path) else { return };
        let mut s = self.lock();
        s.resource_version += 1;
        let rv = s.resource_version;
        let ns = p.namespace.clone().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["namespace"] = json!(ns);
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        }
        if object["metadata"]["generation"].is_null() {
            object["metadata"]["generation"] = json!(1);
        }
        let existed = s.objects.insert((p.rt.clone(), ns.clone(), name), object.clone()).is_some();
        Self::emit(&mut s, rv, &p.rt, &ns, if existed { "MODIFIED" } else { "ADDED" }, object);
    }

    fn emit(s: &mut State, rv: u64, rt: &ResourceType, ns: &str, kind: &'static str, object: Value) {
        s.log.push((rv, rt.clone(), ns.to_string(), kind, object.clone()));
        let line = Bytes::from(format!("{}\n", json!({ "type": kind, "object": object })));
        s.watchers.retain(|w| {
            if w.rt != *rt
                || w.namespace.as_ref().is_some_and(|n| n != ns)
                || !labels_match(&object, w.selector.as_deref())
            {
                return !w.tx.is_closed();
            }
            w.tx.unbounded_send(Ok(Frame::data(line.clone()))).is_ok()
        });
    }

    fn handle(
        &self,
        method: Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> Result<Reply, ResponseBody> {
        let mut s = self.lock();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.to_string(),
            query: query.to_string(),
            content_type: content_type.to_string(),
            body: body.clone(),
        });
        if s.unavailable {
            return Ok(err(503, "ServiceUnavailable", "the fake API server is down"));
        }
        let Some(p) = parse_path(path) else {
            return Ok(err(404, "NotFound", format!("no route for {path}")));
        };
        if !p.rt.known() {
            return Ok(err(404, "NotFound", format!("the server could not find the requested resource ({path})")));
        }
        if p.status && !p.rt.is_custom() {
            return Ok(err(404, "NotFound", format!("{} has no status subresource here", p.rt.plural)));
        }
        let ns = p.namespace.clone().unwrap_or_default();
        match (method, &p.name) {
            (Method::GET, None) => {
                let selector = query_param(query, "labelSelector");
                let watch = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
                if watch {
                    let from: u64 = query_param(query, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let (tx, rx) = mpsc::unbounded();
                    for (rv, rt, ons, kind, obj) in &s.log {
                        if *rv > from
                            && *rt == p.rt
                            && p.namespace.as_ref().is_none_or(|n| n == ons)
                            && labels_match(obj, selector.as_deref())
                        {
                            let line = Bytes::from(format!("{}\n", json!({ "type": kind, "object": obj })));
                            let _ = tx.unbounded_send(Ok(Frame::data(line)));
                        }
                    }
                    s.watchers.push(Watcher { rt: p.rt.clone(), namespace: p.namespace.clone(), selector, tx });
                    return Err(StreamBody::new(rx).boxed_unsync());
                }
                // Chunked lists as the real server serves them: at most `limit` items in key
                // order, and a `continue` token naming the last one. Unlike the real server,
                // later pages show objects as they are now, not as of the first page's
                // resourceVersion (a watch from that version replays the difference anyway).
                let limit = match query_param(query, "limit").map(|l| l.parse::<usize>()) {
                    None | Some(Ok(0)) => usize::MAX,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Ok(err(400, "BadRequest", "limit must be a non-negative integer")),
                };
                let (list_rv, after) = match query_param(query, "continue") {
                    None => (s.resource_version, None),
                    Some(token) => match paths::decode_continue(&token) {
                        Some((rv, key)) => (rv, Some(key)),
                        None => return Ok(err(400, "BadRequest", "continue key is not valid")),
                    },
                };
                let mut matching = s.objects.iter().filter(|((rt, ons, name), o)| {
                    *rt == p.rt
                        && p.namespace.as_ref().is_none_or(|n| n == ons)
                        && after.as_ref().is_none_or(|(ans, aname)| (ons, name) > (ans, aname))
                        && labels_match(o, selector.as_deref())
                });
                let page: Vec<(&(ResourceType, String, String), &Value)> = matching.by_ref().take(limit).collect();
                let remaining = matching.count();
                let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
                if remaining > 0
                    && let Some(((_, ons, name), _)) = page.last()
                {
                    metadata["continue"] = json!(paths::encode_continue(list_rv, ons, name));
                    metadata["remainingItemCount"] = json!(remaining);
                }
                let items: Vec<Value> = page.into_iter().map(|(_, o)| o.clone()).collect();
                Ok((
                    StatusCode::OK,
                    json!({
                        "apiVersion": p.rt.api_version(), "kind": format!("{}List", p.rt.kind()),
                        "metadata": metadata,
                        "items": items,
                    }),
                ))
            }
            (Method::GET, Some(name)) => match s.objects.get(&(p.rt.clone(), ns.clone(), name.clone())) {
                Some(o) => Ok((StatusCode::OK, o.clone())),
                None => Ok(err(404, "NotFound", format!("{} \"{name}\" not found", p.rt.plural))),
            },
            (Method::POST, None) => Ok(Self::create(&mut s, &p.rt, &ns, body)),
            (Method::PUT, Some(name)) => Ok(Self::update(&mut s, &p, &ns, name, body, None)),
            (Method::PATCH, Some(name)) => Ok(Self::patch(&mut s, &p, &ns, name, content_type, body)),
            (Method::DELETE, Some(name)) => Ok(Self::delete(&mut s, &p.rt, &ns, name)),
            (m, _) => Ok(err(405, "MethodNotAllowed", format!("{m} is not supported on {path}"))),
        }
    }

    fn create(s: &mut State, rt: &ResourceType, ns: &str, mut body: Value) -> Reply {
        if !body.is_object() {
            return err(400, "BadRequest", "body is not an object");
        }
        if !body["metadata"]["resourceVersion"].is_null() {
            return err(422, "Invalid", "metadata.resourceVersion: Invalid value: must not be set on create");
        }
        let name = match body["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match body["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]),
                None => return err(422, "Invalid", "metadata.name: Required value"),
            },
        };
        if body["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
            return err(400, "BadRequest", "the namespace of the object does not match the namespace of the request");
        }
        let key = (rt.clone(), ns.to_string(), name.clone());
        if s.objects.contains_key(&key) {
            return err(409, "AlreadyExists", format!("{} \"{name}\" already exists", rt.plural));
        }
        s.resource_version += 1;
        let rv = s.resource_version;
        let m = &mut body["metadata"];
        m["name"] = json!(name);
        m["namespace"] = json!(ns);
        m["uid"] = json!(uuid::Uuid::new_v4().to_string());
        m["resourceVersion"] = json!(rv.to_string());
        m["creationTimestamp"] = json!(now());
        if let Some(map) = m.as_object_mut() {
            map.remove("deletionTimestamp");
            map.remove("generateName");
        }
        body["apiVersion"] = json!(rt.api_version());
        body["kind"] = json!(rt.kind());
        if rt.is_custom() {
            body["metadata"]["generation"] = json!(1);
            // With the status subresource, status is not settable on create.
            if let Some(map) = body.as_object_mut() {
                map.remove("status");
            }
        }
        s.objects.insert(key, body.clone());
        Self::emit(s, rv, rt, ns, "ADDED", body.clone());
        (StatusCode::CREATED, body)
    }

    /// PUT (or a PATCH result): `precondition` is the resourceVersion the patch demanded.
    fn update(s: &mut State, p: &Parsed, ns: &str, name: &str, body: Value, patched_from: Option<&Value>) -> Reply {
        let key = (p.rt.clone(), ns.to_string(), name.to_string());
        let Some(current) = s.objects.get(&key).cloned() else {
            return err(404, "NotFound", format!("{} \"{name}\" not found", p.rt.plural));
        };
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return err(400, "BadRequest", "the name of the object does not match the name on the URL");
        }
        let current_rv = current["metadata"]["resourceVersion"].clone();
        match body["metadata"]["resourceVersion"].as_str() {
            None if patched_from.is_none() && p.rt.is_custom() => {
                return err(
                    422,
                    "Invalid",
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                );
            }
            Some(rv) if Some(rv) != current_rv.as_str() => {
                return err(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        p.rt.plural
                    ),
                );
            }
            _ => {}
        }
        let mut next = current.clone();
        if p.status {
            next["status"] = body["status"].clone();
            if next["status"].is_null()
                && let Some(map) = next.as_object_mut()
            {
                map.remove("status");
            }
        } else {
            // Everything but status and the server-owned metadata.
            if let (Some(dst), Some(src)) = (next.as_object_mut(), body.as_object()) {
                for (k, v) in src {
                    if k != "status" && k != "metadata" && k != "apiVersion" && k != "kind" {
                        dst.insert(k.clone(), v.clone());
                    }
                }
                if !p.rt.is_custom() {
                    // Plain objects: fields the body leaves out are cleared (PUT replaces).
                    let drop: Vec<String> = dst
                        .keys()
                        .filter(|k| !["metadata", "apiVersion", "kind"].contains(&k.as_str()) && !src.contains_key(*k))
                        .cloned()
                        .collect();
                    for k in drop {
                        dst.remove(&k);
                    }
                    if let Some(st) = src.get("status") {
                        dst.insert("status".into(), st.clone());
                    }
                }
            }
            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                match body["metadata"].get(field) {
                    Some(v) if !v.is_null() => next["metadata"][field] = v.clone(),
                    _ => {
                        if let Some(m) = next["metadata"].as_object_mut() {
                            m.remove(field);
                        }
                    }
                }
            }
            let marked = !current["metadata"]["deletionTimestamp"].is_null();
            let before = finalizers(&current);
            if marked && finalizers(&next).iter().any(|f| !before.contains(f)) {
                return err(
                    422,
                    "Invalid",
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                );
            }
        }
        if next == current {
            // A no-op write does not move the resourceVersion (as the real server).
            return (StatusCode::OK, current);
        }
        if p.rt.is_custom() && next["spec"] != current["spec"] {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(g + 1);
        }
        s.resource_version += 1;
        let rv = s.resource_version;
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        if !next["metadata"]["deletionTimestamp"].is_null() && finalizers(&next).is_empty() {
            s.objects.remove(&key);
            Self::emit(s, rv, &p.rt, ns, "DELETED", next.clone());
            return (StatusCode::OK, next);
        }
        s.objects.insert(key, next.clone());
        Self::emit(s, rv, &p.rt, ns, "MODIFIED", next.clone());
        (StatusCode::OK, next)
    }
}

impl tower::Service<Request<Body>> for FakeApiServer {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let value: Value =
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
            let content_type =
                parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            let response = match server.handle(parts.method, &path, &query, &content_type, value) {
                Ok((code, body)) => Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body.to_string())).boxed_unsync()),
                Err(stream) => Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(stream),
            };
            Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync())))
        })
    }
}

/// Convenience: API paths of calsync's kinds.
pub fn task_sync_path(ns: &str, name: &str) -> String {
    format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{ns}/tasksyncs/{name}")
}

pub fn connection_path(ns: &str, name: &str) -> String {
    format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{ns}/calendarconnections/{name}")
}

pub fn secret_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets/{name}")
}

pub fn events_path(ns: &str) -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{ns}/events")
}

pub fn leases_path(ns: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases")
}
