//! Standalone mode: the engine on an embedded SQLite store or on PostgreSQL (`DATABASE_URL`
//! selects, `backend::Store`), without a Kubernetes cluster.
//!
//! Owns: the SQLite `Objects` store (`store`, `rows`, `db`, `watch`; credentials are sealed with
//! `credentials::envelope`), the PostgreSQL one (`pg`), the object semantics both share
//! (`semantics`), the choice between them (`backend`), generated secrets (`secrets`), the work-queue driver (`queue`),
//! `run_standalone`, and the `apply`/`get`/`delete` commands (`cli`, `validate`, `table`). Must
//! not touch: reconcile decisions (engine), provider calls (providers) or HTTP (api, mounted
//! through `run_standalone`).

pub mod backend;
pub mod cli;
pub mod db;
pub mod pg;
pub mod queue;
pub mod readonly;
mod rows;
pub mod secrets;
mod semantics;
pub mod store;
pub mod table;
pub mod validate;
mod watch;

pub use backend::Store;
pub use rows::StoredEvent;
pub use store::{SecretName, SqliteObjects};

use std::future::Future;
use std::sync::Arc;

use crate::engine::{Engine, EngineConfig, StoreError};
use crate::providers::Connector;
use crate::providers::gate::GatedConnector;

/// Configuration of `calsync standalone`.
#[derive(Clone, Debug)]
pub struct StandaloneConfig {
    /// `DATABASE_URL`: `sqlite://PATH`, `sqlite::memory:`, or `postgres://`/`postgresql://`.
    pub database_url: String,
    pub engine: EngineConfig,
    pub queue: queue::QueueConfig,
    /// Records app webhook messages with every status write (installed before the engine runs,
    /// so no change goes unrecorded); `None` when webhooks are off.
    pub status_tap: Option<store::TapHandle>,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        StandaloneConfig {
            database_url: db::DEFAULT_DATABASE_URL.into(),
            engine: EngineConfig::default(),
            queue: queue::QueueConfig::default(),
            status_tap: None,
        }
    }
}

/// What a component mounted into standalone mode (the REST API) gets.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub engine: Engine,
    /// The connector the engine uses (the REST API checks and reads calendars with it too).
    pub connector: Arc<dyn Connector>,
    pub secrets: secrets::Secrets,
    /// Becomes `true` when standalone shuts down: serve no new requests and return (e.g. axum's
    /// `with_graceful_shutdown(async move { let _ = shutdown.wait_for(|s| *s).await; })`).
    /// Components get `COMPONENT_GRACE` to finish before they are aborted.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// How long a mounted component may take to finish after shutdown was signalled.
pub const COMPONENT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("store", &self.store).field("secrets", &self.secrets).finish_non_exhaustive()
    }
}

/// Why standalone mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Component(String),
}

/// Run standalone mode: open the store (generating missing secrets beside it, printing only
/// their paths to stderr), build the engine on the connector `connector` makes for the store
/// (OAuth providers write refreshed tokens back through it), and drive it with the work queue
/// until `shutdown` completes. `mount` starts extra components on the same services (the REST
/// API); it gets a clone of `Services` and should run until its own end. Standalone stops when
/// `shutdown` completes or `mount` returns an error.
pub async fn run_standalone<C, M, Fut>(
    config: StandaloneConfig,
    connector: C,
    mount: M,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StandaloneError>
where
    C: FnOnce(Arc<dyn crate::engine::Objects>) -> Result<Arc<dyn Connector>, String>,
    M: FnOnce(Services) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let secrets_path = backend::secrets_path(&config.database_url).map_err(StandaloneError::Config)?;
    let secrets = secrets::load_or_generate(secrets_path.as_deref())?;
    for f in &secrets.files {
        eprintln!("{}", f.notice());
    }
    let keys = secrets::keyring(secrets.encryption_key.clone())?;
    let store = Store::open(&config.database_url, keys.clone()).await?;
    if let Some(tap) = &config.status_tap {
        store.set_status_tap(tap.0.clone())?;
    }
    // A missing or wrong key is one clear error now, not every connection failing later.
    let stored = store.stored_key_ids().await?;
    crate::credentials::keys::check_key_ids(&keys, stored.iter().map(String::as_str))
        .map_err(secrets::SecretsError::Keys)?;
    let connector = connector(Arc::new(store.clone())).map_err(StandaloneError::Config)?;
    let mut engine_config = config.engine.clone();
    // Push secrets come from the same keys that seal credentials (see credentials::push).
    engine_config.live.push_keys.get_or_insert_with(|| keys.push_keys());
    // On PostgreSQL, several standalone processes may share the database: each reconciles only
    // the objects of the shards it leases (one writer per object), and its engine writes to
    // calendars only while its leases hold. The REST API keeps the ungated connector: its
    // calendar calls belong to the request in hand (checking credentials, reading, making a
    // dedicated calendar before a connection exists), not to a shard's reconciles.
    let mut queue_config = config.queue.clone();
    let (shards, engine_connector) = match &store {
        Store::Postgres(pg) => {
            let shards = pg.shards().await?;
            let owner = shards.clone();
            queue_config.ownership = Some(queue::Ownership {
                owns: Arc::new(move |key: &crate::engine::ObjectKey| owner.owns(key)),
                gained: shards.gained(),
            });
            let gated: Arc<dyn Connector> =
                Arc::new(GatedConnector { inner: connector.clone(), gate: Arc::new(shards.clone()), counter: None });
            (Some(shards), gated)
        }
        Store::Sqlite(_) => (None, connector.clone()),
    };
    let engine = Engine::new(Arc::new(store.clone()), engine_connector, engine_config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let services = Services { store, engine: engine.clone(), connector, secrets, shutdown: stop_rx.clone() };
    let mut queue_stop = stop_rx;
    let secret_changes = services.store.subscribe_secrets();
    let mut component = tokio::spawn(mount(services));
    // Held until the end: dropping them stops renewing the leases.
    let _shards = shards;
    let queue = tokio::spawn(queue::run_with_secrets(engine, queue_config, secret_changes, async move {
        let _ = queue_stop.wait_for(|s| *s).await;
    }));
    tokio::pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        done = &mut component => match done {
            Ok(Ok(())) => {
                // The component finished on its own: keep syncing until asked to stop.
                shutdown.await;
                Ok(())
            }
            Ok(Err(e)) => Err(StandaloneError::Component(e)),
            Err(e) => Err(StandaloneError::Component(format!("a standalone component crashed: {e}"))),
        },
    };
    let _ = stop_tx.send(true);
    if !component.is_finished() && tokio::time::timeout(COMPONENT_GRACE, &mut component).await.is_err() {
        tracing::warn!("a standalone component did not stop within {COMPONENT_GRACE:?}; aborting it");
        component.abort();
    }
    let _ = queue.await;
    result
}
