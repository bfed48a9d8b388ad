//! Calendar channels that may exist at Google without our knowing it: their
//! `events.watch` timed out, lost its connection, was cancelled, or answered
//! something unreadable. Google may well have opened them, and each would then
//! deliver (and count against the calendar) until its own expiry, up to a week —
//! one more with every retry after a lost answer. `channels.stop` needs the
//! channel id, which we chose, and the resourceId, which is the calendar's and
//! the same for every channel on it: so the next channel opened for the same
//! provider tells us how to stop them all.
//!
//! Entries are written before the call and removed once its outcome is known
//! (opened and returned, or refused outright), so a call cancelled mid-flight
//! stays listed. After a successful watch the adapter stops whatever is listed
//! for that provider; a stop answered 404 means the channel never existed. An
//! entry older than the longest channel lifetime is dropped: that channel has
//! expired by itself.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use subkeeper_actors::domain::ProviderId;

/// A channel id and when it was asked for.
pub type Asked = (String, DateTime<Utc>);

/// Channel ids per provider, with when each was asked for.
#[derive(Debug, Default)]
pub struct UnconfirmedChannels {
    inner: Mutex<HashMap<ProviderId, Vec<Asked>>>,
}

impl UnconfirmedChannels {
    /// Lists `channel_id` for `provider` (asked for at `at`).
    pub fn add(&self, provider: ProviderId, channel_id: &str, at: DateTime<Utc>) {
        self.lock()
            .entry(provider)
            .or_default()
            .push((channel_id.to_owned(), at));
    }

    /// Unlists `channel_id`: its outcome is known.
    pub fn settle(&self, provider: ProviderId, channel_id: &str) {
        let mut inner = self.lock();
        if let Some(list) = inner.get_mut(&provider) {
            list.retain(|(id, _)| id != channel_id);
            if list.is_empty() {
                inner.remove(&provider);
            }
        }
    }

    /// Takes `provider`'s listed channels that may still be alive at `now`
    /// (asked for less than `lifetime` ago); the caller puts back those it could
    /// not stop.
    pub fn take(
        &self,
        provider: ProviderId,
        now: DateTime<Utc>,
        lifetime: TimeDelta,
    ) -> Vec<Asked> {
        let mut list = self.lock().remove(&provider).unwrap_or_default();
        list.retain(|(_, at)| now - *at < lifetime);
        list
    }

    /// Puts back channels whose stop failed, for the next successful watch.
    pub fn put_back(&self, provider: ProviderId, channels: Vec<Asked>) {
        if !channels.is_empty() {
            self.lock().entry(provider).or_default().extend(channels);
        }
    }

    /// Channels listed for `provider`.
    pub fn listed(&self, provider: ProviderId) -> Vec<String> {
        self.lock()
            .get(&provider)
            .map(|list| list.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProviderId, Vec<Asked>>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_channels_leave_and_old_ones_are_not_taken() {
        let list = UnconfirmedChannels::default();
        let p = ProviderId(uuid::Uuid::new_v4());
        let now = Utc::now();
        list.add(p, "old", now - TimeDelta::days(8));
        list.add(p, "lost", now - TimeDelta::minutes(1));
        list.add(p, "answered", now);
        list.settle(p, "answered");
        assert_eq!(list.listed(p), vec!["old", "lost"]);
        let taken = list.take(p, now, TimeDelta::days(7));
        assert_eq!(
            taken.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            vec!["lost"]
        );
        assert!(list.listed(p).is_empty());
        list.put_back(p, taken);
        assert_eq!(list.listed(p), vec!["lost"]);
    }
}
