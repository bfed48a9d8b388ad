//! [`NatsDomainEvents`]: the notification actor's `DomainEventSink` port over core
//! NATS. Each event goes to `{prefix}.event.<type>.<tenant>` as JSON.
//!
//! Core NATS, like `resync_required`: an event reaches whoever is subscribed now.
//! The notification actor acknowledges a webhook only after its event was handed
//! to the client, so while connected every notification yields its event at least
//! once; a service that must not miss one while it is down reads the webhook
//! stream with its own durable consumer instead.

use super::Topology;
use async_trait::async_trait;
use std::sync::Arc;
use subkeeper_actors::domain::DomainEvent;
use subkeeper_actors::ports::{DomainEventSink, PublishError};

/// Publishes domain events on core NATS.
#[derive(Clone)]
pub struct NatsDomainEvents {
    client: async_nats::Client,
    topology: Arc<Topology>,
}

impl NatsDomainEvents {
    pub(super) fn new(client: async_nats::Client, topology: Arc<Topology>) -> Self {
        Self { client, topology }
    }
}

#[async_trait]
impl DomainEventSink for NatsDomainEvents {
    async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError> {
        let subject = self.topology.event_subject(event.event_type, &event.tenant);
        // A failure to encode is counted and logged by `encode`.
        let payload = crate::intake::encode("domain_event", event)
            .map_err(|e| PublishError::Rejected(e.to_string()))?;
        self.client
            .publish(subject, payload.into())
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }
}
