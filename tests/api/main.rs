//! In-process tests of the REST API (`calsync::api`) on the memory store and calendar, with the
//! real engine reconciling (see `support`).

mod bad_input;
mod batch;
mod changes;
mod conflicts;
mod connections;
mod edges;
mod events;
mod feeds;
mod flow;
mod preferences;
mod recurring;
mod scheduling;
mod support;
mod webhooks;
