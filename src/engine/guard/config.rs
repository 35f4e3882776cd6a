//! Thresholds of the mass-deletion guard, from the environment.

use std::time::Duration;

/// When the guard holds deletions: more than `max` deletions of one connection AND more than
/// `ratio` of its events within `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardConfig {
    /// `CALSYNC_DELETION_GUARD_MAX`; 0 turns the guard off.
    pub max: u32,
    /// `CALSYNC_DELETION_GUARD_RATIO`, 0 to 1; 0 leaves only `max`.
    pub ratio: f64,
    /// `CALSYNC_DELETION_GUARD_WINDOW_SECONDS`; 0 turns the guard off.
    pub window: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { max: 50, ratio: 0.5, window: Duration::from_secs(600) }
    }
}

impl GuardConfig {
    /// No guard: every deletion proceeds.
    pub fn off() -> Self {
        GuardConfig { max: 0, ..GuardConfig::default() }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0 && !self.window.is_zero()
    }

    /// Whether the deletion that would make `deleted` deletions in the window, of a connection
    /// with `total` events (those deleted in the window included), must wait for a decision.
    pub fn trips(&self, deleted: u32, total: u32) -> bool {
        self.enabled() && deleted > self.max && f64::from(deleted) > self.ratio * f64::from(total)
    }

    /// The defaults, changed by the `CALSYNC_DELETION_GUARD_*` variables `lookup` finds. An
    /// invalid value is an error naming the variable (start-up fails rather than run with a
    /// guard other than the one asked for).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<GuardConfig, String> {
        let mut c = GuardConfig::default();
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if let Some(v) = get("CALSYNC_DELETION_GUARD_MAX") {
            c.max = v.parse().map_err(|_| {
                format!(
                    "CALSYNC_DELETION_GUARD_MAX must be a whole number of deletions (0 turns the guard off), got {v:?}"
                )
            })?;
        }
        if let Some(v) = get("CALSYNC_DELETION_GUARD_RATIO") {
            c.ratio = match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => return Err(format!("CALSYNC_DELETION_GUARD_RATIO must be a number from 0 to 1, got {v:?}")),
            };
        }
        if let Some(v) = get("CALSYNC_DELETION_GUARD_WINDOW_SECONDS") {
            c.window = Duration::from_secs(v.parse().map_err(|_| {
                format!(
                    "CALSYNC_DELETION_GUARD_WINDOW_SECONDS must be a whole number of seconds (0 turns the guard off), got {v:?}"
                )
            })?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<GuardConfig, String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        GuardConfig::from_lookup(&move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(from(&[]).unwrap(), GuardConfig::default());
        let c = from(&[
            ("CALSYNC_DELETION_GUARD_MAX", "10"),
            ("CALSYNC_DELETION_GUARD_RATIO", "0.25"),
            ("CALSYNC_DELETION_GUARD_WINDOW_SECONDS", " 60 "),
        ])
        .unwrap();
        assert_eq!(c, GuardConfig { max: 10, ratio: 0.25, window: Duration::from_secs(60) });
        assert!(!from(&[("CALSYNC_DELETION_GUARD_MAX", "0")]).unwrap().enabled());
        assert!(!from(&[("CALSYNC_DELETION_GUARD_WINDOW_SECONDS", "0")]).unwrap().enabled());
        assert!(from(&[("CALSYNC_DELETION_GUARD_RATIO", "0")]).unwrap().enabled(), "ratio 0 leaves the count rule");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (name, value) in [
            ("CALSYNC_DELETION_GUARD_MAX", "-1"),
            ("CALSYNC_DELETION_GUARD_MAX", "fifty"),
            ("CALSYNC_DELETION_GUARD_RATIO", "1.5"),
            ("CALSYNC_DELETION_GUARD_RATIO", "NaN"),
            ("CALSYNC_DELETION_GUARD_WINDOW_SECONDS", "10m"),
        ] {
            let e = from(&[(name, value)]).unwrap_err();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn both_rules_must_be_exceeded() {
        let c = GuardConfig::default();
        assert!(!c.trips(50, 60), "50 is not more than 50");
        assert!(c.trips(51, 60));
        assert!(!c.trips(51, 200), "51 of 200 is not more than half");
        assert!(!c.trips(100, 200));
        assert!(c.trips(101, 200));
        assert!(!GuardConfig::off().trips(1000, 1000));
        let count_only = GuardConfig { ratio: 0.0, ..GuardConfig::default() };
        assert!(count_only.trips(51, 10_000));
    }
}
