//! `calsync plan`: a dry run. For every TaskSync it prints what the engine would do now (create,
//! update with the field diff, delete, move, adopt, nothing, or blocked and why), decided by the
//! engine's own `plan` over the inputs the engine derives, with provider reads only. Exit code:
//! 0 nothing would be written, 2 something would, 1 an error.
//!
//! Sources: the standalone database (`--database-url`, read-only) and/or `-f` files laid over
//! it in memory; or the Kubernetes API server (`-n NS` / `-A`, GET and LIST only).
//!
//! Owns: the command. Must not touch: any write. Stores are read-only here, the snapshot
//! refuses writes, and providers come through a `WriteGate` that refuses every write as well.

mod decide;
pub mod diff;
mod file;
mod snapshot;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use decide::{Action, Planned};
pub use snapshot::Snapshot;

use crate::engine::{Labels, Objects, StoreError};
use crate::providers::Connector;
use crate::providers::caldav::guard::AddressPolicy;
use crate::providers::gate::{GatedConnector, WriteGate};

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// `calsync plan`
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Standalone: the database (sqlite://PATH or postgresql://...), opened read-only.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Standalone: YAML file(s) as `calsync apply -f` reads them, laid over the stored objects
    /// in memory (nothing is stored).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Only this namespace (standalone: also the namespace of documents that name none;
    /// Kubernetes: where to read).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: text (default) or json (one object per TaskSync).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// The installation id in the events' ownership marker (as `calsync standalone`/`controller`).
    #[arg(long, env = "CALSYNC_OWNER", default_value = "calsync")]
    pub owner: String,
    /// Seconds to wait for the API server (Kubernetes).
    #[arg(long, env = "CALSYNC_STARTUP_TIMEOUT_SECONDS", default_value_t = 20)]
    pub startup_timeout_seconds: u64,
}

/// Why the dry run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] crate::standalone::secrets::SecretsError),
    #[error(transparent)]
    Startup(#[from] crate::controller::startup::StartupError),
    #[error("{0}")]
    Setup(String),
}

/// Refuses every calendar write: the dry run's belt and braces besides never calling one.
struct NeverWrite;

impl WriteGate for NeverWrite {
    fn refuse(&self, _connection: &str) -> Option<(&'static str, &'static str)> {
        Some(("dry_run", "calsync plan never writes to a calendar"))
    }
}

/// Run the command; the process exit code.
pub fn main(args: PlanArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    let code = match runtime.block_on(run(&args)) {
        Ok(planned) => {
            let _ = out.write_all(render(&planned, args.output).as_bytes());
            exit_code(&planned)
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    };
    let _ = out.flush();
    code
}

/// 1 when any TaskSync could not be planned, else 2 when any would write, else 0.
pub fn exit_code(planned: &[Planned]) -> i32 {
    if planned.iter().any(|p| p.action == Action::Error) {
        1
    } else if planned.iter().any(|p| p.action.writes()) {
        2
    } else {
        0
    }
}

/// Plan every TaskSync in scope.
pub async fn run(args: &PlanArgs) -> Result<Vec<Planned>, PlanError> {
    let standalone = args.database_url.is_some() || !args.files.is_empty();
    let (snapshot, addresses) = if standalone {
        (standalone_snapshot(args).await?, AddressPolicy::local())
    } else if args.namespace.is_some() || args.all_namespaces {
        (kube_snapshot(args).await?, AddressPolicy::public_only())
    } else {
        return Err(PlanError::Usage(
            "say what to plan: --database-url sqlite://PATH and/or -f FILE (standalone), or -n NAMESPACE / -A (Kubernetes)"
                .into(),
        ));
    };
    let snapshot = Arc::new(snapshot);
    let connector = connector(snapshot.clone(), addresses)?;
    let guard = crate::engine::guard::GuardConfig::from_lookup(&|k| std::env::var(k).ok()).map_err(PlanError::Setup)?;
    let planner = decide::Planner {
        objects: &snapshot,
        connector: connector.as_ref(),
        owner: &args.owner,
        guard_enabled: guard.enabled(),
        now: chrono::Utc::now(),
    };
    let scope = if standalone { args.namespace.as_deref() } else { None };
    let mut planned = Vec::new();
    for ((ns, _), ts) in &snapshot.task_syncs {
        if scope.is_none_or(|s| s == ns) {
            planned.push(planner.plan(ts).await);
        }
    }
    Ok(planned)
}

/// The providers this deployment has (CalDAV always, Google/Outlook when configured), behind a
/// gate that refuses every write. Refreshed OAuth tokens would go to the snapshot, which
/// refuses to store them.
fn connector(objects: Arc<Snapshot>, default: AddressPolicy) -> Result<Arc<dyn Connector>, PlanError> {
    let env = |k: &str| crate::secret_files::var(k).filter(|v| !v.trim().is_empty());
    let addresses = AddressPolicy::from_lookup(default, &env).map_err(PlanError::Setup)?;
    let oauth = crate::oauth::config::OAuthConfig::from_env().map_err(|e| PlanError::Setup(e.to_string()))?;
    let vault = Arc::new(crate::engine::vault::ObjectsVault::new(objects));
    let tokens = crate::oauth::token_manager(&oauth, vault).map_err(|e| PlanError::Setup(e.to_string()))?;
    let registry = crate::providers::registry::Registry::configured(&oauth, tokens, addresses)
        .map_err(|e| PlanError::Setup(e.to_string()))?;
    Ok(Arc::new(GatedConnector { inner: Arc::new(registry), gate: Arc::new(NeverWrite), counter: None }))
}

type SecretData = Result<BTreeMap<String, Vec<u8>>, StoreError>;

async fn standalone_snapshot(args: &PlanArgs) -> Result<Snapshot, PlanError> {
    let (mut stored, mut secrets) = (crate::standalone::readonly::Snapshot::default(), BTreeMap::new());
    if let Some(url) = &args.database_url {
        let path = crate::standalone::backend::secrets_path(url).map_err(PlanError::Usage)?;
        // Never generate a key: a fresh one would open nothing.
        let key = crate::standalone::secrets::existing_encryption_key(path.as_deref())?;
        let keys = crate::standalone::secrets::keyring(key)?;
        stored = crate::standalone::readonly::load(url, &keys).await?;
        secrets = std::mem::take(&mut stored.secrets);
    }
    let default_ns = args.namespace.as_deref().unwrap_or("default");
    let overlay = file::read(&args.files, default_ns).map_err(PlanError::Usage)?;
    let mut snap = Snapshot::new(stored.connections, stored.task_syncs);
    for c in overlay.connections {
        let k = Snapshot::key(&c);
        let merged = file::merge(&c, snap.connections.get(&k)).map_err(PlanError::Usage)?;
        snap.connections.insert(k, merged);
    }
    for t in overlay.task_syncs {
        let k = Snapshot::key(&t);
        let merged = file::merge(&t, snap.task_syncs.get(&k)).map_err(PlanError::Usage)?;
        snap.task_syncs.insert(k, merged);
    }
    for (ns, name, data) in overlay.secrets {
        secrets.insert((ns, name), Ok(data));
    }
    snap.credentials = credentials_of(&snap, &secrets);
    Ok(snap)
}

/// Each connection's credentials, parsed from its Secret's data as the store does.
fn credentials_of(
    snap: &Snapshot,
    secrets: &BTreeMap<(String, String), SecretData>,
) -> BTreeMap<(String, String), snapshot::Creds> {
    let mut out = BTreeMap::new();
    for ((ns, _), c) in &snap.connections {
        let r = &c.spec.credentials_secret_ref;
        let creds = match secrets.get(&(ns.clone(), r.name.clone())) {
            None => Ok(None),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(data)) => crate::credentials::from_secret_data(data, r.key.as_deref())
                .map(Some)
                .map_err(|e| StoreError::Invalid(format!("Secret {ns}/{}: {e}", r.name))),
        };
        out.insert((ns.clone(), r.name.clone()), creds);
    }
    out
}

async fn kube_snapshot(args: &PlanArgs) -> Result<Snapshot, PlanError> {
    use crate::controller::KubeObjects;
    let ns = args.namespace.as_deref().filter(|_| !args.all_namespaces);
    let client = crate::controller::startup::connect(Duration::from_secs(args.startup_timeout_seconds), ns).await?;
    let mut objects = KubeObjects::new(client, None);
    // Without ENCRYPTION_KEY, Secrets calsync sealed cannot be opened (reported per TaskSync);
    // plain Secrets a platform team wrote still can.
    if std::env::var("ENCRYPTION_KEY").is_ok_and(|v| !v.trim().is_empty()) {
        let keys = crate::credentials::keys::keyring_from_env().map_err(|e| PlanError::Setup(e.to_string()))?;
        objects = objects.with_sealer(Arc::new(crate::controller::secrets::EnvelopeSealer::new(keys)));
    }
    let none = Labels::new();
    let connections = objects.list_connections(ns, &none).await?;
    let task_syncs = objects.list_task_syncs(ns, &none).await?;
    let mut snap = Snapshot::new(connections, task_syncs);
    let mut creds = BTreeMap::new();
    for ((cns, _), c) in &snap.connections {
        let r = &c.spec.credentials_secret_ref;
        creds.insert((cns.clone(), r.name.clone()), objects.read_credentials(cns, r).await);
    }
    snap.credentials = creds;
    Ok(snap)
}

/// The human form: one line per TaskSync, the diff indented under it, and a summary; or JSON.
pub fn render(planned: &[Planned], format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string_pretty(planned).unwrap_or_default() + "\n";
    }
    let mut s = String::new();
    let width = planned.iter().map(|p| p.namespace.len() + p.name.len() + 1).max().unwrap_or(0);
    for p in planned {
        let id = format!("{}/{}", p.namespace, p.name);
        s.push_str(&format!("{id:width$}  {:7}  {}\n", p.action.as_str(), p.reason));
        for line in diff::render(&p.diff) {
            s.push_str(&format!("    {line}\n"));
        }
    }
    let count = |a: Action| planned.iter().filter(|p| p.action == a).count();
    s.push_str(&format!(
        "Plan: {} to create, {} to update, {} to delete, {} to move, {} to adopt, {} unchanged, {} blocked, {} failed.\n",
        count(Action::Create),
        count(Action::Update),
        count(Action::Delete),
        count(Action::Move),
        count(Action::Adopt),
        count(Action::Nothing),
        count(Action::Blocked),
        count(Action::Error)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credentials;
    use crate::providers::memory::{MemoryCalendar, MemoryConnector};
    use crate::providers::{EventData, EventTime, Marker, ProviderError, Target};
    use crate::resources::ProviderKind;

    fn planned(name: &str, action: Action) -> Planned {
        Planned { namespace: "ns".into(), name: name.into(), action, reason: "why".into(), diff: Vec::new() }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[planned("a", Action::Nothing), planned("b", Action::Blocked)]), 0);
        for writes in [Action::Create, Action::Update, Action::Delete, Action::Move, Action::Adopt] {
            assert_eq!(exit_code(&[planned("a", Action::Nothing), planned("b", writes)]), 2, "{writes:?}");
        }
        // An error wins: the plan is incomplete.
        assert_eq!(exit_code(&[planned("a", Action::Create), planned("b", Action::Error)]), 1);
    }

    #[test]
    fn text_lines_align_and_carry_the_diff() {
        let mut p = planned("change", Action::Update);
        p.diff = vec![diff::Change { field: "title", old: Some("A".into()), new: Some("B".into()) }];
        let text = render(&[planned("a", Action::Nothing), p], Format::Text);
        assert_eq!(
            text,
            "ns/a       nothing  why\nns/change  update   why\n    title: \"A\" → \"B\"\n\
             Plan: 0 to create, 1 to update, 0 to delete, 0 to move, 0 to adopt, 1 unchanged, 0 blocked, 0 failed.\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&[planned("a", Action::Blocked)], Format::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"namespace": "ns", "name": "a", "action": "blocked", "reason": "why", "diff": []}])
        );
    }

    #[tokio::test]
    async fn the_gate_refuses_every_calendar_write_and_lets_reads_through() {
        let service = MemoryCalendar::new();
        service.add_calendar("cal", true);
        service.add_account("u", "p");
        let gated = GatedConnector {
            inner: Arc::new(MemoryConnector { service: service.clone() }),
            gate: Arc::new(NeverWrite),
            counter: None,
        };
        let target = Target { provider: ProviderKind::Caldav, server_url: None, connection: "ns/c".into() };
        let creds = Credentials::Basic { username: "u".into(), password: "p".to_string().into() };
        let p = gated.connect(&target, &creds).await.unwrap();
        let at = EventTime::Date(chrono::NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        let data = EventData {
            title: "t".into(),
            description: None,
            category: None,
            start: at.clone(),
            end: at,
            transparent: false,
            recurrence: vec![],
            exceptions: vec![],
            marker: Marker { owner: "o".into(), uid: "u".into(), task_id: "t".into(), hash: String::new() },
        };
        assert!(matches!(p.create("cal", "k", &data).await, Err(ProviderError::Transient { .. })));
        assert!(matches!(p.update("cal", "id", None, &data).await, Err(ProviderError::Transient { .. })));
        assert!(matches!(p.delete("cal", "id", None).await, Err(ProviderError::Transient { .. })));
        assert_eq!(p.find_by_key("cal", "k").await.unwrap(), None);
        assert!(service.events("cal").is_empty());
    }

    #[tokio::test]
    async fn the_snapshot_refuses_writes() {
        let snap = Snapshot::new(Vec::new(), Vec::new());
        let key = crate::engine::ObjectKey::task_sync("ns", "a");
        assert!(snap.add_finalizer(&key, "f").await.is_err());
        assert!(snap.set_labels(&key, &Labels::new()).await.is_err());
        assert!(snap.delete(&key).await.is_err());
    }
}
