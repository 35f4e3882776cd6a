//! The bench service's call trace (`CALSYNC_BENCH_TRACE=FILE`): every call's start, end and
//! outcome, written as CSV at the end of a scenario. A per-task timeline: where a task's time
//! goes between its calls (queue waits, backoff, holds), which counters alone cannot show.
//!
//! Owns: recording and writing the trace. Must not touch: what a call does (the service).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use calsync::providers::ProviderError;

use super::{Fault, Op, op_name};

/// One call in the trace.
struct Row {
    start: Duration,
    end: Duration,
    conn: String,
    op: Op,
    object: String,
    outcome: &'static str,
}

pub struct Trace {
    path: PathBuf,
    epoch: Instant,
    rows: Mutex<Vec<Row>>,
}

impl Trace {
    /// A trace when `CALSYNC_BENCH_TRACE` names a file.
    pub fn from_env() -> Option<Trace> {
        let path = PathBuf::from(std::env::var_os("CALSYNC_BENCH_TRACE")?);
        Some(Trace { path, epoch: Instant::now(), rows: Mutex::new(Vec::new()) })
    }

    /// Time since the trace began (a call's start).
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Record a call that began at `start` and answered `out` just now.
    pub fn record<T>(
        &self,
        start: Duration,
        conn: &str,
        op: Op,
        object: &str,
        out: &Result<(T, Option<Fault>), ProviderError>,
    ) {
        let outcome = match out {
            Ok((_, None)) => "ok",
            Ok((_, Some(Fault::Timeout(_)))) => "timeout",
            Ok((_, Some(Fault::Dropped))) => "drop",
            Ok((_, Some(_))) => "fault",
            Err(ProviderError::Transient { .. }) => "5xx",
            Err(ProviderError::RateLimited { message, .. }) if message.contains("injected") => "429",
            Err(ProviderError::RateLimited { .. }) => "quota429",
            Err(_) => "error",
        };
        let row = Row { start, end: self.now(), conn: conn.to_string(), op, object: object.to_string(), outcome };
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).push(row);
    }

    /// Write the CSV: start and end in ms since the service was made, connection, operation,
    /// object, outcome.
    pub fn write(&self) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from("start_ms,end_ms,conn,op,object,outcome\n");
        for r in rows.iter() {
            let _ = writeln!(
                out,
                "{:.1},{:.1},{},{},{},{}",
                r.start.as_secs_f64() * 1000.0,
                r.end.as_secs_f64() * 1000.0,
                r.conn,
                op_name(r.op),
                r.object,
                r.outcome
            );
        }
        std::fs::write(&self.path, out)?;
        Ok(())
    }
}
