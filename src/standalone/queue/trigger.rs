//! Trigger fingerprints of the work queue: what of an object a change notification compares to
//! decide whether to reconcile it (and, for a connection, its TaskSyncs).
//!
//! Owns: which fields count. Must not touch: scheduling (the queue) or the store.

use std::hash::{Hash, Hasher};

use kube::Resource;

use crate::resources::{CalendarConnection, TaskSync};

/// What a notification compares to decide whether to reconcile. Fingerprints, not the fields
/// themselves: one is kept per object (100,000 at scale), and a 64-bit collision (one in ~10^19
/// per change) would at worst delay a reconcile to the next sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Trigger {
    pub own: u64,
    /// For connections: what their TaskSyncs depend on.
    pub dependents: Option<u64>,
    /// For TaskSyncs: the connection they use (the dependents index).
    pub uses: Option<String>,
}

fn fingerprint(value: impl Hash) -> u64 {
    // DefaultHasher::new() has fixed keys: the same fields give the same value within the process.
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn meta_trigger(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    fingerprint((meta.generation, &meta.finalizers, meta.deletion_timestamp.is_some(), &meta.labels, &meta.annotations))
}

pub(super) fn connection_trigger(c: &CalendarConnection) -> Trigger {
    let st = c.status.as_ref();
    let ready = st.map(|s| {
        s.conditions
            .iter()
            .filter(|c| c.type_ == "Ready")
            .map(|c| format!("{:?}/{}", c.status, c.reason))
            .collect::<String>()
    });
    let dependents = fingerprint((
        c.meta().generation,
        c.meta().deletion_timestamp.is_some(),
        ready,
        st.and_then(|s| s.default_calendar_id.as_deref()),
        c.spec.active,
        // Held deletions wait for the guard to let go (a decision), not for the next sweep.
        st.and_then(|s| s.deletion_guard.as_ref()).map(|g| (g.holding(), g.decision.clone())),
    ));
    Trigger { own: meta_trigger(c.meta()), dependents: Some(dependents), uses: None }
}

pub(super) fn task_sync_trigger(t: &TaskSync) -> Trigger {
    Trigger { own: meta_trigger(t.meta()), dependents: None, uses: Some(t.spec.connection_ref.name.clone()) }
}
