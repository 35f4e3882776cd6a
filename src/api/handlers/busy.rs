//! Busy time of one user across every active connection, for suggest-times: each connection's
//! calendars read through `Provider::busy`, side by side, through the short-lived per-connection
//! cache (`engine::busy`, shared with the engine's placement of `spec.schedule` tasks). A
//! connection that cannot answer is reported, never taken as free.
//!
//! Owns: naming the connections that could not answer. Must not touch scheduling decisions or
//! any write.

use chrono_tz::Tz;

use super::import::read_failed;
use super::provider_for;
use crate::api::dto::UnavailableCalendar;
use crate::api::errors::ApiError;
use crate::api::state::AppState;
use crate::engine::busy::{self, ReadError};
use crate::providers::Window;
use crate::resources::CalendarConnection;

async fn one(state: &AppState, conn: &CalendarConnection, window: Window, zone: Tz) -> Result<Vec<Window>, ApiError> {
    busy::read(&state.caches.busy, &state.namespace, conn, window, zone, || provider_for(state, conn)).await.map_err(
        |e| match e {
            ReadError::Connect(e) => e,
            ReadError::Provider(e) => read_failed(conn, &e),
        },
    )
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
