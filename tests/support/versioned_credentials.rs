//! The versioned-credentials cases of the `Objects` contract (token write-back with optimistic
//! concurrency), run by `tests/objects_contract.rs` against memory, SQLite and `KubeObjects`.

use std::collections::BTreeMap;

use calsync::credentials::{Credentials, RefreshLease};
use calsync::engine::{ObjectKey, StoreError};
use calsync::resources::SecretRef;
use secrecy::SecretString;

use super::Harness;

pub(crate) fn oauth(refresh: &str, lease: Option<RefreshLease>) -> Credentials {
    Credentials::OAuth {
        refresh_token: SecretString::from(refresh),
        access_token: Some(SecretString::from("access-token-in-memory-only")),
        expires_at: Some(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
        refresh_lease: lease,
    }
}

pub(crate) async fn versioned_credentials_compare_and_swap(h: &dyn Harness) {
    let o = h.objects();
    let r = SecretRef { name: "cas".into(), key: None };
    o.write_credentials("default", &r, &oauth("r1", None), &ObjectKey::connection("default", "c")).await.unwrap();
    let (read, v1) = o.read_credentials_versioned("default", &r).await.unwrap().unwrap();
    assert_eq!(read, oauth("r1", None));
    let lease = RefreshLease { holder: "pod-a".into(), until: chrono::Utc::now() };
    let v2 = o.replace_credentials("default", &r, &oauth("r2", Some(lease.clone())), &v1).await.unwrap();
    assert_ne!(v1, v2);
    let (read, v) = o.read_credentials_versioned("default", &r).await.unwrap().unwrap();
    assert_eq!((read, v.clone()), (oauth("r2", Some(lease)).without_access_token(), v2.clone()));
    let stored = h.secret_data("default", "cas").await.unwrap();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["credentials"], "calsync's form stays calsync's form");
    let raw = String::from_utf8_lossy(&stored["credentials"]).into_owned();
    assert!(!raw.contains("access-token-in-memory-only"), "an access token was stored");
    // A stale version: Conflict, and nothing changes.
    assert!(matches!(
        o.replace_credentials("default", &r, &oauth("r3", None), &v1).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(o.read_credentials_versioned("default", &r).await.unwrap().unwrap().1, v2);
    // Gone: NotFound (also for a version that once matched).
    let absent = SecretRef { name: "absent".into(), key: None };
    assert_eq!(o.read_credentials_versioned("default", &absent).await.unwrap(), None);
    assert!(matches!(
        o.replace_credentials("default", &absent, &oauth("x", None), "1").await,
        Err(StoreError::NotFound(_))
    ));
    o.delete_credentials("default", &r).await.unwrap();
    assert!(matches!(o.replace_credentials("default", &r, &oauth("x", None), &v2).await, Err(StoreError::NotFound(_))));
}

pub(crate) async fn versioned_credentials_keep_plain_keys(h: &dyn Harness) {
    let o = h.objects();
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    };
    h.put_secret("default", "team", data(&[("refresh_token", "hand-written"), ("team-owner", "platform")])).await;
    let r = SecretRef { name: "team".into(), key: None };
    let (read, v1) = o.read_credentials_versioned("default", &r).await.unwrap().unwrap();
    assert!(matches!(read, Credentials::OAuth { expires_at: None, .. }));
    let lease = RefreshLease { holder: "pod-b".into(), until: chrono::Utc::now() };
    let v2 = o.replace_credentials("default", &r, &oauth("rotated", Some(lease.clone())), &v1).await.unwrap();
    let stored = h.secret_data("default", "team").await.unwrap();
    assert_eq!(stored["refresh_token"], b"rotated");
    assert_eq!(stored["team-owner"], b"platform", "other keys are left alone");
    assert!(stored.contains_key("expires_at") && stored.contains_key("refresh_lease"), "{:?}", stored.keys());
    assert!(!stored.contains_key("credentials") && !stored.contains_key("access_token"), "{:?}", stored.keys());
    let (read, v) = o.read_credentials_versioned("default", &r).await.unwrap().unwrap();
    assert_eq!((read, v), (oauth("rotated", Some(lease)).without_access_token(), v2));
    // Plain Basic keys stay Basic: an OAuth write-back into them is refused.
    h.put_secret("default", "basic", data(&[("username", "u"), ("password", "p")])).await;
    let rb = SecretRef { name: "basic".into(), key: None };
    let (_, vb) = o.read_credentials_versioned("default", &rb).await.unwrap().unwrap();
    assert!(matches!(o.replace_credentials("default", &rb, &oauth("x", None), &vb).await, Err(StoreError::Invalid(_))));
}

pub(crate) async fn concurrent_replace_exactly_one_wins(h: &dyn Harness) {
    let o = h.objects();
    let r = SecretRef { name: "race".into(), key: None };
    o.write_credentials("default", &r, &oauth("r0", None), &ObjectKey::connection("default", "c")).await.unwrap();
    for round in 0..5 {
        let (_, v) = o.read_credentials_versioned("default", &r).await.unwrap().unwrap();
        let (a, b) = (oauth(&format!("a{round}"), None), oauth(&format!("b{round}"), None));
        let (ra, rb) =
            tokio::join!(o.replace_credentials("default", &r, &a, &v), o.replace_credentials("default", &r, &b, &v));
        let winner = match (&ra, &rb) {
            (Ok(_), Err(StoreError::Conflict(_))) => a,
            (Err(StoreError::Conflict(_)), Ok(_)) => b,
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        let (now, version) = o.read_credentials_versioned("default", &r).await.unwrap().unwrap();
        assert_eq!(now, winner.without_access_token());
        assert_eq!(Some(&version), ra.as_ref().ok().or(rb.as_ref().ok()));
    }
}
