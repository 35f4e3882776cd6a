//! Process-wide malloc tuning, applied first thing in each binary's `main`.
//!
//! Why: glibc's malloc gives threads up to 8 arenas per core, each with its own free lists, and
//! calsync's threads (tokio workers, the blocking pool that runs store reads, the store's writer)
//! spread their allocations over all of them. With 100,000 TaskSyncs the memory bench held
//! 301 MiB with glibc's default and 212 MiB with 4 arenas, syncing about as many (60,600 and
//! 55,200 in 47 s; 2 arenas: 197 MiB and 43,800, where the arenas' locks begin to cost).
//! mimalloc, tried in their place, held more (348 MiB).
//!
//! Owns: malloc's parameters. Must not touch: anything else.

/// Arenas at most, unless the operator set `MALLOC_ARENA_MAX` (glibc reads it itself).
pub const ARENAS: i32 = 4;

/// Cap glibc's malloc arenas at `ARENAS`. A no-op on other C libraries and when
/// `MALLOC_ARENA_MAX` is set.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a malloc parameter; it takes malloc's own lock, so it is
        // sound at any time, and here it runs before `main` starts any other thread. Its return
        // value (1 on success) needs no handling: on failure glibc keeps its default.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
