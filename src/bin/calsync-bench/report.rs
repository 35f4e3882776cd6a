//! How scenarios print: one line per figure with its ideal and the ratio, the build profile, and
//! the process measurements figures are made of (CPU time, RSS, percentiles).
//!
//! Owns: output format and /proc readings. Must not touch: what a scenario measures.

use std::time::Duration;

/// `release` or `debug`: bench figures from a debug build are not worth comparing.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) { "debug (figures NOT representative; use --release)" } else { "release" }
}

/// Print the scenario heading.
pub fn heading(name: &str, setup: &str) {
    println!("== {name} ==");
    println!("build: {}; {setup}", build_profile());
}

/// A figure, its ideal and measured/ideal. `unit` follows the numbers.
pub fn figure(what: &str, measured: f64, ideal: f64, unit: &str) {
    let ratio = if ideal > 0.0 { format!("{:.2}", measured / ideal) } else { "n/a".into() };
    println!("{what:<44} measured {measured:>12.3} {unit:<8} ideal {ideal:>12.3} {unit:<8} ratio {ratio}");
}

/// A count whose goal is a fixed number (0 duplicates, 0 lost).
pub fn count(what: &str, measured: u64, goal: u64) {
    let verdict = if measured == goal { "ok" } else { "FAIL" };
    println!("{what:<44} measured {measured:>12} {:<8} goal  {goal:>12} {:<8} {verdict}", "", "");
}

/// A count with a goal that is reported but does not fail the run (e.g. 429s provoked).
pub fn soft_count(what: &str, measured: u64, goal: u64) {
    let verdict = if measured == goal { "ok" } else { "missed (reported, not a failure)" };
    println!("{what:<44} measured {measured:>12} {:<8} goal  {goal:>12} {:<8} {verdict}", "", "");
}

/// A figure with no meaningful ideal (context for the others).
pub fn info(what: &str, value: impl std::fmt::Display) {
    println!("{what:<44} {value}");
}

/// User + system CPU time of this process so far (from /proc/self/stat, USER_HZ = 100 on Linux).
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// (VmRSS, VmHWM) of a process in bytes, from /proc/PID/status.
pub fn rss_of(pid: &str) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (0, 0) };
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Percentile `p` (0..=100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn reads_own_cpu_and_memory() {
        let start = cpu_time();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time() > start, "60 ms of spinning shows up as CPU time");
        let (rss, hwm) = rss_of("self");
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
    }
}
