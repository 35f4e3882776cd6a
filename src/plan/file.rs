//! `calsync plan -f FILE`: the YAML `calsync apply -f` reads (CalendarConnection, TaskSync, v1
//! Secret), validated the same way, laid over the stored objects in memory as an apply would
//! change them (spec, labels, annotations; generation bumped on a spec change; status,
//! finalizers and uid kept). Nothing is stored.
//!
//! Owns: that overlay. Must not touch: the store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kube::Resource;

use crate::resources::{CalendarConnection, TaskSync, USER_LABEL, user_label_value};
use crate::standalone::cli::{
    API_VERSION, ident, keep_others_metadata, read_source, secret_data, strip_server_fields, unmapped,
};
use crate::standalone::validate::validate;

/// What the files hold.
#[derive(Debug, Default)]
pub struct Overlay {
    pub connections: Vec<CalendarConnection>,
    pub task_syncs: Vec<TaskSync>,
    /// (namespace, name, data)
    pub secrets: Vec<(String, String, BTreeMap<String, Vec<u8>>)>,
}

/// Read and validate every document; the first bad one fails the whole plan (a plan of a
/// partly applied file would mislead).
pub fn read(files: &[PathBuf], default_ns: &str) -> Result<Overlay, String> {
    let mut out = Overlay::default();
    for path in files {
        let file = path.display().to_string();
        let text = read_source(path).map_err(|e| e.to_string())?;
        for mut doc in crate::standalone::cli::documents(&text, &file)? {
            let (api, kind, ns, name) = ident(&doc, default_ns);
            match (api.as_str(), kind.as_str()) {
                ("v1", "Secret") => out.secrets.push((ns.clone(), name.clone(), secret_data(&doc, &name)?)),
                (API_VERSION, "CalendarConnection" | "TaskSync") => {
                    strip_server_fields(&mut doc, &ns);
                    validate(&kind, &doc, None).map_err(|e| e.to_string())?;
                    let typed = |e: serde_json::Error| format!("The {kind} {name:?} is invalid: {e}");
                    if kind == "TaskSync" {
                        out.task_syncs.push(serde_json::from_value(doc).map_err(typed)?);
                    } else {
                        let mut c: CalendarConnection = serde_json::from_value(doc).map_err(typed)?;
                        let label = user_label_value(&c.spec.user_id);
                        c.metadata
                            .labels
                            .get_or_insert_with(BTreeMap::new)
                            .entry(USER_LABEL.to_string())
                            .or_insert(label);
                        out.connections.push(c);
                    }
                }
                _ => return Err(unmapped(&api, &kind, &name, &file)),
            }
        }
    }
    Ok(out)
}

/// What an apply replaces of each kind.
pub trait Applied: Resource + Clone + serde::Serialize {
    const KIND: &'static str;
    fn same_spec(&self, other: &Self) -> bool;
    fn take_spec(&mut self, other: &Self);
}

impl Applied for TaskSync {
    const KIND: &'static str = "TaskSync";
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec(&mut self, other: &Self) {
        self.spec = other.spec.clone();
    }
}

impl Applied for CalendarConnection {
    const KIND: &'static str = "CalendarConnection";
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn take_spec(&mut self, other: &Self) {
        self.spec = other.spec.clone();
    }
}

/// `new` as an apply would leave it over `old` (`None`: a new object). Transition rules
/// (immutable fields) are checked against the stored object, as `apply` does.
pub fn merge<K: Applied>(new: &K, old: Option<&K>) -> Result<K, String> {
    let Some(old) = old else {
        let mut fresh = new.clone();
        let m = fresh.meta_mut();
        // Never recorded anywhere: a fresh uid finds no event under its key, as a new object's.
        m.uid = Some(uuid::Uuid::new_v4().to_string());
        m.generation = Some(1);
        return Ok(fresh);
    };
    let (n, o) = (serde_json::to_value(new).unwrap_or_default(), serde_json::to_value(old).unwrap_or_default());
    validate(K::KIND, &n, Some(&o)).map_err(|e| e.to_string())?;
    let mut merged = old.clone();
    let mut meta = new.meta().clone();
    keep_others_metadata(&mut meta, old.meta());
    let changed = !merged.same_spec(new);
    if changed {
        merged.take_spec(new);
    }
    let m = merged.meta_mut();
    m.labels = meta.labels;
    m.annotations = meta.annotations;
    if changed {
        m.generation = Some(m.generation.unwrap_or(1) + 1);
    }
    Ok(merged)
}
