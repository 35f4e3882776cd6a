//! Row-level SQL of the PostgreSQL store, run inside one transaction: objects as JSON text with
//! indexed columns, the label side table, sealed Secret rows, bounded Events, the resourceVersion
//! sequence, per-key write locks and the change log (`calsync_changes`, read by `listen`).
//!
//! Owns: how an object maps onto PostgreSQL rows. Must not touch: Kubernetes semantics decisions
//! (`standalone::semantics`), connection settings, or secret contents (rows stay sealed here).

use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use super::db_err;
use crate::engine::{Kind, Labels, ObjectKey, StoreError};
use crate::resources::TaskSync;
use crate::standalone::rows::{self as shared, Row, StoredEvent, kind_from_str, kind_str};

/// The channel other calsync processes LISTEN on for changed keys (sent after the COMMIT by
/// `notify`; the change log is what they rely on).
pub const CHANNEL: &str = "calsync_changes";

/// Serialize writers of one key (an object or a Secret) across every process, until the
/// transaction ends: creates of the same new key and read-modify-write cycles never interleave,
/// and the resourceVersion is drawn only after the lock, so it grows in commit order per object.
pub async fn lock_key(tx: &mut PgConnection, kind: &str, namespace: &str, name: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_name(kind, namespace, name))
        .execute(tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// The lock name `lock_key` uses.
pub fn lock_name(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// `lock_key`, the next resourceVersion and the object as stored (`load`), in one round trip:
/// the function `calsync_lock_load` (schema migration 3) draws the version after it holds the
/// lock (so versions grow in lock order per object) and reads with a fresh snapshot. A write
/// makes 2 round trips (this, the save) instead of 5 (lock, version, read, save, notify).
pub async fn lock_load<K: Row>(
    tx: &mut PgConnection,
    namespace: &str,
    name: &str,
) -> Result<(u64, Option<K>), StoreError> {
    let kind = kind_str(K::KIND);
    let (v, body): (i64, Option<String>) =
        sqlx::query_as("SELECT out_rv, out_body FROM calsync_lock_load($1, $2, $3, $4)")
            .bind(lock_name(kind, namespace, name))
            .bind(kind)
            .bind(namespace)
            .bind(name)
            .fetch_one(tx)
            .await
            .map_err(db_err)?;
    let object = body.map(|b| decode(&b, namespace, name)).transpose()?;
    Ok((u64::try_from(v).unwrap_or(0), object))
}

/// `lock_load` for several objects of `namespace`, locked and read in the order given (callers
/// use one fixed order, so two transactions never wait on each other in a cycle), in one round
/// trip (`calsync_lock_load_all`, schema migration 3): each one's resourceVersion and stored
/// body, undecoded (`decode`).
pub async fn lock_load_all(
    tx: &mut PgConnection,
    namespace: &str,
    keys: &[(Kind, &str)],
) -> Result<Vec<(u64, Option<String>)>, StoreError> {
    let locks: Vec<String> = keys.iter().map(|(k, n)| lock_name(kind_str(*k), namespace, n)).collect();
    let kinds: Vec<&str> = keys.iter().map(|(k, _)| kind_str(*k)).collect();
    let namespaces: Vec<&str> = keys.iter().map(|_| namespace).collect();
    let names: Vec<&str> = keys.iter().map(|(_, n)| *n).collect();
    let rows: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT out_rv, out_body, n FROM calsync_lock_load_all($1, $2, $3, $4) WITH ORDINALITY AS t (out_rv, out_body, n)
         ORDER BY n",
    )
    .bind(locks)
    .bind(kinds)
    .bind(namespaces)
    .bind(names)
    .fetch_all(tx)
    .await
    .map_err(db_err)?;
    if rows.len() != keys.len() {
        return Err(StoreError::Unavailable(format!(
            "PostgreSQL: locking {} objects answered {} rows",
            keys.len(),
            rows.len()
        )));
    }
    Ok(rows.into_iter().map(|(rv, body, _)| (u64::try_from(rv).unwrap_or(0), body)).collect())
}

/// Next value of the global resourceVersion sequence.
pub async fn next_rv(tx: &mut PgConnection) -> Result<u64, StoreError> {
    let (v,): (i64,) =
        sqlx::query_as("SELECT nextval('calsync_resource_version')").fetch_one(tx).await.map_err(db_err)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// Log in the transaction that `kind`/`namespace`/`name` changed (`rv`: its new
/// resourceVersion; `None` for a removal or a Secret); `origin` lets the writer skip its own
/// changes. Other processes read the row once the transaction has finished (`listen`).
pub async fn log_change(
    tx: &mut PgConnection,
    origin: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    rv: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO calsync_changes (origin, kind, namespace, name, rv) VALUES ($1, $2, $3, $4, $5)")
        .bind(origin)
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .bind(rv)
        .execute(tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// A change notification's payload (`listen` parses it), the format every calsync since the
/// first PostgreSQL store sends, so processes of the previous version still running during an
/// upgrade keep receiving this one's changes.
pub(super) fn notice(origin: &str, kind: &str, namespace: &str, name: &str) -> String {
    serde_json::json!([origin, kind, namespace, name]).to_string()
}

pub(super) fn decode<K: Row>(body: &str, ns: &str, name: &str) -> Result<K, StoreError> {
    serde_json::from_str(body).map_err(|e| {
        StoreError::Invalid(format!(
            "stored {} {ns}/{name} cannot be read ({e}); delete it with `calsync delete {} {name} -n {ns}` and apply it again",
            kind_str(K::KIND),
            kind_str(K::KIND).to_lowercase()
        ))
    })
}

/// The stored object (writers hold its key lock, `lock_key`, before reading it).
pub async fn load<K: Row>(tx: &mut PgConnection, ns: &str, name: &str) -> Result<Option<K>, StoreError> {
    let body: Option<(String,)> =
        sqlx::query_as("SELECT body FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3")
            .bind(kind_str(K::KIND))
            .bind(ns)
            .bind(name)
            .fetch_optional(tx)
            .await
            .map_err(db_err)?;
    body.map(|(b,)| decode(&b, ns, name)).transpose()
}

/// What is stored of an object before `save` replaces it.
pub enum Stored {
    /// Nothing: a new object (its label rows, if any were left behind, are cleared).
    New,
    /// An object with these labels (as loaded in the same transaction).
    Labels(Option<std::collections::BTreeMap<String, String>>),
}

/// Insert or replace the object, and its label rows when its labels differ from `stored`'s
/// (its metadata must be complete). Status writes never change labels; rewriting the rows
/// anyway was 90,000 of the bulk bench's statements and, as the dead index entries piled up,
/// its most expensive one (2 ms per DELETE).
pub async fn save<K: Row>(tx: &mut PgConnection, object: &K, stored: Stored, origin: &str) -> Result<(), StoreError> {
    let row = encode(object)?;
    let (kind, ns, name) = (row.kind, row.namespace.as_str(), row.name.as_str());
    let labels = object.meta().labels.as_ref().filter(|l| !l.is_empty());
    // A new object has no label rows, unless some were left behind (an import of an older
    // database): those are cleared so a selector never matches labels it does not carry.
    let (old, clear) = match &stored {
        Stored::Labels(old) => (old.as_ref().filter(|l| !l.is_empty()), false),
        Stored::New => (None, true),
    };
    let relabel = clear || old != labels;
    if clear {
        sqlx::query("DELETE FROM labels WHERE kind = $1 AND namespace = $2 AND name = $3")
            .bind(kind)
            .bind(ns)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    // One round trip: the upsert carries the change-log row and, when
    // the labels changed, the label rows' update: the keys carried upserted and, only when some
    // key is no longer carried, those deleted by full primary key (disjoint rows, so the two
    // never meet in one statement). A DELETE in every relabelling write cost 1.6 ms each in the bulk
    // bench: its prepared statement kept a generic plan made while the table was empty, a
    // sequential scan.
    let removed: Vec<&String> =
        old.map(|o| o.keys().filter(|k| !labels.is_some_and(|l| l.contains_key(*k))).collect()).unwrap_or_default();
    // (statement, with the label rows to upsert, with the keys to delete)
    let (sql, put, gone) = match (relabel && labels.is_some(), removed.is_empty()) {
        (_, false) => (SAVE_RELABEL, true, true),
        (true, true) => (SAVE_LABELS, true, false),
        (false, true) => (SAVE, false, false),
    };
    let (keys, values): (Vec<&String>, Vec<&String>) = labels.map(|l| l.iter().unzip()).unwrap_or_default();
    let mut q = sqlx::query(sql)
        .bind(kind)
        .bind(ns)
        .bind(name)
        .bind(&row.uid)
        .bind(row.rv)
        .bind(row.generation)
        .bind(row.deleting)
        .bind(&row.event_id)
        .bind(&row.body)
        .bind(origin);
    if put {
        q = q.bind(keys).bind(values);
    }
    if gone {
        q = q.bind(removed);
    }
    q.execute(&mut *tx).await.map_err(db_err)?;
    Ok(())
}

/// The object's upsert, shared by the `SAVE*` statements (a macro: `concat!` takes literals).
macro_rules! upsert {
    () => {
        "INSERT INTO objects (kind, namespace, name, uid, resource_version, generation, deleting, event_id, body)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (kind, namespace, name) DO UPDATE SET uid = excluded.uid,
             resource_version = excluded.resource_version, generation = excluded.generation,
             deleting = excluded.deleting, event_id = excluded.event_id, body = excluded.body
           RETURNING 1"
    };
}

/// The change-log row of the upserted object ($10 the origin), shared by the `SAVE*` statements
/// (data-modifying CTEs run whether or not the outer query reads them).
macro_rules! log_saved {
    () => {
        "logged AS (INSERT INTO calsync_changes (origin, kind, namespace, name, rv)
             SELECT $10, $1, $2, $3, $5 FROM up)"
    };
}

const SAVE: &str = concat!("WITH up AS (", upsert!(), "), ", log_saved!(), " SELECT 1");

/// The label rows' upsert ($11 keys, $12 values), shared by `SAVE_LABELS` and `SAVE_RELABEL`.
macro_rules! put_labels {
    () => {
        "put AS (INSERT INTO labels (kind, namespace, name, key, value)
             SELECT $1, $2, $3, k, v FROM UNNEST($11::text[], $12::text[]) AS l (k, v)
             ON CONFLICT (kind, namespace, name, key) DO UPDATE SET value = excluded.value
             WHERE labels.value IS DISTINCT FROM excluded.value)"
    };
}

const SAVE_LABELS: &str = concat!("WITH up AS (", upsert!(), "), ", log_saved!(), ", ", put_labels!(), " SELECT 1");

const SAVE_RELABEL: &str = concat!(
    "WITH up AS (",
    upsert!(),
    "), ",
    log_saved!(),
    ", ",
    put_labels!(),
    ", gone AS (DELETE FROM labels WHERE kind = $1 AND namespace = $2 AND name = $3 AND key = ANY($13::text[]))
     SELECT 1"
);

/// Remove the object, its labels, and the credentials it owns (Kubernetes garbage collection of
/// an owned Secret), logging each; returns the names of the Secrets removed.
pub async fn remove(tx: &mut PgConnection, key: &ObjectKey, origin: &str) -> Result<Vec<String>, StoreError> {
    let k = kind_str(key.kind);
    for sql in [
        "DELETE FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3",
        "DELETE FROM labels WHERE kind = $1 AND namespace = $2 AND name = $3",
    ] {
        sqlx::query(sql).bind(k).bind(&key.namespace).bind(&key.name).execute(&mut *tx).await.map_err(db_err)?;
    }
    let secrets: Vec<(String,)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM secrets WHERE owner_kind = $1 AND namespace = $2 AND owner_name = $3
                       RETURNING namespace, name),
              logged AS (INSERT INTO calsync_changes (origin, kind, namespace, name)
                         SELECT $4, $5, namespace, name FROM gone)
         SELECT name FROM gone",
    )
    .bind(k)
    .bind(&key.namespace)
    .bind(&key.name)
    .bind(origin)
    .bind(shared::SECRET_KIND)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    log_change(tx, origin, k, &key.namespace, &key.name, None).await?;
    Ok(secrets.into_iter().map(|(n,)| n).collect())
}

/// Rows of the objects of kind `K` in `namespace` (all when `None`) carrying every label of
/// `selector`, ordered by (namespace, name), undecoded.
pub async fn list_raw<K: Row>(
    conn: &mut PgConnection,
    namespace: Option<&str>,
    selector: &Labels,
) -> Result<Vec<shared::RawRow>, StoreError> {
    let (keys, values): (Vec<&String>, Vec<&String>) = selector.iter().unzip();
    // With a selector, the objects are found from the labels index (`labels_key_value`): the
    // objects carrying every pair are those with as many matching label rows as pairs (a key
    // appears once per object). Counting per object row instead scanned the whole namespace for
    // each list (108 ms for 10,000 TaskSyncs, the deletion guard lists per connection).
    let sql = if selector.is_empty() {
        "SELECT o.namespace, o.name, o.body FROM objects o
         WHERE o.kind = $1 AND ($2::text IS NULL OR o.namespace = $2)
         ORDER BY o.namespace, o.name"
    } else {
        "SELECT o.namespace, o.name, o.body FROM objects o
         JOIN (SELECT l.namespace, l.name FROM labels l
                 JOIN UNNEST($3::text[], $4::text[]) AS s (k, v) ON l.key = s.k AND l.value = s.v
                WHERE l.kind = $1 AND ($2::text IS NULL OR l.namespace = $2)
                GROUP BY l.namespace, l.name HAVING COUNT(*) = $5) m
           ON o.kind = $1 AND o.namespace = m.namespace AND o.name = m.name
         ORDER BY o.namespace, o.name"
    };
    let mut query = sqlx::query(sql).bind(kind_str(K::KIND)).bind(namespace);
    if !selector.is_empty() {
        query = query.bind(keys).bind(values).bind(selector.len() as i64);
    }
    let rows = query.fetch_all(conn).await.map_err(db_err)?;
    rows.into_iter()
        .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?, r.try_get(2).map_err(db_err)?)))
        .collect()
}

/// Up to `limit` rows of kind `K` after `after` (namespace, name) in key order, undecoded.
pub async fn page_raw<K: Row>(
    conn: &mut PgConnection,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<Vec<shared::RawRow>, StoreError> {
    let (ns, name) = after.unwrap_or(("", ""));
    let rows = sqlx::query(
        "SELECT namespace, name, body FROM objects WHERE kind = $1 AND (namespace, name) > ($2, $3)
         ORDER BY namespace, name LIMIT $4",
    )
    .bind(kind_str(K::KIND))
    .bind(ns)
    .bind(name)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    rows.into_iter()
        .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?, r.try_get(2).map_err(db_err)?)))
        .collect()
}

/// The TaskSync in `namespace` whose status records `event_id` (first by name).
pub async fn find_by_event(
    conn: &mut PgConnection,
    namespace: &str,
    event_id: &str,
) -> Result<Option<TaskSync>, StoreError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT name, body FROM objects WHERE kind = 'TaskSync' AND namespace = $1 AND event_id = $2 ORDER BY name LIMIT 1",
    )
    .bind(namespace)
    .bind(event_id)
    .fetch_optional(conn)
    .await
    .map_err(db_err)?;
    row.map(|(name, body)| decode(&body, namespace, &name)).transpose()
}

/// A Secret's sealed row and its version.
pub async fn load_secret(tx: &mut PgConnection, ns: &str, name: &str) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    sqlx::query_as("SELECT sealed, version FROM secrets WHERE namespace = $1 AND name = $2")
        .bind(ns)
        .bind(name)
        .fetch_optional(tx)
        .await
        .map_err(db_err)
}

/// Store a sealed Secret row (the caller holds its key lock); returns whether it was new and
/// its new version (drawn from the resourceVersion sequence, so a re-created Secret never
/// repeats one).
pub async fn save_secret(
    tx: &mut PgConnection,
    ns: &str,
    name: &str,
    key_id: &str,
    sealed: &[u8],
    owner: Option<&ObjectKey>,
) -> Result<(bool, i64), StoreError> {
    let version = i64::try_from(next_rv(tx).await?).unwrap_or(i64::MAX);
    let (inserted,): (bool,) = sqlx::query_as(
        "INSERT INTO secrets (namespace, name, key_id, sealed, owner_kind, owner_name, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, now(), $7)
         ON CONFLICT (namespace, name) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed,
           owner_kind = COALESCE(excluded.owner_kind, secrets.owner_kind),
           owner_name = COALESCE(excluded.owner_name, secrets.owner_name), updated_at = excluded.updated_at,
           version = excluded.version
         RETURNING (xmax = 0)",
    )
    .bind(ns)
    .bind(name)
    .bind(key_id)
    .bind(sealed)
    .bind(owner.map(|o| kind_str(o.kind)))
    .bind(owner.map(|o| o.name.clone()))
    .bind(version)
    .fetch_one(tx)
    .await
    .map_err(db_err)?;
    Ok((inserted, version))
}

/// Events are pruned when an inserted id is a multiple of this.
const PRUNE_EVERY: i64 = 64;

/// Append an Event and keep about the newest `keep` (see the pruning below).
pub async fn insert_event(
    tx: &mut PgConnection,
    key: &ObjectKey,
    fields: [&str; 4],
    keep: i64,
) -> Result<(), StoreError> {
    let [type_, reason, action, note] = fields;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO events (time, kind, namespace, name, type, reason, action, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(chrono::Utc::now().to_rfc3339())
    .bind(kind_str(key.kind))
    .bind(&key.namespace)
    .bind(&key.name)
    .bind(type_)
    .bind(reason)
    .bind(action)
    .bind(note)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err)?;
    // Pruned every PRUNE_EVERY ids, skipping rows another transaction is pruning: a plain
    // `DELETE ... WHERE id <= $1` in every transaction made concurrent units wait on each
    // other's row locks until COMMIT, which serialized the whole store on its fsyncs (7.3 ms per
    // DELETE, 74 s of 10,000 units' time in the bulk bench). At most PRUNE_EVERY + the in-flight
    // units' Events are kept beyond `keep` for a while; readers ask for the newest N anyway.
    if id % PRUNE_EVERY == 0 {
        sqlx::query("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= $1 FOR UPDATE SKIP LOCKED)")
            .bind(id - keep)
            .execute(tx)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// One object's row, encoded for `save_all`.
pub struct Encoded {
    kind: &'static str,
    namespace: String,
    name: String,
    uid: String,
    rv: i64,
    generation: i64,
    deleting: bool,
    event_id: Option<String>,
    body: String,
}

/// Encode `object` for `save_all` (its metadata must be complete).
pub fn encode<K: Row>(object: &K) -> Result<Encoded, StoreError> {
    let meta = object.meta();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let kind = kind_str(K::KIND);
    let body = serde_json::to_string(object)
        .map_err(|e| StoreError::Invalid(format!("{kind} {namespace}/{name} cannot be serialized: {e}")))?;
    Ok(Encoded {
        kind,
        rv: meta.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        uid: meta.uid.clone().unwrap_or_default(),
        generation: meta.generation.unwrap_or(1),
        deleting: meta.deletion_timestamp.is_some(),
        event_id: object.event_id(),
        namespace,
        name,
        body,
    })
}

/// A reconcile unit's writes in one round trip: the objects' upserts (their labels unchanged:
/// status writes), each with its change-log row, and the Events about `key`, each in its own
/// subtransaction (`calsync_insert_event`). Returns the messages of the Events that could not
/// be stored (the rest of the transaction is unaffected). Objects must be distinct keys.
pub async fn save_all(
    tx: &mut PgConnection,
    objects: &[Encoded],
    key: &ObjectKey,
    events: &[[&str; 4]],
    keep: i64,
    origin: &str,
) -> Result<Vec<String>, StoreError> {
    let col = |f: fn(&Encoded) -> &str| objects.iter().map(f).collect::<Vec<&str>>();
    let now = chrono::Utc::now().to_rfc3339();
    let ev = |i: usize| events.iter().map(|e| e[i]).collect::<Vec<&str>>();
    // Data-modifying CTEs run once whatever the outer query reads; `ev` is a plain SELECT, so
    // the outer query reads it to run it. The change-log rows may be in any order (PostgreSQL
    // does not promise RETURNING's); this process broadcasts in the caller's order after the
    // COMMIT.
    let (failed,): (Option<Vec<String>>,) = sqlx::query_as(
        "WITH up AS (
           INSERT INTO objects (kind, namespace, name, uid, resource_version, generation, deleting, event_id, body)
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                                $7::bool[], $8::text[], $9::text[])
           ON CONFLICT (kind, namespace, name) DO UPDATE SET uid = excluded.uid,
             resource_version = excluded.resource_version, generation = excluded.generation,
             deleting = excluded.deleting, event_id = excluded.event_id, body = excluded.body
           RETURNING kind, namespace, name, resource_version),
         logged AS (
           INSERT INTO calsync_changes (origin, kind, namespace, name, rv)
           SELECT $10, kind, namespace, name, resource_version FROM up),
         ev AS (
           SELECT calsync_insert_event($11, $12, $13, $14, e.etype, e.reason, e.action, e.note, $19, $20) AS error
             FROM UNNEST($15::text[], $16::text[], $17::text[], $18::text[]) AS e (etype, reason, action, note))
         SELECT (SELECT array_agg(error) FILTER (WHERE error IS NOT NULL) FROM ev)",
    )
    .bind(col(|o| o.kind))
    .bind(col(|o| &o.namespace))
    .bind(col(|o| &o.name))
    .bind(col(|o| &o.uid))
    .bind(objects.iter().map(|o| o.rv).collect::<Vec<i64>>())
    .bind(objects.iter().map(|o| o.generation).collect::<Vec<i64>>())
    .bind(objects.iter().map(|o| o.deleting).collect::<Vec<bool>>())
    .bind(objects.iter().map(|o| o.event_id.as_deref()).collect::<Vec<Option<&str>>>())
    .bind(col(|o| &o.body))
    .bind(origin)
    .bind(now)
    .bind(kind_str(key.kind))
    .bind(&key.namespace)
    .bind(&key.name)
    .bind(ev(0))
    .bind(ev(1))
    .bind(ev(2))
    .bind(ev(3))
    .bind(keep)
    .bind(PRUNE_EVERY)
    .fetch_one(tx)
    .await
    .map_err(db_err)?;
    Ok(failed.unwrap_or_default())
}

/// The newest `limit` Events (about `key` when given), oldest first.
pub async fn events(
    conn: &mut PgConnection,
    key: Option<&ObjectKey>,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT time, kind, namespace, name, type, reason, action, note FROM events
         WHERE ($1::text IS NULL OR (kind = $1 AND namespace = $2 AND name = $3)) ORDER BY id DESC LIMIT $4",
    )
    .bind(key.map(|k| kind_str(k.kind)))
    .bind(key.map(|k| k.namespace.clone()))
    .bind(key.map(|k| k.name.clone()))
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(db_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows.into_iter().rev() {
        let kind: String = r.try_get(1).map_err(db_err)?;
        out.push(StoredEvent {
            time: r.try_get(0).map_err(db_err)?,
            key: ObjectKey {
                kind: kind_from_str(&kind).unwrap_or(Kind::TaskSync),
                namespace: r.try_get(2).map_err(db_err)?,
                name: r.try_get(3).map_err(db_err)?,
            },
            type_: r.try_get(4).map_err(db_err)?,
            reason: r.try_get(5).map_err(db_err)?,
            action: r.try_get(6).map_err(db_err)?,
            note: r.try_get(7).map_err(db_err)?,
        });
    }
    Ok(out)
}
