//! A read-only snapshot of the standalone database for `calsync plan`: every CalendarConnection
//! and TaskSync with its status, and every Secret's data opened with the keyring. SQLite is
//! opened with `SQLITE_OPEN_READ_ONLY` (never created, never migrated); PostgreSQL is read in one
//! `READ ONLY` transaction. Nothing here can write.
//!
//! Owns: reading the rows for a dry run. Must not touch: the store proper (`store`, `pg`), which
//! opens read-write and migrates.

use std::collections::BTreeMap;

use super::db::{self, Location};
use super::rows::{self, db_err};
use super::store::secrets::open_row;
use crate::credentials::envelope::Keyring;
use crate::engine::{Labels, StoreError};
use crate::resources::{CalendarConnection, TaskSync};

/// A Secret's data, or why it cannot be opened (kept per Secret: one bad Secret must not hide
/// the plan of the other connections).
pub type SecretData = Result<BTreeMap<String, Vec<u8>>, StoreError>;

/// What the database holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub connections: Vec<CalendarConnection>,
    pub task_syncs: Vec<TaskSync>,
    /// By (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
}

type Sealed = Vec<(String, String, Vec<u8>)>;

/// Read the database `url` names.
pub async fn load(url: &str, keys: &Keyring) -> Result<Snapshot, StoreError> {
    let (connections, task_syncs, sealed) = if super::pg::is_postgres_url(url) {
        load_pg(url).await?
    } else {
        let location = Location::parse(url).map_err(StoreError::Invalid)?;
        let Some(path) = location.path().map(std::path::Path::to_path_buf) else {
            return Err(StoreError::Invalid(
                "sqlite::memory: is empty in a new process: give the database file (sqlite://PATH)".into(),
            ));
        };
        tokio::task::spawn_blocking(move || load_sqlite(&path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading the database: {e}")))??
    };
    let secrets = sealed
        .into_iter()
        .map(|(ns, name, bytes)| {
            let data = open_row(keys, &ns, &name, &bytes);
            ((ns, name), data)
        })
        .collect();
    Ok(Snapshot { connections, task_syncs, secrets })
}

type Rows = (Vec<CalendarConnection>, Vec<TaskSync>, Sealed);

fn load_sqlite(path: &std::path::Path) -> Result<Rows, StoreError> {
    if !path.exists() {
        return Err(StoreError::Invalid(format!(
            "no database at {}: give the file `calsync standalone` uses (--database-url sqlite://PATH)",
            path.display()
        )));
    }
    let mut conn = db::open_reader(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {} read-only: {e}", path.display())))?;
    let tx = conn.transaction().map_err(db_err)?;
    let none = Labels::new();
    let connections = rows::decode_list(rows::list_raw::<CalendarConnection>(&tx, None, &none)?);
    let task_syncs = rows::decode_list(rows::list_raw::<TaskSync>(&tx, None, &none)?);
    let mut sealed = Vec::new();
    for (ns, name) in rows::all_secrets(&tx)? {
        if let Some(bytes) = rows::load_secret(&tx, &ns, &name)? {
            sealed.push((ns, name, bytes));
        }
    }
    // Read-only: a rollback and a commit are the same; rollback says so.
    tx.rollback().map_err(db_err)?;
    Ok((connections, task_syncs, sealed))
}

async fn load_pg(url: &str) -> Result<Rows, StoreError> {
    use sqlx::Row as _;
    let (options, target) = super::pg::connect::parse(url)?;
    let mut conn = super::pg::connect::connect(&options, &target).await?;
    let pg_err = |e: sqlx::Error| StoreError::Unavailable(format!("PostgreSQL: {e}"));
    sqlx::query("BEGIN TRANSACTION READ ONLY").execute(&mut conn).await.map_err(pg_err)?;
    let none = Labels::new();
    let connections = rows::decode_list(super::pg::rows::list_raw::<CalendarConnection>(&mut conn, None, &none).await?);
    let task_syncs = rows::decode_list(super::pg::rows::list_raw::<TaskSync>(&mut conn, None, &none).await?);
    let sealed = sqlx::query("SELECT namespace, name, sealed FROM secrets ORDER BY namespace, name")
        .fetch_all(&mut conn)
        .await
        .map_err(pg_err)?
        .into_iter()
        .map(|r| Ok((r.try_get(0).map_err(pg_err)?, r.try_get(1).map_err(pg_err)?, r.try_get(2).map_err(pg_err)?)))
        .collect::<Result<Sealed, StoreError>>()?;
    sqlx::query("ROLLBACK").execute(&mut conn).await.map_err(pg_err)?;
    Ok((connections, task_syncs, sealed))
}
