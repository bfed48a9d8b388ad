//! The in-process bus: the same subjects, streams, durable consumers and forced
//! renewals as NATS, for one instance with no NATS server. Its streams live in the
//! store ([`StreamLog`]): a webhook notification is stored before the provider is
//! answered, and it is owed to the notification consumer until the consumer
//! settles it, so nothing acknowledged is lost when the process dies — the next
//! start delivers it. Renewal results are owed to the alerting consumer the same
//! way; alerts and domain events are kept for a while for `subkeeper tail` and
//! taps ([`LocalBus::subscribe`]), and reach live subscribers as they happen.
//!
//! It decides nothing about the messages: settling is the actors' business, as on
//! JetStream.

use super::control::{ControlHandle, RenewReply, RenewRequest, ReplyError, answer};
use super::retention::{
    ALERT_DUPLICATE_WINDOW, ALERT_MAX_AGE, EVENT_MAX_AGE, RENEWAL_DUPLICATE_WINDOW,
    RENEWAL_MAX_AGE, WEBHOOK_DUPLICATE_WINDOW, WEBHOOK_MAX_AGE,
};
use super::{BusError, BusMessage, ConsumerHandle, Topology, renewal_message_id, subject_matches};
use actix::Recipient;
use async_trait::async_trait;
use chrono::TimeDelta;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subkeeper_actors::alerting::Alert;
use subkeeper_actors::delivery::{Deliveries, Delivery, RETRY_BASE, Settlement};
use subkeeper_actors::domain::{DomainEvent, ProviderId, ProviderKind, RenewalResult, TenantId};
use subkeeper_actors::fleet::FleetHandle;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{
    AlertSink, Append, Appended, DomainEventSink, DurableMessage, EventSink, PublishError,
    StoreError, StreamLog, WebhookPublisher,
};
use tokio::sync::{Notify, mpsc, watch};

/// Largest batch handed to an actor, as on JetStream's notification consumer.
const BATCH: i64 = 256;

/// How often a consumer looks for messages whose retry delay has passed, when
/// nothing new woke it.
const POLL: Duration = Duration::from_secs(1);

/// How often old messages are trimmed from the streams.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Messages a tap holds before it drops new ones (a subscriber that does not
/// read).
const TAP_CAPACITY: usize = 4096;

/// The in-process bus. Cheap to clone.
#[derive(Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn StreamLog>,
    topology: Topology,
    clock: SharedClock,
    /// Wakes the notification consumer when a webhook was stored.
    webhooks_arrived: Notify,
    /// Wakes the alerting consumer when a renewal result was stored.
    renewals_arrived: Notify,
    /// Live subscribers: a subject pattern and where matching messages go.
    taps: Mutex<Vec<(String, mpsc::Sender<BusMessage>)>>,
    /// Who answers forced renewals, once the fleet runs.
    fleet: Mutex<Option<FleetHandle>>,
    /// The trimming task, once started.
    trimming: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The two durable consumers, as on JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// `{prefix}_NOTIFICATIONS` on the webhook stream.
    Notifications,
    /// `{prefix}_ALERTING` on the renewal stream.
    Alerting,
}

impl LocalBus {
    /// A bus whose streams live in `log`, stamped with `clock`.
    pub fn new(log: Arc<dyn StreamLog>, topology: Topology, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                topology,
                clock,
                webhooks_arrived: Notify::new(),
                renewals_arrived: Notify::new(),
                taps: Mutex::new(Vec::new()),
                fleet: Mutex::new(None),
                trimming: Mutex::new(None),
            }),
        }
    }

    /// The subjects and streams this bus uses.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn name(&self, consumer: Consumer) -> String {
        match consumer {
            Consumer::Notifications => self.inner.topology.notification_consumer(),
            Consumer::Alerting => self.inner.topology.alerting_consumer(),
        }
    }

    /// Stores one message durably, then hands it to live taps and wakes the
    /// consumer that owes it. `Ok(true)`: the stream already had its id.
    async fn append(
        &self,
        stream: &str,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
        consumer: Option<Consumer>,
    ) -> Result<bool, StoreError> {
        let name = consumer.map(|c| self.name(c));
        let consumers: Vec<&str> = name.iter().map(String::as_str).collect();
        let appended = self
            .inner
            .log
            .append(Append {
                stream,
                subject,
                msg_id,
                payload,
                consumers: &consumers,
                now: self.inner.clock.now(),
            })
            .await?;
        if appended == Appended::Duplicate {
            return Ok(true);
        }
        self.fan_out(subject, payload);
        match consumer {
            Some(Consumer::Notifications) => self.inner.webhooks_arrived.notify_one(),
            Some(Consumer::Alerting) => self.inner.renewals_arrived.notify_one(),
            None => {}
        }
        Ok(false)
    }

    fn fan_out(&self, subject: &str, payload: &[u8]) {
        let Ok(mut taps) = self.inner.taps.lock() else {
            return;
        };
        taps.retain(|(pattern, tx)| {
            if !subject_matches(pattern, subject) {
                return !tx.is_closed();
            }
            match tx.try_send(BusMessage {
                subject: subject.to_owned(),
                payload: payload.to_vec(),
            }) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(pattern = %pattern, "a bus subscriber is not reading; message dropped for it");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Every message published from now on whose subject matches `pattern`.
    pub fn subscribe(&self, pattern: &str) -> mpsc::Receiver<BusMessage> {
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        if let Ok(mut taps) = self.inner.taps.lock() {
            taps.push((pattern.to_owned(), tx));
        }
        rx
    }

    /// Feeds `consumer`'s stream to `to` in batches, oldest first, settling each
    /// message as the actor answers, until the handle is stopped. Messages owed
    /// from before a restart come first.
    pub fn consume(&self, consumer: Consumer, to: Recipient<Deliveries>) -> ConsumerHandle {
        let (stop, stopped) = watch::channel(false);
        let name = self.name(consumer);
        let task = actix_rt::spawn(self.clone().feed(consumer, name.clone(), to, stopped));
        tracing::info!(consumer = %name, "consuming (in process)");
        ConsumerHandle::new(name, stop, task)
    }

    async fn feed(
        self,
        consumer: Consumer,
        name: String,
        to: Recipient<Deliveries>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let arrived = match consumer {
            Consumer::Notifications => &self.inner.webhooks_arrived,
            Consumer::Alerting => &self.inner.renewals_arrived,
        };
        let mut pause = RETRY_BASE;
        loop {
            if *stopped.borrow() {
                return;
            }
            let wait = match self
                .inner
                .log
                .due(&name, self.inner.clock.now(), BATCH)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    pause = RETRY_BASE;
                    self.settle(&name, &to, batch).await;
                    continue;
                }
                Ok(_) => POLL,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, retry_in_ms = pause.as_millis() as u64, "cannot read the stream; retrying");
                    pause = (pause * 2).min(Duration::from_secs(30));
                    pause
                }
            };
            tokio::select! {
                _ = stopped.changed() => return,
                () = arrived.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Hands a batch to the actor and records its settlements.
    async fn settle(
        &self,
        name: &str,
        to: &Recipient<Deliveries>,
        batch: Vec<subkeeper_actors::ports::StreamMessage>,
    ) {
        let deliveries = batch
            .iter()
            .map(|m| Delivery {
                subject: m.subject.clone(),
                payload: m.payload.clone(),
                delivered: m.delivered,
                msg_id: m.msg_id.clone(),
            })
            .collect();
        let verdicts = match to.send(Deliveries(deliveries)).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                tracing::warn!(error = %e, "consumer's actor is gone; messages left for redelivery");
                Vec::new()
            }
        };
        let settlements: Vec<(i64, Settlement)> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    m.seq,
                    verdicts
                        .get(i)
                        .copied()
                        .unwrap_or(Settlement::Retry(RETRY_BASE)),
                )
            })
            .collect();
        // A lost settlement only means a redelivery, which every effect tolerates.
        if let Err(e) = self
            .inner
            .log
            .settle(name, &settlements, self.inner.clock.now())
            .await
        {
            tracing::warn!(consumer = %name, error = %e, "settling messages failed; they will be redelivered");
        }
    }

    /// Answers forced renewals from now on, in process.
    pub fn serve_control(&self, fleet: FleetHandle) -> ControlHandle {
        if let Ok(mut slot) = self.inner.fleet.lock() {
            *slot = Some(fleet);
        }
        tracing::info!(subject = %self.inner.topology.control_renew_subject(), "answering forced renewals (in process)");
        ControlHandle::new(None)
    }

    /// Answers one forced-renewal request as the control subject would.
    pub async fn request_renewal(
        &self,
        request: &RenewRequest,
        timeout: Duration,
    ) -> Result<serde_json::Value, BusError> {
        let subject = self.inner.topology.control_renew_subject();
        let fleet = self.inner.fleet.lock().ok().and_then(|f| f.clone());
        let Some(fleet) = fleet else {
            return Err(BusError::NoResponders { subject });
        };
        let body = serde_json::to_vec(request).map_err(|e| BusError::Request {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        let reply = tokio::time::timeout(timeout, answer(&fleet, &body))
            .await
            .unwrap_or_else(|_| RenewReply::Error {
                error: ReplyError::new(
                    "unavailable",
                    format!("no reply within {} s", timeout.as_secs()),
                ),
            });
        serde_json::to_value(&reply).map_err(|e| BusError::Request {
            subject,
            reason: e.to_string(),
        })
    }

    /// Starts trimming the streams by their windows and ages, once a minute.
    pub fn start_trimming(&self) {
        let Ok(mut slot) = self.inner.trimming.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let bus = self.clone();
        *slot = Some(actix_rt::spawn(async move {
            loop {
                bus.trim_once().await;
                tokio::time::sleep(TRIM_EVERY).await;
            }
        }));
    }

    /// One round of trimming every stream.
    pub async fn trim_once(&self) {
        let t = &self.inner.topology;
        let now = self.inner.clock.now();
        let ago = |d: Duration| now - TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        for (stream, window, age) in [
            (
                t.webhook_stream(),
                WEBHOOK_DUPLICATE_WINDOW,
                WEBHOOK_MAX_AGE,
            ),
            (
                t.renewal_stream(),
                RENEWAL_DUPLICATE_WINDOW,
                RENEWAL_MAX_AGE,
            ),
            (t.alert_stream(), ALERT_DUPLICATE_WINDOW, ALERT_MAX_AGE),
            (t.event_stream(), EVENT_MAX_AGE, EVENT_MAX_AGE),
        ] {
            match self.inner.log.trim(&stream, ago(window), ago(age)).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(stream = %stream, deleted = n, "old messages trimmed"),
                Err(e) => tracing::warn!(stream = %stream, error = %e, "cannot trim the stream"),
            }
        }
    }

    /// Stops the trimming task.
    pub fn stop(&self) {
        if let Ok(mut slot) = self.inner.trimming.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }
}

fn unavailable(e: StoreError) -> PublishError {
    match e {
        StoreError::Timeout(m) => PublishError::Timeout(m),
        StoreError::Rejected(m) | StoreError::Corrupt(m) => PublishError::Rejected(m),
        StoreError::Unavailable(m) | StoreError::Conflict(m) => PublishError::Unavailable(m),
    }
}

#[async_trait]
impl WebhookPublisher for LocalBus {
    async fn publish_durable(
        &self,
        message: &DurableMessage,
        timeout: Duration,
    ) -> Result<bool, PublishError> {
        let stream = self.inner.topology.webhook_stream();
        let append = self.append(
            &stream,
            &message.subject,
            Some(&message.msg_id),
            &message.payload,
            Some(Consumer::Notifications),
        );
        match tokio::time::timeout(timeout, append).await {
            Ok(Ok(duplicate)) => Ok(duplicate),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(PublishError::Timeout(format!(
                "the store did not take the notification within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    fn webhook_subject(
        &self,
        kind: ProviderKind,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> String {
        self.inner.topology.webhook_subject(kind, tenant, provider)
    }
}

#[async_trait]
impl EventSink for LocalBus {
    async fn renewal(&self, result: &RenewalResult) {
        let stream = self.inner.topology.renewal_stream();
        let subject = self
            .inner
            .topology
            .renewal_subject(&result.tenant, result.provider_id);
        let payload = match crate::intake::encode("renewal_result", result) {
            Ok(payload) => payload,
            Err(_) => return,
        };
        let msg_id = renewal_message_id(result);
        if let Err(e) = self
            .append(
                &stream,
                &subject,
                Some(&msg_id),
                &payload,
                Some(Consumer::Alerting),
            )
            .await
        {
            tracing::warn!(subject = %subject, error = %e, "renewal result not published; it is in renewal_attempts only");
        }
    }
}

#[async_trait]
impl AlertSink for LocalBus {
    async fn publish(&self, alert: &Alert) -> Result<bool, PublishError> {
        let stream = self.inner.topology.alert_stream();
        let subject = self
            .inner
            .topology
            .alert_subject(&alert.tenant, alert.provider_id);
        let payload = crate::intake::encode("alert", alert)
            .map_err(|e| PublishError::Rejected(e.to_string()))?;
        self.append(&stream, &subject, Some(&alert.id), &payload, None)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl DomainEventSink for LocalBus {
    async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError> {
        let stream = self.inner.topology.event_stream();
        let subject = self
            .inner
            .topology
            .event_subject(event.event_type, &event.tenant);
        let payload = crate::intake::encode("domain_event", event)
            .map_err(|e| PublishError::Rejected(e.to_string()))?;
        let msg_id = event_message_id(&payload);
        self.append(&stream, &subject, Some(&msg_id), &payload, None)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

/// The message id of a domain event: a hash of its wire form. A notification
/// whose event was stored but whose settlement was lost (the process died in
/// between) is redelivered after the restart and yields the identical event —
/// same provider, resource, change and received-at time — which the event
/// stream then keeps once, so downstream hears of each change once.
fn event_message_id(payload: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(payload);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("event:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IfMissing, Location, Store};
    use subkeeper_actors::domain::DomainEventType;
    use subkeeper_actors::ports::clock::SystemClock;

    fn event(resource: &str, at: chrono::DateTime<chrono::Utc>) -> DomainEvent {
        DomainEvent {
            event_type: DomainEventType::MailReceived,
            tenant: TenantId::parse("acme").unwrap(),
            provider_id: ProviderId(uuid::Uuid::nil()),
            kind: ProviderKind::GraphMail,
            reason: None,
            at,
            resource: Some(resource.into()),
            change_type: Some("created".into()),
            history_id: None,
            source: None,
            item_id: None,
            version: None,
            window: None,
        }
    }

    /// A notification redelivered after a crash publishes its event again: the
    /// event stream keeps it once (it used to keep both, and downstream heard of
    /// one new message twice), while distinct events are all kept.
    /// A temp directory removed when dropped, also when the test fails.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn an_event_published_again_after_a_redelivery_is_stored_once() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("subkeeper-bus-{}", uuid::Uuid::new_v4())));
        let store = Store::open(
            &Location::Sqlite(dir.0.join("subkeeper.db")),
            1,
            Arc::new(SystemClock),
            IfMissing::Create,
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let topology = Topology::new("sk", "SK");
        let bus = LocalBus::new(
            Arc::new(store.clone()),
            topology.clone(),
            Arc::new(SystemClock),
        );
        let at = chrono::Utc::now();
        let first = event("Users/a/Messages/1", at);
        DomainEventSink::publish(&bus, &first).await.unwrap();
        DomainEventSink::publish(&bus, &first).await.unwrap();
        // The same message changed again later, and another message: new events.
        DomainEventSink::publish(
            &bus,
            &event("Users/a/Messages/1", at + TimeDelta::seconds(1)),
        )
        .await
        .unwrap();
        DomainEventSink::publish(&bus, &event("Users/a/Messages/2", at))
            .await
            .unwrap();
        let stored = store
            .read(Some(&topology.event_stream()), 0, 100)
            .await
            .unwrap();
        assert_eq!(stored.len(), 3, "{stored:#?}");
    }
}
