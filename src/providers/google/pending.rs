//! Calendar channels Google has been asked to open whose answer is not recorded
//! yet. Google sends a channel's `sync` message as soon as it exists — in
//! practice before `events.watch` has answered, so before the supervisor has
//! written the channel's row — and a change on a busy calendar can follow within
//! the same instant. Intake looks here when the store does not know a channel id,
//! so those first messages are authenticated and routed like any other.
//!
//! Entries are written by the Calendar adapter before it calls Google, removed
//! when the call fails, and otherwise age out after [`PENDING_TTL`] (by then the
//! row exists and the store answers). Memory: one small entry per channel opened
//! in the last [`PENDING_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkeeper_actors::domain::{ProviderId, TenantId};

/// How long a channel is routed from here: far longer than recording an
/// attempt takes, even under a registration storm.
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// A channel asked for and not yet known to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChannel {
    /// The provider it is opened for.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The token Google will echo in `X-Goog-Channel-Token`.
    pub token: String,
}

/// Channel id → the channel being opened. Shared by the Calendar adapter and
/// Google intake of one instance.
#[derive(Debug)]
pub struct PendingChannels {
    inner: Mutex<HashMap<String, (PendingChannel, Instant)>>,
    ttl: Duration,
}

impl Default for PendingChannels {
    fn default() -> Self {
        Self::with_ttl(PENDING_TTL)
    }
}

impl PendingChannels {
    /// A registry whose entries route for `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            ttl,
        }
    }

    /// Remembers `channel_id` as being opened now; drops entries past their time.
    pub fn open(&self, channel_id: &str, channel: PendingChannel) {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut inner = self.lock();
        inner.retain(|_, (_, at)| now.duration_since(*at) < ttl);
        inner.insert(channel_id.to_owned(), (channel, now));
    }

    /// The channel being opened under `channel_id`, if it was asked for within
    /// the registry's time to live.
    pub fn get(&self, channel_id: &str) -> Option<PendingChannel> {
        self.lock()
            .get(channel_id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(channel, _)| channel.clone())
    }

    /// Forgets `channel_id` (Google refused to open it).
    pub fn forget(&self, channel_id: &str) {
        self.lock().remove(channel_id);
    }

    /// Entries held (aged-out ones until the next `open`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (PendingChannel, Instant)>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Forgets a pending channel when dropped, unless [`ForgetUnlessKept::keep`] was
/// called: the adapter's call can end in an error or be dropped by its caller's
/// timeout, and neither may leave the channel routable.
pub(crate) struct ForgetUnlessKept<'a> {
    pending: &'a PendingChannels,
    channel_id: &'a str,
    kept: bool,
}

impl<'a> ForgetUnlessKept<'a> {
    /// Guards `channel_id`.
    pub(crate) fn new(pending: &'a PendingChannels, channel_id: &'a str) -> Self {
        Self {
            pending,
            channel_id,
            kept: false,
        }
    }

    /// The channel was opened: keep routing it until it ages out.
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for ForgetUnlessKept<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.pending.forget(self.channel_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(token: &str) -> PendingChannel {
        PendingChannel {
            provider: ProviderId(uuid::Uuid::new_v4()),
            tenant: TenantId::parse("acme").unwrap(),
            token: token.to_owned(),
        }
    }

    #[test]
    fn an_opened_channel_is_found_until_forgotten() {
        let pending = PendingChannels::default();
        assert!(pending.get("c1").is_none());
        let c = channel("t1");
        pending.open("c1", c.clone());
        assert_eq!(pending.get("c1"), Some(c));
        assert!(pending.get("c2").is_none());
        pending.forget("c1");
        assert!(pending.get("c1").is_none());
        assert!(pending.is_empty());
    }

    #[test]
    fn aged_out_entries_are_not_found_and_are_dropped_on_the_next_open() {
        let pending = PendingChannels::with_ttl(Duration::ZERO);
        pending.open("old", channel("t0"));
        assert!(pending.get("old").is_none());
        pending.open("new", channel("t1"));
        assert_eq!(pending.len(), 1, "the aged-out entry was dropped");
    }

    #[test]
    fn a_guard_forgets_unless_kept() {
        let pending = PendingChannels::default();
        pending.open("dropped", channel("t1"));
        pending.open("kept", channel("t2"));
        drop(ForgetUnlessKept::new(&pending, "dropped"));
        ForgetUnlessKept::new(&pending, "kept").keep();
        assert!(pending.get("dropped").is_none());
        assert!(pending.get("kept").is_some());
    }
}
