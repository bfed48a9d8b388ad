//! [`ResyncOnReplacement`]: the renewal-result sink that also tells downstream to
//! resync when a Google provider's channel or watch was replaced
//! (`channel_recreated` after a lost one was recreated, `channel_rotated` when a
//! Calendar channel was swapped for its successor). Replacements are seen in the
//! renewal results every attempt already produces, so the supervisors stay the
//! same for every family.

use async_trait::async_trait;
use std::sync::Arc;
use subkeeper_actors::domain::{DomainEvent, ProviderKind, RenewalAction, RenewalResult};
use subkeeper_actors::ports::DomainEventSink;
use subkeeper_actors::ports::EventSink;
use subkeeper_actors::ports::clock::SharedClock;

/// An [`EventSink`] that forwards every renewal result and adds a
/// `resync_required` event when a Google provider's channel or watch was replaced.
pub struct ResyncOnReplacement {
    /// Where renewal results go.
    inner: Arc<dyn EventSink>,
    /// Where resync events go.
    events: Arc<dyn DomainEventSink>,
    /// Event time.
    clock: SharedClock,
}

impl ResyncOnReplacement {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn EventSink>,
        events: Arc<dyn DomainEventSink>,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner,
            events,
            clock,
        }
    }

    /// The resync reason a renewal result calls for, if any.
    pub fn reason(result: &RenewalResult) -> Option<&'static str> {
        if !result.success {
            return None;
        }
        match (result.kind, result.action) {
            (ProviderKind::GoogleCalendar | ProviderKind::Gmail, RenewalAction::Recreated) => {
                Some("channel_recreated")
            }
            (ProviderKind::GoogleCalendar, RenewalAction::Renewed) => Some("channel_rotated"),
            _ => None,
        }
    }
}

#[async_trait]
impl EventSink for ResyncOnReplacement {
    async fn renewal(&self, result: &RenewalResult) {
        self.inner.renewal(result).await;
        if let Some(reason) = Self::reason(result) {
            let event = DomainEvent::resync_required(
                result.tenant.clone(),
                result.provider_id,
                result.kind,
                reason,
                self.clock.now(),
                result.history_id.clone(),
            );
            if let Err(e) = self.events.publish(&event).await {
                tracing::warn!(provider = %event.provider_id, error = %e, "resync event not published");
            }
        }
    }
}
