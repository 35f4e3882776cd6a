//! `calsync migrate`: copy a standalone SQLite database into PostgreSQL, rows as they are:
//! objects with their uid, resourceVersion, generation, status and history; labels; Secrets
//! still sealed (same key ids, same namespace/name binding, so the same ENCRYPTION_KEY opens
//! them); Events; the app-webhook outbox, dead letters and disabled endpoints. One PostgreSQL
//! transaction, so a failure leaves nothing half-copied; idempotent, because a row already in
//! PostgreSQL is left alone (counted as present), so a second run copies nothing and a database
//! that standalone already changed on PostgreSQL is never overwritten with older SQLite state.
//!
//! Owns: the copy. Must not touch: sealing (rows are never opened) or the SQLite file beyond
//! opening it (which brings its schema up to date, as any calsync start does).

use std::path::Path;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row as _};

use super::{connect, db_err, schema};
use crate::engine::StoreError;
use crate::standalone::db::{self, Location};

/// Rows copied and rows already in PostgreSQL, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// (table, copied, already present)
    pub tables: Vec<(&'static str, u64, u64)>,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (table, copied, present) in &self.tables {
            writeln!(f, "{table}: {copied} copied, {present} already present")?;
        }
        Ok(())
    }
}

/// One SQLite row as values to bind, in the PostgreSQL column order.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// (table, SELECT on SQLite, INSERT on PostgreSQL with `ON CONFLICT DO NOTHING`, column types).
/// `b` = bool stored as integer, `t` text, `i` integer, `x` bytes (any SQLite type read raw).
const TABLES: &[(&str, &str, &str, &str)] = &[
    (
        "objects",
        "SELECT kind, namespace, name, uid, resource_version, generation, deleting, event_id, body FROM objects",
        "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation, deleting, event_id, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        "ttttiibtt",
    ),
    (
        "labels",
        "SELECT kind, namespace, name, key, value FROM labels",
        "INSERT INTO labels (kind, namespace, name, key, value) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        "ttttt",
    ),
    (
        "secrets",
        "SELECT namespace, name, key_id, sealed, owner_kind, owner_name, updated_at, version FROM secrets",
        "INSERT INTO secrets (namespace, name, key_id, sealed, owner_kind, owner_name, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8) ON CONFLICT DO NOTHING",
        "tttxttti",
    ),
    (
        "events",
        "SELECT id, time, kind, namespace, name, type, reason, action, note FROM events",
        "INSERT INTO events (id, time, kind, namespace, name, type, reason, action, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        "itttttttt",
    ),
    (
        "webhook_outbox",
        "SELECT seq, msg_id, body, created_ms, attempts, next_ms, last_error FROM webhook_outbox",
        "INSERT INTO webhook_outbox (seq, msg_id, body, created_ms, attempts, next_ms, last_error)
         VALUES ($1, $2, $3, $4, $5::int, $6, $7) ON CONFLICT DO NOTHING",
        "ittiiit",
    ),
    (
        "webhook_dead",
        "SELECT seq, msg_id, body, created_ms, attempts, dead_ms, reason FROM webhook_dead",
        "INSERT INTO webhook_dead (seq, msg_id, body, created_ms, attempts, dead_ms, reason)
         VALUES ($1, $2, $3, $4, $5::int, $6, $7) ON CONFLICT DO NOTHING",
        "ittiiit",
    ),
    (
        "webhook_endpoints",
        "SELECT endpoint, disabled_ms, reason FROM webhook_endpoints",
        "INSERT INTO webhook_endpoints (endpoint, disabled_ms, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        "tit",
    ),
];

/// Every table's rows (in `TABLES` order), and the SQLite resourceVersion counter.
type Dump = (Vec<Vec<Vec<Value>>>, i64);

fn read_sqlite(path: &Path) -> Result<Dump, String> {
    let conn = db::open(&Location::File(path.to_path_buf())).map_err(|e| e.to_string())?;
    let mut all = Vec::with_capacity(TABLES.len());
    for (_, select, _, types) in TABLES {
        let mut stmt = conn.prepare(select).map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            let mut row = Vec::with_capacity(types.len());
            for (i, t) in types.chars().enumerate() {
                row.push(match t {
                    'b' => Value::Bool(r.get::<_, i64>(i).map_err(|e| e.to_string())? != 0),
                    'i' => Value::Int(r.get(i).map_err(|e| e.to_string())?),
                    'x' => Value::Bytes(match r.get_ref(i).map_err(|e| e.to_string())? {
                        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
                        _ => Vec::new(),
                    }),
                    _ => Value::Text(r.get(i).map_err(|e| e.to_string())?),
                });
            }
            out.push(row);
        }
        all.push(out);
    }
    let rv: i64 = conn
        .query_row("SELECT value FROM counters WHERE name = 'resource_version'", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    Ok((all, rv))
}

/// Copy the SQLite database at `sqlite_url` into the PostgreSQL database at `pg_url` (migrating
/// its schema first).
pub async fn import_sqlite(sqlite_url: &str, pg_url: &str) -> Result<ImportReport, StoreError> {
    let location = Location::parse(sqlite_url).map_err(StoreError::Invalid)?;
    let Some(path) = location.path().map(Path::to_path_buf).filter(|p| p.is_file()) else {
        return Err(StoreError::Invalid(format!("{location} is not a SQLite database file: nothing to migrate")));
    };
    let shown = location.to_string();
    let (tables, rv) = tokio::task::spawn_blocking(move || read_sqlite(&path))
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading {shown}: {e}")))?
        .map_err(|e| StoreError::Unavailable(format!("reading {location}: {e}")))?;
    let (options, target) = connect::parse(pg_url)?;
    let mut conn = connect::connect(&options, &target).await?;
    schema::migrate(&mut conn).await?;
    let mut tx = conn.begin().await.map_err(db_err)?;
    let mut report = ImportReport::default();
    for ((table, _, insert, _), rows) in TABLES.iter().zip(tables) {
        let (mut copied, mut present) = (0, 0);
        for row in rows {
            let mut q = sqlx::query(insert);
            for v in row {
                q = match v {
                    Value::Text(t) => q.bind(t),
                    Value::Int(i) => q.bind(i),
                    Value::Bool(b) => q.bind(b),
                    Value::Bytes(x) => q.bind(x),
                };
            }
            if q.execute(&mut *tx).await.map_err(db_err)?.rows_affected() > 0 {
                copied += 1;
            } else {
                present += 1;
            }
        }
        report.tables.push((table, copied, present));
    }
    bump_sequences(&mut tx, rv).await?;
    tx.commit().await.map_err(db_err)?;
    // Planner statistics for the copied rows now, not at autovacuum's next round: until then
    // the tables look empty and label-selected lists scan the whole namespace.
    sqlx::raw_sql(super::ANALYZE).execute(&mut conn).await.map_err(db_err)?;
    Ok(report)
}

/// Keep every sequence ahead of the copied rows, so new writes never reuse a resourceVersion,
/// an Event id or an outbox sequence number.
async fn bump_sequences(tx: &mut PgConnection, rv: i64) -> Result<(), StoreError> {
    let (current,): (i64,) =
        sqlx::query_as("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM calsync_resource_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
    let (max_row,): (Option<i64>,) = sqlx::query_as(
        "SELECT GREATEST((SELECT MAX(resource_version) FROM objects), (SELECT MAX(version) FROM secrets))",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    let next = current.max(rv).max(max_row.unwrap_or(0));
    if next > 0 {
        sqlx::query("SELECT setval('calsync_resource_version', $1)")
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    for (table, column) in [("events", "id"), ("webhook_outbox", "seq")] {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST((SELECT MAX({column}) FROM {table}), 1))"
        );
        let row = sqlx::query(&sql).fetch_one(&mut *tx).await.map_err(db_err)?;
        let _: i64 = row.try_get(0).map_err(db_err)?;
    }
    Ok(())
}
