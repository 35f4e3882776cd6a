//! Unauthenticated operational endpoints: `/healthz` (the process serves), `/readyz` (the object
//! store answers), `/metrics` (Prometheus text) and the OpenAPI document.
//!
//! Owns: those four answers. Must not touch: user data (nothing here names a user).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::dto::HealthResponse;
use crate::api::errors::ApiError;
use crate::api::state::AppState;
use crate::engine::Labels;

pub async fn healthz() -> axum::Json<HealthResponse> {
    axum::Json(HealthResponse { status: "ok".into() })
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    // A selector nothing carries: a cheap round trip that proves the store answers.
    let probe = Labels::from([("calendar.getitdone.app/readiness-probe".to_string(), "none".to_string())]);
    match state.objects.list_connections(Some(&state.namespace), &probe).await {
        Ok(_) => axum::Json(HealthResponse { status: "ready".into() }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: object store unavailable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the object store is unavailable")
                .into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics_unavailable", "metrics could not be rendered")
                .into_response()
        }
    }
}

pub async fn openapi() -> Response {
    axum::Json(crate::api::openapi::document()).into_response()
}
