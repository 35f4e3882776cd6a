//! WebDAV/CalDAV XML: the request bodies we send and a namespace-aware reading of multistatus
//! and error bodies.
//!
//! Owns: element names and namespaces. Never assumes prefixes: servers use `D:`, `d:`, `ns0:` or
//! a default namespace, so every lookup is by (namespace URI, local name). Must not touch HTTP or
//! iCalendar content (calendar-data is returned as text).

use std::borrow::Cow;

use crate::providers::ProviderError;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";

/// An element somewhere inside a property value: namespace, local name and its `name` attribute
/// (what `supported-calendar-component-set/comp` uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub name_attr: Option<String>,
}

/// One property from a 2xx propstat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prop {
    pub ns: String,
    pub name: String,
    /// All text inside, trimmed (calendar-data, displayname, getetag, sync-token).
    pub text: String,
    /// Every `DAV:href` inside (principal, home set, address sets).
    pub hrefs: Vec<String>,
    /// Every element inside (resourcetype, privileges, component set).
    pub elements: Vec<Element>,
}

impl Prop {
    pub fn has_element(&self, ns: &str, name: &str) -> bool {
        self.elements.iter().any(|e| e.ns == ns && e.name == name)
    }
}

/// One `DAV:response`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub href: String,
    /// The response-level `DAV:status` (sync-collection uses 404 here for removed members).
    pub status: Option<u16>,
    /// Properties found (only from 2xx propstats: iCloud adds 404 propstats for unknown ones).
    pub props: Vec<Prop>,
}

impl Response {
    pub fn prop(&self, ns: &str, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.ns == ns && p.name == name)
    }
}

/// A parsed `DAV:multistatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multistatus {
    pub responses: Vec<Response>,
    /// `DAV:sync-token`, wherever the server put it.
    pub sync_token: Option<String>,
}

fn is(node: &roxmltree::Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

/// `HTTP/1.1 404 Not Found` → 404.
pub fn status_code(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect::<String>().trim().to_string()
}

fn parse_doc(body: &[u8]) -> Result<roxmltree::Document<'_>, ProviderError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProviderError::Invalid { message: "the CalDAV server sent XML that is not UTF-8".into() })?;
    // Default options refuse DTDs, so entity-expansion bombs and external entities cannot occur.
    roxmltree::Document::parse(text).map_err(|e| ProviderError::Invalid {
        message: format!("the CalDAV server sent malformed XML ({e}); is the URL a CalDAV server?"),
    })
}

/// Read a `DAV:multistatus` body.
pub fn parse_multistatus(body: &[u8]) -> Result<Multistatus, ProviderError> {
    let doc = parse_doc(body)?;
    let root = doc.root_element();
    if !is(&root, DAV, "multistatus") {
        return Err(ProviderError::Invalid {
            message: format!(
                "the CalDAV server answered with <{}> instead of a WebDAV multistatus; is the URL a CalDAV server?",
                root.tag_name().name()
            ),
        });
    }
    let mut ms = Multistatus::default();
    for resp in root.children().filter(|n| is(n, DAV, "response")) {
        let mut r = Response::default();
        for child in resp.children().filter(|n| n.is_element()) {
            if is(&child, DAV, "href") && r.href.is_empty() {
                r.href = text_of(child);
            } else if is(&child, DAV, "status") {
                r.status = status_code(&text_of(child));
            } else if is(&child, DAV, "propstat") {
                let ok = child
                    .children()
                    .find(|n| is(n, DAV, "status"))
                    .and_then(|s| status_code(&text_of(s)))
                    .is_some_and(|c| (200..300).contains(&c));
                if !ok {
                    continue;
                }
                for prop in child.children().filter(|n| is(n, DAV, "prop")) {
                    for p in prop.children().filter(|n| n.is_element()) {
                        r.props.push(Prop {
                            ns: p.tag_name().namespace().unwrap_or("").to_string(),
                            name: p.tag_name().name().to_string(),
                            text: text_of(p),
                            hrefs: p.descendants().filter(|n| is(n, DAV, "href")).map(text_of).collect(),
                            elements: p
                                .descendants()
                                .skip(1)
                                .filter(|n| n.is_element())
                                .map(|n| Element {
                                    ns: n.tag_name().namespace().unwrap_or("").to_string(),
                                    name: n.tag_name().name().to_string(),
                                    name_attr: n.attribute("name").map(str::to_string),
                                })
                                .collect(),
                        });
                    }
                }
            }
        }
        if !r.href.is_empty() {
            ms.responses.push(r);
        }
    }
    // RFC 6578 puts it directly under multistatus, but do not rely on where it sits; a
    // `sync-token` inside a response's props is the collection's property, same meaning.
    ms.sync_token = root.descendants().find(|n| is(n, DAV, "sync-token")).map(text_of).filter(|t| !t.is_empty());
    Ok(ms)
}

/// One member of a `calendar-query`/`calendar-multiget` answer, borrowed from the parsed body.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource<'a> {
    pub href: &'a str,
    /// `DAV:getetag`, when non-empty.
    pub etag: Option<&'a str>,
    /// `CALDAV:calendar-data`, trimmed.
    pub data: Cow<'a, str>,
}

/// One `DAV:response` of a REPORT answer, borrowed from the parsed body: what `each_member`
/// hands out (a sync-collection answer also has removed members and members without data).
#[derive(Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub href: &'a str,
    /// The response-level `DAV:status` (404 for a removed member, 507 on a truncated
    /// collection).
    pub status: Option<u16>,
    /// `DAV:getetag`, when non-empty.
    pub etag: Option<&'a str>,
    /// `CALDAV:calendar-data` from a 2xx propstat, trimmed; `None` when the server sent none.
    pub data: Option<Cow<'a, str>>,
}

/// The text inside `node`, trimmed, as `text_of` reads it, without a copy when it is one text
/// node (the usual case; CDATA next to text is merged into one by the parser).
fn text_ref<'a>(node: roxmltree::Node<'a, '_>) -> Cow<'a, str> {
    match (node.first_child(), node.children().nth(1)) {
        (None, _) => Cow::Borrowed(""),
        (Some(only), None) if only.is_text() => Cow::Borrowed(only.text().unwrap_or("").trim()),
        _ => Cow::Owned(text_of(node)),
    }
}

/// Call `each` for every member of a `DAV:multistatus` that carries calendar-data in a 2xx
/// propstat: the one pass the listings make over a REPORT body. Reads what `parse_multistatus`
/// reads (same namespaces, first non-empty href, 2xx propstats only) but builds no property
/// lists and copies no text: the iCalendar data is handed out where the parser left it.
pub fn each_resource(body: &[u8], mut each: impl FnMut(Resource<'_>)) -> Result<(), ProviderError> {
    each_member(body, |m| {
        if let Some(data) = m.data {
            each(Resource { href: m.href, etag: m.etag, data });
        }
    })?;
    Ok(())
}

/// Call `each` for every `DAV:response` with an href, in one pass as `each_resource` does, and
/// return the multistatus' `DAV:sync-token` (RFC 6578 puts it under the root; anywhere else is
/// accepted, as `parse_multistatus` does).
pub fn each_member(body: &[u8], mut each: impl FnMut(Member<'_>)) -> Result<Option<String>, ProviderError> {
    let doc = parse_doc(body)?;
    let root = doc.root_element();
    if !is(&root, DAV, "multistatus") {
        return Err(ProviderError::Invalid {
            message: format!(
                "the CalDAV server answered with <{}> instead of a WebDAV multistatus; is the URL a CalDAV server?",
                root.tag_name().name()
            ),
        });
    }
    let mut token = None;
    for node in root.children().filter(|n| n.is_element()) {
        if is(&node, DAV, "sync-token") {
            token = token.or_else(|| Some(text_of(node)).filter(|t| !t.is_empty()));
            continue;
        }
        if !is(&node, DAV, "response") {
            continue;
        }
        let mut href: Option<Cow<'_, str>> = None;
        let (mut status, mut etag, mut data) = (None, None, None);
        for child in node.children().filter(|n| n.is_element()) {
            if is(&child, DAV, "href") && href.as_ref().is_none_or(|h| h.is_empty()) {
                href = Some(text_ref(child));
            } else if is(&child, DAV, "status") {
                status = status_code(&text_ref(child));
            } else if is(&child, DAV, "propstat") {
                let ok = child
                    .children()
                    .find(|n| is(n, DAV, "status"))
                    .and_then(|s| status_code(&text_ref(s)))
                    .is_some_and(|c| (200..300).contains(&c));
                if !ok {
                    continue;
                }
                for p in child.children().filter(|n| is(n, DAV, "prop")).flat_map(|n| n.children()) {
                    if is(&p, DAV, "getetag") && etag.is_none() {
                        etag = Some(text_ref(p)).filter(|e| !e.is_empty());
                    } else if is(&p, CALDAV, "calendar-data") && data.is_none() {
                        data = Some(text_ref(p));
                    }
                }
            }
        }
        // hrefs and etags are plain text in practice; an entity in one (rare) is copied once.
        if let Some(href) = href.filter(|h| !h.is_empty()) {
            let href_s: &str = &href;
            each(Member { href: href_s, status, etag: etag.as_deref(), data });
        }
    }
    if token.is_none() {
        token = root.descendants().find(|n| is(n, DAV, "sync-token")).map(text_of).filter(|t| !t.is_empty());
    }
    Ok(token)
}

/// The preconditions named in a `DAV:error` body (`valid-sync-token`, `no-uid-conflict`, ...),
/// with the hrefs inside them. Lenient: anything unreadable gives an empty list.
pub fn preconditions(body: &[u8]) -> Vec<(String, Vec<String>)> {
    let Ok(doc) = parse_doc(body) else {
        return Vec::new();
    };
    let root = doc.root_element();
    if !is(&root, DAV, "error") {
        return Vec::new();
    }
    root.children()
        .filter(|n| n.is_element())
        .map(|n| {
            let hrefs = n.descendants().filter(|h| is(h, DAV, "href")).map(text_of).collect();
            (n.tag_name().name().to_string(), hrefs)
        })
        .collect()
}

/// Escape text for element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = r#"<?xml version="1.0" encoding="utf-8"?>"#;
const NS: &str = r#"xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/""#;

/// `PROPFIND` body asking for `props` (each written with our own prefix: `d:`, `c:` or `cs:`).
pub fn propfind(props: &[&str]) -> String {
    let inner: String = props.iter().map(|p| format!("<{p}/>")).collect();
    format!("{HEAD}<d:propfind {NS}><d:prop>{inner}</d:prop></d:propfind>")
}

/// `calendar-query` for VEVENTs overlapping `[start, end)` (UTC, `YYYYMMDDTHHMMSSZ`).
/// iCloud needs the VEVENT comp-filter; recurring events are returned as whole resources (the
/// master with its RRULE), not expanded.
pub fn calendar_query(start: &str, end: &str) -> String {
    format!(
        "{HEAD}<c:calendar-query {NS}><d:prop><d:getetag/><c:calendar-data/></d:prop>\
         <c:filter><c:comp-filter name=\"VCALENDAR\"><c:comp-filter name=\"VEVENT\">\
         <c:time-range start=\"{}\" end=\"{}\"/></c:comp-filter></c:comp-filter></c:filter></c:calendar-query>",
        escape(start),
        escape(end)
    )
}

/// `calendar-query` for the VEVENT resource(s) whose UID contains `uid` (servers match
/// substrings; the caller checks for equality).
pub fn uid_query(uid: &str) -> String {
    format!(
        "{HEAD}<c:calendar-query {NS}><d:prop><d:getetag/><c:calendar-data/></d:prop>\
         <c:filter><c:comp-filter name=\"VCALENDAR\"><c:comp-filter name=\"VEVENT\">\
         <c:prop-filter name=\"UID\"><c:text-match collation=\"i;octet\">{}</c:text-match></c:prop-filter>\
         </c:comp-filter></c:comp-filter></c:filter></c:calendar-query>",
        escape(uid)
    )
}

/// `calendar-multiget` for the given hrefs (as the server wrote them).
pub fn multiget(hrefs: &[String]) -> String {
    let inner: String = hrefs.iter().map(|h| format!("<d:href>{}</d:href>", escape(h))).collect();
    format!(
        "{HEAD}<c:calendar-multiget {NS}><d:prop><d:getetag/><c:calendar-data/></d:prop>{inner}</c:calendar-multiget>"
    )
}

/// RFC 6578 `sync-collection` from `token` (empty for the initial sync), asking for the
/// members' etags.
pub fn sync_collection(token: &str) -> String {
    sync_collection_props(token, "<d:getetag/>")
}

/// `sync-collection` asking for the members' etags and calendar-data too (RFC 6578 §3.2 lets a
/// client ask for any properties): a full listing and its token in one answer.
pub fn sync_collection_with_data(token: &str) -> String {
    sync_collection_props(token, "<d:getetag/><c:calendar-data/>")
}

fn sync_collection_props(token: &str, props: &str) -> String {
    format!(
        "{HEAD}<d:sync-collection {NS}><d:sync-token>{}</d:sync-token><d:sync-level>1</d:sync-level>\
         <d:prop>{props}</d:prop></d:sync-collection>",
        escape(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIXED: &str = r#"<?xml version="1.0"?>
<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
 <D:response><D:href>/u/cal/</D:href>
  <D:propstat><D:prop><D:displayname>Work</D:displayname>
   <D:resourcetype><D:collection/><C:calendar/></D:resourcetype>
   <C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
  </D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
  <D:propstat><D:prop><D:getctag/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
 </D:response>
 <D:sync-token>http://radicale.org/ns/sync/abc</D:sync-token>
</D:multistatus>"#;

    // Same content, default namespace for DAV: and an odd prefix for CalDAV.
    const DEFAULT_NS: &str = r#"<multistatus xmlns="DAV:" xmlns:ns0="urn:ietf:params:xml:ns:caldav">
 <response><href>/u/cal/</href>
  <propstat><prop><displayname>Work</displayname>
   <resourcetype><collection/><ns0:calendar/></resourcetype>
   <ns0:supported-calendar-component-set><ns0:comp name="VEVENT"/></ns0:supported-calendar-component-set>
  </prop><status>HTTP/1.1 200 OK</status></propstat>
  <propstat><prop><getctag xmlns="http://calendarserver.org/ns/"/></prop><status>HTTP/1.1 404 Not Found</status></propstat>
 </response>
 <sync-token>http://radicale.org/ns/sync/abc</sync-token>
</multistatus>"#;

    #[test]
    fn prefixes_do_not_matter() {
        let a = parse_multistatus(PREFIXED.as_bytes()).unwrap();
        let b = parse_multistatus(DEFAULT_NS.as_bytes()).unwrap();
        assert_eq!(a, b);
        let r = &a.responses[0];
        assert_eq!(r.href, "/u/cal/");
        assert_eq!(r.prop(DAV, "displayname").unwrap().text, "Work");
        assert!(r.prop(DAV, "resourcetype").unwrap().has_element(CALDAV, "calendar"));
        let comps = r.prop(CALDAV, "supported-calendar-component-set").unwrap();
        assert_eq!(comps.elements[0].name_attr.as_deref(), Some("VEVENT"));
        assert!(r.prop("http://calendarserver.org/ns/", "getctag").is_none(), "404 propstats are ignored");
        assert_eq!(a.sync_token.as_deref(), Some("http://radicale.org/ns/sync/abc"));
    }

    #[test]
    fn wrong_namespace_is_not_matched() {
        let xml = r#"<multistatus xmlns="urn:other"><response><href>/x</href></response></multistatus>"#;
        assert!(matches!(parse_multistatus(xml.as_bytes()), Err(ProviderError::Invalid { .. })));
    }

    #[test]
    fn removed_members_and_garbage() {
        let xml = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/u/c/x.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response><d:sync-token>t2</d:sync-token></d:multistatus>"#;
        let ms = parse_multistatus(xml.as_bytes()).unwrap();
        assert_eq!(ms.responses[0].status, Some(404));
        assert_eq!(ms.sync_token.as_deref(), Some("t2"));
        for bad in [
            "",
            "<html><body>hi</body></html>",
            "<d:multistatus xmlns:d=\"DAV:\">",
            "\u{0}\u{1}garbage",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>",
        ] {
            assert!(matches!(parse_multistatus(bad.as_bytes()), Err(ProviderError::Invalid { .. })), "{bad:?}");
        }
        assert!(parse_multistatus(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn preconditions_are_read_by_namespace() {
        let body = r#"<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>"#;
        assert_eq!(preconditions(body.as_bytes()), vec![("valid-sync-token".to_string(), vec![])]);
        let body = r#"<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:no-uid-conflict><D:href>/u/c/other.ics</D:href></C:no-uid-conflict></D:error>"#;
        assert_eq!(
            preconditions(body.as_bytes()),
            vec![("no-uid-conflict".to_string(), vec!["/u/c/other.ics".to_string()])]
        );
        assert!(preconditions(b"not xml").is_empty());
    }

    #[test]
    fn request_bodies_are_well_formed() {
        for body in [
            propfind(&["d:displayname", "c:calendar-home-set"]),
            calendar_query("20260101T000000Z", "20260201T000000Z"),
            multiget(&["/a&b.ics".into()]),
            sync_collection("tok<>"),
            sync_collection_with_data(""),
            uid_query("a&b@calsync"),
        ] {
            assert!(roxmltree::Document::parse(&body).is_ok(), "{body}");
        }
    }
}
