//! `NotificationActor`: turns accepted webhook notifications (read back from the
//! webhook stream in batches) into "last webhook received" times and downstream
//! domain events, and notices providers whose subscription is alive but silent.
//!
//! Per batch: one store write records the latest webhook time of every provider in
//! it (and ends their silence), then one domain event per notification is published,
//! and only then is each message acknowledged. A failed write leaves the whole batch
//! for redelivery; a malformed message is rejected for good. A periodic sweep marks
//! providers silent (one store write), mirrors silence onto the [`HealthBoard`] and
//! tells the alerting actor, which publishes the alert.
//!
//! With a delivery log, the same batch is also written to it (one write, hashes
//! only) before anything is acknowledged; a failed write leaves the batch for
//! redelivery, and a redelivered message is logged once.
//!
//! It owns no I/O: the store, the event bus and the clock are ports. It does not
//! decide alert wording or de-duplication — that is the alerting actor's.

use crate::board::HealthBoard;
use crate::delivery::{Deliveries, Settlement, Stop, retry_delay};
use crate::domain::{
    DeliveryKind, DeliveryOutcome, DeliveryReason, DomainEvent, DomainEventType,
    NotificationSource, ProviderId, ProviderKind, TenantId, WebhookEnvelope,
};
use crate::ports::clock::SharedClock;
use crate::ports::{DeliveryLog, DeliveryRecord, DomainEventSink, NotificationStore};
use crate::telemetry::{ActorRunning, DeliveriesLogged, DeliveriesSettled, MessageRejected};
use actix::prelude::*;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The `consumer` label of this actor's metrics.
const CONSUMER: &str = "notification";

/// A provider's silence: its subscription is alive but no webhook came for longer
/// than its kind's threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// The provider.
    pub provider_id: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind (decides the threshold).
    pub kind: ProviderKind,
    /// When the silence began: the last webhook, or the subscription's creation if
    /// none came since.
    pub since: DateTime<Utc>,
    /// When the webhook that ended it arrived (`None` while it lasts).
    pub ended_at: Option<DateTime<Utc>>,
}

/// A silence began or ended; sent to the alerting actor.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum SilenceChanged {
    /// The provider was just marked silent.
    Started(Silence),
    /// A webhook ended the silence (`ended_at` is set).
    Ended(Silence),
}

/// Notification actor settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationConfig {
    /// No webhook for this long marks a provider of the kind silent; a kind that is
    /// absent is never marked silent.
    pub silence: HashMap<ProviderKind, TimeDelta>,
    /// How often to look for silent providers.
    pub sweep_every: Duration,
}

/// Reads the webhook stream's batches; sweeps for silence.
pub struct NotificationActor {
    config: NotificationConfig,
    store: Arc<dyn NotificationStore>,
    events: Arc<dyn DomainEventSink>,
    board: HealthBoard,
    clock: SharedClock,
    /// Told when a silence begins or ends.
    alerts: Option<Recipient<SilenceChanged>>,
    /// A sweep is in flight (never two at once).
    sweeping: bool,
    /// Where accepted deliveries are logged (`None`: the delivery log is off).
    log: Option<Arc<dyn DeliveryLog>>,
}

impl NotificationActor {
    /// An actor over the given ports; `alerts` hears of silences.
    pub fn new(
        config: NotificationConfig,
        store: Arc<dyn NotificationStore>,
        events: Arc<dyn DomainEventSink>,
        board: HealthBoard,
        clock: SharedClock,
        alerts: Option<Recipient<SilenceChanged>>,
    ) -> Self {
        Self {
            config,
            store,
            events,
            board,
            clock,
            alerts,
            sweeping: false,
            log: None,
        }
    }

    /// The same actor, writing every batch's accepted deliveries to `log`.
    pub fn with_delivery_log(mut self, log: Arc<dyn DeliveryLog>) -> Self {
        self.log = Some(log);
        self
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.config.silence.is_empty() {
            return;
        }
        self.sweeping = true;
        let store = self.store.clone();
        let thresholds: Vec<(ProviderKind, TimeDelta)> =
            self.config.silence.iter().map(|(k, t)| (*k, *t)).collect();
        let now = self.clock.now();
        ctx.spawn(
            async move {
                let marked = store.mark_silent(now, &thresholds).await;
                let silent = store.silent_providers().await;
                (marked, silent)
            }
            .into_actor(self)
            .map(|(marked, silent), act, _| {
                act.sweeping = false;
                match silent {
                    Ok(silent) => act.mirror_silence(silent),
                    Err(e) => tracing::warn!(error = %e, "silence sweep: cannot list silent providers"),
                }
                match marked {
                    Ok(marked) => {
                        for silence in marked {
                            ProviderSilenced { silence: &silence }.emit();
                            act.tell_alerts(SilenceChanged::Started(silence));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "silence sweep: cannot mark silent providers; next sweep retries"),
                }
            }),
        );
    }

    /// Makes the board's `silent_since` match the store for every provider
    /// supervised here (also clearing what another instance cleared).
    fn mirror_silence(&self, silent: Vec<(ProviderId, DateTime<Utc>)>) {
        let silent: HashMap<ProviderId, DateTime<Utc>> = silent.into_iter().collect();
        for (id, entry) in self.board.snapshot() {
            let want = silent.get(&id).copied();
            if entry.silent_since != want {
                self.board.update(id, |e| e.silent_since = want);
            }
        }
    }

    fn tell_alerts(&self, change: SilenceChanged) {
        if let Some(alerts) = &self.alerts {
            // Rare (a silence begins or ends), so mailbox capacity is no concern.
            alerts.do_send(change);
        }
    }
}

/// The domain event a notification becomes: `mail_received` for a Graph mail
/// `created`, `mail_changed` for any other mail change, `calendar_changed` for a
/// calendar.
pub fn domain_event(envelope: &WebhookEnvelope) -> DomainEvent {
    let field = |name: &str| {
        envelope
            .notification
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let change_type = field("changeType");
    let event_type = match envelope.kind {
        ProviderKind::GraphMail if change_type.as_deref() == Some("created") => {
            DomainEventType::MailReceived
        }
        ProviderKind::GraphMail | ProviderKind::Gmail => DomainEventType::MailChanged,
        ProviderKind::GraphCalendar | ProviderKind::GoogleCalendar => {
            DomainEventType::CalendarChanged
        }
    };
    DomainEvent {
        event_type,
        tenant: envelope.tenant.clone(),
        provider_id: envelope.provider_id,
        kind: envelope.kind,
        reason: None,
        at: envelope.received_at,
        resource: field("resource"),
        change_type,
        // Gmail says up to which history id the mailbox changed (a number on
        // the wire, a string in Gmail's API).
        history_id: match envelope.notification.get("historyId") {
            _ if envelope.kind != ProviderKind::Gmail => None,
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        source: Some(if is_replay(envelope) {
            NotificationSource::Replay
        } else {
            NotificationSource::Webhook
        }),
        item_id: field("itemId"),
        version: field("version"),
        window: None,
    }
}

/// True for a notification a catch-up published (`"source": "replay"` in the
/// item): it is not a webhook, so it is no proof that push works.
pub fn is_replay(envelope: &WebhookEnvelope) -> bool {
    envelope
        .notification
        .get("source")
        .and_then(serde_json::Value::as_str)
        == Some("replay")
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The delivery log's record of an accepted notification read off the stream:
/// the hash is of the provider's item as received (serde_json writes it back
/// with sorted keys, so the same item always hashes the same).
fn accepted_record(envelope: &WebhookEnvelope, msg_id: Option<&str>) -> DeliveryRecord {
    // A `Value` displays as its compact JSON, infallibly.
    let item = envelope.notification.to_string();
    DeliveryRecord {
        provider_id: envelope.provider_id,
        tenant: envelope.tenant.clone(),
        received_at: envelope.received_at,
        kind: DeliveryKind::of(envelope.kind),
        outcome: DeliveryOutcome::Accepted,
        reason: DeliveryReason::Ok,
        message_id: msg_id.map(str::to_owned),
        payload_sha256: sha256_hex(item.as_bytes()),
    }
}

/// What processing a batch produced, carried back into the actor.
struct Processed {
    settlements: Vec<Settlement>,
    /// Providers whose webhook times were recorded.
    recorded: Vec<ProviderId>,
    /// Silences the batch ended.
    ended: Vec<Silence>,
    /// What was written to the delivery log.
    logged: Vec<DeliveryRecord>,
}

impl Handler<Deliveries> for NotificationActor {
    type Result = ResponseActFuture<Self, Vec<Settlement>>;

    fn handle(&mut self, Deliveries(batch): Deliveries, _: &mut Self::Context) -> Self::Result {
        let mut settlements = vec![Settlement::Ack; batch.len()];
        let mut parsed: Vec<(usize, WebhookEnvelope, u64)> = Vec::with_capacity(batch.len());
        let mut records: Vec<DeliveryRecord> = Vec::new();
        for (i, delivery) in batch.iter().enumerate() {
            match serde_json::from_slice::<WebhookEnvelope>(&delivery.payload) {
                Ok(envelope) => {
                    // The delivery log is what the provider sent: a catch-up's
                    // replay is not a delivery.
                    if self.log.is_some() && !is_replay(&envelope) {
                        records.push(accepted_record(&envelope, delivery.msg_id.as_deref()));
                    }
                    parsed.push((i, envelope, delivery.delivered));
                }
                Err(e) => {
                    MessageRejected {
                        consumer: CONSUMER,
                        subject: &delivery.subject,
                        error: &e.to_string(),
                    }
                    .emit();
                    settlements[i] = Settlement::Reject;
                }
            }
        }
        let store = self.store.clone();
        let events = self.events.clone();
        let log = self.log.clone();
        let work = async move {
            let mut out = Processed {
                settlements,
                recorded: Vec::new(),
                ended: Vec::new(),
                logged: Vec::new(),
            };
            if parsed.is_empty() {
                return out;
            }
            // Replays are not webhooks: they say nothing about push working.
            let seen: Vec<(ProviderId, DateTime<Utc>)> = parsed
                .iter()
                .filter(|(_, e, _)| !is_replay(e))
                .map(|(_, e, _)| (e.provider_id, e.received_at))
                .collect();
            // The delivery log and the webhook times are independent writes:
            // both at once, so that the log costs the batch no extra round
            // trip. Either failing redelivers the batch (both are idempotent:
            // a redelivered message is logged once, and times never go back).
            let log = log.filter(|_| !records.is_empty());
            let logging = async {
                match &log {
                    Some(log) => log.record_deliveries(&records).await.map(|()| true),
                    None => Ok(false),
                }
            };
            let (logged, recorded) = futures_util::join!(logging, store.record_webhooks(&seen));
            let failure = match (&logged, &recorded) {
                (Err(e), _) => Some((
                    "cannot write the delivery log; the batch will be redelivered",
                    e.clone(),
                )),
                (_, Err(e)) => Some((
                    "cannot record webhook times; the batch will be redelivered",
                    e.clone(),
                )),
                _ => None,
            };
            if let Some((why, e)) = failure {
                tracing::warn!(error = %e, messages = parsed.len(), "{why}");
                for (i, _, delivered) in &parsed {
                    out.settlements[*i] = Settlement::Retry(retry_delay(*delivered));
                }
                return out;
            }
            if let Ok(true) = logged {
                out.logged = records;
            }
            if let Ok(ended) = recorded {
                out.ended = ended;
            }
            out.recorded = seen.iter().map(|(p, _)| *p).collect();
            let published = join_all(parsed.iter().map(|(_, envelope, _)| {
                let event = domain_event(envelope);
                let events = events.clone();
                async move { events.publish(&event).await }
            }))
            .await;
            let mut failed = None;
            for ((i, _, delivered), result) in parsed.iter().zip(published) {
                if let Err(e) = result {
                    out.settlements[*i] = Settlement::Retry(retry_delay(*delivered));
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                tracing::warn!(error = %e, "domain events not published; their notifications will be redelivered");
            }
            out
        };
        Box::pin(work.into_actor(self).map(|out, act, _| {
            if !out.logged.is_empty() {
                DeliveriesLogged {
                    records: &out.logged,
                }
                .emit();
            }
            for provider in out.recorded {
                act.board.update(provider, |e| e.silent_since = None);
            }
            for silence in out.ended {
                SilenceEnded { silence: &silence }.emit();
                act.tell_alerts(SilenceChanged::Ended(silence));
            }
            DeliveriesSettled {
                consumer: CONSUMER,
                settlements: &out.settlements,
            }
            .emit();
            out.settlements
        }))
    }
}

impl Handler<Stop> for NotificationActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Actor for NotificationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ActorRunning {
            actor: CONSUMER,
            running: true,
            many: false,
        }
        .emit();
        ctx.run_interval(self.config.sweep_every, |act, ctx| act.sweep(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        ActorRunning {
            actor: CONSUMER,
            running: false,
            many: false,
        }
        .emit();
    }
}

/// A provider was marked silent.
struct ProviderSilenced<'a> {
    silence: &'a Silence,
}

impl ProviderSilenced<'_> {
    fn emit(&self) {
        let s = self.silence;
        tracing::warn!(
            tenant = %s.tenant, provider = %s.provider_id, kind = %s.kind, since = %s.since,
            "provider silent: its subscription is alive but no webhook arrived"
        );
    }
}

/// A webhook ended a provider's silence.
struct SilenceEnded<'a> {
    silence: &'a Silence,
}

impl SilenceEnded<'_> {
    fn emit(&self) {
        let s = self.silence;
        tracing::info!(
            tenant = %s.tenant, provider = %s.provider_id, kind = %s.kind, since = %s.since,
            "provider heard from again; silence over"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::board::BoardEntry;
    use crate::delivery::Delivery;
    use crate::domain::HealthState;
    use crate::ports::clock::SystemClock;
    use crate::ports::{PublishError, StoreError};
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// One `record_webhooks` call's argument.
    type Seen = Vec<(ProviderId, DateTime<Utc>)>;

    /// A store that records every call and can be told to fail.
    #[derive(Default)]
    struct FakeStore {
        writes: Mutex<Vec<Seen>>,
        silent: Mutex<HashMap<ProviderId, Silence>>,
        down: Mutex<bool>,
    }

    #[async_trait]
    impl NotificationStore for FakeStore {
        async fn record_webhooks(
            &self,
            seen: &[(ProviderId, DateTime<Utc>)],
        ) -> Result<Vec<Silence>, StoreError> {
            if *self.down.lock().unwrap() {
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            self.writes.lock().unwrap().push(seen.to_vec());
            let mut silent = self.silent.lock().unwrap();
            Ok(seen
                .iter()
                .filter_map(|(p, at)| {
                    silent.remove(p).map(|s| Silence {
                        ended_at: Some(*at),
                        ..s
                    })
                })
                .collect())
        }

        async fn mark_silent(
            &self,
            _: DateTime<Utc>,
            _: &[(ProviderKind, TimeDelta)],
        ) -> Result<Vec<Silence>, StoreError> {
            Ok(Vec::new())
        }

        async fn silent_providers(&self) -> Result<Vec<(ProviderId, DateTime<Utc>)>, StoreError> {
            Ok(self
                .silent
                .lock()
                .unwrap()
                .values()
                .map(|s| (s.provider_id, s.since))
                .collect())
        }
    }

    #[derive(Default)]
    struct FakeBus(Mutex<Vec<DomainEvent>>);

    #[async_trait]
    impl DomainEventSink for FakeBus {
        async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError> {
            self.0.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    fn envelope(provider: ProviderId, kind: ProviderKind, change: &str) -> WebhookEnvelope {
        WebhookEnvelope {
            tenant: TenantId::parse("acme").unwrap(),
            provider_id: provider,
            kind,
            subscription_id: "sub-1".into(),
            received_at: Utc::now(),
            notification: serde_json::json!({
                "subscriptionId": "sub-1", "changeType": change,
                "resource": "Users/alice/Messages/AAA"
            }),
        }
    }

    fn delivery(payload: Vec<u8>) -> Delivery {
        Delivery {
            subject: "subkeeper.webhook.graph_mail.acme.x".into(),
            payload,
            delivered: 1,
            msg_id: None,
        }
    }

    fn start(
        store: Arc<FakeStore>,
        bus: Arc<FakeBus>,
        board: HealthBoard,
    ) -> Addr<NotificationActor> {
        NotificationActor::new(
            NotificationConfig {
                silence: HashMap::new(),
                sweep_every: Duration::from_secs(60),
            },
            store,
            bus,
            board,
            Arc::new(SystemClock),
            None,
        )
        .start()
    }

    #[test]
    fn notifications_become_the_right_domain_events() {
        let p = ProviderId::new();
        let types: Vec<&str> = [
            (ProviderKind::GraphMail, "created"),
            (ProviderKind::GraphMail, "updated"),
            (ProviderKind::GraphMail, "deleted"),
            (ProviderKind::GraphCalendar, "created"),
        ]
        .into_iter()
        .map(|(kind, change)| domain_event(&envelope(p, kind, change)).event_type.as_str())
        .collect();
        assert_eq!(
            types,
            [
                "mail_received",
                "mail_changed",
                "mail_changed",
                "calendar_changed"
            ]
        );
        let event = domain_event(&envelope(p, ProviderKind::GraphMail, "created"));
        assert_eq!(event.resource.as_deref(), Some("Users/alice/Messages/AAA"));
        assert_eq!(event.change_type.as_deref(), Some("created"));
    }

    #[actix::test]
    async fn a_batch_is_one_store_write_then_events_then_acks_and_garbage_is_rejected() {
        let (store, bus) = (Arc::new(FakeStore::default()), Arc::new(FakeBus::default()));
        let (a, b) = (ProviderId::new(), ProviderId::new());
        let board = HealthBoard::default();
        board.upsert(
            a,
            BoardEntry {
                tenant: TenantId::parse("acme").unwrap(),
                kind: ProviderKind::GraphMail,
                status: HealthState::Healthy,
                failures: 0,
                expires_at: None,
                next_at: None,
                silent_since: Some(Utc::now()),
            },
        );
        store.silent.lock().unwrap().insert(
            a,
            Silence {
                provider_id: a,
                tenant: TenantId::parse("acme").unwrap(),
                kind: ProviderKind::GraphMail,
                since: Utc::now(),
                ended_at: None,
            },
        );
        let actor = start(store.clone(), bus.clone(), board.clone());
        let batch = vec![
            delivery(serde_json::to_vec(&envelope(a, ProviderKind::GraphMail, "created")).unwrap()),
            delivery(b"{not a webhook envelope".to_vec()),
            delivery(serde_json::to_vec(&envelope(b, ProviderKind::GraphMail, "updated")).unwrap()),
            delivery(serde_json::to_vec(&envelope(a, ProviderKind::GraphMail, "created")).unwrap()),
        ];
        let verdicts = actor.send(Deliveries(batch)).await.unwrap();
        assert_eq!(
            verdicts,
            [
                Settlement::Ack,
                Settlement::Reject,
                Settlement::Ack,
                Settlement::Ack
            ]
        );
        assert_eq!(store.writes.lock().unwrap().len(), 1, "one write per batch");
        assert_eq!(store.writes.lock().unwrap()[0].len(), 3);
        let types: Vec<&str> = bus
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(types, ["mail_received", "mail_changed", "mail_received"]);
        assert_eq!(board.get(a).unwrap().silent_since, None, "silence cleared");
    }

    #[actix::test]
    async fn a_failed_write_publishes_nothing_and_asks_for_redelivery() {
        let (store, bus) = (Arc::new(FakeStore::default()), Arc::new(FakeBus::default()));
        *store.down.lock().unwrap() = true;
        let actor = start(store.clone(), bus.clone(), HealthBoard::default());
        let p = ProviderId::new();
        let mut again = delivery(
            serde_json::to_vec(&envelope(p, ProviderKind::GraphCalendar, "updated")).unwrap(),
        );
        again.delivered = 3;
        let batch = vec![
            delivery(serde_json::to_vec(&envelope(p, ProviderKind::GraphMail, "created")).unwrap()),
            again,
            delivery(b"[]".to_vec()),
        ];
        let verdicts = actor.send(Deliveries(batch)).await.unwrap();
        assert_eq!(
            verdicts,
            [
                Settlement::Retry(Duration::from_secs(1)),
                Settlement::Retry(Duration::from_secs(4)),
                Settlement::Reject
            ]
        );
        assert!(
            bus.0.lock().unwrap().is_empty(),
            "no event before the write"
        );
    }
}
