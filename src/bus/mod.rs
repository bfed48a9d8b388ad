//! The NATS bus: the only module that speaks async-nats. It connects, declares the
//! JetStream streams, publishes every renewal result ([`NatsEventSink`]) and serves
//! forced renewals over request/reply ([`control`]).
//!
//! No async-nats type leaves this module: the rest of the crate sees [`Bus`],
//! [`Topology`], [`NatsEventSink`] and plain JSON. It holds no lifecycle logic — a
//! forced renewal is handed to the [`FleetHandle`] as it came.

pub mod control;
mod error;
mod publisher;
mod sink;
pub mod streams;

pub use control::{ControlHandle, RenewReply, RenewRequest};
pub use error::BusError;
pub use sink::NatsEventSink;
pub use streams::StreamLimits;

use crate::config::Config;
use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId};
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
    pub fn event_subject(&self, event_type: &str, tenant: &TenantId) -> String {
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
        ] {
            let name = config.name.clone();
            self.jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|e| BusError::stream(&name, &e))?;
            tracing::debug!(stream = %name, "JetStream stream ready");
        }
        Ok(())
    }

    /// The event sink that publishes renewal results to the renewal stream.
    pub fn renewal_sink(&self) -> NatsEventSink {
        NatsEventSink::new(self.jetstream.clone(), self.topology.clone())
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
