//! The bus over NATS with JetStream: the production bus, shared by every
//! instance. It connects, declares the JetStream streams, publishes every renewal
//! result ([`NatsEventSink`]), serves forced renewals over request/reply
//! ([`control`]), feeds the webhook and renewal streams to the notification and
//! alerting actors through durable pull consumers ([`consumer`]), and publishes
//! their domain events and alerts. The only module that speaks async-nats: no
//! async-nats type leaves it.

mod alerts;
pub mod consumer;
mod control;
mod events;
mod peers;
mod publisher;
mod sink;
pub mod streams;

pub use alerts::JetStreamAlertSink;
pub use events::NatsDomainEvents;
pub use peers::NatsPeers;
pub use sink::NatsEventSink;
pub use streams::StreamLimits;

use super::control::{ControlHandle, RenewRequest};
use super::{BusError, BusMessage, ConnectionState, ConsumerHandle, Topology, redact};
use crate::telemetry::events::JetStreamStreamReady;
use actix::Recipient;
use async_nats::jetstream;
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::delivery::Deliveries;
use subkeeper_actors::fleet::FleetHandle;
use tokio::sync::mpsc;

/// Messages a subscription holds before the subscriber must read.
const TAP_CAPACITY: usize = 4096;

/// How long connecting to NATS may take at start-up before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one JetStream call (stream creation, a publish and its ack) may take. A
/// renewal result is published before its supervisor takes the next message, so this
/// bounds how long a NATS outage can hold a supervisor up per attempt.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A connection to NATS with JetStream, and the topology it serves. Cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    pub(super) client: async_nats::Client,
    pub(super) jetstream: jetstream::Context,
    pub(super) topology: Arc<Topology>,
    /// The server URL, password redacted.
    url: String,
}

impl NatsBus {
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
            url: redact(url),
        })
    }

    /// The subjects and streams this bus uses.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The server's URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every message published from now on whose subject matches `pattern`.
    pub async fn subscribe(&self, pattern: &str) -> Result<mpsc::Receiver<BusMessage>, BusError> {
        let mut subscription = self
            .client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| BusError::Subscribe {
                subject: pattern.to_owned(),
                reason: e.to_string(),
            })?;
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        actix_rt::spawn(async move {
            while let Some(message) = subscription.next().await {
                let forwarded = BusMessage {
                    subject: message.subject.to_string(),
                    payload: message.payload.to_vec(),
                };
                if tx.send(forwarded).await.is_err() {
                    return;
                }
            }
        });
        // The server has the subscription once it answered a PING sent after it.
        self.client.flush().await.map_err(|e| BusError::Subscribe {
            subject: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(rx)
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

    /// Starts answering what other instances pass on to this one (its own
    /// providers), and returns how this one reaches them.
    pub async fn serve_peers(
        &self,
        leases: &crate::store::Leases,
        fleet: FleetHandle,
    ) -> Result<(NatsPeers, ControlHandle), BusError> {
        let handle = peers::serve(self.client.clone(), &self.topology, leases, fleet)
            .await
            .map_err(|e| BusError::Subscribe {
                subject: format!(
                    "{}.instance.{}.>",
                    self.topology.subject_prefix,
                    leases.instance()
                ),
                reason: e.to_string(),
            })?;
        Ok((
            NatsPeers::new(
                self.client.clone(),
                (*self.topology).clone(),
                leases.clone(),
            ),
            handle,
        ))
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
