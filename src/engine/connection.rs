//! Reconcile of one CalendarConnection: check the credentials, list the calendars, pick the
//! default calendar (with `calendarId: auto`, calsync's own, see `dedicated`), report
//! `Authenticated` and `Ready`.

use std::sync::Arc;
use std::time::Duration;

use kube::{Resource, ResourceExt};
use tracing::Instrument as _;

use super::backoff::jitter;
use super::dedicated::{DEDICATED_FAILED, DedicatedFailure};
use super::live;
use super::{Engine, EngineError, EventType, ObjectKey, Outcome, StoreError};
use crate::error::ErrorClass;
use crate::providers::{Provider, ProviderError, Target};
use crate::resources::condition::{self, Condition, ConditionStatus, set_condition};
use crate::resources::push::PUSH_FINALIZER;
use crate::resources::{CalendarConnection, CalendarConnectionStatus, PushStatus};

fn cond(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition::new(type_, if ok { ConditionStatus::True } else { ConditionStatus::False }, reason, message)
}

impl Engine {
    /// Reconcile the CalendarConnection `namespace/name`.
    pub async fn reconcile_connection(&self, namespace: &str, name: &str) -> Result<Outcome, EngineError> {
        let span = crate::telemetry::spans::reconcile_span(
            "CalendarConnection",
            &ObjectKey::connection(namespace, name),
            None,
            false,
        );
        let result = self.reconcile_connection_traced(namespace, name).instrument(span.clone()).await;
        crate::telemetry::spans::reconcile_outcome(&span, &result);
        result
    }

    async fn reconcile_connection_traced(&self, namespace: &str, name: &str) -> Result<Outcome, EngineError> {
        let Some(conn) = self.objects.get_connection(namespace, name).await? else { return Ok(Outcome::Done) };
        if conn.meta().deletion_timestamp.is_some() {
            return self.connection_deleted(&conn).await;
        }
        // The user's decision about held deletions comes first: the rest works on what it left.
        let conn = match self.guard_on_connection(&conn).await? {
            Some(after) => after,
            None => conn,
        };
        let key = ObjectKey::connection(namespace, name);
        // The REST API finds a user's connections by this label; YAML written by hand lacks it.
        let user_label = crate::resources::user_label_value(&conn.spec.user_id);
        if conn.labels().get(crate::resources::USER_LABEL) != Some(&user_label) {
            let labels = std::collections::BTreeMap::from([(crate::resources::USER_LABEL.to_string(), user_label)]);
            self.objects.set_labels(&key, &labels).await?;
        }
        let now = self.now();
        let generation = conn.meta().generation;
        let old = conn.status.clone().unwrap_or_default();
        let mut st = old.clone();
        let write = |st: &crate::resources::CalendarConnectionStatus| old != *st;

        if !conn.spec.active {
            if let Some(stopped) = self.release_watches(&conn).await? {
                st.push = Some(stopped);
                st.conditions.retain(|c| c.type_ != "Push");
            }
            let msg = "the user disconnected this calendar; nothing is synced until it is connected again";
            set_condition(&mut st.conditions, cond("Ready", false, "Disconnected", msg), generation, now);
            st.observed_generation = generation;
            if write(&st) {
                self.save_connection_status(namespace, name, &st).await?;
            }
            return Ok(Outcome::Done);
        }

        let spec_changed = st.observed_generation != generation;
        let ready = condition::is_true(&st.conditions, "Ready");
        let recheck = chrono::Duration::from_std(self.config.connection_recheck).unwrap_or_default();
        if !spec_changed
            && ready
            && let Some(last) = st.last_check_time
        {
            let due = last + recheck;
            if due > now {
                // Credentials were checked recently: only live sync (watches, changes) to do.
                let check_in = (due - now).to_std().unwrap_or_default();
                return self.live_only(&conn, &old, st, check_in).await;
            }
        }
        if !spec_changed
            && st.failed_attempts > 0
            && let Some(failed) = st.last_failure_time
        {
            // Status written before nextAttemptTime existed has only the failure time.
            let delay = self.config.backoff.delay(st.failed_attempts, None);
            let due = st.next_attempt_time.unwrap_or(failed + chrono::Duration::from_std(delay).unwrap_or_default());
            if due > now {
                return Ok(Outcome::Requeue(jitter((due - now).to_std().unwrap_or_default())));
            }
        }
        st.observed_generation = generation;

        let secret = &conn.spec.credentials_secret_ref;
        let creds = match self.objects.read_credentials(namespace, secret).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                let msg = format!(
                    "credentials Secret {:?} does not exist in namespace {namespace:?}; create it (see examples/) or connect through the REST API",
                    secret.name
                );
                return self
                    .connection_failed(&key, &old, st, "CredentialsMissing", &msg, self.config.wait_requeue)
                    .await;
            }
            Err(crate::engine::StoreError::Invalid(m)) => {
                return self.connection_failed(&key, &old, st, "InvalidCredentials", &m, self.config.resync).await;
            }
            // Only this connection's Secret is affected; the others keep syncing.
            Err(crate::engine::StoreError::Unreadable(m)) => {
                return self.connection_failed(&key, &old, st, "CredentialsUnreadable", &m, self.config.resync).await;
            }
            Err(e) => return Err(e.into()),
        };
        let target = Target {
            provider: conn.spec.provider,
            server_url: conn.spec.server_url.clone(),
            connection: format!("{namespace}/{}", conn.name_any()),
        };
        let provider = match self.connector.connect(&target, &creds).await {
            Ok(p) => p,
            Err(e) => return self.connection_error(&key, &old, st, e).await,
        };
        let mut info = match provider.account().await {
            Ok(info) => info,
            Err(e) => return self.connection_error(&key, &old, st, e).await,
        };
        let default = match &conn.spec.calendar_id {
            Some(_) if conn.spec.wants_dedicated_calendar() => {
                match self.dedicated_calendar(&key, &old, &mut st, provider.as_ref(), &mut info.calendars).await {
                    Ok(id) => Some(id),
                    Err(DedicatedFailure::Retry(e)) => return self.connection_error(&key, &old, st, e).await,
                    Err(DedicatedFailure::Failed(msg)) => {
                        return self
                            .connection_failed(&key, &old, st, DEDICATED_FAILED, &msg, self.config.resync)
                            .await;
                    }
                }
            }
            Some(id) => match info.calendars.iter().find(|c| &c.id == id) {
                Some(c) if c.writable => Some(c.id.clone()),
                Some(_) => {
                    let msg = format!(
                        "calendar {id:?} is read-only for this account; pick a writable calendar in spec.calendarId"
                    );
                    return self
                        .connection_failed(&key, &old, st, "CalendarNotWritable", &msg, self.config.resync)
                        .await;
                }
                // Google accepts the alias `primary`, which is never listed under that id.
                None if id == "primary" => Some(id.clone()),
                None => {
                    let names: Vec<&str> = info.calendars.iter().map(|c| c.id.as_str()).collect();
                    let msg = format!(
                        "calendar {id:?} does not exist in this account (it has: {}); fix spec.calendarId",
                        names.join(", ")
                    );
                    return self.connection_failed(&key, &old, st, "CalendarNotFound", &msg, self.config.resync).await;
                }
            },
            None => info.default_calendar().map(|c| c.id.clone()),
        };
        let Some(default) = default else {
            let msg = "the account has no writable calendar that accepts events; create one in the calendar app";
            return self.connection_failed(&key, &old, st, "NoWritableCalendar", msg, self.config.resync).await;
        };
        st.calendars = info.calendars;
        st.account_email = info.email;
        st.default_calendar_id = Some(default);
        st.connected_at.get_or_insert(now);
        st.last_check_time = Some(now);
        st.failed_attempts = 0;
        st.last_failure_time = None;
        st.next_attempt_time = None;
        let g = generation;
        set_condition(
            &mut st.conditions,
            cond("Authenticated", true, "CredentialsAccepted", "the provider accepted the credentials"),
            g,
            now,
        );
        set_condition(
            &mut st.conditions,
            cond("Ready", true, "Connected", "the calendar is connected and usable"),
            g,
            now,
        );
        let live_in = self.live_sync(&conn, &mut st, provider.as_ref()).await?;
        if write(&st) {
            self.save_connection_status(namespace, name, &st).await?;
            if !ready {
                self.publish(&key, EventType::Normal, "Connected", "Check", "calendar connected".into()).await;
            }
        }
        Ok(Outcome::Requeue(jitter(self.config.connection_recheck).min(live_in)))
    }

    /// Watches and change syncs of a Ready connection whose credentials need no check now.
    async fn live_only(
        &self,
        conn: &CalendarConnection,
        old: &CalendarConnectionStatus,
        mut st: CalendarConnectionStatus,
        check_in: Duration,
    ) -> Result<Outcome, EngineError> {
        let ns = conn.namespace().unwrap_or_default();
        let Some(p) = self.connection_provider(conn).await? else {
            return Ok(Outcome::Requeue(jitter(check_in)));
        };
        let live_in = self.live_sync(conn, &mut st, p.as_ref()).await?;
        if *old != st {
            self.save_connection_status(&ns, &conn.name_any(), &st).await?;
        }
        Ok(Outcome::Requeue(jitter(check_in).min(live_in)))
    }

    async fn live_sync(
        &self,
        conn: &CalendarConnection,
        st: &mut CalendarConnectionStatus,
        p: &dyn Provider,
    ) -> Result<Duration, EngineError> {
        let signal = live::pending_signal(conn, st);
        let action = signal.as_deref().map(live::signal_action).unwrap_or(live::SignalAction::Look);
        let renew_in = self.reconcile_watches(conn, st, p, &action).await?;
        let changes = |st: &CalendarConnectionStatus| -> u64 {
            st.push.as_ref().map_or(0, |p| p.calendars.iter().map(|w| w.change_count).sum())
        };
        let before = changes(st);
        let poll_in = self.sync_changes(conn, st, p, signal.as_deref()).await?;
        if changes(st) != before {
            // A meeting may have landed on a placed block: the user's auto-scheduled tasks look
            // again, with this connection's busy time read afresh.
            let ns = conn.namespace().unwrap_or_default();
            self.sched.busy.invalidate(&format!("{ns}/{}", conn.name_any()));
            self.wake_scheduled(&ns, &conn.spec.user_id, None).await;
        }
        // Jitter below only lengthens; keep the earliest due time.
        Ok(renew_in.min(poll_in).max(Duration::from_millis(100)))
    }

    /// A provider client for the connection, or `None` when its credentials cannot be read
    /// now (its own check reports that).
    async fn connection_provider(&self, conn: &CalendarConnection) -> Result<Option<Arc<dyn Provider>>, EngineError> {
        let ns = conn.namespace().unwrap_or_default();
        let creds = match self.objects.read_credentials(&ns, &conn.spec.credentials_secret_ref).await {
            Ok(Some(c)) => c,
            Ok(None) | Err(StoreError::Invalid(_) | StoreError::Unreadable(_) | StoreError::NotFound(_)) => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let target = Target {
            provider: conn.spec.provider,
            server_url: conn.spec.server_url.clone(),
            connection: format!("{ns}/{}", conn.name_any()),
        };
        match self.connector.connect(&target, &creds).await {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                tracing::info!(connection = %target.connection, reason = e.reason(), "no provider client for live sync now");
                Ok(None)
            }
        }
    }

    /// Stop a connection's watches (best effort) and drop the push finalizer. The status to
    /// record, when it had watches.
    async fn release_watches(&self, conn: &CalendarConnection) -> Result<Option<PushStatus>, EngineError> {
        let has_watches = conn
            .status
            .as_ref()
            .and_then(|s| s.push.as_ref())
            .is_some_and(|p| p.calendars.iter().any(|w| w.watch_id.is_some()));
        let p = if has_watches { self.connection_provider(conn).await? } else { None };
        let stopped = self.stop_watches(conn, p.as_deref()).await;
        if conn.finalizers().iter().any(|f| f == PUSH_FINALIZER) {
            let key = ObjectKey::connection(&conn.namespace().unwrap_or_default(), &conn.name_any());
            match self.objects.remove_finalizer(&key, PUSH_FINALIZER).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stopped.filter(|_| has_watches))
    }

    /// A connection marked for deletion: stop its watches, then let it go.
    async fn connection_deleted(&self, conn: &CalendarConnection) -> Result<Outcome, EngineError> {
        if conn.finalizers().iter().any(|f| f == PUSH_FINALIZER) {
            self.release_watches(conn).await?;
        } else {
            self.live.forget(&format!("{}/{}", conn.namespace().unwrap_or_default(), conn.name_any()));
        }
        Ok(Outcome::Done)
    }

    async fn connection_error(
        &self,
        key: &ObjectKey,
        old: &crate::resources::CalendarConnectionStatus,
        mut st: crate::resources::CalendarConnectionStatus,
        e: ProviderError,
    ) -> Result<Outcome, EngineError> {
        let now = self.now();
        match e.class() {
            ErrorClass::Reauthenticate => {
                let g = st.observed_generation;
                set_condition(
                    &mut st.conditions,
                    cond("Authenticated", false, "ReconnectRequired", e.to_string()),
                    g,
                    now,
                );
                self.connection_failed(key, old, st, "ReconnectRequired", &e.to_string(), self.config.resync).await
            }
            ErrorClass::Retry { .. } => {
                st.failed_attempts = st.failed_attempts.saturating_add(1);
                st.last_failure_time = Some(now);
                let (at, delay) = self.retry_at(st.failed_attempts, &e);
                st.next_attempt_time = Some(at);
                // A passing failure does not un-Ready a working connection; it only delays the
                // next check. A connection that never worked says why it is not Ready yet.
                if !condition::is_true(&st.conditions, "Ready") {
                    let g = st.observed_generation;
                    set_condition(&mut st.conditions, cond("Ready", false, e.reason(), e.to_string()), g, now);
                }
                if *old != st {
                    self.save_connection_status(&key.namespace, &key.name, &st).await?;
                }
                // Jittered already (or a Retry-After, which must not be).
                Ok(Outcome::Requeue(delay))
            }
            ErrorClass::Permanent => {
                self.connection_failed(key, old, st, e.reason(), &e.to_string(), self.config.resync).await
            }
        }
    }

    async fn connection_failed(
        &self,
        key: &ObjectKey,
        old: &crate::resources::CalendarConnectionStatus,
        mut st: crate::resources::CalendarConnectionStatus,
        reason: &str,
        msg: &str,
        requeue: Duration,
    ) -> Result<Outcome, EngineError> {
        let now = self.now();
        let g = st.observed_generation;
        if reason != "ReconnectRequired" && !condition::is_true(&st.conditions, "Authenticated") {
            let auth_ok =
                matches!(reason, "CalendarNotFound" | "CalendarNotWritable" | "NoWritableCalendar" | DEDICATED_FAILED);
            set_condition(&mut st.conditions, cond("Authenticated", auth_ok, reason, msg), g, now);
        }
        set_condition(&mut st.conditions, cond("Ready", false, reason, msg), g, now);
        st.last_check_time = Some(now);
        if *old != st {
            self.save_connection_status(&key.namespace, &key.name, &st).await?;
            self.publish(key, EventType::Warning, reason, "Check", msg.to_string()).await;
        }
        Ok(Outcome::Requeue(jitter(requeue)))
    }
}
