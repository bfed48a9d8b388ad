//! Thirty simulated days of one provider's life under paused tokio time: every
//! renewal lands inside `[expires_at − lookahead − jitter, expires_at)`, the
//! subscription never lapses, and there are never two provider calls in flight.
//!
//! Runs the real Fleet and ProviderSupervisor through the shared harness
//! (`common.rs`): paused time, so a 6-day `run_later` fires in microseconds,
//! against a Graph-like API that expires subscriptions on the same clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use subkeeper_actors::domain::{ErrorClass, Provider, ProviderKind, Subscription};
use subkeeper_actors::lifecycle::Policy;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{ApiError, CreateRequest, ProviderSubscription, SubscriptionApi};

/// Graph's Outlook limit as the live service enforces it.
const MAX_LIFETIME: TimeDelta = TimeDelta::minutes(10_070);

#[derive(Debug, Clone)]
struct Call {
    at: DateTime<Utc>,
    op: &'static str,
    /// Expiry of the live subscription when the call arrived (renewals only).
    expiring: Option<DateTime<Utc>>,
}

/// Expires subscriptions on the shared clock, answers 404 for an expired one, and
/// counts calls in flight.
struct ClockedGraph {
    clock: SharedClock,
    subs: Mutex<HashMap<String, DateTime<Utc>>>,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl ClockedGraph {
    async fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // A provider call takes time; another call could interleave here if the
        // supervisor allowed it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SubscriptionApi for ClockedGraph {
    fn max_lifetime(&self, _: &Provider) -> TimeDelta {
        MAX_LIFETIME - TimeDelta::minutes(5)
    }

    async fn create(
        &self,
        _: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        self.enter().await;
        let now = self.clock.now();
        self.calls.lock().unwrap().push(Call {
            at: now,
            op: "create",
            expiring: None,
        });
        let result = if request.expires_at > now + MAX_LIFETIME {
            Err(ApiError::new(
                ErrorClass::Permanent,
                "expiry beyond the maximum",
            ))
        } else {
            let id = uuid::Uuid::new_v4().to_string();
            self.subs
                .lock()
                .unwrap()
                .insert(id.clone(), request.expires_at);
            Ok(ProviderSubscription {
                external_id: id,
                resource_id: None,
                expires_at: request.expires_at,
                client_state: None,
                history_id: None,
            })
        };
        self.leave();
        result
    }

    async fn renew(
        &self,
        _: &Provider,
        sub: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        self.enter().await;
        let now = self.clock.now();
        let live = self
            .subs
            .lock()
            .unwrap()
            .get(&sub.external_id)
            .copied()
            .filter(|e| *e > now);
        self.calls.lock().unwrap().push(Call {
            at: now,
            op: "renew",
            expiring: live,
        });
        let result = match live {
            None => Err(ApiError::new(ErrorClass::NotFound, "ResourceNotFound").with_status(404)),
            Some(_) if expires_at > now + MAX_LIFETIME => {
                Err(ApiError::new(ErrorClass::Permanent, "too far"))
            }
            Some(_) => {
                self.subs
                    .lock()
                    .unwrap()
                    .insert(sub.external_id.clone(), expires_at);
                Ok(ProviderSubscription {
                    external_id: sub.external_id.clone(),
                    resource_id: None,
                    expires_at,
                    client_state: None,
                    history_id: None,
                })
            }
        };
        self.leave();
        result
    }

    async fn delete(&self, _: &Provider, sub: &Subscription) -> Result<(), ApiError> {
        self.subs.lock().unwrap().remove(&sub.external_id);
        Ok(())
    }
}

#[test]
fn thirty_days_of_renewals_never_lapse_and_never_overlap() {
    let policy = Policy::default();
    common::run_for_days(
        30,
        common::provider(ProviderKind::GraphMail, "alice", "users/alice/messages"),
        policy.clone(),
        |clock| ClockedGraph {
            clock,
            subs: Mutex::default(),
            calls: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        },
        |graph, store, provider| {
            let now = graph.clock.now();
            let calls = graph.calls.lock().unwrap().clone();
            assert_eq!(calls.first().map(|c| c.op), Some("create"));
            let renewals: Vec<&Call> = calls.iter().filter(|c| c.op == "renew").collect();
            // 30 days at one renewal per ~6 days.
            assert!(
                (4..=6).contains(&renewals.len()),
                "{} renewals: {calls:?}",
                renewals.len()
            );
            for call in &renewals {
                let expiring = call
                    .expiring
                    .expect("renewed a subscription that had lapsed");
                assert!(call.at < expiring, "renewed after expiry: {call:?}");
                assert!(
                    call.at >= expiring - policy.lookahead - policy.jitter_max,
                    "renewed before the window: {call:?}"
                );
                assert!(
                    call.at <= expiring - policy.lookahead + TimeDelta::seconds(1),
                    "renewed late in the window: {call:?}"
                );
            }
            assert_eq!(
                calls.len(),
                renewals.len() + 1,
                "no recreate was ever needed: {calls:?}"
            );
            assert_eq!(graph.max_in_flight.load(Ordering::SeqCst), 1);
            let live = store
                .subscription(provider.id)
                .expect("a live subscription");
            assert!(
                live.expires_at > now + policy.lookahead,
                "subscription about to lapse at the end"
            );
            let attempts = store.attempts();
            assert_eq!(attempts.len(), calls.len());
            assert!(attempts.iter().all(|a| a.success));
        },
    );
}
