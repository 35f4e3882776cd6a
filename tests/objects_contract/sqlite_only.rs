//! Properties only the standalone SQLite store has: encryption at rest and isolated tampering,
//! reopening, cross-process notifications, bounded Events, one resourceVersion sequence shared by
//! two writers on one file.
//!
//! Owns: those tests. Helpers (`keyring`, `sqlite_file`, fixtures) are the parent's.

use super::*;

#[tokio::test]
async fn credentials_are_encrypted_at_rest_and_tampering_is_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let url = format!("sqlite://{}", path.display());
    let (key, _) = Key::generate();
    let store = SqliteObjects::open(&url, Keyring::new(key.clone())).await.unwrap();
    let data = |pw: &str| {
        BTreeMap::from([("username".to_string(), b"u".to_vec()), ("password".to_string(), pw.as_bytes().to_vec())])
    };
    store.put_secret("default", "a", data("very-secret-password-a")).await.unwrap();
    store.put_secret("default", "b", data("very-secret-password-b")).await.unwrap();
    drop(store);
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!String::from_utf8_lossy(&raw).contains("very-secret-password"), "plaintext on disk");

    let store = SqliteObjects::open(&url, Keyring::new(key)).await.unwrap();
    // Copy b's ciphertext into a (the row binding detects it), then truncate it, then make it text.
    for sql in [
        "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE name = 'b') WHERE name = 'a'",
        "UPDATE secrets SET sealed = substr(sealed, 1, length(sealed) - 1) WHERE name = 'a'",
        "UPDATE secrets SET sealed = 'garbage' WHERE name = 'a'",
    ] {
        store.raw_execute(sql).await.unwrap();
        let err = store.read_credentials("default", &SecretRef { name: "a".into(), key: None }).await.unwrap_err();
        match &err {
            StoreError::Unreadable(m) => {
                assert!(m.contains("default/a"), "{m}");
                assert!(m.contains("reconnect") && m.contains("ENCRYPTION_KEYS_PREVIOUS"), "says what to do: {m}");
                assert!(m.contains("tampered") || m.contains("damaged"), "{m}");
                assert!(!m.contains("very-secret"));
            }
            other => panic!("expected Unreadable after {sql}, got {other:?}"),
        }
    }
    assert!(store.read_credentials("default", &SecretRef { name: "b".into(), key: None }).await.unwrap().is_some());

    // The wrong key: a clear error naming key ids, never the key.
    let other = SqliteObjects::open(&url, keyring()).await.unwrap();
    let err = other.read_credentials("default", &SecretRef { name: "b".into(), key: None }).await.unwrap_err();
    assert!(err.to_string().contains("key id"), "{err}");
}

#[tokio::test]
async fn data_survives_reopen_and_owned_credentials_go_with_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let keys = keyring();
    let store = SqliteObjects::open(&url, keys.clone()).await.unwrap();
    let c = store.apply_connection(&conn("c")).await.unwrap();
    let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("p") };
    let r = SecretRef { name: "c-creds".into(), key: None };
    store.write_credentials("default", &r, &creds, &ObjectKey::connection("default", "c")).await.unwrap();
    drop(store);
    let store = SqliteObjects::open(&url, keys).await.unwrap();
    let again = store.get_connection("default", "c").await.unwrap().unwrap();
    assert_eq!(again.metadata.uid, c.metadata.uid);
    assert_eq!(again.metadata.resource_version, c.metadata.resource_version);
    // The counter keeps growing after reopen.
    let next = store.apply_task_sync(&task("default", "t", &[])).await.unwrap();
    assert!(rv(&next) > rv(&c));
    assert_eq!(store.read_credentials("default", &r).await.unwrap(), Some(creds));
    store.delete(&ObjectKey::connection("default", "c")).await.unwrap();
    assert_eq!(store.read_credentials("default", &r).await.unwrap(), None);
}

#[tokio::test]
async fn another_process_writes_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let keys = keyring();
    let watcher = SqliteObjects::open(&url, keys.clone()).await.unwrap();
    let writer = SqliteObjects::open(&url, keys).await.unwrap();
    let mut rx = watcher.subscribe();
    writer.apply_task_sync(&task("default", "t", &[])).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(got, ObjectKey::task_sync("default", "t"));
}

#[tokio::test]
async fn events_are_bounded() {
    let store = SqliteObjects::open("sqlite::memory:", keyring()).await.unwrap();
    let key = ObjectKey::task_sync("default", "t");
    for i in 0..1010 {
        let ev = calsync::engine::ObjectEvent {
            type_: calsync::engine::EventType::Normal,
            reason: "EventCreated".into(),
            note: format!("n{i}"),
            action: "Create".into(),
        };
        store.publish_event(&key, &ev).await.unwrap();
    }
    let all = store.events(None, 5000).await.unwrap();
    assert_eq!(all.len(), 1000);
    assert_eq!(all.last().map(|e| e.note.as_str()), Some("n1009"));
    assert_eq!(all.last().map(|e| e.key.clone()), Some(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_file_share_one_resource_version_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let keys = keyring();
    let a = SqliteObjects::open(&url, keys.clone()).await.unwrap();
    let b = SqliteObjects::open(&url, keys).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move { store.apply_task_sync(&task("default", &format!("t{i}"), &[])).await }));
    }
    let mut versions = std::collections::BTreeSet::new();
    for h in handles {
        assert!(versions.insert(rv(&h.await.unwrap().unwrap())), "resourceVersion handed out twice");
    }
    // A stale write from the other process is a Conflict.
    let first = a.get_task_sync("default", "t0").await.unwrap().unwrap();
    let mut newer = first.clone();
    newer.spec.title = "b wins".into();
    b.apply_task_sync(&newer).await.unwrap();
    let mut stale = first;
    stale.spec.title = "a loses".into();
    assert!(matches!(a.apply_task_sync(&stale).await, Err(StoreError::Conflict(_))));
}
