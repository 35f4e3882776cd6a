//! Error classes shared by every layer: what the engine can do about an error.
//!
//! Owns: the classification. Must not touch: concrete error types (each layer has its own
//! `thiserror` enum and maps itself onto a class).

use std::time::Duration;

/// What a caller can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later; `after` is the server's hint (Retry-After) when it gave one.
    Retry { after: Option<Duration> },
    /// The credentials no longer work: the user must reconnect.
    Reauthenticate,
    /// Retrying the same request cannot succeed; something must change first.
    Permanent,
}
