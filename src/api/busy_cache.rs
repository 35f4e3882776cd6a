//! The busy-time cache `suggest-times` reads through: the engine's (`engine::busy`), one type
//! for both, so the TTL and the invalidation rules cannot drift apart.
//!
//! Owns: nothing of its own (a re-export). Must not touch: providers or objects.

pub use crate::engine::busy::{BUSY_TTL, BusyCache, BusyKey};
