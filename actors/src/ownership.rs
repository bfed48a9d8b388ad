//! Ownership across instances, as the fleet sees it: the lease settings, the guard
//! that keeps a supervisor from calling a provider once this instance's lease may
//! have run out, and how many providers to claim or hand over on a heartbeat.
//!
//! The fleet heartbeats through the [`LeaseStore`] port; an embedded store has no
//! leases and its one instance owns every provider.

use crate::ports::{LeaseStore, Membership};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Called with every heartbeat's [`Membership`] (the providers' budgets are shared
/// by the live instances).
pub type MembershipHook = Arc<dyn Fn(&Membership) + Send + Sync>;

/// How this instance takes part in a shared fleet.
#[derive(Clone)]
pub struct LeaseConfig {
    /// The lease operations.
    pub store: Arc<dyn LeaseStore>,
    /// How often the lease is renewed (a fraction of its TTL).
    pub heartbeat_every: Duration,
    /// Most providers claimed per statement, and handed over per heartbeat.
    pub batch: u32,
    /// Told what each heartbeat learned.
    pub on_membership: Option<MembershipHook>,
}

/// Until when this instance's lease is certainly current, as this process sees
/// it: the time a heartbeat was *sent* plus the TTL. A process that was paused
/// (SIGSTOP, a long GC-like stall, a VM migration) wakes up past it and calls no
/// provider until a heartbeat has told it what it still owns.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    /// Milliseconds after `base` until which the lease holds; `u64::MAX`: no
    /// leases (always valid).
    until_ms: Arc<AtomicU64>,
    base: Instant,
}

impl Default for LeaseGuard {
    /// A guard for a store without leases: always valid.
    fn default() -> Self {
        Self {
            until_ms: Arc::new(AtomicU64::new(u64::MAX)),
            base: Instant::now(),
        }
    }
}

impl LeaseGuard {
    /// A guard that is not valid until the first heartbeat.
    pub fn leased() -> Self {
        Self {
            until_ms: Arc::new(AtomicU64::new(0)),
            base: Instant::now(),
        }
    }

    /// A heartbeat sent at `sent` renewed the lease for `ttl`.
    pub fn renewed(&self, sent: Instant, ttl: Duration) {
        let until = (sent + ttl)
            .saturating_duration_since(self.base)
            .as_millis();
        self.until_ms.store(
            u64::try_from(until).unwrap_or(u64::MAX - 1),
            Ordering::Relaxed,
        );
    }

    /// The lease ended (this instance left the fleet).
    pub fn ended(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }

    /// True while the lease certainly holds.
    pub fn valid(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until == u64::MAX
            || u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX) < until
    }
}

/// What a heartbeat calls for: claim more, hand some over, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebalance {
    /// Claim up to this many unowned providers.
    Claim(u64),
    /// Hand this many over (this instance holds more than its share).
    HandOver(u64),
    /// Balanced.
    Hold,
}

/// Claims up to the fair share; hands over what lies above it, at most `batch`
/// per heartbeat so the fleet moves in steps others can absorb.
pub fn rebalance(membership: &Membership, batch: u32) -> Rebalance {
    let share = membership.fair_share();
    if membership.owned < share {
        Rebalance::Claim(share - membership.owned)
    } else if membership.owned > share {
        Rebalance::HandOver((membership.owned - share).min(u64::from(batch)))
    } else {
        Rebalance::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(live: u32, providers: u64, owned: u64) -> Membership {
        Membership {
            live_instances: live,
            providers,
            owned,
            lapsed: false,
        }
    }

    #[test]
    fn shares_cover_the_fleet_and_move_in_batches() {
        assert_eq!(rebalance(&m(1, 3000, 0), 1000), Rebalance::Claim(3000));
        assert_eq!(rebalance(&m(3, 3000, 1000), 1000), Rebalance::Hold);
        // A second instance joined: the first gives up half, a batch at a time.
        assert_eq!(
            rebalance(&m(2, 3000, 3000), 1000),
            Rebalance::HandOver(1000)
        );
        assert_eq!(rebalance(&m(2, 3000, 1600), 1000), Rebalance::HandOver(100));
        // One of three died: each survivor takes half of its providers.
        assert_eq!(rebalance(&m(2, 3000, 1000), 1000), Rebalance::Claim(500));
        // Rounding up: 3,001 over 3 gives everyone room for 1,001.
        assert_eq!(rebalance(&m(3, 3001, 1000), 1000), Rebalance::Claim(1));
        assert_eq!(rebalance(&m(0, 10, 0), 1000), Rebalance::Claim(10));
    }

    #[test]
    fn a_guard_lapses_after_its_ttl_and_none_means_always() {
        assert!(LeaseGuard::default().valid());
        let guard = LeaseGuard::leased();
        assert!(!guard.valid(), "not valid before the first heartbeat");
        guard.renewed(Instant::now(), Duration::from_secs(60));
        assert!(guard.valid());
        guard.renewed(
            Instant::now() - Duration::from_secs(61),
            Duration::from_secs(60),
        );
        assert!(!guard.valid(), "a heartbeat sent longer than a TTL ago");
        guard.ended();
        assert!(!guard.valid());
    }
}
