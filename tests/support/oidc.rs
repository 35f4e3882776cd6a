//! A real OAuth 2.0 authorization server (panva's `oidc-provider`, npm) for tests: the Google and
//! Microsoft authorization-code + PKCE + refresh flows run against it.
//!
//! On first use the pinned package (`tests/support/oidc/package.json` + lockfile) is installed with
//! `npm ci` into `~/.cache/calsync/peers/` (override the root with `CALSYNC_PEERS_DIR`), keyed by
//! version and lockfile hash; the install happens in a private directory renamed into place, so
//! parallel test binaries never see a half install. Each `OidcServer::start` runs its own node
//! process on a port it binds itself (no port race), with headless consent (`login_hint` names the
//! account, `login_hint=deny` is the user refusing), PKCE S256 required, opaque access tokens with
//! a chosen TTL carrying exactly the requested calendar scopes, refresh tokens always issued and
//! optionally rotated. A start that stalls (30 s without listening) is killed and retried, at most
//! three times, its stage log and per-thread kernel state kept for the failure message. The process
//! is killed on drop. A peer that cannot be installed or started
//! FAILS the test (panics); it never skips. This module must not touch calsync's own code paths:
//! it speaks the wire protocol with plain reqwest only.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";
const PACKAGE_JSON: &str = include_str!("oidc/package.json");
const PACKAGE_LOCK: &str = include_str!("oidc/package-lock.json");
const SERVER_MJS: &str = include_str!("oidc/server.mjs");

/// The scopes calsync asks Google for.
pub const GOOGLE_SCOPES: &str = "openid email https://www.googleapis.com/auth/calendar.events \
                                 https://www.googleapis.com/auth/calendar.calendarlist.readonly \
                                 https://www.googleapis.com/auth/calendar.freebusy";
/// The scopes calsync asks Microsoft for.
pub const OUTLOOK_SCOPES: &str = "openid email offline_access Calendars.ReadWrite";

fn peers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CALSYNC_PEERS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("calsync").join("peers")
}

fn run(cmd: &mut Command, what: &str) {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("{what}: could not run (is Node.js 20+ with npm installed?): {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory holding `node_modules/oidc-provider` (installing it on first use).
pub fn install_dir() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lock_hash = hex(&Sha256::digest(PACKAGE_LOCK.as_bytes())[..6]);
    let name = format!("oidc-provider-{OIDC_PROVIDER_VERSION}-{lock_hash}");
    let dir = peers_dir().join(&name);
    if dir.join(".installed").exists() {
        return dir;
    }
    std::fs::create_dir_all(peers_dir()).expect("create the peers cache dir");
    let tmp = peers_dir().join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create the oidc-provider install dir");
    std::fs::write(tmp.join("package.json"), PACKAGE_JSON).expect("write package.json");
    std::fs::write(tmp.join("package-lock.json"), PACKAGE_LOCK).expect("write package-lock.json");
    run(
        Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&tmp),
        "npm ci (oidc-provider)",
    );
    std::fs::write(tmp.join(".installed"), OIDC_PROVIDER_VERSION).expect("mark oidc-provider installed");
    if std::fs::rename(&tmp, &dir).is_ok() {
        return dir;
    }
    if dir.join(".installed").exists() {
        // Another process won the race; use its install.
        let _ = std::fs::remove_dir_all(&tmp);
        return dir;
    }
    // Something else occupies the cache path (an interrupted or foreign install): use ours.
    tmp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A confidential client (`client_secret_basic`) registered at the server.
#[derive(Clone)]
pub struct OidcClient {
    pub id: String,
    pub secret: String,
    pub redirect_uris: Vec<String>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

impl OidcClient {
    pub fn new(id: &str, secret: &str, redirect_uris: &[&str]) -> OidcClient {
        OidcClient {
            id: id.to_string(),
            secret: secret.to_string(),
            redirect_uris: redirect_uris.iter().map(|u| u.to_string()).collect(),
        }
    }

    /// A client whose redirect URIs are calsync's Google and Outlook callbacks under `api_base`
    /// (e.g. `http://127.0.0.1:5000`), with a random secret.
    pub fn calsync(id: &str, api_base: &str) -> OidcClient {
        let base = api_base.trim_end_matches('/');
        OidcClient {
            id: id.to_string(),
            secret: format!("secret-{}", uuid::Uuid::new_v4().simple()),
            redirect_uris: vec![
                format!("{base}/api/calendar/google/callback"),
                format!("{base}/api/calendar/outlook/callback"),
            ],
        }
    }
}

#[derive(Clone, Debug)]
pub struct OidcOptions {
    pub clients: Vec<OidcClient>,
    /// Lifetime of access tokens; short ones (a few seconds) force refreshes.
    pub access_token_ttl_secs: u64,
    /// Microsoft-like: every refresh returns a new refresh token, and reusing a rotated one
    /// revokes the whole grant. Off is Google-like (the refresh token stays).
    pub rotate_refresh_tokens: bool,
}

impl Default for OidcOptions {
    /// One client `calsync-test` for calsync's callbacks at `http://127.0.0.1:5000`, 1 h tokens.
    fn default() -> OidcOptions {
        OidcOptions {
            clients: vec![OidcClient::calsync("calsync-test", "http://127.0.0.1:5000")],
            access_token_ttl_secs: 3600,
            rotate_refresh_tokens: false,
        }
    }
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce_pair() -> (String, String) {
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The parsed answer of the token endpoint.
pub struct TokenReply {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenReply({}, {})", self.status, self.redacted())
    }
}

impl TokenReply {
    /// The body with token values replaced, for failure messages.
    pub fn redacted(&self) -> Value {
        let mut body = self.body.clone();
        if let Value::Object(map) = &mut body {
            for (k, v) in map.iter_mut() {
                if k.ends_with("token") {
                    *v = Value::String("<redacted>".into());
                }
            }
        }
        body
    }
    pub fn access_token(&self) -> &str {
        self.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {}: {}", self.status, self.redacted()))
    }
    pub fn refresh_token(&self) -> &str {
        self.body["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh_token in {}: {}", self.status, self.redacted()))
    }
    pub fn error(&self) -> Option<&str> {
        self.body["error"].as_str()
    }
}

/// A running oidc-provider.
pub struct OidcServer {
    child: Child,
    dir: tempfile::TempDir,
    /// Which start attempt is running (its log is `oidc-N.log`).
    attempt: u32,
    issuer: String,
    pub options: OidcOptions,
    http: reqwest::Client,
}

impl OidcServer {
    pub fn start(options: OidcOptions) -> OidcServer {
        assert!(!options.clients.is_empty(), "OidcServer needs at least one client");
        let install = install_dir();
        let dir = tempfile::tempdir().expect("temp dir for oidc-provider");
        // The script sits beside a node_modules link so ESM resolution finds the cached package.
        std::fs::write(dir.path().join("server.mjs"), SERVER_MJS).expect("write server.mjs");
        std::os::unix::fs::symlink(install.join("node_modules"), dir.path().join("node_modules"))
            .expect("link node_modules");
        let config = json!({
            "port": 0,
            "access_token_ttl_secs": options.access_token_ttl_secs,
            "rotate_refresh_tokens": options.rotate_refresh_tokens,
            "clients": options.clients.iter().map(|c| json!({
                "client_id": c.id, "client_secret": c.secret, "redirect_uris": c.redirect_uris,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write oidc config");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("oidc http client");
        // A start normally takes under half a second. On CI one start stalled after the module
        // load for the whole 90 s wait (and once for over 30 s), with the machine otherwise idle:
        // a stuck process, not a slow one. So each attempt gets START_WAIT, a stuck one is killed
        // (its stage log and kernel state kept for the failure message) and a fresh process tried.
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut child = spawn_node(dir.path(), attempt);
            match wait_listening(&mut child, dir.path(), attempt) {
                Ok(issuer) => {
                    if !failures.is_empty() {
                        eprintln!(
                            "oidc-provider started on attempt {attempt}; earlier attempts:\n{}",
                            failures.join("\n")
                        );
                    }
                    return OidcServer { child, dir, attempt, issuer, options, http };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!("attempt {attempt}: {why}"));
                }
            }
        }
        panic!("oidc-provider did not start in {START_ATTEMPTS} attempts:\n{}", failures.join("\n"));
    }

    /// What the node process printed (startup stages, warnings, error events; never tokens).
    pub fn log(&self) -> String {
        read_log(self.dir.path(), self.attempt)
    }

    /// `http://127.0.0.1:PORT` (no trailing slash), also the `iss` of callbacks.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn auth_url(&self) -> String {
        format!("{}/auth", self.issuer)
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }
    pub fn revocation_url(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }
    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }
    /// The first client.
    pub fn client(&self) -> &OidcClient {
        &self.options.clients[0]
    }

    /// An authorization URL for `client` with PKCE S256 and Google's extra parameters
    /// (`access_type=offline`, `include_granted_scopes=true`), plus `extra`.
    pub fn authorization_url(
        &self,
        client: &OidcClient,
        scope: &str,
        state: &str,
        code_challenge: &str,
        extra: &[(&str, &str)],
    ) -> String {
        let mut url = reqwest::Url::parse(&self.auth_url()).expect("auth url");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", &client.redirect_uris[0])
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("access_type", "offline")
            .append_pair("include_granted_scopes", "true");
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        url.to_string()
    }

    /// Plays the user's browser (fresh cookie store): follows redirects from `authorization_url`
    /// while they stay on the issuer, and returns the first Location outside it (the client's
    /// `redirect_uri?code=..&state=..&iss=..` or `?error=..`) without requesting it.
    pub async fn follow_authorization(&self, authorization_url: &str) -> String {
        let issuer = reqwest::Url::parse(&self.issuer).expect("issuer url");
        let origin = issuer.origin();
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > 10 {
                    attempt.error("more than 10 redirects inside the authorization server")
                } else if attempt.url().origin() == origin {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .expect("browser client");
        let resp = browser
            .get(authorization_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("authorization request failed: {e}\n{}", self.log()));
        let status = resp.status();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            let body = resp.text().await.unwrap_or_default();
            panic!("authorization did not redirect out of the issuer ({status}): {body}\n{}", self.log());
        };
        resp.url().join(&location).map(|u| u.to_string()).unwrap_or(location)
    }

    /// POSTs a form to the token endpoint with `client_secret_basic`.
    pub async fn token_request(&self, client: &OidcClient, form: &[(&str, &str)]) -> TokenReply {
        let resp = self
            .http
            .post(self.token_url())
            .basic_auth(&client.id, Some(&client.secret))
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("token request failed: {e}\n{}", self.log()));
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        TokenReply { status, body }
    }

    /// Runs the whole flow for the first client as user `login_hint`: authorize (PKCE S256),
    /// exchange the code. Panics unless the server issued tokens.
    pub async fn issue_tokens(&self, scope: &str, login_hint: &str) -> TokenReply {
        let client = self.client().clone();
        let (verifier, challenge) = pkce_pair();
        let url = self.authorization_url(&client, scope, "st", &challenge, &[("login_hint", login_hint)]);
        let callback = self.follow_authorization(&url).await;
        let code = query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}"));
        let reply = self
            .token_request(
                &client,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", &client.redirect_uris[0]),
                    ("code_verifier", &verifier),
                ],
            )
            .await;
        assert_eq!(reply.status, 200, "code exchange failed: {}\n{}", reply.redacted(), self.log());
        reply
    }

    /// RFC 7662 introspection with the given client's Basic credentials.
    pub async fn introspect(&self, token: &str, client_id: &str, client_secret: &str) -> Value {
        let resp = self
            .http
            .post(self.introspection_url())
            .basic_auth(client_id, Some(client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("introspection request failed: {e}\n{}", self.log()));
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "introspection answered {status}: {body}\n{}", self.log());
        body
    }

    /// RFC 7009 revocation; returns the HTTP status (200 also for unknown tokens).
    pub async fn revoke(&self, client: &OidcClient, token: &str, hint: Option<&str>) -> u16 {
        let mut form = vec![("token", token)];
        if let Some(h) = hint {
            form.push(("token_type_hint", h));
        }
        let resp = self
            .http
            .post(self.revocation_url())
            .basic_auth(&client.id, Some(&client.secret))
            .form(&form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("revocation request failed: {e}\n{}", self.log()));
        resp.status().as_u16()
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const START_ATTEMPTS: u32 = 3;
const START_WAIT: Duration = Duration::from_secs(30);

fn log_name(attempt: u32) -> String {
    format!("oidc-{attempt}.log")
}

fn read_log(dir: &std::path::Path, attempt: u32) -> String {
    std::fs::read_to_string(dir.join(log_name(attempt))).unwrap_or_default()
}

fn spawn_node(dir: &std::path::Path, attempt: u32) -> Child {
    let log = std::fs::File::create(dir.join(log_name(attempt))).expect("oidc log file");
    Command::new("node")
        .arg(dir.join("server.mjs"))
        .arg(dir.join("config.json"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start oidc-provider with node (is Node.js 20+ installed?): {e}"))
}

/// The issuer once the server prints `listening ISSUER`; on exit or timeout, why (its log, and for
/// a stuck process what each of its threads waits on).
fn wait_listening(child: &mut Child, dir: &std::path::Path, attempt: u32) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let log = read_log(dir, attempt);
        if let Some(issuer) = log.lines().find_map(|l| l.strip_prefix("listening ")) {
            return Ok(issuer.trim().to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early ({status}) after {:?}:\n{log}", started.elapsed()));
        }
        if started.elapsed() > START_WAIT {
            return Err(format!("not listening after {START_WAIT:?}; log:\n{log}\n{}", process_state(child.id())));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Load average and, per thread of `pid`, its state, kernel wait channel and CPU ticks: enough
/// to tell a process blocked in the kernel (e.g. on getrandom) from one spinning or starved.
fn process_state(pid: u32) -> String {
    let mut out = format!("loadavg: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect::<Vec<_>>());
    for task in tasks.unwrap_or_default() {
        let path = task.path();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is the 1st, utime/stime the 12th/13th.
        let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let wchan = std::fs::read_to_string(path.join("wchan")).unwrap_or_default();
        out.push_str(&format!(
            "\nthread {} {}: state {} wchan {} utime {} stime {}",
            task.file_name().to_string_lossy(),
            comm.trim(),
            fields.first().unwrap_or(&"?"),
            wchan.trim(),
            fields.get(11).unwrap_or(&"?"),
            fields.get(12).unwrap_or(&"?"),
        ));
    }
    out
}

/// The first value of query parameter `name` in `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
