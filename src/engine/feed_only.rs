//! Reconcile of a feed-only TaskSync (label `calendar.getitdone.app/feed-only=true`): a task of
//! a user with no connected calendar, served only by their ICS feed. There is no calendar to
//! write, so the reconcile checks the spec and records it: `Synced`/`Ready` True with reason
//! `FeedOnly` (or `InvalidSpec`), `lastSyncTime` when a generation was first seen (the feed's
//! LAST-MODIFIED). No finalizer: deleting it needs no cleanup.
//!
//! Owns: that status. Must not touch: calendars, or TaskSyncs that still hold an event (those
//! carry our finalizer and go through the normal reconcile, which cleans the event up).

use kube::{Resource, ResourceExt};

use super::desired::desired_event;
use super::tasksync::cond;
use super::{Engine, EngineError, ObjectKey, Outcome};
use crate::resources::condition::{self, set_condition};
use crate::resources::{FINALIZER, TaskSync, is_feed_only};

/// Reason of the conditions of a feed-only TaskSync.
pub const FEED_ONLY_REASON: &str = "FeedOnly";

/// Whether `ts` takes the feed-only path: labelled so, and holding no calendar event.
pub fn applies(ts: &TaskSync) -> bool {
    is_feed_only(ts)
        && !ts.finalizers().iter().any(|f| f == FINALIZER)
        && ts.status.as_ref().is_none_or(|s| s.event_id.is_none())
}

impl Engine {
    pub(super) async fn reconcile_feed_only(&self, ts: &TaskSync) -> Result<Outcome, EngineError> {
        let key = ObjectKey::task_sync(&ts.namespace().unwrap_or_default(), &ts.name_any());
        let generation = ts.meta().generation.unwrap_or(1);
        let mut status = ts.status.clone().unwrap_or_default();
        let checked = if ts.spec.schedule.is_some() {
            Err("a task that asks calsync to find its time (schedule) needs a connected calendar to read busy time from".to_string())
        } else {
            desired_event(&ts.spec, "", &self.config.owner)
        };
        let (ok, reason, message) = match checked {
            Ok(_) => (
                true,
                FEED_ONLY_REASON,
                "no calendar is connected: the task is served by the user's ICS feed".to_string(),
            ),
            Err(why) => (false, "InvalidSpec", why),
        };
        let settled = status.observed_generation == Some(generation)
            && condition::find(&status.conditions, "Synced").is_some_and(|c| c.reason == reason);
        if settled {
            // Nothing changed since the last look: no write, no requeue (a spec change
            // triggers the next reconcile).
            return Ok(Outcome::Done);
        }
        let now = self.now();
        let g = Some(generation);
        set_condition(&mut status.conditions, cond("Synced", ok, reason, message.clone()), g, now);
        set_condition(&mut status.conditions, cond("Ready", ok, reason, message), g, now);
        status.observed_generation = g;
        status.failed_attempts = 0;
        status.last_failure_time = None;
        status.next_attempt_time = None;
        if ok {
            status.last_sync_time = Some(now);
        }
        tracing::debug!(object = %key, reason, "feed-only task recorded");
        match self.objects.patch_task_sync_status(&key.namespace, &key.name, &status).await {
            Ok(_) | Err(crate::engine::StoreError::NotFound(_)) => Ok(Outcome::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::super::memory::StoreOp;
    use super::super::tests::{World, reason, spec};
    use super::*;
    use crate::engine::Objects;
    use crate::resources::{FEED_ONLY_CONNECTION, FEED_ONLY_LABEL};

    async fn feed_task(w: &World, name: &str) {
        let mut s = spec("t-feed");
        s.connection_ref.name = FEED_ONLY_CONNECTION.into();
        let ts = TaskSync {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([(FEED_ONLY_LABEL.to_string(), "true".to_string())])),
                ..Default::default()
            },
            spec: s,
            status: None,
        };
        w.objects.apply_task_sync(&ts).await.unwrap();
    }

    #[tokio::test]
    async fn feed_only_tasks_settle_without_calendar_calls_or_spinning() {
        let w = World::new();
        feed_task(&w, "f1").await;
        assert_eq!(w.reconcile("f1").await, Outcome::Done);
        let st = w.status("f1").await;
        assert_eq!(reason(&st, "Synced"), "True/FeedOnly");
        assert_eq!(reason(&st, "Ready"), "True/FeedOnly");
        assert_eq!(st.observed_generation, Some(1));
        assert!(st.event_id.is_none() && st.last_sync_time.is_some());
        assert!(w.get("f1").await.unwrap().metadata.finalizers.unwrap_or_default().is_empty());
        assert!(w.calendar.calls().is_empty(), "no calendar is touched");

        // Again, and again later: nothing to do, nothing written.
        w.objects.clear_writes();
        w.advance(3600);
        assert_eq!(w.reconcile("f1").await, Outcome::Done);
        assert_eq!(w.reconcile("f1").await, Outcome::Done);
        assert!(w.objects.writes().is_empty(), "{:?}", w.objects.writes());

        // A spec change is recorded once, with its own time.
        let before = w.status("f1").await.last_sync_time;
        w.set_spec("f1", |s| s.title = "Renamed".into()).await;
        w.reconcile("f1").await;
        let st = w.status("f1").await;
        assert_eq!(st.observed_generation, Some(2));
        assert!(st.last_sync_time > before);
        assert_eq!(w.objects.writes().iter().filter(|(op, _)| *op == StoreOp::PatchStatus).count(), 1);

        // A spec the engine cannot read is reported, still without calendar calls.
        w.set_spec("f1", |s| s.start = "2026-03-08T02:30:00".into()).await;
        w.reconcile("f1").await;
        assert_eq!(reason(&w.status("f1").await, "Synced"), "False/InvalidSpec");
        assert!(w.calendar.calls().is_empty());

        // Deleting it needs no cleanup: it is gone at once.
        w.objects.delete(&ObjectKey::task_sync("default", "f1")).await.unwrap();
        assert!(w.get("f1").await.is_none());
        assert_eq!(w.reconcile("f1").await, Outcome::Done);
    }

    #[tokio::test]
    async fn a_feed_only_task_moved_to_a_calendar_is_written_there() {
        let w = World::new();
        w.connection().await;
        feed_task(&w, "f2").await;
        w.reconcile("f2").await;
        // The REST API moves it: connectionRef set, label dropped.
        let mut ts = w.get("f2").await.unwrap();
        ts.spec.connection_ref.name = "conn".into();
        ts.metadata.labels = None;
        ts.metadata.resource_version = None;
        w.objects.apply_task_sync(&ts).await.unwrap();
        for _ in 0..3 {
            w.reconcile("f2").await;
        }
        let st = w.status("f2").await;
        assert_eq!(reason(&st, "Synced"), "True/EventCreated", "{st:?}");
        assert!(st.event_id.is_some());
    }
}
