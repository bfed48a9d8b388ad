//! [`NatsEventSink`]: the `EventSink` port over JetStream. Every RenewalResult goes to
//! `{prefix}.renewal.<tenant>.<provider>` as JSON, with a `Nats-Msg-Id` derived from
//! the attempt so that publishing the same result twice stores it once.
//!
//! Failures are logged and counted, never raised: the core does not retry, and the
//! result is already a `renewal_attempts` row in Postgres.

use super::Topology;
use crate::bus::renewal_message_id;
use crate::telemetry::events::{JetStreamPublishFailed, JetStreamPublished};
use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;
use subkeeper_actors::domain::RenewalResult;
use subkeeper_actors::ports::EventSink;

/// Publishes renewal results to the renewal stream.
#[derive(Clone)]
pub struct NatsEventSink {
    jetstream: jetstream::Context,
    topology: Arc<Topology>,
}

impl NatsEventSink {
    pub(super) fn new(jetstream: jetstream::Context, topology: Arc<Topology>) -> Self {
        Self {
            jetstream,
            topology,
        }
    }

    async fn publish(&self, subject: String, result: &RenewalResult) -> Result<bool, String> {
        // While disconnected, a publish would wait out the whole ack timeout and
        // might still land after we counted it failed; fail now instead.
        if self.jetstream.client().connection_state() == State::Disconnected {
            return Err("not connected to NATS".into());
        }
        let payload = serde_json::to_vec(result).map_err(|e| e.to_string())?;
        let ack = self
            .jetstream
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(renewal_message_id(result)),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(ack.duplicate)
    }
}

#[async_trait]
impl EventSink for NatsEventSink {
    async fn renewal(&self, result: &RenewalResult) {
        let stream = self.topology.renewal_stream();
        let subject = self
            .topology
            .renewal_subject(&result.tenant, result.provider_id);
        let started = Instant::now();
        match self.publish(subject.clone(), result).await {
            Ok(duplicate) => JetStreamPublished {
                stream: &stream,
                subject: &subject,
                seconds: started.elapsed().as_secs_f64(),
                duplicate,
            }
            .emit(),
            Err(error) => JetStreamPublishFailed {
                stream: &stream,
                subject: &subject,
                error: &error,
                lost: Some("the result is in renewal_attempts only"),
            }
            .emit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use subkeeper_actors::domain::{AttemptKind, HealthState, ProviderId, ProviderKind, TenantId};

    fn result(attempt: AttemptKind, nanos: u32) -> RenewalResult {
        RenewalResult {
            provider_id: ProviderId(uuid::Uuid::nil()),
            tenant: TenantId::parse("acme").unwrap(),
            kind: ProviderKind::GraphMail,
            success: true,
            attempt,
            action: attempt.success_action(),
            new_expiration: None,
            subscription_id: None,
            history_id: None,
            error_class: None,
            error_message: None,
            http_status: None,
            consecutive_failures: 0,
            status: HealthState::Healthy,
            previous_status: HealthState::Renewing,
            attempted_at: Utc.timestamp_opt(1_700_000_000, nanos).unwrap(),
            scheduled_at: None,
            duration_ms: 12,
        }
    }

    #[test]
    fn message_ids_tell_attempts_apart_and_ignore_everything_else() {
        let renew = result(AttemptKind::Renew, 5);
        assert_eq!(
            renewal_message_id(&renew),
            "renewal:00000000-0000-0000-0000-000000000000:2023-11-14T22:13:20.000000005Z:renew"
        );
        // The same attempt, whatever else differs, is the same message.
        let mut again = renew.clone();
        again.duration_ms = 99;
        assert_eq!(renewal_message_id(&again), renewal_message_id(&renew));
        // A recreate in the same turn, or an attempt a nanosecond later, is not.
        for other in [
            result(AttemptKind::Recreate, 5),
            result(AttemptKind::Renew, 6),
        ] {
            assert_ne!(renewal_message_id(&other), renewal_message_id(&renew));
        }
    }
}
