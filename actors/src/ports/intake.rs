//! The intake ports: how webhook intake finds where a notification goes (a
//! provider-side subscription id, or for Gmail a mailbox, to a provider), which
//! Google providers are owed a periodic resync, and the outbox that holds accepted
//! notifications while the bus cannot take them.

use crate::domain::{ProviderId, ProviderKind, TenantId};
use crate::ports::StoreError;
use crate::ports::events::DurableMessage;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What became of a subscription row; all but `Deleted` still route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteState {
    /// The provider's live subscription.
    Active,
    /// Superseded by a newer subscription; still routable for late notifications.
    Replaced,
    /// Lost at the provider (404/410) before a replacement existed; still routable.
    Gone,
    /// Stopped by us (provider retired, channel rotated out): no longer accepted.
    Deleted,
}

impl RouteState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Replaced => "replaced",
            Self::Gone => "gone",
            Self::Deleted => "deleted",
        }
    }
}

impl std::str::FromStr for RouteState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "replaced" => Ok(Self::Replaced),
            "gone" => Ok(Self::Gone),
            "deleted" => Ok(Self::Deleted),
            other => Err(format!("unknown subscription state '{other}'")),
        }
    }
}

/// Where a notification for a subscription id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The provider.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
    /// The secret the provider must echo.
    pub client_state: String,
    /// What became of the subscription; all but `Deleted` are still routable.
    pub state: RouteState,
    /// False once the provider is disabled or deleted.
    pub provider_enabled: bool,
}

impl Route {
    /// The route of a subscription or channel being created right now, known
    /// only in memory until its row is written: live, its provider enabled.
    pub fn in_creation(
        provider: ProviderId,
        tenant: TenantId,
        kind: ProviderKind,
        client_state: String,
    ) -> Self {
        Self {
            provider,
            tenant,
            kind,
            client_state,
            state: RouteState::Active,
            provider_enabled: true,
        }
    }

    /// The provider was disabled or deleted, or we deleted this subscription:
    /// notifications for it are dropped, however authentic.
    pub fn is_retired(&self) -> bool {
        !self.provider_enabled || self.state == RouteState::Deleted
    }
}

/// A Gmail provider a Pub/Sub push for its mailbox goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRoute {
    /// The provider.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its live watch's id (`gmail:<mailbox>:<uuid>`).
    pub subscription_id: String,
}

/// A provider owed a periodic `resync_required` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncTarget {
    /// The provider.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
}

/// Routing reads for webhook intake.
#[async_trait]
pub trait IntakeStore: Send + Sync + 'static {
    /// The routes of the subscription ids we ever created among `external_ids`,
    /// in one read (a webhook request names many).
    async fn routes(&self, external_ids: &[&str]) -> Result<HashMap<String, Route>, StoreError>;

    /// The enabled Gmail providers watching `mailbox` (case-insensitive) that have
    /// a live watch. Several tenants may watch one mailbox; each gets the push.
    async fn mailbox_routes(&self, mailbox: &str) -> Result<Vec<MailboxRoute>, StoreError>;

    /// Enabled Google providers (Calendar and Gmail) with a live subscription: the
    /// ones whose pushes may have been missed.
    async fn google_resync_targets(&self) -> Result<Vec<ResyncTarget>, StoreError>;
}

/// One notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Row id, increasing in arrival order.
    pub id: i64,
    /// The message as it is to be published.
    pub message: DurableMessage,
}

/// Accepted notifications the bus did not acknowledge in time, kept until a relay
/// publishes them: nothing acknowledged to a provider is lost.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Stores messages for the relay; a message id already there is kept once.
    async fn push(&self, messages: &[DurableMessage]) -> Result<(), StoreError>;

    /// The oldest `limit` entries.
    async fn peek(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes entries the bus acknowledged.
    async fn remove(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Notes a failed relay attempt.
    async fn failed(&self, id: i64, error: &str) -> Result<(), StoreError>;

    /// How many entries wait, and when the oldest arrived.
    async fn stats(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError>;
}
