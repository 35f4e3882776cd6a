//! A calendar of calsync's own ("Get It Done!"), created in the account once when a connection
//! asks for `calendarId: auto` (issue 16), and the rule that keeps it to one.
//!
//! Owns: the calendar's name and marker, and `ensure`, the find-or-create-then-converge
//! algorithm every provider shares. Must not touch: HTTP (each provider implements the three
//! `Provider` calls this uses), resources or status (the engine records the id).
//!
//! How "once" holds:
//! - **Recorded id first.** Once the id is in the connection's status and the account still
//!   lists it, nothing is looked up or created.
//! - **Find before create.** A crash after the create but before the status write leaves a
//!   calendar carrying our marker; the next attempt finds and adopts it.
//! - **Atomic where the provider allows.** CalDAV creates it at a fixed collection path
//!   (`MKCALENDAR` on an existing one fails, which means "exists"); Exchange refuses a second
//!   calendar of the same name (409 `ErrorFolderExists`). Two racing creators get one calendar.
//! - **Converge where it does not** (Google `calendars.insert` has no client-chosen id): after a
//!   create, list again. If a race made two, every racer keeps the same one, the oldest by the
//!   creation stamp in its marker (then the smallest id), and deletes the others that carry our
//!   marker. A racer that listed before the other's create keeps its own, which is the oldest.
//!   (Stamps come from the creators' clocks: a skew larger than the race window could make a
//!   later racer delete the calendar an earlier one recorded; the next check then moves the
//!   connection to the survivor.)

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Provider, ProviderError};
use crate::resources::CalendarInfo;

/// The calendar's display name.
pub const DEDICATED_NAME: &str = "Get It Done!";
/// Text that marks a calendar as calsync's own (Google: in its description).
pub const MARKER_PREFIX: &str = "calsync-dedicated-calendar/v1";
/// The human part of the description, before the marker.
pub const DESCRIPTION: &str = "Tasks from Get It Done!, kept in sync by calsync.";

/// A calendar that carries calsync's marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedicatedCalendar {
    pub info: CalendarInfo,
    /// When it was created, from its marker (RFC 3339 UTC with nanoseconds, so text order is
    /// time order), where the provider keeps one (Google). Orders the calendars of a race.
    pub stamp: Option<String>,
}

/// What a create call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MadeCalendar {
    New(DedicatedCalendar),
    /// The provider refused because it exists already (CalDAV: the path is taken; Graph: the
    /// name is): list to find it.
    Exists,
}

/// The outcome of `ensure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ensured {
    pub calendar: CalendarInfo,
    /// This call created it.
    pub created: bool,
    /// Extra calendars of ours (left by a race) this call deleted.
    pub removed: Vec<String>,
}

/// The marker text for a calendar created at `at`.
pub fn marker(at: DateTime<Utc>) -> String {
    format!("{MARKER_PREFIX} created={}", at.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// The full description of a calendar created at `at` (what users see, then the marker).
pub fn description(at: DateTime<Utc>) -> String {
    format!("{DESCRIPTION}\n{}", marker(at))
}

/// Whether `text` (a description) carries our marker, and its stamp when it has one.
pub fn parse_marker(text: &str) -> Option<Option<String>> {
    let rest = &text[text.find(MARKER_PREFIX)? + MARKER_PREFIX.len()..];
    let stamp = rest
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("created="))
        .filter(|s| DateTime::parse_from_rfc3339(s).is_ok())
        .map(str::to_string);
    Some(stamp)
}

/// The calendar every racer keeps: the oldest stamp, then the smallest id. A calendar without
/// a stamp sorts after stamped ones (it was not made by this version's create).
fn winner(found: &[DedicatedCalendar]) -> Option<&DedicatedCalendar> {
    found
        .iter()
        .min_by(|a, b| (a.stamp.is_none(), &a.stamp, &a.info.id).cmp(&(b.stamp.is_none(), &b.stamp, &b.info.id)))
}

/// Find the account's calendar of ours, creating it when there is none. `recorded` is the id
/// in status and `listed` the account's calendars from this check: a recorded calendar that
/// still exists is kept without further calls.
pub async fn ensure(
    p: &dyn Provider,
    recorded: Option<&str>,
    listed: &[CalendarInfo],
) -> Result<Ensured, ProviderError> {
    if let Some(c) = recorded.and_then(|id| listed.iter().find(|c| c.id == id)) {
        return Ok(Ensured { calendar: c.clone(), created: false, removed: Vec::new() });
    }
    let found = p.dedicated_calendars().await?;
    if !found.is_empty() {
        return converge(p, found).await;
    }
    let created = match p.create_dedicated_calendar(&description(Utc::now())).await? {
        MadeCalendar::New(c) => {
            tracing::info!(calendar = %c.info.id, "created calsync's own calendar");
            Some(c)
        }
        MadeCalendar::Exists => None,
    };
    // Listed again even after our own create: another creator may have raced us.
    let mut found = p.dedicated_calendars().await?;
    match &created {
        // A listing can lag a create: the one we made takes part in the convergence anyway, so
        // it is deleted if a racer's is older, rather than left behind unlisted.
        Some(c) if !found.iter().any(|f| f.info.id == c.info.id) => found.push(c.clone()),
        Some(_) => {}
        None if found.is_empty() => {
            return Err(ProviderError::Transient {
                message: format!(
                    "the calendar provider says calsync's calendar {DEDICATED_NAME:?} exists but does not list it yet; will retry"
                ),
            });
        }
        None => {}
    }
    let mut out = converge(p, found).await?;
    out.created = created.is_some_and(|c| c.info.id == out.calendar.id);
    Ok(out)
}

/// Keep the winner, delete the other calendars of ours.
async fn converge(p: &dyn Provider, found: Vec<DedicatedCalendar>) -> Result<Ensured, ProviderError> {
    let Some(keep) = winner(&found).cloned() else {
        return Err(ProviderError::Transient {
            message: "no calendar of calsync's own is listed yet; will retry".into(),
        });
    };
    let mut removed = Vec::new();
    for extra in found.iter().filter(|c| c.info.id != keep.info.id) {
        p.delete_dedicated_calendar(&extra.info.id).await?;
        tracing::warn!(kept = %keep.info.id, deleted = %extra.info.id, "a race created two calsync calendars; deleted the newer one");
        removed.push(extra.info.id.clone());
    }
    Ok(Ensured { calendar: keep.info, created: false, removed })
}

/// The error of a provider without calendar creation (the trait's default).
pub fn unsupported() -> ProviderError {
    ProviderError::Invalid {
        message: format!(
            "this calendar provider cannot create a calendar of calsync's own ({DEDICATED_NAME:?}); set spec.calendarId to one of the account's calendars"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cal(id: &str, stamp: Option<&str>) -> DedicatedCalendar {
        DedicatedCalendar {
            info: CalendarInfo { id: id.into(), name: DEDICATED_NAME.into(), primary: false, writable: true },
            stamp: stamp.map(str::to_string),
        }
    }

    #[test]
    fn marker_round_trips_and_orders_by_time() {
        let t = Utc.with_ymd_and_hms(2026, 12, 5, 9, 0, 0).unwrap();
        let d = description(t);
        assert!(d.starts_with(DESCRIPTION));
        assert_eq!(parse_marker(&d), Some(Some("2026-12-05T09:00:00.000000000Z".into())));
        assert_eq!(parse_marker("a user's own calendar"), None);
        assert_eq!(parse_marker(MARKER_PREFIX), Some(None), "marker without a stamp still marks");
        assert_eq!(parse_marker(&format!("{MARKER_PREFIX} created=yesterday")), Some(None));
        let later = marker(t + chrono::Duration::nanoseconds(1));
        assert!(marker(t) < later, "text order is time order");
    }

    /// A provider whose listing is scripted and whose creates are recorded.
    struct Scripted {
        listings: std::sync::Mutex<Vec<Vec<DedicatedCalendar>>>,
        made: Option<MadeCalendar>,
        deleted: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Provider for Scripted {
        async fn account(&self) -> Result<crate::providers::AccountInfo, ProviderError> {
            unimplemented!()
        }
        async fn create(
            &self,
            _: &str,
            _: &str,
            _: &crate::providers::EventData,
        ) -> Result<crate::providers::Created, ProviderError> {
            unimplemented!()
        }
        async fn update(
            &self,
            _: &str,
            _: &str,
            _: Option<&str>,
            _: &crate::providers::EventData,
        ) -> Result<crate::providers::RemoteEvent, ProviderError> {
            unimplemented!()
        }
        async fn delete(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), ProviderError> {
            unimplemented!()
        }
        async fn get(&self, _: &str, _: &str) -> Result<Option<crate::providers::RemoteEvent>, ProviderError> {
            unimplemented!()
        }
        async fn find_by_key(&self, _: &str, _: &str) -> Result<Option<crate::providers::RemoteEvent>, ProviderError> {
            unimplemented!()
        }
        async fn list(
            &self,
            _: &str,
            _: crate::providers::Window,
            _: Option<&str>,
        ) -> Result<crate::providers::EventPage, ProviderError> {
            unimplemented!()
        }
        async fn dedicated_calendars(&self) -> Result<Vec<DedicatedCalendar>, ProviderError> {
            Ok(self.listings.lock().unwrap().remove(0))
        }
        async fn create_dedicated_calendar(&self, _: &str) -> Result<MadeCalendar, ProviderError> {
            Ok(self.made.clone().unwrap())
        }
        async fn delete_dedicated_calendar(&self, id: &str) -> Result<(), ProviderError> {
            self.deleted.lock().unwrap().push(id.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_lagging_listing_still_converges_our_own_create() {
        // We made "mine" (newer); the listing after it shows only a racer's older one.
        let racer = cal("racer", Some("2026-01-01T00:00:00.000000000Z"));
        let mine = cal("mine", Some("2026-01-01T00:00:01.000000000Z"));
        let p = Scripted {
            listings: std::sync::Mutex::new(vec![vec![], vec![racer.clone()]]),
            made: Some(MadeCalendar::New(mine)),
            deleted: Default::default(),
        };
        let got = ensure(&p, None, &[]).await.unwrap();
        assert_eq!((got.calendar.id.as_str(), got.created), ("racer", false));
        assert_eq!(*p.deleted.lock().unwrap(), vec!["mine".to_string()], "ours is not left behind");
    }

    #[tokio::test]
    async fn exists_but_unlisted_is_retried_not_recreated() {
        let p = Scripted {
            listings: std::sync::Mutex::new(vec![vec![], vec![]]),
            made: Some(MadeCalendar::Exists),
            deleted: Default::default(),
        };
        let err = ensure(&p, None, &[]).await.unwrap_err();
        assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    }

    #[test]
    fn winner_is_oldest_then_smallest_id() {
        let found = vec![cal("b", Some("2026-01-02")), cal("z", Some("2026-01-01")), cal("a", None)];
        assert_eq!(winner(&found).map(|c| c.info.id.as_str()), Some("z"));
        let found = vec![cal("b", None), cal("a", None)];
        assert_eq!(winner(&found).map(|c| c.info.id.as_str()), Some("a"));
        assert!(winner(&[]).is_none());
    }
}
