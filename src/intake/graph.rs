//! Microsoft Graph change and lifecycle notifications: parse the collection, route
//! and authenticate each item, publish the accepted ones (JetStream, or the outbox
//! when JetStream does not acknowledge in time), and hand lifecycle events to the
//! fleet.

use super::{
    DomainEvent, Dropped, EncodeError, IntakePorts, RouteCache, WebhookEnvelope, encode,
    message_id, publish_resync, secrets_match,
};
use crate::providers::graph::{Claim, OrphanCleanup};
use crate::telemetry::events::{WebhooksAccepted, WebhooksDropped};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{DeliveryKind, DeliveryOutcome, DeliveryReason};
use subkeeper_actors::fleet::{FleetHandle, LifecycleSignal};
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{DomainEventSink, DurableMessage, Route};

/// Why a request was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not a Graph notification collection; nothing was published.
    #[error("{0}")]
    Malformed(String),
    /// Neither JetStream nor the outbox took the notifications; the provider must
    /// retry (answered 5xx).
    #[error("notifications could not be stored; retry later")]
    Unavailable,
    /// Something we were to publish could not be encoded (a bug, counted and
    /// logged); nothing of the request was published (answered 5xx).
    #[error("{} could not be encoded; nothing was stored", .0.what)]
    Unencodable(#[from] EncodeError),
}

/// What happened to a request's items.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IntakeOutcome {
    /// Items published to JetStream.
    pub published: usize,
    /// Items stored in the outbox for the relay.
    pub deferred: usize,
    /// Items dropped, with why.
    pub dropped: Vec<Dropped>,
}

/// What a lifecycle request did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LifecycleOutcome {
    /// Lifecycle events handed to the fleet or turned into resync events.
    pub handled: usize,
    /// Items dropped, with why.
    pub dropped: Vec<Dropped>,
}

/// Subscription ids of ours logged per drop reason and request.
const MAX_LOGGED_IDS: usize = 10;

/// Graph notification intake.
#[derive(Clone)]
pub struct GraphIntake {
    routes: Arc<RouteCache>,
    ports: IntakePorts,
    /// Where resync events go (the lifecycle's `missed` and `subscriptionRemoved`).
    events: Arc<dyn DomainEventSink>,
    fleet: FleetHandle,
    clock: SharedClock,
    /// How long to wait for JetStream's ack before falling back to the outbox.
    publish_timeout: Duration,
    /// Where unknown subscriptions carrying a lost create's clientState go.
    orphans: Option<OrphanCleanup>,
}

/// A parsed, routed, authenticated item.
struct Accepted {
    route: Route,
    subscription_id: String,
    item: Value,
}

impl GraphIntake {
    /// Intake over the given adapters.
    pub fn new(
        ports: IntakePorts,
        events: Arc<dyn DomainEventSink>,
        fleet: FleetHandle,
        clock: SharedClock,
        publish_timeout: Duration,
        orphans: Option<OrphanCleanup>,
    ) -> Self {
        Self {
            routes: Arc::new(RouteCache::new(
                ports.routes.clone(),
                Duration::from_secs(30),
            )),
            ports,
            events,
            fleet,
            clock,
            publish_timeout,
            orphans,
        }
    }

    /// Splits a collection into items; refuses anything that is not one.
    fn items(body: &[u8]) -> Result<Vec<Value>, IntakeError> {
        let mut parsed: Value = serde_json::from_slice(body)
            .map_err(|e| IntakeError::Malformed(format!("body is not JSON: {e}")))?;
        // Move the array out rather than copying every item of every request.
        let Some(Value::Array(items)) = parsed.get_mut("value").map(Value::take) else {
            return Err(IntakeError::Malformed(
                "expected a change notification collection {\"value\": [...]}".into(),
            ));
        };
        if items.iter().any(|i| {
            i.get("subscriptionId")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        }) {
            return Err(IntakeError::Malformed(
                "every notification needs a subscriptionId".into(),
            ));
        }
        Ok(items)
    }

    /// Routes and authenticates each item: one route lookup for the whole
    /// request, and one warning per reason however many items were dropped (a
    /// flood of forged ids must not become a flood of queries and log lines).
    async fn sort(
        &self,
        items: Vec<Value>,
        kind_label: &'static str,
    ) -> Result<(Vec<Accepted>, Vec<Dropped>), IntakeError> {
        let subscription_id = |item: &Value| -> String {
            item["subscriptionId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let ids: Vec<String> = items.iter().map(subscription_id).collect();
        // No id of ours holds a NUL (nor can Postgres compare one): such an item
        // is an unknown subscription without asking the store.
        let lookup: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !id.contains('\0'))
            .collect();
        let routes = self.routes.routes(&lookup).await.map_err(|e| {
            tracing::error!(error = %e, "cannot route webhook: store unavailable");
            IntakeError::Unavailable
        })?;
        let mut accepted = Vec::new();
        let mut dropped = Vec::new();
        let mut refused = Vec::new();
        let delivery_kind = if kind_label == "microsoft_lifecycle" {
            DeliveryKind::Lifecycle
        } else {
            DeliveryKind::Change
        };
        // Reason → (items, example subscription ids): for unknown ids the first
        // (they may be forged by the thousand), for ours every distinct one up
        // to a few (a real subscription failing its check must show).
        let mut summary: Vec<(Dropped, usize, Vec<String>)> = Vec::new();
        for (item, subscription_id) in items.into_iter().zip(ids) {
            let given = item
                .get("clientState")
                .and_then(Value::as_str)
                .unwrap_or("");
            let verdict = match routes.get(&subscription_id) {
                // Perhaps ours after all: a subscription being created (Graph
                // can deliver before it answers), or a lost create's orphan.
                None => match self
                    .orphans
                    .as_ref()
                    .map(|o| o.claim(given, &subscription_id))
                {
                    Some(Claim::Creating(provider)) => Ok(Route::in_creation(
                        provider.id,
                        provider.tenant,
                        provider.kind,
                        given.to_owned(),
                    )),
                    _ => Err(Dropped::UnknownSubscription),
                },
                Some(r) if !secrets_match(given, &r.client_state) => Err(Dropped::BadClientState),
                Some(r) if r.is_retired() => Err(Dropped::Retired),
                Some(route) => Ok(route.clone()),
            };
            match verdict {
                Ok(route) => accepted.push(Accepted {
                    route,
                    subscription_id,
                    item,
                }),
                Err(why) => {
                    if let (Some(recorder), Some(route)) =
                        (&self.ports.deliveries, routes.get(&subscription_id))
                        && why != Dropped::UnknownSubscription
                    {
                        refused.push(recorder.record(
                            route,
                            delivery_kind,
                            DeliveryOutcome::Rejected,
                            super::log::reason_of(why),
                            message_id(route.provider, &item).ok(),
                            &item,
                        ));
                    }
                    let cap = if why == Dropped::UnknownSubscription {
                        1
                    } else {
                        MAX_LOGGED_IDS
                    };
                    match summary.iter_mut().find(|(w, _, _)| *w == why) {
                        Some((_, n, ids)) => {
                            *n += 1;
                            if ids.len() < cap && !ids.contains(&subscription_id) {
                                ids.push(subscription_id);
                            }
                        }
                        None => summary.push((why, 1, vec![subscription_id])),
                    }
                    dropped.push(why);
                }
            }
        }
        for (why, items, ids) in summary {
            WebhooksDropped {
                kind: kind_label,
                reason: why,
                items: items as u64,
                ids: &ids,
            }
            .emit();
        }
        if let Some(recorder) = &self.ports.deliveries {
            recorder.refused(refused);
        }
        Ok((accepted, dropped))
    }

    /// Takes in a change-notification collection.
    pub async fn notifications(&self, body: &[u8]) -> Result<IntakeOutcome, IntakeError> {
        let items = Self::items(body)?;
        let (accepted, dropped) = self.sort(items, "microsoft").await?;
        let received_at = self.clock.now();
        let messages = accepted
            .into_iter()
            .map(|a| {
                let subject = self.ports.publisher.webhook_subject(
                    a.route.kind,
                    &a.route.tenant,
                    a.route.provider,
                );
                let msg_id = message_id(a.route.provider, &a.item)?;
                let envelope = WebhookEnvelope {
                    tenant: a.route.tenant,
                    provider_id: a.route.provider,
                    kind: a.route.kind,
                    subscription_id: a.subscription_id,
                    received_at,
                    notification: a.item,
                };
                Ok(DurableMessage {
                    subject,
                    msg_id,
                    payload: encode("webhook_envelope", &envelope)?,
                })
            })
            .collect::<Result<Vec<_>, EncodeError>>()?;

        let stored = super::store_durably(&self.ports, messages, self.publish_timeout).await?;
        let outcome = IntakeOutcome {
            published: stored.published,
            deferred: stored.deferred,
            dropped,
        };
        let accepted = outcome.published + outcome.deferred;
        WebhooksAccepted {
            kind: "microsoft",
            items: accepted as u64,
        }
        .emit();
        Ok(outcome)
    }

    /// Takes in a lifecycle-notification collection: `reauthorizationRequired` →
    /// renew now; `subscriptionRemoved` → recreate now and emit a resync event;
    /// `missed` → emit a resync event.
    pub async fn lifecycle(&self, body: &[u8]) -> Result<LifecycleOutcome, IntakeError> {
        let items = Self::items(body)?;
        let (accepted, dropped) = self.sort(items, "microsoft_lifecycle").await?;
        let mut outcome = LifecycleOutcome {
            dropped,
            ..LifecycleOutcome::default()
        };
        if let Some(recorder) = &self.ports.deliveries {
            recorder.handled(
                accepted
                    .iter()
                    .map(|a| {
                        recorder.record(
                            &a.route,
                            DeliveryKind::Lifecycle,
                            DeliveryOutcome::Accepted,
                            DeliveryReason::Ok,
                            message_id(a.route.provider, &a.item).ok(),
                            &a.item,
                        )
                    })
                    .collect(),
            );
        }
        for a in accepted {
            let event = a
                .item
                .get("lifecycleEvent")
                .and_then(Value::as_str)
                .unwrap_or("");
            let provider = a.route.provider;
            let resync = match event {
                "reauthorizationRequired" => {
                    self.fleet
                        .signal(LifecycleSignal::ReauthorizationRequired(provider))
                        .await;
                    None
                }
                "subscriptionRemoved" => {
                    self.fleet
                        .signal(LifecycleSignal::SubscriptionRemoved(provider))
                        .await;
                    Some("subscription_removed")
                }
                "missed" => {
                    // The owner's supervisor has the missed changes caught up.
                    self.fleet.signal(LifecycleSignal::Missed(provider)).await;
                    Some("missed")
                }
                other => {
                    tracing::warn!(event = other, subscription = %a.subscription_id, "unknown lifecycle event ignored");
                    None
                }
            };
            tracing::info!(tenant = %a.route.tenant, provider = %provider, event, "lifecycle notification");
            if let Some(reason) = resync {
                let event = DomainEvent::resync_required(
                    a.route.tenant.clone(),
                    provider,
                    a.route.kind,
                    reason,
                    self.clock.now(),
                    None,
                );
                publish_resync(self.events.as_ref(), event).await;
            }
            outcome.handled += 1;
        }
        WebhooksAccepted {
            kind: "microsoft_lifecycle",
            items: outcome.handled as u64,
        }
        .emit();
        Ok(outcome)
    }
}
