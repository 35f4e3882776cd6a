//! Unit tests of the in-memory calendar service's push watches.

use std::time::Duration;

use super::*;

fn request(id: &str) -> WatchRequest {
    WatchRequest {
        id: id.into(),
        address: "http://calsync.test/api/calendar/webhooks/google".into(),
        lifecycle_address: None,
        secret: SecretString::from("s3cret-token"),
        ttl: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn push_is_off_until_enabled() {
    let cal = MemoryCalendar::new();
    let p = MemoryProvider { service: cal.clone() };
    assert_eq!(p.push_support(), PushSupport::None);
    assert!(matches!(p.watch("calendar", &request("w1")).await, Err(ProviderError::Invalid { .. })));
    assert!(cal.watches().is_empty());
}

#[tokio::test]
async fn watches_are_held_until_stopped() {
    let cal = MemoryCalendar::new();
    cal.enable_push();
    let p = MemoryProvider { service: cal.clone() };
    assert_eq!(p.push_support(), PushSupport::Recreate);
    let granted = p.watch("calendar", &request("w1")).await.unwrap();
    assert_eq!(granted.id, "w1");
    assert_eq!(granted.provider_id, "mem-calendar");
    let held = cal.watches();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].secret.expose_secret(), "s3cret-token");
    assert_eq!(held[0].expiration, granted.expiration);
    assert!(granted.expiration > Utc::now() + chrono::Duration::minutes(59));
    assert!(!format!("{held:?}").contains("s3cret"), "Debug shows the secret: {held:?}");

    p.stop_watch("calendar", &Watch { id: "unknown".into(), ..granted.clone() }).await.unwrap();
    assert_eq!(cal.watches().len(), 1, "stopping an unknown watch succeeds and stops nothing");
    p.stop_watch("calendar", &granted).await.unwrap();
    assert!(cal.watches().is_empty());
    assert_eq!(cal.count(Op::Watch), 1);
    assert_eq!(cal.count(Op::StopWatch), 2);
}
