//! Google's JSON error bodies, exactly in the shape of the Calendar API v3 (`providers.md` §1.9):
//! `{"error":{"errors":[{domain,reason,message,locationType?,location?}],"code":N,"message":..}}`.
//! Owns only the rendering of errors; which error a request gets is decided by the handlers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// One Google API error, rendered as its JSON body with the matching status.
#[derive(Debug, Clone)]
pub struct GoogleError {
    pub code: u16,
    pub domain: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub location: Option<(&'static str, String)>,
    pub retry_after: Option<u64>,
}

impl GoogleError {
    pub fn new(code: u16, domain: &'static str, reason: &'static str, message: impl Into<String>) -> GoogleError {
        GoogleError { code, domain, reason, message: message.into(), location: None, retry_after: None }
    }

    /// Adds `locationType` (`header`, `parameter`) and `location` (`If-Match`, `timeMin`, ...).
    pub fn at(mut self, location_type: &'static str, location: impl Into<String>) -> GoogleError {
        self.location = Some((location_type, location.into()));
        self
    }

    pub fn invalid(message: impl Into<String>) -> GoogleError {
        GoogleError::new(400, "global", "invalid", message)
    }
    pub fn invalid_param(param: &str, message: impl Into<String>) -> GoogleError {
        GoogleError::invalid(message).at("parameter", param.to_string())
    }
    pub fn required(message: impl Into<String>) -> GoogleError {
        GoogleError::new(400, "global", "required", message)
    }
    pub fn parse_error() -> GoogleError {
        GoogleError::new(400, "global", "parseError", "Parse Error")
    }
    pub fn time_range_empty() -> GoogleError {
        GoogleError::new(400, "calendar", "timeRangeEmpty", "The specified time range is empty.")
    }
    pub fn auth() -> GoogleError {
        GoogleError::new(401, "global", "authError", "Invalid Credentials").at("header", "Authorization")
    }
    pub fn insufficient_permissions() -> GoogleError {
        GoogleError::new(403, "global", "insufficientPermissions", "Request had insufficient authentication scopes.")
    }
    pub fn writer_access() -> GoogleError {
        GoogleError::new(403, "calendar", "requiredAccessLevel", "You need to have writer access to this calendar.")
    }
    pub fn not_found() -> GoogleError {
        GoogleError::new(404, "global", "notFound", "Not Found")
    }
    pub fn duplicate() -> GoogleError {
        GoogleError::new(409, "global", "duplicate", "The requested identifier already exists.")
    }
    pub fn deleted() -> GoogleError {
        GoogleError::new(410, "global", "deleted", "Resource has been deleted")
    }
    pub fn full_sync_required() -> GoogleError {
        GoogleError::new(410, "calendar", "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")
            .at("parameter", "syncToken")
    }
    pub fn condition_not_met() -> GoogleError {
        GoogleError::new(412, "global", "conditionNotMet", "Precondition Failed").at("header", "If-Match")
    }
    /// Not Google: the fake's `require_if_match` switch refusing an unconditional write.
    pub fn if_match_required() -> GoogleError {
        GoogleError::new(
            428,
            "global",
            "preconditionRequired",
            "The fake requires If-Match on writes to existing events",
        )
        .at("header", "If-Match")
    }
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        let mut item = json!({ "domain": self.domain, "reason": self.reason, "message": self.message });
        if let Some((kind, location)) = &self.location {
            item["locationType"] = json!(kind);
            item["location"] = json!(location);
        }
        let body = json!({ "error": { "errors": [item], "code": self.code, "message": self.message } });
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp =
            (status, [(header::CONTENT_TYPE, "application/json; charset=UTF-8")], body.to_string()).into_response();
        if self.code == 401 {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\""),
            );
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
