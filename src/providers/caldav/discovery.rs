//! CalDAV discovery: from a server URL to the account's calendars (RFC 6764 well-known URL,
//! RFC 5397 current-user-principal, RFC 4791 calendar-home-set, then a Depth 1 listing).
//!
//! Owns: finding the calendar home and describing its calendars (name, writability, whether
//! they take VEVENTs). Must not touch events, or remember anything: the provider caches the
//! home it gets back.

use reqwest::{Method, StatusCode, Url};

use super::http::{CT, DavClient, DavResponse, XML, classify};
use super::xml::{CALDAV, DAV, Multistatus, parse_multistatus, propfind};
use crate::providers::ProviderError;

/// A calendar collection as the home lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collection {
    pub url: Url,
    pub name: String,
    /// The user may write to it (privileges, when the server reports them).
    pub writable: bool,
    /// It accepts VEVENTs (component set, when the server reports it).
    pub events: bool,
}

/// What discovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    pub url: Url,
    pub email: Option<String>,
}

pub async fn propfind_at(
    client: &DavClient,
    url: &Url,
    depth: &str,
    props: &[&str],
) -> Result<DavResponse, ProviderError> {
    let body = propfind(props);
    let method = Method::from_bytes(b"PROPFIND").map_err(|_| ProviderError::Invalid { message: "PROPFIND".into() })?;
    client.send(method, url, &[("Depth", depth), (CT, XML)], Some(&body)).await
}

/// PROPFIND that must answer 207; other answers are classified (401 → Revoked, ...).
async fn propfind_ms(
    client: &DavClient,
    url: &Url,
    depth: &str,
    props: &[&str],
    what: &str,
) -> Result<Multistatus, ProviderError> {
    let resp = propfind_at(client, url, depth, props).await?;
    if resp.status != StatusCode::MULTI_STATUS {
        return Err(classify(&resp, what, client.username()));
    }
    parse_multistatus(&resp.body)
}

fn first_href(ms: &Multistatus, ns: &str, name: &str) -> Option<String> {
    ms.responses.iter().find_map(|r| r.prop(ns, name)).and_then(|p| p.hrefs.first().cloned())
}

/// The principal URL from `url`, or `None` when the server does not say.
async fn principal_at(client: &DavClient, url: &Url) -> Result<Option<Url>, ProviderError> {
    let resp = propfind_at(client, url, "0", &["d:current-user-principal"]).await?;
    match resp.status.as_u16() {
        207 => {
            let ms = parse_multistatus(&resp.body)?;
            Ok(first_href(&ms, DAV, "current-user-principal").and_then(|h| resp.url.join(&h).ok()))
        }
        // Not a DAV resource here (the well-known URL is worth a try).
        400 | 403 | 404 | 405 | 501 => Ok(None),
        _ => Err(classify(&resp, "looking for the CalDAV principal", client.username())),
    }
}

/// Find the calendar home for the account at `base`.
pub async fn find_home(client: &DavClient, base: &Url) -> Result<Home, ProviderError> {
    let mut principal = principal_at(client, base).await?;
    if principal.is_none() {
        let well_known = base
            .join("/.well-known/caldav")
            .map_err(|e| ProviderError::Invalid { message: format!("bad server URL {base}: {e}") })?;
        principal = principal_at(client, &well_known).await?;
    }
    // No principal advertised: the URL given may itself be the principal or the home.
    let principal = principal.unwrap_or_else(|| base.clone());
    let ms = propfind_ms(
        client,
        &principal,
        "0",
        &["c:calendar-home-set", "c:calendar-user-address-set", "d:displayname"],
        "reading the CalDAV principal",
    )
    .await
    .map_err(|e| match e {
        // Nothing at the URL: the server URL is wrong, which retrying will not fix.
        ProviderError::NotFound { message } => ProviderError::Invalid {
            message: format!("no CalDAV service found at {base} ({message}); check the server URL"),
        },
        other => other,
    })?;
    let home = first_href(&ms, CALDAV, "calendar-home-set").and_then(|h| principal.join(&h).ok()).unwrap_or(principal);
    let email = ms
        .responses
        .iter()
        .filter_map(|r| r.prop(CALDAV, "calendar-user-address-set"))
        .flat_map(|p| p.hrefs.iter())
        .find_map(|h| h.strip_prefix("mailto:").or_else(|| h.strip_prefix("MAILTO:")).map(str::to_string));
    Ok(Home { url: home, email })
}

/// The calendars in the home, in the order the server lists them.
pub async fn list_calendars(client: &DavClient, home: &Url) -> Result<Vec<Collection>, ProviderError> {
    let ms = propfind_ms(
        client,
        home,
        "1",
        &["d:resourcetype", "d:displayname", "c:supported-calendar-component-set", "d:current-user-privilege-set"],
        "listing the calendars",
    )
    .await?;
    let mut out = Vec::new();
    for r in &ms.responses {
        let is_calendar = r.prop(DAV, "resourcetype").is_some_and(|p| p.has_element(CALDAV, "calendar"));
        if !is_calendar {
            continue;
        }
        let Ok(url) = home.join(&r.href) else {
            continue;
        };
        // Without the property the server makes no claim; assume the common case.
        let events = r.prop(CALDAV, "supported-calendar-component-set").is_none_or(|p| {
            p.elements
                .iter()
                .any(|e| e.name == "comp" && e.name_attr.as_deref().is_some_and(|n| n.eq_ignore_ascii_case("VEVENT")))
        });
        let writable = r
            .prop(DAV, "current-user-privilege-set")
            .is_none_or(|p| ["write", "write-content", "all", "bind"].iter().any(|w| p.has_element(DAV, w)));
        let name = r.prop(DAV, "displayname").map(|p| p.text.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| {
            url.path_segments().and_then(|mut s| s.rfind(|x| !x.is_empty())).unwrap_or("calendar").to_string()
        });
        out.push(Collection { url, name, writable, events });
    }
    if out.is_empty() {
        return Err(ProviderError::Invalid {
            message: format!(
                "no calendar collections found at {home}: the URL is not a CalDAV calendar home (check the server URL)"
            ),
        });
    }
    Ok(out)
}
