//! Request and answer bodies of the conflict endpoints (`GET /conflicts/{user_id}`,
//! `POST /resolve-conflict`).
//!
//! Owns: their JSON shapes. Must not touch: behaviour (handlers::conflicts).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Id;

/// One field of a conflict: the task's value and the calendar's (times in the task's zone).
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ConflictField {
    /// `title`, `start`, `end`, `description` or `category`.
    pub field: String,
    pub task: Option<String>,
    pub calendar: Option<String>,
}

/// A task whose event was edited or deleted in the calendar app and is held for the user.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ConflictInfo {
    pub task_id: String,
    pub event_id: Option<String>,
    /// `google`, `outlook`, `apple` or `caldav`.
    pub calendar_type: String,
    /// The event was deleted in the calendar app (`diff` is empty).
    pub deleted: bool,
    pub detected_at: String,
    /// The calendar version the diff shows; send it back with resolve-conflict so a newer edit
    /// is not overwritten unseen.
    pub version: String,
    /// The zone `start`/`end` values are given in (the task's; `UTC` when it has none).
    pub timezone: String,
    pub diff: Vec<ConflictField>,
}

/// Answer of `GET /conflicts/{user_id}`.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConflictsResponse {
    pub success: bool,
    pub count: usize,
    pub conflicts: Vec<ConflictInfo>,
}

/// `POST /resolve-conflict`: which version to keep, for a task (`task_id`) or its event.
#[derive(Deserialize, ToSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct ResolveConflictRequest {
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub user_id: Id,
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub task_id: Option<Id>,
    #[serde(default)]
    pub event_id: Option<String>,
    /// `task` (write the task's version over the calendar's) or `calendar` (the task follows
    /// the calendar; a deleted event stays deleted and the task is released).
    pub keep: String,
    /// The `version` the user saw (from `GET /conflicts`): a newer edit meanwhile answers 409
    /// `conflict_changed` with the new diff instead.
    #[serde(default)]
    pub version: Option<String>,
}

/// A task as it is after a resolution (the app updates its own copy from this).
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTask {
    pub task_id: String,
    pub name: String,
    /// As stored: local time in `timezone`, RFC 3339, or a date for an all-day task.
    pub scheduled_time: String,
    pub end: Option<String>,
    pub timezone: Option<String>,
    pub all_day: bool,
    pub description: Option<String>,
    pub category: Option<String>,
    pub event_id: Option<String>,
}

/// Answer of resolve-conflict.
#[derive(Serialize, ToSchema, Debug)]
pub struct ResolveConflictResponse {
    pub success: bool,
    pub keep: String,
    /// The task now (absent when released or still pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<ResolvedTask>,
    /// `calendar` for a deleted event: the task is no longer synced (its event stays deleted).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
    /// The engine has not acted within the wait; the choice is recorded and will be applied.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}
