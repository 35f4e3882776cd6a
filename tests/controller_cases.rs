//! Controller behaviour beyond the happy path: a missing connection, a malformed object, and
//! two replicas sharing one Lease.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/kube_harness.rs"]
mod support;

use std::time::Duration;

use calsync::providers::memory::{MemoryCalendar, Op};
use calsync::resources::{CalendarConnection, TaskSync};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_connection_is_reported_and_waited_for() {
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    let ts: TaskSync = create(&server, task_sync("t1", "later", "Waits")).await;
    let path = task_sync_path(NS, "t1");
    let h = Harness::start(&server, &calendar);
    eventually(15, "Synced=False ConnectionNotFound", || {
        server
            .get(&path)
            .and_then(|o| {
                condition(&o, "Synced").map(|c| c["status"] == "False" && c["reason"] == "ConnectionNotFound")
            })
            .unwrap_or(false)
    })
    .await;
    assert!(calendar.calls().is_empty(), "nothing is written while the connection is missing");

    // The connection appears and becomes Ready: the TaskSync is requeued by the connection
    // watch (not by its 60 s wait requeue) and syncs.
    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("later", "creds")).await;
    eventually(10, "synced once the connection is Ready", || is_synced(server.get(&path).as_ref())).await;
    assert_eq!(calendar.events_for_uid(ts.metadata.uid.as_deref().unwrap()).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_does_not_stop_the_watch() {
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    // Stored before a schema change, say: spec.title is a number now.
    server.insert_raw(
        &format!("/apis/calendar.getitdone.app/v1alpha1/namespaces/{NS}/tasksyncs"),
        json!({"apiVersion": "calendar.getitdone.app/v1alpha1", "kind": "TaskSync",
               "metadata": {"name": "broken"}, "spec": {"title": 42}}),
    );
    let h = Harness::start(&server, &calendar);
    let ok: TaskSync = create(&server, task_sync("fine", "cal", "Still synced")).await;
    eventually(15, "the valid TaskSync syncs", || is_synced(server.get(&task_sync_path(NS, "fine")).as_ref())).await;
    assert_eq!(calendar.events_for_uid(ok.metadata.uid.as_deref().unwrap()).len(), 1);
    eventually(5, "a Warning InvalidObject event about the broken one", || {
        server
            .list(&events_path(NS))
            .iter()
            .any(|e| e["reason"] == "InvalidObject" && e["regarding"]["name"] == "broken" && e["type"] == "Warning")
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_lease_never_both_write() {
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    let lease = Duration::from_secs(3);
    let a = Harness::start_elected(&server, &calendar, "replica-a", lease);
    let b = Harness::start_elected(&server, &calendar, "replica-b", lease);
    let mut uids = vec![];
    for i in 0..4 {
        let ts: TaskSync = create(&server, task_sync(&format!("t{i}"), "cal", &format!("Task {i}"))).await;
        uids.push(ts.metadata.uid.unwrap());
    }
    eventually(20, "all synced", || {
        (0..4).all(|i| is_synced(server.get(&task_sync_path(NS, &format!("t{i}"))).as_ref()))
    })
    .await;
    assert!(!(a.leadership.is_leader() && b.leadership.is_leader()), "never two leaders");
    let (wa, wb) = (a.calendar_writes(), b.calendar_writes());
    assert!(wa == 0 || wb == 0, "only the lease holder writes to the calendar: a={wa} b={wb}");
    assert_eq!(calendar.count(Op::Create), 4, "one create per TaskSync, no double writes");
    for uid in &uids {
        assert_eq!(calendar.events_for_uid(uid).len(), 1);
    }
    let lease_obj = server.get(&format!("{}/calsync-controller", leases_path(NS))).expect("the Lease exists");
    let holder = lease_obj["spec"]["holderIdentity"].as_str().unwrap().to_string();

    // The leader stops (releases the lease): the other takes over and handles new work.
    let (leader, follower, follower_name) =
        if holder == "replica-a" { (a, b, "replica-b") } else { (b, a, "replica-a") };
    let leader_writes = leader.calendar_writes();
    leader.stop().await;
    let released = server.get(&format!("{}/calsync-controller", leases_path(NS))).unwrap();
    assert!(
        released["spec"]["holderIdentity"].is_null() || released["spec"]["holderIdentity"] == follower_name,
        "graceful stop releases the lease at once: {released}"
    );
    eventually(10, "the follower becomes leader", || follower.leadership.is_leader()).await;
    let ts: TaskSync = create(&server, task_sync("after", "cal", "After failover")).await;
    eventually(15, "synced by the new leader", || is_synced(server.get(&task_sync_path(NS, "after")).as_ref())).await;
    assert_eq!(calendar.events_for_uid(ts.metadata.uid.as_deref().unwrap()).len(), 1);
    assert!(follower.calendar_writes() >= 1, "{follower_name} wrote after taking over");
    assert!(leader_writes > 0);
    let lease_obj = server.get(&format!("{}/calsync-controller", leases_path(NS))).unwrap();
    assert_eq!(lease_obj["spec"]["holderIdentity"], follower_name);
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_stops_calendar_writes() {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, PostParams};
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    let a = Harness::start_elected(&server, &calendar, "replica-a", Duration::from_secs(3));
    eventually(10, "leader", || a.leadership.is_leader()).await;

    // Another holder takes the lease (e.g. after a long pause of this replica).
    let leases: Api<Lease> = Api::namespaced(server.client(), NS);
    let mut lease = leases.get("calsync-controller").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now()));
    spec.lease_duration_seconds = Some(60);
    leases.replace("calsync-controller", &PostParams::default(), &lease).await.unwrap();

    eventually(3, "no longer leader after the next renewal attempt", || !a.leadership.is_leader()).await;
    create::<TaskSync>(&server, task_sync("t1", "cal", "Not now")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calendar.count(Op::Create), 0, "a replica without the lease starts no calendar write");
    assert_eq!(a.calendar_writes(), 0);
    a.stop().await;
    let lease = leases.get("calsync-controller").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("intruder"),
        "stopping does not release someone else's lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_not_ready_is_reported_and_nothing_is_written() {
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    let mut bad = secret("creds");
    bad["data"]["password"] = json!("d3Jvbmc="); // "wrong"
    create::<Secret>(&server, bad).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    create::<TaskSync>(&server, task_sync("t1", "cal", "Blocked")).await;
    let h = Harness::start(&server, &calendar);
    let path = task_sync_path(NS, "t1");
    eventually(15, "TaskSync says the connection needs a reconnect", || {
        server
            .get(&path)
            .and_then(|o| condition(&o, "Synced").map(|c| c["status"] == "False" && c["reason"] == "ReconnectRequired"))
            .unwrap_or(false)
    })
    .await;
    let conn = server.get(&connection_path(NS, "cal")).unwrap();
    assert!(condition(&conn, "Ready").is_some_and(|c| c["status"] == "False"), "{conn}");
    assert_eq!(calendar.count(Op::Create), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_connection_first_never_leaves_a_finalizer_stuck() {
    use calsync::resources::TaskSync;
    use kube::api::{Api, DeleteParams};
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    create::<TaskSync>(&server, task_sync("t1", "cal", "Outlives its connection")).await;
    let h = Harness::start(&server, &calendar);
    let path = task_sync_path(NS, "t1");
    eventually(15, "synced", || is_synced(server.get(&path).as_ref())).await;

    let conns: Api<CalendarConnection> = Api::namespaced(server.client(), NS);
    conns.delete("cal", &DeleteParams::default()).await.unwrap();
    eventually(10, "the TaskSync learns its connection is gone (from the connection watch)", || {
        server
            .get(&path)
            .and_then(|o| condition(&o, "Synced").map(|c| c["reason"] == "ConnectionNotFound"))
            .unwrap_or(false)
    })
    .await;
    let tss: Api<TaskSync> = Api::namespaced(server.client(), NS);
    tss.delete("t1", &DeleteParams::default()).await.unwrap();
    eventually(15, "the TaskSync is deleted, finalizer released", || server.get(&path).is_none()).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_limits_what_is_reconciled() {
    use kube::api::{Api, PostParams};
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    create::<Secret>(&server, secret("creds")).await;
    create::<CalendarConnection>(&server, connection("cal", "creds")).await;
    // The same objects in another namespace.
    let other = |mut v: serde_json::Value| {
        v["metadata"]["namespace"] = json!("elsewhere");
        v
    };
    let secrets: Api<Secret> = Api::namespaced(server.client(), "elsewhere");
    secrets.create(&PostParams::default(), &serde_json::from_value(other(secret("creds"))).unwrap()).await.unwrap();
    let conns: Api<CalendarConnection> = Api::namespaced(server.client(), "elsewhere");
    conns
        .create(&PostParams::default(), &serde_json::from_value(other(connection("cal", "creds"))).unwrap())
        .await
        .unwrap();
    let tss: Api<TaskSync> = Api::namespaced(server.client(), "elsewhere");
    tss.create(&PostParams::default(), &serde_json::from_value(other(task_sync("t1", "cal", "Not mine"))).unwrap())
        .await
        .unwrap();
    create::<TaskSync>(&server, task_sync("t1", "cal", "Mine")).await;

    server.clear_requests();
    let h = Harness::start_in(&server, &calendar, NS);
    eventually(15, "synced in the watched namespace", || is_synced(server.get(&task_sync_path(NS, "t1")).as_ref()))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let theirs = server.get(&task_sync_path("elsewhere", "t1")).unwrap();
    assert!(theirs.get("status").is_none() && theirs["metadata"]["finalizers"].is_null(), "untouched: {theirs}");
    assert!(server.requests().iter().all(|r| !r.path.contains("/namespaces/elsewhere/") || !r.is_write()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_only_task_settles_once_and_the_controller_leaves_it_alone() {
    let server = FakeApiServer::new();
    let calendar = MemoryCalendar::new();
    let mut object = task_sync("feed1", "ics-feed", "Served by the ICS feed");
    object["metadata"]["labels"] = json!({"calendar.getitdone.app/feed-only": "true"});
    create::<TaskSync>(&server, object).await;
    let path = task_sync_path(NS, "feed1");
    let h = Harness::start(&server, &calendar);
    eventually(15, "Synced=True FeedOnly", || {
        server
            .get(&path)
            .and_then(|o| condition(&o, "Synced").map(|c| c["status"] == "True" && c["reason"] == "FeedOnly"))
            .unwrap_or(false)
    })
    .await;
    // Watch the requests about it for a while: none after it settled (no reconcile loop: no
    // reads, no writes, no finalizer, no Warning), and no calendar call at all.
    let writes = || server.requests().iter().filter(|r| !r.is_watch() && r.path.starts_with(&path)).count();
    let settled = writes();
    assert!(settled >= 1, "the status write is seen");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(), settled, "{:?}", server.requests().iter().map(|r| (&r.method, &r.path)).collect::<Vec<_>>());
    let obj = server.get(&path).unwrap();
    assert!(obj["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty()), "{obj}");
    assert!(calendar.calls().is_empty());
    assert!(!server.list(&events_path(NS)).iter().any(|e| e["type"] == "Warning"), "no Warning events");
    h.stop().await;
}
