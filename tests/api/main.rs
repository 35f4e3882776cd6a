//! In-process tests of the REST API (`calsync::api`) on the memory store and calendar, with the
//! real engine reconciling (see `support`).

mod bad_input;
mod changes;
mod connections;
mod edges;
mod events;
mod flow;
mod recurring;
mod support;
mod webhooks;
