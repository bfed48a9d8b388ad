//! The NATS bus: the only module that speaks async-nats. It connects, declares the
//! JetStream streams, publishes every renewal result ([`NatsEventSink`]), serves
//! forced renewals over request/reply ([`control`]), feeds the webhook and renewal
//! streams to the notification and alerting actors through durable pull consumers
//! ([`consumer`]), and publishes their domain events and alerts.
//!
//! No async-nats type leaves this module: the rest of the crate sees [`Bus`],
//! [`Topology`], the core's ports and plain JSON. It holds no lifecycle or alerting
//! logic — a forced renewal is handed to the [`FleetHandle`] as it came, a consumed
//! message to its actor as bytes.

mod alerts;
pub mod consumer;
pub mod control;
mod error;
mod events;
mod publisher;
mod resync;
mod sink;
pub mod streams;

pub use alerts::JetStreamAlertSink;
pub use consumer::ConsumerHandle;
pub use control::{ControlHandle, RenewReply, RenewRequest};
pub use error::BusError;
pub use events::NatsDomainEvents;
pub use resync::ResyncOnReplacement;
pub use sink::NatsEventSink;
pub use streams::StreamLimits;

use crate::config::Config;
use crate::telemetry::events::JetStreamStreamReady;
use actix::Recipient;
use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::delivery::Deliveries;
use subkeeper_actors::domain::{DomainEventType, ProviderId, ProviderKind, TenantId};
use subkeeper_actors::fleet::FleetHandle;

/// How long connecting to NATS may take at start-up before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one JetStream call (stream creation, a publish and its ack) may take. A
/// renewal result is published before its supervisor takes the next message, so this
/// bounds how long a NATS outage can hold a supervisor up per attempt.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The subjects and stream names of one deployment, all derived from two prefixes so
/// that deployments (and tests) can share a NATS server without sharing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    subject_prefix: String,
    stream_prefix: String,
}

/// Deletes every stream of `topology` on the server at `url`, ignoring
/// failures: the clean-up of tests and benchmarks that run under their own
/// prefixes. Never called by the service.
pub async fn delete_streams(url: &str, topology: &Topology) {
    if let Ok(client) = async_nats::connect(url).await {
        let js = jetstream::new(client);
        for stream in topology.streams() {
            let _ = js.delete_stream(&stream).await;
        }
    }
}

impl Topology {
    /// A topology from already validated prefixes (see `Config::validate`).
    pub fn new(subject_prefix: impl Into<String>, stream_prefix: impl Into<String>) -> Self {
        Self {
            subject_prefix: subject_prefix.into(),
            stream_prefix: stream_prefix.into(),
        }
    }

    /// The topology the configuration names.
    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.nats_subject_prefix, &config.nats_stream_prefix)
    }

    /// `{prefix}.renewal.<tenant>.<provider>`: where one provider's results go.
    /// Tenant ids and provider UUIDs are NATS-safe tokens by construction.
    pub fn renewal_subject(&self, tenant: &TenantId, provider: ProviderId) -> String {
        format!("{}.renewal.{tenant}.{provider}", self.subject_prefix)
    }

    /// `{prefix}.renewal.>`: every renewal result.
    pub fn renewal_subjects(&self) -> String {
        format!("{}.renewal.>", self.subject_prefix)
    }

    /// `{prefix}.webhook.<kind>.<tenant>.<provider>`: one provider's accepted
    /// notifications.
    pub fn webhook_subject(
        &self,
        kind: ProviderKind,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> String {
        format!("{}.webhook.{kind}.{tenant}.{provider}", self.subject_prefix)
    }

    /// `{prefix}.event.<type>.<tenant>`: downstream domain events.
    pub fn event_subject(&self, event_type: DomainEventType, tenant: &TenantId) -> String {
        format!("{}.event.{event_type}.{tenant}", self.subject_prefix)
    }

    /// `{prefix}.webhook.>`: every accepted notification.
    pub fn webhook_subjects(&self) -> String {
        format!("{}.webhook.>", self.subject_prefix)
    }

    /// `{prefix}.control.renew`: the forced-renewal request/reply subject.
    pub fn control_renew_subject(&self) -> String {
        format!("{}.control.renew", self.subject_prefix)
    }

    /// `{prefix}_RENEWALS`.
    pub fn renewal_stream(&self) -> String {
        format!("{}_RENEWALS", self.stream_prefix)
    }

    /// `{prefix}_WEBHOOKS`.
    pub fn webhook_stream(&self) -> String {
        format!("{}_WEBHOOKS", self.stream_prefix)
    }

    /// `{prefix}.alert.<tenant>.<provider>`: one provider's alert events.
    pub fn alert_subject(&self, tenant: &TenantId, provider: ProviderId) -> String {
        format!("{}.alert.{tenant}.{provider}", self.subject_prefix)
    }

    /// `{prefix}.alert.>`: every alert event.
    pub fn alert_subjects(&self) -> String {
        format!("{}.alert.>", self.subject_prefix)
    }

    /// `{prefix}_ALERTS`.
    pub fn alert_stream(&self) -> String {
        format!("{}_ALERTS", self.stream_prefix)
    }

    /// Every stream this topology uses: webhooks, renewals, alerts.
    pub fn streams(&self) -> [String; 3] {
        [
            self.webhook_stream(),
            self.renewal_stream(),
            self.alert_stream(),
        ]
    }

    /// `{prefix}_NOTIFICATIONS`: the durable consumer of the webhook stream that
    /// every instance shares (each message goes to one of them).
    pub fn notification_consumer(&self) -> String {
        format!("{}_NOTIFICATIONS", self.stream_prefix)
    }

    /// `{prefix}_ALERTING`: the durable consumer of the renewal stream that every
    /// instance shares.
    pub fn alerting_consumer(&self) -> String {
        format!("{}_ALERTING", self.stream_prefix)
    }
}

/// The state of the NATS connection, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected to a server.
    Connected,
    /// Lost; the client reconnects in the background.
    Disconnected,
    /// Not connected yet.
    Pending,
}

impl ConnectionState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Pending => "pending",
        }
    }
}

/// A connection to NATS with JetStream, and the topology it serves. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    topology: Arc<Topology>,
}

impl Bus {
    /// Connects to `url`. Fails at once when the server cannot be reached; once
    /// connected, the client reconnects by itself after a loss.
    pub async fn connect(url: &str, topology: Topology) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("subkeeper")
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: redact(url),
                reason: e.to_string(),
            })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(JETSTREAM_TIMEOUT);
        Ok(Self {
            client,
            jetstream,
            topology: Arc::new(topology),
        })
    }

    /// The subjects and streams this bus uses.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Creates the streams, or brings their settings up to date (idempotent; every
    /// instance does it at start-up).
    pub async fn ensure_streams(&self, limits: StreamLimits) -> Result<(), BusError> {
        for config in [
            streams::webhooks(&self.topology, limits),
            streams::renewals(&self.topology, limits),
            streams::alerts(&self.topology, limits),
        ] {
            let name = config.name.clone();
            self.jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|e| BusError::stream(&name, &e))?;
            JetStreamStreamReady { stream: &name }.emit();
        }
        Ok(())
    }

    /// The event sink that publishes renewal results to the renewal stream.
    pub fn renewal_sink(&self) -> NatsEventSink {
        NatsEventSink::new(self.jetstream.clone(), self.topology.clone())
    }

    /// Publishes alert events to the alert stream.
    pub fn alert_sink(&self) -> JetStreamAlertSink {
        JetStreamAlertSink::new(self.jetstream.clone(), self.topology.clone())
    }

    /// Publishes domain events on core NATS.
    pub fn domain_events(&self) -> NatsDomainEvents {
        NatsDomainEvents::new(self.client.clone(), self.topology.clone())
    }

    /// Feeds the webhook stream to `to` through the shared durable consumer
    /// `{prefix}_NOTIFICATIONS`, until the handle is stopped.
    pub async fn consume_webhooks(
        &self,
        to: Recipient<Deliveries>,
    ) -> Result<ConsumerHandle, BusError> {
        consumer::start(
            self.jetstream.clone(),
            consumer::ConsumerSpec::notifications(&self.topology),
            to,
        )
        .await
    }

    /// Feeds the renewal stream to `to` through the shared durable consumer
    /// `{prefix}_ALERTING`, until the handle is stopped.
    pub async fn consume_renewals(
        &self,
        to: Recipient<Deliveries>,
    ) -> Result<ConsumerHandle, BusError> {
        consumer::start(
            self.jetstream.clone(),
            consumer::ConsumerSpec::alerting(&self.topology),
            to,
        )
        .await
    }

    /// Starts answering forced-renewal requests on `{prefix}.control.renew`.
    pub async fn serve_control(&self, fleet: FleetHandle) -> Result<ControlHandle, BusError> {
        control::serve(self.client.clone(), &self.topology, fleet).await
    }

    /// Sends a forced-renewal request and waits up to `timeout` for the reply (the
    /// `subkeeper renew` command, and any other Rust caller).
    pub async fn request_renewal(
        &self,
        request: &RenewRequest,
        timeout: Duration,
    ) -> Result<serde_json::Value, BusError> {
        control::request(&self.client, &self.topology, request, timeout).await
    }

    /// The connection's state now.
    pub fn connection_state(&self) -> ConnectionState {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => ConnectionState::Connected,
            async_nats::connection::State::Disconnected => ConnectionState::Disconnected,
            async_nats::connection::State::Pending => ConnectionState::Pending,
        }
    }

    /// Sends whatever is buffered, waiting at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "NATS flush failed at shutdown"),
            Err(_) => tracing::warn!("NATS flush timed out at shutdown"),
        }
    }
}

/// The URL with any password replaced, so an error message never shows it.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match url::Url::parse(one.trim()) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            _ => one.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_topology_is_the_public_contract() {
        let t = Topology::from_config(&Config::default());
        let tenant = TenantId::parse("acme").unwrap();
        let provider = ProviderId::new();
        assert_eq!(
            t.renewal_subject(&tenant, provider),
            format!("subkeeper.renewal.acme.{provider}")
        );
        assert_eq!(t.renewal_subjects(), "subkeeper.renewal.>");
        assert_eq!(t.webhook_subjects(), "subkeeper.webhook.>");
        assert_eq!(t.control_renew_subject(), "subkeeper.control.renew");
        assert_eq!(t.renewal_stream(), "SUBKEEPER_RENEWALS");
        assert_eq!(t.webhook_stream(), "SUBKEEPER_WEBHOOKS");
        assert_eq!(
            t.alert_subject(&tenant, provider),
            format!("subkeeper.alert.acme.{provider}")
        );
        assert_eq!(t.alert_subjects(), "subkeeper.alert.>");
        assert_eq!(t.alert_stream(), "SUBKEEPER_ALERTS");
        for (event_type, subject) in [
            (
                DomainEventType::MailReceived,
                "subkeeper.event.mail_received.acme",
            ),
            (
                DomainEventType::MailChanged,
                "subkeeper.event.mail_changed.acme",
            ),
            (
                DomainEventType::CalendarChanged,
                "subkeeper.event.calendar_changed.acme",
            ),
            (
                DomainEventType::ResyncRequired,
                "subkeeper.event.resync_required.acme",
            ),
        ] {
            assert_eq!(t.event_subject(event_type, &tenant), subject);
        }
        assert_eq!(t.notification_consumer(), "SUBKEEPER_NOTIFICATIONS");
        assert_eq!(t.alerting_consumer(), "SUBKEEPER_ALERTING");
    }

    #[test]
    fn error_messages_never_show_a_password() {
        assert_eq!(
            redact("nats://app:s3cret@nats-1:4222,nats://nats-2:4222"),
            "nats://app:***@nats-1:4222,nats://nats-2:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
