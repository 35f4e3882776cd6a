//! Tasks that place themselves (`spec.schedule`, time blocking): the engine reads the user's
//! busy time across every active connection (`busy`, the same reading and cache as
//! `POST /suggest-times`), places all of the user's auto-scheduled tasks at once with the pure
//! core (`scheduling::pack`: deadline first, then name; a block that still fits is kept), and the
//! reconcile writes this task's event where its block fell.
//!
//! Rules (README "Tasks that place themselves"):
//! - One placement at a time per user in a process (a per-user lock held through the write), and
//!   a deterministic packing, so two auto tasks never take the same time even when replicas
//!   place them side by side: both compute the same packing from the same calendars.
//! - A block already under way (or over) is kept, whatever happened; a block that still fits
//!   (working hours, bounds, clear of busy time plus buffer) is kept, so the calendar does not
//!   churn; otherwise the task moves to the best free slot before its deadline.
//! - Nothing fits: `Scheduled=False`, reason `NoRoom`. A task never placed writes no event; a
//!   placed block is left where it is (the task is still planned; the app hears
//!   `task.unschedulable` and the user decides).
//! - A connection whose busy time cannot be read is never taken as free: nothing moves until it
//!   answers (`BusyUnavailable`, retried).
//! - calsync's own blocks are not busy for the placement: written free (the default) no provider
//!   reports them; written busy (`transparency: Opaque`) their exact times are taken out of the
//!   busy spans (Google's free/busy cannot tell events apart).
//!
//! Owns: reading `spec.schedule`, the busy read and the packing for one reconcile, waking the
//! user's auto tasks. Must not touch: the slot search (`scheduling`), writes (`tasksync`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use kube::ResourceExt;

use super::busy::{self, BusyCache, ReadError};
use super::desired::{TimeValue, parse_time, parse_zone, placed_block, resolve_local};
use super::{Engine, EngineError, Labels, ObjectKey};
use crate::providers::Window;
use crate::resources::{
    CalendarConnection, HoursRange, TaskSync, TaskSyncSpec, Transparency, USER_LABEL, is_feed_only, user_label_value,
};
use crate::scheduling::{self, AutoTask, Interval, Placement, Request, WorkingHours};

/// How far ahead a task without a deadline is placed.
pub const DEFAULT_HORIZON_DAYS: i64 = 14;

/// `spec.schedule` read and checked (times in UTC).
#[derive(Clone, Debug)]
pub struct Schedule {
    pub zone: Tz,
    pub working_hours: WorkingHours,
    pub duration: Duration,
    pub buffer: Duration,
    pub earliest_start: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub transparent: bool,
}

impl scheduling::TextRange for HoursRange {
    fn bounds(&self) -> (&str, &str) {
        (&self.start, &self.end)
    }
}

fn instant(field: &str, value: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    match parse_time(field, value)? {
        TimeValue::Absolute(t) => Ok(t.with_timezone(&Utc)),
        TimeValue::Local(t) => resolve_local(t, zone, field),
        TimeValue::Date(_) => Err(format!("{field} must be a date-time (2027-03-08T09:00:00), not a date")),
    }
}

/// Read `spec.schedule`; errors name the field (`schedule.deadline: ...`) and are the user's to
/// fix (`InvalidSpec`).
pub fn parse(spec: &TaskSyncSpec) -> Result<Schedule, String> {
    let Some(s) = spec.schedule.as_ref() else { return Err("the task has no schedule".into()) };
    let zone = match spec.time_zone.as_deref() {
        Some(z) => parse_zone(z)?,
        None => return Err("schedule needs timeZone: working hours, earliestStart and deadline are read in it".into()),
    };
    if !(1..=24 * 60).contains(&s.duration_minutes) {
        return Err("schedule.durationMinutes must be between 1 and 1440".into());
    }
    let buffer = s.buffer_minutes.unwrap_or(0);
    if buffer > 240 {
        return Err("schedule.bufferMinutes must be between 0 and 240".into());
    }
    let working_hours = match &s.working_hours {
        None => WorkingHours::office(),
        Some(w) => WorkingHours::parse([
            &w.monday,
            &w.tuesday,
            &w.wednesday,
            &w.thursday,
            &w.friday,
            &w.saturday,
            &w.sunday,
        ])
        .map_err(|b| {
            format!(
                "schedule.workingHours.{}[{}]: start and end must be HH:MM (end may be 24:00) with start before end",
                b.day, b.index
            )
        })?
        .map_err(|e| format!("schedule.workingHours: {}", e.message))?,
    };
    let earliest_start = s.earliest_start.as_deref().map(|v| instant("schedule.earliestStart", v, zone)).transpose()?;
    let deadline = s.deadline.as_deref().map(|v| instant("schedule.deadline", v, zone)).transpose()?;
    let duration = Duration::minutes(i64::from(s.duration_minutes));
    if let (Some(e), Some(d)) = (earliest_start, deadline) {
        if d <= e {
            return Err("schedule.deadline is not after schedule.earliestStart".into());
        }
        if d - e < duration {
            return Err("schedule.durationMinutes is longer than the time between earliestStart and deadline".into());
        }
    }
    Ok(Schedule {
        zone,
        working_hours,
        duration,
        buffer: Duration::minutes(i64::from(buffer)),
        earliest_start,
        deadline,
        transparent: s.transparency == Transparency::Transparent,
    })
}

/// The core's question for `s` at `now`: the window from the earliest start (or now) to the
/// deadline (or `DEFAULT_HORIZON_DAYS` ahead), at most `scheduling::MAX_WINDOW_DAYS` long.
/// `Err` says why no block can fit any more (the deadline has passed or is too close).
pub fn request(s: &Schedule, now: DateTime<Utc>) -> Result<Request, String> {
    let from = s.earliest_start.map_or(now, |e| e.max(now));
    let to = s
        .deadline
        .unwrap_or(from + Duration::days(DEFAULT_HORIZON_DAYS))
        .min(from + Duration::days(scheduling::MAX_WINDOW_DAYS));
    if to - from < s.duration {
        let local = |t: DateTime<Utc>| t.with_timezone(&s.zone).format("%a %d %b %Y %H:%M").to_string();
        return Err(if s.deadline.is_some_and(|d| d <= now) {
            format!("the deadline ({} {}) has passed", local(to), s.zone.name())
        } else {
            format!(
                "no {} min fit between {} and the deadline {} ({})",
                s.duration.num_minutes(),
                local(from),
                local(to),
                s.zone.name()
            )
        });
    }
    Ok(Request {
        now,
        window: Interval::new(from, to),
        zone: s.zone,
        working_hours: s.working_hours.clone(),
        duration: s.duration,
        buffer: s.buffer,
        earliest_start: s.earliest_start,
        deadline: s.deadline,
        count: 1,
        step: Duration::minutes(scheduling::DEFAULT_STEP_MINUTES),
    })
}

/// Where this reconcile puts the task.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Placed {
    /// The block is (or goes) here. `moved`: it was elsewhere and is moved now; `why` in words.
    At { block: Interval, why: String, moved: bool },
    /// Nothing fits; `keep` is the block that stays where it is, if the task has one.
    NoRoom { message: String, keep: Option<Interval> },
    /// The busy time of a connection is unknown: nothing moves (`keep` stays), retried.
    Unknown { message: String, keep: Option<Interval> },
    /// `spec.schedule` cannot be read.
    Invalid(String),
}

impl Placed {
    /// The block the event is written at, when there is one.
    pub(super) fn block(&self) -> Option<Interval> {
        match self {
            Placed::At { block, .. } => Some(*block),
            Placed::NoRoom { keep, .. } | Placed::Unknown { keep, .. } => *keep,
            Placed::Invalid(_) => None,
        }
    }
}

/// The engine's placement state: the busy cache and one lock per user.
#[derive(Default)]
pub struct SchedState {
    pub(super) busy: BusyCache,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SchedState {
    /// The lock that serializes placements of `namespace/user` in this process.
    pub(super) fn user_lock(&self, namespace: &str, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            // Locks nobody holds or waits for can go (a held one has a second reference).
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(format!("{namespace}/{user}")).or_default().clone()
    }
}

fn user_selector(user: &str) -> Labels {
    Labels::from([(USER_LABEL.to_string(), user_label_value(user))])
}

/// One auto task in the packing, or why it takes no part.
enum Entry {
    Pack(Box<AutoTask>, bool),
    /// Under way or over: stays; its time is taken for the others.
    Started(Interval),
    TooLate(String),
    Invalid(String),
}

impl Engine {
    /// The user's active connections and auto-scheduled TaskSyncs (`ts` itself as given).
    async fn user_world(
        &self,
        namespace: &str,
        user: &str,
        ts: &TaskSync,
    ) -> Result<(Vec<CalendarConnection>, Vec<TaskSync>), EngineError> {
        let selector = user_selector(user);
        let conns: Vec<CalendarConnection> = self
            .objects
            .list_connections(Some(namespace), &selector)
            .await?
            .into_iter()
            // The label is a hash: check the real id so a collision can never mix two users.
            .filter(|c| c.spec.user_id == user && c.metadata.deletion_timestamp.is_none())
            .collect();
        let names: Vec<String> = conns.iter().map(|c| c.name_any()).collect();
        let mut tasks: Vec<TaskSync> = self
            .objects
            .list_task_syncs(Some(namespace), &selector)
            .await?
            .into_iter()
            .filter(|t| {
                t.spec.schedule.is_some()
                    && t.metadata.deletion_timestamp.is_none()
                    && !is_feed_only(t)
                    && t.name_any() != ts.name_any()
                    && names.contains(&t.spec.connection_ref.name)
            })
            .collect();
        tasks.push(ts.clone());
        tasks.sort_by_key(|t| t.name_any());
        Ok((conns.into_iter().filter(|c| c.spec.active).collect(), tasks))
    }

    /// Busy spans of `conns` in `window`, or the connections that could not answer.
    async fn user_busy(
        &self,
        namespace: &str,
        conns: &[CalendarConnection],
        window: Window,
        zone: Tz,
    ) -> Result<Vec<Interval>, String> {
        let reads = conns.iter().map(|conn| async move {
            let connect = || async {
                match self.provider_of(namespace, conn).await {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            busy::read(&self.sched.busy, namespace, conn, window, zone, connect).await
        });
        let results = futures::future::join_all(reads).await;
        let mut spans = Vec::new();
        let mut failed = Vec::new();
        for (conn, r) in conns.iter().zip(results) {
            match r {
                Ok(s) => spans.extend(s.into_iter().map(|w| Interval::new(w.from, w.to))),
                Err(ReadError::Connect(e)) => failed.push(format!("{} ({}): {e}", conn.spec.provider, conn.name_any())),
                Err(ReadError::Provider(e)) => {
                    failed.push(format!("{} ({}): {e}", conn.spec.provider, conn.name_any()))
                }
            }
        }
        if failed.is_empty() {
            Ok(spans)
        } else {
            Err(format!(
                "the busy time of {} could not be read, so nothing is placed or moved until it can: {}",
                if failed.len() == 1 { "a connected calendar" } else { "connected calendars" },
                failed.join("; ")
            ))
        }
    }

    /// Place the user's auto tasks and say where `ts` goes. The caller holds the user's lock.
    pub(super) async fn place(
        &self,
        namespace: &str,
        ts: &TaskSync,
        conn: &CalendarConnection,
    ) -> Result<Placed, EngineError> {
        let now = self.now();
        let own = ts.name_any();
        let current = placed_block(ts);
        if let Err(e) = parse(&ts.spec) {
            return Ok(Placed::Invalid(e));
        }
        let (conns, tasks) = self.user_world(namespace, &conn.spec.user_id, ts).await?;
        let mut entries: Vec<(String, Entry)> = Vec::new();
        for t in &tasks {
            let block = placed_block(t);
            let entry = match parse(&t.spec) {
                Err(e) => Entry::Invalid(e),
                Ok(_) if block.is_some_and(|b| b.start <= now) => {
                    Entry::Started(block.unwrap_or(Interval::new(now, now)))
                }
                Ok(s) => match request(&s, now) {
                    Ok(request) => {
                        Entry::Pack(Box::new(AutoTask { id: t.name_any(), request, current: block }), s.transparent)
                    }
                    Err(why) => Entry::TooLate(why),
                },
            };
            entries.push((t.name_any(), entry));
        }
        let kept_why =
            || ts.status.as_ref().and_then(|s| s.scheduled_reason.clone()).unwrap_or_else(|| "still fits".to_string());
        match entries.iter().find(|(n, _)| *n == own).map(|(_, e)| e) {
            Some(Entry::Invalid(e)) => return Ok(Placed::Invalid(e.clone())),
            Some(Entry::Started(b)) => return Ok(Placed::At { block: *b, why: kept_why(), moved: false }),
            Some(Entry::TooLate(why)) => return Ok(Placed::NoRoom { message: why.clone(), keep: current }),
            _ => {}
        }
        let autos: Vec<(AutoTask, bool)> = entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Pack(a, transparent) => Some(((**a).clone(), *transparent)),
                _ => None,
            })
            .collect();
        // Busy time just outside a window still keeps its buffer clear inside it.
        let pad = autos.iter().map(|(a, _)| a.request.buffer).max().unwrap_or_default();
        let window = Window {
            from: autos.iter().map(|(a, _)| a.request.window.start).min().unwrap_or(now) - pad,
            to: autos.iter().map(|(a, _)| a.request.window.end).max().unwrap_or(now + Duration::days(1)) + pad,
        };
        // One zone for the whole packing (all-day events are read in it), so every task of the
        // user sees the same busy time: the first task's by name.
        let zone = autos.first().map_or(chrono_tz::UTC, |(a, _)| a.request.zone);
        let busy = match self.user_busy(namespace, &conns, window, zone).await {
            Ok(b) => b,
            Err(message) => return Ok(Placed::Unknown { message, keep: current }),
        };
        // Our own busy-written blocks are not busy for the placement.
        let own_opaque: Vec<Interval> =
            scheduling::merge(autos.iter().filter(|(_, transparent)| !transparent).filter_map(|(a, _)| a.current));
        let mut busy = scheduling::interval::subtract(&scheduling::merge(busy), &own_opaque);
        busy.extend(entries.iter().filter_map(|(_, e)| match e {
            Entry::Started(b) => Some(*b),
            _ => None,
        }));
        let tasks: Vec<AutoTask> = autos.into_iter().map(|(a, _)| a).collect();
        let packed = scheduling::pack(&tasks, &busy);
        let Some((_, mine)) = packed.into_iter().find(|(id, _)| *id == own) else {
            return Ok(Placed::Invalid("the task could not be placed".into()));
        };
        Ok(match mine {
            Ok(Placement::Keep(block)) => Placed::At { block, why: kept_why(), moved: false },
            Ok(Placement::Move(slot)) => {
                let block = Interval::new(slot.start, slot.end);
                let why = match current {
                    Some(_) => format!("moved: its old time was taken by busy time; {}", slot.why),
                    None => slot.why,
                };
                Placed::At { block, why, moved: current.is_some() }
            }
            Ok(Placement::NoRoom { message }) => Placed::NoRoom { message, keep: current },
            Err(e) => Placed::Invalid(format!("schedule: {e}")),
        })
    }

    /// Re-evaluate the user's auto-scheduled tasks (a calendar of theirs changed, or one of
    /// their blocks moved), `except` the one asking.
    pub(super) async fn wake_scheduled(&self, namespace: &str, user: &str, except: Option<&str>) {
        let Ok(list) = self.objects.list_task_syncs(Some(namespace), &user_selector(user)).await else { return };
        for t in list {
            if t.spec.schedule.is_some() && t.metadata.deletion_timestamp.is_none() && except != Some(&t.name_any()) {
                self.live.wake(ObjectKey::task_sync(namespace, &t.name_any()));
            }
        }
    }
}
