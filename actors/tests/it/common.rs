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
use subkeeper_actors::domain::{Provider, ProviderId, ProviderKind, TenantId};
use subkeeper_actors::fleet::{Fleet, FleetConfig, FleetHandle};
use subkeeper_actors::lifecycle::Policy;
use subkeeper_actors::memory::{BroadcastSink, MemoryStore};
use subkeeper_actors::permits::DeadlinePermits;
use subkeeper_actors::pool::SupervisorPool;
use subkeeper_actors::ports::clock::{ScaledClock, SharedClock};
use subkeeper_actors::ports::{CallbackUrls, Ports, SubscriptionApi};
use subkeeper_actors::supervisor::SupervisorContext;

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
    paused_system().block_on(async {
        // Read tokio's clock only now, inside the paused runtime.
        let clock = origin_clock();
        let origin = clock.now();
        let api = Arc::new(api(clock.clone()));
        let store = MemoryStore::default();
        store.put_provider(provider.clone());
        let _fleet = start_fleet(api.clone(), &store, clock.clone(), policy);

        tokio::time::sleep(Duration::from_secs(u64::from(days) * 24 * 3600)).await;

        assert!(clock.now() - origin >= TimeDelta::days(days.into()));
        check(&api, &store, &provider);
    });
}

/// An actix System on a current-thread runtime that starts paused: a 24 h
/// `run_later` fires in microseconds of wall time.
pub fn paused_system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

/// The shared clock for a run, at [`ORIGIN`]; call inside the paused runtime.
pub fn origin_clock() -> SharedClock {
    Arc::new(ScaledClock::new(
        DateTime::from_timestamp(ORIGIN, 0).unwrap(),
        1,
    ))
}

/// Starts the real Fleet on `store` and `api`, `policy` for every provider kind, the
/// reconciler hourly (tests that change the store ask for a reconcile).
pub fn start_fleet(
    api: Arc<dyn SubscriptionApi>,
    store: &MemoryStore,
    clock: SharedClock,
    policy: Policy,
) -> FleetHandle {
    let ctx = SupervisorContext {
        ports: Ports {
            api,
            store: Arc::new(store.clone()),
            events: Arc::new(BroadcastSink::new(16)),
            clock,
        },
        callbacks: CallbackUrls {
            public_url: "https://subkeeper.example".into(),
        },
        permits: DeadlinePermits::new(4),
        board: HealthBoard::default(),
        attempt_timeout: Duration::from_secs(60),
        retired: None,
        lease: Default::default(),
        catch_up: None,
        progress: Default::default(),
    };
    let policies = ProviderKind::ALL
        .iter()
        .map(|k| (*k, policy.clone()))
        .collect();
    Fleet::new(
        FleetConfig {
            policies,
            reconcile_every: Duration::from_secs(3600),
            reconcile_full_every: Duration::from_secs(3600),
            leases: None,
            // Every supervisor on this paused runtime: other threads' clocks
            // would run in real time.
            pool: SupervisorPool::current(),
        },
        ctx,
    )
    .start_fleet()
}
