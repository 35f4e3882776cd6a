//! Microsoft Graph change-notification subscriptions on a calendar's events: create (`POST
//! /subscriptions`), renew in place (`PATCH`), delete.
//!
//! Owns: the subscription request bodies, reading Graph's answer, and which answers mean
//! "gone". Must not touch when to watch or renew (the engine decides) nor receiving
//! notifications and the validation handshake (the REST layer answers Graph's POSTs).
//!
//! The secret travels only inside `clientState` (`<watch id>.<secret>`, so calsync can route a
//! notification on the part before the dot): never in a log line or an error message. Graph
//! echoes `clientState` in its answers, so those bodies are parsed into the two fields we need
//! and error messages are scrubbed.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::OutlookProvider;
use super::client::{GraphResponse, classify};
use crate::providers::{ProviderError, Watch, WatchRequest};

/// Graph refuses a longer `clientState`.
pub const MAX_CLIENT_STATE: usize = 128;

/// The fields of Graph's subscription answer we read (the rest, `clientState` included, is
/// deliberately not deserialized).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphSubscription {
    id: String,
    expiration_date_time: String,
}

/// What the subscription watches. `primary` names the mailbox's default calendar (as
/// `calendar_path` does); Graph's resource for it is `me/events`. Any other id, the default
/// calendar's own id included, is addressed directly, which Graph accepts too.
pub fn resource(calendar: &str) -> String {
    if calendar == "primary" { "me/events".into() } else { format!("me/calendars/{calendar}/events") }
}

/// Graph's `expirationDateTime` for `ttl` from `now`.
fn expiration(now: DateTime<Utc>, ttl: std::time::Duration) -> Result<String, ProviderError> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .ok_or_else(|| ProviderError::Invalid {
            message: format!("a subscription lifetime of {}s is out of range", ttl.as_secs()),
        })
}

/// The create body. The secret goes only into this JSON, which is never logged.
pub fn create_body(calendar: &str, request: &WatchRequest, now: DateTime<Utc>) -> Result<Value, ProviderError> {
    let client_state = format!("{}.{}", request.id, request.secret.expose_secret());
    if client_state.len() > MAX_CLIENT_STATE {
        // Checked here because Graph's refusal could quote the value.
        return Err(ProviderError::Invalid {
            message: format!(
                "the clientState of watch {} would be {} characters; Microsoft Graph allows {MAX_CLIENT_STATE}",
                request.id,
                client_state.len()
            ),
        });
    }
    let mut body = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": request.address,
        "resource": resource(calendar),
        "expirationDateTime": expiration(now, request.ttl)?,
        "clientState": client_state,
    });
    // Graph cannot add a lifecycle URL to an existing subscription, so it is set now or never.
    if let Some(l) = &request.lifecycle_address {
        body["lifecycleNotificationUrl"] = json!(l);
    }
    Ok(body)
}

/// The subscription id and granted expiration of a create or renew answer.
fn parse(resp: &GraphResponse, what: &str) -> Result<(String, DateTime<Utc>), ProviderError> {
    let sub: GraphSubscription = resp.parse(what)?;
    let expiration = DateTime::parse_from_rfc3339(&sub.expiration_date_time)
        .map_err(|e| ProviderError::Invalid {
            message: format!(
                "Microsoft Graph's expirationDateTime {:?} while {what} is not RFC 3339: {e}",
                sub.expiration_date_time
            ),
        })?
        .with_timezone(&Utc);
    Ok((sub.id, expiration))
}

/// A renewal Graph refused. A 400 means the subscription cannot be extended as it is (Graph
/// answers `ErrorInvalidParameter` on PATCH when a tenant's maximum lifetime is shorter than
/// asked, and a missed expiry can surface as 400 too); `NotFound` makes the engine delete and
/// recreate it, which either works or fails on the create with the real reason.
fn renew_error(resp: &GraphResponse, what: &str) -> ProviderError {
    match classify(resp, what) {
        ProviderError::Invalid { message } if resp.status.as_u16() == 400 => {
            ProviderError::NotFound { message: format!("{message}; the subscription cannot be renewed, recreate it") }
        }
        e => e,
    }
}

/// `POST /subscriptions` for `calendar`. Graph validates both URLs before it answers.
pub async fn watch(p: &OutlookProvider, calendar: &str, request: &WatchRequest) -> Result<Watch, ProviderError> {
    let secret = request.secret.expose_secret();
    let body = create_body(calendar, request, Utc::now())?;
    let url = p.graph.url(&["subscriptions"], &[]);
    let what = format!("subscribing watch {} to calendar {calendar}", request.id);
    let resp = p.graph.send(Method::POST, &url, &[], Some(&body)).await.map_err(|e| e.redact(secret))?;
    if !matches!(resp.status.as_u16(), 200 | 201) {
        return Err(classify(&resp, &what).redact(secret));
    }
    let (provider_id, expiration) = parse(&resp, &what).map_err(|e| e.redact(secret))?;
    tracing::debug!(calendar, watch = %request.id, subscription = %provider_id, %expiration, "graph subscription created");
    Ok(Watch { id: request.id.clone(), provider_id, expiration })
}

/// `PATCH /subscriptions/{id}` to about `request.ttl` from now.
pub async fn renew(p: &OutlookProvider, watch: &Watch, request: &WatchRequest) -> Result<Watch, ProviderError> {
    let secret = request.secret.expose_secret();
    let body = json!({ "expirationDateTime": expiration(Utc::now(), request.ttl)? });
    let url = p.graph.url(&["subscriptions", &watch.provider_id], &[]);
    let what = format!("renewing subscription {} of watch {}", watch.provider_id, watch.id);
    let resp = p.graph.send(Method::PATCH, &url, &[], Some(&body)).await.map_err(|e| e.redact(secret))?;
    if resp.status.as_u16() != 200 {
        return Err(renew_error(&resp, &what).redact(secret));
    }
    let (provider_id, expiration) = parse(&resp, &what).map_err(|e| e.redact(secret))?;
    tracing::debug!(watch = %watch.id, subscription = %provider_id, %expiration, "graph subscription renewed");
    Ok(Watch { id: watch.id.clone(), provider_id, expiration })
}

/// `DELETE /subscriptions/{id}`. Gone already (expired, removed by Graph) is success.
pub async fn stop(p: &OutlookProvider, calendar: &str, watch: &Watch) -> Result<(), ProviderError> {
    let url = p.graph.url(&["subscriptions", &watch.provider_id], &[]);
    let resp = p.graph.send(Method::DELETE, &url, &[], None).await?;
    match resp.status.as_u16() {
        200 | 202 | 204 => {
            tracing::debug!(calendar, watch = %watch.id, subscription = %watch.provider_id, "graph subscription deleted");
            Ok(())
        }
        _ => match classify(
            &resp,
            &format!("deleting subscription {} of watch {} on {calendar}", watch.provider_id, watch.id),
        ) {
            ProviderError::NotFound { .. } => Ok(()),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;
    use secrecy::SecretString;
    use std::time::Duration;

    fn request(secret: &str) -> WatchRequest {
        WatchRequest {
            id: "0b6f3c2e-2d7a-4c1e-9d55-6a1f0e4b9c11".into(),
            address: "https://calsync.example.com/api/calendar/webhooks/outlook".into(),
            lifecycle_address: Some("https://calsync.example.com/api/calendar/webhooks/outlook/lifecycle".into()),
            secret: SecretString::from(secret.to_string()),
            ttl: Duration::from_secs(3600),
        }
    }

    fn resp(code: u16, body: &str) -> GraphResponse {
        GraphResponse { status: StatusCode::from_u16(code).unwrap(), headers: HeaderMap::new(), body: body.into() }
    }

    #[test]
    fn primary_watches_me_events_and_others_their_calendar() {
        assert_eq!(resource("primary"), "me/events");
        assert_eq!(resource("AAMkCAL1="), "me/calendars/AAMkCAL1=/events");
    }

    #[test]
    fn create_body_has_the_documented_fields() {
        let now = DateTime::parse_from_rfc3339("2031-06-03T10:00:00Z").unwrap().with_timezone(&Utc);
        let b = create_body("primary", &request("s3cr3t"), now).unwrap();
        assert_eq!(b["changeType"], "created,updated,deleted");
        assert_eq!(b["notificationUrl"], "https://calsync.example.com/api/calendar/webhooks/outlook");
        assert_eq!(
            b["lifecycleNotificationUrl"],
            "https://calsync.example.com/api/calendar/webhooks/outlook/lifecycle"
        );
        assert_eq!(b["resource"], "me/events");
        assert_eq!(b["expirationDateTime"], "2031-06-03T11:00:00Z");
        assert_eq!(b["clientState"], "0b6f3c2e-2d7a-4c1e-9d55-6a1f0e4b9c11.s3cr3t");
        assert_eq!(b.as_object().unwrap().len(), 6);
        let mut r = request("s3cr3t");
        r.lifecycle_address = None;
        assert!(create_body("cal", &r, now).unwrap().get("lifecycleNotificationUrl").is_none());
    }

    #[test]
    fn an_oversized_client_state_is_refused_without_quoting_it() {
        let secret = "x".repeat(100);
        match create_body("primary", &request(&secret), Utc::now()) {
            Err(ProviderError::Invalid { message }) => {
                assert!(message.contains("137") && !message.contains(&secret), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let huge = WatchRequest { ttl: Duration::from_secs(u64::MAX), ..request("s") };
        assert!(matches!(create_body("primary", &huge, Utc::now()), Err(ProviderError::Invalid { .. })));
    }

    #[test]
    fn graph_answers_are_read_with_seven_digit_fractions() {
        let r = resp(
            201,
            r#"{"id":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","resource":"me/events","clientState":"a.s3cr3t",
                "expirationDateTime":"2031-06-03T11:00:00.1234567Z"}"#,
        );
        let (id, exp) = parse(&r, "testing").unwrap();
        assert_eq!(id, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07");
        assert_eq!(exp.to_rfc3339_opts(SecondsFormat::Micros, true), "2031-06-03T11:00:00.123456Z");
        assert!(matches!(parse(&resp(201, r#"{"id":"x"}"#), "t"), Err(ProviderError::Invalid { .. })));
        assert!(matches!(
            parse(&resp(201, r#"{"id":"x","expirationDateTime":"tomorrow"}"#), "t"),
            Err(ProviderError::Invalid { .. })
        ));
    }

    #[test]
    fn renewal_refusals_ask_for_a_new_subscription() {
        let err = |c: &str| format!(r#"{{"error":{{"code":"{c}","message":"m"}}}}"#);
        assert!(matches!(renew_error(&resp(404, &err("ResourceNotFound")), "t"), ProviderError::NotFound { .. }));
        assert!(matches!(renew_error(&resp(400, &err("ErrorInvalidParameter")), "t"), ProviderError::NotFound { .. }));
        assert!(matches!(renew_error(&resp(503, ""), "t"), ProviderError::Transient { .. }));
        assert!(matches!(renew_error(&resp(403, &err("ErrorAccessDenied")), "t"), ProviderError::Revoked { .. }));
    }

    #[test]
    fn errors_never_quote_the_secret() {
        let r = resp(400, r#"{"error":{"code":"InvalidRequest","message":"bad clientState a.s3cr3t"}}"#);
        let e = classify(&r, "t").redact("s3cr3t");
        assert!(!e.to_string().contains("s3cr3t") && e.to_string().contains("[redacted]"), "{e}");
        assert!(!format!("{:?}", request("s3cr3t")).contains("s3cr3t"));
    }
}
