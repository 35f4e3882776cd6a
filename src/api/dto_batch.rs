//! Request and answer bodies of `POST /tasks-to-calendar` (many tasks in one request).
//!
//! Owns: their JSON shapes. Must not touch: behaviour (handlers::batch).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Id;

/// Most tasks one batch may carry.
pub const MAX_BATCH: usize = 500;
/// Largest batch body.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// `POST /tasks-to-calendar`: up to 500 tasks of one user. Each item is read on its own, so a
/// bad item fails alone.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct TasksToCalendarRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    /// `task_data` objects, as in task-to-calendar.
    #[schema(value_type = Vec<super::TaskData>, max_items = 500)]
    pub tasks: Vec<serde_json::Value>,
    /// Which connected calendar to use for all of them (default: as task-to-calendar).
    #[serde(default)]
    #[schema(pattern = r"^(google|outlook|apple|caldav)$")]
    pub calendar_type: Option<String>,
}

/// The outcome of one task, in request order.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// The item's task id (absent when the item had none readable).
    pub task_id: Option<String>,
    pub success: bool,
    pub event_id: Option<String>,
    pub event_link: Option<String>,
    /// Still syncing when the answer was sent; the event follows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// No calendar, but the user's ICS feed lists the task.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub feed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Answer of tasks-to-calendar: always 200 once the request itself is valid (partial success
/// is per item).
#[derive(Serialize, ToSchema, Debug)]
pub struct TasksToCalendarResponse {
    pub success: bool,
    pub count: usize,
    pub synced: usize,
    pub pending: usize,
    pub failed: usize,
    pub results: Vec<BatchResult>,
}
