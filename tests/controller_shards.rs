//! Sharded controllers (issue 19): three compiled `calsync controller` processes share 12 shard
//! Leases on the strict fake API server (served over loopback HTTP) and write TaskSyncs (900 in
//! `cargo test`; `SHARD_TASKS=3000` for the full size issue 19 names, about 4 minutes) spread over
//! 60 CalendarConnections into a real Radicale, one calendar per connection. Checks:
//! the shards spread fairly (4 each, also on `/metrics`), a process killed with SIGKILL mid-run
//! loses its shards to the survivors within about a lease duration, and the end state in
//! Radicale's storage is exactly one event per TaskSync (none lost, none duplicated) with every
//! TaskSync Synced.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[allow(clippy::duplicate_mod)]
#[path = "support/ports.rs"]
mod ports;
#[path = "support/radicale.rs"]
mod radicale;
#[path = "support/kube_harness.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calsync::resources::{CalendarConnection, TaskSync};
use k8s_openapi::api::core::v1::Secret;
use ports::free_port;
use radicale::Radicale;
use serde_json::{Value, json};
use support::*;

const SHARDS: u32 = 12;
const PROCESSES: usize = 3;
const CONNECTIONS: usize = 60;
/// TaskSyncs in the 3-process test unless `SHARD_TASKS` says otherwise: 15 per connection keep
/// every shard busy past the kill (at a fifth synced) while the test stays near a minute of CI.
const DEFAULT_TASKS: usize = 900;
const LEASE_SECONDS: u64 = 4;
const LEASE: &str = "calsync-controller";

/// One controller replica. The only place the binary is named.
fn spawn_controller(api_port: u16, id: &str, metrics_port: u16, lease_seconds: u64, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["controller", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("KUBECONFIG", kubeconfig(api_port, NS))
        .env("POD_NAME", id)
        .env("POD_NAMESPACE", NS)
        .env("ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("CALSYNC_SHARDS", SHARDS.to_string())
        .env("CALSYNC_LEASE_DURATION_SECONDS", lease_seconds.to_string())
        .env("CALSYNC_CONCURRENCY", "16")
        .env("CALSYNC_CALDAV_ALLOW_PRIVATE", "true")
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    })
    .await
    .ok()?
}

/// Holder → shards held, from the shard Leases in the API server.
fn holders(server: &FakeApiServer) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for lease in server.list(&leases_path(NS)) {
        let name = lease["metadata"]["name"].as_str().unwrap_or_default();
        let Some(shard) = name.strip_prefix(&format!("{LEASE}-shard-")).and_then(|s| s.parse().ok()) else { continue };
        if let Some(h) = lease["spec"]["holderIdentity"].as_str() {
            out.entry(h.to_string()).or_default().push(shard);
        }
    }
    out
}

fn synced(server: &FakeApiServer) -> usize {
    server
        .list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs"))
        .iter()
        .filter(|t| is_synced(Some(t)))
        .count()
}

/// SUMMARY → how many events carry it, read from Radicale's own storage (every `.ics` of every
/// connection's calendar).
fn events_by_summary(dav: &Radicale) -> BTreeMap<String, usize> {
    let root = dav.storage().join("collections/collection-root").join(&dav.user);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|e| e != "ics") {
                continue;
            }
            let ics = std::fs::read_to_string(&path).unwrap();
            let lines = radicale::vevent_lines(&ics);
            let summary = radicale::line_value(&lines, "SUMMARY").unwrap_or("?").to_string();
            *out.entry(summary).or_insert(0) += 1;
        }
    }
    out
}

/// Radicale with one calendar per connection, and the fake API server holding the credentials
/// Secret and `connections` CalendarConnections (`conn-<c>` → `/<user>/cal-<c>/`).
async fn world(connections: usize) -> (Radicale, FakeApiServer) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dav = Radicale::start();
    let raw = dav.raw();
    let server = FakeApiServer::new();
    create::<Secret>(
        &server,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dav-creds", "namespace": NS},
            "data": {"username": b64(&dav.user), "password": b64(&dav.password)},
        }),
    )
    .await;
    for c in 0..connections {
        let path = format!("/{}/cal-{c}/", dav.user);
        raw.mkcalendar(&path, &format!("Calendar {c}"), &["VEVENT"]).await;
        create::<CalendarConnection>(
            &server,
            json!({
                "apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "CalendarConnection",
                "metadata": {"name": format!("conn-{c}"), "namespace": NS},
                "spec": {"userId": format!("user-{c}"), "provider": "caldav", "serverUrl": dav.url,
                         "calendarId": path, "credentialsSecretRef": {"name": "dav-creds"}},
            }),
        )
        .await;
    }
    (dav, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_twelve_shards_and_survive_a_kill() {
    let tasks: usize = std::env::var("SHARD_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_TASKS);
    let (dav, server) = world(CONNECTIONS).await;
    for t in 0..tasks {
        let mut fixture = task_sync(&format!("t-{t}"), &format!("conn-{}", t % CONNECTIONS), &format!("Task {t}"));
        fixture["spec"]["start"] = json!(format!("2026-03-{:02}T{:02}:00:00Z", 1 + (t / 24) % 28, t % 24));
        create::<TaskSync>(&server, fixture).await;
    }
    let port = serve_http(server.clone()).await;
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut procs: Vec<(String, u16, Child)> = (0..PROCESSES)
        .map(|i| {
            let id = format!("calsync-shard-{i}");
            let metrics = free_port();
            let child = spawn_controller(port, &id, metrics, LEASE_SECONDS, &logs.path().join(format!("{id}.log")));
            (id, metrics, child)
        })
        .collect();
    let log_of = |id: &str| std::fs::read_to_string(logs.path().join(format!("{id}.log"))).unwrap_or_default();

    // Fair spread: every process holds 4 shards, all 12 are held.
    let fair = |h: &BTreeMap<String, Vec<u32>>, n: usize, each: usize| {
        h.len() == n
            && h.values().all(|s| s.len() == each)
            && h.values().map(Vec::len).sum::<usize>() == SHARDS as usize
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fair(&holders(&server), PROCESSES, 4) {
        if Instant::now() >= deadline {
            // Which process is missing and why: its exit status and the tail of its log.
            let tails: Vec<String> = procs
                .iter_mut()
                .map(|(id, _, child)| {
                    let tail = log_of(id).lines().rev().take(15).collect::<Vec<_>>().join("\n");
                    format!("--- {id} ({:?}):\n{tail}", child.try_wait())
                })
                .collect();
            panic!("shards never spread fairly: {:?}\n{}", holders(&server), tails.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("fair spread after {:?}: {:?}", started.elapsed(), holders(&server));
    for (id, metrics, _) in &procs {
        let mut text = String::new();
        for _ in 0..20 {
            text = http_get(*metrics, "/metrics").await.unwrap_or_default();
            if text.contains("calsync_shards_held 4\n") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(text.contains("calsync_shards_held 4\n"), "{id} reports its 4 shards: {text}");
        assert!(text.contains("calsync_shards 12\n"), "{text}");
    }

    // Kill one process mid-run (SIGKILL: no release, its Leases must expire).
    let deadline = Instant::now() + Duration::from_secs(300);
    while synced(&server) < tasks / 5 {
        assert!(Instant::now() < deadline, "no progress: {} synced\n{}", synced(&server), log_of("calsync-shard-0"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (victim, _, mut child) = procs.remove(1);
    let lost = holders(&server).get(&victim).cloned().unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Instant::now();
    let at_kill = synced(&server);
    println!("killed {victim} holding {lost:?} with {at_kill}/{tasks} synced");
    assert!(at_kill < tasks, "the kill must land mid-run");
    let deadline = killed_at + Duration::from_secs(LEASE_SECONDS * 3);
    while !fair(&holders(&server), PROCESSES - 1, 6) {
        assert!(Instant::now() < deadline, "the killed process's shards were not taken over: {:?}", holders(&server));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed_at.elapsed();
    println!("takeover in {takeover:?}: {:?}", holders(&server));
    // Expiry (one lease duration after its last renewal) plus at most one renewal period.
    assert!(takeover <= Duration::from_millis(LEASE_SECONDS * 1000 * 4 / 3 + 1000), "takeover took {takeover:?}");

    // Everything converges: each TaskSync Synced, exactly one event per task.
    let deadline = Instant::now() + Duration::from_secs(600);
    while synced(&server) < tasks {
        assert!(
            Instant::now() < deadline,
            "only {}/{tasks} synced\n{}",
            synced(&server),
            log_of("calsync-shard-0").lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("all {tasks} synced after {:?}", started.elapsed());
    // Let a stray late write land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = events_by_summary(&dav);
    let duplicated: Vec<_> = events.iter().filter(|(_, n)| **n > 1).collect();
    let lost: Vec<usize> = (0..tasks).filter(|t| !events.contains_key(&format!("Task {t}"))).collect();
    assert!(duplicated.is_empty(), "duplicates: {duplicated:?}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(events.values().sum::<usize>(), tasks, "exactly one event per TaskSync");
    let objects: Vec<Value> = server.list(&format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs"));
    assert!(objects.iter().all(|t| t["status"]["eventId"].is_string()), "every TaskSync knows its event");

    // SIGTERM: the survivors exit 0 and release their Leases at once.
    for (id, _, child) in &procs {
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success(), "{id}");
    }
    for (id, _, mut child) in procs {
        let status = child.wait().unwrap();
        let log = log_of(&id);
        assert!(status.success(), "{id} exit {status:?}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    assert!(holders(&server).is_empty(), "all Leases released: {:?}", holders(&server));
}

/// `VmHWM` (peak RSS) and `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field =
        |name: &str| status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse::<u64>().ok();
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Memory of one replica holding all 12 shards of 100,000 TaskSyncs (100 connections, one
/// Radicale calendar each): prints its peak RSS next to the objects' JSON size.
/// `scripts/bench-shard-memory.sh` runs it (TASKS and SAMPLE_SECS override the size and window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of CPU; run by scripts/bench-shard-memory.sh"]
async fn memory_of_one_replica_with_100k_task_syncs() {
    let tasks: usize = std::env::var("TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let sample_secs: u64 = std::env::var("SAMPLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let connections = 100;
    // Radicale must outlive the run: `_dav` (not `_`) keeps it.
    let (_dav, server) = world(connections).await;
    // Stored directly (as the API would, minus admission): 100,000 creates over HTTP would
    // dominate the run without changing what the controller holds.
    let list_path = format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs");
    for t in 0..tasks {
        let mut fixture = task_sync(&format!("t-{t}"), &format!("conn-{}", t % connections), &format!("Task {t}"));
        fixture["spec"]["start"] = json!(format!("2026-03-{:02}T{:02}:00:00Z", 1 + (t / 24) % 28, t % 24));
        as_kubectl_applied(&mut fixture);
        server.insert_raw(&format!("{list_path}/t-{t}"), fixture);
    }
    let port = serve_http(server.clone()).await;
    let logs = tempfile::tempdir().unwrap();
    let metrics = free_port();
    // The default lease duration: a replica this busy must not lose its shards to a late renewal.
    let mut child = spawn_controller(port, "calsync-memory-0", metrics, 15, &logs.path().join("memory.log"));
    let pid = child.id();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    while holders(&server).get("calsync-memory-0").map(Vec::len) != Some(SHARDS as usize) {
        assert!(Instant::now() < deadline, "never held all shards: {:?}", holders(&server));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let held_at = started.elapsed();
    let window = Instant::now() + Duration::from_secs(sample_secs);
    let mut peak_rss = 0;
    while Instant::now() < window {
        if let Some((_, rss)) = rss_kib(pid) {
            peak_rss = peak_rss.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (hwm, rss) = rss_kib(pid).expect("the controller still runs");
    let objects = server.list(&list_path);
    let json_bytes: usize = objects.iter().map(|o| serde_json::to_vec(o).map(|v| v.len()).unwrap_or(0)).sum();
    let synced = objects.iter().filter(|t| is_synced(Some(t))).count();
    child.kill().unwrap();
    child.wait().unwrap();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "controller, {tasks} TaskSyncs / {connections} connections, all {SHARDS} shards held after {held_at:?}; \
         sampled {sample_secs} s: peak RSS {:.1} MiB (VmHWM {:.1} MiB, RSS at end {:.1} MiB); \
         objects' JSON {:.1} MiB; {synced} synced",
        mib(peak_rss),
        mib(hwm),
        mib(rss),
        json_bytes as f64 / (1024.0 * 1024.0)
    );
    assert_eq!(objects.len(), tasks);
}

/// What `kubectl apply` (client-side, the default) leaves on an object in a real API server:
/// the applied manifest in an annotation and a managed-fields entry naming the fields it set.
/// The fake API server keeps no managed fields itself, so the memory fixture adds them.
fn as_kubectl_applied(object: &mut serde_json::Value) {
    fn fields(v: &serde_json::Value) -> serde_json::Value {
        match v.as_object() {
            Some(map) => {
                let mut out = serde_json::Map::from_iter([(".".to_string(), json!({}))]);
                out.extend(map.iter().map(|(k, v)| (format!("f:{k}"), fields(v))));
                serde_json::Value::Object(out)
            }
            None => json!({}),
        }
    }
    let manifest = json!({
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "metadata": { "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"] },
        "spec": object["spec"],
    });
    let spec_fields = fields(&object["spec"]);
    object["metadata"]["annotations"] =
        json!({ "kubectl.kubernetes.io/last-applied-configuration": format!("{manifest}\n") });
    object["metadata"]["managedFields"] = json!([{
        "manager": "kubectl-client-side-apply", "operation": "Update",
        "apiVersion": object["apiVersion"], "time": "2026-03-01T08:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": { "f:annotations": { ".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {} } },
            "f:spec": spec_fields,
        },
    }]);
}

#[test]
fn a_bad_shard_count_stops_start_up_naming_the_variable() {
    for bad in ["0", "257", "twelve"] {
        let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(["controller", "--metrics-addr", "127.0.0.1:0"])
            .env("CALSYNC_SHARDS", bad)
            .env("ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
            .env("KUBECONFIG", "/nonexistent")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(stderr.contains("CALSYNC_SHARDS") && stderr.contains("1 to 256"), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The election rounds one by one, in process against the strict fake API server: fair share,
/// the hand-over delay of a given-back shard, fencing against replicas with another shard count,
/// and release on shutdown.
#[tokio::test]
async fn rounds_share_hand_over_and_fence_another_shard_count() {
    use calsync::controller::{LeaseConfig, ShardElector, Shards};
    let server = FakeApiServer::new();
    let elector = |id: &str, count: u32| {
        let shards = Shards::new(count);
        let config = LeaseConfig {
            namespace: NS.into(),
            name: "lease".into(),
            identity: id.into(),
            duration: Duration::from_secs(4),
        };
        (ShardElector::new(server.client(), config, shards.clone()), shards)
    };
    let set = |v: &[u32]| v.iter().copied().collect::<std::collections::BTreeSet<u32>>();
    let (a, a_shards) = elector("a", 4);
    let (b, b_shards) = elector("b", 4);

    // Alone, a takes everything.
    assert_eq!(a.round().await.unwrap(), set(&[0, 1, 2, 3]));
    assert_eq!(a_shards.held(), vec![0, 1, 2, 3]);
    // b is counted (presence Lease) but finds nothing free.
    assert!(b.round().await.unwrap().is_empty());
    // a gives back its surplus at once, and stops writing for it.
    assert_eq!(a.round().await.unwrap(), set(&[0, 1]));
    assert_eq!(a_shards.held(), vec![0, 1]);
    // Given back is not yet free: in-flight reconciles on a get the hand-over time.
    assert!(b.round().await.unwrap().is_empty(), "claimed during the hand-over");
    let given_back = Instant::now();
    // Both keep renewing (a replica that stops is dead, and its shards go to the other).
    while b_shards.held().is_empty() {
        assert!(given_back.elapsed() < Duration::from_secs(10), "b never took the given-back shards");
        tokio::time::sleep(Duration::from_millis(250)).await;
        a.round().await.unwrap();
        b.round().await.unwrap();
    }
    let handed_over = given_back.elapsed();
    assert!(handed_over >= calsync::controller::shards::HANDOVER - Duration::from_millis(200), "{handed_over:?}");
    assert_eq!(b_shards.held(), vec![2, 3]);
    assert_eq!(a.round().await.unwrap(), set(&[0, 1]), "a keeps its fair share");
    let lease = server.get(&format!("{}/lease-shard-2", leases_path(NS))).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["metadata"]["labels"]["calendar.getitdone.app/shards"], "4");

    // A replica with another shard count hashes differently: it claims nothing while they hold.
    let (c, c_shards) = elector("c", 8);
    assert!(c.round().await.unwrap().is_empty());
    assert!(c_shards.held().is_empty());
    // Shutdown releases at once (no waiting for expiry) and drops the presence Lease.
    a.release().await;
    b.release().await;
    assert!(a_shards.held().is_empty() && b_shards.held().is_empty());
    assert!(
        server
            .get(&format!("{}/lease-replica-{:016x}", leases_path(NS), calsync::controller::shards::fnv1a(b"a")))
            .is_none()
    );
    assert_eq!(c.round().await.unwrap().len(), 8, "free after the release");
}
