//! The harness the thirty-day tests share: an actix System on a current-thread
//! runtime that starts paused, the real Fleet and ProviderSupervisor wired to the
//! memory store and a provider stand-in, and a sleep through the simulated days.
//!
//! Owns the wiring only; each test file owns its stand-in (the provider's rules) and
//! its assertions. The stand-ins are in-process on the shared clock: real sockets
//! would let tokio's auto-advance jump the clock while a query is in flight.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta};
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::board::HealthBoard;
use subkeeper_actors::clock::{ScaledClock, SharedClock};
use subkeeper_actors::domain::{Provider, ProviderId, ProviderKind, TenantId};
use subkeeper_actors::fleet::{Fleet, FleetConfig};
use subkeeper_actors::lifecycle::Policy;
use subkeeper_actors::memory::{BroadcastSink, MemoryStore};
use subkeeper_actors::ports::{CallbackUrls, Ports, SubscriptionApi};
use subkeeper_actors::supervisor::SupervisorContext;
use tokio::sync::Semaphore;

/// Domain time the run starts at, in Unix seconds: fixed so runs are reproducible.
const ORIGIN: i64 = 1_795_000_000;

/// An enabled provider of `kind` for tenant `acme`, with no stored credentials.
pub fn provider(kind: ProviderKind, display_name: &str, resource: &str) -> Provider {
    Provider {
        id: ProviderId::new(),
        tenant: TenantId::parse("acme").unwrap(),
        kind,
        display_name: display_name.into(),
        resource: resource.into(),
        credentials_id: None,
        enabled: true,
        credentials_version: 1,
    }
}

/// Runs `provider` through the Fleet for `days` simulated days under `policy` (for
/// every provider kind), against the stand-in `api` builds on the shared clock. Then,
/// still inside the paused runtime and with the fleet alive, hands the stand-in, the
/// store and the provider to `check`.
pub fn run_for_days<A: SubscriptionApi>(
    days: u32,
    provider: Provider,
    policy: Policy,
    api: impl FnOnce(SharedClock) -> A,
    check: impl FnOnce(&A, &MemoryStore, &Provider),
) {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(async {
        let origin = DateTime::from_timestamp(ORIGIN, 0).unwrap();
        // Read tokio's clock only now, inside the paused runtime.
        let clock: SharedClock = Arc::new(ScaledClock::new(origin, 1));
        let api = Arc::new(api(clock.clone()));
        let store = MemoryStore::default();
        store.put_provider(provider.clone());
        let ctx = SupervisorContext {
            ports: Ports {
                api: api.clone(),
                store: Arc::new(store.clone()),
                events: Arc::new(BroadcastSink::new(16)),
                clock: clock.clone(),
            },
            callbacks: CallbackUrls {
                public_url: "https://subkeeper.example".into(),
            },
            permits: Arc::new(Semaphore::new(4)),
            board: HealthBoard::default(),
            attempt_timeout: Duration::from_secs(60),
            retired: None,
        };
        let policies = ProviderKind::ALL
            .iter()
            .map(|k| (*k, policy.clone()))
            .collect();
        let _fleet = Fleet::new(
            FleetConfig {
                policies,
                reconcile_every: Duration::from_secs(3600),
            },
            ctx,
        )
        .start_fleet();

        tokio::time::sleep(Duration::from_secs(u64::from(days) * 24 * 3600)).await;

        assert!(clock.now() - origin >= TimeDelta::days(days.into()));
        check(&api, &store, &provider);
    });
}
