//! PostgreSQL connection settings from `DATABASE_URL` and the one place connection failures
//! become messages: `postgres://` or `postgresql://` URLs as libpq reads them (`sslmode`
//! disable/allow/prefer/require/verify-ca/verify-full, `sslrootcert`; the password from the URL
//! or `PGPASSWORD`, and the other `PG*` variables as defaults), parsed by sqlx.
//!
//! Owns: URL parsing, the redacted form of the target, connect timeouts and the error texts that
//! say what to check. Must not touch: schema or object semantics. Never formats the password:
//! messages are built from host, port, database and user only.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};

use crate::engine::StoreError;

/// How long one connection attempt may take before start-up gives up with a clear error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let u = url.trim_start().get(..13).unwrap_or(url.trim_start()).to_ascii_lowercase();
    u.starts_with("postgres://") || u.starts_with("postgresql://")
}

/// Where the database is, for logs and errors: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub sslmode: &'static str,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "postgresql://{}@{}:{}/{}?sslmode={}", self.user, self.host, self.port, self.database, self.sslmode)
    }
}

fn sslmode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Parse `url` into connection options and its redacted target.
pub fn parse(url: &str) -> Result<(PgConnectOptions, Target), StoreError> {
    let usage = "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require|verify-full] \
                 (the password may come from PGPASSWORD instead)";
    // sqlx's parse errors name the problem, never the URL; still, only its text is used.
    let options = PgConnectOptions::from_str(url.trim())
        .map_err(|e| StoreError::Invalid(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}; {usage}")))?;
    let database = options.get_database().map(str::to_string).unwrap_or_else(|| options.get_username().to_string());
    let target = Target {
        host: options.get_host().to_string(),
        port: options.get_port(),
        database,
        user: options.get_username().to_string(),
        sslmode: sslmode_name(options.get_ssl_mode()),
    };
    // Statements carry no secrets, but the store logs what it does itself.
    let options = options.disable_statement_logging().application_name("calsync");
    Ok((options, target))
}

/// What to check for a failed connection, from the error's class.
fn hint(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") | Some("28000") => {
                "check the user name and password (in DATABASE_URL or PGPASSWORD) and the server's pg_hba.conf"
            }
            Some("3D000") => {
                "the database does not exist: create it (createdb) or fix the database name in DATABASE_URL"
            }
            Some("53300") => "the server has no free connection slots: check max_connections and other clients",
            _ => "check the server log",
        },
        sqlx::Error::Tls(_) => {
            "check sslmode in DATABASE_URL (disable, prefer, require, verify-full) and the server's certificate (sslrootcert)"
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
            "check that the host and port are right and that PostgreSQL is running and reachable from here"
        }
        _ => "check DATABASE_URL and that PostgreSQL is running",
    }
}

/// A connection failure as a start-up error naming the target and what to check.
pub fn connect_error(target: &Target, e: &sqlx::Error) -> StoreError {
    let why = match e {
        // The server's message (e.g. `password authentication failed for user "x"`), not the
        // driver's wrapping, which adds nothing.
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!(
        "cannot connect to PostgreSQL at {}:{} (database {:?}, user {:?}): {why}; {}",
        target.host,
        target.port,
        target.database,
        target.user,
        hint(e)
    ))
}

/// One connection, within `CONNECT_TIMEOUT`, or an error that says what to check.
pub async fn connect(options: &PgConnectOptions, target: &Target) -> Result<PgConnection, StoreError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect_error(target, &e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {}:{} (database {:?}): no answer within {}s; check that the host and port are right and that PostgreSQL is running and reachable from here",
            target.host,
            target.port,
            target.database,
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_postgres_urls() {
        assert!(is_postgres_url("postgres://u@h/d"));
        assert!(is_postgres_url("postgresql://u@h/d"));
        assert!(is_postgres_url("PostgreSQL://u@h/d"));
        assert!(!is_postgres_url("sqlite://x.db"));
        assert!(!is_postgres_url("pg"));
    }

    #[test]
    fn target_never_shows_the_password() {
        let (_, t) = parse("postgresql://calsync:s3cret-pw@db.example:6543/getitdone?sslmode=require").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.database.as_str(), t.user.as_str(), t.sslmode),
            ("db.example", 6543, "getitdone", "calsync", "require")
        );
        assert!(!t.to_string().contains("s3cret"));
        assert_eq!(t.to_string(), "postgresql://calsync@db.example:6543/getitdone?sslmode=require");
    }

    #[test]
    fn bad_urls_say_what_is_expected_without_echoing() {
        let err = parse("postgres://u:s3cret@h/d?sslmode=bogus").unwrap_err().to_string();
        assert!(err.contains("postgresql://USER"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse("postgres://u:s3cret@h:notaport/d").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
