//! SQLite plumbing for the standalone store: `DATABASE_URL` parsing, opening with durable
//! settings, and the numbered migrations.
//!
//! Owns: the schema and connection settings. Must not touch: object semantics (`store`) or
//! encryption (`credentials::envelope`).
//!
//! Durability: WAL with `synchronous=FULL`, so a transaction that returned is on disk and
//! survives kill -9 and power loss (NORMAL in WAL mode is safe against process kills but may lose
//! the last commits on power loss; an acknowledged write must never be lost, so FULL).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

/// Default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://calsync.db";

/// Where the database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// A private in-memory database (`sqlite::memory:`): gone when the process ends.
    Memory,
}

impl Location {
    /// Parse `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` (or a bare path).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("DATABASE_URL is empty: use sqlite://PATH (e.g. sqlite://calsync.db) or sqlite::memory:".into());
        }
        if url == "sqlite::memory:" || url == "sqlite://:memory:" || url == ":memory:" {
            return Ok(Location::Memory);
        }
        let path = if let Some(rest) = url.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            rest
        } else if let Some((scheme, _)) = url.split_once("://") {
            // Only the scheme: the rest may hold a password.
            return Err(format!(
                "DATABASE_URL scheme {scheme:?} is not supported: use sqlite://PATH, sqlite::memory: or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ));
        } else {
            url
        };
        // Drop URL query options (`?mode=rwc`) some tools add.
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err(format!("DATABASE_URL {url:?} has no file path: use sqlite://PATH"));
        }
        Ok(Location::File(PathBuf::from(path)))
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::File(p) => Some(p),
            Location::Memory => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "sqlite://{}", p.display()),
            Location::Memory => f.write_str("sqlite::memory:"),
        }
    }
}

/// Numbered migrations; `PRAGMA user_version` records how many ran. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: objects, labels, credentials, events, change log, counters.
    r#"
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters (name, value) VALUES ('resource_version', 0);
    CREATE TABLE objects (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        resource_version INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        deleting INTEGER NOT NULL DEFAULT 0,
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
        sealed BLOB NOT NULL,
        owner_kind TEXT,
        owner_name TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        reason TEXT NOT NULL,
        action TEXT NOT NULL,
        note TEXT NOT NULL
    );
    CREATE TABLE changelog (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL
    );
    "#,
    // 2: a per-Secret version for optimistic concurrency on credentials (token write-back).
    // Rows written before it start at 0; every write sets the global resourceVersion, so a
    // deleted and re-created Secret never repeats a version.
    r#"
    ALTER TABLE secrets ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: the app webhook outbox (rows written in the transaction of the status change they
    // report), dead letters, and endpoints a receiver disabled with 410 (by URL hash).
    r#"
    CREATE TABLE webhook_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL,
        last_error TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_ms, seq);
    CREATE TABLE webhook_dead (
        seq INTEGER PRIMARY KEY,
        msg_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        dead_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE webhook_endpoints (
        endpoint TEXT PRIMARY KEY,
        disabled_ms INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    "#,
    // 4: objects by label value (as PostgreSQL's labels_key_value): a selector listing drove
    // from the objects of the kind and checked each one's labels, 104 ms for 122 of 100,000
    // TaskSyncs; through this index 1 ms (`rows::list_raw`).
    r#"
    CREATE INDEX labels_by_value ON labels (kind, key, value, namespace, name);
    "#,
];

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Open (creating if needed) and migrate.
pub fn open(location: &Location) -> rusqlite::Result<Connection> {
    let conn = match location {
        Location::File(p) => {
            create_private(p);
            Connection::open(p)?
        }
        Location::Memory => Connection::open_in_memory()?,
    };
    conn.busy_timeout(Duration::from_secs(10))?;
    // Room for every statement a write or read runs (`rows::exec`): rusqlite keeps 16.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if matches!(location, Location::File(_)) {
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; falling back to its journal");
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals (each write of a group commit runs in a SAVEPOINT) stay in memory.
    // With the default, one past 64 KiB spilled to a new temp file: an open, writes and an
    // unlink inside the commit (perf, REST write path: ~6% of the commit thread).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    migrate(&conn)?;
    Ok(conn)
}

/// Create a new database file readable only by its owner (SQLite gives the -wal and -shm files
/// the same mode). An existing file keeps its mode; failures are left to `Connection::open`.
fn create_private(path: &Path) {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = opts.open(path);
}

/// A second connection for reading the change log (file databases only).
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // Exclusive: two processes opening a new database must not both run migration 1.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let done = usize::try_from(done).unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", (i + 1) as i64)?;
            tracing::info!(migration = i + 1, "applied SQLite migration");
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(Location::parse("sqlite::memory:").unwrap(), Location::Memory);
        assert_eq!(Location::parse("sqlite://calsync.db").unwrap(), Location::File("calsync.db".into()));
        assert_eq!(Location::parse("sqlite:///tmp/x.db?mode=rwc").unwrap(), Location::File("/tmp/x.db".into()));
        assert_eq!(Location::parse("sqlite:rel.db").unwrap(), Location::File("rel.db".into()));
        assert!(Location::parse("postgres://x").unwrap_err().contains("sqlite://"));
        assert!(Location::parse("").is_err());
        assert!(Location::parse("sqlite://").is_err());
    }

    #[test]
    fn secrets_of_a_version_1_database_get_a_version() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::File(dir.path().join("old.db"));
        {
            let conn = Connection::open(loc.path().unwrap()).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO secrets (namespace, name, key_id, sealed, updated_at) VALUES ('default', 's', 'k', x'00', 't')",
                [],
            )
            .unwrap();
        }
        let conn = open(&loc).unwrap();
        let version: i64 = conn.query_row("SELECT version FROM secrets WHERE name = 's'", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 0);
    }

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::File(dir.path().join("t.db"));
        drop(open(&loc).unwrap());
        let conn = open(&loc).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(loc.path().unwrap()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
