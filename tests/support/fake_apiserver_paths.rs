//! How the fake API server reads a request: the resource a path names, query parameters,
//! label selectors.

use serde_json::Value;

/// Which resource a path names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ResourceType {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
}

impl ResourceType {
    pub(super) fn is_custom(&self) -> bool {
        self.group == "calendar.getitdone.app"
    }
    pub(super) fn kind(&self) -> &'static str {
        match self.plural.as_str() {
            "tasksyncs" => "TaskSync",
            "calendarconnections" => "CalendarConnection",
            "secrets" => "Secret",
            "events" => "Event",
            "leases" => "Lease",
            _ => "Unknown",
        }
    }
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
    pub(super) fn known(&self) -> bool {
        matches!(
            (self.group.as_str(), self.plural.as_str()),
            ("calendar.getitdone.app", "tasksyncs" | "calendarconnections")
                | ("", "secrets")
                | ("events.k8s.io", "events")
                | ("coordination.k8s.io", "leases")
        )
    }
}

pub(super) struct Parsed {
    pub(super) rt: ResourceType,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) status: bool,
}

pub(super) fn parse_path(path: &str) -> Option<Parsed> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match *seg.first()? {
        "api" => ("", *seg.get(1)?, &seg[2..]),
        "apis" => (*seg.get(1)?, *seg.get(2)?, &seg[3..]),
        _ => return None,
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = rest.first()?.to_string();
    let name = rest.get(1).map(|s| s.to_string());
    let status = match rest.get(2) {
        None => false,
        Some(&"status") => true,
        Some(_) => return None,
    };
    Some(Parsed { rt: ResourceType { group: group.into(), version: version.into(), plural }, namespace, name, status })
}

pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn labels_match(obj: &Value, selector: Option<&str>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').map(|(k, v)| (k.trim_end_matches('='), v)).unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// A list's `continue` token, shaped like the real server's: base64 of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"NAMESPACE/NAME"}` (opaque to clients).
pub(super) fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    use base64::Engine as _;
    let token = serde_json::json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": format!("{namespace}/{name}") });
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

/// The list's resourceVersion and the (namespace, name) the next page starts after; `None` for
/// a token this server did not make.
pub(super) fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let (namespace, name) = v["start"].as_str()?.split_once('/')?;
    Some((v["rv"].as_u64()?, (namespace.to_string(), name.to_string())))
}
