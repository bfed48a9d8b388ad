//! A retired provider stays retired: once its subscription is deleted at the
//! provider, its supervisor never calls the provider again — also when a tenant-wide
//! forced renewal still holds the supervisor's address while it retires (the renew
//! waits for a slow sibling), which used to restart the actor and loop through
//! create/delete cycles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subkeeper_actors::domain::{ErrorClass, Provider, ProviderId, ProviderKind, Subscription};
use subkeeper_actors::lifecycle::Policy;
use subkeeper_actors::memory::MemoryStore;
use subkeeper_actors::ports::{ApiError, CreateRequest, ProviderSubscription, SubscriptionApi};

/// One provider call as the provider saw it.
#[derive(Debug, Clone)]
struct Call {
    provider: ProviderId,
    op: &'static str,
}

/// Grants every request; renewals of `slow` take an hour (past the attempt
/// timeout), those of `vanished` answer 404 after 30 s (the subscription is gone
/// at the provider).
struct Recording {
    slow: ProviderId,
    vanished: Option<ProviderId>,
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    fn record(&self, provider: &Provider, op: &'static str) {
        self.calls.lock().unwrap().push(Call {
            provider: provider.id,
            op,
        });
    }

    fn calls_for(&self, id: ProviderId) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.provider == id)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl SubscriptionApi for Recording {
    fn max_lifetime(&self, _: &Provider) -> TimeDelta {
        TimeDelta::days(3)
    }

    async fn create(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        self.record(provider, "create");
        // A create takes a minute: a supervisor that loops through creates lets
        // paused time advance, so the test ends (and fails) instead of spinning.
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(ProviderSubscription {
            external_id: uuid::Uuid::new_v4().to_string(),
            resource_id: None,
            expires_at: request.expires_at,
            client_state: None,
            history_id: None,
        })
    }

    async fn renew(
        &self,
        provider: &Provider,
        sub: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        self.record(provider, "renew");
        if provider.id == self.slow {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if Some(provider.id) == self.vanished {
            // Within the attempt timeout (60 s), so the 404 is what comes back.
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Err(ApiError::new(ErrorClass::NotFound, "ResourceNotFound").with_status(404));
        }
        Ok(ProviderSubscription {
            external_id: sub.external_id.clone(),
            resource_id: None,
            expires_at,
            client_state: None,
            history_id: None,
        })
    }

    async fn delete(&self, provider: &Provider, _: &Subscription) -> Result<(), ApiError> {
        self.record(provider, "delete");
        Ok(())
    }
}

#[test]
fn a_provider_deleted_during_a_tenant_wide_renew_never_calls_its_provider_again() {
    common::paused_system().block_on(async {
        let clock = common::origin_clock();
        let slow = common::provider(ProviderKind::GraphMail, "slow", "users/slow/messages");
        let gone = common::provider(ProviderKind::GraphMail, "gone", "users/gone/messages");
        let api = Arc::new(Recording {
            slow: slow.id,
            vanished: None,
            calls: Mutex::default(),
        });
        let store = MemoryStore::default();
        store.put_provider(slow.clone());
        store.put_provider(gone.clone());
        let fleet = common::start_fleet(api.clone(), &store, clock.clone(), Policy::default());

        // Both register.
        while store.subscription(slow.id).is_none() || store.subscription(gone.id).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A tenant-wide renew: `gone` answers at once, `slow` holds the renew (and the
        // fleet's answer) for an hour.
        let renew = actix::spawn({
            let fleet = fleet.clone();
            let tenant = slow.tenant.clone();
            async move { fleet.renew_all(tenant, None).await }
        });
        while !api.calls_for(gone.id).iter().any(|c| c.op == "renew") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // `gone` is deleted while the renew still waits on `slow`.
        store.delete_provider(gone.id);
        fleet.reconcile();
        while !api.calls_for(gone.id).iter().any(|c| c.op == "delete") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // The renew answers for both: `gone` renewed before it was deleted.
        let results = renew.await.unwrap().unwrap();
        assert_eq!(results.len(), 2);
        // Days pass: the live provider renews, the deleted one stays silent.
        tokio::time::sleep(Duration::from_secs(3 * 24 * 3600)).await;

        let calls = api.calls_for(gone.id);
        let first_delete = calls.iter().position(|c| c.op == "delete").unwrap();
        let after = &calls[first_delete..];
        let ops: Vec<&str> = after.iter().map(|c| c.op).collect();
        assert_eq!(
            ops,
            ["delete"],
            "the deleted provider called its provider after its subscription was deleted: {after:?}"
        );
        assert!(store.subscription(gone.id).is_none());
        let live_renewals = api
            .calls_for(slow.id)
            .iter()
            .filter(|c| c.op == "renew")
            .count();
        assert!(
            live_renewals >= 2,
            "the live provider kept renewing ({live_renewals})"
        );
    });
}

#[test]
fn a_provider_deleted_while_its_renew_finds_the_subscription_gone_is_not_recreated() {
    common::paused_system().block_on(async {
        let clock = common::origin_clock();
        let gone = common::provider(ProviderKind::GraphMail, "gone", "users/gone/messages");
        let api = Arc::new(Recording {
            slow: ProviderId::new(),
            vanished: Some(gone.id),
            calls: Mutex::default(),
        });
        let store = MemoryStore::default();
        store.put_provider(gone.clone());
        let fleet = common::start_fleet(api.clone(), &store, clock.clone(), Policy::default());
        while store.subscription(gone.id).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A forced renew that will answer 404 after 30 s; the provider is
        // deleted meanwhile. A 404 on renew normally means "recreate now".
        let renew = actix::spawn({
            let fleet = fleet.clone();
            let (tenant, id) = (gone.tenant.clone(), gone.id);
            async move { fleet.renew(tenant, id).await }
        });
        while !api.calls_for(gone.id).iter().any(|c| c.op == "renew") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.delete_provider(gone.id);
        fleet.reconcile();
        let _ = renew.await;
        tokio::time::sleep(Duration::from_secs(3 * 24 * 3600)).await;

        let calls = api.calls_for(gone.id);
        let renew_at = calls.iter().position(|c| c.op == "renew").unwrap();
        let after: Vec<&str> = calls[renew_at + 1..].iter().map(|c| c.op).collect();
        assert!(
            after.is_empty(),
            "the deleted provider called its provider after the 404: {after:?} (all: {calls:?})"
        );
    });
}
