//! A throwaway REST API server on the in-memory store and calendar, for fuzzing the API
//! (`scripts/fuzz-api.sh`) and for trying the endpoints by hand before `calsync standalone`
//! exists. Not a product: state is lost on exit, the "calendar" is `MemoryCalendar` (it accepts
//! apple_id `user`, app_password `secret`).
//!
//! The loop that reconciles changed objects stands in for the standalone work queue (built
//! elsewhere); it mirrors the test helper in `tests/api/support.rs`.
//!
//! Usage: `CALSYNC_API_KEYS=k cargo run --example api_memory_server -- 127.0.0.1:5055`

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use calsync::api::{ApiConfig, AppState, Metrics, router};
use calsync::engine::memory::MemoryObjects;
use calsync::engine::{Engine, EngineConfig, Kind, ObjectKey, Objects, Outcome};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};
use tokio::sync::{broadcast, mpsc};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    calsync::telemetry::init(calsync::telemetry::LogFormat::Text);
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5055".into());
    let config = ApiConfig::from_env()?;
    if !config.has_auth() {
        anyhow::bail!("set CALSYNC_API_KEYS (and/or CALSYNC_JWT_SECRET): every endpoint needs a token");
    }
    let objects: Arc<dyn Objects> = Arc::new(MemoryObjects::new());
    let connector = Arc::new(MemoryConnector { service: MemoryCalendar::new() });
    let engine = Engine::new(objects.clone(), connector.clone(), EngineConfig::default());
    tokio::spawn(reconcile_loop(engine, objects.subscribe()));
    let state = AppState::new(objects, connector, "default", config, Arc::new(Metrics::new()));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{addr}");
    axum::serve(listener, router(state)).await?;
    Ok(())
}

async fn reconcile_loop(engine: Engine, mut changes: broadcast::Receiver<ObjectKey>) {
    let (requeue_tx, mut requeue_rx) = mpsc::unbounded_channel::<ObjectKey>();
    loop {
        let first = tokio::select! {
            k = changes.recv() => match k {
                Ok(k) => Some(k),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(k) = requeue_rx.recv() => Some(k),
        };
        let mut keys: BTreeSet<ObjectKey> = first.into_iter().collect();
        while let Ok(k) = changes.try_recv() {
            keys.insert(k);
        }
        for key in keys {
            let outcome = match key.kind {
                Kind::TaskSync => engine.reconcile_task_sync(&key.namespace, &key.name).await,
                Kind::CalendarConnection => engine.reconcile_connection(&key.namespace, &key.name).await,
            };
            let delay = match outcome {
                Ok(Outcome::Requeue(d)) => Some(d),
                Ok(Outcome::Done) => None,
                Err(_) => Some(Duration::from_millis(500)),
            };
            if let Some(d) = delay.filter(|d| *d < Duration::from_secs(30)) {
                let tx = requeue_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(key);
                });
            }
        }
    }
}
