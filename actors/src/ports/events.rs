//! The event ports: where renewal results, downstream domain events and alerts go
//! (NATS in production, in-process channels in tests), and the one error a
//! publish answers with.

use crate::alerting::Alert;
use crate::domain::{DomainEvent, RenewalResult};
use async_trait::async_trait;

/// Why a publish did not reach the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not connected, or the connection failed while sending.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// No acknowledgement in time.
    #[error("no acknowledgement in time: {0}")]
    Timeout(String),
    /// The bus refused the message, or it could not be encoded.
    #[error("refused: {0}")]
    Rejected(String),
}

/// Where renewal results go (NATS in production).
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Publishes one renewal result. Failures are logged by the adapter; the core does
    /// not retry (the result is also in `renewal_attempts`).
    async fn renewal(&self, result: &RenewalResult);
}

/// Where downstream domain events go (`{prefix}.event.<type>.<tenant>`).
#[async_trait]
pub trait DomainEventSink: Send + Sync + 'static {
    /// Publishes one event; an error means it was not handed to the bus.
    async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError>;
}

/// Where alerts go (a JetStream stream in production).
#[async_trait]
pub trait AlertSink: Send + Sync + 'static {
    /// Publishes `alert` with its id as the de-duplication key and waits until it is
    /// stored. `Ok(true)`: the stream already had it.
    async fn publish(&self, alert: &Alert) -> Result<bool, PublishError>;
}

/// A message for a durable stream: its subject, the id the stream deduplicates
/// on, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableMessage {
    /// Where it is published (`{prefix}.webhook.<kind>.<tenant>.<provider>`).
    pub subject: String,
    /// The de-duplication key: the same id within the stream's window is stored
    /// once.
    pub msg_id: String,
    /// The body, as published.
    pub payload: Vec<u8>,
}

/// Publishing accepted webhook notifications durably (the webhook stream: a
/// JetStream stream, or the embedded store's).
#[async_trait]
pub trait WebhookPublisher: Send + Sync + 'static {
    /// Publishes `message` and waits, at most `timeout`, until the stream has
    /// stored it; an error means it may not be stored. `Ok(true)`: the stream
    /// already held a message with its id (nothing new was stored).
    async fn publish_durable(
        &self,
        message: &DurableMessage,
        timeout: std::time::Duration,
    ) -> Result<bool, PublishError>;

    /// The subject of accepted notifications of one provider.
    fn webhook_subject(
        &self,
        kind: crate::domain::ProviderKind,
        tenant: &crate::domain::TenantId,
        provider: crate::domain::ProviderId,
    ) -> String;
}
