//! Rows as both databases return them (`#[derive(sqlx::FromRow)]` is generic over
//! the database), and their checked conversion into the core's types: a stored
//! value that names no kind, state or tenant is a corrupt row, not a panic.

use super::parse;
use chrono::{DateTime, Utc};
use subkeeper_actors::domain::{Provider, ProviderHealth, ProviderId, Subscription, TenantId};
use subkeeper_actors::ports::{Fence, OwnedProvider, StoreError};
use uuid::Uuid;

/// Columns of `providers` that make a [`ProviderRow`], prefixed `p.`.
pub(super) const PROVIDER_COLUMNS: &str = "p.id, p.tenant_id, p.kind, p.display_name, p.resource, p.credentials_id, p.enabled, p.credentials_version, p.lease_token";

/// Columns of `subscriptions` that make a [`SubscriptionRow`], prefixed `s.`.
pub(super) const SUBSCRIPTION_COLUMNS: &str = "s.provider_id, s.external_id, s.resource_id, s.client_state, s.expires_at, s.created_at, s.renewed_at, s.history_id";

/// Columns of `provider_health` that make a [`HealthRow`], prefixed `h.`.
pub(super) const HEALTH_COLUMNS: &str = "h.subscription_status, h.subscription_expires_at, h.last_renewal_attempt_at, h.last_renewal_result, h.failure_reason, h.last_webhook_received_at, h.consecutive_failure_count, h.next_renewal_at, h.silent_since";

/// A tenant id read back from the database.
pub(super) fn tenant(raw: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// [`PROVIDER_COLUMNS`].
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ProviderRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub kind: String,
    pub display_name: String,
    pub resource: String,
    pub credentials_id: Option<Uuid>,
    pub enabled: bool,
    pub credentials_version: i64,
    /// The fence of the current claim on the provider.
    pub lease_token: i64,
}

impl ProviderRow {
    pub fn provider(&self) -> Result<Provider, StoreError> {
        Ok(Provider {
            id: ProviderId(self.id),
            tenant: tenant(&self.tenant_id)?,
            kind: parse(&self.kind)?,
            display_name: self.display_name.clone(),
            resource: self.resource.clone(),
            credentials_id: self.credentials_id,
            enabled: self.enabled,
            credentials_version: self.credentials_version,
        })
    }

    pub fn owned(&self) -> Result<OwnedProvider, StoreError> {
        Ok(OwnedProvider {
            provider: self.provider()?,
            fence: Fence(self.lease_token),
        })
    }
}

/// [`SUBSCRIPTION_COLUMNS`].
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SubscriptionRow {
    pub provider_id: Uuid,
    pub external_id: String,
    pub resource_id: Option<String>,
    pub client_state: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub renewed_at: Option<DateTime<Utc>>,
    pub history_id: Option<String>,
}

impl From<SubscriptionRow> for Subscription {
    fn from(row: SubscriptionRow) -> Self {
        Self {
            provider_id: ProviderId(row.provider_id),
            external_id: row.external_id,
            resource_id: row.resource_id,
            client_state: row.client_state,
            expires_at: row.expires_at,
            created_at: row.created_at,
            renewed_at: row.renewed_at,
            history_id: row.history_id,
        }
    }
}

/// [`HEALTH_COLUMNS`].
#[derive(Debug, sqlx::FromRow)]
pub(super) struct HealthRow {
    pub subscription_status: String,
    pub subscription_expires_at: Option<DateTime<Utc>>,
    pub last_renewal_attempt_at: Option<DateTime<Utc>>,
    pub last_renewal_result: Option<String>,
    pub failure_reason: Option<String>,
    pub last_webhook_received_at: Option<DateTime<Utc>>,
    pub consecutive_failure_count: i32,
    pub next_renewal_at: Option<DateTime<Utc>>,
    pub silent_since: Option<DateTime<Utc>>,
}

impl HealthRow {
    pub fn health(self, provider: ProviderId) -> Result<ProviderHealth, StoreError> {
        Ok(ProviderHealth {
            provider_id: provider,
            subscription_status: parse(&self.subscription_status)?,
            subscription_expires_at: self.subscription_expires_at,
            last_renewal_attempt_at: self.last_renewal_attempt_at,
            last_renewal_result: self.last_renewal_result.as_deref().map(parse).transpose()?,
            failure_reason: self.failure_reason,
            last_webhook_received_at: self.last_webhook_received_at,
            consecutive_failure_count: u32::try_from(self.consecutive_failure_count).unwrap_or(0),
            next_renewal_at: self.next_renewal_at,
            silent_since: self.silent_since,
        })
    }
}
