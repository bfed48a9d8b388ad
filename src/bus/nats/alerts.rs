//! [`JetStreamAlertSink`]: the alerting actor's `AlertSink` port over JetStream.
//! Each alert goes to `{prefix}.alert.<tenant>.<provider>` as JSON with its id as
//! `Nats-Msg-Id`, and counts as published only once the alert stream acknowledged
//! it: the stream stores an id once, so a republish is harmless and a failure is
//! retried by the actor.

use super::Topology;
use crate::telemetry::events::{JetStreamPublishFailed, JetStreamPublished};
use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;
use subkeeper_actors::alerting::Alert;
use subkeeper_actors::ports::{AlertSink, PublishError};

/// Publishes alert events to the alert stream.
#[derive(Clone)]
pub struct JetStreamAlertSink {
    jetstream: jetstream::Context,
    topology: Arc<Topology>,
}

impl JetStreamAlertSink {
    pub(super) fn new(jetstream: jetstream::Context, topology: Arc<Topology>) -> Self {
        Self {
            jetstream,
            topology,
        }
    }
}

#[async_trait]
impl AlertSink for JetStreamAlertSink {
    async fn publish(&self, alert: &Alert) -> Result<bool, PublishError> {
        let stream = self.topology.alert_stream();
        let subject = self
            .topology
            .alert_subject(&alert.tenant, alert.provider_id);
        let failed = |error: PublishError| {
            JetStreamPublishFailed {
                stream: &stream,
                subject: &subject,
                error: &error.to_string(),
                lost: None,
            }
            .emit();
            error
        };
        // While disconnected a publish would wait out the whole ack timeout; the
        // actor retries sooner than that.
        if self.jetstream.client().connection_state() == State::Disconnected {
            return Err(failed(PublishError::Unavailable(
                "not connected to NATS".into(),
            )));
        }
        let payload = serde_json::to_vec(alert).map_err(|e| {
            failed(PublishError::Rejected(format!(
                "cannot encode the alert: {e}"
            )))
        })?;
        let started = Instant::now();
        let ack = async {
            self.jetstream
                .send_publish(
                    subject.clone(),
                    PublishMessage::build()
                        .payload(payload.into())
                        .message_id(alert.id.clone()),
                )
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?
                .await
                .map_err(|e| PublishError::Timeout(e.to_string()))
        }
        .await
        .map_err(failed)?;
        JetStreamPublished {
            stream: &stream,
            subject: &subject,
            seconds: started.elapsed().as_secs_f64(),
            duplicate: ack.duplicate,
        }
        .emit();
        Ok(ack.duplicate)
    }
}
