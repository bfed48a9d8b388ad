//! A sliding-window counter on provider (simulated) time: "at most N units in
//! any window of W seconds", exactly, as Graph's "1,000 requests per 20
//! seconds" and Google's per-minute quotas are stated.
//!
//! Owns only the arithmetic. It reads no clock: every call is given "now", so
//! [`crate::Simulator::advance`] and a scaled clock move its windows as they move
//! everything else at the provider. (A token-bucket crate such as `governor`
//! keeps its own monotonic clock, which a jump of the simulated clock would not
//! move; that is why this is not one.)

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::VecDeque;

/// The units charged inside the window, oldest first.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    /// Length of the window, in provider time.
    span: TimeDelta,
    /// Provider time of each charge and its units, in charge order.
    charges: VecDeque<(DateTime<Utc>, u64)>,
    /// Sum of the units in `charges`.
    total: u64,
}

impl SlidingWindow {
    /// An empty window `span` long.
    pub(crate) fn new(span: TimeDelta) -> Self {
        Self {
            span,
            charges: VecDeque::new(),
            total: 0,
        }
    }

    /// Forgets charges older than the span before `now` (a charge exactly one
    /// span old has left the window).
    fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - self.span;
        while let Some(&(at, units)) = self.charges.front() {
            if at > horizon {
                break;
            }
            self.total = self.total.saturating_sub(units);
            self.charges.pop_front();
        }
    }

    /// Units charged in the window ending at `now`.
    pub(crate) fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.prune(now);
        self.total
    }

    /// Charges `units` at `now`.
    pub(crate) fn charge(&mut self, now: DateTime<Utc>, units: u64) {
        self.prune(now);
        self.charges.push_back((now, units));
        self.total = self.total.saturating_add(units);
    }

    /// Whether nothing is left in the window at `now` (it can be forgotten).
    pub(crate) fn is_empty_at(&mut self, now: DateTime<Utc>) -> bool {
        self.prune(now);
        self.charges.is_empty()
    }

    /// How long after `now` until `next` more units fit under `max`, counting
    /// what is charged already; zero when they fit now. Charges that arrived
    /// after `now` (a clock moved back) leave last, as they would.
    pub(crate) fn wait_for(&mut self, now: DateTime<Utc>, max: u64, next: u64) -> TimeDelta {
        self.prune(now);
        let mut remaining = self.total;
        let mut free_at = now;
        for &(at, units) in &self.charges {
            if remaining.saturating_add(next) <= max {
                break;
            }
            remaining = remaining.saturating_sub(units);
            free_at = at + self.span;
        }
        (free_at - now).max(TimeDelta::zero())
    }
}

/// Whole seconds for a `Retry-After` header covering `wait`: rounded up, at
/// least one (a `Retry-After: 0` invites an immediate retry into the limit).
pub(crate) fn retry_after_seconds(wait: TimeDelta) -> u64 {
    let micros = wait.num_microseconds().unwrap_or(i64::MAX).max(0);
    let seconds = micros.saturating_add(999_999) / 1_000_000;
    u64::try_from(seconds).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn counts_exactly_what_is_inside_the_window() {
        let mut w = SlidingWindow::new(TimeDelta::seconds(20));
        w.charge(t0(), 1);
        w.charge(t0() + TimeDelta::seconds(5), 2);
        assert_eq!(w.used(t0() + TimeDelta::seconds(19)), 3);
        // Exactly 20 s old has left.
        assert_eq!(w.used(t0() + TimeDelta::seconds(20)), 2);
        assert!(!w.is_empty_at(t0() + TimeDelta::seconds(24)));
        assert!(w.is_empty_at(t0() + TimeDelta::seconds(25)));
    }

    #[test]
    fn wait_is_until_enough_charges_have_left() {
        let mut w = SlidingWindow::new(TimeDelta::seconds(20));
        for i in 0..3 {
            w.charge(t0() + TimeDelta::seconds(i), 1);
        }
        let now = t0() + TimeDelta::seconds(10);
        assert_eq!(w.wait_for(now, 4, 1), TimeDelta::zero());
        // Room for one more under 3: the oldest (t0) must leave, at t0 + 20 s.
        assert_eq!(w.wait_for(now, 3, 1), TimeDelta::seconds(10));
        // Room for two: t0 + 1 s must leave too.
        assert_eq!(w.wait_for(now, 3, 2), TimeDelta::seconds(11));
        assert_eq!(retry_after_seconds(TimeDelta::milliseconds(10_001)), 11);
        assert_eq!(retry_after_seconds(TimeDelta::zero()), 1);
    }
}
