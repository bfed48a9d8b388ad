//! Ownership by leases, for several instances sharing one fleet (Postgres only;
//! an embedded store has one instance, which owns everything).
//!
//! Each instance holds a lease on itself that it renews on every heartbeat, and
//! owns providers it claimed. A provider whose owner's lease ran out (the instance
//! died or stopped) may be claimed by another. Every claim hands out a new, larger
//! [`Fence`](super::Fence), and every state write carries the fence it was made
//! under, so a former owner that wakes up late changes nothing.

use super::{Fence, StoreError};
use crate::domain::ProviderId;
use async_trait::async_trait;
use std::time::Duration;

/// What one heartbeat learned about the instances sharing the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// Instances whose lease is current, this one included; at least 1.
    pub live_instances: u32,
    /// Enabled providers in the whole fleet.
    pub providers: u64,
    /// Enabled providers this instance owns.
    pub owned: u64,
    /// This instance's lease had run out before this heartbeat renewed it: others
    /// may have adopted some of its providers.
    pub lapsed: bool,
}

impl Membership {
    /// This instance's fair share: the fleet divided by the live instances,
    /// rounded up, so that the shares together cover every provider.
    pub fn fair_share(&self) -> u64 {
        self.providers
            .div_ceil(u64::from(self.live_instances.max(1)))
    }
}

/// The lease operations of one instance.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// How long a lease lasts without a heartbeat.
    fn ttl(&self) -> Duration;

    /// Renews this instance's lease (registering it on first use) and counts the
    /// live instances and the providers.
    async fn heartbeat(&self) -> Result<Membership, StoreError>;

    /// Claims up to `limit` providers that no live instance owns (enabled ones, and
    /// retired ones whose subscription still needs deleting), each under a new
    /// fence, skipping rows another instance is claiming at the same moment.
    /// Returns how many it claimed.
    async fn claim(&self, limit: u32) -> Result<u32, StoreError>;

    /// Gives up providers this instance still holds under the given fences, so
    /// that others can claim them. Returns how many it released.
    async fn release(&self, providers: &[(ProviderId, Fence)]) -> Result<u32, StoreError>;

    /// Of `providers`, those that are enabled but no longer this instance's: the
    /// fleet stands their supervisors down instead of retiring them.
    async fn disowned(&self, providers: &[ProviderId]) -> Result<Vec<ProviderId>, StoreError>;

    /// Leaves the fleet: releases every provider this instance owns and ends its
    /// lease. Returns how many providers it released.
    async fn leave(&self) -> Result<u32, StoreError>;
}
