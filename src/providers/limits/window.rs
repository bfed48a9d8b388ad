//! One budget of the form "at most `max` units in any `span`" — Graph's 1,000
//! subscription writes per 20 s, Calendar's 600 requests per minute — kept on
//! domain time as two logs:
//!
//! - `booked`: the send times handed out to callers before they queue for a
//!   fleet permit. Each booking gets the earliest instant at which it fits, in
//!   arrival order, so a queue of thousands is paced by one lock acquisition
//!   each — no herd re-checking the budget every time one unit frees.
//! - `sent`: what really went out, stamped when it was sent. This is the truth
//!   the provider counts; a request whose booking aged while it waited for a
//!   permit (or that never booked) is checked against it before it leaves.
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
    /// Booked send times and their units, non-decreasing.
    booked: VecDeque<(DateTime<Utc>, u32)>,
    /// Sum of the units in `booked`.
    booked_units: u64,
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
            booked: VecDeque::new(),
            booked_units: 0,
            sent: VecDeque::new(),
            sent_units: 0,
        }
    }

    /// Forgets what has left the window ending at `now` (an entry exactly one
    /// span old has left it, as the providers count).
    fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - self.span;
        prune(&mut self.booked, &mut self.booked_units, horizon);
        prune(&mut self.sent, &mut self.sent_units, horizon);
    }

    /// Books `units` (at most `max`) at the earliest instant at or after `now`
    /// and after every earlier booking at which no span holds more than `max`
    /// booked units, and returns that instant.
    pub(crate) fn book(&mut self, now: DateTime<Utc>, max: u32, units: u32) -> DateTime<Utc> {
        self.prune(now);
        let units = units.clamp(1, max.max(1));
        let mut at = self.booked.back().map_or(now, |&(last, _)| last.max(now));
        // Walk back from the newest booking: the first one that would make the
        // window ending at `at` overflow must have left it.
        let mut counted = u64::from(units);
        for &(booked_at, booked_units) in self.booked.iter().rev() {
            counted += u64::from(booked_units);
            if counted > u64::from(max) {
                at = at.max(booked_at + self.span);
                break;
            }
        }
        self.booked.push_back((at, units));
        self.booked_units += u64::from(units);
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
        self.booked.is_empty() && self.sent.is_empty()
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
