//! The benchmark scenarios of issue 10, one module each (1 and 3 share `bulk`).
//!
//! Owns: nothing but the list. Must not touch: anything outside `bench`.

pub mod batch;
pub mod bulk;
pub mod caldav_import;
pub mod crash;
pub mod cursor;
pub mod live;
pub mod memory;
pub mod rest;
pub mod schedule;
pub mod steady;
pub mod webhooks;
