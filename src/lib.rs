//! calsync: a Kubernetes operator (and a standalone server) that keeps Get It Done! tasks in
//! sync with Google, Outlook and Apple/CalDAV calendars.
//!
//! Layers, dependencies pointing down only (see docs/architecture.md):
//! `engine` (reconcile logic, written once) works through two ports, `engine::Objects`
//! (where resources, credentials and history live) and `providers::Provider` (calendar calls).
//! `resources` are the custom resource types; `credentials` the secret material.

pub mod alloc;
pub mod api;
pub mod controller;
pub mod credentials;
pub mod engine;
pub mod error;
pub mod oauth;
pub mod plan;
pub mod providers;
pub mod resources;
pub mod scheduling;
pub mod secret_files;
pub mod standalone;
pub mod telemetry;
