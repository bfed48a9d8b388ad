//! The clock port: every "now" and every timer delay in the core goes through it.
//!
//! Owns the mapping between domain time (UTC timestamps stored in Postgres and
//! exchanged with providers) and timer time (what `ctx.run_later` waits). Production
//! uses [`SystemClock`]; the demo and the paused-time tests use [`ScaledClock`], whose
//! "now" is derived from tokio's clock so `tokio::time::pause` drives it, and which
//! can run faster than real time.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Where "now" comes from, and how long a timer must wait for a span of that time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant in domain time.
    fn now(&self) -> DateTime<Utc>;

    /// The real duration a tokio timer must wait so that `span` of domain time has
    /// passed. Negative spans wait zero.
    fn timer_delay(&self, span: TimeDelta) -> Duration;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time; timers wait exactly the span.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn timer_delay(&self, span: TimeDelta) -> Duration {
        span.to_std().unwrap_or(Duration::ZERO)
    }
}

/// Domain time that starts at `origin` and advances `speed` times faster than
/// tokio's clock. With `speed == 1` under `tokio::time::pause` it gives days of
/// renewals in milliseconds of wall time; with a large speed it drives the demo.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    /// Domain time at `start`.
    origin: DateTime<Utc>,
    /// Tokio instant the clock was created at (paused time moves it too).
    start: tokio::time::Instant,
    /// How many domain seconds pass per tokio second; at least 1.
    speed: u32,
}

impl ScaledClock {
    /// A clock that reads `origin` now and runs `speed`× faster than tokio time.
    /// Must be called inside a tokio runtime when that runtime's time is paused, so
    /// that `start` is read from the paused clock.
    pub fn new(origin: DateTime<Utc>, speed: u32) -> Self {
        Self {
            origin,
            start: tokio::time::Instant::now(),
            speed: speed.max(1),
        }
    }

    /// The speed factor (domain seconds per tokio second).
    pub fn speed(&self) -> u32 {
        self.speed
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        let scaled = elapsed.saturating_mul(self.speed);
        self.origin + TimeDelta::from_std(scaled).unwrap_or(TimeDelta::MAX)
    }

    fn timer_delay(&self, span: TimeDelta) -> Duration {
        span.to_std().unwrap_or(Duration::ZERO) / self.speed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scaled_clock_follows_paused_tokio_time() {
        let origin = Utc::now();
        let clock = ScaledClock::new(origin, 60);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(clock.now() - origin, TimeDelta::seconds(600));
        assert_eq!(
            clock.timer_delay(TimeDelta::minutes(1)),
            Duration::from_secs(1)
        );
        assert_eq!(clock.timer_delay(TimeDelta::seconds(-5)), Duration::ZERO);
    }
}
