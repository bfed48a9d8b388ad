//! One budget of the form "at most `max` units in any `span`" — Graph's 1,000
//! subscription writes per 20 s, Calendar's 600 requests per minute — kept on
//! domain time in two parts:
//!
//! - bookings: the send times handed out to callers before they queue for a
//!   fleet permit, evenly spaced (`span / max` per unit) in arrival order, so a
//!   queue of thousands is paced by one lock acquisition each — no herd
//!   re-checking the budget every time one unit frees. Even spacing rather than
//!   a burst of `max` at once: every booked request still waits for a permit
//!   and a token before it leaves, and a burst's sends would trail its
//!   bookings by however long that takes, so the next burst, booked exactly one
//!   span later, would meet the last one's sends still in the window.
//! - `sent`: what really went out, stamped when it was sent. This is the truth
//!   the provider counts; a request whose send lagged its booking (or that
//!   never booked) is checked against it before it leaves.
//!
//! Owns only the arithmetic: it reads no clock (every call is given `now`), so a
//! scaled or paused clock moves it like everything else, and the tests drive it
//! with plain timestamps.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::VecDeque;

/// A sliding window of bookings and sends.
#[derive(Debug)]
pub(crate) struct Window {
    /// Length of the window, in domain time.
    span: TimeDelta,
    /// When the next booking may be sent: the last one's time plus its units'
    /// spacing.
    next_free: Option<DateTime<Utc>>,
    /// Send times and their units, non-decreasing.
    sent: VecDeque<(DateTime<Utc>, u32)>,
    /// Sum of the units in `sent`.
    sent_units: u64,
}

impl Window {
    /// An empty window `span` long.
    pub(crate) fn new(span: TimeDelta) -> Self {
        Self {
            span,
            next_free: None,
            sent: VecDeque::new(),
            sent_units: 0,
        }
    }

    /// Forgets what has left the window ending at `now` (an entry exactly one
    /// span old has left it, as the providers count).
    fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - self.span;
        prune(&mut self.sent, &mut self.sent_units, horizon);
    }

    /// Books `units` (at most `max`) at the earliest instant at or after `now`
    /// and at least `span × units / max` after the previous booking, and
    /// returns it: spaced so, no span holds more than `max` booked units.
    pub(crate) fn book(&mut self, now: DateTime<Utc>, max: u32, units: u32) -> DateTime<Utc> {
        let max = max.max(1);
        let units = units.clamp(1, max);
        let at = self.next_free.map_or(now, |free| free.max(now));
        let micros = self.span.num_microseconds().unwrap_or(i64::MAX);
        let spacing = micros.saturating_mul(i64::from(units)) / i64::from(max);
        self.next_free = Some(at + TimeDelta::microseconds(spacing));
        at
    }

    /// How long from `now` until `units` more (at most `max`) can be sent without
    /// any span holding more than `max` sent units; zero when they fit now.
    pub(crate) fn send_wait(&mut self, now: DateTime<Utc>, max: u32, units: u32) -> TimeDelta {
        self.prune(now);
        let units = u64::from(units.clamp(1, max.max(1)));
        let mut remaining = self.sent_units;
        let mut free_at = now;
        for &(at, sent_units) in &self.sent {
            if remaining + units <= u64::from(max) {
                break;
            }
            remaining -= u64::from(sent_units);
            free_at = at + self.span;
        }
        (free_at - now).max(TimeDelta::zero())
    }

    /// Records `units` sent at `now`. A clock that stepped back stamps it at the
    /// newest send instead: later than it was, so it is counted a little longer,
    /// never shorter.
    pub(crate) fn record_send(&mut self, now: DateTime<Utc>, units: u32) {
        self.prune(now);
        let at = self.sent.back().map_or(now, |&(last, _)| last.max(now));
        self.sent.push_back((at, units));
        self.sent_units += u64::from(units);
    }

    /// Units sent in the window ending at `now`.
    #[cfg(test)]
    pub(crate) fn sent_in_window(&mut self, now: DateTime<Utc>) -> u64 {
        self.prune(now);
        self.sent_units
    }

    /// Nothing booked or sent is left in the window at `now`: it can be dropped.
    pub(crate) fn is_idle(&mut self, now: DateTime<Utc>) -> bool {
        self.prune(now);
        self.next_free.is_none_or(|free| free <= now) && self.sent.is_empty()
    }
}

/// Drops entries at or before `horizon` from the front of `log`.
fn prune(log: &mut VecDeque<(DateTime<Utc>, u32)>, total: &mut u64, horizon: DateTime<Utc>) {
    while let Some(&(at, units)) = log.front() {
        if at > horizon {
            break;
        }
        *total = total.saturating_sub(u64::from(units));
        log.pop_front();
    }
}
