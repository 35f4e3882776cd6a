//! The app's change cursor for `calendar-to-tasks`: what the app holds between pulls, so the
//! server keeps no state per client (DESIGN §8 "two cursors").
//!
//! A cursor is sealed (AES-256-GCM under a key derived from the credentials key), so the app
//! can neither read the provider sync tokens inside nor forge one; it names the user it was
//! issued to, so another user's cursor is refused (403) rather than read.
//!
//! Owns: the cursor's contents and its sealed text form. Must not touch: providers or objects
//! (the change pull in `handlers::changes` decides what a mark means).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credentials::envelope::Keyring;
use crate::credentials::push::PushKeys;

/// Derivation label of the cursor key (see `PushKeys::derived_keyring`).
const KEY_LABEL: &str = "calsync app change cursors v1";
/// Associated data: a cursor opens only as a cursor, never as another sealed value.
const AAD: &[u8] = b"calsync/app-cursor/v1";
/// Upper bound of a cursor's text (a Graph deltaLink is the longest token: ~1 KB per calendar).
pub const MAX_LEN: usize = 32 * 1024;

/// Where one calendar's changes were read up to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// CalendarConnection name.
    #[serde(rename = "n")]
    pub connection: String,
    /// Provider calendar id.
    #[serde(rename = "c")]
    pub calendar: String,
    /// The provider's incremental token after the last read (`None`: the provider gave none,
    /// the next pull lists in full).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the read that produced `token` started: events created after it are `created`.
    #[serde(rename = "s")]
    pub since: DateTime<Utc>,
    /// The live watch that covered the calendar at that read, and the calendar's
    /// `changeCount` then: while both are unchanged, push says nothing changed and the pull
    /// makes no provider request.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
    #[serde(rename = "l", default)]
    pub last_change: u64,
}

/// A cursor's contents.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppCursor {
    #[serde(rename = "v")]
    pub version: u8,
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "m")]
    pub marks: Vec<Mark>,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "the cursor is not one this server issued (malformed, damaged, or sealed with a retired key); call calendar-to-tasks without a cursor to get a new one"
    )]
    Invalid,
    #[error("the cursor was issued to another user")]
    OtherUser,
    #[error("change cursors need ENCRYPTION_KEY, which this deployment does not have; call without a cursor")]
    Unavailable,
}

/// Seals and opens cursors. Debug never shows keys.
#[derive(Clone, Debug)]
pub struct CursorSealer {
    keys: Keyring,
}

impl CursorSealer {
    /// The sealer of a deployment's keys (`None` without keys: no cursors).
    pub fn from_push_keys(keys: &PushKeys) -> Option<Self> {
        keys.derived_keyring(KEY_LABEL).map(|keys| CursorSealer { keys })
    }

    /// The cursor's text: URL-safe base64 of the sealed JSON. `None` only if sealing failed,
    /// which AES-GCM does not do for inputs this small.
    pub fn seal(&self, cursor: &AppCursor) -> Option<String> {
        let json = serde_json::to_vec(cursor).ok()?;
        let sealed = self.keys.seal(&json, AAD).ok()?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The cursor of `text`, if this server sealed it and it belongs to `user`.
    pub fn open(&self, text: &str, user: &str) -> Result<AppCursor, CursorError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(CursorError::Invalid);
        }
        let sealed =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| CursorError::Invalid)?;
        let json = self.keys.open(&sealed, AAD).map_err(|_| CursorError::Invalid)?;
        let cursor: AppCursor = serde_json::from_slice(&json).map_err(|_| CursorError::Invalid)?;
        if cursor.version != 1 {
            return Err(CursorError::Invalid);
        }
        if cursor.user != user {
            return Err(CursorError::OtherUser);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(seed: u8) -> CursorSealer {
        let key = crate::credentials::envelope::Key::from_bytes(&[seed; 32]).unwrap();
        CursorSealer::from_push_keys(&crate::credentials::envelope::Keyring::new(key).push_keys()).unwrap()
    }

    fn cursor(user: &str) -> AppCursor {
        AppCursor {
            version: 1,
            user: user.into(),
            marks: vec![Mark {
                connection: "c1".into(),
                calendar: "primary".into(),
                token: Some("gcal1:abc:SECRET-SYNC-TOKEN".into()),
                since: Utc::now(),
                watch: Some("w1".into()),
                last_change: 3,
            }],
        }
    }

    #[test]
    fn a_cursor_round_trips_for_its_user_only() {
        let s = sealer(1);
        let c = cursor("alice");
        let text = s.seal(&c).unwrap();
        assert_eq!(s.open(&text, "alice").unwrap(), c);
        assert_eq!(s.open(&text, "bob"), Err(CursorError::OtherUser));
        // Opaque: the provider token inside is not readable.
        assert!(!text.contains("SECRET"));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&text).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("SECRET"));
    }

    #[test]
    fn damaged_foreign_or_malformed_cursors_are_invalid() {
        let s = sealer(1);
        let text = s.seal(&cursor("alice")).unwrap();
        assert_eq!(sealer(2).open(&text, "alice"), Err(CursorError::Invalid));
        let mut bytes = text.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(&String::from_utf8(bytes).unwrap(), "alice"), Err(CursorError::Invalid));
        for bad in ["", "!!!", "abc", &"A".repeat(MAX_LEN + 1)] {
            assert_eq!(s.open(bad, "alice"), Err(CursorError::Invalid), "{bad:.20}");
        }
    }
}
