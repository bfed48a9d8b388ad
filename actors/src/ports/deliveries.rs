//! The delivery log port: what each provider delivered and what subkeeper did
//! with it — hashes and codes, never a payload. The notification actor writes the
//! accepted deliveries once per stream batch; intake writes the refused ones
//! (rate-limited per provider) and the lifecycle notifications; the admin API and
//! the status page read them back, tenant-scoped, newest first.

use crate::domain::{DeliveryKind, DeliveryOutcome, DeliveryReason, ProviderId, TenantId};
use crate::ports::StoreError;
use crate::ports::page::{Page, PageRequest};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One delivery, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The provider it was routed to.
    pub provider_id: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// When subkeeper received it.
    pub received_at: DateTime<Utc>,
    /// What it was.
    pub kind: DeliveryKind,
    /// What subkeeper did with it.
    pub outcome: DeliveryOutcome,
    /// Why (from the one taxonomy).
    pub reason: DeliveryReason,
    /// The stream's de-duplication key (Nats-Msg-Id), when it got one.
    pub message_id: Option<String>,
    /// SHA-256 of the notification item as received, lowercase hex.
    pub payload_sha256: String,
}

/// One delivery as the admin API and the status page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Row id (the cursor's tie-breaker).
    pub id: i64,
    /// When subkeeper received it.
    pub received_at: DateTime<Utc>,
    /// change / lifecycle / google_message / gmail_push.
    pub kind: DeliveryKind,
    /// accepted / duplicate / rejected.
    pub outcome: DeliveryOutcome,
    /// Reason code.
    pub reason: DeliveryReason,
    /// The stream's de-duplication key.
    pub message_id: Option<String>,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
}

/// The delivery log.
#[async_trait]
pub trait DeliveryLog: Send + Sync + 'static {
    /// Appends `records` in one write; an accepted delivery already logged (the
    /// stream redelivered it) is skipped, so the write can be retried.
    async fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<(), StoreError>;

    /// A page of one of the tenant's providers' deliveries, newest first,
    /// ordered by `(received_at, id)` descending.
    async fn deliveries(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
        page: &PageRequest,
    ) -> Result<Page<DeliveryView>, StoreError>;
}
