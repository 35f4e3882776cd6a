//! Calendars the user or an app creates (what `calendarId: auto` uses): `POST /me/calendars`
//! (201 with the calendar; a name the mailbox already has, compared case-insensitively as
//! Exchange does for folders, is 409 `ErrorFolderExists`), `GET` and `DELETE /me/calendars/{id}`
//! (the default calendar cannot be deleted; deleting one removes its events).

#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::store::Calendar;
use super::{FakeGraph, Shared, graph_error};

pub fn render(c: &Calendar) -> Value {
    json!({"id": c.id, "name": c.name, "color": "auto", "hexColor": "", "isDefaultCalendar": c.default,
        "canEdit": c.can_edit, "canShare": c.can_edit, "canViewPrivateItems": true, "isRemovable": !c.default,
        "changeKey": "fJKVL07sbkmIfHqjbDnRgQAAAAAA",
        "owner": {"name": "Alex Wilber", "address": "alexw@contoso.example"}})
}

fn create_in(st: &mut super::St, name: &str) -> Result<Value, Response> {
    let name = name.trim();
    if name.is_empty() {
        return Err(graph_error(400, "ErrorInvalidRequest", "The calendar name is missing."));
    }
    if st.calendars.iter().any(|c| c.name.eq_ignore_ascii_case(name)) {
        return Err(graph_error(409, "ErrorFolderExists", "A folder with the specified name already exists."));
    }
    let id = st.new_id("CAL");
    let cal = Calendar { id, name: name.to_string(), default: false, can_edit: true };
    let v = render(&cal);
    st.calendars.push(cal);
    Ok(v)
}

pub async fn create(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return graph_error(400, "BadRequest", "Empty Payload. JSON content expected."),
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return graph_error(400, "ErrorInvalidRequest", "The calendar name is missing.");
    };
    match create_in(&mut s.lock(), name) {
        Ok(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Err(r) => r,
    }
}

pub async fn get_one(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match s.lock().calendar(&id) {
        Some(c) => axum::Json(render(c)).into_response(),
        None => graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store."),
    }
}

pub async fn delete(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = s.lock();
    let Some(i) = st.calendars.iter().position(|c| c.id == id) else {
        return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.");
    };
    if st.calendars[i].default {
        return graph_error(400, "ErrorInvalidRequest", "The default calendar cannot be deleted.");
    }
    st.calendars.remove(i);
    st.events.retain(|_, e| e.calendar != id);
    StatusCode::NO_CONTENT.into_response()
}

impl FakeGraph {
    /// The calendar holding event `id`.
    pub fn event_calendar(&self, id: &str) -> Option<String> {
        self.shared.lock().events.get(id).map(|e| e.calendar.clone())
    }

    /// Ids of the calendars named `name` (case-insensitively).
    pub fn calendars_named(&self, name: &str) -> Vec<String> {
        self.shared
            .lock()
            .calendars
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(name))
            .map(|c| c.id.clone())
            .collect()
    }
}
