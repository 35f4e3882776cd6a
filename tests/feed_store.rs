//! ICS feed records through the `Objects` port, the same cases on every store: the in-memory
//! reference, SQLite (a sealed secrets row) and `KubeObjects` on the strict fake API server (a
//! labelled Secret). What is stored never contains the token.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::sync::Arc;

use calsync::credentials::envelope::{Key, Keyring};
use calsync::credentials::feed::{FeedKeys, FeedRecord, feed_id};
use calsync::engine::Objects;
use calsync::engine::memory::MemoryObjects;
use calsync::standalone::SqliteObjects;
use secrecy::ExposeSecret;

const NS: &str = "default";

fn keys() -> FeedKeys {
    FeedKeys::from_push(&Keyring::new(Key::generate().0).push_keys())
}

async fn feed_records(store: Arc<dyn Objects>, stored: impl Fn(&str) -> Option<Vec<u8>>) {
    let keys = keys();
    let id = feed_id("alice");
    assert_eq!(store.get_feed(NS, &id).await.unwrap(), None);
    assert!(!store.delete_feed(NS, &id).await.unwrap(), "nothing to delete");

    let (record, token) = keys.issue("alice", chrono::Utc::now()).unwrap();
    assert_eq!(store.create_feed(NS, &record).await.unwrap(), record);
    let got = store.get_feed(NS, &id).await.unwrap().unwrap();
    assert_eq!(got, record);
    assert!(got.admits(token.expose_secret()));
    assert_eq!(keys.token_of(&got).unwrap().expose_secret(), token.expose_secret());

    // A second create (another request, another replica) gets the first record, not its own.
    let (other, _) = keys.issue("alice", chrono::Utc::now()).unwrap();
    assert_eq!(store.create_feed(NS, &other).await.unwrap(), record);
    assert_eq!(store.get_feed(NS, &id).await.unwrap(), Some(record.clone()));

    let raw = stored(&FeedRecord::secret_name(&id)).expect("the record is stored under its name");
    let secret_part = token.expose_secret().split_once('.').unwrap().1;
    assert!(!String::from_utf8_lossy(&raw).contains(secret_part), "the token's secret is never stored");

    // Another user's feed is another record.
    let (bob, _) = keys.issue("bob", chrono::Utc::now()).unwrap();
    store.create_feed(NS, &bob).await.unwrap();

    // Revoked: gone at once, and a new feed has a new token.
    assert!(store.delete_feed(NS, &id).await.unwrap());
    assert_eq!(store.get_feed(NS, &id).await.unwrap(), None);
    let (again, new_token) = keys.issue("alice", chrono::Utc::now()).unwrap();
    store.create_feed(NS, &again).await.unwrap();
    let now = store.get_feed(NS, &id).await.unwrap().unwrap();
    assert!(!now.admits(token.expose_secret()), "the revoked URL stays dead");
    assert!(now.admits(new_token.expose_secret()));
    assert_eq!(store.get_feed(NS, &bob.id).await.unwrap(), Some(bob));
}

#[tokio::test]
async fn memory() {
    let m = MemoryObjects::new();
    let view = m.clone();
    feed_records(Arc::new(m), move |name| view.secret_data(NS, name).map(|d| d["feed"].clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = SqliteObjects::open(&url, Keyring::new(Key::generate().0)).await.unwrap();
    let path = dir.path().join("t.db");
    feed_records(Arc::new(store), move |name| {
        // The row as it is on disk (sealed): read with a plain SQLite connection.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT sealed FROM secrets WHERE name = ?1", [name], |r| r.get::<_, Vec<u8>>(0)).ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes() {
    let server = fake_apiserver::FakeApiServer::new();
    let store = calsync::controller::KubeObjects::new(server.client(), None);
    let view = server.clone();
    feed_records(Arc::new(store), move |name| {
        let s = view.get(&fake_apiserver::secret_path(NS, name))?;
        assert_eq!(s["metadata"]["labels"]["calendar.getitdone.app/ics-feed"], "true", "{s}");
        assert_eq!(s["type"], "Opaque");
        Some(s.to_string().into_bytes())
    })
    .await;
}
