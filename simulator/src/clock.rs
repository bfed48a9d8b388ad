//! The simulator's clock: the base clock it was given plus an offset that tests and
//! the control API move forward, so a subscription's seven days pass in a call.
//!
//! Owns only "what time is it at the provider". Every expiry the simulator checks
//! (access tokens, subscriptions) reads this clock; nothing here sleeps.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use subkeeper_actors::ports::clock::{Clock, SharedClock};

/// Provider time: `base.now() + offset`. Share it with the service under test when
/// both sides must agree on "now" (the demo does).
pub struct SimClock {
    /// Where time comes from before any jump: wall clock, or a scaled clock.
    base: SharedClock,
    /// Total of all [`SimClock::advance`] calls, in microseconds (an atomic so
    /// `now()` never takes a lock; i64 microseconds cover ±292,000 years).
    offset_micros: AtomicI64,
}

impl SimClock {
    /// A clock that reads exactly like `base` until it is advanced.
    pub fn new(base: SharedClock) -> Self {
        Self {
            base,
            offset_micros: AtomicI64::new(0),
        }
    }

    /// Jumps provider time forward by `by` (a negative span moves it back, which
    /// only tests that replay an edge want).
    pub fn advance(&self, by: TimeDelta) {
        let micros = by.num_microseconds().unwrap_or(if by < TimeDelta::zero() {
            i64::MIN
        } else {
            i64::MAX
        });
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .offset_micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                Some(current.saturating_add(micros))
            });
    }

    /// How far this clock has been moved away from its base.
    pub fn offset(&self) -> TimeDelta {
        TimeDelta::microseconds(self.offset_micros.load(Ordering::SeqCst))
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.base
            .now()
            .checked_add_signed(self.offset())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn timer_delay(&self, span: TimeDelta) -> Duration {
        // A jump changes what time it is, not how fast time passes.
        self.base.timer_delay(span)
    }
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClock")
            .field("now", &self.now())
            .field("offset", &self.offset())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use subkeeper_actors::ports::clock::SystemClock;

    #[test]
    fn advance_moves_now_and_accumulates() {
        let clock = SimClock::new(Arc::new(SystemClock));
        let before = clock.now();
        clock.advance(TimeDelta::days(7));
        clock.advance(TimeDelta::hours(1));
        let jumped = clock.now() - before;
        assert!(jumped >= TimeDelta::days(7) + TimeDelta::hours(1));
        assert!(jumped < TimeDelta::days(7) + TimeDelta::hours(1) + TimeDelta::seconds(5));
        assert_eq!(clock.offset(), TimeDelta::days(7) + TimeDelta::hours(1));
        assert_eq!(
            clock.timer_delay(TimeDelta::seconds(3)),
            Duration::from_secs(3)
        );
    }
}
