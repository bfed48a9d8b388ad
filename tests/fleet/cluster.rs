//! Several `subkeeper run` processes over one Postgres database and one NATS,
//! against the simulator over HTTP, all on the wall clock: what the
//! multi-instance tests (`tests/fleet/instances.rs`) and the instances bench
//! (`benches/instances.rs`, which includes this file) start and read.
//!
//! Renewals come round every minute (a lookahead one minute short of Graph's
//! lifetime) unless a caller says otherwise. What it reads is what an operator
//! would: who owns which provider (the `providers.owner` column, the
//! `instances` table) and the subscriptions live at the simulator.
#![allow(dead_code)] // each includer uses its own part

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkeeper::Config;
use subkeeper::store::{Db, Location, Store};
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service;
use subkeeper_testkit::sim::{self, SimServer, Simulator};

/// The admin token of these instances.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Azure AD tenants the providers are spread over, so that no tenant's write
/// budget paces the test.
pub const TENANTS: usize = 10;
/// The lease settings of these tests' instances.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// One `subkeeper run` process.
pub struct Instance {
    pub child: Child,
    pub base_url: String,
    pub log: PathBuf,
    /// Started under a wrapper (a profiler) in a process group of its own:
    /// signals go to the whole group, so the service gets them too.
    pub wrapped: bool,
}

impl Instance {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let target = if self.wrapped {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let status = Command::new("kill")
            .args([format!("-{signal}"), "--".into(), target])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fleet under test: the database, the bus, the simulator, the instances.
pub struct Cluster {
    // Dropped first: the processes go before their database and streams.
    pub instances: Vec<Instance>,
    pub db: TestDb,
    pub bus: TestBus,
    pub sim: Simulator,
    pub sim_server: Option<SimServer>,
    pub dir: PathBuf,
    pub http: reqwest::Client,
}

impl Cluster {
    pub async fn new(providers: usize) -> Self {
        let db = TestDb::create(Purpose::Test).await.unwrap();
        Self::on(db, TestBus::new(Purpose::Test), providers).await
    }

    /// A cluster on a database and bus of the caller's (such as servers of the
    /// test's own that it restarts), `providers` seeded.
    pub async fn on(db: TestDb, bus: TestBus, providers: usize) -> Self {
        subkeeper::install_crypto();
        seed(&db, providers).await;
        let (sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock))
            .await
            .unwrap();
        Self {
            db,
            bus,
            sim,
            sim_server: Some(sim_server),
            instances: Vec::new(),
            dir: {
                let dir = std::env::temp_dir()
                    .join(format!("subkeeper-instances-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&dir).unwrap();
                dir
            },
            http: reqwest::Client::new(),
        }
    }

    /// Starts one more instance and waits until it is ready.
    pub async fn start_instance(&mut self) -> usize {
        self.start_instance_with(|_| {}).await
    }

    /// Starts one more instance, `tweak` adjusting its configuration, and waits
    /// until it is ready.
    pub async fn start_instance_with(&mut self, tweak: impl FnOnce(&mut Config)) -> usize {
        let n = self.spawn_instance_with(tweak);
        self.wait_ready(n).await;
        n
    }

    /// Starts one more instance without waiting for it; its index.
    pub fn spawn_instance_with(&mut self, tweak: impl FnOnce(&mut Config)) -> usize {
        let (listener, base_url) = service::bind_local().unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = self.sim_server.as_ref().unwrap();
        let mut config = service::config(&self.db, &self.bus, server, &base_url);
        config.http_addr = addr;
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.lease_ttl_seconds = LEASE_TTL.as_secs();
        config.lease_heartbeat_seconds = HEARTBEAT.as_secs();
        // Renew one minute after each create or renewal.
        config.renewal_lookahead_minutes =
            (subkeeper::providers::graph::OUTLOOK_MAX_MINUTES - 5) - 1;
        config.renewal_jitter_seconds = 10;
        config.mail_silence_seconds = 0;
        config.calendar_silence_seconds = 0;
        config.reconcile_interval_seconds = 5;
        config.log_filter = "info,sqlx=warn,actix_server=warn".into();
        tweak(&mut config);
        config.validate().unwrap();
        let n = self.instances.len();
        let log = self.dir.join(format!("instance-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        // A profiler around the service (benches: `SUBKEEPER_BENCH_WRAP=heaptrack`),
        // in a process group of its own so that signals reach the service.
        // `pid()` is then the wrapper's: its RSS and CPU are not the service's.
        let wrap = std::env::var("SUBKEEPER_BENCH_WRAP").unwrap_or_default();
        let wrapped = !wrap.is_empty();
        let mut command = if wrapped {
            let mut c = Command::new(wrap);
            c.arg(env!("CARGO_BIN_EXE_subkeeper"));
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_subkeeper"))
        };
        let child = command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(as_env(&config))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.instances.push(Instance {
            child,
            base_url,
            log,
            wrapped,
        });
        n
    }

    /// Waits until instance `n` answers `/readyz` with 200.
    pub async fn wait_ready(&self, n: usize) {
        let instance = &self.instances[n];
        let ready = format!("{}/readyz", instance.base_url);
        let http = self.http.clone();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(&ready).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "instance {n} not ready within 60 s:\n{}",
                instance.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        self.db.pool().await.unwrap()
    }

    /// The instance id (`instances.id`) of process `n`.
    pub async fn instance_id(&self, n: usize) -> i64 {
        sqlx::query_scalar("SELECT id FROM instances WHERE pid = $1 ORDER BY id DESC LIMIT 1")
            .bind(self.instances[n].pid())
            .fetch_one(&self.pool().await)
            .await
            .unwrap()
    }

    /// Enabled providers per owner (`None`: nobody).
    pub async fn owners(&self) -> HashMap<Option<i64>, i64> {
        sqlx::query_as::<_, (Option<i64>, i64)>(
            "SELECT owner, count(*) FROM providers WHERE enabled GROUP BY owner",
        )
        .fetch_all(&self.pool().await)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    /// The live subscriptions of resources that have more than one, for a
    /// failure message: who made each (its notification URL names the
    /// instance) and when.
    pub fn duplicates(&self) -> Vec<String> {
        let live = self.live();
        let ports: Vec<(String, i32)> = self
            .instances
            .iter()
            .map(|i| (i.base_url.clone(), i.pid()))
            .collect();
        self.sim
            .subscriptions()
            .into_iter()
            .filter(|s| live.get(&s.resource).is_some_and(|n| *n > 1))
            .take(6)
            .map(|s| {
                let by = ports
                    .iter()
                    .find(|(url, _)| s.notification_url.starts_with(url))
                    .map_or(0, |(_, pid)| *pid);
                format!("{} created {} by pid {by}", s.resource, s.created_at)
            })
            .collect()
    }

    /// Live subscriptions at the simulator, by resource.
    pub fn live(&self) -> HashMap<String, usize> {
        let mut live = HashMap::new();
        for s in self.sim.subscriptions() {
            *live.entry(s.resource).or_default() += 1;
        }
        live
    }

    pub async fn stop(mut self) {
        for mut i in self.instances.drain(..) {
            if i.child.try_wait().unwrap().is_none() {
                i.signal("TERM");
                let _ = i.child.wait();
            }
        }
        if let Some(server) = self.sim_server.take() {
            sim::stop(server, Duration::from_secs(10)).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `SUBKEEPER_*` variables that configure a process as `config` says.
pub fn as_env(config: &Config) -> Vec<(String, String)> {
    let serde_json::Value::Object(fields) = serde_json::to_value(config).unwrap() else {
        panic!("the configuration serializes as a map");
    };
    fields
        .into_iter()
        .filter_map(|(key, value)| {
            let value = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
                other => panic!("setting {key} is not a scalar: {other}"),
            };
            Some((format!("SUBKEEPER_{}", key.to_uppercase()), value))
        })
        .collect()
}

/// Seeds `n` Graph mail providers over [`TENANTS`] tenants by SQL (the admin API
/// would take minutes).
pub async fn seed(db: &TestDb, n: usize) {
    let store = Store::connect(
        &Location::Postgres(db.url.clone()),
        2,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let Db::Postgres(pool) = store.db() else {
        panic!("seeded on Postgres");
    };
    sqlx::query(
        "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, scope) \
         SELECT gen_random_uuid(), 'tenant-' || t, 'client_credentials', 'aad-' || t, $2, $3, \
                'https://graph.microsoft.com/.default' \
         FROM generate_series(0, $1 - 1) AS t",
    )
    .bind(TENANTS as i64)
    .bind(GRAPH_CLIENT_ID)
    .bind(GRAPH_CLIENT_SECRET)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id) \
         SELECT gen_random_uuid(), c.tenant_id, 'graph_mail', 'mailbox ' || i, \
                'users/mbx' || i || '@' || c.authority_tenant || '.example/messages', c.id \
         FROM generate_series(0, $1 - 1) AS i \
         JOIN oauth_credentials c ON c.tenant_id = 'tenant-' || (i % $2)",
    )
    .bind(n as i64)
    .bind(TENANTS as i64)
    .execute(pool)
    .await
    .unwrap();
    pool.close().await;
}
