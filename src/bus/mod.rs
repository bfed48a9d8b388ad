//! The event bus: where accepted webhooks, renewal results, alerts and domain
//! events travel, and where forced renewals (the retry message) are asked for.
//!
//! Two buses with the same subjects, streams, consumers and request/reply:
//! [`NatsBus`] (NATS with JetStream; production, shared by every instance) and
//! [`LocalBus`] (in process, its streams durable in the store; used when no NATS
//! URL is configured, one instance only). [`Bus`] is whichever the configuration
//! chose; the rest of the crate sees it, [`Topology`], the core's ports and plain
//! JSON. It holds no lifecycle or alerting logic — a forced renewal is handed to
//! the [`FleetHandle`] as it came, a consumed message to its actor as bytes.

pub mod control;
mod error;
pub mod local;
pub mod nats;
mod resync;
pub mod retention;

pub use control::{ControlHandle, RenewReply, RenewRequest};
pub use error::BusError;
pub use local::LocalBus;
pub use nats::{NatsBus, StreamLimits, delete_streams};
pub use resync::ResyncOnReplacement;

use actix::Recipient;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::delivery::Deliveries;
use subkeeper_actors::domain::{DomainEventType, ProviderId, ProviderKind, TenantId};
use subkeeper_actors::fleet::FleetHandle;
use subkeeper_actors::ports::{AlertSink, DomainEventSink, EventSink, WebhookPublisher};
use tokio::sync::{mpsc, watch};

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
    pub fn from_config(config: &crate::config::Config) -> Self {
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

    /// `{prefix}_EVENTS`: where the in-process bus keeps domain events for a while
    /// (on NATS they go out on core NATS, unstored).
    pub fn event_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_prefix)
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

/// The state of the bus connection, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The in-process bus: nothing to connect to.
    InProcess,
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
            Self::InProcess => "in_process",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Pending => "pending",
        }
    }
}

/// The bus the configuration chose. Cheap to clone.
#[derive(Clone)]
pub enum Bus {
    /// NATS with JetStream.
    Nats(Box<NatsBus>),
    /// The in-process bus over the store.
    Local(LocalBus),
}

/// A message seen on the bus by a [`Bus::subscribe`] tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// Its subject.
    pub subject: String,
    /// Its body.
    pub payload: Vec<u8>,
}

impl Bus {
    /// The subjects and streams this bus uses.
    pub fn topology(&self) -> &Topology {
        match self {
            Self::Nats(b) => b.topology(),
            Self::Local(b) => b.topology(),
        }
    }

    /// What the bus is, for start-up lines and errors (no password).
    pub fn describe(&self) -> String {
        match self {
            Self::Nats(b) => format!("NATS {}", b.url()),
            Self::Local(_) => "the in-process bus (streams kept in the store)".into(),
        }
    }

    /// Declares the streams (JetStream) or starts trimming them (in process).
    pub async fn ensure_streams(&self, limits: StreamLimits) -> Result<(), BusError> {
        match self {
            Self::Nats(b) => b.ensure_streams(limits).await,
            Self::Local(b) => {
                b.start_trimming();
                Ok(())
            }
        }
    }

    /// Where renewal results go (the renewal stream).
    pub fn renewal_sink(&self) -> Arc<dyn EventSink> {
        match self {
            Self::Nats(b) => Arc::new(b.renewal_sink()),
            Self::Local(b) => Arc::new(b.clone()),
        }
    }

    /// Where alert events go (the alert stream).
    pub fn alert_sink(&self) -> Arc<dyn AlertSink> {
        match self {
            Self::Nats(b) => Arc::new(b.alert_sink()),
            Self::Local(b) => Arc::new(b.clone()),
        }
    }

    /// Where domain events go.
    pub fn domain_events(&self) -> Arc<dyn DomainEventSink> {
        match self {
            Self::Nats(b) => Arc::new(b.domain_events()),
            Self::Local(b) => Arc::new(b.clone()),
        }
    }

    /// Where accepted webhook notifications go (the webhook stream).
    pub fn publisher(&self) -> Arc<dyn WebhookPublisher> {
        match self {
            Self::Nats(b) => Arc::new(b.as_ref().clone()),
            Self::Local(b) => Arc::new(b.clone()),
        }
    }

    /// Feeds the webhook stream to `to` through the durable consumer
    /// `{prefix}_NOTIFICATIONS`, until the handle is stopped.
    pub async fn consume_webhooks(
        &self,
        to: Recipient<Deliveries>,
    ) -> Result<ConsumerHandle, BusError> {
        match self {
            Self::Nats(b) => b.consume_webhooks(to).await,
            Self::Local(b) => Ok(b.consume(local::Consumer::Notifications, to)),
        }
    }

    /// Feeds the renewal stream to `to` through the durable consumer
    /// `{prefix}_ALERTING`, until the handle is stopped.
    pub async fn consume_renewals(
        &self,
        to: Recipient<Deliveries>,
    ) -> Result<ConsumerHandle, BusError> {
        match self {
            Self::Nats(b) => b.consume_renewals(to).await,
            Self::Local(b) => Ok(b.consume(local::Consumer::Alerting, to)),
        }
    }

    /// Starts answering forced-renewal requests on `{prefix}.control.renew`.
    pub async fn serve_control(&self, fleet: FleetHandle) -> Result<ControlHandle, BusError> {
        match self {
            Self::Nats(b) => b.serve_control(fleet).await,
            Self::Local(b) => Ok(b.serve_control(fleet)),
        }
    }

    /// Sends a forced-renewal request and waits up to `timeout` for the reply.
    pub async fn request_renewal(
        &self,
        request: &RenewRequest,
        timeout: Duration,
    ) -> Result<serde_json::Value, BusError> {
        match self {
            Self::Nats(b) => b.request_renewal(request, timeout).await,
            Self::Local(b) => b.request_renewal(request, timeout).await,
        }
    }

    /// The connection's state now.
    pub fn connection_state(&self) -> ConnectionState {
        match self {
            Self::Nats(b) => b.connection_state(),
            Self::Local(_) => ConnectionState::InProcess,
        }
    }

    /// Sends whatever is buffered, waiting at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) {
        if let Self::Nats(b) = self {
            b.flush(timeout).await;
        }
    }

    /// Every message published from now on whose subject matches `pattern`
    /// (NATS wildcards: `*` one token, `>` the rest), as it is published: the
    /// demo's and the tests' view of the bus.
    pub async fn subscribe(&self, pattern: &str) -> Result<mpsc::Receiver<BusMessage>, BusError> {
        match self {
            Self::Nats(b) => b.subscribe(pattern).await,
            Self::Local(b) => Ok(b.subscribe(pattern)),
        }
    }
}

/// The message id of a renewal result: derived from the attempt (provider, start
/// time to the nanosecond, attempt kind), so that publishing the same result
/// twice stores it once, on either bus.
pub fn renewal_message_id(result: &subkeeper_actors::domain::RenewalResult) -> String {
    format!(
        "renewal:{}:{}:{}",
        result.provider_id,
        result
            .attempted_at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        result.attempt
    )
}

/// True if `subject` matches the NATS subject `pattern`: tokens split on `.`,
/// `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// A running consumer of a durable stream, on either bus; stop it at shutdown.
pub struct ConsumerHandle {
    durable: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long [`ConsumerHandle::stop`] waits for the batch in hand to be settled.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl ConsumerHandle {
    /// A handle over the consumer's task, which stops when `stop` says true.
    pub(crate) fn new(
        durable: String,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            durable,
            stop,
            task,
        }
    }

    /// Stops pulling; the batch in hand is settled first (for at most a few
    /// seconds). Unsettled messages are redelivered later (on NATS, to another
    /// instance after `ack_wait`; in process, at the next start).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            abort.abort();
            tracing::warn!(consumer = %self.durable, "consumer did not stop in time; aborted");
        }
    }
}

/// The URL with any password replaced, so an error message never shows it.
pub(crate) fn redact(url: &str) -> String {
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
        let t = Topology::from_config(&crate::Config::default());
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
    fn subjects_match_nats_wildcards() {
        for (pattern, subject, matches) in [
            ("subkeeper.>", "subkeeper.webhook.graph_mail.acme.p", true),
            ("subkeeper.>", "subkeeper", false),
            (
                "subkeeper.event.*.acme",
                "subkeeper.event.mail_received.acme",
                true,
            ),
            (
                "subkeeper.event.*.acme",
                "subkeeper.event.mail_received.other",
                false,
            ),
            ("subkeeper.event.*", "subkeeper.event.a.b", false),
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
        ] {
            assert_eq!(
                subject_matches(pattern, subject),
                matches,
                "{pattern} {subject}"
            );
        }
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
