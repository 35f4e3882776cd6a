//! What an operator runs and what the store survives, on a real PostgreSQL: the binary never
//! shows the database password, `calsync migrate` from SQLite, the server dropping every
//! connection, and a pg_dump restored into a working database.
//!
//! Owns: those tests. Helpers (`ENV`, `fresh_db`, fixtures) are the parent's.

use super::*;

/// The binary: `--help` never shows DATABASE_URL's value, and a wrong password makes a command
/// exit non-zero within seconds naming the host, never the password.
#[tokio::test]
async fn the_binary_never_shows_the_database_password() {
    let _env = ENV.lock().await;
    let pg = tokio::task::spawn_blocking(postgres::shared).await.unwrap();
    let secret = "bin-secret-pw-7d2e";
    let run = |args: &[&str], url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(args)
            .env("DATABASE_URL", url)
            .env("ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    };
    let help = run(&["standalone", "--help"], format!("postgresql://calsync:{secret}@db.example/getitdone"));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("DATABASE_URL") && !text.contains(secret), "{text}");
    let started = Instant::now();
    let url = format!("postgresql://postgres:{secret}@127.0.0.1:{}/postgres?sslmode=disable", pg.port);
    let out = tokio::task::spawn_blocking(move || run(&["get", "tasksyncs"], url)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.contains("127.0.0.1") && err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(secret), "{err}");
}

/// Run the binary with `DATABASE_URL=url` and the test key; its stdout (it must succeed).
fn cli(args: Vec<String>, url: String) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("ENCRYPTION_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `calsync migrate`: a populated SQLite database copied into PostgreSQL gives the same
/// `calsync get` output, credentials that open with the same key, and a second run copies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_sqlite_database_once_with_counts() {
    let _env = ENV.lock().await;
    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let keys = || Keyring::new(Key::from_base64(KEY).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("calsync.db").display());
    let sqlite = calsync::standalone::SqliteObjects::open(&sqlite_url, keys()).await.unwrap();
    sqlite.apply_connection(&conn("c")).await.unwrap();
    let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("migrated-pw") };
    let r = SecretRef { name: "c-creds".into(), key: None };
    sqlite.write_credentials("default", &r, &creds, &ObjectKey::connection("default", "c")).await.unwrap();
    for name in ["t1", "t2"] {
        sqlite.apply_task_sync(&task(name)).await.unwrap();
        let st = calsync::resources::TaskSyncStatus { event_id: Some(format!("ev-{name}")), ..Default::default() };
        sqlite.patch_task_sync_status("default", name, &st).await.unwrap();
    }
    sqlite.add_finalizer(&ObjectKey::task_sync("default", "t1"), "calendar.getitdone.app/cleanup").await.unwrap();
    let ev = ObjectEvent {
        type_: EventType::Normal,
        reason: "EventCreated".into(),
        note: "n".into(),
        action: "Create".into(),
    };
    sqlite.publish_event(&ObjectKey::task_sync("default", "t1"), &ev).await.unwrap();
    sqlite.outbox_push(vec![OutboxMessage { id: "msg_1".into(), body: "{}".into() }]).await.unwrap();
    let last_rv = rv(&sqlite.get_task_sync("default", "t2").await.unwrap().unwrap());
    drop(sqlite);

    let (pg_url, _) = fresh_db().await;
    let migrate = {
        let (from, to) = (sqlite_url.clone(), pg_url.clone());
        move || cli(vec!["migrate".into(), "--from".into(), from.clone()], to.clone())
    };
    let first = tokio::task::spawn_blocking(migrate.clone()).await.unwrap();
    assert!(first.contains("objects: 3 copied, 0 already present"), "{first}");
    assert!(first.contains("secrets: 1 copied") && first.contains("webhook_outbox: 1 copied"), "{first}");
    let again = tokio::task::spawn_blocking(migrate).await.unwrap();
    assert!(again.contains("objects: 0 copied, 3 already present"), "{again}");
    assert!(again.contains("secrets: 0 copied, 1 already present"), "{again}");

    for what in ["tasksyncs", "calendarconnections"] {
        let args = || vec!["get".to_string(), what.to_string(), "-o".into(), "yaml".into()];
        let (a, b) = (args(), args());
        let (s, p) = (sqlite_url.clone(), pg_url.clone());
        let on_sqlite = tokio::task::spawn_blocking(move || cli(a, s)).await.unwrap();
        let on_pg = tokio::task::spawn_blocking(move || cli(b, p)).await.unwrap();
        assert!(on_sqlite.contains("resourceVersion"), "{on_sqlite}");
        assert_eq!(on_sqlite, on_pg, "calsync get {what} differs");
    }
    let pg = PgObjects::open(&pg_url, keys()).await.unwrap();
    assert_eq!(pg.read_credentials("default", &r).await.unwrap(), Some(creds), "still sealed, same key");
    assert!(pg.find_task_sync_by_event("default", "ev-t2").await.unwrap().is_some());
    assert_eq!(pg.events(None, 10).await.unwrap().len(), 1);
    assert_eq!(pg.outbox_depth().await.unwrap().0, 1);
    assert!(rv(&pg.apply_task_sync(&task("t3")).await.unwrap()) > last_rv, "resourceVersions continue");
    pg.outbox_push(vec![OutboxMessage { id: "msg_2".into(), body: "{}".into() }]).await.unwrap();
    assert_eq!(pg.outbox_depth().await.unwrap().0, 2, "outbox sequence continues after the copied rows");
}

/// Every connection of the store killed by the server (a failover, a restart, an idle reaper):
/// nothing half-written, the next calls work on new connections, and the LISTEN connection
/// comes back so other processes' writes are notified again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_when_the_server_drops_its_connections() {
    let _env = ENV.lock().await;
    let (url, db) = fresh_db().await;
    let a = PgObjects::open(&url, keyring()).await.unwrap();
    let b = PgObjects::open(&url, keyring()).await.unwrap();
    a.apply_task_sync(&task("before")).await.unwrap();
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    let killed = tokio::task::spawn_blocking(move || postgres::shared().psql("postgres", &sql)).await.unwrap();
    assert!(killed.parse::<u32>().unwrap() >= 2, "killed {killed} connections");
    // A call may fail once as Unavailable (the engine retries those); it never half-writes.
    let mut written = None;
    for _ in 0..20 {
        match a.apply_task_sync(&task("after")).await {
            Ok(t) => {
                written = Some(t);
                break;
            }
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(written.is_some(), "the store did not recover");
    assert!(a.get_task_sync("default", "before").await.unwrap().is_some());
    let mut rx = a.subscribe();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.set_annotations(
            &ObjectKey::task_sync("default", "after"),
            &[("n".to_string(), format!("{:?}", Instant::now()))].into(),
        )
        .await
        .unwrap();
        if let Ok(Ok(key)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            assert_eq!(key, ObjectKey::task_sync("default", "after"));
            break;
        }
        assert!(Instant::now() < deadline, "LISTEN did not come back");
    }
}

/// Backups: `pg_dump` of the database restored into another one is a working calsync database
/// (objects, sealed credentials under the same key, sequences that continue).
#[tokio::test]
async fn a_pg_dump_restores_into_a_working_database() {
    let _env = ENV.lock().await;
    let (url, db) = fresh_db().await;
    let keys = keyring();
    let store = PgObjects::open(&url, keys.clone()).await.unwrap();
    let c = store.apply_connection(&conn("c")).await.unwrap();
    let creds = Credentials::Basic { username: "u".into(), password: SecretString::from("backed-up-pw") };
    let r = SecretRef { name: "c-creds".into(), key: None };
    store.write_credentials("default", &r, &creds, &ObjectKey::connection("default", "c")).await.unwrap();
    drop(store);
    let restored = tokio::task::spawn_blocking(move || {
        let pg = postgres::shared();
        let dump = tempfile::NamedTempFile::new().unwrap();
        let port = pg.port.to_string();
        let tool = |name: &str| std::process::Command::new(postgres::bin_dir().join(name));
        let out = tool("pg_dump")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", postgres::USER, "-Fc", "-f"])
            .arg(dump.path())
            .arg(&db)
            .env("PGPASSWORD", pg.password())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        let target = pg.create_database();
        let out = tool("pg_restore")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", postgres::USER, "--no-owner", "-d", &target])
            .arg(dump.path())
            .env("PGPASSWORD", pg.password())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
        pg.url_of(&target)
    })
    .await
    .unwrap();
    let store = PgObjects::open(&restored, keys).await.unwrap();
    let back = store.get_connection("default", "c").await.unwrap().unwrap();
    assert_eq!((&back.metadata.uid, &back.metadata.resource_version), (&c.metadata.uid, &c.metadata.resource_version));
    assert_eq!(store.read_credentials("default", &r).await.unwrap(), Some(creds));
    assert!(rv(&store.apply_task_sync(&task("t")).await.unwrap()) > rv(&back), "the sequence was restored too");
}
