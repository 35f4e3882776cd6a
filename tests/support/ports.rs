//! Loopback ports for servers a test starts in another process (calsync, Radicale, PostgreSQL).
//!
//! Binding port 0 and releasing it races: the kernel hands the same ephemeral port to the next
//! `bind(:0)` or outgoing connection anywhere on the machine before the child binds it (CI saw
//! "Address already in use" and a controller that never started). Ports below the ephemeral range
//! (32768–60999 on Linux) are never handed out that way, so a random one that binds now stays
//! free unless another test picks the very same number.

#![allow(dead_code)]

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;

/// A loopback port that is free now, outside the kernel's ephemeral range when possible.
pub fn free_port() -> u16 {
    let seed = RandomState::new();
    for i in 0u64..500 {
        let port = 20_000 + (seed.hash_one(i) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}
