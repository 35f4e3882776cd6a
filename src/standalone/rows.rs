//! Row-level operations of the SQLite store, run inside one transaction: objects as JSON with
//! indexed columns, the label side table, the resourceVersion counter and the change log.
//!
//! Owns: how an object maps onto rows. Must not touch: Kubernetes semantics decisions (`store`
//! decides what to write), threads or the async runtime.

use std::collections::BTreeMap;

use kube::Resource;
use rusqlite::{Connection, OptionalExtension, Params, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{Kind, Labels, ObjectKey, StoreError};
use crate::resources::{CalendarConnection, TaskSync};

/// Change-log rows kept for other processes to catch up from.
const CHANGELOG_KEEP: i64 = 10_000;

/// A SQLite error as a store error (the engine retries these).
pub fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("SQLite: {e}"))
}

/// `execute` through the connection's statement cache. Why: the commit thread runs the same
/// dozen statements for every write, and preparing each one anew (parse, code generation,
/// finalize) was about a tenth of that thread's CPU under REST load (perf, README note 5).
pub fn exec<P: Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache (see `exec`).
pub fn one<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

pub fn kind_str(kind: Kind) -> &'static str {
    match kind {
        Kind::CalendarConnection => "CalendarConnection",
        Kind::TaskSync => "TaskSync",
    }
}

pub fn kind_from_str(s: &str) -> Option<Kind> {
    match s {
        "CalendarConnection" => Some(Kind::CalendarConnection),
        "TaskSync" => Some(Kind::TaskSync),
        _ => None,
    }
}

/// What the store needs to know about each kind.
pub trait Row: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    fn same_spec(&self, other: &Self) -> bool;
    fn take_spec_from(&mut self, other: &Self);
    /// The provider event id recorded in status (indexed for `find_task_sync_by_event`).
    fn event_id(&self) -> Option<String>;
}

impl Row for CalendarConnection {
    const KIND: Kind = Kind::CalendarConnection;
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec_from(&mut self, other: &Self) {
        self.spec = other.spec.clone();
    }
    fn event_id(&self) -> Option<String> {
        None
    }
}

impl Row for TaskSync {
    const KIND: Kind = Kind::TaskSync;
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec_from(&mut self, other: &Self) {
        self.spec = other.spec.clone();
    }
    fn event_id(&self) -> Option<String> {
        self.status.as_ref().and_then(|s| s.event_id.clone())
    }
}

/// The global resourceVersion counter's value (the newest version written).
pub fn current_rv(tx: &Transaction) -> Result<u64, StoreError> {
    let v: i64 =
        one(tx, "SELECT value FROM counters WHERE name = 'resource_version'", [], |r| r.get(0)).map_err(db_err)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Next value of the global resourceVersion counter.
pub fn next_rv(tx: &Transaction) -> Result<u64, StoreError> {
    // An UPDATE and a SELECT rather than `UPDATE ... RETURNING`: SQLite buffers RETURNING rows in
    // an ephemeral table, opening a b-tree and a pager per call: 2.5% of the node's CPU
    // samples under REST load, 0.7% as two statements (perf, `calsync-bench rest`). The write
    // lock is held, so nothing runs between the two.
    exec(tx, "UPDATE counters SET value = value + 1 WHERE name = 'resource_version'", []).map_err(db_err)?;
    let v: i64 =
        one(tx, "SELECT value FROM counters WHERE name = 'resource_version'", [], |r| r.get(0)).map_err(db_err)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

fn decode<K: Row>(body: &str, ns: &str, name: &str) -> Result<K, StoreError> {
    serde_json::from_str(body).map_err(|e| {
        StoreError::Invalid(format!(
            "stored {} {ns}/{name} cannot be read ({e}); delete it with `calsync delete {} {name} -n {ns}` and apply it again",
            kind_str(K::KIND),
            kind_str(K::KIND).to_lowercase()
        ))
    })
}

pub fn load<K: Row>(tx: &Transaction, ns: &str, name: &str) -> Result<Option<K>, StoreError> {
    let body: Option<String> = one(
        tx,
        "SELECT body FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        params![kind_str(K::KIND), ns, name],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_err)?;
    body.map(|b| decode(&b, ns, name)).transpose()
}

pub fn exists(tx: &Transaction, key: &ObjectKey) -> Result<bool, StoreError> {
    one(
        tx,
        "SELECT 1 FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        params![kind_str(key.kind), key.namespace, key.name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(db_err)
}

/// Record a change for other processes watching the same database.
pub fn log_change(tx: &Transaction, origin: &str, key: &ObjectKey) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO changelog (origin, kind, namespace, name) VALUES (?1, ?2, ?3, ?4)",
        params![origin, kind_str(key.kind), key.namespace, key.name],
    )
    .map_err(db_err)?;
    let seq = tx.last_insert_rowid();
    if seq % 1000 == 0 {
        exec(tx, "DELETE FROM changelog WHERE seq <= ?1", params![seq - CHANGELOG_KEEP]).map_err(db_err)?;
    }
    Ok(())
}

/// Change-log kind of Secrets (not an engine `Kind`).
pub const SECRET_KIND: &str = "Secret";

/// Record a Secret write/delete for other processes (they re-check connections using it).
pub fn log_secret_change(tx: &Transaction, origin: &str, ns: &str, name: &str) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO changelog (origin, kind, namespace, name) VALUES (?1, ?2, ?3, ?4)",
        params![origin, SECRET_KIND, ns, name],
    )
    .map_err(db_err)?;
    Ok(())
}

/// Insert or replace the object (its metadata must be complete: namespace, name, uid, rv).
/// `stored_labels` are the labels the stored rows carry (`None`: none, or no object yet), so
/// that labels left unchanged are not deleted and inserted again: a
/// status write never changes them, and rewriting them cost a DELETE and one INSERT per label
/// (three for a TaskSync the REST API declared) on every status write.
pub fn save<K: Row>(
    tx: &Transaction,
    object: &K,
    origin: &str,
    stored_labels: Option<&BTreeMap<String, String>>,
) -> Result<(), StoreError> {
    let meta = object.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let body = serde_json::to_string(object)
        .map_err(|e| StoreError::Invalid(format!("{} {ns}/{name} cannot be serialized: {e}", kind_str(K::KIND))))?;
    let rv: i64 = meta.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    exec(
        tx,
        "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation, deleting, event_id, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (kind, namespace, name) DO UPDATE SET uid = excluded.uid,
           resource_version = excluded.resource_version, generation = excluded.generation,
           deleting = excluded.deleting, event_id = excluded.event_id, body = excluded.body",
        params![
            kind_str(K::KIND),
            ns,
            name,
            meta.uid.clone().unwrap_or_default(),
            rv,
            meta.generation.unwrap_or(1),
            meta.deletion_timestamp.is_some(),
            object.event_id(),
            body
        ],
    )
    .map_err(db_err)?;
    let empty = BTreeMap::new();
    let (stored, wanted) = (stored_labels.unwrap_or(&empty), meta.labels.as_ref().unwrap_or(&empty));
    if stored != wanted {
        if !stored.is_empty() {
            exec(
                tx,
                "DELETE FROM labels WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind_str(K::KIND), ns, name],
            )
            .map_err(db_err)?;
        }
        let mut stmt = tx
            .prepare_cached("INSERT INTO labels (kind, namespace, name, key, value) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(db_err)?;
        for (k, v) in wanted {
            stmt.execute(params![kind_str(K::KIND), ns, name, k, v]).map_err(db_err)?;
        }
    }
    log_change(tx, origin, &ObjectKey { kind: K::KIND, namespace: ns, name })
}

/// Remove the object, its labels, and the credentials it owns (Kubernetes garbage collection of
/// an owned Secret).
pub fn remove(tx: &Transaction, key: &ObjectKey, origin: &str) -> Result<(), StoreError> {
    let k = kind_str(key.kind);
    exec(
        tx,
        "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        params![k, key.namespace, key.name],
    )
    .map_err(db_err)?;
    exec(
        tx,
        "DELETE FROM labels WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
        params![k, key.namespace, key.name],
    )
    .map_err(db_err)?;
    exec(
        tx,
        "DELETE FROM secrets WHERE namespace = ?1 AND owner_kind = ?2 AND owner_name = ?3",
        params![key.namespace, k, key.name],
    )
    .map_err(db_err)?;
    log_change(tx, origin, key)
}

/// One stored object as read, not yet decoded: (namespace, name, JSON body).
pub type RawRow = (String, String, String);

/// Rows of the objects of kind `K` in `namespace` (all when `None`) carrying every label of
/// `selector`, ordered by (namespace, name). Undecoded, so the caller can decode them after
/// releasing the connection (decoding 100,000 TaskSyncs takes far longer than reading them).
pub fn list_raw<K: Row>(
    tx: &Transaction,
    namespace: Option<&str>,
    selector: &Labels,
) -> Result<Vec<RawRow>, StoreError> {
    let mut args: Vec<String> = vec![kind_str(K::KIND).to_string()];
    args.extend(namespace.map(str::to_string));
    for (k, v) in selector {
        args.push(k.clone());
        args.push(v.clone());
    }
    let sql = list_sql(namespace.is_some(), selector.len());
    let mut stmt = tx.prepare(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

/// Up to `limit` rows of kind `K` after (namespace, name), in that order (the primary key's).
pub fn page_raw<K: Row>(
    tx: &Transaction,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<Vec<RawRow>, StoreError> {
    let (ns, name) = after.unwrap_or(("", ""));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = tx.prepare_cached(PAGE).map_err(db_err)?;
    let rows = stmt
        .query_map(params![kind_str(K::KIND), ns, name, limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

const PAGE: &str = "SELECT namespace, name, body FROM objects WHERE kind = ?1 AND (namespace, name) > (?2, ?3) \
                    ORDER BY namespace, name LIMIT ?4";

/// `list_raw`'s query: `?1` the kind, then the namespace if `namespace`, then each label's key
/// and value.
fn list_sql(namespace: bool, labels: usize) -> String {
    let mut sql = String::from("SELECT o.namespace, o.name, o.body FROM objects o WHERE o.kind = ?1");
    let mut n = 1;
    if namespace {
        n += 1;
        sql.push_str(&format!(" AND o.namespace = ?{n}"));
    }
    for i in 0..labels {
        let (key, value) = (n + 1, n + 2);
        n += 2;
        // The first label drives the query through `labels_by_value` (the planner then reads
        // only the matching objects); the others are checked on those.
        sql.push_str(&if i == 0 {
            format!(
                " AND (o.namespace, o.name) IN (SELECT l.namespace, l.name FROM labels l \
                 WHERE l.kind = ?1 AND l.key = ?{key} AND l.value = ?{value})"
            )
        } else {
            format!(
                " AND EXISTS (SELECT 1 FROM labels l WHERE l.kind = o.kind AND l.namespace = o.namespace \
                 AND l.name = o.name AND l.key = ?{key} AND l.value = ?{value})"
            )
        });
    }
    sql.push_str(" ORDER BY o.namespace, o.name");
    sql
}

/// Decode listed rows, skipping unreadable ones with a warning: one unreadable object must not
/// hide all others (kube's DeserializeGuard); `get` of it by name reports the error.
pub fn decode_list<K: Row>(rows: Vec<RawRow>) -> Vec<K> {
    let mut out = Vec::with_capacity(rows.len());
    for (ns, name, body) in rows {
        match decode(&body, &ns, &name) {
            Ok(o) => out.push(o),
            Err(e) => {
                tracing::warn!(kind = kind_str(K::KIND), namespace = %ns, name = %name, error = %e, "skipping an unreadable stored object")
            }
        }
    }
    out
}

/// The TaskSync in `namespace` whose status records `event_id` (first by name).
pub fn find_by_event(tx: &Transaction, namespace: &str, event_id: &str) -> Result<Option<TaskSync>, StoreError> {
    let row: Option<(String, String)> =
        one(tx, FIND_BY_EVENT, params![namespace, event_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)?;
    row.map(|(name, body)| decode(&body, namespace, &name)).transpose()
}

/// `+kind`: without it SQLite's planner (no ANALYZE statistics) took the primary key for (kind,
/// namespace) and scanned every TaskSync of the namespace: 10.8 ms at 100,000 instead of
/// 0.15 ms through `objects_event_id`, and live sync asks once per changed event.
const FIND_BY_EVENT: &str = "SELECT name, body FROM objects WHERE +kind = 'TaskSync' AND namespace = ?1 AND event_id = ?2 ORDER BY name LIMIT 1";

/// A Secret's sealed row.
pub fn load_secret(tx: &Transaction, ns: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(load_secret_versioned(tx, ns, name)?.map(|(sealed, _)| sealed))
}

/// A Secret's sealed row and its version.
pub fn load_secret_versioned(tx: &Transaction, ns: &str, name: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    // Any column type is read as bytes: a damaged row must fail decryption (that Secret only),
    // not the whole store.
    // Text is taken as raw bytes too (no UTF-8 check), so a damaged value still reaches the
    // decryption that reports it.
    one(tx, "SELECT sealed, version FROM secrets WHERE namespace = ?1 AND name = ?2", params![ns, name], |r| {
        let sealed = match r.get_ref(0)? {
            rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b.to_vec(),
            _ => Vec::new(),
        };
        Ok((sealed, r.get(1)?))
    })
    .optional()
    .map_err(db_err)
}

/// Store a sealed Secret row; returns whether it was new and its new version.
pub fn save_secret(
    tx: &Transaction,
    ns: &str,
    name: &str,
    key_id: &str,
    sealed: &[u8],
    owner: Option<&ObjectKey>,
) -> Result<(bool, i64), StoreError> {
    let existed = load_secret(tx, ns, name)?.is_some();
    let version = i64::try_from(next_rv(tx)?).unwrap_or(i64::MAX);
    exec(
        tx,
        "INSERT INTO secrets (namespace, name, key_id, sealed, owner_kind, owner_name, updated_at, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (namespace, name) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed,
           owner_kind = COALESCE(excluded.owner_kind, secrets.owner_kind),
           owner_name = COALESCE(excluded.owner_name, secrets.owner_name), updated_at = excluded.updated_at,
           version = excluded.version",
        params![
            ns,
            name,
            key_id,
            sealed,
            owner.map(|o| kind_str(o.kind)),
            owner.map(|o| o.name.clone()),
            chrono::Utc::now().to_rfc3339(),
            version
        ],
    )
    .map_err(db_err)?;
    Ok((!existed, version))
}

pub fn delete_secret(tx: &Transaction, ns: &str, name: &str) -> Result<bool, StoreError> {
    let n = exec(tx, "DELETE FROM secrets WHERE namespace = ?1 AND name = ?2", params![ns, name]).map_err(db_err)?;
    Ok(n > 0)
}

/// (namespace, name) of every Secret, ordered.
pub fn all_secrets(tx: &Transaction) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = tx.prepare("SELECT namespace, name FROM secrets ORDER BY namespace, name").map_err(db_err)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

/// The distinct ids of the keys that sealed the stored Secrets.
pub fn secret_key_ids(tx: &Transaction) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare("SELECT DISTINCT key_id FROM secrets ORDER BY key_id").map_err(db_err)?;
    let rows = stmt.query_map([], |r| r.get(0)).map_err(db_err)?;
    rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
}

/// Names of the Secrets in `namespace`.
pub fn secret_names(tx: &Transaction, ns: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare("SELECT name FROM secrets WHERE namespace = ?1 ORDER BY name").map_err(db_err)?;
    let rows = stmt.query_map(params![ns], |r| r.get(0)).map_err(db_err)?;
    rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
}

/// Append an Event and keep only the newest `keep`.
pub fn insert_event(tx: &Transaction, key: &ObjectKey, fields: [&str; 4], keep: i64) -> Result<(), StoreError> {
    let [type_, reason, action, note] = fields;
    exec(tx,
        "INSERT INTO events (time, kind, namespace, name, type, reason, action, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![chrono::Utc::now().to_rfc3339(), kind_str(key.kind), key.namespace, key.name, type_, reason, action, note],
    )
    .map_err(db_err)?;
    let id = tx.last_insert_rowid();
    exec(tx, "DELETE FROM events WHERE id <= ?1", params![id - keep]).map_err(db_err)?;
    Ok(())
}

/// One stored Event, newest last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub time: String,
    pub key: ObjectKey,
    pub type_: String,
    pub reason: String,
    pub action: String,
    pub note: String,
}

/// The newest `limit` Events (about `key` when given), oldest first.
pub fn events(tx: &Transaction, key: Option<&ObjectKey>, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = tx
        .prepare(
            "SELECT time, kind, namespace, name, type, reason, action, note FROM events
             WHERE (?1 IS NULL OR (kind = ?1 AND namespace = ?2 AND name = ?3)) ORDER BY id DESC LIMIT ?4",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(
            params![
                key.map(|k| kind_str(k.kind)),
                key.map(|k| k.namespace.clone()),
                key.map(|k| k.name.clone()),
                limit
            ],
            |r| {
                let kind: String = r.get(1)?;
                Ok((
                    kind,
                    StoredEvent {
                        time: r.get(0)?,
                        key: ObjectKey { kind: Kind::TaskSync, namespace: r.get(2)?, name: r.get(3)? },
                        type_: r.get(4)?,
                        reason: r.get(5)?,
                        action: r.get(6)?,
                        note: r.get(7)?,
                    },
                ))
            },
        )
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, mut ev) = row.map_err(db_err)?;
        ev.key.kind = kind_from_str(&kind).unwrap_or(Kind::TaskSync);
        out.push(ev);
    }
    out.reverse();
    Ok(out)
}

/// Serialize a Secret's data for sealing: key → base64 of the bytes.
pub fn encode_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    use base64::Engine as _;
    let map: BTreeMap<&String, String> =
        data.iter().map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v))).collect();
    serde_json::to_vec(&map).unwrap_or_default()
}

pub fn decode_secret_data(bytes: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    use base64::Engine as _;
    let map: BTreeMap<String, String> = serde_json::from_slice(bytes).ok()?;
    map.into_iter().map(|(k, v)| base64::engine::general_purpose::STANDARD.decode(v).ok().map(|b| (k, b))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::db::{Location, open};

    fn plan(sql: &str, args: usize) -> String {
        let conn = open(&Location::Memory).unwrap();
        let params: Vec<String> = (0..args).map(|i| format!("v{i}")).collect();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn the_event_lookup_uses_its_index_not_a_scan_of_the_namespace() {
        let p = plan(FIND_BY_EVENT, 2);
        assert!(p.contains("USING INDEX objects_event_id"), "{p}");
    }

    #[test]
    fn a_selector_listing_starts_from_the_label_index() {
        for (ns, labels) in [(true, 1), (false, 1), (true, 3)] {
            let args = 1 + usize::from(ns) + 2 * labels;
            let p = plan(&list_sql(ns, labels), args);
            assert!(p.contains("USING COVERING INDEX labels_by_value"), "{p}");
            assert!(p.contains("(kind=? AND namespace=? AND name=?)"), "objects read by key: {p}");
        }
        let page = plan(PAGE, 4);
        assert!(page.contains("USING INDEX sqlite_autoindex_objects_1 (kind=? AND (namespace,name)>(?,?))"), "{page}");
        assert!(!page.contains("TEMP B-TREE"), "the key order needs no sort: {page}");
        let all = plan(&list_sql(true, 0), 2);
        assert!(!all.contains("labels"), "{all}");
    }
}
