//! Process-wide live-sync counters and their Prometheus text (both binaries render them).
//!
//! Owns: counter names and labels. Must not touch: when they are bumped.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters of live sync, rendered as Prometheus text by both binaries.
#[derive(Default)]
pub struct LiveStats {
    pub signals: AtomicU64,
    pub polls: AtomicU64,
    pub probes_unchanged: AtomicU64,
    pub listings: AtomicU64,
    pub full_listings: AtomicU64,
    pub edits_found: AtomicU64,
    pub external_changes: AtomicU64,
    pub watches_created: AtomicU64,
    pub watches_renewed: AtomicU64,
    pub watch_failures: AtomicU64,
    pub watches_stopped: AtomicU64,
    pub watches_active: AtomicU64,
}

static STATS: OnceLock<LiveStats> = OnceLock::new();

/// The process's live-sync counters.
pub fn stats() -> &'static LiveStats {
    STATS.get_or_init(LiveStats::default)
}

impl LiveStats {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Text exposition of the counters: OpenMetrics (`openmetrics`, family names without
    /// `_total`, as the REST API's registry writes) or Prometheus 0.0.4 (the controller's).
    pub fn render(&self, openmetrics: bool) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, lines: &[(&str, u64)]| {
            let family = if openmetrics { format!("calsync_{name}") } else { format!("calsync_{name}_total") };
            out.push_str(&format!("# HELP {family} {help}\n# TYPE {family} counter\n"));
            for (labels, v) in lines {
                out.push_str(&format!("calsync_{name}_total{labels} {v}\n"));
            }
        };
        counter(
            "change_syncs",
            "Change syncs of a calendar, by what started them.",
            &[("{trigger=\"signal\"}", g(&self.signals)), ("{trigger=\"poll\"}", g(&self.polls))],
        );
        counter(
            "change_listings",
            "Calendar listings made by change syncs (probe answers that saved one are counted apart).",
            &[
                ("{kind=\"incremental\"}", g(&self.listings) - g(&self.full_listings).min(g(&self.listings))),
                ("{kind=\"full\"}", g(&self.full_listings)),
                ("{kind=\"skipped_by_probe\"}", g(&self.probes_unchanged)),
            ],
        );
        counter(
            "calendar_changes",
            "Changes found in calendars: edits/deletions of calsync's events, and other events.",
            &[("{kind=\"ours\"}", g(&self.edits_found)), ("{kind=\"external\"}", g(&self.external_changes))],
        );
        counter(
            "push_watch_operations",
            "Push channel/subscription operations.",
            &[
                ("{operation=\"create\"}", g(&self.watches_created)),
                ("{operation=\"renew\"}", g(&self.watches_renewed)),
                ("{operation=\"stop\"}", g(&self.watches_stopped)),
                ("{operation=\"failed\"}", g(&self.watch_failures)),
            ],
        );
        out.push_str("# HELP calsync_push_watches_active Live push channels/subscriptions held by this process.\n");
        out.push_str("# TYPE calsync_push_watches_active gauge\n");
        out.push_str(&format!("calsync_push_watches_active {}\n", g(&self.watches_active)));
        out
    }
}
