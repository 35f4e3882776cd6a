//! A throwaway REST API server on the in-memory store and calendar, for fuzzing the API
//! (`scripts/fuzz-api.sh`) and for trying the endpoints by hand before `calsync standalone`
//! exists. Not a product: state is lost on exit, the "calendar" is `MemoryCalendar` (it accepts
//! apple_id `user`, app_password `secret`, and the OpenAPI document's example account).
//!
//! The loop that reconciles changed objects stands in for the standalone work queue (built
//! elsewhere); it mirrors the test helper in `tests/api/support.rs`.
//!
//! Usage: `CALSYNC_API_KEYS=k cargo run --example api_memory_server -- 127.0.0.1:5055`

use std::sync::Arc;

use calsync::api::{ApiConfig, AppState, Metrics, router};
use calsync::engine::memory::MemoryObjects;
use calsync::engine::{Engine, EngineConfig, Objects};
use calsync::providers::memory::{MemoryCalendar, MemoryConnector};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    calsync::telemetry::init(calsync::telemetry::LogFormat::Text);
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5055".into());
    let config = ApiConfig::from_env()?;
    if !config.has_auth() {
        anyhow::bail!("set CALSYNC_API_KEYS (and/or CALSYNC_JWT_SECRET): every endpoint needs a token");
    }
    let objects: Arc<dyn Objects> = Arc::new(MemoryObjects::new());
    let calendar = MemoryCalendar::new();
    // The document's example account, so requests built from its examples reach the sync logic.
    calendar.add_account("user@icloud.com", "abcd-efgh-ijkl-mnop");
    calendar.add_calendar("/123456789/calendars/home/", true);
    let connector = Arc::new(MemoryConnector { service: calendar });
    let engine = Engine::new(objects.clone(), connector.clone(), EngineConfig::default());
    // The same work queue `calsync standalone` drives its engine with.
    tokio::spawn(calsync::standalone::queue::run(engine, std::future::pending()));
    // A throwaway key, as standalone generates one: push checks and ICS feed tokens need it.
    let keys = calsync::credentials::envelope::Keyring::new(calsync::credentials::envelope::Key::generate().0);
    let state =
        AppState::new(objects, connector, "default", config, Arc::new(Metrics::new())).with_push_keys(keys.push_keys());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{addr}");
    axum::serve(listener, router(state)).await?;
    Ok(())
}
