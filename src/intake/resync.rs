//! Periodic resync events for Google providers. Google does not promise that every
//! change is pushed, so downstream must re-read a Google calendar or mailbox now
//! and then: every Google provider gets a `resync_required` event (reason
//! `periodic`) on a fixed cadence. (The events for a replaced channel or watch
//! come from the renewal results: `bus::ResyncOnReplacement`.)
//!
//! Why here and not in the supervisors: the cadence is one timer for the whole
//! deployment and a single store query, not 10,000 actor timers, and the core's
//! supervisor stays identical for every family. Owns nothing else: it reads
//! providers and publishes events through the domain-event port, and never
//! touches the lifecycle.

use super::DomainEvent;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{DomainEventSink, IntakeStore};

/// Publishes one `resync_required` event (fire and forget, like every domain
/// event); a failure is logged, not retried.
pub async fn publish_resync(events: &dyn DomainEventSink, event: DomainEvent) {
    if let Err(e) = events.publish(&event).await {
        tracing::warn!(provider = %event.provider_id, error = %e, "resync event not published");
    }
}

/// Starts the periodic resync: every `period`, one `resync_required` (reason
/// `periodic`) per enabled Google provider with a live subscription. The first
/// round is one period after start. `None` when `period` is zero (off).
pub fn spawn_google_resync(
    store: Arc<dyn IntakeStore>,
    events: Arc<dyn DomainEventSink>,
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
                let event = DomainEvent::resync_required(
                    target.tenant.clone(),
                    target.provider,
                    target.kind,
                    "periodic",
                    clock.now(),
                    None,
                );
                publish_resync(events.as_ref(), event).await;
            }
            tracing::info!(
                providers = targets.len(),
                "periodic Google resync events published"
            );
        }
    }))
}
