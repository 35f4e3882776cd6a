//! The fake Graph's calendarView and calendarView/delta: windows, series expanded into
//! occurrences, `$select`, paging, and delta rounds with tombstones and expired tokens.
//!
//! Owns: those two routes. Must not touch: event CRUD or the router (the parent's).

use super::*;

fn window(q: &[(String, String)]) -> Result<(DateTime<Utc>, DateTime<Utc>), Response> {
    let (Some(a), Some(b)) = (param(q, "startDateTime"), param(q, "endDateTime")) else {
        return Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        ));
    };
    match (parse_bound(a), parse_bound(b)) {
        (Some(a), Some(b)) if a < b => Ok((a, b)),
        _ => Err(graph_error(
            400,
            "ErrorInvalidParameter",
            "startDateTime and endDateTime must be ISO 8601 date-times, start before end.",
        )),
    }
}

/// Every instance in the window, sorted by start: (start, rendered).
#[allow(clippy::too_many_arguments)]
fn instances(
    st: &super::super::St,
    cal: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: Tz,
    expand: Option<&[String]>,
    delta: bool,
    pick: impl Fn(&store::Event) -> bool,
) -> Vec<(DateTime<Utc>, Value)> {
    let mut out = Vec::new();
    for ev in st.events.values().filter(|e| e.calendar == cal && pick(e)) {
        for (occ, a, b, original, exception) in super::super::series::applied(st, ev, from, to) {
            let mut v = match occ {
                None => ev.render(tz, if delta { None } else { expand }, delta),
                Some(oid) => {
                    let mut v = ev.render_occurrence(&oid, a, b, tz, if delta { None } else { expand });
                    super::super::series::decorate(st, &mut v, original, exception);
                    v
                }
            };
            if delta {
                v["@odata.type"] = json!("#microsoft.graph.event");
                if let Some(o) = v.as_object_mut() {
                    o.remove("singleValueExtendedProperties");
                }
            }
            out.push((a, v));
        }
    }
    out.sort_by_key(|(a, _)| *a);
    out
}

pub(super) async fn view(State(s): S, Path(cal): Path<String>, Query(q): Q, h: HeaderMap) -> Response {
    if let Err(r) = only(&q, &["startDateTime", "endDateTime", "$expand", "$top", "$skip", "$select"])
        .and_then(|_| resolve_calendar(&s.lock(), &cal))
    {
        return r;
    }
    let ((from, to), expand, tz) = match (window(&q), expand_of(&q), out_zone(&h)) {
        (Ok(w), Ok(e), Ok(t)) => (w, e, t),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    // `$select`: only the named properties, plus `id` and `@odata.etag`, which Graph always sends.
    let select: Option<Vec<String>> =
        param(&q, "$select").map(|v| v.split(',').map(|f| f.trim().to_string()).collect());
    let items = instances(&s.lock(), &cal, from, to, tz, expand.as_deref(), false, |_| true)
        .into_iter()
        .map(|x| match (&select, x.1) {
            (Some(keep), Value::Object(mut o)) => {
                o.retain(|k, _| k == "id" || k == "@odata.etag" || keep.iter().any(|f| f == k));
                Value::Object(o)
            }
            (_, v) => v,
        })
        .collect();
    let size = page_size(&s, &q, &h);
    axum::Json(page(&s, &format!("/me/calendars/{cal}/calendarView"), &q, items, size)).into_response()
}

/// One delta round: epoch, initial?, since, upto, window, offset.
struct Round {
    epoch: u64,
    initial: bool,
    since: u64,
    upto: u64,
    from: i64,
    to: i64,
    offset: usize,
}

fn parse_round(tok: &str, skip: bool) -> Option<Round> {
    let p: Vec<&str> = tok.split('.').collect();
    let n = |i: usize| p.get(i).and_then(|v| v.parse::<i64>().ok());
    if skip {
        if p.len() != 7 {
            return None;
        }
        Some(Round {
            epoch: n(0)? as u64,
            initial: p[1] == "i",
            since: n(2)? as u64,
            upto: n(3)? as u64,
            from: n(4)?,
            to: n(5)?,
            offset: n(6)? as usize,
        })
    } else {
        if p.len() != 4 {
            return None;
        }
        Some(Round {
            epoch: n(0)? as u64,
            initial: false,
            since: n(1)? as u64,
            upto: 0,
            from: n(2)?,
            to: n(3)?,
            offset: 0,
        })
    }
}

pub(super) async fn delta(State(s): S, Path(cal): Path<String>, Query(q): Q, h: HeaderMap) -> Response {
    const UNSUPPORTED: [&str; 6] = ["$filter", "$orderby", "$expand", "$select", "$top", "$search"];
    if q.iter().any(|(k, _)| UNSUPPORTED.contains(&k.as_str())) {
        return graph_error(
            400,
            "ErrorInvalidUrlQuery",
            "The following parameters are not supported with change tracking over the 'CalendarView' resource: '$filter, $orderby, $expand, $select, $top, $search'.",
        );
    }
    if let Err(r) = only(&q, &["startDateTime", "endDateTime", "$deltatoken", "$skiptoken"])
        .and_then(|_| resolve_calendar(&s.lock(), &cal))
    {
        return r;
    }
    let tz = match out_zone(&h) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let expired = || {
        graph_error(
            410,
            "syncStateNotFound",
            "The sync state generation is not found or has expired. Start over without a state token.",
        )
    };
    let st = s.lock();
    let round = match (param(&q, "$deltatoken"), param(&q, "$skiptoken")) {
        (Some(t), None) => match parse_round(t, false) {
            Some(r) => Round { upto: st.seq, ..r },
            None => return expired(),
        },
        (None, Some(t)) => match parse_round(t, true) {
            Some(r) => r,
            None => return expired(),
        },
        (None, None) => match window(&q) {
            Ok((a, b)) => Round {
                epoch: st.epoch,
                initial: true,
                since: 0,
                upto: st.seq,
                from: a.timestamp(),
                to: b.timestamp(),
                offset: 0,
            },
            Err(r) => return r,
        },
        (Some(_), Some(_)) => {
            return graph_error(400, "BadRequest", "Only one of $deltatoken and $skiptoken may be given.");
        }
    };
    if round.epoch != st.epoch {
        return expired();
    }
    let (from, to) = (
        DateTime::from_timestamp(round.from, 0).unwrap_or_default(),
        DateTime::from_timestamp(round.to, 0).unwrap_or_default(),
    );
    let in_round = |seq: u64| (round.initial || seq > round.since) && seq <= round.upto;
    let mut items: Vec<(u64, Value)> = Vec::new();
    for ev in st.events.values().filter(|e| e.calendar == cal && in_round(e.seq)) {
        let inst = instances(&st, &cal, from, to, tz, None, true, |x| x.id == ev.id);
        if inst.is_empty() && !round.initial {
            // Moved out of the window: gone from this view.
            items.push((
                ev.seq,
                json!({"@odata.type": "#microsoft.graph.event", "id": ev.id, "@removed": {"reason": "deleted"}}),
            ));
        }
        items.extend(inst.into_iter().map(|(_, v)| (ev.seq, v)));
    }
    if !round.initial {
        for (id, c, seq) in st.tombstones.iter().filter(|t| t.1 == cal && in_round(t.2)) {
            let _ = c;
            items.push((
                *seq,
                json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}}),
            ));
        }
    }
    items.sort_by_key(|(seq, _)| *seq);
    let size = prefer_page_size(&prefer(&h)).unwrap_or(10).clamp(1, 1000).min(st.switches.page_size);
    let end = (round.offset + size).min(items.len());
    let value: Vec<Value> =
        items.get(round.offset..end).map(|s| s.iter().map(|x| x.1.clone()).collect()).unwrap_or_default();
    let link = format!("{}/me/calendars/{cal}/calendarView/delta", s.base);
    let mut out = json!({"@odata.context": format!("{}/$metadata#Collection(event)", s.base), "value": value});
    if end < items.len() {
        let kind = if round.initial { "i" } else { "d" };
        out["@odata.nextLink"] = json!(format!(
            "{link}?$skiptoken={}.{kind}.{}.{}.{}.{}.{end}",
            round.epoch, round.since, round.upto, round.from, round.to
        ));
    } else {
        out["@odata.deltaLink"] =
            json!(format!("{link}?$deltatoken={}.{}.{}.{}", round.epoch, round.upto, round.from, round.to));
    }
    drop(st);
    axum::Json(out).into_response()
}
