//! Reading iCalendar text into the `icalendar` crate's parser tree (`Calendar`, `Component`,
//! `Property`) in one pass, borrowing every name, parameter and value from the text.
//!
//! The crate's own reader (`unfold` + `read_calendar`) copies the whole text to unfold it, then
//! runs a nom grammar with verbose errors whose `take_until("\r\n")` scans to the end of the
//! text for every LF-only line (what CalDAV data is after XML line-end normalisation): a
//! listing of 1,000 events spent more time there than on the wire. This reader produces the
//! same tree for what that grammar accepts (an equivalence test pins it) and copies only
//! folded lines and TEXT values with escapes.
//!
//! Owns: content-line syntax (RFC 5545 §3.1: folding, parameters, quoting, TEXT unescaping as
//! the crate does it). Must not touch: what properties mean (`ical`).

use std::borrow::Cow;

use icalendar::parser::{Calendar, Component, Parameter, ParseString, Property};

/// Logical lines of `text`: folds (a line break followed by a space or tab) removed, line ends
/// (CRLF or LF) dropped. A line is borrowed unless it was folded.
fn lines(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut line: Option<Cow<'_, str>> = None;
        loop {
            let (part, after) = match rest.find('\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let part = part.strip_suffix('\r').unwrap_or(part);
            line = Some(match line.take() {
                None => Cow::Borrowed(part),
                Some(mut l) => {
                    l.to_mut().push_str(part);
                    l
                }
            });
            rest = after;
            match rest.as_bytes().first() {
                Some(b' ' | b'\t') => rest = &rest[1..],
                _ => return line,
            }
        }
    })
}

/// Property names whose value is TEXT (unescaped on reading), as the crate's
/// `ValueType::by_name` lists them; CATEGORIES and RESOURCES are lists and stay escaped (the
/// caller splits them on unescaped commas).
fn is_text(name: &str, params: &[Parameter<'_>]) -> bool {
    if name.eq_ignore_ascii_case("CATEGORIES") || name.eq_ignore_ascii_case("RESOURCES") {
        return false;
    }
    if let Some(v) = params.iter().find(|p| p.key.as_str() == "VALUE").and_then(|p| p.val.as_ref()) {
        // An unknown VALUE falls back to the name, as the crate does.
        if let Some(text) = value_type_is_text(v.as_str()) {
            return text;
        }
    }
    if name.chars().any(char::is_lowercase) {
        return false;
    }
    name.starts_with("X-")
        || matches!(
            name,
            "CALSCALE"
                | "METHOD"
                | "PRODID"
                | "VERSION"
                | "CLASS"
                | "COMMENT"
                | "DESCRIPTION"
                | "LOCATION"
                | "STATUS"
                | "SUMMARY"
                | "TRANSP"
                | "TZID"
                | "TZNAME"
                | "CONTACT"
                | "RELATED-TO"
                | "UID"
                | "ACTION"
                | "REQUEST-STATUS"
        )
}

/// `Some(is TEXT)` for a known VALUE type, `None` for an unknown one.
fn value_type_is_text(v: &str) -> Option<bool> {
    match v {
        "TEXT" => Some(true),
        "BINARY" | "BOOLEAN" | "CAL-ADDRESS" | "DATE" | "DATE-TIME" | "DURATION" | "FLOAT" | "INTEGER" | "PERIOD"
        | "RECUR" | "TIME" | "URI" | "UTC-OFFSET" => Some(false),
        _ => None,
    }
}

/// RFC 5545 §3.3.11 unescaping as the crate reads it: `\\ \, \; \: \n \N`; an unknown escape
/// or a trailing backslash is kept verbatim.
fn unescape(v: &str) -> Cow<'_, str> {
    if !v.contains('\\') {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(c @ ('\\' | ',' | ';' | ':')) => out.push(c),
            Some('n' | 'N') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// A logical line as the tree's string: borrowed from the text, or owned when it was folded.
fn owned_or_borrowed(line: Cow<'_, str>) -> ParseString<'_> {
    match line {
        Cow::Borrowed(b) => b.into(),
        Cow::Owned(o) => o.into(),
    }
}

/// Where the quoted parameter value(s) at the start of `v` end, if `v` starts with a quote and
/// every quote is closed.
fn quoted_end(v: &str) -> Option<usize> {
    if !v.starts_with('"') {
        return None;
    }
    let mut end = 0;
    loop {
        end += v[end + 1..].find('"')? + 2;
        if !v[end..].starts_with(",\"") {
            return Some(end);
        }
        end += 1;
    }
}

/// One content line: `NAME *(";" param) ":" value`, or a bare name (the crate accepts that as a
/// property without value). Slices of a borrowed line keep the text's lifetime.
fn property(line: Cow<'_, str>) -> Result<Property<'_>, String> {
    match line {
        Cow::Borrowed(l) => content_line(l, ParseString::from),
        Cow::Owned(l) => content_line(&l, |s: &str| -> ParseString<'static> { ParseString::from(s.to_string()) }),
    }
}

fn content_line<'a, 'b>(l: &'b str, mk: impl Fn(&'b str) -> ParseString<'a>) -> Result<Property<'a>, String> {
    let body = l.trim_start();
    let name_end = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    if name_end == 0 {
        return Err(format!("not a content line: {:?}", l.chars().take(40).collect::<String>()));
    }
    let name = &body[..name_end];
    let mut rest = &body[name_end..];
    let mut params = Vec::new();
    while let Some(p) = rest.strip_prefix(';') {
        let p = p.trim_start_matches([' ', '\t']);
        let key_end = p.find(['=', ';', ':']).unwrap_or(p.len());
        let key = &p[..key_end];
        rest = &p[key_end..];
        let mut val = None;
        if let Some(v) = rest.strip_prefix('=') {
            // One or more quoted values ("a","b"): a single one loses its quotes. An unclosed
            // quote is read as plain text, as the crate does.
            let (end, quoted) = match quoted_end(v) {
                Some(end) => (end, true),
                None => (v.find([';', ':']).unwrap_or(v.len()), false),
            };
            let raw = &v[..end];
            let raw = if quoted && !raw[1..end - 1].contains('"') { &raw[1..end - 1] } else { raw };
            val = (!raw.is_empty()).then(|| mk(raw));
            rest = &v[end..];
        }
        params.push(Parameter { key: mk(key), val });
    }
    let value = match rest.strip_prefix(':') {
        Some(v) => v,
        None if rest.is_empty() && params.is_empty() => "",
        None => return Err(format!("property {name} has no ':' before its value")),
    };
    let val = match is_text(name, &params).then(|| unescape(value)) {
        Some(Cow::Owned(o)) => ParseString::from(o),
        _ => mk(value),
    };
    Ok(Property { name: mk(name), val, params })
}

/// Read `text` (an iCalendar object: VCALENDAR at the root, or bare components) into the tree
/// `icalendar::parser::read_calendar` gives for it.
pub fn read_calendar(text: &str) -> Result<Calendar<'_>, String> {
    let mut roots: Vec<Component<'_>> = Vec::new();
    let mut open: Vec<Component<'_>> = Vec::new();
    for line in lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("BEGIN:") {
            if name.is_empty() || !name.chars().all(is_name_char) {
                return Err(format!("bad component name {name:?}"));
            }
            let name = owned_or_borrowed(match line {
                Cow::Borrowed(b) => Cow::Borrowed(&b["BEGIN:".len()..]),
                Cow::Owned(o) => Cow::Owned(o["BEGIN:".len()..].to_string()),
            });
            open.push(Component { name, properties: Vec::new(), components: Vec::new() });
            continue;
        }
        if let Some(name) = line.strip_prefix("END:") {
            let Some(done) = open.pop() else { return Err(format!("END:{name} without BEGIN")) };
            if done.name.as_str() != name {
                return Err(format!("mismatching end: END:{name} closes {}", done.name.as_str()));
            }
            match open.last_mut() {
                Some(parent) => parent.components.push(done),
                None => roots.push(done),
            }
            continue;
        }
        let Some(current) = open.last_mut() else {
            return Err("a property outside any component".into());
        };
        current.properties.push(property(line)?);
    }
    if let Some(c) = open.last() {
        return Err(format!("BEGIN:{} is never ended", c.name.as_str()));
    }
    if roots.first().is_some_and(|c| c.name == "VCALENDAR") {
        let root = roots.swap_remove(0);
        return Ok(Calendar { properties: root.properties, components: root.components });
    }
    Ok(Calendar { properties: Vec::new(), components: roots })
}

#[cfg(test)]
#[path = "ical_read_tests.rs"]
mod tests;
