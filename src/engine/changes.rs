//! The change sync of one connection: after a signal (a provider notification) or when a poll
//! is due, list each watched calendar incrementally with the engine's own cursor (a cheap probe
//! first where the provider has one), and hand every changed or vanished event of ours to its
//! TaskSync as a hint, re-queueing it at once. Other events only mark the calendar as changed.
//!
//! Owns: which listing to make and what its result means for TaskSyncs. Must not touch: the
//! TaskSync's status (its own reconcile acts on the hint, so one reconcile per object holds) or
//! watches (`live`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::{Resource, ResourceExt};

use super::live::{self, Hint, LiveStats, SignalAction, stats};
use super::{Engine, EngineError, Labels, ObjectKey};
use crate::providers::{Provider, ProviderError, Window};
use crate::resources::{CONNECTION_LABEL, CalendarConnection, CalendarConnectionStatus, PushMode};

/// Why a calendar is listed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    Signal,
    Poll,
}

impl Engine {
    fn change_window(&self) -> Window {
        let now = self.now();
        let back = chrono::Duration::from_std(self.config.live.window_back).unwrap_or_default();
        let ahead = chrono::Duration::from_std(self.config.live.window_ahead).unwrap_or_default();
        Window { from: now - back, to: now + ahead }
    }

    /// Run the change syncs that are due. `signal` is a new annotation value, if any. Returns
    /// the delay until the next poll is due. Provider failures are logged and retried at the
    /// next poll; they never fail the connection (its own check reports a broken account).
    pub(super) async fn sync_changes(
        &self,
        conn: &CalendarConnection,
        st: &mut CalendarConnectionStatus,
        p: &dyn Provider,
        signal: Option<&str>,
    ) -> Result<Duration, EngineError> {
        let ns = conn.namespace().unwrap_or_default();
        let conn_key = format!("{ns}/{}", conn.name_any());
        let action = signal.map(live::signal_action);
        let mut push = st.push.clone().unwrap_or_default();
        let mut next = Duration::from_secs(3600);
        let mut signal_failed = false;
        for w in push.calendars.iter_mut() {
            let interval = self.poll_interval_of(conn, w.mode);
            // A process that has not synced this calendar yet (start-up, a new leader) lists it in
            // full at its first slot, so a fleet does not start in step.
            let (poll_due, left) = self.live.poll_due(&conn_key, &w.calendar_id, interval);
            let trigger = if signal.is_some() {
                Trigger::Signal
            } else if poll_due {
                Trigger::Poll
            } else {
                next = next.min(left);
                continue;
            };
            // Graph lost notifications (`missed`, `subscriptionRemoved`): only a full listing
            // finds what happened meanwhile.
            if matches!(&action, Some(SignalAction::Resync(_))) {
                self.live.set_cursor(&conn_key, &w.calendar_id, None);
            }
            match self.sync_calendar(&ns, &conn_key, &w.calendar_id, p, trigger).await {
                Ok(changed) => {
                    if changed {
                        w.last_change_time = Some(self.now());
                        w.change_count += 1;
                        w.cursor = self.live.cursor(&conn_key, &w.calendar_id);
                    }
                }
                Err(e) => {
                    tracing::info!(connection = %conn_key, calendar = %w.calendar_id, reason = e.reason(), error = %e, "change sync failed; trying again soon");
                    if trigger == Trigger::Signal {
                        // The signal stays unanswered (signalSeen unchanged) and is retried.
                        signal_failed = true;
                        let retry = match e.class() {
                            crate::error::ErrorClass::Retry { after: Some(after) } => after,
                            _ => self.config.backoff.base,
                        };
                        next = next.min(retry);
                    }
                }
            }
            self.live.mark_synced(&conn_key, &w.calendar_id);
            next = next.min(self.live.poll_due(&conn_key, &w.calendar_id, interval).1.max(Duration::from_millis(1)));
        }
        if let Some(value) = signal.filter(|_| !signal_failed) {
            push.signal_seen = Some(value.to_string());
            push.last_notification_time = Some(self.now());
        }
        st.push = Some(push);
        Ok(next)
    }

    fn poll_interval_of(&self, conn: &CalendarConnection, mode: PushMode) -> Duration {
        self.poll_interval(conn.spec.provider, mode)
    }

    /// List one calendar's changes and hint the TaskSyncs whose events changed. `true` when the
    /// calendar had changes (or may have: a full listing).
    async fn sync_calendar(
        &self,
        ns: &str,
        conn_key: &str,
        calendar: &str,
        p: &dyn Provider,
        trigger: Trigger,
    ) -> Result<bool, ProviderError> {
        LiveStats::bump(match trigger {
            Trigger::Signal => &stats().signals,
            Trigger::Poll => &stats().polls,
        });
        let cursor = self.live.cursor(conn_key, calendar);
        // A probe answer equal to the one of the last listing means nothing changed: skip the
        // listing (CalDAV: one PROPFIND instead of a REPORT).
        let probe = p.probe(calendar).await?;
        if cursor.is_some()
            && let Some(now) = &probe
            && self.live.probe(conn_key, calendar).as_ref() == Some(now)
        {
            LiveStats::bump(&stats().probes_unchanged);
            return Ok(false);
        }
        let window = self.change_window();
        let page = p.list(calendar, window, cursor.as_deref()).await?;
        stats().listings.fetch_add(1, Ordering::Relaxed);
        let full = cursor.is_none() || page.full_resync;
        if full {
            LiveStats::bump(&stats().full_listings);
        }
        self.live.set_cursor(conn_key, calendar, page.next_cursor.clone());
        self.live.set_probe(conn_key, calendar, probe);

        let owner = &self.config.owner;
        let mut ours_changed = 0u64;
        let mut external = 0u64;
        let mut listed: HashSet<&str> = HashSet::new();
        for ev in &page.events {
            listed.insert(ev.id.as_str());
            let Some(marker) = ev.marker.as_ref().filter(|m| &m.owner == owner) else {
                external += 1;
                continue;
            };
            let _ = marker;
            let Some(ts) = self.objects.find_task_sync_by_event(ns, &ev.id).await.ok().flatten() else { continue };
            if ts.meta().deletion_timestamp.is_some() {
                continue;
            }
            let st = ts.status.as_ref();
            if st.and_then(|s| s.etag.as_ref()) == ev.etag.as_ref() && !ev.cancelled {
                continue;
            }
            if st.and_then(|s| s.calendar_edit.as_ref()).is_some_and(|e| Some(&e.etag) == ev.etag.as_ref()) {
                continue;
            }
            ours_changed += 1;
            let hint = if ev.cancelled { Hint::Check } else { Hint::Changed(Box::new(ev.clone())) };
            self.live.hint(ObjectKey::task_sync(ns, &ts.name_any()), hint);
        }
        for id in &page.removed {
            let Some(ts) = self.objects.find_task_sync_by_event(ns, id).await.ok().flatten() else {
                external += 1;
                continue;
            };
            if ts.meta().deletion_timestamp.is_some() {
                continue;
            }
            ours_changed += 1;
            self.live.hint(ObjectKey::task_sync(ns, &ts.name_any()), Hint::Check);
        }
        if full {
            // A full listing shows what exists, not what was deleted: ask the TaskSyncs of this
            // calendar whose event is missing to read it (one `get` each, rare).
            ours_changed += self.check_missing(ns, conn_key, calendar, &listed, &window).await;
        }
        stats().edits_found.fetch_add(ours_changed, Ordering::Relaxed);
        stats().external_changes.fetch_add(if full { 0 } else { external }, Ordering::Relaxed);
        if !full && external > 0 {
            tracing::info!(connection = %conn_key, calendar, events = external, "calendar changed");
        }
        // A full listing (this process's first, or after the provider refused the cursor) cannot
        // tell what changed since the last one: it counts as a change, so lastChangeTime moves
        // and the app (which trusts an unchanged lastChangeTime under push) asks again.
        Ok(ours_changed > 0 || full || external > 0)
    }

    /// TaskSyncs of this connection and calendar whose event a full listing did not return,
    /// though the task's time lies inside the window: hint them to check.
    async fn check_missing(
        &self,
        ns: &str,
        conn_key: &str,
        calendar: &str,
        listed: &HashSet<&str>,
        window: &Window,
    ) -> u64 {
        let conn_name = conn_key.rsplit('/').next().unwrap_or_default();
        let selector = Labels::from([(CONNECTION_LABEL.to_string(), conn_name.to_string())]);
        let Ok(list) = self.objects.list_task_syncs(Some(ns), &selector).await else { return 0 };
        let mut n = 0;
        for ts in list {
            let Some(st) = ts.status.as_ref() else { continue };
            let (Some(id), Some(cal)) = (st.event_id.as_deref(), st.calendar_id.as_deref()) else { continue };
            if cal != calendar || listed.contains(id) || ts.meta().deletion_timestamp.is_some() {
                continue;
            }
            if st.calendar_edit.as_ref().is_some_and(|e| e.deleted) || !ts.spec.recurrence.is_empty() {
                continue;
            }
            let inside = super::desired::event_of(&ts, "", &self.config.owner).ok().is_some_and(|ev| {
                let start = match ev.start {
                    crate::providers::EventTime::DateTime { utc, .. } => Some(utc),
                    crate::providers::EventTime::Date(d) => d.and_hms_opt(12, 0, 0).map(|t| t.and_utc()),
                };
                start.is_some_and(|s| {
                    s > window.from + chrono::Duration::days(1) && s < window.to - chrono::Duration::days(1)
                })
            });
            if inside {
                n += 1;
                self.live.hint(ObjectKey::task_sync(ns, &ts.name_any()), Hint::Check);
            }
        }
        n
    }
}
