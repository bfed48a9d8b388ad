//! Durable JetStream pull consumers that feed a stream to an actor in batches.
//!
//! Every instance binds to the same durable consumer (`{prefix}_NOTIFICATIONS` on
//! the webhook stream, `{prefix}_ALERTING` on the renewal stream), so each message
//! goes to one instance and the server remembers what was acknowledged across
//! restarts. Messages arrive through a long-lived pull; whatever has arrived when
//! the actor is free becomes one batch ([`Deliveries`]), so a burst is one store
//! write while a lone webhook waits for nothing. The actor answers one
//! [`Settlement`] per message, only once its effects are committed; this module
//! acks, naks with a delay, or terminates accordingly. A message whose actor never
//! answers is neither acked nor lost: JetStream redelivers it after `ack_wait`.
//!
//! It decides nothing about the messages: that is the actor's business.

use super::{BusError, ConsumerHandle, Topology};
use actix::Recipient;
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
};
use futures_util::StreamExt as _;
use std::time::Duration;
use subkeeper_actors::delivery::{Deliveries, Delivery, RETRY_BASE, Settlement};
use tokio::sync::watch;

/// Longest pause between attempts to re-open a consumer after NATS or the
/// consumer went away.
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// What one durable consumer is and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: String,
    /// Its durable name, shared by every instance.
    pub durable: String,
    /// What it is for, as `nats consumer info` shows it.
    pub description: String,
    /// The subjects it reads.
    pub filter: String,
    /// Where a newly created consumer starts; an existing one resumes where it was.
    pub deliver: DeliverPolicy,
    /// How long a delivered message may stay unsettled before the server redelivers
    /// it (to any instance).
    pub ack_wait: Duration,
    /// Messages delivered and not yet settled, across all instances; the server
    /// delivers no more past it (backpressure on a slow store).
    pub max_ack_pending: i64,
    /// Largest batch handed to the actor, and the pull's batch size.
    pub batch: usize,
}

impl ConsumerSpec {
    /// `{prefix}_NOTIFICATIONS` on the webhook stream. Starts from the beginning
    /// when first created: notifications accepted before any instance consumed them
    /// are still owed their domain events. `ack_wait` covers a batch's single store
    /// write (its pool waits at most 5 s for a connection) and its event publishes
    /// with room to spare; 1,000 unsettled messages bound memory and a redelivery
    /// storm while still letting batches grow under load.
    pub fn notifications(topology: &Topology) -> Self {
        Self {
            stream: topology.webhook_stream(),
            durable: topology.notification_consumer(),
            description: "subkeeper: last-webhook times, domain events, silence".into(),
            filter: topology.webhook_subjects(),
            deliver: DeliverPolicy::All,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            batch: 256,
        }
    }

    /// `{prefix}_ALERTING` on the renewal stream. Starts with new results when first
    /// created: the stream keeps 14 days of results, and replaying them would page
    /// about problems long solved (the actor reads who is unhealthy now from the
    /// store at start). Results are few; small batches keep a provider's alerts in
    /// order when a publish fails and the rest of a batch is redelivered.
    pub fn alerting(topology: &Topology) -> Self {
        Self {
            stream: topology.renewal_stream(),
            durable: topology.alerting_consumer(),
            description: "subkeeper: alert events from renewal results".into(),
            filter: topology.renewal_subjects(),
            deliver: DeliverPolicy::New,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 256,
            batch: 64,
        }
    }

    fn config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some(self.description.clone()),
            filter_subject: self.filter.clone(),
            deliver_policy: self.deliver,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            // Redeliver for as long as it takes: a message is only ever given up by
            // the actor rejecting it.
            max_deliver: -1,
            ..Default::default()
        }
    }
}

/// Creates (or brings up to date) the durable consumer, then feeds `to` until
/// stopped. Fails if the consumer cannot be created at start-up, like the streams.
pub(super) async fn start(
    jetstream: jetstream::Context,
    spec: ConsumerSpec,
    to: Recipient<Deliveries>,
) -> Result<ConsumerHandle, BusError> {
    let consumer = open(&jetstream, &spec).await?;
    let (stop, stopped) = watch::channel(false);
    let durable = spec.durable.clone();
    let task = actix_rt::spawn(feed(jetstream, spec, consumer, to, stopped));
    tracing::info!(consumer = %durable, "consuming");
    Ok(ConsumerHandle::new(durable, stop, task))
}

async fn open(
    jetstream: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<PullConsumer, BusError> {
    let failed = |reason: String| BusError::Consumer {
        stream: spec.stream.clone(),
        consumer: spec.durable.clone(),
        reason,
    };
    let stream = jetstream
        .get_stream(&spec.stream)
        .await
        .map_err(|e| failed(e.to_string()))?;
    match stream.create_consumer(spec.config()).await {
        Ok(consumer) => Ok(consumer),
        // Servers before 2.10 refuse to change an existing durable's settings
        // through create: keep consuming with the settings it has.
        Err(refused) => match stream.get_consumer::<pull::Config>(&spec.durable).await {
            Ok(consumer) => {
                tracing::warn!(consumer = %spec.durable, reason = %refused, "consumer settings not updated; using the existing consumer as it is");
                Ok(consumer)
            }
            Err(_) => Err(failed(refused.to_string())),
        },
    }
}

/// Pulls, hands batches to the actor, settles; re-opens the consumer after an error.
async fn feed(
    jetstream: jetstream::Context,
    spec: ConsumerSpec,
    first: PullConsumer,
    to: Recipient<Deliveries>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut consumer = Some(first);
    let mut pause = Duration::from_millis(500);
    loop {
        let current = match consumer.take() {
            Some(c) => Ok(c),
            None => open(&jetstream, &spec).await,
        };
        let reason = match current {
            Ok(c) => {
                let reason = pull_until_broken(&c, &spec, &to, &mut stopped).await;
                pause = Duration::from_millis(500);
                reason
            }
            Err(e) => e.to_string(),
        };
        if *stopped.borrow() {
            return;
        }
        tracing::warn!(consumer = %spec.durable, reason = %reason, retry_in_ms = pause.as_millis() as u64, "consumer interrupted; re-opening");
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(REOPEN_MAX);
    }
}

/// Runs one pull until it breaks (returns why) or the handle is stopped.
async fn pull_until_broken(
    consumer: &PullConsumer,
    spec: &ConsumerSpec,
    to: &Recipient<Deliveries>,
    stopped: &mut watch::Receiver<bool>,
) -> String {
    let messages = match consumer
        .stream()
        .max_messages_per_batch(spec.batch)
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(e) => return e.to_string(),
    };
    let mut chunks = messages.ready_chunks(spec.batch);
    loop {
        let chunk = tokio::select! {
            _ = stopped.changed() => return "stopped".into(),
            chunk = chunks.next() => chunk,
        };
        let Some(chunk) = chunk else {
            return "the pull ended".into();
        };
        let mut batch = Vec::with_capacity(chunk.len());
        let mut broken = None;
        for item in chunk {
            match item {
                Ok(message) => batch.push(message),
                // A missed heartbeat is the client noticing a stall; the pull
                // carries on by itself once messages flow again.
                Err(e)
                    if e.kind()
                        == jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat =>
                {
                    tracing::debug!(consumer = %spec.durable, "missed a consumer heartbeat");
                }
                Err(e) => broken = Some(e.to_string()),
            }
        }
        if !batch.is_empty() {
            settle(to, batch).await;
        }
        if let Some(reason) = broken {
            return reason;
        }
    }
}

/// Hands a batch to the actor and settles each message as it answers.
async fn settle(to: &Recipient<Deliveries>, batch: Vec<jetstream::Message>) {
    let deliveries = batch
        .iter()
        .map(|m| Delivery {
            subject: m.subject.to_string(),
            payload: m.payload.to_vec(),
            delivered: m
                .info()
                .ok()
                .and_then(|i| u64::try_from(i.delivered).ok())
                .unwrap_or(1),
            msg_id: m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned()),
        })
        .collect();
    let verdicts = match to.send(Deliveries(deliveries)).await {
        Ok(verdicts) => verdicts,
        Err(e) => {
            tracing::warn!(error = %e, "consumer's actor is gone; messages left for redelivery");
            Vec::new()
        }
    };
    for (i, message) in batch.iter().enumerate() {
        let kind = match verdicts.get(i) {
            Some(Settlement::Ack) => AckKind::Ack,
            Some(Settlement::Retry(delay)) => AckKind::Nak(Some(*delay)),
            Some(Settlement::Reject) => AckKind::Term,
            None => AckKind::Nak(Some(RETRY_BASE)),
        };
        // A lost ack only means a redelivery, which every effect tolerates.
        if let Err(e) = message.ack_with(kind).await {
            tracing::debug!(subject = %message.subject, error = %e, "settling a message failed; it will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_are_durable_explicit_ack_and_never_give_up() {
        let t = Topology::new("subkeeper", "SUBKEEPER");
        let n = ConsumerSpec::notifications(&t);
        let a = ConsumerSpec::alerting(&t);
        assert_eq!(
            (n.stream.as_str(), n.durable.as_str(), n.filter.as_str()),
            (
                "SUBKEEPER_WEBHOOKS",
                "SUBKEEPER_NOTIFICATIONS",
                "subkeeper.webhook.>"
            )
        );
        assert_eq!(
            (a.stream.as_str(), a.durable.as_str(), a.filter.as_str()),
            (
                "SUBKEEPER_RENEWALS",
                "SUBKEEPER_ALERTING",
                "subkeeper.renewal.>"
            )
        );
        for spec in [n, a] {
            let c = spec.config();
            assert_eq!(c.durable_name.as_deref(), Some(spec.durable.as_str()));
            assert_eq!(c.ack_policy, AckPolicy::Explicit);
            assert_eq!(c.max_deliver, -1);
            assert!(c.ack_wait >= Duration::from_secs(10));
        }
    }
}
