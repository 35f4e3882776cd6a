//! The OData bits of the fake Graph, parsed strictly: the extended-property `$filter` (the
//! `Any` lambda with `eq` / `startswith`), the extended-property `$expand`, ISO 8601 window
//! bounds, `Prefer` values, and the shape of item ids. Anything else is refused, as Graph
//! refuses what it does not support.

use chrono::{DateTime, NaiveDateTime, Utc};

/// How a filter compares an extended property's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueCond {
    Eq(String),
    StartsWith(String),
}

/// `singleValueExtendedProperties/Any(ep: ep/id eq '<id>' [and <value condition>])`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropFilter {
    pub id: String,
    pub value: Option<ValueCond>,
}

/// A tiny cursor over the filter text.
struct Cur<'a> {
    s: &'a str,
}

impl<'a> Cur<'a> {
    fn ws(&mut self) {
        self.s = self.s.trim_start();
    }
    fn eat(&mut self, lit: &str) -> Result<(), String> {
        self.ws();
        if self.s.len() >= lit.len() && self.s[..lit.len()].eq_ignore_ascii_case(lit) {
            self.s = &self.s[lit.len()..];
            Ok(())
        } else {
            Err(format!("expected {lit:?} at {:?}", self.s.chars().take(30).collect::<String>()))
        }
    }
    fn ident(&mut self) -> Result<&'a str, String> {
        self.ws();
        let n = self.s.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(self.s.len());
        if n == 0 {
            return Err(format!("expected a name at {:?}", self.s));
        }
        let (id, rest) = self.s.split_at(n);
        self.s = rest;
        Ok(id)
    }
    /// `'...'` with `''` for a quote.
    fn string(&mut self) -> Result<String, String> {
        self.ws();
        let mut chars = self.s.char_indices();
        if chars.next().map(|c| c.1) != Some('\'') {
            return Err(format!("expected a string literal at {:?}", self.s));
        }
        let mut out = String::new();
        let mut iter = self.s[1..].char_indices().peekable();
        while let Some((i, c)) = iter.next() {
            if c == '\'' {
                if iter.peek().map(|p| p.1) == Some('\'') {
                    out.push('\'');
                    iter.next();
                    continue;
                }
                self.s = &self.s[i + 2..];
                return Ok(out);
            }
            out.push(c);
        }
        Err("unterminated string literal".into())
    }
}

/// Parse the only `$filter` form the fake supports on event collections.
pub fn parse_filter(f: &str) -> Result<PropFilter, String> {
    let mut c = Cur { s: f };
    c.eat("singleValueExtendedProperties/Any(")?;
    let var = c.ident()?.to_string();
    c.eat(":")?;
    c.eat(&format!("{var}/id"))?;
    c.eat("eq")?;
    let id = c.string()?;
    check_prop_id(&id)?;
    c.ws();
    let value = if c.s.starts_with(')') {
        None
    } else {
        c.eat("and")?;
        c.ws();
        if c.s.to_ascii_lowercase().starts_with("startswith(") {
            c.eat("startswith(")?;
            c.eat(&format!("{var}/value"))?;
            c.eat(",")?;
            let v = c.string()?;
            c.eat(")")?;
            Some(ValueCond::StartsWith(v))
        } else {
            c.eat(&format!("{var}/value"))?;
            c.eat("eq")?;
            Some(ValueCond::Eq(c.string()?))
        }
    };
    c.eat(")")?;
    c.ws();
    if !c.s.is_empty() {
        return Err(format!("unexpected {:?} after the filter", c.s));
    }
    Ok(PropFilter { id, value })
}

/// `singleValueExtendedProperties($filter=id eq 'A' or id eq 'B')`: the ids to return.
pub fn parse_expand(e: &str) -> Result<Vec<String>, String> {
    let mut c = Cur { s: e };
    c.eat("singleValueExtendedProperties($filter=")?;
    let mut ids = Vec::new();
    loop {
        c.eat("id")?;
        c.eat("eq")?;
        let id = c.string()?;
        check_prop_id(&id)?;
        ids.push(id);
        c.ws();
        if c.s.starts_with(')') {
            break;
        }
        c.eat("or")?;
    }
    c.eat(")")?;
    c.ws();
    if !c.s.is_empty() {
        return Err(format!("unexpected {:?} after the $expand", c.s));
    }
    Ok(ids)
}

/// `String {GUID} Name X` (the only form the fake takes; Graph also has `Id 0x…` and proptags).
pub fn check_prop_id(id: &str) -> Result<(), String> {
    let bad = || format!("{id:?} is not a single-value extended property id like 'String {{GUID}} Name X'");
    let rest = id.strip_prefix("String {").ok_or_else(bad)?;
    let (guid, name) = rest.split_once("} Name ").ok_or_else(bad)?;
    let groups: Vec<&str> = guid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] || !guid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) || name.is_empty() {
        return Err(bad());
    }
    Ok(())
}

/// Two property ids name the same property: the GUID in any case, the name exactly (Graph:
/// "the Name part is case-sensitive").
pub fn same_prop(a: &str, b: &str) -> bool {
    match (a.split_once("} Name "), b.split_once("} Name ")) {
        (Some((ga, na)), Some((gb, nb))) => ga.eq_ignore_ascii_case(gb) && na == nb,
        _ => false,
    }
}

/// An ISO 8601 window bound: with an offset, or without one meaning UTC.
pub fn parse_bound(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc())
}

/// A Graph `dateTime` (no offset allowed: the zone is a separate field).
pub fn parse_local(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

/// `outlook.timezone="X"` from the `Prefer` headers.
pub fn prefer_timezone(prefer: &[String]) -> Option<String> {
    prefer.iter().flat_map(|p| p.split(',')).find_map(|part| {
        let v = part.trim().strip_prefix("outlook.timezone=")?;
        Some(v.trim_matches('"').to_string())
    })
}

/// `odata.maxpagesize=N` from the `Prefer` headers.
pub fn prefer_page_size(prefer: &[String]) -> Option<usize> {
    prefer
        .iter()
        .flat_map(|p| p.split(','))
        .find_map(|part| part.trim().strip_prefix("odata.maxpagesize=")?.parse().ok())
}

/// Graph item ids are long URL-safe base64 strings; anything else is `ErrorInvalidIdMalformed`.
pub fn id_ok(id: &str) -> bool {
    id.starts_with("AAMk") && id.len() >= 16 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_=".contains(c))
}
