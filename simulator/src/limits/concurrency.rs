//! Requests in flight per (tenant, app, mailbox): Outlook's "4 concurrent
//! requests per app per mailbox".
//!
//! Owns the in-flight counts and the permits that hold them. A permit is taken
//! when a request is admitted and given back when it is dropped — when the
//! answer has been decided, or when the client went away and actix dropped the
//! handler — so a held answer (a `Timeout` fault, a slow validation handshake)
//! keeps its slot for as long as it is held. It never waits: a request that finds
//! no free slot is refused at once, as Outlook refuses it.

use crate::journal::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whose slots a request takes: the tenant of the token, the app it was issued
/// to, and the mailbox (lowercased user id or UPN; `me` for the signed-in user).
pub(crate) type MailboxKey = (String, String, String);

/// In-flight counts; shared with the permits so a permit can give its slot back
/// on drop.
#[derive(Debug, Default)]
pub(crate) struct MailboxGate {
    /// Requests in flight per key; a key with none is removed.
    in_flight: Arc<Mutex<HashMap<MailboxKey, u32>>>,
}

impl MailboxGate {
    /// A slot for `key` if fewer than `max` are taken.
    pub(crate) fn try_acquire(&self, key: MailboxKey, max: u32) -> Option<MailboxPermit> {
        let mut in_flight = lock(&self.in_flight);
        let taken = in_flight.get(&key).copied().unwrap_or(0);
        if taken >= max {
            return None;
        }
        in_flight.insert(key.clone(), taken + 1);
        Some(MailboxPermit {
            in_flight: Arc::clone(&self.in_flight),
            key,
        })
    }

    /// Requests in flight for `key` now.
    pub(crate) fn in_flight(&self, key: &MailboxKey) -> u32 {
        lock(&self.in_flight).get(key).copied().unwrap_or(0)
    }
}

/// One taken slot; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct MailboxPermit {
    /// The gate's counts.
    in_flight: Arc<Mutex<HashMap<MailboxKey, u32>>>,
    /// The slot's key.
    key: MailboxKey,
}

impl Drop for MailboxPermit {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.in_flight);
        if let Some(taken) = in_flight.get_mut(&self.key) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mailbox: &str) -> MailboxKey {
        ("t".into(), "app".into(), mailbox.into())
    }

    #[test]
    fn slots_are_per_key_and_come_back_on_drop() {
        let gate = MailboxGate::default();
        let held: Vec<MailboxPermit> = (0..4)
            .map(|_| gate.try_acquire(key("a"), 4).unwrap())
            .collect();
        assert!(gate.try_acquire(key("a"), 4).is_none());
        assert!(gate.try_acquire(key("b"), 4).is_some());
        assert_eq!(gate.in_flight(&key("a")), 4);
        drop(held);
        assert_eq!(gate.in_flight(&key("a")), 0);
        assert!(gate.try_acquire(key("a"), 4).is_some());
    }
}
