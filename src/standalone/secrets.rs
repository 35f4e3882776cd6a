//! Secrets standalone mode generates when they are not configured (DESIGN §6): `ENCRYPTION_KEY`,
//! `SECRET_KEY`, `CALSYNC_API_KEYS`, and `CALSYNC_APP_WEBHOOK_SECRET` when webhooks are on.
//! Each is generated once, kept in its own file with mode 0600 beside the database, and reused
//! on the next start. Only file paths are ever printed.
//!
//! Owns: reading these variables and their files. Must not touch: what the secrets protect
//! (the store, the API) and never logs or formats a secret value.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore;

use crate::credentials::envelope::{CryptoError, Key, Keyring};
use crate::credentials::keys;

/// The secrets standalone needs. Debug output redacts them.
#[derive(Clone)]
pub struct Secrets {
    /// Seals stored credentials (AES-256-GCM).
    pub encryption_key: Key,
    /// Base64 of 32 random bytes: seals OAuth `state` (REST API).
    pub secret_key: String,
    /// Static API keys (trusted backends).
    pub api_keys: Vec<String>,
    /// Secrets generated or read from files (not from the environment) in this call.
    pub files: Vec<SecretFile>,
    /// `CALSYNC_APP_WEBHOOK_SECRET` (one or more `whsec_` secrets), when
    /// `CALSYNC_APP_WEBHOOK_URL` is set.
    pub app_webhook_secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("encryption_key_id", &self.encryption_key.id())
            .field("secret_key", &"[redacted]")
            .field("api_keys", &format!("[{} redacted]", self.api_keys.len()))
            .field("app_webhook_secret", &self.app_webhook_secret.as_ref().map(|_| "[redacted]"))
            .field("files", &self.files)
            .finish()
    }
}

/// A secret kept in a file because its variable was unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    /// The environment variable it stands in for.
    pub variable: &'static str,
    pub path: PathBuf,
    /// Made in this call (false: read from an earlier run).
    pub generated: bool,
}

impl SecretFile {
    /// A line for the terminal: where the secret is and how to use it; never the secret.
    pub fn notice(&self) -> String {
        let verb = if self.generated { "generated" } else { "using" };
        let mut line = format!(
            "{verb} {} (not set in the environment): stored in {} (mode 0600)",
            self.variable,
            self.path.display()
        );
        if self.variable == "CALSYNC_API_KEYS" {
            let listen = std::env::var("CALSYNC_LISTEN").unwrap_or_else(|_| "127.0.0.1:5000".into());
            line.push_str(&format!(
                "\n  try: curl -H \"Authorization: Bearer $(cut -d, -f1 {})\" http://{listen}/api/calendar/connection-status/USER_ID",
                self.path.display()
            ));
        }
        if self.variable == "CALSYNC_APP_WEBHOOK_SECRET" {
            line.push_str("\n  give it to your backend to verify webhook signatures (Standard Webhooks)");
        }
        line
    }
}

/// Why secrets could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{variable}: {source}")]
    BadKey { variable: &'static str, source: CryptoError },
    #[error(transparent)]
    Keys(#[from] keys::KeyConfigError),
    #[error("{variable} is set but empty; unset it to let calsync generate one, or set a value")]
    Empty { variable: &'static str },
    #[error(
        "cannot read or write the {variable} file {path}: {error}; check the directory's permissions or set {variable}"
    )]
    Io { variable: &'static str, path: PathBuf, error: std::io::Error },
}

fn random_b64(len: usize, url: bool) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    if url {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// The file that stands in for `variable`: `<db>.<suffix>`, or in the working directory for an
/// in-memory database.
fn file_for(db_path: Option<&Path>, suffix: &str) -> PathBuf {
    match db_path {
        Some(p) => {
            let mut s = p.as_os_str().to_os_string();
            s.push(format!(".{suffix}"));
            PathBuf::from(s)
        }
        None => PathBuf::from(format!("calsync.{suffix}")),
    }
}

/// Read the file, or create it (mode 0600, exclusively) with `make()`.
fn read_or_create(
    variable: &'static str,
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), SecretsError> {
    let io = |error| SecretsError::Io { variable, path: path.to_path_buf(), error };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_string(), false)),
        Ok(_) => return Err(SecretsError::Empty { variable }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let value = make();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(value.as_bytes()).and_then(|_| f.write_all(b"\n")).and_then(|_| f.sync_all()).map_err(io)?;
            Ok((value, true))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map(|s| (s.trim().to_string(), false)).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

fn env_or_file(
    variable: &'static str,
    lookup: &dyn Fn(&str) -> Option<String>,
    db_path: Option<&Path>,
    suffix: &str,
    make: impl FnOnce() -> String,
    files: &mut Vec<SecretFile>,
) -> Result<String, SecretsError> {
    if let Some(v) = lookup(variable) {
        if v.trim().is_empty() {
            return Err(SecretsError::Empty { variable });
        }
        return Ok(v.trim().to_string());
    }
    let path = file_for(db_path, suffix);
    let (value, generated) = read_or_create(variable, &path, make)?;
    files.push(SecretFile { variable, path, generated });
    Ok(value)
}

/// `ENCRYPTION_KEY`, `SECRET_KEY` and `CALSYNC_API_KEYS` from the environment, or from files
/// beside the database (`<db>.encryption-key`, `<db>.secret-key`, `<db>.api-keys`), generated
/// on first use. `db_path` is `None` for an in-memory database (files go to the working
/// directory).
pub fn load_or_generate(db_path: Option<&Path>) -> Result<Secrets, SecretsError> {
    load_with(db_path, &|k| std::env::var(k).ok())
}

/// `load_or_generate` with an explicit environment (tests).
pub fn load_with(db_path: Option<&Path>, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Secrets, SecretsError> {
    let mut files = Vec::new();
    let enc = env_or_file("ENCRYPTION_KEY", lookup, db_path, "encryption-key", || random_b64(32, false), &mut files)?;
    let encryption_key =
        Key::from_base64(&enc).map_err(|source| SecretsError::BadKey { variable: "ENCRYPTION_KEY", source })?;
    let secret_key = env_or_file("SECRET_KEY", lookup, db_path, "secret-key", || random_b64(32, false), &mut files)?;
    let api = env_or_file(
        "CALSYNC_API_KEYS",
        lookup,
        db_path,
        "api-keys",
        || format!("csk_{}", random_b64(32, true)),
        &mut files,
    )?;
    let api_keys: Vec<String> = api.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if api_keys.is_empty() {
        return Err(SecretsError::Empty { variable: "CALSYNC_API_KEYS" });
    }
    // Like the other keys: generated once beside the database, only when webhooks are on.
    let webhooks_on = lookup("CALSYNC_APP_WEBHOOK_URL").is_some_and(|u| !u.trim().is_empty());
    let app_webhook_secret = if webhooks_on {
        let make = || format!("whsec_{}", random_b64(32, false));
        Some(env_or_file("CALSYNC_APP_WEBHOOK_SECRET", lookup, db_path, "app-webhook-secret", make, &mut files)?)
    } else {
        None
    };
    Ok(Secrets { encryption_key, secret_key, api_keys, files, app_webhook_secret })
}

/// Only the encryption key (for `apply`/`get`/`delete`, which need no API secrets). Generates
/// its file like `load_or_generate` when unset.
pub fn encryption_key(db_path: Option<&Path>) -> Result<(Key, Option<SecretFile>), SecretsError> {
    let mut files = Vec::new();
    let lookup = |k: &str| std::env::var(k).ok();
    let enc = env_or_file("ENCRYPTION_KEY", &lookup, db_path, "encryption-key", || random_b64(32, false), &mut files)?;
    let key = Key::from_base64(&enc).map_err(|source| SecretsError::BadKey { variable: "ENCRYPTION_KEY", source })?;
    Ok((key, files.pop()))
}

/// `ENCRYPTION_KEY` from the environment or the file standalone generated beside the database;
/// never generates one (`rotate-keys` must not rotate to a key nobody has).
pub fn existing_encryption_key(db_path: Option<&Path>) -> Result<Key, SecretsError> {
    let text = match std::env::var("ENCRYPTION_KEY").ok().filter(|v| !v.trim().is_empty()) {
        Some(v) => v,
        None => {
            let path = file_for(db_path, "encryption-key");
            std::fs::read_to_string(&path).map_err(|error| SecretsError::Io {
                variable: "ENCRYPTION_KEY",
                path: path.clone(),
                error,
            })?
        }
    };
    Key::from_base64(&text).map_err(|source| SecretsError::BadKey { variable: "ENCRYPTION_KEY", source })
}

/// The keyring for the store: `current` seals; keys listed in `ENCRYPTION_KEYS_PREVIOUS` (or
/// its older spelling `ENCRYPTION_KEY_PREVIOUS`; comma-separated base64) still open rows sealed
/// before a key rotation.
pub fn keyring(current: Key) -> Result<Keyring, SecretsError> {
    keyring_with(current, &|k| std::env::var(k).ok())
}

/// `keyring` with an explicit environment (tests).
pub fn keyring_with(current: Key, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Keyring, SecretsError> {
    keys::keyring_with_previous(current, lookup).map_err(SecretsError::Keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_0600_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("calsync.db");
        let none = |_: &str| None;
        let first = load_with(Some(&db), &none).unwrap();
        assert_eq!(first.files.len(), 3);
        assert!(first.files.iter().all(|f| f.generated));
        #[cfg(unix)]
        for f in &first.files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.path.display());
        }
        let second = load_with(Some(&db), &none).unwrap();
        assert!(second.files.iter().all(|f| !f.generated));
        assert_eq!(first.encryption_key.id(), second.encryption_key.id());
        assert_eq!(first.api_keys, second.api_keys);
        // Notices and Debug name paths, never values.
        let text = format!("{second:?} {}", second.files.iter().map(|f| f.notice()).collect::<String>());
        assert!(!text.contains(&second.secret_key));
        assert!(!text.contains(&second.api_keys[0]));
    }

    #[test]
    fn webhook_secret_is_generated_only_when_webhooks_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("calsync.db");
        let off = load_with(Some(&db), &|_: &str| None).unwrap();
        assert!(off.app_webhook_secret.is_none() && off.files.len() == 3);
        let on = |k: &str| (k == "CALSYNC_APP_WEBHOOK_URL").then(|| "http://127.0.0.1:9/h".to_string());
        let first = load_with(Some(&db), &on).unwrap();
        let secret = first.app_webhook_secret.clone().unwrap();
        assert!(secret.starts_with("whsec_"));
        let file = first.files.iter().find(|f| f.variable == "CALSYNC_APP_WEBHOOK_SECRET").unwrap();
        assert!(file.generated && file.path.ends_with("calsync.db.app-webhook-secret"));
        let again = load_with(Some(&db), &on).unwrap();
        assert_eq!(again.app_webhook_secret.as_deref(), Some(secret.as_str()));
        let text = format!("{again:?} {}", again.files.iter().map(|f| f.notice()).collect::<String>());
        assert!(!text.contains(&secret[6..]), "{text}");
    }

    #[test]
    fn previous_keys_open_old_rows() {
        let (old, old_text) = Key::generate();
        let sealed = Keyring::new(old).seal(b"x", b"row").unwrap();
        let (new, _) = Key::generate();
        let env = move |k: &str| (k == "ENCRYPTION_KEY_PREVIOUS").then(|| format!("{old_text}, "));
        let ring = keyring_with(new.clone(), &env).unwrap();
        assert_eq!(ring.open(&sealed, b"row").unwrap(), b"x");
        assert_eq!(ring.current_id(), new.id());
        let bad = |k: &str| (k == "ENCRYPTION_KEY_PREVIOUS").then(|| "nope".to_string());
        assert!(keyring_with(new, &bad).unwrap_err().to_string().contains("ENCRYPTION_KEY_PREVIOUS"));
    }

    #[test]
    fn environment_wins_and_bad_values_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let (_, key) = Key::generate();
        let env = move |k: &str| match k {
            "ENCRYPTION_KEY" => Some(key.clone()),
            "SECRET_KEY" => Some("s".into()),
            "CALSYNC_API_KEYS" => Some("a, b".into()),
            _ => None,
        };
        let s = load_with(Some(&db), &env).unwrap();
        assert!(s.files.is_empty());
        assert_eq!(s.api_keys, vec!["a".to_string(), "b".to_string()]);
        let bad = |k: &str| (k == "ENCRYPTION_KEY").then(|| "too-short".to_string());
        let err = load_with(Some(&db), &bad).unwrap_err().to_string();
        assert!(err.contains("ENCRYPTION_KEY") && err.contains("32 bytes"), "{err}");
    }
}
