//! The CI leak check (`scripts/check-secret-leaks.sh`) itself: it passes a clean artifacts
//! directory, catches a planted leak (naming the file and the secret's kind, never its value),
//! and refuses to pass when there is nothing to check.

use std::path::Path;
use std::process::Command;

fn check(dir: &Path) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-secret-leaks.sh");
    let out = Command::new("bash").arg(script).arg(dir).output().expect("run the leak check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_leak_check_catches_a_planted_leak_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nothing recorded: the check must not pass silently.
    assert_eq!(check(d).0, 2);
    std::fs::write(d.join("secrets.txt"), "radicale-password\tpw-planted-0123456789\napi-key\tcsk_planted.key+/=\n")
        .unwrap();
    assert_eq!(check(d).0, 2, "no files to check is not a pass");
    std::fs::write(d.join("calsync-standalone-1-0.log"), "INFO connected user=alice password=[redacted]\n").unwrap();
    let (code, text) = check(d);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 secret(s) checked against 1 file(s)"), "{text}");

    // A leak in a saved API response, and one in the middle of a binary-ish log line.
    std::fs::create_dir(d.join("nested")).unwrap();
    std::fs::write(d.join("nested/api-responses-1-1.txt"), "GET /x -> 200\n{\"token\":\"csk_planted.key+/=\"}\n")
        .unwrap();
    std::fs::write(d.join("calsync-api-1-2.log"), b"\x00\x01 auth pw-planted-0123456789 \xff".as_slice()).unwrap();
    let (code, text) = check(d);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("LEAK: api-key found in nested/api-responses-1-1.txt"), "{text}");
    assert!(text.contains("LEAK: radicale-password found in calsync-api-1-2.log"), "{text}");
    assert!(!text.contains("pw-planted") && !text.contains("csk_planted"), "the check printed a secret: {text}");
    // Regex characters in a secret are matched literally: `.` must not match any character.
    std::fs::remove_file(d.join("nested/api-responses-1-1.txt")).unwrap();
    std::fs::remove_file(d.join("calsync-api-1-2.log")).unwrap();
    std::fs::write(d.join("near-miss.log"), "csk_plantedXkey+/=\n").unwrap();
    assert_eq!(check(d).0, 0);
}
