//! The PostgreSQL schema and its numbered migrations, run once under concurrency: the whole
//! migration is one transaction holding a transaction-level advisory lock, so two calsync
//! processes starting together on an empty database migrate once (the second waits, then finds
//! the work done). `calsync_schema` records each applied version; a database migrated by a newer
//! calsync (a version this binary does not know) is refused with both versions named.
//!
//! Owns: DDL and the version table. Must not touch: object semantics or connection settings.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::engine::StoreError;

/// Advisory lock key of the migration ("calsync" in ASCII), shared by every calsync process.
const MIGRATION_LOCK: i64 = 0x63_616c_7379_6e63;

/// Numbered migrations (index + 1 is the version). Append only; never edit one that shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: objects (JSON body + indexed columns), labels, sealed Secrets, bounded Events, the app
    // webhook outbox with dead letters and disabled endpoints, and the resourceVersion sequence.
    r#"
    CREATE SEQUENCE calsync_resource_version AS BIGINT;
    CREATE TABLE objects (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        resource_version BIGINT NOT NULL,
        generation BIGINT NOT NULL,
        deleting BOOLEAN NOT NULL DEFAULT FALSE,
        event_id TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, namespace, name)
    );
    CREATE INDEX objects_event_id ON objects (namespace, event_id) WHERE event_id IS NOT NULL;
    CREATE TABLE labels (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (kind, namespace, name, key)
    );
    CREATE INDEX labels_key_value ON labels (kind, key, value);
    CREATE TABLE secrets (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        key_id TEXT NOT NULL,
        sealed BYTEA NOT NULL,
        owner_kind TEXT,
        owner_name TEXT,
        updated_at TIMESTAMPTZ NOT NULL,
        version BIGINT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE INDEX secrets_owner ON secrets (namespace, owner_kind, owner_name);
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        reason TEXT NOT NULL,
        action TEXT NOT NULL,
        note TEXT NOT NULL
    );
    CREATE INDEX events_object ON events (kind, namespace, name, id);
    CREATE TABLE webhook_outbox (
        seq BIGSERIAL PRIMARY KEY,
        msg_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms BIGINT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_ms, seq);
    CREATE TABLE webhook_dead (
        seq BIGINT PRIMARY KEY,
        msg_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        attempts INTEGER NOT NULL,
        dead_ms BIGINT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE webhook_endpoints (
        endpoint TEXT PRIMARY KEY,
        disabled_ms BIGINT NOT NULL,
        reason TEXT NOT NULL
    );
    "#,
    // 2: shard leases and the replicas that hold them (several `calsync standalone` on one
    // database share the engine's work: `pg::shards`). 64 shards, free at first.
    r#"
    CREATE TABLE shard_leases (
        shard INTEGER PRIMARY KEY,
        holder TEXT NOT NULL DEFAULT '',
        expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
    );
    INSERT INTO shard_leases (shard) SELECT generate_series(0, 63);
    CREATE TABLE replicas (
        id TEXT PRIMARY KEY,
        seen_at TIMESTAMPTZ NOT NULL
    );
    "#,
    // 3: round trips folded into functions. `calsync_lock_load`: a writer's key lock, its
    // resourceVersion and the object as stored (`rows::lock_load`); VOLATILE, so each statement
    // inside takes a fresh snapshot and the read after the lock sees what the previous holder
    // of the lock committed (one plain statement would read with the snapshot taken before it
    // waited for the lock); `calsync_lock_load_all` the same for several keys in the order
    // given (a reconcile's unit). `calsync_insert_event`: an Event and its periodic prune under a
    // subtransaction (the EXCEPTION block), answering the error instead of aborting the
    // caller's transaction (a unit's Events, `rows::save_all`): no round trips of their own
    // for SAVEPOINT, INSERT, RELEASE. Bodies compressed with lz4 where the server has it: a
    // connection's body (its history ring, ~22 KB) is rewritten by every synced task, and
    // pglz compressing it was 7% of the server's CPU in the bulk bench. Rows written before
    // keep pglz (each value records its method).
    r#"
    CREATE FUNCTION calsync_lock_load(p_lock TEXT, p_kind TEXT, p_namespace TEXT, p_name TEXT,
                                      OUT out_rv BIGINT, OUT out_body TEXT)
    LANGUAGE plpgsql VOLATILE AS $fn$
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_lock, 0));
        out_rv := nextval('calsync_resource_version');
        SELECT o.body INTO out_body FROM objects o
         WHERE o.kind = p_kind AND o.namespace = p_namespace AND o.name = p_name;
    END
    $fn$;
    CREATE FUNCTION calsync_lock_load_all(p_locks TEXT[], p_kinds TEXT[], p_namespaces TEXT[],
                                          p_names TEXT[])
    RETURNS TABLE (out_rv BIGINT, out_body TEXT)
    LANGUAGE plpgsql VOLATILE AS $fn$
    BEGIN
        FOR i IN 1 .. coalesce(array_length(p_locks, 1), 0) LOOP
            PERFORM pg_advisory_xact_lock(hashtextextended(p_locks[i], 0));
            out_rv := nextval('calsync_resource_version');
            out_body := NULL;
            SELECT o.body INTO out_body FROM objects o
             WHERE o.kind = p_kinds[i] AND o.namespace = p_namespaces[i] AND o.name = p_names[i];
            RETURN NEXT;
        END LOOP;
    END
    $fn$;
    CREATE FUNCTION calsync_insert_event(p_time TEXT, p_kind TEXT, p_namespace TEXT, p_name TEXT,
                                         p_type TEXT, p_reason TEXT, p_action TEXT, p_note TEXT,
                                         p_keep BIGINT, p_prune_every BIGINT)
    RETURNS TEXT
    LANGUAGE plpgsql VOLATILE AS $fn$
    DECLARE
        new_id BIGINT;
    BEGIN
        INSERT INTO events (time, kind, namespace, name, type, reason, action, note)
        VALUES (p_time, p_kind, p_namespace, p_name, p_type, p_reason, p_action, p_note)
        RETURNING id INTO new_id;
        IF new_id % p_prune_every = 0 THEN
            DELETE FROM events WHERE id IN
              (SELECT e.id FROM events e WHERE e.id <= new_id - p_keep FOR UPDATE SKIP LOCKED);
        END IF;
        RETURN NULL;
    EXCEPTION WHEN OTHERS THEN
        RETURN SQLERRM;
    END
    $fn$;
    DO $lz4$
    BEGIN
        ALTER TABLE objects ALTER COLUMN body SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported THEN
        RAISE NOTICE 'this PostgreSQL has no lz4; object bodies stay compressed with pglz';
    END
    $lz4$;
    "#,
    // 4: the change log, which replaces `pg_notify` inside data transactions. A notifying
    // transaction holds one server-wide lock from its pre-commit through its WAL flush
    // (`PreCommit_Notify`), so every calsync commit on a server ran one at a time and none
    // shared an fsync. Writers now add a row here (no global lock); each process reads the rows
    // of transactions that have finished (`listen`: by transaction id against the snapshot's
    // horizon, so none committed out of order is skipped) and a short `NOTIFY` after the
    // COMMIT only wakes it early. `rv` is the object's new resourceVersion (NULL: removed, or a
    // Secret), so a reader that holds that version already does nothing.
    r#"
    CREATE TABLE calsync_changes (
        seq BIGSERIAL PRIMARY KEY,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        origin TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        rv BIGINT
    );
    CREATE INDEX calsync_changes_xid ON calsync_changes (xid);
    "#,
];

/// The schema version this binary writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring the database to `current_version()` (or refuse a newer one). Returns the migrations
/// this call applied (0 when another process had done them).
pub async fn migrate(conn: &mut PgConnection) -> Result<usize, StoreError> {
    let mut tx = conn.begin().await.map_err(super::db_err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(super::db_err)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS calsync_schema (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            calsync_version TEXT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(super::db_err)?;
    let (done,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM calsync_schema").fetch_one(&mut *tx).await.map_err(super::db_err)?;
    let done = done.unwrap_or(0);
    let known = current_version();
    if done > known {
        return Err(StoreError::Invalid(format!(
            "the PostgreSQL schema is at version {done}, written by a newer calsync; this calsync ({}) knows schema version {known} only: run the newer calsync, or restore a backup made before the upgrade",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let mut applied = 0;
    for (i, ddl) in MIGRATIONS.iter().enumerate().skip(usize::try_from(done).unwrap_or(0)) {
        sqlx::raw_sql(ddl).execute(&mut *tx).await.map_err(super::db_err)?;
        sqlx::query("INSERT INTO calsync_schema (version, calsync_version) VALUES ($1, $2)")
            .bind(i as i64 + 1)
            .bind(env!("CARGO_PKG_VERSION"))
            .execute(&mut *tx)
            .await
            .map_err(super::db_err)?;
        tracing::info!(migration = i + 1, "applied PostgreSQL migration");
        applied += 1;
    }
    tx.commit().await.map_err(super::db_err)?;
    Ok(applied)
}
