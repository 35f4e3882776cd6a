//! The Kubernetes driver: `KubeObjects` (the engine's `Objects` port on the API server), the
//! kube-runtime controllers, leader election, the health/metrics server, and the REST API on
//! Kubernetes (`api`).
//!
//! Owns: everything that talks to the Kubernetes API for calsync. Must not touch: reconcile
//! decisions (engine) or calendar protocols (providers).

pub mod api;
pub mod feed;
pub mod feeds;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod patches;
pub mod rotate;
pub mod run;
pub mod secrets;
pub mod shards;
pub mod startup;

pub use leader::{Elector, Leadership, LeaseConfig};
pub use metrics::Metrics;
pub use objects::KubeObjects;
pub use run::{Settings, Shutdown, run, shutdown_signal};
pub use shards::{ShardElector, Shards};
