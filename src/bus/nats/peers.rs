//! The instances sharing a fleet, reaching each other over NATS core
//! request/reply: a forced renewal or a lifecycle signal for a provider another
//! instance owns goes to that instance's own subjects
//! (`{prefix}.instance.{id}.renew|signal`), and an admin change is broadcast on
//! `{prefix}.fleet.reconcile` so the owner reconciles at once. Who owns what
//! comes from the leases; an instance answers only for its own providers, so a
//! request is never passed on twice.

use super::super::control::{ControlHandle, RenewReply, RenewRequest, answer};
use super::Topology;
use crate::store::Leases;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use subkeeper_actors::domain::{ProviderId, RenewalResult, TenantId};
use subkeeper_actors::fleet::{FleetError, FleetHandle, LifecycleSignal, Peers};

/// How long a peer may take to answer a forced renewal (a provider call or two).
const RENEW_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a peer may take to take a lifecycle signal.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A lifecycle signal as it travels between instances.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "signal", content = "provider_id")]
enum SignalMessage {
    ReauthorizationRequired(ProviderId),
    SubscriptionRemoved(ProviderId),
    Missed(ProviderId),
}

impl From<LifecycleSignal> for SignalMessage {
    fn from(s: LifecycleSignal) -> Self {
        match s {
            LifecycleSignal::ReauthorizationRequired(p) => Self::ReauthorizationRequired(p),
            LifecycleSignal::SubscriptionRemoved(p) => Self::SubscriptionRemoved(p),
            LifecycleSignal::Missed(p) => Self::Missed(p),
        }
    }
}

impl From<SignalMessage> for LifecycleSignal {
    fn from(s: SignalMessage) -> Self {
        match s {
            SignalMessage::ReauthorizationRequired(p) => Self::ReauthorizationRequired(p),
            SignalMessage::SubscriptionRemoved(p) => Self::SubscriptionRemoved(p),
            SignalMessage::Missed(p) => Self::Missed(p),
        }
    }
}

fn instance_subject(topology: &Topology, instance: i64, verb: &str) -> String {
    format!("{}.instance.{instance}.{verb}", topology.subject_prefix)
}

fn reconcile_subject(topology: &Topology) -> String {
    format!("{}.fleet.reconcile", topology.subject_prefix)
}

/// Answers what other instances pass on to this one, for `fleet`'s own
/// providers, until stopped.
pub(super) async fn serve(
    client: async_nats::Client,
    topology: &Topology,
    leases: &Leases,
    fleet: FleetHandle,
) -> Result<ControlHandle, async_nats::SubscribeError> {
    let me = leases.instance();
    let fleet = fleet.local();
    let mut renews = client
        .subscribe(instance_subject(topology, me, "renew"))
        .await?;
    let mut signals = client
        .subscribe(instance_subject(topology, me, "signal"))
        .await?;
    let mut reconciles = client.subscribe(reconcile_subject(topology)).await?;
    let _ = client.flush().await;
    let task = actix_rt::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = renews.next() => {
                    let (client, fleet) = (client.clone(), fleet.clone());
                    actix_rt::spawn(async move {
                        let reply = answer(&fleet, &m.payload).await;
                        if let (Some(to), Ok(body)) = (m.reply, serde_json::to_vec(&reply)) {
                            let _ = client.publish(to, body.into()).await;
                        }
                    });
                }
                Some(m) = signals.next() => {
                    let taken = match serde_json::from_slice::<SignalMessage>(&m.payload) {
                        Ok(signal) => fleet.signal(signal.into()).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed lifecycle signal from a peer ignored");
                            false
                        }
                    };
                    if let Some(to) = m.reply {
                        let _ = client.publish(to, if taken { "true" } else { "false" }.into()).await;
                    }
                }
                Some(_) = reconciles.next() => fleet.reconcile(),
                else => break,
            }
        }
    });
    tracing::info!(instance = me, "answering other instances over NATS");
    Ok(ControlHandle::new(Some(task)))
}

/// The other instances, over NATS.
pub struct NatsPeers {
    client: async_nats::Client,
    topology: Topology,
    leases: Leases,
}

impl NatsPeers {
    pub(super) fn new(client: async_nats::Client, topology: Topology, leases: Leases) -> Self {
        Self {
            client,
            topology,
            leases,
        }
    }

    async fn request(&self, subject: String, body: Vec<u8>, timeout: Duration) -> Option<Vec<u8>> {
        let reply = self
            .client
            .send_request(
                subject.clone(),
                async_nats::Request::new()
                    .payload(body.into())
                    .timeout(Some(timeout)),
            )
            .await;
        match reply {
            Ok(reply) => Some(reply.payload.to_vec()),
            Err(e) => {
                tracing::warn!(subject = %subject, error = %e, "a peer instance did not answer");
                None
            }
        }
    }

    async fn renew_on(&self, instance: i64, request: &RenewRequest) -> Option<RenewReply> {
        let body = serde_json::to_vec(request).ok()?;
        let reply = self
            .request(
                instance_subject(&self.topology, instance, "renew"),
                body,
                RENEW_TIMEOUT,
            )
            .await?;
        serde_json::from_slice(&reply).ok()
    }
}

#[async_trait::async_trait]
impl Peers for NatsPeers {
    async fn renew(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> Option<Result<RenewalResult, FleetError>> {
        let owner = self.leases.owner_of(provider).await.ok().flatten()?;
        let request = RenewRequest {
            tenant: tenant.to_string(),
            provider_id: Some(provider.to_string()),
        };
        Some(match self.renew_on(owner, &request).await {
            Some(RenewReply::One(result)) => Ok(*result),
            Some(RenewReply::Many(mut results)) => results.pop().ok_or(FleetError::SupervisorGone),
            Some(RenewReply::Error { error }) if error.code == "not_found" => {
                Err(FleetError::UnknownProvider {
                    tenant: tenant.to_string(),
                    provider: provider.to_string(),
                })
            }
            Some(RenewReply::Error { .. }) | None => Err(FleetError::SupervisorGone),
        })
    }

    async fn renew_tenant(&self, tenant: &TenantId) -> Vec<RenewalResult> {
        let Ok(others) = self.leases.other_live_instances().await else {
            return Vec::new();
        };
        let request = RenewRequest {
            tenant: tenant.to_string(),
            provider_id: None,
        };
        let replies =
            futures_util::future::join_all(others.iter().map(|i| self.renew_on(*i, &request)))
                .await;
        replies
            .into_iter()
            .flatten()
            .flat_map(|r| match r {
                RenewReply::One(result) => vec![*result],
                RenewReply::Many(results) => results,
                RenewReply::Error { .. } => Vec::new(),
            })
            .collect()
    }

    async fn signal(&self, signal: LifecycleSignal) -> bool {
        let provider = match signal {
            LifecycleSignal::ReauthorizationRequired(p)
            | LifecycleSignal::SubscriptionRemoved(p)
            | LifecycleSignal::Missed(p) => p,
        };
        let Some(owner) = self.leases.owner_of(provider).await.ok().flatten() else {
            return false;
        };
        let Ok(body) = serde_json::to_vec(&SignalMessage::from(signal)) else {
            return false;
        };
        self.request(
            instance_subject(&self.topology, owner, "signal"),
            body,
            SIGNAL_TIMEOUT,
        )
        .await
        .is_some_and(|reply| reply == b"true")
    }

    fn reconcile(&self) {
        let (client, subject) = (self.client.clone(), reconcile_subject(&self.topology));
        actix_rt::spawn(async move {
            if let Err(e) = client.publish(subject, Vec::new().into()).await {
                tracing::warn!(error = %e, "cannot ask the other instances to reconcile; they will at their next interval");
            }
        });
    }
}
