//! The Helm-free deployment example (`deploy/`) is a working one: systemd accepts the unit, the
//! compose file gives calsync the unit's environment, and two replicas started with exactly
//! that environment on one real PostgreSQL and a real Radicale serve one REST API: a task
//! declared through one becomes one event, and its sync history reads the same through the other.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::calsync_bin::Standalone;
use support::radicale::Radicale;

const UNIT: &str = "deploy/systemd/calsync@.service";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

/// `Environment=` lines of the unit (`%i`, the instance, left as is).
fn unit_environment(unit: &str) -> BTreeMap<String, String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn systemd_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("calsync.env");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/calsync.env.example"), &env_file).unwrap();
    // The unit as installed, with this build's binary and the example environment file.
    let unit = read(UNIT)
        .replace("/usr/local/bin/calsync", env!("CARGO_BIN_EXE_calsync"))
        .replace("/etc/calsync/calsync.env", env_file.to_str().unwrap());
    let path = dir.path().join("calsync@5001.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (systemd) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Verify exits 0 on unknown keys and bad values, and only says so: any word about our file
    // is a mistake in it.
    let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("calsync@")).collect();
    assert!(out.status.success() && about_ours.is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn compose_gives_calsync_the_units_environment() {
    let unit = unit_environment(&read(UNIT));
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read("deploy/compose.yaml")).unwrap();
    let services = &compose["services"];
    for name in ["calsync-a", "calsync-b"] {
        let s = &services[name];
        assert_eq!(s["command"], serde_yaml_ng::to_value(["standalone"]).unwrap(), "{name}");
        assert_eq!(s["env_file"].as_str(), Some("calsync.env"), "{name}: the secrets, as in the unit");
        let env: BTreeMap<String, String> = serde_yaml_ng::from_value(s["environment"].clone()).unwrap();
        assert_eq!(env.keys().collect::<Vec<_>>(), unit.keys().collect::<Vec<_>>(), "{name}");
        for (k, v) in &env {
            if k == "DATABASE_URL" {
                let user = v.strip_prefix("postgresql://").and_then(|r| r.split_once('@')).map(|(u, _)| u);
                assert_eq!(user, Some("calsync"), "{name}: user only, the password is PGPASSWORD");
            } else if k != "CALSYNC_LISTEN" {
                assert_eq!(Some(v), unit.get(k), "{name}: {k}");
            }
        }
    }
    // The proxy balances over both replicas.
    let proxy = serde_yaml_ng::to_string(&services["proxy"]["command"]).unwrap();
    assert!(proxy.contains("calsync-a:5000") && proxy.contains("calsync-b:5000"), "{proxy}");
    let caddy = read("deploy/Caddyfile");
    assert!(caddy.contains("127.0.0.1:5001 127.0.0.1:5002") && caddy.contains("health_uri /healthz"));
    // Every secret the env file holds is one calsync (or libpq) reads, and none is in the unit.
    let secrets: Vec<String> = read("deploy/calsync.env.example")
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(secrets, ["PGPASSWORD", "ENCRYPTION_KEY", "SECRET_KEY", "CALSYNC_API_KEYS"]);
    assert!(secrets.iter().all(|s| !unit.contains_key(s)));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_with_the_units_environment_serve_one_api() {
    let server = Radicale::start();
    let raw = server.raw();
    raw.mkcalendar("/alice/calendar/", "Calendar", &["VEVENT"]).await;
    let pg = tokio::task::spawn_blocking(support::postgres::shared).await.expect("start PostgreSQL");
    support::calsync_bin::artifacts::record_secret("postgresql-password", pg.password());
    let db = tokio::task::spawn_blocking(|| support::postgres::shared().create_database()).await.expect("db");

    let ports = [Standalone::pick_port(), Standalone::pick_port()];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = Vec::new();
    for (dir, port) in dirs.iter().zip(ports) {
        // The unit's environment for instance `port`, on this test's database (the example's
        // host does not exist here) and on loopback (a test listens on nothing else).
        let mut env: Vec<(&str, String)> = Vec::new();
        for (k, v) in unit_environment(&read(UNIT)) {
            let v = match k.as_str() {
                "DATABASE_URL" => pg.url_of(&db),
                "CALSYNC_LISTEN" => v.replace("0.0.0.0", "127.0.0.1").replace("%i", &port.to_string()),
                _ => v,
            };
            env.push((Box::leak(k.into_boxed_str()), v));
        }
        replicas.push(Standalone::start_with(dir.path(), port, &env).await);
    }
    let (a, b) = (&replicas[0], &replicas[1]);

    let user = "deploy-user";
    let connect = json!({"user_id": user, "apple_id": server.user, "app_password": server.password,
        "server_url": server.url});
    let (s, v) = a.call("POST", "/apple/connect", Some(connect)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = b.call("GET", &format!("/connection-status/{user}"), None).await;
    assert_eq!((s, &v["connected"]), (200, &json!(true)), "the other replica sees the connection: {v}");

    let day = (chrono::Utc::now() + chrono::Duration::days(3)).date_naive();
    let task = json!({"user_id": user, "task_data": {"id": "deploy-1", "name": "Deployed task",
        "scheduled_time": format!("{day}T10:00:00"), "timezone": "Europe/Paris"}});
    let (s, v) = b.call("POST", "/task-to-calendar", Some(task)).await;
    assert!(s == 200 || s == 202, "{s} {v}");

    // Whichever replica holds the connection's shard writes the event: exactly one.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = a.call("GET", &format!("/sync-history/{user}"), None).await;
        assert_eq!(s, 200, "{v}");
        let synced = v["syncs"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["task_id"] == "deploy-1" && e["sync_status"] == "success"));
        if synced {
            break;
        }
        assert!(Instant::now() < deadline, "no successful sync in the history read through replica a: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, via_a) = a.call("GET", &format!("/sync-history/{user}"), None).await;
    let (_, via_b) = b.call("GET", &format!("/sync-history/{user}"), None).await;
    assert_eq!(via_a["syncs"], via_b["syncs"], "both replicas read one history");
    let listing = raw
        .request(
            "PROPFIND",
            "/alice/calendar/",
            &[("depth", "1"), ("content-type", "application/xml")],
            Some(r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#.into()),
        )
        .await;
    assert_eq!(listing.body.matches(".ics</").count(), 1, "one event: {}", listing.body);
    for r in &replicas {
        assert!(r.log().lines().any(|l| l.starts_with('{')), "JSON logs, as the unit asks");
    }
}
