//! Extractors that turn axum's plain-text rejections (bad JSON, wrong types, missing content
//! type, oversized body, bad query or path) into the API's JSON errors.
//!
//! Owns: rejection → `ApiError`. Must not touch: validation beyond what serde checks (handlers
//! and `mapping` do that).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;

use super::errors::ApiError;

/// `axum::Json` with JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Serde's messages name the field and the expected type; for the password field even the type
/// error could echo what was sent, so it gets a fixed message. An unknown field is named as
/// such (its message lists field names, never values), even on the endpoint with a password.
fn scrub(text: String) -> String {
    if text.contains("app_password") && !text.contains("unknown field") {
        "app_password must be a string".into()
    } else {
        text
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", scrub(e.body_text()))
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("invalid_json", scrub(e.body_text())),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
            }
            other => ApiError::new(
                if other.status().is_client_error() { other.status() } else { StatusCode::BAD_REQUEST },
                "invalid_body",
                "the request body could not be read",
            ),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}
