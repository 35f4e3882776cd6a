//! `calsync apply`, `get` and `delete` on the standalone SQLite database, kubectl style: the YAML
//! a platform team writes for Kubernetes (CalendarConnection, TaskSync, v1 Secret) works here,
//! is validated as the API server would (`validate`), and prints what kubectl prints.
//!
//! Owns: the commands' arguments, document handling and output. Must not touch: reconciles (a
//! running `calsync standalone` acts on what these commands store) or SQL (the store does it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{Value, json};

use super::backend::{self, Store};
use super::db::DEFAULT_DATABASE_URL;
use super::validate::validate;
use super::{secrets, table};
use crate::engine::{Deletion, Kind, Labels, ObjectKey, Objects, StoreError};
use crate::resources::{CalendarConnection, GROUP, TaskSync, USER_LABEL, user_label_value};

pub(crate) const API_VERSION: &str = "calendar.getitdone.app/v1alpha1";

/// Where the database is (shared by the three commands).
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// sqlite://PATH, sqlite::memory: or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Namespace to work in (with -f: for documents that name none).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// `calsync apply -f FILE...`
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// YAML file(s) with one or more documents (`-` reads standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Output format of `get`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Yaml,
    Json,
    Wide,
}

/// `calsync get KIND [NAME...]`
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// calendarconnections (calconn) or tasksyncs (tsync).
    pub kind: String,
    /// Names; all objects of the namespace when none.
    pub names: Vec<String>,
    /// Output format (default: a table with the printer columns).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `calsync delete -f FILE | KIND NAME...`
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// YAML file(s) naming the objects to delete.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// KIND NAME... (when no -f).
    pub args: Vec<String>,
    /// Succeed when an object does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Why a command failed. Per-document failures are printed as they happen; `Failed` counts them.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{count} object(s) could not be processed; see the errors above")]
    Failed { count: usize },
}

/// Open the database named by `args`, with the configured or generated ENCRYPTION_KEY.
pub async fn open_store(args: &StoreArgs, err: &mut dyn Write) -> Result<Store, CliError> {
    let path = backend::secrets_path(&args.database_url).map_err(CliError::Usage)?;
    let (key, file) = secrets::encryption_key(path.as_deref())?;
    if let Some(f) = file.filter(|f| f.generated) {
        let _ = writeln!(err, "{}", f.notice());
    }
    Ok(Store::open(&args.database_url, secrets::keyring(key)?).await?)
}

fn resource(kind: Kind) -> &'static str {
    match kind {
        Kind::CalendarConnection => "calendarconnection",
        Kind::TaskSync => "tasksync",
    }
}

/// `calendarconnections`, `calconn`, `tsync`, ... → kind.
pub fn parse_kind(s: &str) -> Result<Kind, CliError> {
    let s = s.to_ascii_lowercase();
    let s = s.strip_suffix(&format!(".{GROUP}")).unwrap_or(&s);
    match s {
        "calendarconnection" | "calendarconnections" | "calconn" | "calconns" => Ok(Kind::CalendarConnection),
        "tasksync" | "tasksyncs" | "tsync" | "tsyncs" => Ok(Kind::TaskSync),
        other => Err(CliError::Usage(format!(
            "the server doesn't have a resource type {other:?}; use calendarconnections (calconn) or tasksyncs (tsync)"
        ))),
    }
}

pub(crate) fn read_source(path: &PathBuf) -> Result<String, CliError> {
    let shown = path.display().to_string();
    if shown == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|error| CliError::Read { path: shown, error })?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|error| CliError::Read { path: shown, error })
}

/// The documents of a YAML stream (empty ones skipped).
pub fn documents(text: &str, file: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de).map_err(|e| format!("error parsing {file} (document {}): {e}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

pub(crate) fn ident(doc: &Value, default_ns: &str) -> (String, String, String, String) {
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let ns = Some(s("/metadata/namespace")).filter(|n| !n.is_empty()).unwrap_or_else(|| default_ns.to_string());
    (s("/apiVersion"), s("/kind"), ns, s("/metadata/name"))
}

pub(crate) fn unmapped(api: &str, kind: &str, name: &str, file: &str) -> String {
    format!(
        "error: resource mapping not found for name: {name:?} from {file:?}: no matches for kind {kind:?} in version {api:?}; calsync standalone knows CalendarConnection and TaskSync ({API_VERSION}) and Secret (v1)"
    )
}

/// Remove what the server sets (Kubernetes ignores these fields in a request too).
pub(crate) fn strip_server_fields(doc: &mut Value, ns: &str) {
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in ["uid", "generation", "creationTimestamp", "deletionTimestamp", "managedFields", "finalizers"] {
            meta.remove(f);
        }
        meta.insert("namespace".into(), Value::String(ns.to_string()));
    }
    if let Some(o) = doc.as_object_mut() {
        o.remove("status");
    }
}

/// Labels and annotations others set (the engine labels TaskSyncs) survive a re-apply, as with
/// kubectl's merge; the file's values win.
pub(crate) fn keep_others_metadata(new: &mut ObjectMeta, old: &ObjectMeta) {
    for (mine, theirs) in [(&mut new.labels, &old.labels), (&mut new.annotations, &old.annotations)] {
        if let Some(theirs) = theirs {
            let merged = mine.get_or_insert_with(BTreeMap::new);
            for (k, v) in theirs {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// A Secret document's `data` (base64) and `stringData` (text, winning on the same key) as the
/// API server merges them; `apply` and `plan -f` read Secrets through this.
pub(crate) fn secret_data(doc: &Value, name: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let invalid = |cause: String| format!("The Secret {name:?} is invalid: {cause}");
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(map) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in map {
            let text = v.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| {
                invalid(format!("data[{k}]: Invalid value: illegal base64 data; use stringData for plain text"))
            })?;
            data.insert(k.clone(), bytes);
        }
    }
    if let Some(map) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            data.insert(k.clone(), text.into_bytes());
        }
    }
    Ok(data)
}

async fn apply_secret(store: &Store, doc: &Value, ns: &str, name: &str) -> Result<String, String> {
    let invalid = |cause: String| format!("The Secret {name:?} is invalid: {cause}");
    if name.is_empty() {
        return Err(invalid("metadata.name: Required value".into()));
    }
    let data = secret_data(doc, name)?;
    let before = store.get_secret(ns, name).await.ok().flatten();
    if before.as_ref() == Some(&data) {
        return Ok(format!("secret/{name} unchanged"));
    }
    let created = store.put_secret(ns, name, data).await.map_err(|e| format!("error: secret/{name}: {e}"))?;
    Ok(format!("secret/{name} {}", if created { "created" } else { "configured" }))
}

async fn apply_doc(store: &Store, mut doc: Value, default_ns: &str, file: &str) -> Result<String, String> {
    let (api, kind, ns, name) = ident(&doc, default_ns);
    match (api.as_str(), kind.as_str()) {
        ("v1", "Secret") => return apply_secret(store, &doc, &ns, &name).await,
        (API_VERSION, "CalendarConnection" | "TaskSync") => {}
        _ => return Err(unmapped(&api, &kind, &name, file)),
    }
    strip_server_fields(&mut doc, &ns);
    validate(&kind, &doc, None).map_err(|e| e.to_string())?;
    let k = if kind == "TaskSync" { Kind::TaskSync } else { Kind::CalendarConnection };
    let what = format!("{}.{GROUP}/{name}", resource(k));
    let fail = |e: StoreError| format!("error: {what}: {e}");
    let typed_err = |e: serde_json::Error| format!("The {kind} {name:?} is invalid: {e}");
    let verb = match k {
        Kind::TaskSync => {
            let mut new: TaskSync = serde_json::from_value(doc).map_err(typed_err)?;
            let old = store.get_task_sync(&ns, &name).await.map_err(fail)?;
            if let Some(old) = &old {
                keep_others_metadata(&mut new.metadata, &old.metadata);
                if old.spec == new.spec
                    && old.metadata.labels == new.metadata.labels
                    && old.metadata.annotations == new.metadata.annotations
                {
                    return Ok(format!("{what} unchanged"));
                }
                // Transition rules (immutable fields) need the stored object.
                let (n, o) =
                    (serde_json::to_value(&new).unwrap_or_default(), serde_json::to_value(old).unwrap_or_default());
                validate(&kind, &n, Some(&o)).map_err(|e| e.to_string())?;
            }
            store.apply_task_sync(&new).await.map_err(fail)?;
            if old.is_some() { "configured" } else { "created" }
        }
        Kind::CalendarConnection => {
            let mut new: CalendarConnection = serde_json::from_value(doc).map_err(typed_err)?;
            // The REST API finds a user's connections by this label; the API sets it on the
            // connections it makes, so `apply` does the same for YAML-made ones.
            new.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .entry(USER_LABEL.to_string())
                .or_insert_with(|| user_label_value(&new.spec.user_id));
            let old = store.get_connection(&ns, &name).await.map_err(fail)?;
            if let Some(old) = &old {
                keep_others_metadata(&mut new.metadata, &old.metadata);
                if old.spec == new.spec
                    && old.metadata.labels == new.metadata.labels
                    && old.metadata.annotations == new.metadata.annotations
                {
                    return Ok(format!("{what} unchanged"));
                }
                // Transition rules (immutable fields) need the stored object.
                let (n, o) =
                    (serde_json::to_value(&new).unwrap_or_default(), serde_json::to_value(old).unwrap_or_default());
                validate(&kind, &n, Some(&o)).map_err(|e| e.to_string())?;
            }
            store.apply_connection(&new).await.map_err(fail)?;
            if old.is_some() { "configured" } else { "created" }
        }
    };
    Ok(format!("{what} {verb}"))
}

/// `calsync apply`: every document of every file; failures are reported and counted, the rest
/// still applied (as kubectl does).
pub async fn apply(store: &Store, args: &ApplyArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    let mut failed = 0;
    for path in &args.files {
        let file = path.display().to_string();
        let docs = match documents(&read_source(path)?, &file) {
            Ok(d) => d,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                failed += 1;
                continue;
            }
        };
        for doc in docs {
            match apply_doc(store, doc, &args.store.namespace, &file).await {
                Ok(line) => {
                    let _ = writeln!(out, "{line}");
                }
                Err(e) => {
                    let _ = writeln!(err, "{e}");
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 { Err(CliError::Failed { count: failed }) } else { Ok(()) }
}

async fn fetch(store: &Store, kind: Kind, ns: &str, name: &str) -> Result<Option<Value>, StoreError> {
    Ok(match kind {
        Kind::CalendarConnection => store.get_connection(ns, name).await?.and_then(|o| serde_json::to_value(o).ok()),
        Kind::TaskSync => store.get_task_sync(ns, name).await?.and_then(|o| serde_json::to_value(o).ok()),
    })
}

fn not_found(kind: Kind, name: &str) -> String {
    format!("Error from server (NotFound): {}s.{GROUP} {name:?} not found", resource(kind))
}

/// `calsync get`.
pub async fn get(store: &Store, args: &GetArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    let kind = parse_kind(&args.kind)?;
    let ns = args.store.namespace.as_str();
    let mut items = Vec::new();
    let mut failed = 0;
    if args.names.is_empty() {
        let scope = if args.all_namespaces { None } else { Some(ns) };
        items = match kind {
            Kind::CalendarConnection => store
                .list_connections(scope, &Labels::new())
                .await?
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
            Kind::TaskSync => store
                .list_task_syncs(scope, &Labels::new())
                .await?
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
        };
    } else {
        for name in &args.names {
            match fetch(store, kind, ns, name).await? {
                Some(v) => items.push(v),
                None => {
                    let _ = writeln!(err, "{}", not_found(kind, name));
                    failed += 1;
                }
            }
        }
    }
    let single = args.names.len() == 1 && items.len() == 1;
    let doc = if single {
        items[0].clone()
    } else {
        json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
    };
    match args.output {
        Some(Output::Json) => {
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Some(Output::Yaml) => {
            let _ = write!(out, "{}", serde_yaml_ng::to_string(&doc).unwrap_or_default());
        }
        None | Some(Output::Wide) => {
            if items.is_empty() {
                if failed == 0 {
                    let where_ = if args.all_namespaces { String::new() } else { format!(" in {ns} namespace") };
                    let _ = writeln!(err, "No resources found{where_}.");
                }
            } else {
                let kind_name = match kind {
                    Kind::CalendarConnection => "CalendarConnection",
                    Kind::TaskSync => "TaskSync",
                };
                let table = table::render(kind_name, &items, args.all_namespaces, chrono::Utc::now());
                let _ = write!(out, "{table}");
            }
        }
    }
    if failed > 0 { Err(CliError::Failed { count: failed }) } else { Ok(()) }
}

async fn delete_one(store: &Store, kind: Kind, ns: &str, name: &str, ignore: bool) -> Result<Option<String>, String> {
    let what = format!("{}.{GROUP} {name:?}", resource(kind));
    let key = ObjectKey { kind, namespace: ns.to_string(), name: name.to_string() };
    match store.delete(&key).await.map_err(|e| format!("error: {what}: {e}"))? {
        Deletion::Deleted => Ok(Some(format!("{what} deleted"))),
        Deletion::Marked => Ok(Some(format!(
            "{what} marked for deletion; a running `calsync standalone` removes its calendar event, then the object"
        ))),
        Deletion::NotFound if ignore => Ok(None),
        Deletion::NotFound => Err(not_found(kind, name)),
    }
}

/// What `delete` removes: a kind (`None` = Secret), namespace, name.
type Target = (Option<Kind>, String, String);

/// `calsync delete`.
pub async fn delete(
    store: &Store,
    args: &DeleteArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let ns = args.store.namespace.as_str();
    let mut targets: Vec<Result<Target, String>> = Vec::new();
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            return Err(CliError::Usage("use either -f FILE or KIND NAME, not both".into()));
        }
        for path in &args.files {
            let file = path.display().to_string();
            for doc in documents(&read_source(path)?, &file).map_err(CliError::Usage)? {
                let (api, kind, dns, name) = ident(&doc, ns);
                targets.push(match (api.as_str(), kind.as_str()) {
                    ("v1", "Secret") => Ok((None, dns, name)),
                    (API_VERSION, "CalendarConnection") => Ok((Some(Kind::CalendarConnection), dns, name)),
                    (API_VERSION, "TaskSync") => Ok((Some(Kind::TaskSync), dns, name)),
                    _ => Err(unmapped(&api, &kind, &name, &file)),
                });
            }
        }
    } else {
        let Some((kind, names)) = args.args.split_first() else {
            return Err(CliError::Usage(
                "you must specify -f FILE or KIND NAME (e.g. calsync delete tsync my-task)".into(),
            ));
        };
        if names.is_empty() {
            return Err(CliError::Usage(format!(
                "resource(s) were provided, but no name was specified: calsync delete {kind} NAME"
            )));
        }
        let secret = matches!(kind.as_str(), "secret" | "secrets");
        let kind = if secret { None } else { Some(parse_kind(kind)?) };
        targets.extend(names.iter().map(|n| Ok((kind, ns.to_string(), n.clone()))));
    }
    let mut failed = 0;
    for t in targets {
        let result = match t {
            Err(e) => Err(e),
            Ok((None, ns, name)) => match store.delete_secret(&ns, &name).await {
                Ok(true) => Ok(Some(format!("secret {name:?} deleted"))),
                Ok(false) if args.ignore_not_found => Ok(None),
                Ok(false) => Err(format!("Error from server (NotFound): secrets {name:?} not found")),
                Err(e) => Err(format!("error: secret {name:?}: {e}")),
            },
            Ok((Some(kind), ns, name)) => delete_one(store, kind, &ns, &name, args.ignore_not_found).await,
        };
        match result {
            Ok(Some(line)) => {
                let _ = writeln!(out, "{line}");
            }
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(err, "{e}");
                failed += 1;
            }
        }
    }
    if failed > 0 { Err(CliError::Failed { count: failed }) } else { Ok(()) }
}
