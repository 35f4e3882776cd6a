//! One directory for everything tests save that the CI leak check must read: logs of spawned
//! `calsync` processes, API responses, and `secrets.txt`, where tests record every secret they
//! use (one `kind<TAB>value` line each). `scripts/check-secret-leaks.sh` greps every other file
//! in the directory for every recorded value and fails CI on a hit.
//!
//! The directory is `$CALSYNC_TEST_ARTIFACTS`, else `$CARGO_TARGET_DIR/test-artifacts`, else
//! `test-artifacts` beside the target's tmp dir. `.ci/run` clears it before the tests.
//! Self-contained (std only) so any test file can include it with `#[path]`.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The artifacts directory (created on first use).
pub fn dir() -> PathBuf {
    let dir = match std::env::var_os("CALSYNC_TEST_ARTIFACTS").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
            Some(t) => PathBuf::from(t).join("test-artifacts"),
            None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..").join("test-artifacts"),
        },
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Record a secret a test hands to calsync or a peer, so the leak check looks for it. `kind`
/// names it in the check's report (e.g. `radicale-password`); the value is never printed.
pub fn record_secret(kind: &str, value: &str) {
    assert!(!kind.contains(['\t', '\n']) && !value.contains(['\t', '\n']), "one line per secret");
    // Short values would match by chance (and would not be real secrets).
    assert!(value.len() >= 8, "secret `{kind}` is too short to check for leaks");
    let path = dir().join("secrets.txt");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open secrets.txt");
    // One write per line: O_APPEND keeps lines from parallel tests whole.
    f.write_all(format!("{kind}\t{value}\n").as_bytes()).expect("record a secret");
}

/// A fresh file path in the artifacts directory: `<stem>-<pid>-<n>.<ext>`.
pub fn path(stem: &str, ext: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir().join(format!("{stem}-{}-{n}.{ext}", std::process::id()))
}

/// Append one saved API response (method, path, status, body) to `file`.
pub fn save_response(file: &std::path::Path, method: &str, path: &str, status: u16, body: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).expect("open responses file");
    let _ = writeln!(f, "{method} {path} -> {status}\n{body}\n");
}
