//! Which of a user's connections a task goes to when the app names none: the routing rules the
//! user declared on their connections (`categoryCalendars`, `userDefault`), as `PUT
//! /preferences` writes them.
//!
//! Owns: the choice of connection. Must not touch: the calendar inside the connection (the
//! engine's `target_calendar` reads the same `categoryCalendars`) or any store.

use kube::ResourceExt;

use crate::resources::CalendarConnection;

/// The connection a task of `category` goes to, or `None` when the user has no usable one.
///
/// `active` is the user's active connections, newest connected first. In order: a connection
/// routing the category; the connection the task is on now (`current`), so an unrouted task
/// never moves by itself; the user's default; the newest connection.
pub fn route<'a>(
    active: &'a [CalendarConnection],
    category: Option<&str>,
    current: Option<&str>,
) -> Option<&'a CalendarConnection> {
    if let Some(c) = category.and_then(|cat| routed(active, cat)) {
        return Some(c);
    }
    if let Some(c) = current.and_then(|name| active.iter().find(|c| c.name_any() == name)) {
        return Some(c);
    }
    default_connection(active)
}

/// The connection whose `categoryCalendars` names `category`. Several (hand-written YAML): the
/// user's default among them, else the newest, so the answer never depends on list order.
pub fn routed<'a>(active: &'a [CalendarConnection], category: &str) -> Option<&'a CalendarConnection> {
    let mut naming = active.iter().filter(|c| c.spec.category_calendars.contains_key(category));
    let first = naming.clone().next()?;
    Some(naming.find(|c| c.spec.user_default).unwrap_or(first))
}

/// The user's default connection: the one marked `userDefault` (newest if several), else the
/// newest connected.
pub fn default_connection(active: &[CalendarConnection]) -> Option<&CalendarConnection> {
    active.iter().find(|c| c.spec.user_default).or_else(|| active.first())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resources::{CalendarConnectionSpec, ProviderKind, SecretRef};

    fn conn(name: &str, kind: ProviderKind, categories: &[&str], default: bool) -> CalendarConnection {
        let mut c = CalendarConnection::new(
            name,
            CalendarConnectionSpec {
                user_id: "u".into(),
                provider: kind,
                credentials_secret_ref: SecretRef { name: "s".into(), key: None },
                calendar_id: None,
                server_url: None,
                category_calendars: categories.iter().map(|c| (c.to_string(), format!("{name}-{c}"))).collect(),
                user_default: default,
                import: None,
                active: true,
            },
        );
        c.metadata.labels = Some(BTreeMap::new());
        c
    }

    fn name(c: Option<&CalendarConnection>) -> Option<String> {
        c.map(|c| c.name_any())
    }

    #[test]
    fn rules_in_order() {
        let outlook = conn("outlook", ProviderKind::Outlook, &["Work"], false);
        let google = conn("google", ProviderKind::Google, &["Personal"], true);
        let apple = conn("apple", ProviderKind::Apple, &[], false);
        // Newest first: apple was connected last.
        let active = vec![apple, outlook, google];
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (Some("Work"), None, "outlook"),
            (Some("Personal"), None, "google"),
            // The category wins over where the task is now: that is how it moves.
            (Some("Work"), Some("google"), "outlook"),
            // Unrouted: stays where it is.
            (Some("Errands"), Some("apple"), "apple"),
            (None, Some("outlook"), "outlook"),
            // Unrouted and new: the user's default, not the newest.
            (Some("Errands"), None, "google"),
            (None, None, "google"),
            // Its connection is gone: the default.
            (None, Some("disconnected"), "google"),
        ];
        for (category, current, want) in cases {
            assert_eq!(name(route(&active, *category, *current)).as_deref(), Some(*want), "{category:?} {current:?}");
        }
    }

    #[test]
    fn without_a_default_the_newest_and_ties_go_to_the_default() {
        let a = conn("a", ProviderKind::Google, &["Work"], false);
        let b = conn("b", ProviderKind::Outlook, &["Work"], false);
        assert_eq!(name(route(&[a.clone(), b.clone()], None, None)).as_deref(), Some("a"));
        assert_eq!(name(routed(&[a.clone(), b.clone()], "Work")).as_deref(), Some("a"));
        let b = conn("b", ProviderKind::Outlook, &["Work"], true);
        assert_eq!(name(routed(&[a, b], "Work")).as_deref(), Some("b"));
        assert!(route(&[], Some("Work"), None).is_none());
    }
}
