//! Shared helpers for integration tests: the provider contract suite and, as providers land,
//! the test peers (Radicale, OAuth server, strict fakes).

pub mod app_receiver;
pub mod calsync_bin;
pub mod contract;
pub mod fake_google;
pub mod fake_graph;
pub mod google_world;
pub mod live;
pub mod oidc;
pub mod postgres;
pub mod radicale;
pub mod recording_proxy;
