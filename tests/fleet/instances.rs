//! Several instances sharing one fleet, as real processes: the `subkeeper`
//! binary three times over one Postgres database and one NATS, against the
//! simulator over HTTP, all on the wall clock.
//!
//! Renewals are made to come round every minute (a lookahead one minute short of
//! Graph's lifetime), so a few minutes show several rounds. What is checked is
//! what an operator would see: who owns which provider (the `providers.owner`
//! column, the `instances` table), the subscriptions live at the simulator, and
//! the simulator's request journal.

use crate::ADMIN_TOKEN;
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
use subkeeper_testkit::sim::{self, Operation, SimServer, Simulator};
use subkeeper_testkit::wait_until;

/// Azure AD tenants the providers are spread over, so that no tenant's write
/// budget paces the test.
const TENANTS: usize = 10;
/// The lease settings of these tests' instances.
const LEASE_TTL: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One `subkeeper run` process.
struct Instance {
    child: Child,
    base_url: String,
    log: PathBuf,
}

impl Instance {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    fn log_tail(&self) -> String {
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
struct Cluster {
    // Dropped first: the processes go before their database and streams.
    instances: Vec<Instance>,
    db: TestDb,
    bus: TestBus,
    sim: Simulator,
    sim_server: Option<SimServer>,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Cluster {
    async fn new(providers: usize) -> Self {
        subkeeper::install_crypto();
        let db = TestDb::create(Purpose::Test).await.unwrap();
        seed(&db, providers).await;
        let (sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock))
            .await
            .unwrap();
        Self {
            db,
            bus: TestBus::new(Purpose::Test),
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
    async fn start_instance(&mut self) -> usize {
        self.start_instance_with(|_| {}).await
    }

    /// Starts one more instance, `tweak` adjusting its configuration, and waits
    /// until it is ready.
    async fn start_instance_with(&mut self, tweak: impl FnOnce(&mut Config)) -> usize {
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
        let child = Command::new(env!("CARGO_BIN_EXE_subkeeper"))
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(as_env(&config))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let instance = Instance {
            child,
            base_url,
            log,
        };
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
        self.instances.push(instance);
        n
    }

    async fn pool(&self) -> sqlx::PgPool {
        self.db.pool().await.unwrap()
    }

    /// The instance id (`instances.id`) of process `n`.
    async fn instance_id(&self, n: usize) -> i64 {
        sqlx::query_scalar("SELECT id FROM instances WHERE pid = $1 ORDER BY id DESC LIMIT 1")
            .bind(self.instances[n].pid())
            .fetch_one(&self.pool().await)
            .await
            .unwrap()
    }

    /// Enabled providers per owner (`None`: nobody).
    async fn owners(&self) -> HashMap<Option<i64>, i64> {
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
    fn duplicates(&self) -> Vec<String> {
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
    fn live(&self) -> HashMap<String, usize> {
        let mut live = HashMap::new();
        for s in self.sim.subscriptions() {
            *live.entry(s.resource).or_default() += 1;
        }
        live
    }

    async fn stop(mut self) {
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
fn as_env(config: &Config) -> Vec<(String, String)> {
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
async fn seed(db: &TestDb, n: usize) {
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

/// Renewals of one subscription closer together than this were made by two
/// supervisors at once (each renews once a minute).
const TOO_CLOSE: chrono::TimeDelta = chrono::TimeDelta::seconds(20);

/// Subscriptions renewed twice within [`TOO_CLOSE`], with the gap. A pair that
/// straddles `killed_at` is not "at once": a renewal the killed instance made
/// but did not live to record is made again by the adopter, which is right.
fn renewed_twice_at_once(
    sim: &Simulator,
    killed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<(String, String)> {
    let mut by_subscription: HashMap<String, Vec<chrono::DateTime<chrono::Utc>>> = HashMap::new();
    for r in sim.requests() {
        if r.operation == Operation::Renew
            && r.status < 300
            && let Some(id) = r.subscription_id
        {
            by_subscription.entry(id).or_default().push(r.at);
        }
    }
    let mut doubled = Vec::new();
    for (id, mut times) in by_subscription {
        times.sort();
        for pair in times.windows(2) {
            // A request sent just before the kill can reach the simulator's
            // journal a moment after it.
            let straddles = killed_at
                .is_some_and(|k| pair[0] <= k + chrono::TimeDelta::seconds(1) && k <= pair[1]);
            if pair[1] - pair[0] < TOO_CLOSE && !straddles {
                doubled.push((id.clone(), format!("{} and {}", pair[0], pair[1])));
            }
        }
    }
    doubled
}

/// Creates per resource that the simulator accepted.
fn creates(sim: &Simulator) -> HashMap<String, usize> {
    let mut creates = HashMap::new();
    for r in sim.requests() {
        if r.operation == Operation::Create
            && r.status < 300
            && let Some(resource) = r.resource
        {
            *creates.entry(resource).or_default() += 1;
        }
    }
    creates
}

#[actix_web::test]
async fn three_instances_share_the_fleet_and_adopt_a_killed_ones_providers() {
    const PROVIDERS: usize = 3_000;
    let mut cluster = Cluster::new(PROVIDERS).await;
    for _ in 0..3 {
        cluster.start_instance().await;
    }
    let ids: Vec<i64> =
        futures_util::future::join_all((0..3).map(|n| cluster.instance_id(n))).await;

    // Every provider registered exactly once, and the fleet spread evenly.
    wait_until(
        "3,000 providers registered and spread over three instances",
        Duration::from_secs(180),
        || async {
            let owners = cluster.owners().await;
            let live = cluster.live();
            live.len() == PROVIDERS && ids.iter().all(|id| owners.get(&Some(*id)) == Some(&1_000))
        },
    )
    .await;
    assert!(
        cluster.live().values().all(|n| *n == 1),
        "a provider has two live subscriptions: {:?}",
        cluster.duplicates()
    );

    // A round of renewals, then one instance dies mid-run.
    wait_until("renewals under way", Duration::from_secs(120), || async {
        cluster
            .sim
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::Renew)
            .count()
            >= PROVIDERS / 2
    })
    .await;
    let victim = ids[1];
    let killed_at = chrono::Utc::now();
    cluster.instances[1].signal("KILL");
    let killed = Instant::now();
    println!(
        "killed pid {} (instance {victim})",
        cluster.instances[1].pid()
    );
    wait_until(
        "the killed instance's providers adopted",
        Duration::from_secs(30),
        || async {
            let owners = cluster.owners().await;
            !owners.contains_key(&Some(victim)) && !owners.contains_key(&None)
        },
    )
    .await;
    let failover = killed.elapsed();
    println!(
        "failover: all of the killed instance's providers owned again after {:.2} s",
        failover.as_secs_f64()
    );
    assert!(
        failover <= LEASE_TTL + 3 * HEARTBEAT,
        "adoption took {failover:?}, more than the lease TTL plus three heartbeats"
    );
    let owners = cluster.owners().await;
    assert_eq!(owners.get(&Some(ids[0])), Some(&1_500), "{owners:?}");
    assert_eq!(owners.get(&Some(ids[2])), Some(&1_500), "{owners:?}");

    // Another full round of renewals on the survivors: nothing lapses (a lapsed
    // subscription is renewed into a 404 and created again).
    let renewed_since: usize = cluster
        .sim
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::Renew)
        .count();
    wait_until(
        "another round of renewals",
        Duration::from_secs(150),
        || async {
            cluster
                .sim
                .requests()
                .iter()
                .filter(|r| r.operation == Operation::Renew)
                .count()
                >= renewed_since + PROVIDERS
        },
    )
    .await;
    let live = cluster.live();
    assert_eq!(
        live.len(),
        PROVIDERS,
        "every provider has a live subscription"
    );
    assert!(
        live.values().all(|n| *n == 1),
        "a provider has two live subscriptions: {:?} (killed at {})",
        cluster.duplicates(),
        killed_at
    );
    let recreated: Vec<_> = creates(&cluster.sim)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        recreated.is_empty(),
        "subscriptions lapsed and were created again: {:?}",
        &recreated[..recreated.len().min(5)]
    );
    let doubled = renewed_twice_at_once(&cluster.sim, Some(killed_at));
    assert!(
        doubled.is_empty(),
        "renewed by two instances at once: {:?} (killed at {killed_at})",
        &doubled[..doubled.len().min(5)]
    );
    assert_eq!(
        cluster.sim.requests_dropped(),
        0,
        "the journal kept every request"
    );
    cluster.stop().await;
}

#[actix_web::test]
async fn a_paused_former_owner_writes_nothing_and_stands_down() {
    const PROVIDERS: usize = 300;
    let mut cluster = Cluster::new(PROVIDERS).await;
    cluster.start_instance().await;
    cluster.start_instance().await;
    let (a, b) = (cluster.instance_id(0).await, cluster.instance_id(1).await);
    wait_until(
        "providers registered and spread over two instances",
        Duration::from_secs(120),
        || async {
            let owners = cluster.owners().await;
            cluster.live().len() == PROVIDERS
                && owners.get(&Some(a)) == Some(&150)
                && owners.get(&Some(b)) == Some(&150)
        },
    )
    .await;
    let pool = cluster.pool().await;
    let held_by_a: HashMap<uuid::Uuid, i64> = sqlx::query_as::<_, (uuid::Uuid, i64)>(
        "SELECT id, lease_token FROM providers WHERE owner = $1",
    )
    .bind(a)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();

    // A stops past its lease; B adopts everything under new fences.
    let stopped_at = chrono::Utc::now();
    cluster.instances[0].signal("STOP");
    wait_until("B owns every provider", Duration::from_secs(30), || async {
        cluster.owners().await.get(&Some(b)) == Some(&(PROVIDERS as i64))
    })
    .await;
    let refenced: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT id, lease_token FROM providers WHERE id = ANY($1)")
            .bind(held_by_a.keys().copied().collect::<Vec<_>>())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        refenced.iter().all(|(id, token)| *token > held_by_a[id]),
        "every adopted provider carries a newer fence"
    );
    // While A sleeps, its renewals came due: B made them.
    let attempts_before: i64 = sqlx::query_scalar("SELECT count(*) FROM renewal_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();

    // A wakes up: it must notice its lease ran out and stand its supervisors down
    // rather than write under its old claims.
    cluster.instances[0].signal("CONT");
    let metrics = format!("{}/metrics", cluster.instances[0].base_url);
    let http = cluster.http.clone();
    wait_until(
        "A noticed its lease had lapsed",
        Duration::from_secs(30),
        || async {
            let Ok(r) = http.get(&metrics).send().await else {
                return false;
            };
            let text = r.text().await.unwrap_or_default();
            subkeeper_testkit::metrics::sum(
                &text,
                "subkeeper_lease_changes_total",
                &[("change", "lapsed")],
            ) >= 1.0
        },
    )
    .await;
    let log = std::fs::read_to_string(&cluster.instances[0].log).unwrap();
    assert!(
        log.contains("lease had run out"),
        "A says why it stands down:\n{}",
        cluster.instances[0].log_tail()
    );
    // Whatever A wrote after waking, it wrote under claims it holds now: no
    // provider has two live subscriptions, none lost its subscription, and no
    // renewal was made twice at once.
    wait_until(
        "the two instances balanced again",
        Duration::from_secs(60),
        || async {
            let owners = cluster.owners().await;
            owners.get(&Some(a)) == Some(&150) && owners.get(&Some(b)) == Some(&150)
        },
    )
    .await;
    let live = cluster.live();
    assert_eq!(live.len(), PROVIDERS);
    assert!(
        live.values().all(|n| *n == 1),
        "a provider has two live subscriptions: {:?}",
        cluster.duplicates()
    );
    let doubled = renewed_twice_at_once(&cluster.sim, Some(stopped_at));
    assert!(
        doubled.is_empty(),
        "renewed by two instances at once: {doubled:?}"
    );
    // What is asked of an instance for a provider another owns reaches the
    // owner: a forced renewal through A's admin API of one of B's providers,
    // and a tenant-wide one that covers both instances' providers.
    let (tenant, provider): (String, uuid::Uuid) =
        sqlx::query_as("SELECT tenant_id, id FROM providers WHERE owner = $1 ORDER BY id LIMIT 1")
            .bind(b)
            .fetch_one(&pool)
            .await
            .unwrap();
    let via_a = |path: String| {
        cluster
            .http
            .post(format!(
                "{}/api/v1/tenants/{tenant}/{path}",
                cluster.instances[0].base_url
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let one = via_a(format!("providers/{provider}/renew")).await.unwrap();
    assert_eq!(
        one.status(),
        reqwest::StatusCode::OK,
        "forced renewal of B's provider through A"
    );
    let one: serde_json::Value = one.json().await.unwrap();
    assert_eq!(one["provider_id"], provider.to_string());
    assert_eq!(one["success"], true, "{one}");
    let of_tenant: i64 =
        sqlx::query_scalar("SELECT count(*) FROM providers WHERE tenant_id = $1 AND enabled")
            .bind(&tenant)
            .fetch_one(&pool)
            .await
            .unwrap();
    let all = via_a("renew".into()).await.unwrap();
    assert_eq!(all.status(), reqwest::StatusCode::OK);
    let all: serde_json::Value = all.json().await.unwrap();
    let results = all
        .as_array()
        .or_else(|| all["results"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        results.len() as i64,
        of_tenant,
        "every provider of the tenant, on either instance: {all}"
    );
    let attempts_after: i64 = sqlx::query_scalar("SELECT count(*) FROM renewal_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(attempts_after >= attempts_before);
    pool.close().await;
    cluster.stop().await;
}

#[actix_web::test]
async fn sigterm_leaves_rotation_first_and_hands_the_providers_over_at_once() {
    const PROVIDERS: usize = 300;
    let mut cluster = Cluster::new(PROVIDERS).await;
    cluster
        .start_instance_with(|c| {
            c.shutdown_drain_seconds = 2;
            c.shutdown_timeout_seconds = 20;
        })
        .await;
    cluster.start_instance().await;
    let (a, b) = (cluster.instance_id(0).await, cluster.instance_id(1).await);
    wait_until(
        "providers registered and spread over two instances",
        Duration::from_secs(120),
        || async {
            let owners = cluster.owners().await;
            cluster.live().len() == PROVIDERS
                && owners.get(&Some(a)) == Some(&150)
                && owners.get(&Some(b)) == Some(&150)
        },
    )
    .await;

    cluster.instances[0].signal("TERM");
    let terminated = Instant::now();
    // Out of rotation at once, while webhooks are still taken during the drain.
    let base = cluster.instances[0].base_url.clone();
    let ready = cluster
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "shutting_down");
    let validation = cluster
        .http
        .post(format!(
            "{base}/webhooks/microsoft?validationToken=still-here"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(validation.status(), reqwest::StatusCode::OK);
    assert_eq!(validation.text().await.unwrap(), "still-here");

    // Exits by itself, cleanly, within its deadline, having released its leases:
    // B owns everything sooner than a crash's lease TTL would allow.
    let status = loop {
        if let Some(status) = cluster.instances[0].child.try_wait().unwrap() {
            break status;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(25),
            "still running after its 20 s deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        cluster.instances[0].log_tail()
    );
    let pool = cluster.pool().await;
    let leaving: bool = sqlx::query_scalar("SELECT leaving FROM instances WHERE id = $1")
        .bind(a)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(leaving, "the instance marked itself as leaving");
    wait_until("B owns every provider", Duration::from_secs(10), || async {
        cluster.owners().await.get(&Some(b)) == Some(&(PROVIDERS as i64))
    })
    .await;
    let handed_over = terminated.elapsed();
    println!(
        "graceful hand-over: B owns all after {:.2} s (2 s of drain included)",
        handed_over.as_secs_f64()
    );
    assert!(
        handed_over < Duration::from_secs(2) + LEASE_TTL,
        "released providers were taken over at B's next heartbeat, not after a TTL"
    );
    let log = std::fs::read_to_string(&cluster.instances[0].log).unwrap();
    assert!(
        log.contains("left the fleet"),
        "{}",
        cluster.instances[0].log_tail()
    );
    assert!(cluster.live().values().all(|n| *n == 1));
    pool.close().await;
    cluster.stop().await;
}
