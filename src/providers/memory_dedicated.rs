//! The in-memory service's calendar creation, modelled on Google's `calendars.insert`: no
//! client-chosen id, so nothing stops two racing creates from making two calendars (what
//! `dedicated::ensure` must converge). The listing and the create yield to the runtime first,
//! so concurrent callers really interleave.
//!
//! Owns: the made calendars' descriptions. Must not touch events.

use super::{MemoryCalendar, Op};
use crate::providers::dedicated::{DEDICATED_NAME, parse_marker};
use crate::providers::{DedicatedCalendar, MadeCalendar, ProviderError};
use crate::resources::CalendarInfo;

impl MemoryCalendar {
    /// Refuse calendar creation from now on, as an account whose grant cannot make calendars.
    pub fn set_calendars_read_only(&self, on: bool) {
        self.lock().calendars_read_only = on;
    }

    /// Calendars made through the API so far, still existing (ids).
    pub fn made_calendars(&self) -> Vec<String> {
        self.lock().descriptions.keys().cloned().collect()
    }

    pub(super) async fn dedicated_calendars(&self) -> Result<Vec<DedicatedCalendar>, ProviderError> {
        tokio::task::yield_now().await;
        let mut s = self.lock();
        s.enter(Op::ListDedicated, "", "")?;
        let found = s
            .calendars
            .iter()
            .filter_map(|c| {
                let stamp = parse_marker(s.descriptions.get(&c.id)?)?;
                Some(DedicatedCalendar { info: c.clone(), stamp })
            })
            .collect();
        Ok(found)
    }

    pub(super) async fn create_calendar(&self, description: &str) -> Result<MadeCalendar, ProviderError> {
        tokio::task::yield_now().await;
        let mut s = self.lock();
        s.enter(Op::CreateCalendar, "", "")?;
        if s.calendars_read_only {
            return Err(ProviderError::Invalid {
                message: "the account's grant does not allow creating calendars (403 forbidden)".into(),
            });
        }
        s.made_calendars += 1;
        let id = format!("own-{:04}", s.made_calendars);
        let info = CalendarInfo { id: id.clone(), name: DEDICATED_NAME.into(), primary: false, writable: true };
        s.calendars.push(info.clone());
        s.descriptions.insert(id, description.to_string());
        let stamp = parse_marker(description).flatten();
        Ok(MadeCalendar::New(DedicatedCalendar { info, stamp }))
    }

    pub(super) fn delete_calendar(&self, id: &str) -> Result<(), ProviderError> {
        let mut s = self.lock();
        s.enter(Op::DeleteCalendar, id, "")?;
        s.calendars.retain(|c| c.id != id);
        s.descriptions.remove(id);
        s.events.remove(id);
        Ok(())
    }
}
