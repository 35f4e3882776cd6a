//! Python tools from PyPI that check what calsync sends with someone else's code (the reference
//! Standard Webhooks library, `icalendar` + `recurring-ical-events`).
//!
//! `venv("name", &["pkg==1.2", ...])` installs the pinned packages on first use into a virtualenv
//! under `~/.cache/calsync/peers/py-<name>-<hash of the pins>` (override the root with
//! `CALSYNC_PEERS_DIR`), atomically (built aside, renamed into place), and returns its python.
//! `run_python(&py, script, stdin)` runs a script and returns its stdout. A tool that cannot be
//! installed or run FAILS the test (panics); it never skips.
//! Self-contained (std only) so any test file can include it with `#[path]`.

#![allow(dead_code)]

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

fn peers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CALSYNC_PEERS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("calsync").join("peers")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The python of a venv holding `packages` (pinned requirement strings), installed on first use.
pub fn venv(name: &str, packages: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // The pins are part of the path: changing a version installs a fresh venv.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    packages.hash(&mut h);
    let dir_name = format!("py-{name}-{:016x}", h.finish());
    let venv = peers_dir().join(&dir_name);
    let py = venv.join("bin").join("python");
    if venv.join(".installed").exists() {
        return py;
    }
    std::fs::create_dir_all(peers_dir()).expect("create the peers cache dir");
    let tmp = peers_dir().join(format!("{dir_name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("python3").args(["-m", "venv"]).arg(&tmp), "python3 -m venv (is python3-venv installed?)");
    run(
        Command::new(tmp.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages),
        &format!("pip install {}", packages.join(" ")),
    );
    std::fs::write(tmp.join(".installed"), packages.join("\n")).expect("mark the venv installed");
    if std::fs::rename(&tmp, &venv).is_ok() || venv.join(".installed").exists() {
        // Either ours is in place, or another process won the race with the same pins.
        let _ = std::fs::remove_dir_all(&tmp);
        return py;
    }
    tmp.join("bin").join("python")
}

/// Run `script` with `py`, feeding `stdin`; stdout on success, a panic with stderr otherwise.
pub fn run_python(py: &PathBuf, script: &str, stdin: &str) -> String {
    let mut child = Command::new(py)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", py.display()));
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write the script's stdin");
    let out = child.wait_with_output().expect("wait for python");
    assert!(
        out.status.success(),
        "python script failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
