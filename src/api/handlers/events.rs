//! `GET /api/calendar/stream/{user_id}`: the user's app events as Server-Sent Events for the
//! open browser tab — the same types and data as the webhooks, an `id:` on every event,
//! `Last-Event-ID` resume from the last ten minutes, a heartbeat comment every 15 s, at most
//! `CALSYNC_STREAMS_PER_USER` streams per user. Ends when the process shuts down.
//!
//! Owns: the HTTP side of streams. Must not touch: how events are derived (`api::stream`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::api::app_events::AppEvent;
use crate::api::auth::Caller;
use crate::api::dto::Id;
use crate::api::errors::ApiError;
use crate::api::extract::ApiPath;
use crate::api::mapping;
use crate::api::state::AppState;

fn sse(e: &AppEvent) -> Event {
    Event::default().id(e.id.clone()).event(e.kind).data(e.body().to_string())
}

/// Events for one user, as they happen.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let user = mapping::user_id(&Id(user_id))?.to_string();
    caller.authorize(&state, &user)?;
    let hub = state.stream_hub();
    let Some(slot) = hub.open(&user, state.config.streams_per_user) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this user already has {} open event streams; close one (or raise CALSYNC_STREAMS_PER_USER)",
                state.config.streams_per_user
            ),
        ));
    };
    // Subscribe before reading the ring, so nothing falls between replay and live events.
    let live = hub.subscribe();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let replayed = hub.replay(&user, last.as_deref());
    // Live events up to what was replayed (or what the browser already had) are skipped.
    let after = replayed.last().map(|e| e.id.clone()).or(last).as_deref().and_then(AppEvent::order);
    let replay = stream::iter(replayed.into_iter().map(|e| Ok(sse(&e))));
    let closed = hub.closed();
    let live = stream::unfold((live, slot, closed), move |(mut rx, slot, mut closed)| {
        let user = user.clone();
        async move {
            loop {
                let next = tokio::select! {
                    _ = closed.wait_for(|c| *c) => return None,
                    r = rx.recv() => r,
                };
                match next {
                    Ok(e) if e.user_id == user && after.is_none_or(|a| AppEvent::order(&e.id) > Some(a)) => {
                        return Some((Ok(sse(&e)), (rx, slot, closed)));
                    }
                    Ok(_) => continue,
                    // Fell behind: end the stream; the browser reconnects with Last-Event-ID and
                    // the ring fills the gap.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(replay.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("heartbeat")))
}
