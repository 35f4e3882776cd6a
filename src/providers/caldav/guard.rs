//! Where a CalDAV `server_url` may lead. The URL comes from an app user (`/apple/connect`), so
//! without a rule it makes calsync send requests wherever the user says: in a cluster that is
//! the cloud metadata service (169.254.169.254), the Kubernetes API server and every internal
//! service. The rule is applied to addresses, after DNS resolution, on every request and every
//! redirect hop: a hostname that resolves (or re-resolves, DNS rebinding) to a refused address
//! and a server that redirects to one get nowhere. Hosts the operator names in
//! `CALSYNC_CALDAV_ALLOWED_HOSTS` are trusted whatever they resolve to.
//!
//! Owns: the address rule (`AddressPolicy`), the resolver that applies it (`GuardedResolver`) and
//! the check of literal addresses. Must not touch: what requests are made (`http`, the provider).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which address ranges a CalDAV server may be reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    /// 127.0.0.0/8 and ::1 (a CalDAV server on the same machine).
    pub loopback: bool,
    /// RFC 1918, RFC 6598 shared space, IPv6 unique local fc00::/7.
    pub private: bool,
    /// Hosts reached whatever their address (lower case), from `CALSYNC_CALDAV_ALLOWED_HOSTS`.
    pub trusted_hosts: Vec<String>,
}

/// Why an address is refused; its `Display` is shown to the caller (the rule, the address, and
/// which setting changes it), never anything secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the CalDAV server {host} is at {ip}, a {rule} address, and calsync does not connect to {rule} addresses{hint}"
)]
pub struct Refusal {
    pub host: String,
    pub ip: IpAddr,
    pub rule: &'static str,
    hint: &'static str,
}

const HINT: &str = " (an operator may allow them: CALSYNC_CALDAV_ALLOW_PRIVATE=true, or name the host in CALSYNC_CALDAV_ALLOWED_HOSTS)";

impl AddressPolicy {
    /// Only public addresses (the API on Kubernetes, the controller).
    pub fn public_only() -> Self {
        AddressPolicy { loopback: false, private: false, trusted_hosts: Vec::new() }
    }

    /// Public addresses and this machine (standalone on a laptop with a local CalDAV server).
    pub fn local() -> Self {
        AddressPolicy { loopback: true, ..Self::public_only() }
    }

    /// `default` changed by `CALSYNC_CALDAV_ALLOW_PRIVATE` (`true`: loopback and private ranges
    /// allowed; `false`: neither) and `CALSYNC_CALDAV_ALLOWED_HOSTS` (trusted hosts; `*` is
    /// "any host name", which trusts no address).
    pub fn from_lookup(default: Self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut p = default;
        if let Some(v) = lookup("CALSYNC_CALDAV_ALLOW_PRIVATE") {
            let allow = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err("CALSYNC_CALDAV_ALLOW_PRIVATE must be true or false".into()),
            };
            p.loopback = allow;
            p.private = allow;
        }
        if let Some(hosts) = lookup("CALSYNC_CALDAV_ALLOWED_HOSTS") {
            p.trusted_hosts = hosts
                .split(',')
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty() && h != "*")
                .collect();
        }
        Ok(p)
    }

    fn trusts(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.trusted_hosts.contains(&host)
    }

    /// Whether `host` (as named in the URL) may be reached at `ip`.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        if self.trusts(host) {
            return Ok(());
        }
        let refuse = |rule: &'static str, hint: &'static str| Err(Refusal { host: host.to_string(), ip, rule, hint });
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Loopback if self.loopback => Ok(()),
            Class::Private if self.private => Ok(()),
            Class::Loopback => refuse("loopback", HINT),
            Class::Private => refuse("private", HINT),
            // Never: cloud metadata lives here, and no CalDAV server does.
            Class::LinkLocal => refuse("link-local", " (cloud metadata services live there)"),
            Class::Special => refuse("non-unicast", ""),
        }
    }

    /// Check a URL host that is a literal address (the resolver never sees those).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        match literal(url) {
            Some(ip) => self.check(url.host_str().unwrap_or_default(), ip),
            None => Ok(()),
        }
    }

    /// Resolve `host` as the HTTP client will and check every address: the early, clear answer
    /// for `/apple/connect` (the client's resolver enforces it again on every request).
    pub async fn check_host(&self, url: &reqwest::Url) -> Result<(), CheckError> {
        self.check_literal(url)?;
        let (None, Some(host), Some(port)) = (literal(url), url.host_str(), url.port_or_known_default()) else {
            return Ok(());
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| CheckError::Unresolved(host.to_string()))?
            .collect();
        for a in &addrs {
            self.check(host, a.ip())?;
        }
        Ok(())
    }
}

/// The URL's host when it is an address rather than a name (IPv6 comes in brackets).
fn literal(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Why `check_host` refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the CalDAV server's host name {0} does not resolve; check server_url")]
    Unresolved(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Special,
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4-mapped address (::ffff:a.b.c.d) reaches the IPv4 one: judge that one.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            classify_v6(v6)
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // RFC 1918, and RFC 6598 shared address space (carrier NAT, some cluster networks).
        Class::Private
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Class::Special
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Class::Loopback
    } else if first & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        // Unique local fc00::/7 (fd00::/8 in practice).
        Class::Private
    } else if ip.is_unspecified() || ip.is_multicast() {
        Class::Special
    } else {
        Class::Public
    }
}

/// The HTTP client's resolver: the system's answer, with refused addresses removed; nothing
/// left is an error naming the rule (so the connection is never opened).
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            // Port 0: reqwest puts the URL's port on the addresses it gets back.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(r)) => Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The `Refusal` somewhere in a reqwest error's causes, if that is why it failed.
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refusal>() {
            return Some(r);
        }
        cause = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_range_is_judged_by_its_rule() {
        let strict = AddressPolicy::public_only();
        let table = [
            ("169.254.169.254", Some("link-local")),
            ("127.0.0.1", Some("loopback")),
            ("127.8.9.10", Some("loopback")),
            ("10.0.0.5", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("100.128.0.1", None),
            ("0.0.0.0", Some("non-unicast")),
            ("255.255.255.255", Some("non-unicast")),
            ("224.0.0.1", Some("non-unicast")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("fd00::1", Some("private")),
            ("fc00::1", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::", Some("non-unicast")),
            ("ff02::1", Some("non-unicast")),
            ("17.253.144.10", None),
            ("2a01:b740::1", None),
        ];
        for (addr, rule) in table {
            let got = strict.check("h", ip(addr)).err().map(|r| r.rule);
            assert_eq!(got, rule, "{addr}");
        }
    }

    #[test]
    fn settings_open_loopback_and_private_but_never_link_local() {
        let local = AddressPolicy::local();
        assert!(local.check("h", ip("127.0.0.1")).is_ok());
        assert!(local.check("h", ip("192.168.0.2")).is_err());
        let lookup = |k: &str| (k == "CALSYNC_CALDAV_ALLOW_PRIVATE").then(|| "true".to_string());
        let open = AddressPolicy::from_lookup(AddressPolicy::public_only(), &lookup).unwrap();
        assert!(open.check("h", ip("10.0.0.1")).is_ok() && open.check("h", ip("::1")).is_ok());
        assert_eq!(open.check("h", ip("169.254.169.254")).unwrap_err().rule, "link-local");
        let closed = AddressPolicy::from_lookup(AddressPolicy::local(), &|k: &str| {
            (k == "CALSYNC_CALDAV_ALLOW_PRIVATE").then(|| "false".to_string())
        })
        .unwrap();
        assert!(closed.check("h", ip("127.0.0.1")).is_err());
        let bad = AddressPolicy::from_lookup(AddressPolicy::local(), &|_: &str| Some("maybe".to_string()));
        assert!(bad.unwrap_err().contains("CALSYNC_CALDAV_ALLOW_PRIVATE"));
    }

    #[test]
    fn hosts_the_operator_names_are_trusted_and_star_trusts_no_address() {
        let lookup = |k: &str| (k == "CALSYNC_CALDAV_ALLOWED_HOSTS").then(|| "Radicale.Internal., *".to_string());
        let p = AddressPolicy::from_lookup(AddressPolicy::public_only(), &lookup).unwrap();
        assert_eq!(p.trusted_hosts, ["radicale.internal"]);
        assert!(p.check("radicale.internal", ip("10.0.0.9")).is_ok());
        assert!(p.check("other.internal", ip("10.0.0.9")).is_err());
    }

    #[test]
    fn the_message_names_the_rule_the_address_and_the_setting() {
        let r = AddressPolicy::public_only().check("evil.example", ip("10.1.1.1")).unwrap_err();
        let m = r.to_string();
        assert!(m.contains("evil.example") && m.contains("10.1.1.1") && m.contains("private"), "{m}");
        assert!(m.contains("CALSYNC_CALDAV_ALLOW_PRIVATE"), "{m}");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_refused() {
        let url = reqwest::Url::parse("http://localhost:5232/").unwrap();
        let err = AddressPolicy::public_only().check_host(&url).await.unwrap_err();
        assert!(matches!(err, CheckError::Refused(ref r) if r.rule == "loopback"), "{err}");
        assert!(AddressPolicy::local().check_host(&url).await.is_ok());
        let literal = reqwest::Url::parse("http://[::ffff:169.254.169.254]/").unwrap();
        assert!(AddressPolicy::local().check_literal(&literal).is_err());
    }
}
