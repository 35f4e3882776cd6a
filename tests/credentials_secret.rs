//! Credentials Secrets through `KubeObjects`: both forms are read, calsync's form is written
//! owner-referenced to the connection (so it goes when the connection goes), and no error
//! message carries a secret.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use calsync::controller::KubeObjects;
use calsync::credentials::Credentials;
use calsync::engine::{ObjectKey, Objects};
use calsync::resources::{CalendarConnection, SecretRef};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use secrecy::SecretString;
use serde_json::json;
use support::*;

#[tokio::test]
async fn both_forms_read_and_calsync_form_written_with_owner() {
    let server = FakeApiServer::new();
    let objects = KubeObjects::new(server.client(), None);
    create::<Secret>(&server, secret("plain")).await;
    let plain = SecretRef { name: "plain".into(), key: None };
    let c = objects.read_credentials(NS, &plain).await.unwrap().unwrap();
    assert!(matches!(&c, Credentials::Basic { username, .. } if username == "user"));
    assert!(objects.read_credentials(NS, &SecretRef { name: "absent".into(), key: None }).await.unwrap().is_none());

    let conn: CalendarConnection = create(&server, connection("cal", "written")).await;
    let written = SecretRef { name: "written".into(), key: None };
    let creds = Credentials::OAuth {
        refresh_token: SecretString::from("r-token-value"),
        access_token: None,
        expires_at: None,
        refresh_lease: None,
    };
    objects.write_credentials(NS, &written, &creds, &ObjectKey::connection(NS, "cal")).await.unwrap();
    let stored = server.get(&secret_path(NS, "written")).unwrap();
    assert!(stored["data"]["credentials"].is_string(), "calsync's form under `credentials`: {stored}");
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], json!(conn.metadata.uid.unwrap()));
    assert_eq!(stored["metadata"]["ownerReferences"][0]["kind"], "CalendarConnection");
    assert_eq!(objects.read_credentials(NS, &written).await.unwrap(), Some(creds.clone()));
    // Writing again replaces (resourceVersion-guarded), never duplicates.
    objects.write_credentials(NS, &written, &creds, &ObjectKey::connection(NS, "cal")).await.unwrap();

    // The connection goes → its Secret goes (owner reference).
    let api: Api<CalendarConnection> = Api::namespaced(server.client(), NS);
    api.delete("cal", &DeleteParams::default()).await.unwrap();
    assert!(server.get(&secret_path(NS, "written")).is_none());
    objects.delete_credentials(NS, &written).await.unwrap();
}

#[tokio::test]
async fn errors_never_carry_secret_values() {
    let server = FakeApiServer::new();
    let objects = KubeObjects::new(server.client(), None);
    let mut bad = secret("bad");
    // base64 of `{"type":"basic","password":"hunter2-secret"` (truncated JSON)
    bad["data"] = json!({"credentials": "eyJ0eXBlIjoiYmFzaWMiLCJwYXNzd29yZCI6Imh1bnRlcjItc2VjcmV0Ig=="});
    create::<Secret>(&server, bad).await;
    let err = objects.read_credentials(NS, &SecretRef { name: "bad".into(), key: None }).await.unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("bad"), "names the Secret: {text}");

    // serde would quote a wrongly typed value; it must not reach the message.
    let mut typed = secret("typed");
    // base64 of {"type":"basic","username":"u","password":98765}
    typed["data"] = json!({"credentials": "eyJ0eXBlIjoiYmFzaWMiLCJ1c2VybmFtZSI6InUiLCJwYXNzd29yZCI6OTg3NjV9"});
    create::<Secret>(&server, typed).await;
    let err = objects.read_credentials(NS, &SecretRef { name: "typed".into(), key: None }).await.unwrap_err();
    assert!(!err.to_string().contains("98765"), "{err}");
}

#[tokio::test]
async fn credentials_written_before_their_connection_are_adopted_when_it_is_created() {
    // The REST API's order: credentials first (the first reconcile must find them), then the
    // connection. The Secret gets its owner once the connection exists, so it still goes with it.
    let server = FakeApiServer::new();
    let objects = KubeObjects::new(server.client(), None);
    let written = SecretRef { name: "early".into(), key: None };
    let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("pw-value") };
    objects.write_credentials(NS, &written, &creds, &ObjectKey::connection(NS, "later")).await.unwrap();
    let stored = server.get(&secret_path(NS, "early")).unwrap();
    assert!(stored["metadata"]["ownerReferences"].is_null(), "no owner to point at yet: {stored}");

    // A platform team's Secret (not written by calsync) is never adopted.
    create::<Secret>(&server, secret("theirs")).await;
    let theirs: CalendarConnection = serde_json::from_value(connection("theirs-conn", "theirs")).unwrap();
    objects.apply_connection(&theirs).await.unwrap();
    assert!(server.get(&secret_path(NS, "theirs")).unwrap()["metadata"]["ownerReferences"].is_null());

    let conn: CalendarConnection = serde_json::from_value(connection("later", "early")).unwrap();
    let conn = objects.apply_connection(&conn).await.unwrap();
    let stored = server.get(&secret_path(NS, "early")).unwrap();
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], json!(conn.metadata.uid.unwrap()), "{stored}");
    assert_eq!(stored["metadata"]["ownerReferences"][0]["kind"], "CalendarConnection");
    assert_eq!(objects.read_credentials(NS, &written).await.unwrap(), Some(creds));

    let api: Api<CalendarConnection> = Api::namespaced(server.client(), NS);
    api.delete("later", &DeleteParams::default()).await.unwrap();
    assert!(server.get(&secret_path(NS, "early")).is_none(), "the adopted Secret goes with its connection");
}
