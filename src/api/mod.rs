//! The compatibility REST API (axum): the seed's 11 endpoints under `/api/calendar`, bearer
//! auth, per-user rate limit, CORS, body limit, health/readiness, Prometheus metrics and the
//! OpenAPI document. It declares desired state through the `Objects` port and waits, bounded,
//! for the engine; it never writes to a calendar (DESIGN §2, §6).
//!
//! Owns: routing and cross-cutting layers. Must not touch: reconcile logic, stores, providers'
//! write calls. `main.rs` builds an `AppState` and serves `router(state)`.

pub mod app_events;
pub mod app_webhooks;
pub mod auth;
pub mod busy_cache;
pub mod config;
pub mod cursor;
pub mod dto;
pub mod errors;
pub mod extract;
mod handlers;
pub mod ics;
pub mod mapping;
pub mod metrics;
pub mod openapi;
pub mod openapi_rules;
pub mod routing;
pub mod state;
pub mod stream;
pub mod webhooks;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use config::{ApiConfig, ConfigError};

/// The REST API on standalone mode's services, until standalone shuts down: the API keys are
/// `CALSYNC_API_KEYS` or the ones standalone generated beside the database; objects live in
/// namespace `default`.
pub async fn serve_standalone(
    services: crate::standalone::Services,
    mut config: ApiConfig,
    oauth: Option<std::sync::Arc<OAuthRuntime>>,
    listen: String,
) -> Result<(), String> {
    use std::sync::Arc;
    config.api_keys = services.secrets.api_keys.iter().map(|k| secrecy::SecretString::from(k.clone())).collect();
    let objects: Arc<dyn crate::engine::Objects> = Arc::new(services.store.clone());
    let mut state = AppState::new(objects, services.connector.clone(), "default", config, Arc::new(Metrics::new()));
    if let Some(oauth) = oauth {
        state = state.with_oauth(oauth);
    }
    if let Some(keys) = services.engine.config().live.push_keys.clone() {
        state = state.with_push_keys(keys);
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}; set CALSYNC_LISTEN (or --listen) to a free address"))?;
    tracing::info!(address = %listen, "REST API listening");
    let mut shutdown = services.shutdown.clone();
    let streams = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            streams.close_streams();
        })
        .await
        .map_err(|e| format!("the REST API stopped: {e}"))
}
pub use errors::ApiError;
pub use metrics::Metrics;
pub use state::{AppState, OAuthRuntime};

use handlers::{
    batch, conflicts, connect, events, feeds, health, import, preferences, scheduling, status, tasks, webhooks as hooks,
};

/// Every route of the API with its layers.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/connect/{calendar_type}", post(connect::connect))
        .route("/apple/connect", post(connect::apple_connect))
        .route("/task-to-calendar", post(tasks::task_to_calendar))
        // Up to 500 tasks: a larger body limit than the other endpoints.
        .route("/tasks-to-calendar", post(batch::tasks_to_calendar).layer(DefaultBodyLimit::max(dto::MAX_BATCH_BYTES)))
        .route("/calendar-to-tasks", post(import::calendar_to_tasks))
        .route("/suggest-times", post(scheduling::suggest_times))
        .route("/update-event", put(tasks::update_event))
        .route("/delete-event", delete(tasks::delete_event))
        .route("/connection-status/{user_id}", get(status::connection_status))
        .route("/disconnect/{user_id}", post(status::disconnect))
        .route("/sync-history/{user_id}", get(status::sync_history))
        .route("/conflicts/{user_id}", get(conflicts::list))
        .route("/preferences/{user_id}", get(preferences::get).put(preferences::put))
        .route("/resolve-conflict", post(conflicts::resolve))
        .route("/stream/{user_id}", get(events::stream))
        // One path with the GET below (axum needs one parameter name): here it is the user id.
        .route("/feeds/{key}", post(feeds::create).delete(feeds::revoke))
        // DESIGN §6: every endpoint but the callbacks and health/metrics needs a token, the
        // document included (fetch it with the token, as scripts/fuzz-api.sh does).
        .route("/openapi.json", get(health::openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_auth));
    let open = Router::new()
        .route("/google/callback", get(connect::google_callback))
        .route("/outlook/callback", get(connect::outlook_callback))
        .route("/webhooks/google", post(hooks::google))
        .route("/webhooks/outlook", post(hooks::outlook))
        .route("/webhooks/outlook/lifecycle", post(hooks::outlook_lifecycle))
        // Calendar apps cannot send a bearer token: the feed token in the path is the credential.
        .route("/feeds/{key}", get(feeds::serve));
    let calendar = protected.merge(open);
    let router = Router::new()
        .nest("/api/calendar", calendar)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(cors(&state.config))
        .layer(middleware::from_fn_with_state(state.clone(), track));
    // Outermost, so the request log line and everything the handler does are inside the span.
    let router = match crate::telemetry::traces_on() {
        true => router.layer(middleware::from_fn(crate::telemetry::spans::server_span)),
        false => router,
    };
    router.with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint; see /api/calendar/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not accept this method")
}

fn cors(config: &ApiConfig) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER]);
    if config.cors_origins.iter().any(|o| o == "*") {
        return base.allow_origin(Any);
    }
    let origins: Vec<HeaderValue> = config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    // An empty list allows no cross-origin caller: same-origin only.
    base.allow_origin(AllowOrigin::list(origins))
}

/// Request metrics and one structured log line per request; also makes sure no response the
/// API sends for bad input is a 5xx without a log line.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.record_request(&route, &method, status, elapsed);
    tracing::info!(%route, %method, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    response.into_response()
}
