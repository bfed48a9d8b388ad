//! Webhook intake: turns provider notifications into durable messages on the
//! bus's webhook stream.
//!
//! Owns routing (provider-side subscription id → provider, cached, store fallback),
//! the constant-time clientState check, message ids that make redeliveries
//! idempotent, and the rule that a notification is acknowledged to the provider
//! only once the webhook stream or the outbox holds it. It does not touch the
//! lifecycle: lifecycle notifications are handed to the fleet.

mod google;
mod graph;
mod log;
mod outbox;
mod resync;

pub use google::{ChannelMessage, ChannelOutcome, GoogleIntake, PushAuth, PushOutcome};
pub use graph::{GraphIntake, IntakeError, IntakeOutcome, LifecycleOutcome};
pub use log::DeliveryRecorder;
pub use outbox::spawn_outbox_relay;
pub use resync::{publish_resync, spawn_google_resync};

use crate::telemetry::EncodeFailed;
use futures_util::future::join_all;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::domain::{DeliveryOutcome, DeliveryReason};
pub use subkeeper_actors::domain::{DomainEvent, WebhookEnvelope};
use subkeeper_actors::ports::{
    DurableMessage, IntakeStore, Outbox, Route, StoreError, WebhookPublisher,
};

/// What intake reaches the world through: routing reads, the bus's webhook stream,
/// and the outbox for what the bus does not take in time.
#[derive(Clone)]
pub struct IntakePorts {
    /// Where subscription ids and mailboxes are routed from.
    pub routes: Arc<dyn IntakeStore>,
    /// The webhook stream.
    pub publisher: Arc<dyn WebhookPublisher>,
    /// Where notifications wait while the bus does not acknowledge them.
    pub outbox: Arc<dyn Outbox>,
    /// Where refused deliveries and lifecycle notifications are logged (`None`:
    /// the delivery log is off).
    pub deliveries: Option<Arc<DeliveryRecorder>>,
}

/// What [`store_durably`] did with a request's messages.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// Published to the stream (duplicates included).
    pub published: usize,
    /// Parked in the outbox.
    pub deferred: usize,
    /// Indices of the messages the stream already held.
    pub duplicates: Vec<usize>,
}

/// Why a notification item was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The subscription id is not one of ours.
    UnknownSubscription,
    /// The clientState did not match.
    BadClientState,
    /// The provider was retired (disabled, deleted) or the subscription deleted;
    /// counted as `retired`, apart from malformed or forged traffic.
    Retired,
}

impl Dropped {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownSubscription => "unknown_subscription",
            Self::BadClientState => "bad_client_state",
            Self::Retired => "retired",
        }
    }
}

/// A value that could not be serialized to JSON. Never the caller's fault: it is
/// counted and logged where it happens ([`encode`]), and nothing is published in
/// its place — an empty payload or the hash of one would pass for a real message.
#[derive(Debug, thiserror::Error)]
#[error("{what} could not be encoded as JSON: {source}")]
pub struct EncodeError {
    /// What was being encoded (a bounded label: `webhook_envelope`, `domain_event`,
    /// `notification`).
    pub what: &'static str,
    /// serde_json's reason.
    #[source]
    source: serde_json::Error,
}

/// The JSON of `value`; a failure is counted and logged as `what`.
pub fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|source| {
        let error = EncodeError { what, source };
        EncodeFailed {
            what,
            error: &error,
        }
        .emit();
        error
    })
}

/// `Nats-Msg-Id` of a notification: a hash of the provider's item (serde_json
/// sorts keys, so the same item always hashes the same), so a redelivery by the
/// provider is stored once within the stream's duplicate window.
pub fn message_id<T: Serialize + ?Sized>(
    provider: ProviderId,
    item: &T,
) -> Result<String, EncodeError> {
    let mut hash = Sha256::new();
    hash.update(provider.0.as_bytes());
    hash.update(encode("notification", item)?);
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Publishes messages to the webhook stream, parking those it does not
/// acknowledge within `timeout` in the outbox. Returns how many were published
/// (and which of them the stream already held) and how many deferred;
/// `Unavailable` when neither took them (the provider must retry).
pub(crate) async fn store_durably(
    ports: &IntakePorts,
    messages: Vec<DurableMessage>,
    timeout: Duration,
) -> Result<Stored, graph::IntakeError> {
    let stored = publish_or_park(ports, &messages, timeout).await;
    if let Some(recorder) = &ports.deliveries {
        // The rare paths: a resend the stream already held, or nothing took the
        // request (the provider retries it). Their envelopes are read back
        // rather than kept on the common path.
        let refused: Vec<(usize, DeliveryOutcome, DeliveryReason)> = match &stored {
            Ok(stored) => stored
                .duplicates
                .iter()
                .map(|i| (*i, DeliveryOutcome::Duplicate, DeliveryReason::AlreadySeen))
                .collect(),
            Err(_) => (0..messages.len())
                .map(|i| (i, DeliveryOutcome::Rejected, DeliveryReason::PublishFailed))
                .collect(),
        };
        let records = refused
            .into_iter()
            .filter_map(|(i, outcome, reason)| {
                let message = messages.get(i)?;
                let envelope: WebhookEnvelope = serde_json::from_slice(&message.payload).ok()?;
                Some(DeliveryRecorder::envelope_record(
                    &envelope,
                    outcome,
                    reason,
                    &message.msg_id,
                ))
            })
            .collect::<Vec<_>>();
        // A duplicate needs a real clientState: only refusals can be forged at
        // will, so only they are rate-limited.
        let (rejected, duplicates) = records
            .into_iter()
            .partition(|r| r.outcome == DeliveryOutcome::Rejected);
        recorder.refused(rejected);
        recorder.handled(duplicates);
    }
    stored
}

/// [`store_durably`] without the delivery log.
async fn publish_or_park(
    ports: &IntakePorts,
    messages: &[DurableMessage],
    timeout: Duration,
) -> Result<Stored, graph::IntakeError> {
    let acks = join_all(
        messages
            .iter()
            .map(|message| ports.publisher.publish_durable(message, timeout)),
    )
    .await;
    let mut stored = Stored::default();
    let mut deferred = Vec::new();
    for (i, (message, ack)) in messages.iter().zip(acks).enumerate() {
        match ack {
            Ok(duplicate) => {
                stored.published += 1;
                if duplicate {
                    stored.duplicates.push(i);
                }
            }
            Err(e) => {
                tracing::warn!(subject = %message.subject, error = %e, "the bus did not acknowledge; using the outbox");
                deferred.push(message.clone());
            }
        }
    }
    if !deferred.is_empty()
        && let Err(e) = ports.outbox.push(&deferred).await
    {
        tracing::error!(error = %e, "neither the bus nor the outbox took webhook notifications; the provider will retry");
        return Err(graph::IntakeError::Unavailable);
    }
    stored.deferred = deferred.len();
    Ok(stored)
}

/// Constant-time equality of two secrets.
pub fn secrets_match(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Routes cached for a short while: a webhook request costs at most one query
/// (for the ids not in memory), and a replaced subscription's route is still
/// found in the store.
pub struct RouteCache {
    store: Arc<dyn IntakeStore>,
    entries: Mutex<HashMap<String, (Option<Route>, Instant)>>,
    ttl: Duration,
}

impl RouteCache {
    /// Entries this many; past it the cache starts over (bounded memory).
    const MAX_ENTRIES: usize = 200_000;

    /// A cache over `store` keeping answers for `ttl`.
    pub fn new(store: Arc<dyn IntakeStore>, ttl: Duration) -> Self {
        Self {
            store,
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The routes of `ids` (those we know), from memory where fresh and otherwise
    /// in one store query for all the misses. Unknown ids are not cached: the id
    /// of a subscription being created right now may arrive before it is stored.
    pub async fn routes(&self, ids: &[&str]) -> Result<HashMap<String, Route>, StoreError> {
        let mut found = HashMap::new();
        let mut misses: Vec<&str> = Vec::new();
        if let Ok(entries) = self.entries.lock() {
            for id in ids {
                match entries.get(*id) {
                    Some((Some(route), at)) if at.elapsed() < self.ttl => {
                        found.insert((*id).to_owned(), route.clone());
                    }
                    _ => misses.push(id),
                }
            }
        } else {
            misses.extend(ids);
        }
        misses.sort_unstable();
        misses.dedup();
        misses.retain(|id| !found.contains_key(*id));
        if misses.is_empty() {
            return Ok(found);
        }
        let fetched = self.store.routes(&misses).await?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() + fetched.len() > Self::MAX_ENTRIES {
                entries.clear();
            }
            let now = Instant::now();
            for (id, route) in &fetched {
                entries.insert(id.clone(), (Some(route.clone()), now));
            }
        }
        found.extend(fetched);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A value whose serialization fails, as a future field type might.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to be encoded"))
        }
    }

    #[test]
    fn a_value_that_cannot_be_encoded_is_an_error_not_an_empty_payload() {
        let error = encode("webhook_envelope", &Unencodable).unwrap_err();
        assert_eq!(error.what, "webhook_envelope");
        assert!(
            error.to_string().contains("refuses to be encoded"),
            "{error}"
        );
        // JSON object keys must be strings.
        let map = BTreeMap::from([((1, 2), "x")]);
        assert!(encode("domain_event", &map).is_err());
        assert_eq!(
            encode("domain_event", &BTreeMap::from([("a", 1)])).unwrap(),
            br#"{"a":1}"#
        );
    }

    #[test]
    fn a_message_id_is_never_the_hash_of_an_empty_payload() {
        let provider = ProviderId::new();
        assert!(message_id(provider, &Unencodable).is_err());
        let item = serde_json::json!({"subscriptionId": "s", "changeType": "created"});
        let id = message_id(provider, &item).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(id, message_id(provider, &item).unwrap());
        assert_ne!(id, message_id(provider, &serde_json::json!({})).unwrap());
    }
}
