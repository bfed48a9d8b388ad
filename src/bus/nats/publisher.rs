//! Intake's `WebhookPublisher` over JetStream: notifications go to the webhook
//! stream with a `Nats-Msg-Id` and count as published only once the stream holds
//! them.

use super::NatsBus;
use crate::telemetry::events::{JetStreamPublishFailed, JetStreamPublished};
use async_nats::connection::State;
use async_nats::jetstream::message::PublishMessage;
use async_trait::async_trait;
use std::time::{Duration, Instant};
use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId};
use subkeeper_actors::ports::{DurableMessage, PublishError, WebhookPublisher};

#[async_trait]
impl WebhookPublisher for NatsBus {
    async fn publish_durable(
        &self,
        message: &DurableMessage,
        timeout: Duration,
    ) -> Result<bool, PublishError> {
        let subject = message.subject.as_str();
        let stream = self.topology.webhook_stream();
        // Disconnected: fail now so the request answers from the outbox in time.
        let failed = |error: PublishError| {
            JetStreamPublishFailed {
                stream: &stream,
                subject,
                error: &error.to_string(),
                lost: None,
            }
            .emit();
            error
        };
        if self.client.connection_state() == State::Disconnected {
            return Err(failed(PublishError::Unavailable(
                "not connected to NATS".into(),
            )));
        }
        let started = Instant::now();
        let publish = async {
            self.jetstream
                .send_publish(
                    subject.to_owned(),
                    PublishMessage::build()
                        .payload(message.payload.clone().into())
                        .message_id(&message.msg_id),
                )
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?
                .await
                .map_err(|e| PublishError::Rejected(e.to_string()))
        };
        match tokio::time::timeout(timeout, publish).await {
            Ok(Ok(ack)) => {
                JetStreamPublished {
                    stream: &stream,
                    subject,
                    seconds: started.elapsed().as_secs_f64(),
                    duplicate: ack.duplicate,
                }
                .emit();
                Ok(ack.duplicate)
            }
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(PublishError::Timeout(format!(
                "no JetStream ack within {} ms",
                timeout.as_millis()
            )))),
        }
    }

    fn webhook_subject(
        &self,
        kind: ProviderKind,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> String {
        self.topology.webhook_subject(kind, tenant, provider)
    }
}
