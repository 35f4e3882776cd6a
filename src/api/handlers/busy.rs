//! Busy time of one user across every active connection, for suggest-times: each connection's
//! calendars read through `Provider::busy`, side by side, through the short-lived per-connection
//! cache (`api::busy_cache`). A connection that cannot answer is reported, never taken as free.
//!
//! Owns: which calendars of a connection count and the cache use. Must not touch scheduling
//! decisions or any write.

use std::collections::BTreeSet;

use chrono::Duration;
use chrono_tz::Tz;
use kube::ResourceExt;

use super::import::{calendars_of, read_failed};
use super::provider_for;
use crate::api::busy_cache::BusyKey;
use crate::api::dto::UnavailableCalendar;
use crate::api::errors::ApiError;
use crate::api::state::AppState;
use crate::providers::Window;
use crate::providers::busy::BusyQuery;
use crate::resources::CalendarConnection;

/// Read past the window's end so the next request (whose window starts a little later) still
/// finds this one in the cache.
const READ_AHEAD: Duration = Duration::hours(1);

/// The calendars whose busy time counts: where the connection's tasks go (default, explicit,
/// per category) and the account's primary calendar. Other subscribed calendars (holidays,
/// colleagues') are left out: they are not the user's commitments.
pub fn busy_calendars(conn: &CalendarConnection) -> Vec<String> {
    let mut out: BTreeSet<String> = calendars_of(conn).into_iter().collect();
    // `primary` already names it on Google and Outlook: reading its id too would read it twice.
    if let Some(st) = conn.status.as_ref().filter(|_| !out.contains("primary")) {
        out.extend(st.calendars.iter().filter(|c| c.primary).map(|c| c.id.clone()));
    }
    out.into_iter().collect()
}

fn key(state: &AppState, conn: &CalendarConnection, calendars: &[String], zone: Tz) -> BusyKey {
    let change_count = conn
        .status
        .as_ref()
        .and_then(|s| s.push.as_ref())
        .map_or(0, |p| p.calendars.iter().map(|c| c.change_count).sum());
    BusyKey {
        connection: format!("{}/{}", state.namespace, conn.name_any()),
        generation: conn.metadata.generation.unwrap_or(0),
        change_count,
        calendars: calendars.to_vec(),
        zone: zone.name().to_string(),
    }
}

async fn one(state: &AppState, conn: &CalendarConnection, window: Window, zone: Tz) -> Result<Vec<Window>, ApiError> {
    let calendars = busy_calendars(conn);
    if calendars.is_empty() {
        return Ok(Vec::new());
    }
    let key = key(state, conn, &calendars, zone);
    if let Some(hit) = state.caches.busy.get(&key, &window) {
        return Ok(hit);
    }
    let provider = provider_for(state, conn).await?;
    let covered = Window { from: window.from, to: window.to + READ_AHEAD };
    let account = conn.status.as_ref().and_then(|s| s.account_email.clone());
    let query = BusyQuery { calendars, window: covered, zone, account };
    let spans = provider.busy(&query).await.map_err(|e| read_failed(conn, &e))?;
    state.caches.busy.put(key, covered, spans.clone());
    Ok(spans.into_iter().filter(|s| s.from < window.to && s.to > window.from).collect())
}

/// What the user's connections say.
pub struct Gathered {
    pub spans: Vec<Window>,
    pub unavailable: Vec<UnavailableCalendar>,
    /// The first failure, for when every connection failed.
    pub first_error: Option<ApiError>,
}

pub async fn gather(state: &AppState, conns: &[CalendarConnection], window: Window, zone: Tz) -> Gathered {
    let results = futures::future::join_all(conns.iter().map(|c| one(state, c, window, zone))).await;
    let mut g = Gathered { spans: Vec::new(), unavailable: Vec::new(), first_error: None };
    for (conn, r) in conns.iter().zip(results) {
        match r {
            Ok(spans) => g.spans.extend(spans),
            Err(e) => {
                g.unavailable.push(UnavailableCalendar {
                    calendar_type: conn.spec.provider.as_str().to_string(),
                    error: e.message.clone(),
                    code: e.code.to_string(),
                });
                g.first_error.get_or_insert(e);
            }
        }
    }
    g
}
