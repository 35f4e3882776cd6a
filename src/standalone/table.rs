//! kubectl-style table output for `calsync get`: the CRDs' printer columns, a small JSONPath
//! evaluator for the paths they use, and kubectl's age format.
//!
//! Owns: formatting only. Must not touch: storage or validation.

use chrono::{DateTime, Utc};
use kube::CustomResourceExt;
use serde_json::Value;

use crate::resources::{CalendarConnection, TaskSync};

/// One printer column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub json_path: String,
    pub type_: String,
}

/// The printer columns of `kind` (`CalendarConnection` or `TaskSync`), from its CRD.
pub fn columns(kind: &str) -> Vec<Column> {
    let crd = match kind {
        "CalendarConnection" => CalendarConnection::crd(),
        "TaskSync" => TaskSync::crd(),
        _ => return Vec::new(),
    };
    crd.spec
        .versions
        .first()
        .and_then(|v| v.additional_printer_columns.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| Column { name: c.name.to_uppercase(), json_path: c.json_path, type_: c.type_ })
        .collect()
}

/// Evaluate the JSONPath subset printer columns use: `.a.b`, `[N]`, `[?(@.k=="v")]`.
pub fn eval<'a>(path: &str, root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    let mut rest = path.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            current = current.into_iter().filter_map(|v| v.get(field)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[?(@.") {
            let Some(close) = r.find(")]") else {
                return Vec::new();
            };
            let expr = &r[..close];
            let Some((field, want)) = expr.split_once("==") else {
                return Vec::new();
            };
            let want = want.trim().trim_matches('"').trim_matches('\'');
            current = current
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .filter(|item| item.get(field.trim()).and_then(Value::as_str) == Some(want))
                .collect();
            rest = &r[close + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else {
                return Vec::new();
            };
            let Ok(i) = r[..close].parse::<usize>() else {
                return Vec::new();
            };
            current = current.into_iter().filter_map(|v| v.get(i)).collect();
            rest = &r[close + 1..];
        } else {
            return Vec::new();
        }
    }
    current
}

/// kubectl's short human duration (`45s`, `3m12s`, `5h`, `2d3h`, `90d`, `3y`).
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        format!("{d}d{}h", h % 24)
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn cell(col: &Column, object: &Value, now: DateTime<Utc>) -> String {
    let values = eval(&col.json_path, object);
    if col.type_ == "date" {
        return values
            .first()
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| age(t.with_timezone(&Utc), now))
            .unwrap_or_else(|| "<unknown>".into());
    }
    let text: Vec<String> = values
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .collect();
    if text.is_empty() { "<none>".into() } else { text.join(",") }
}

/// Render `objects` (JSON documents of `kind`) as kubectl renders a table; NAMESPACE first when
/// listing across namespaces.
pub fn render(kind: &str, objects: &[Value], with_namespace: bool, now: DateTime<Utc>) -> String {
    let cols = columns(kind);
    let first = |ns: String, name: String| if with_namespace { vec![ns, name] } else { vec![name] };
    let mut rows = vec![first("NAMESPACE".into(), "NAME".into())];
    rows[0].extend(cols.iter().map(|c| c.name.clone()));
    for o in objects {
        let text = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut row = first(text("/metadata/namespace"), text("/metadata/name"));
        row.extend(cols.iter().map(|c| cell(c, o, now)));
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len() - 1;
        for (i, c) in row.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonpath_subset() {
        let v = json!({"status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"a": [1, 2]}});
        let got: Vec<_> = eval(".status.conditions[?(@.type==\"Ready\")].status", &v);
        assert_eq!(got, vec![&json!("True")]);
        assert_eq!(eval(".spec.a[1]", &v), vec![&json!(2)]);
        assert!(eval(".spec.missing", &v).is_empty());
        assert!(eval("garbage[", &v).is_empty());
    }

    #[test]
    fn ages_like_kubectl() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(45), now), "45s");
        assert_eq!(age(now - chrono::Duration::seconds(200), now), "3m20s");
        assert_eq!(age(now - chrono::Duration::hours(30), now), "30h");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3d0h");
    }

    #[test]
    fn table_has_printer_columns() {
        let cols = columns("TaskSync");
        assert_eq!(
            cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["CONNECTION", "TASK", "SYNCED", "EVENT", "AGE"]
        );
        let t = render(
            "TaskSync",
            &[
                json!({"metadata": {"name": "x", "namespace": "team-a"}, "spec": {"connectionRef": {"name": "c"}, "taskId": "1"}}),
            ],
            false,
            Utc::now(),
        );
        assert!(t.starts_with("NAME   CONNECTION   TASK"), "{t}");
        assert!(t.contains("x      c            1      <none>"), "{t}");
        let all = render("TaskSync", &[json!({"metadata": {"name": "x", "namespace": "team-a"}})], true, Utc::now());
        assert!(all.starts_with("NAMESPACE   NAME   CONNECTION"), "{all}");
        assert!(all.contains("team-a      x      <none>"), "{all}");
    }
}
