use super::*;
use crate::providers::gate::WriteGate;
use futures::FutureExt;

#[test]
fn fnv1a_matches_the_published_vectors() {
    // FNV-1a 64 test vectors (draft-eastlake-fnv): a hash that changed would move every
    // connection to another shard on upgrade.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn a_connection_always_lands_on_the_same_shard_and_connections_spread() {
    assert_eq!(shard_of("ns", "alice", 12), shard_of("ns", "alice", 12));
    assert_eq!(shard_of("ns", "alice", 1), 0);
    // The namespace is part of the key: the same name elsewhere is another connection.
    let spread: Vec<u32> = (0..64).map(|i| shard_of(&format!("ns-{i}"), "c", 12)).collect();
    assert!(spread.iter().collect::<BTreeSet<_>>().len() > 8, "{spread:?}");
    let mut per_shard = [0u32; 12];
    for i in 0..12_000 {
        per_shard[shard_of("users", &format!("conn-{i}"), 12) as usize] += 1;
    }
    // 1,000 expected per shard; a hash that clumps would starve some replicas.
    assert!(per_shard.iter().all(|n| (850..=1150).contains(n)), "{per_shard:?}");
}

#[test]
fn fair_share_rounds_up() {
    assert_eq!(fair_share(12, 3), 4);
    assert_eq!(fair_share(12, 5), 3);
    assert_eq!(fair_share(12, 0), 12, "a replica always counts itself");
    assert_eq!(fair_share(1, 3), 1);
    assert_eq!(fair_share(256, 1), 256);
}

#[test]
fn shard_count_is_validated() {
    assert_eq!(parse_shards("1").unwrap(), 1);
    assert_eq!(parse_shards(" 256 ").unwrap(), 256);
    for bad in ["0", "257", "-1", "x", "", "1.5"] {
        let e = parse_shards(bad).unwrap_err().to_string();
        assert!(e.contains("CALSYNC_SHARDS"), "{e}");
    }
}

#[test]
fn writes_need_a_valid_shard_and_reconciles_the_connections_own() {
    let shards = Shards::new(4);
    assert!(shards.held().is_empty());
    assert!(shards.refuse("ns/alice").is_some(), "nothing held: no write");
    let alice = shard_of("ns", "alice", 4);
    shards.shard(alice).set(Some(Instant::now() + Duration::from_secs(60)));
    assert!(shards.refuse("ns/alice").is_none());
    assert!(shards.owns_connection("ns", "alice"));
    let other = (0..100).map(|i| format!("c{i}")).find(|c| shard_of("ns", c, 4) != alice).unwrap();
    assert!(!shards.owns_connection("ns", &other), "another shard's connection is not reconciled here");
    assert!(
        shards.refuse(&format!("ns/{other}")).is_none(),
        "but a TaskSync of a held shard may write through it (moving between its user's connections)"
    );
    // A lapsed deadline refuses at once, before any renewal attempt notices.
    shards.shard(alice).set(Some(Instant::now()));
    assert!(shards.refuse("ns/alice").is_some());
    assert_eq!(Shards::all(3).held(), vec![0, 1, 2]);
}

#[test]
fn gains_tick_the_subscribers() {
    let shards = Shards::new(2);
    let mut rx = shards.gains();
    shards.gained.send_modify(|n| *n += 1);
    assert!(rx.next().now_or_never().is_some());
    // From a single Lease: its gains are the Leadership's own.
    let single = Shards::from(Leadership::follower());
    let mut rx = single.gains();
    assert!(rx.next().now_or_never().is_none());
    single.shard(0).set(Some(Instant::now() + Duration::from_secs(60)));
    assert!(rx.next().now_or_never().is_some());
}
