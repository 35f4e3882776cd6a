//! No server-side request forgery through `/apple/connect`'s `server_url`: with the cluster
//! rule (public addresses only) a CalDAV server on a refused address gets no request at all —
//! named directly, behind a hostname that resolves to it, or behind a redirect from an allowed
//! server — the answer is a 4xx naming the rule, and nothing is stored. Only loopback listeners
//! are used (127.0.0.1, 127.0.0.2): tests never send traffic into a real network; the private
//! and link-local ranges are covered by the unit tests of the address rule.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Method, Request, header};
use calsync::api::{ApiConfig, AppState, Metrics, router};
use calsync::credentials::Credentials;
use calsync::engine::Objects;
use calsync::engine::memory::MemoryObjects;
use calsync::providers::caldav::CaldavConnector;
use calsync::providers::caldav::guard::AddressPolicy;
use calsync::providers::{Connector, ProviderError, Target};
use calsync::resources::ProviderKind;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

const API_KEY: &str = "ssrf-test-api-key-0123456789";

/// A listener that counts the connections it gets and answers each with `reply`.
async fn listener(addr: &str, reply: String) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind(format!("{addr}:0")).await.expect("bind a loopback listener");
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn redirect_to(url: &str) -> String {
    format!("HTTP/1.1 301 Moved Permanently\r\nlocation: {url}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}

struct Api {
    objects: MemoryObjects,
    router: axum::Router,
}

/// The REST API as `calsync api` builds it: the real CalDAV connector, both under `policy`.
fn api(policy: AddressPolicy) -> Api {
    let objects = MemoryObjects::new();
    let config = ApiConfig {
        api_keys: vec![API_KEY.to_string().into()],
        caldav_addresses: policy.clone(),
        ..ApiConfig::default()
    };
    let connector = Arc::new(CaldavConnector::with_policy(policy));
    let shared: Arc<dyn Objects> = Arc::new(objects.clone());
    let state = AppState::new(shared, connector, "default", config, Arc::new(Metrics::new()));
    Api { objects, router: router(state) }
}

impl Api {
    async fn connect(&self, server_url: &str) -> (u16, Value) {
        let body = json!({"user_id": "mallory", "apple_id": "m@example.com", "app_password": "not-a-real-one",
            "server_url": server_url});
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/calendar/apple/connect")
            .header(header::AUTHORIZATION, format!("Bearer {API_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn stored_nothing(&self) {
        let conns = self.objects.list_connections(None, &calsync::engine::Labels::new()).await.unwrap();
        assert!(conns.is_empty(), "a refused connect stored a connection: {conns:?}");
    }
}

#[tokio::test]
async fn a_refused_address_gets_no_request_directly_by_name_or_behind_a_redirect() {
    let (inner_port, inner_seen) = listener("127.0.0.2", NOT_FOUND.into()).await;
    let inner = format!("http://127.0.0.2:{inner_port}/dav/");

    // Named directly.
    let strict = api(AddressPolicy::public_only());
    let (s, v) = strict.connect(&inner).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("server_address_refused")), "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains("127.0.0.2") && msg.contains("loopback"), "the rule is named: {msg}");
    strict.stored_nothing().await;

    // A hostname that resolves to a refused address.
    let (named_port, named_seen) = listener("127.0.0.1", NOT_FOUND.into()).await;
    let (s, v) = strict.connect(&format!("http://localhost:{named_port}/dav/")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("server_address_refused")), "{v}");
    strict.stored_nothing().await;
    assert_eq!(named_seen.load(Ordering::SeqCst), 0, "the listener behind the name got a request");

    // Behind a redirect from a server the operator allows (127.0.0.1 named as trusted).
    let (redirector_port, redirector_seen) = listener("127.0.0.1", redirect_to(&inner)).await;
    let trusting = api(AddressPolicy { trusted_hosts: vec!["127.0.0.1".into()], ..AddressPolicy::public_only() });
    let (s, v) = trusting.connect(&format!("http://127.0.0.1:{redirector_port}/")).await;
    assert!((400..500).contains(&s), "a redirect to a refused address is a 4xx: {s} {v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("loopback"), "{v}");
    assert!(redirector_seen.load(Ordering::SeqCst) >= 1, "the allowed server was asked");
    trusting.stored_nothing().await;

    assert_eq!(inner_seen.load(Ordering::SeqCst), 0, "the refused address got a request");
}

/// The client's own resolver enforces the rule (a DNS answer that changed after the API's
/// check, or a stored connection from before this rule): the engine's calls to a name that
/// resolves to a refused address fail as invalid, naming the rule, and open no connection.
#[tokio::test]
async fn the_client_refuses_names_that_resolve_to_refused_addresses() {
    let (port, seen) = listener("127.0.0.1", NOT_FOUND.into()).await;
    let connector = CaldavConnector::with_policy(AddressPolicy::public_only());
    let target = Target {
        provider: ProviderKind::Caldav,
        server_url: Some(format!("http://localhost:{port}/dav/")),
        connection: "default/stored".into(),
    };
    let creds = Credentials::Basic { username: "u".into(), password: "p".to_string().into() };
    let provider = connector.connect(&target, &creds).await.unwrap();
    let err = provider.account().await.unwrap_err();
    assert!(matches!(&err, ProviderError::Invalid { message } if message.contains("loopback")), "{err:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // Standalone's default (this machine allowed) reaches it.
    let local = CaldavConnector::with_policy(AddressPolicy::local());
    let provider = local.connect(&target, &creds).await.unwrap();
    let _ = provider.account().await;
    assert!(seen.load(Ordering::SeqCst) >= 1, "standalone reaches a local server");
}

/// The built binary reads the setting: standalone with CALSYNC_CALDAV_ALLOW_PRIVATE=false
/// refuses loopback like a cluster, before any request.
#[tokio::test]
async fn standalone_binary_applies_calsync_caldav_allow_private() {
    let (port, seen) = listener("127.0.0.2", NOT_FOUND.into()).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = support::calsync_bin::Standalone::start_with(
        dir.path(),
        support::calsync_bin::Standalone::pick_port(),
        &[("CALSYNC_CALDAV_ALLOW_PRIVATE", "false".to_string())],
    )
    .await;
    let body = json!({"user_id": "mallory", "apple_id": "m@example.com", "app_password": "not-a-real-one",
        "server_url": format!("http://127.0.0.2:{port}/")});
    let (s, v) = bin.call("POST", "/apple/connect", Some(body)).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("server_address_refused")), "{v}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}
