//! `controller::api::serve` in-process: `/readyz` stays 503 while the API server does not
//! answer the watches' first list, and turns 200 once both watches have listed; `/healthz` is
//! 200 throughout (the process serves).

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use calsync::api::ApiConfig;
use calsync::controller::api::{ApiSettings, serve};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use support::*;

async fn status(http: &reqwest::Client, base: &str, path: &str) -> u16 {
    http.get(format!("{base}{path}")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_watches() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = FakeApiServer::new();
    server.set_unavailable(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let settings = ApiSettings {
        namespace: NS.into(),
        config: ApiConfig::default(),
        connector: Arc::new(MemoryConnector { service: MemoryCalendar::new() }),
        reporter_instance: None,
        oauth: None,
        sealer: Arc::new(calsync::controller::secrets::EnvelopeSealer::new(
            calsync::credentials::envelope::Keyring::new(calsync::credentials::envelope::Key::generate().0),
        )),
        push_keys: None,
    };
    let (stop, shutdown) = calsync::controller::shutdown_signal();
    let task = tokio::spawn(serve(server.client(), listener, settings, shutdown));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    let mut seen_healthy = false;
    for _ in 0..40 {
        seen_healthy |= status(&http, &base, "/healthz").await == 200;
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "ready before the watches listed anything");
        // The gate answers (not only the store probe behind it, which fails here too).
        let body = r.text().await.unwrap();
        assert!(body.contains("watch caches are not synced"), "{body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen_healthy, "/healthz answers while not ready");

    server.set_unavailable(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while status(&http, &base, "/readyz").await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never became ready once the API server answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = stop.send(());
    let done = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "graceful stop: {done:?}");
}
