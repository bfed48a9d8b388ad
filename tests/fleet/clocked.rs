//! The service and the simulator on one clock (the simulator's, as the demo
//! and the fleet bench share it) running faster than real time, over real
//! Postgres and NATS: what the fleet tests that need simulated hours start
//! from (the shared harness runs on the wall clock).

use crate::ADMIN_TOKEN;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::RunOptions;
use subkeeper_actors::ports::clock::{ScaledClock, SharedClock, SystemClock};
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::Admin;
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, SimServer, Simulator};

/// The service and the simulator on one clock running `speed`× real time.
pub struct OnOneClock {
    pub db: TestDb,
    _bus: TestBus,
    pub sim: Simulator,
    sim_server: Option<SimServer>,
    service: Option<Service>,
    base_url: String,
    http: reqwest::Client,
    pub admin: Admin,
}

impl OnOneClock {
    /// Starts the simulator on a clock `speed`× real time and the service on
    /// the simulator's clock, over `db`; `tweak` adjusts the configuration.
    pub async fn start(db: TestDb, speed: u32, tweak: impl FnOnce(&mut subkeeper::Config)) -> Self {
        subkeeper::install_crypto();
        let bus = TestBus::new(Purpose::Test);
        let base: SharedClock = if speed == 1 {
            Arc::new(SystemClock)
        } else {
            Arc::new(ScaledClock::new(Utc::now(), speed))
        };
        let (sim, sim_server) = sim::start(sim::test_config(), base).await.unwrap();
        let (listener, base_url) = service::bind_local().unwrap();
        let mut config = service::config(&db, &bus, &sim_server, &base_url);
        config.admin_token = Some(ADMIN_TOKEN.into());
        // No webhooks flow here: nothing is silent for that.
        config.mail_silence_seconds = 0;
        config.calendar_silence_seconds = 0;
        tweak(&mut config);
        config.validate().unwrap();
        let service = Service::spawn(
            config,
            listener,
            base_url.clone(),
            RunOptions {
                clock: Some(sim.clock()),
                ..RunOptions::default()
            },
        );
        let http = reqwest::Client::new();
        service
            .wait_ready(&http, Duration::from_secs(30))
            .await
            .unwrap();
        Self {
            admin: Admin::new(&http, &base_url, ADMIN_TOKEN),
            db,
            _bus: bus,
            sim,
            sim_server: Some(sim_server),
            service: Some(service),
            base_url,
            http,
        }
    }

    pub async fn stop(mut self) {
        if let (Some(service), Some(server)) = (self.service.take(), self.sim_server.take()) {
            service.stop_with(server).await.unwrap();
        }
    }

    pub async fn metrics(&self) -> String {
        subkeeper_testkit::metrics::scrape(&self.http, &self.base_url)
            .await
            .unwrap()
    }

    /// The live subscriptions at the simulator on `resources`, by resource.
    pub fn live_on(&self, resources: &HashSet<String>) -> Vec<(String, DateTime<Utc>)> {
        self.sim
            .subscriptions()
            .into_iter()
            .filter(|s| resources.contains(&s.resource))
            .map(|s| (s.resource, s.expiration_date_time))
            .collect()
    }
}
