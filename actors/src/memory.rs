//! In-process implementations of the store and event ports, for paused-time tests
//! (where real sockets would let tokio's auto-advance jump the clock mid-query) and
//! as the seam for the future embedded mode. Same port contracts as the adapters.

use crate::domain::{HealthState, Provider, ProviderId, RenewalResult, Subscription};
use crate::ports::{
    AttemptRecord, ChangeFeed, EventSink, Fence, LifecycleStore, LoadedProvider, OwnedProvider,
    ProviderChange, ProviderState, Revision, StoreError,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

#[derive(Default)]
struct Tables {
    providers: HashMap<ProviderId, Provider>,
    /// Deleted providers, as they were.
    deleted: HashMap<ProviderId, Provider>,
    /// The change feed: the last revision handed out, and each provider's.
    revision: i64,
    revisions: HashMap<ProviderId, i64>,
    subscriptions: HashMap<ProviderId, Subscription>,
    previous: Vec<Subscription>,
    health: HashMap<ProviderId, crate::domain::ProviderHealth>,
    attempts: Vec<RenewalResult>,
}

impl Tables {
    fn bump(&mut self, provider: ProviderId) {
        self.revision += 1;
        self.revisions.insert(provider, self.revision);
    }

    fn state(&self, provider: ProviderId) -> ProviderState {
        ProviderState {
            subscription: self.subscriptions.get(&provider).cloned(),
            health: self.health.get(&provider).cloned(),
            had_subscription: self.subscriptions.contains_key(&provider)
                || self.previous.iter().any(|s| s.provider_id == provider),
        }
    }
}

/// A store that keeps everything in memory.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Tables>>);

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Tables) -> T) -> Result<T, StoreError> {
        self.0
            .lock()
            .map(|mut t| f(&mut t))
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }

    /// Adds or replaces a provider.
    pub fn put_provider(&self, provider: Provider) {
        let _ = self.with(|t| {
            t.bump(provider.id);
            t.deleted.remove(&provider.id);
            t.providers.insert(provider.id, provider)
        });
    }

    /// Deletes a provider (its subscription is retired by the fleet).
    pub fn delete_provider(&self, id: ProviderId) {
        let _ = self.with(|t| {
            if let Some(provider) = t.providers.remove(&id) {
                t.bump(id);
                t.deleted.insert(id, provider);
            }
        });
    }

    /// Every attempt recorded so far, oldest first.
    pub fn attempts(&self) -> Vec<RenewalResult> {
        self.with(|t| t.attempts.clone()).unwrap_or_default()
    }

    /// The live subscription of a provider.
    pub fn subscription(&self, id: ProviderId) -> Option<Subscription> {
        self.with(|t| t.subscriptions.get(&id).cloned())
            .ok()
            .flatten()
    }

    /// The health row of a provider.
    pub fn health(&self, id: ProviderId) -> Option<crate::domain::ProviderHealth> {
        self.with(|t| t.health.get(&id).cloned()).ok().flatten()
    }
}

/// One process owns everything in memory, under one claim.
fn owned(provider: Provider) -> OwnedProvider {
    OwnedProvider {
        provider,
        fence: Fence(1),
    }
}

#[async_trait]
impl LifecycleStore for MemoryStore {
    async fn owned_providers(&self) -> Result<Vec<OwnedProvider>, StoreError> {
        self.with(|t| {
            t.providers
                .values()
                .filter(|p| p.enabled)
                .map(|p| owned(p.clone()))
                .collect()
        })
    }

    async fn retired_with_subscription(
        &self,
    ) -> Result<Vec<(OwnedProvider, Subscription)>, StoreError> {
        self.with(|t| {
            t.providers
                .values()
                .filter(|p| !p.enabled)
                .filter_map(|p| {
                    t.subscriptions
                        .get(&p.id)
                        .map(|s| (owned(p.clone()), s.clone()))
                })
                .collect()
        })
    }

    async fn load_owned(
        &self,
        after: Option<ProviderId>,
        limit: u32,
    ) -> Result<Vec<LoadedProvider>, StoreError> {
        self.with(|t| {
            let mut page: Vec<&Provider> = t
                .providers
                .values()
                .filter(|p| p.enabled && after.is_none_or(|a| p.id > a))
                .collect();
            page.sort_by_key(|p| p.id);
            page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            page.into_iter()
                .map(|p| LoadedProvider {
                    owned: owned(p.clone()),
                    state: t.state(p.id),
                })
                .collect()
        })
    }

    async fn change_mark(&self) -> Result<Revision, StoreError> {
        self.with(|t| Revision(t.revision + 1))
    }

    async fn changed_since(&self, since: Revision) -> Result<ChangeFeed, StoreError> {
        self.with(|t| {
            let changes = t
                .revisions
                .iter()
                .filter(|(_, rev)| **rev >= since.0)
                .filter_map(|(id, _)| {
                    let (provider, deleted) = match t.providers.get(id) {
                        Some(p) => (p, false),
                        None => (t.deleted.get(id)?, true),
                    };
                    let retired = deleted || !provider.enabled;
                    Some(ProviderChange {
                        owned: owned(provider.clone()),
                        retired,
                        owned_here: true,
                        subscription: if retired {
                            t.subscriptions.get(id).cloned()
                        } else {
                            None
                        },
                    })
                })
                .collect();
            ChangeFeed {
                changes,
                upto: Revision(t.revision + 1),
            }
        })
    }

    async fn provider_state(&self, provider: ProviderId) -> Result<ProviderState, StoreError> {
        self.with(|t| t.state(provider))
    }

    async fn record_attempt(&self, _: Fence, record: &AttemptRecord) -> Result<(), StoreError> {
        self.with(|t| {
            let id = record.result.provider_id;
            if let Some(old) = &record.replaced {
                t.previous.push(old.clone());
            }
            match &record.subscription {
                Some(sub) => t.subscriptions.insert(id, sub.clone()),
                None => t.subscriptions.remove(&id),
            };
            t.health.insert(id, record.health.clone());
            t.attempts.push(record.result.clone());
        })
    }

    async fn subscription_deleted(
        &self,
        _: Fence,
        provider: ProviderId,
        external_id: &str,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            // Only the live subscription's removal changes the health row: stopping a
            // rotated-out one leaves the provider as it is.
            if t.subscriptions
                .get(&provider)
                .is_some_and(|s| s.external_id == external_id)
            {
                t.subscriptions.remove(&provider);
                if let Some(h) = t.health.get_mut(&provider) {
                    h.subscription_status = HealthState::Healthy;
                    h.subscription_expires_at = None;
                }
            }
        })
    }
}

/// An in-process event sink: a broadcast channel of renewal results.
#[derive(Clone)]
pub struct BroadcastSink(broadcast::Sender<RenewalResult>);

impl BroadcastSink {
    /// A sink buffering up to `capacity` results per slow receiver.
    pub fn new(capacity: usize) -> Self {
        Self(broadcast::channel(capacity.max(1)).0)
    }

    /// A receiver of every result published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RenewalResult> {
        self.0.subscribe()
    }
}

#[async_trait]
impl EventSink for BroadcastSink {
    async fn renewal(&self, result: &RenewalResult) {
        // No receiver is not an error: nobody is listening.
        let _ = self.0.send(result.clone());
    }
}
