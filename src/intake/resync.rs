//! Resync events for Google providers. Google does not promise that every change
//! is pushed, so downstream must re-read a Google calendar or mailbox now and then:
//! every Google provider gets a `resync_required` event (reason `periodic`) on a
//! fixed cadence, and one whenever its channel or watch was replaced
//! (`channel_recreated` after a lost one was recreated, `channel_rotated` when a
//! Calendar channel was swapped for its successor).
//!
//! Why here and not in the supervisors: the cadence is one timer for the whole
//! deployment and a single store query, not 10,000 actor timers, and the core's
//! supervisor stays identical for every family. Replacements are seen in the
//! renewal results every attempt already produces. Owns nothing else: it reads
//! providers and publishes events, and never touches the lifecycle.

use super::{DomainEvent, Publisher, encode};
use crate::store::PgStore;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::clock::SharedClock;
use subkeeper_actors::domain::{
    DomainEventType, ProviderId, ProviderKind, RenewalAction, RenewalResult, TenantId,
};
use subkeeper_actors::ports::EventSink;

/// Publishes one `resync_required` event (fire and forget, like every domain
/// event); a failure is logged (and counted, when the event cannot be encoded).
async fn publish_resync(
    publisher: &dyn Publisher,
    clock: &SharedClock,
    tenant: &TenantId,
    provider: ProviderId,
    kind: ProviderKind,
    reason: &str,
    history_id: Option<String>,
) {
    let event = DomainEvent {
        event_type: DomainEventType::ResyncRequired,
        tenant: tenant.clone(),
        provider_id: provider,
        kind,
        reason: Some(reason.into()),
        at: clock.now(),
        resource: None,
        change_type: None,
        history_id,
    };
    let subject = publisher.event_subject(event.event_type, tenant);
    // A failure to encode is counted and logged by `encode`.
    let Ok(payload) = encode("domain_event", &event) else {
        return;
    };
    if let Err(e) = publisher.publish_event(&subject, payload).await {
        tracing::warn!(provider = %provider, error = %e, "resync event not published");
    }
}

/// Starts the periodic resync: every `period`, one `resync_required` (reason
/// `periodic`) per enabled Google provider with a live subscription. The first
/// round is one period after start. `None` when `period` is zero (off).
pub fn spawn_google_resync(
    store: PgStore,
    publisher: Arc<dyn Publisher>,
    clock: SharedClock,
    period: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    if period.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let targets = match store.google_resync_targets().await {
                Ok(targets) => targets,
                Err(e) => {
                    tracing::warn!(error = %e, "periodic Google resync skipped: store unavailable");
                    continue;
                }
            };
            for target in &targets {
                publish_resync(
                    publisher.as_ref(),
                    &clock,
                    &target.tenant,
                    target.provider,
                    target.kind,
                    "periodic",
                    None,
                )
                .await;
            }
            tracing::info!(
                providers = targets.len(),
                "periodic Google resync events published"
            );
        }
    }))
}

/// An [`EventSink`] that forwards every renewal result and adds a
/// `resync_required` event when a Google provider's channel or watch was replaced.
pub struct ResyncOnReplacement {
    /// Where renewal results go.
    inner: Arc<dyn EventSink>,
    /// Where resync events go.
    publisher: Arc<dyn Publisher>,
    /// Event time.
    clock: SharedClock,
}

impl ResyncOnReplacement {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn EventSink>,
        publisher: Arc<dyn Publisher>,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner,
            publisher,
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
            publish_resync(
                self.publisher.as_ref(),
                &self.clock,
                &result.tenant,
                result.provider_id,
                result.kind,
                reason,
                result.history_id.clone(),
            )
            .await;
        }
    }
}
