//! Webhook intake benchmark: `POST /webhooks/microsoft` under load from `wrk`, against
//! the raw async-nats JetStream publish rate measured on the same machine in the
//! same run.
//!
//! One run:
//! 1. creates a fresh database `subkeeper_bench_<random>` and fresh NATS subject and
//!    stream prefixes, starts the Graph simulator and the service in this process on
//!    127.0.0.1:0 (`subkeeper::run_with`, production defaults otherwise: one HTTP
//!    worker per core), creates `--providers` Graph mail providers through the admin
//!    API and waits until each has a live subscription, then reads their
//!    subscription ids and clientStates from the `subscriptions` table;
//! 2. **intake**: for each `--connections` level, `wrk` (a child process, its Lua
//!    script generated into a temp dir) posts Graph change-notification collections
//!    of `--items` items (≈ 1 KB each: the shape of
//!    `tests/schemas/graph.ChangeNotificationCollection.schema.json` with Outlook's
//!    152-character message ids; every item id unique, so JetStream's dedup never
//!    short-circuits), spread over the providers, for `--duration-secs` after a
//!    `--warmup-secs` warm-up that also fills the route cache;
//! 3. **raw JetStream**: publishes with async-nats (one client, driven by a
//!    current-thread runtime on a thread of its own, as the service drives its
//!    client on its main thread) of an envelope of the size intake publishes, to the
//!    same webhook stream, with unique 64-character `Nats-Msg-Id`s, by N concurrent
//!    publishers each awaiting its ack, for the same duration — N = the connection
//!    count, and N = connections × items (intake keeps that many publishes in
//!    flight: a request publishes all its items at once and awaits every ack);
//! 4. experiments at the highest connection count: an empty collection (the HTTP
//!    layer alone) and one item per request; the cost of a route-cache miss (the
//!    store's route query, which every item would pay with a cold cache); and the
//!    CPU cost of intake's per-item steps (parse, clone, message id, envelope),
//!    timed in-process;
//! 5. prints the tables, the ratios intake notifications/s ÷ raw publishes/s, CPU per
//!    component per phase, and checks that nothing was lost or duplicated.
//!
//! **The service's notification consumer.** The service consumes the webhook stream
//! it writes (durable `{prefix}_NOTIFICATIONS`: one Postgres write per batch, one
//! domain event and one ack per message), on the same NATS connection and thread as
//! intake's publishes. It would consume the raw publishes too, and it falls behind
//! under this load, so its work spills from one phase into the next. The first part
//! of the run therefore holds it off: before the service starts, the bench creates
//! the stream and the service's durable with a filter that matches nothing and the
//! deliver policy `new`. NATS does not let a durable's deliver policy change, so it
//! refuses the service's create (`All`, its filter) as a whole, and the service uses
//! that durable as it is (it logs a warning saying so): it consumes nothing. The
//! second part deletes that durable, the service re-creates its own and consumes as
//! in production, and intake and raw are measured again. (Should a server accept
//! the change, the report says the consumer ran in part A too.) Between phases the
//! bench waits until the consumer has
//! caught up.
//!
//! **Checks.** After each phase the stream must hold exactly what the phase added:
//! the change of the service's accepted-notification counter (intake) or the acks
//! (raw); every intake item is read back (none twice, every request whole, as many
//! whole requests as wrk got answers, plus at most one in flight per connection when
//! wrk stopped), after the outbox relay has republished whatever went to the outbox.
//! Publishes whose ack took longer than `webhook_publish_timeout_ms` (they go to
//! the outbox; NATS did not go down) are reported as notes: nothing is lost, but
//! it shows where the latency budget runs out. Then the stream is purged, so it never grows past one phase (its size limit is
//! reserved up front). At the end, the stream's last sequence must equal everything
//! accepted plus everything acked, and the outbox must be empty. The streams and
//! the database are deleted at the end, also on error.
//!
//! Everything (wrk, the service, the simulator, Postgres, nats-server) shares this
//! machine's cores; the CPU tables say who used them, including other processes.
//!
//! The plumbing (database, NATS prefixes, simulator and service start/stop, the
//! admin API, CPU counters, percentiles) is the shared test kit's,
//! `subkeeper-testkit`.
//!
//! Run: `cargo bench --bench webhook_intake -- [--connections 16,64] [--duration-secs 15]`.
//! Needs Postgres on 127.0.0.1:5432, NATS with JetStream on 127.0.0.1:4222
//! (`SUBKEEPER_TEST_DATABASE_URL` / `SUBKEEPER_TEST_NATS_URL` to change) and `wrk`
//! (`apt-get install -y wrk`). Logs (the production filter, `RUST_LOG` to change) go
//! to stderr; the report to stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use actix_web::web::Bytes;
use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkeeper::bus::nats::consumer::ConsumerSpec;
use subkeeper::bus::{StreamLimits, Topology};
use subkeeper::store::{Db, Location, Store};
use subkeeper::{Config, RunOptions};
use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId, WebhookEnvelope};
use subkeeper_actors::ports::IntakeStore as _;
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{Admin, graph_mail_provider};
use subkeeper_testkit::bus::{TestBus, consumer_backlog, nats_url};
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::proc::{self, CpuSample, Machine};
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim;
use subkeeper_testkit::stats::Distribution;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// Tenants the providers are spread over.
const TENANTS: u32 = 4;

/// Length of the fixed, per-mailbox part of a message id; the unique part follows,
/// then `AAA=`: 152 characters in all, like Outlook's.
const ID_PREFIX_LEN: usize = 129;

/// Length of the unique part of a message id: run tag (3), wrk thread (2), request
/// counter (12), item (2).
const ID_CORE_LEN: usize = 19;

#[derive(Parser, Debug, Clone)]
#[command(about = "webhook intake vs raw JetStream publish")]
struct Args {
    /// wrk connection counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 64])]
    connections: Vec<u32>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Warm-up seconds before each measured phase (checked, not reported).
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Notifications per request.
    #[arg(long, default_value_t = 10)]
    items: u32,
    /// Graph mail providers (live subscriptions) the notifications are spread over.
    #[arg(long, default_value_t = 20)]
    providers: u32,
    /// Size limit of this run's webhook stream, MiB; the stream is purged after each
    /// phase, so it must hold one phase (15 s of raw publishing at 100,000/s is
    /// 1.5 M messages, about 2.1 GB stored). NATS reserves it from its JetStream
    /// storage up front; a full stream refuses publishes and the checks fail.
    #[arg(long, default_value_t = 8192)]
    stream_mib: u64,
    /// Skip the experiments (empty collection, 1 item per request, route misses,
    /// per-item steps).
    #[arg(long)]
    no_experiments: bool,
    /// Skip the second part (intake and raw again with the service's consumer on).
    #[arg(long)]
    no_consumer_part: bool,
    /// Skip reading every intake message back (the counts are still checked).
    #[arg(long)]
    no_read_back: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| Config::default().log_filter);
    subkeeper::telemetry::init_logging("text", &filter);
    actix_rt::System::new().block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    subkeeper::install_crypto();
    if args.connections.is_empty() || args.connections.contains(&0) {
        bail!("--connections needs positive counts");
    }
    if args.providers == 0 || args.threads == 0 || args.duration_secs == 0 || args.items > 99 {
        bail!("--providers, --threads, --duration-secs must be positive, --items at most 99");
    }
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("wrk not found; install it: apt-get install -y wrk");
    }
    // The database and the streams are deleted when these drop, also on error or
    // panic.
    let db = TestDb::create(Purpose::Bench).await?;
    let bus = TestBus::new(Purpose::Bench);
    let tmp = std::env::temp_dir().join(&db.name);
    std::fs::create_dir_all(&tmp)?;
    let outcome = std::panic::AssertUnwindSafe(measure(&args, &db, &bus, &tmp))
        .catch_unwind()
        .await;
    // Clean up the scripts whatever happened.
    let _ = std::fs::remove_dir_all(&tmp);
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// One live subscription, as the bench addresses notifications to it.
#[derive(Clone)]
struct Sub {
    id: String,
    client_state: String,
    expires: String,
    provider: uuid::Uuid,
    tenant: String,
    /// The mailbox's user GUID (`Users/{guid}/Messages/…`).
    user: String,
    /// Azure AD tenant GUID (`tenantId`).
    aad_tenant: String,
    /// Fixed part of this mailbox's message ids (`ID_PREFIX_LEN` characters).
    id_prefix: String,
    etag: String,
}

impl Sub {
    /// The pieces a notification item is made of: `a + id + b + id + c + id + d`.
    fn pieces(&self) -> [String; 4] {
        [
            format!(
                r#"{{"subscriptionId":"{}","subscriptionExpirationDateTime":"{}","changeType":"created","resource":"Users/{}/Messages/"#,
                self.id, self.expires, self.user
            ),
            format!(
                r##"","resourceData":{{"@odata.type":"#Microsoft.Graph.Message","@odata.id":"Users/{}/Messages/"##,
                self.user
            ),
            format!(r#"","@odata.etag":"W/\"{}\"","id":""#, self.etag),
            format!(
                r#""}},"clientState":"{}","tenantId":"{}"}}"#,
                self.client_state, self.aad_tenant
            ),
        ]
    }

    /// One item, exactly as the Lua script builds it.
    fn item(&self, core: &str) -> String {
        let [a, b, c, d] = self.pieces();
        let id = format!("{}{core}AAA=", self.id_prefix);
        format!("{a}{id}{b}{id}{c}{id}{d}")
    }

    fn route_tenant(&self) -> TenantId {
        TenantId::parse(&self.tenant).unwrap()
    }

    /// The envelope intake publishes for an item of this subscription.
    fn envelope(&self, item: Value) -> Vec<u8> {
        serde_json::to_vec(&WebhookEnvelope {
            tenant: self.route_tenant(),
            provider_id: ProviderId(self.provider),
            kind: ProviderKind::GraphMail,
            subscription_id: self.id.clone(),
            received_at: Utc::now(),
            notification: item,
        })
        .unwrap()
    }
}

/// A collection of `items` items as the Lua script builds it.
fn collection(subs: &[Sub], items: u32) -> String {
    let items: Vec<String> = (0..items)
        .map(|i| subs[i as usize % subs.len()].item(&format!("r00000000000001{i:02}")))
        .collect();
    format!("{{\"value\":[{}]}}", items.join(","))
}

fn graph_datetime(at: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        at.format("%Y-%m-%dT%H:%M:%S"),
        at.timestamp_subsec_nanos() / 100
    )
}

/// Random base64url-looking text of `len` characters (message-id and etag filler).
fn filler(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Which part of the run a phase belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The service's notification consumer held off (or not, see `Ctx::held_off`).
    A,
    /// The service's consumer on, as in production.
    B,
}

/// Everything a phase needs.
struct Ctx {
    args: Args,
    base_url: String,
    http: reqwest::Client,
    js: jetstream::Context,
    topology: Topology,
    subs: Vec<Sub>,
    tmp: PathBuf,
    /// This run's database.
    db_url: String,
    cpu: CpuClassifier,
    raw: RawPublisher,
    /// Raw publish targets: (subject, envelope), one per provider.
    raw_targets: Vec<(String, Bytes)>,
    /// Whether the consumer could be held off in part A.
    held_off: bool,
    part: Part,
    /// Phases run so far, for tags.
    phases: u32,
    /// Every intake run (warm-ups included).
    wrk_runs: Vec<WrkRun>,
    /// Every raw run (warm-ups included).
    raw_runs: Vec<RawRun>,
    /// Failed checks.
    failures: Vec<String>,
    /// Things worth knowing that lose nothing (publishes that timed out into the
    /// outbox and were relayed).
    notes: Vec<String>,
}

async fn measure(args: &Args, db: &TestDb, bus: &TestBus, tmp: &Path) -> anyhow::Result<()> {
    let idle = machine_idle_check().await;
    let topology = &bus.topology();
    let (_sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock)).await?;
    // Threads that exist now are the simulator's and this harness's.
    let before_service: HashSet<u32> = proc::threads().into_keys().collect();

    let (listener, base_url) = service::bind_local()?;
    let mut config = service::config(db, bus, &sim_server, &base_url);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.nats_webhook_stream_max_bytes = args.stream_mib << 20;
    config.validate()?;
    let nats = async_nats::connect(nats_url()).await?;
    let js = jetstream::new(nats);
    hold_off_consumer(&js, topology, StreamLimits::from_config(&config)).await?;

    let service = Service::spawn(config, listener, base_url.clone(), RunOptions::default());
    let http = reqwest::Client::new();
    service.wait_ready(&http, Duration::from_secs(30)).await?;
    let held_off = consumer_held_off(&js, topology).await?;

    let admin = Admin::new(&http, &base_url, ADMIN_TOKEN);
    let subs = create_providers(&admin, db, args.providers).await?;
    eprintln!(
        "{} providers with live subscriptions; service at {base_url}; notification consumer {}",
        subs.len(),
        if held_off {
            "held off"
        } else {
            "running (could not be held off)"
        }
    );
    let raw_targets = subs
        .iter()
        .map(|s| {
            let subject = topology.webhook_subject(
                ProviderKind::GraphMail,
                &s.route_tenant(),
                ProviderId(s.provider),
            );
            let item = serde_json::from_str(&s.item(&"0".repeat(ID_CORE_LEN))).unwrap();
            (subject, Bytes::from(s.envelope(item)))
        })
        .collect();
    let mut ctx = Ctx {
        args: args.clone(),
        base_url,
        http,
        js,
        topology: topology.clone(),
        subs,
        tmp: tmp.to_owned(),
        db_url: db.url.clone(),
        cpu: CpuClassifier {
            main: std::process::id(),
            before_service,
            hz: proc::ticks_per_second(),
            db: db.name.clone(),
        },
        raw: RawPublisher::start()?,
        raw_targets,
        held_off,
        part: Part::A,
        phases: 0,
        wrk_runs: Vec::new(),
        raw_runs: Vec::new(),
        failures: Vec::new(),
        notes: Vec::new(),
    };
    let outcome = phases(&mut ctx, idle).await;

    if let Err(e) = service.stop_with(sim_server).await {
        eprintln!("{e:#}");
    }
    outcome
}

/// How busy the machine is before anything starts (cores, over 2 s).
async fn machine_idle_check() -> f64 {
    let hz = proc::ticks_per_second();
    let (from, at) = (Machine::now(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = Machine::now().since(&from).busy as f64 / hz / at.elapsed().as_secs_f64();
    if busy > 0.2 {
        eprintln!(
            "warning: the machine is already busy ({busy:.2} cores) before the bench starts; numbers will be lower"
        );
    }
    busy
}

/// The stand-in durable's filter: a subject of the webhook stream nothing is
/// published on.
fn held_off_filter(topology: &Topology) -> String {
    ConsumerSpec::notifications(topology)
        .filter
        .replace(".webhook.>", ".webhook.held-off-by-bench")
}

/// Creates the webhook stream as the service will, and a stand-in for the service's
/// durable consumer that delivers nothing (see the module docs).
async fn hold_off_consumer(
    js: &jetstream::Context,
    topology: &Topology,
    limits: StreamLimits,
) -> anyhow::Result<()> {
    let stream = js
        .create_stream(subkeeper::bus::nats::streams::webhooks(topology, limits))
        .await?;
    let spec = ConsumerSpec::notifications(topology);
    stream
        .create_consumer(pull::Config {
            durable_name: Some(spec.durable.clone()),
            description: Some("webhook_intake bench: holds the service's consumer off".into()),
            filter_subject: held_off_filter(topology),
            // The service asks for `All`; a deliver policy cannot be changed, so the
            // server refuses the service's whole update, filter included.
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Whether the service's durable is still the bench's stand-in and has delivered
/// nothing.
async fn consumer_held_off(js: &jetstream::Context, topology: &Topology) -> anyhow::Result<bool> {
    let stream = js.get_stream(topology.webhook_stream()).await?;
    let info = stream
        .consumer_info(topology.notification_consumer())
        .await?;
    Ok(info.config.filter_subject == held_off_filter(topology)
        && info.delivered.consumer_sequence == 0)
}

async fn consumer_filter_is_the_services(ctx: &Ctx) -> bool {
    let Ok(stream) = ctx.js.get_stream(ctx.topology.webhook_stream()).await else {
        return false;
    };
    stream
        .consumer_info(ctx.topology.notification_consumer())
        .await
        .is_ok_and(|i| i.config.filter_subject == ConsumerSpec::notifications(&ctx.topology).filter)
}

/// Deletes the bench's durable; the service re-creates its own and consumes.
async fn release_consumer(ctx: &Ctx) -> anyhow::Result<()> {
    let stream = ctx.js.get_stream(ctx.topology.webhook_stream()).await?;
    let _ = stream
        .delete_consumer(&ctx.topology.notification_consumer())
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if consumer_filter_is_the_services(ctx).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the service did not re-create its consumer within 60 s");
        }
    }
}

/// Creates `n` Graph mail providers through the admin API, waits until each has a
/// live subscription, and reads the subscriptions from Postgres.
async fn create_providers(admin: &Admin, db: &TestDb, n: u32) -> anyhow::Result<Vec<Sub>> {
    for i in 0..n {
        let t = i % TENANTS;
        admin
            .create_provider(
                &format!("bench-{t}"),
                graph_mail_provider(
                    &format!("mailbox {i}"),
                    &format!("users/mbx{i}@bench{t}.example/messages"),
                    &format!("bench-aad-{t}"),
                ),
            )
            .await
            .with_context(|| format!("creating provider {i}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut live = 0;
        for t in 0..TENANTS.min(n) {
            // Every page of the tenant's providers (the list is paginated).
            let mut cursor = String::new();
            loop {
                let (_, view) = admin
                    .request(
                        reqwest::Method::GET,
                        &format!("/tenants/bench-{t}/providers?limit=500{cursor}"),
                        None,
                    )
                    .await?;
                live += view["providers"].as_array().map_or(0, |ps| {
                    ps.iter()
                        .filter(|p| {
                            p["health"]["subscription_status"] == "healthy"
                                && p["subscription"]["id"].is_string()
                        })
                        .count()
                });
                match view["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => break,
                }
            }
        }
        if live == n as usize {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {live} of {n} providers got a live subscription within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut conn = db.connect().await?;
    let rows: Vec<(String, String, DateTime<Utc>, uuid::Uuid, String)> = sqlx::query_as(
        "SELECT external_id, client_state, expires_at, provider_id, tenant_id \
         FROM subscriptions WHERE state = 'active' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await?;
    if rows.len() != n as usize {
        bail!(
            "{} active subscriptions in Postgres, wanted {n}",
            rows.len()
        );
    }
    let aad: Vec<String> = (0..TENANTS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    Ok(rows
        .into_iter()
        .map(|(id, client_state, expires_at, provider, tenant)| {
            let t: usize = tenant
                .trim_start_matches("bench-")
                .parse()
                .unwrap_or_default();
            Sub {
                id,
                client_state,
                expires: graph_datetime(expires_at),
                provider,
                tenant,
                user: uuid::Uuid::new_v4().to_string(),
                aad_tenant: aad[t % aad.len()].clone(),
                id_prefix: format!("AAMkAG{}", filler(ID_PREFIX_LEN - 6)),
                etag: format!("CQAAABYAAAD{}", filler(20)),
            }
        })
        .collect())
}

/// A row of the main tables: intake at one connection count and raw beside it.
struct Row {
    intake: WrkRun,
    raw_same: RawRun,
    raw_in_flight: Option<RawRun>,
}

/// All phases, the report and the checks.
async fn phases(ctx: &mut Ctx, idle: f64) -> anyhow::Result<()> {
    let levels = ctx.args.connections.clone();
    let items = ctx.args.items;
    let part_a = compare(ctx, &levels, items, true).await?;
    let mut experiments = Vec::new();
    let mut route = None;
    let mut steps = None;
    let top = *levels.iter().max().unwrap_or(&64);
    if !ctx.args.no_experiments {
        for n in [0, 1] {
            if n != items {
                experiments.push(intake_measured(ctx, top, n).await?);
            }
        }
        route = Some(route_lookups(ctx, 16, Duration::from_secs(5)).await?);
        steps = Some(intake_steps(&ctx.subs, items.max(1)));
    }
    // Still held off (nothing delivered) at the end of part A?
    ctx.held_off = ctx.held_off && consumer_held_off(&ctx.js, &ctx.topology).await?;
    let mut part_b = Vec::new();
    if !ctx.args.no_consumer_part {
        if consumer_held_off(&ctx.js, &ctx.topology).await? {
            eprintln!("releasing the service's notification consumer");
            release_consumer(ctx).await?;
        }
        ctx.part = Part::B;
        part_b = compare(ctx, &levels, items, false).await?;
    }
    final_checks(ctx).await?;
    report(
        ctx,
        idle,
        &part_a,
        &part_b,
        &experiments,
        route.as_ref(),
        steps.as_deref(),
    );
    if ctx.failures.is_empty() {
        Ok(())
    } else {
        bail!("checks failed: {}", ctx.failures.join("; "))
    }
}

/// Intake and raw at each connection count.
async fn compare(
    ctx: &mut Ctx,
    levels: &[u32],
    items: u32,
    in_flight: bool,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &c in levels {
        let intake = intake_measured(ctx, c, items).await?;
        let warm = ctx.args.warmup_secs;
        if warm > 0 {
            raw(ctx, c, warm, true).await?;
        }
        let raw_same = raw(ctx, c, ctx.args.duration_secs, false).await?;
        let raw_in_flight = if in_flight && items > 1 {
            Some(raw(ctx, c * items, ctx.args.duration_secs, false).await?)
        } else {
            None
        };
        rows.push(Row {
            intake,
            raw_same,
            raw_in_flight,
        });
    }
    Ok(rows)
}

async fn intake_measured(ctx: &mut Ctx, connections: u32, items: u32) -> anyhow::Result<WrkRun> {
    let warm = ctx.args.warmup_secs;
    if warm > 0 {
        intake(ctx, connections, items, warm, true).await?;
    }
    intake(ctx, connections, items, ctx.args.duration_secs, false).await
}

// ---------------------------------------------------------------------------------
// Intake under wrk
// ---------------------------------------------------------------------------------

/// One wrk run as the bench saw it.
#[derive(Clone, Debug)]
struct WrkRun {
    tag: String,
    part: Part,
    warmup: bool,
    connections: u32,
    items: u32,
    /// Completed responses (any status).
    requests: u64,
    duration: f64,
    /// Responses with status ≥ 400.
    non2xx: u64,
    socket_errors: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: u64,
    /// Requests the Lua script generated (answered, or in flight at the end).
    generated: u64,
    /// Change in the service's accepted-notification counter.
    accepted: u64,
    /// Messages the phase added to the stream.
    stored: u64,
    /// Whole requests found in the stream when read back.
    whole: Option<u64>,
    /// The service's notification consumer: backlog when wrk stopped, and how long
    /// until it had caught up.
    backlog: u64,
    drain: Duration,
    cpu: CpuDelta,
}

impl WrkRun {
    fn answered(&self) -> u64 {
        self.requests - self.non2xx
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.max(1e-9)
    }

    fn notifications_per_s(&self) -> f64 {
        self.answered() as f64 * f64::from(self.items) / self.duration.max(1e-9)
    }
}

fn next_tag(ctx: &mut Ctx) -> String {
    ctx.phases += 1;
    format!("r{:02}", ctx.phases)
}

/// The Lua script of one wrk run.
fn lua_script(subs: &[Sub], tag: &str, items: u32) -> String {
    let mut s = String::new();
    s.push_str("local S = {\n");
    for sub in subs {
        let [a, b, c, d] = sub.pieces();
        let _ = writeln!(
            s,
            "  {{a=[==[{a}]==], b=[==[{b}]==], c=[==[{c}]==], d=[==[{d}]==], p=[==[{}]==]}},",
            sub.id_prefix
        );
    }
    s.push_str("}\n");
    let _ = write!(
        s,
        r#"local N = #S
local ITEMS = {items}
local TAG = "{tag}"
local headers = {{["Content-Type"] = "application/json"}}
counter = 0
tid = 0
local threads = {{}}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local parts = {{}}
  for i = 1, ITEMS do
    local s = S[((counter * ITEMS + i + tid * 7) % N) + 1]
    local id = s.p .. string.format("%s%02d%012d%02d", TAG, tid, counter, i) .. "AAA="
    parts[i] = s.a .. id .. s.b .. id .. s.c .. id .. s.d
  end
  return wrk.format("POST", "/webhooks/microsoft", headers, '{{"value":[' .. table.concat(parts, ",") .. ']}}')
end

function done(summary, latency, requests)
  local generated = 0
  for _, t in ipairs(threads) do generated = generated + t:get("counter") end
  local e = summary.errors
  local f = math.floor
  io.write(string.format(
    "SKBENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p90=%d p99=%d p999=%d max=%d mean=%d generated=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    f(latency:percentile(50)), f(latency:percentile(90)), f(latency:percentile(99)),
    f(latency:percentile(99.9)), f(latency.max), f(latency.mean), generated))
end
"#
    );
    s
}

/// Runs wrk once against the intake, waits until the service has finished every
/// request it started and its consumer has caught up, checks the phase and purges.
async fn intake(
    ctx: &mut Ctx,
    connections: u32,
    items: u32,
    secs: u64,
    warmup: bool,
) -> anyhow::Result<WrkRun> {
    let tag = next_tag(ctx);
    let script = ctx.tmp.join(format!("{tag}.lua"));
    std::fs::write(&script, lua_script(&ctx.subs, &tag, items))?;
    eprintln!(
        "[{tag}] intake{}: {connections} connections, {items} items/request, {secs} s",
        if warmup { " warm-up" } else { "" }
    );
    let before = Snapshot::take(ctx).await?;
    let mut cmd = std::process::Command::new("wrk");
    cmd.arg(format!("-t{}", ctx.args.threads.min(connections)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("{}/webhooks/microsoft", ctx.base_url));
    let start = CpuSample::take();
    let output = run_child(cmd).await?;
    let end = CpuSample::take();
    let stopped = Instant::now();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find(|l| l.starts_with("SKBENCH ")) else {
        bail!(
            "wrk printed no result ({}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let v: HashMap<&str, f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.parse().ok()?))
        })
        .collect();
    let get = |k: &str| v.get(k).copied().unwrap_or(0.0) as u64;
    let backlog = consumer_pending(ctx).await.unwrap_or(0);
    settle(ctx).await?;
    wait_consumer_idle(ctx).await?;
    let drain = stopped.elapsed();
    let after = Snapshot::take(ctx).await?;
    let mut run = WrkRun {
        tag,
        part: ctx.part,
        warmup,
        connections,
        items,
        requests: get("requests"),
        duration: get("duration_us") as f64 / 1e6,
        non2xx: get("status"),
        socket_errors: get("connect") + get("read") + get("write") + get("timeout"),
        p50_us: get("p50"),
        p90_us: get("p90"),
        p99_us: get("p99"),
        p999_us: get("p999"),
        max_us: get("max"),
        mean_us: get("mean"),
        generated: get("generated"),
        accepted: after.accepted - before.accepted,
        stored: after.last_seq - before.last_seq,
        whole: None,
        backlog,
        drain,
        cpu: ctx.cpu.delta(&start, &end),
    };
    check_intake(ctx, &mut run, &before, &after).await?;
    purge(ctx).await?;
    eprintln!(
        "[{}] {:.0} req/s = {:.0} notifications/s, p50 {} ms, p99 {} ms, non-2xx {}, socket errors {}; accepted {} stored {}; consumer backlog {}, caught up after {:.1} s",
        run.tag,
        run.rps(),
        run.notifications_per_s(),
        ms(run.p50_us),
        ms(run.p99_us),
        run.non2xx,
        run.socket_errors,
        run.accepted,
        run.stored,
        run.backlog,
        run.drain.as_secs_f64()
    );
    ctx.wrk_runs.push(run.clone());
    Ok(run)
}

/// Runs a child to completion on a thread of its own (the runtime keeps serving).
async fn run_child(mut cmd: std::process::Command) -> anyhow::Result<std::process::Output> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-child".into())
        .spawn(move || {
            let _ = tx.send(cmd.output());
        })?;
    Ok(rx.await??)
}

/// Counters a phase is checked against.
struct Snapshot {
    /// The service's accepted Graph notifications (JetStream or outbox).
    accepted: u64,
    /// JetStream publish failures on the webhook stream (each one an outbox entry).
    failures: u64,
    /// The webhook stream's last sequence: every message ever stored in it.
    last_seq: u64,
}

impl Snapshot {
    async fn take(ctx: &Ctx) -> anyhow::Result<Self> {
        let text = ctx
            .http
            .get(format!("{}/metrics", ctx.base_url))
            .send()
            .await?
            .text()
            .await?;
        let stream = ctx.js.get_stream(ctx.topology.webhook_stream()).await?;
        Ok(Self {
            accepted: subkeeper_testkit::metrics::sum(
                &text,
                "subkeeper_webhooks_received_total",
                &[("kind", "microsoft"), ("result", "accepted")],
            ) as u64,
            failures: subkeeper_testkit::metrics::sum(
                &text,
                "subkeeper_jetstream_publish_failures_total",
                &[("stream", &ctx.topology.webhook_stream())],
            ) as u64,
            last_seq: stream.get_info().await?.state.last_sequence,
        })
    }
}

async fn consumer_pending(ctx: &Ctx) -> anyhow::Result<u64> {
    consumer_backlog(
        &ctx.js,
        &ctx.topology.webhook_stream(),
        &ctx.topology.notification_consumer(),
    )
    .await
}

/// Waits until requests still running in the service (wrk stopped with some in
/// flight) have finished and the outbox relay has nothing left: the accepted
/// counter and the stream stay put for 1 s with the outbox empty.
async fn settle(ctx: &Ctx) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, u64::MAX);
    let mut stable = 0;
    let mut db = PgConnection::connect(&ctx.db_url).await?;
    while stable < 5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = Snapshot::take(ctx).await?;
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_outbox")
            .fetch_one(&mut db)
            .await?;
        let now = (s.accepted, s.last_seq);
        stable = if now == last && outbox == 0 {
            stable + 1
        } else {
            0
        };
        last = now;
        if Instant::now() > deadline {
            bail!("the service did not settle within 30 s");
        }
    }
    Ok(())
}

/// Waits until the service's notification consumer has caught up with the stream.
async fn wait_consumer_idle(ctx: &Ctx) -> anyhow::Result<()> {
    subkeeper_testkit::bus::wait_consumer_idle(
        &ctx.js,
        &ctx.topology.webhook_stream(),
        &ctx.topology.notification_consumer(),
        Duration::from_secs(600),
    )
    .await?;
    Ok(())
}

async fn purge(ctx: &Ctx) -> anyhow::Result<()> {
    let stream = ctx.js.get_stream(ctx.topology.webhook_stream()).await?;
    stream.purge().await?;
    Ok(())
}

/// The phase's checks: what the service accepted is what the stream got, nothing
/// went to the outbox, every answered request is whole in the stream, no item twice.
async fn check_intake(
    ctx: &mut Ctx,
    run: &mut WrkRun,
    before: &Snapshot,
    after: &Snapshot,
) -> anyhow::Result<()> {
    let tag = run.tag.clone();
    let fail = |m: String| ctx_fail(&tag, m);
    let mut failures = Vec::new();
    if run.stored != run.accepted {
        failures.push(fail(format!(
            "the stream got {} messages, the service accepted {}",
            run.stored, run.accepted
        )));
    }
    if after.failures > before.failures {
        // Not lost (the outbox relay republished them with their ids, and the
        // stored == accepted check above holds), but JetStream's ack took longer
        // than `webhook_publish_timeout_ms`.
        let note = format!(
            "[{}] {} publishes got no JetStream ack within webhook_publish_timeout_ms ({} ms) and went through the outbox (relayed, stored once)",
            run.tag,
            after.failures - before.failures,
            Config::default().webhook_publish_timeout_ms
        );
        eprintln!("note: {note}");
        ctx.notes.push(note);
    }
    if run.non2xx > 0 || run.socket_errors > 0 {
        failures.push(fail(format!(
            "{} responses ≥ 400, {} socket errors",
            run.non2xx, run.socket_errors
        )));
    }
    // Every answered request's items are in, plus those of requests that were in
    // flight when wrk stopped (at most one per connection).
    let items = u64::from(run.items);
    let floor = run.answered() * items;
    let ceiling = floor + u64::from(run.connections) * items;
    if run.accepted < floor || run.accepted > ceiling {
        failures.push(fail(format!(
            "the service accepted {} notifications; wrk got {} answers × {items} = {floor} (+ at most {} in flight)",
            run.accepted,
            run.answered(),
            u64::from(run.connections) * items
        )));
    }
    if !ctx.args.no_read_back && run.items > 0 {
        let rb = read_back(ctx, run.stored, run.items).await?;
        run.whole = Some(rb.whole);
        if rb.duplicated > 0 || rb.partial > 0 || rb.foreign > 0 {
            failures.push(fail(format!(
                "read back: {} items twice, {} requests partly stored, {} messages not from this phase",
                rb.duplicated, rb.partial, rb.foreign
            )));
        }
        if rb.whole < run.answered() || rb.whole > run.answered() + u64::from(run.connections) {
            failures.push(fail(format!(
                "{} whole requests in the stream, wrk got {} answers",
                rb.whole,
                run.answered()
            )));
        }
    }
    ctx.failures.extend(failures);
    Ok(())
}

fn ctx_fail(tag: &str, message: String) -> String {
    let m = format!("[{tag}] {message}");
    eprintln!("CHECK FAILED: {m}");
    m
}

/// What reading a phase's messages back found.
#[derive(Default)]
struct ReadBack {
    whole: u64,
    partial: u64,
    duplicated: u64,
    foreign: u64,
}

/// Reads the stream back (it holds only this phase's messages) and sorts the items
/// by request: their message ids carry tag, wrk thread, request counter and item.
async fn read_back(ctx: &Ctx, expected: u64, items: u32) -> anyhow::Result<ReadBack> {
    let consumer =
        subkeeper_testkit::bus::replay(&ctx.js, &ctx.topology.webhook_stream(), None).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    let tag = format!("r{:02}", ctx.phases);
    let mut rb = ReadBack::default();
    let mut seen: HashSet<String> = HashSet::with_capacity(expected as usize);
    let mut per_request: HashMap<String, u32> = HashMap::new();
    for _ in 0..expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("reading the stream back stalled")?
            .context("the stream ended early")??;
        let body: Value = serde_json::from_slice(&message.payload)?;
        let id = body["notification"]["resourceData"]["id"]
            .as_str()
            .unwrap_or_default();
        let core = id
            .get(ID_PREFIX_LEN..ID_PREFIX_LEN + ID_CORE_LEN)
            .unwrap_or_default();
        if !core.starts_with(&tag) {
            rb.foreign += 1;
            continue;
        }
        *per_request.entry(core[..17].to_owned()).or_default() += 1;
        if !seen.insert(core.to_owned()) {
            rb.duplicated += 1;
        }
    }
    for n in per_request.into_values() {
        if n == items {
            rb.whole += 1;
        } else {
            rb.partial += 1;
        }
    }
    Ok(rb)
}

// ---------------------------------------------------------------------------------
// Raw JetStream publishing
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct RawRun {
    tag: String,
    part: Part,
    warmup: bool,
    publishers: u32,
    acked: u64,
    errors: u64,
    duplicates: u64,
    duration: f64,
    p50_us: u64,
    p99_us: u64,
    payload_bytes: usize,
    stored: u64,
    backlog: u64,
    drain: Duration,
    cpu: CpuDelta,
}

impl RawRun {
    fn per_s(&self) -> f64 {
        self.acked as f64 / self.duration.max(1e-9)
    }
}

/// What the publisher thread reports.
#[derive(Default)]
struct RawOutcome {
    acked: u64,
    errors: u64,
    duplicates: u64,
    last_error: Option<String>,
    elapsed: Duration,
    latencies_us: Distribution,
}

struct RawJob {
    targets: Vec<(String, Bytes)>,
    publishers: usize,
    duration: Duration,
    tag: String,
    done: tokio::sync::oneshot::Sender<anyhow::Result<RawOutcome>>,
}

/// A thread with a current-thread runtime and one NATS client, kept for the whole
/// run (so its CPU time can be read while it lives), publishing on request.
struct RawPublisher {
    jobs: std::sync::mpsc::Sender<RawJob>,
}

impl RawPublisher {
    fn start() -> anyhow::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<RawJob>();
        let url = nats_url();
        std::thread::Builder::new()
            .name("raw-publisher".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = runtime.block_on(
                    async_nats::ConnectOptions::new()
                        .name("bench-raw-publisher")
                        .connect(url),
                );
                while let Ok(job) = rx.recv() {
                    let result = match &client {
                        Ok(client) => runtime.block_on(publish_raw(client.clone(), &job)),
                        Err(e) => Err(anyhow::anyhow!("raw publisher cannot connect: {e}")),
                    };
                    let _ = job.done.send(result);
                }
            })?;
        Ok(Self { jobs })
    }
}

/// `publishers` concurrent publishers, each awaiting its ack before the next, for
/// `secs`, then checks the phase and purges.
async fn raw(ctx: &mut Ctx, publishers: u32, secs: u64, warmup: bool) -> anyhow::Result<RawRun> {
    let tag = next_tag(ctx);
    eprintln!(
        "[{tag}] raw JetStream{}: {publishers} publishers, {secs} s",
        if warmup { " warm-up" } else { "" }
    );
    let before = Snapshot::take(ctx).await?;
    let (done, result) = tokio::sync::oneshot::channel();
    let start = CpuSample::take();
    ctx.raw.jobs.send(RawJob {
        targets: ctx.raw_targets.clone(),
        publishers: publishers as usize,
        duration: Duration::from_secs(secs),
        tag: tag.clone(),
        done,
    })?;
    let outcome = result.await??;
    let end = CpuSample::take();
    let stopped = Instant::now();
    let backlog = consumer_pending(ctx).await.unwrap_or(0);
    wait_consumer_idle(ctx).await?;
    let drain = stopped.elapsed();
    // The acks are in hand: the stream has every acknowledged message.
    let after = Snapshot::take(ctx).await?;
    let lat = &outcome.latencies_us;
    let run = RawRun {
        tag: tag.clone(),
        part: ctx.part,
        warmup,
        publishers,
        acked: outcome.acked,
        errors: outcome.errors,
        duplicates: outcome.duplicates,
        duration: outcome.elapsed.as_secs_f64(),
        p50_us: lat.percentile(50.0).unwrap_or(0),
        p99_us: lat.percentile(99.0).unwrap_or(0),
        payload_bytes: ctx.raw_targets.first().map_or(0, |t| t.1.len()),
        stored: after.last_seq - before.last_seq,
        backlog,
        drain,
        cpu: ctx.cpu.delta(&start, &end),
    };
    if run.stored != run.acked || run.errors > 0 || run.duplicates > 0 {
        let m = ctx_fail(
            &tag,
            format!(
                "raw: {} acked, {} stored, {} errors (last: {:?}), {} duplicates",
                run.acked, run.stored, run.errors, outcome.last_error, run.duplicates
            ),
        );
        ctx.failures.push(m);
    }
    purge(ctx).await?;
    eprintln!(
        "[{}] {:.0} publishes/s, ack p50 {} ms, p99 {} ms, errors {}, duplicates {}; stored {}; consumer backlog {}, caught up after {:.1} s",
        run.tag,
        run.per_s(),
        ms(run.p50_us),
        ms(run.p99_us),
        run.errors,
        run.duplicates,
        run.stored,
        run.backlog,
        run.drain.as_secs_f64()
    );
    ctx.raw_runs.push(run.clone());
    Ok(run)
}

async fn publish_raw(client: async_nats::Client, job: &RawJob) -> anyhow::Result<RawOutcome> {
    let js = jetstream::new(client.clone());
    let start = Instant::now();
    let deadline = start + job.duration;
    let tasks = (0..job.publishers).map(|p| {
        let js = js.clone();
        let (subject, payload) = job.targets[p % job.targets.len()].clone();
        let subject = async_nats::Subject::from(subject);
        let tag = job.tag.clone();
        async move {
            let mut out = RawOutcome::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                // 64 characters, like intake's SHA-256 hex ids.
                let id = format!("raw-{tag}-{p:05}-{n:050}");
                n += 1;
                let sent = Instant::now();
                let result = async {
                    js.send_publish(
                        subject.clone(),
                        PublishMessage::build()
                            .payload(payload.clone())
                            .message_id(id),
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
                }
                .await;
                match result {
                    Ok(ack) => {
                        out.acked += 1;
                        out.duplicates += u64::from(ack.duplicate);
                        out.latencies_us
                            .record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.last_error = Some(e);
                    }
                }
            }
            out
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let mut total = RawOutcome {
        elapsed: start.elapsed(),
        ..RawOutcome::default()
    };
    for r in results {
        total.acked += r.acked;
        total.errors += r.errors;
        total.duplicates += r.duplicates;
        total.last_error = total.last_error.or(r.last_error);
        total.latencies_us.merge(&r.latencies_us);
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------
// Experiments: route-cache misses, intake's per-item steps
// ---------------------------------------------------------------------------------

struct RouteRun {
    concurrency: usize,
    lookups: u64,
    duration: f64,
    p50_us: u64,
    p99_us: u64,
}

/// The store's route query (what `RouteCache` runs on a miss) from `concurrency`
/// tasks on a pool of the service's default size, for `duration`.
async fn route_lookups(
    ctx: &Ctx,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<RouteRun> {
    eprintln!(
        "route lookups: {concurrency} concurrent, {} s",
        duration.as_secs()
    );
    let store = Store::connect(
        &Location::Postgres(ctx.db_url.clone()),
        Config::default().database_max_connections,
        Arc::new(SystemClock),
    )
    .await?;
    let ids: Vec<String> = ctx.subs.iter().map(|s| s.id.clone()).collect();
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let tasks = (0..concurrency).map(|t| {
        let (store, ids) = (store.clone(), ids.clone());
        async move {
            let mut lat = Distribution::new();
            let mut i = t;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let id = ids[i % ids.len()].as_str();
                let route = store.routes(&[id]).await.unwrap().remove(id);
                assert!(route.is_some());
                lat.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                i += 1;
            }
            lat
        }
    });
    let mut lat = Distribution::new();
    for task in futures_util::future::join_all(tasks).await {
        lat.merge(&task);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Db::Postgres(pool) = store.db() {
        pool.close().await;
    }
    Ok(RouteRun {
        concurrency,
        lookups: lat.len(),
        duration: elapsed,
        p50_us: lat.percentile(50.0).unwrap_or(0),
        p99_us: lat.percentile(99.0).unwrap_or(0),
    })
}

/// CPU µs of each of intake's steps for one request of `items` items, single
/// thread, nothing else running in this process: what `GraphIntake::notifications`
/// does before and around its publishes.
fn intake_steps(subs: &[Sub], items: u32) -> Vec<(&'static str, f64)> {
    const ROUNDS: u32 = 2000;
    let body = collection(subs, items).into_bytes();
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    let list = parsed["value"].as_array().unwrap().clone();
    let provider = ProviderId(subs[0].provider);
    let time = |f: &mut dyn FnMut()| {
        f();
        let t = Instant::now();
        for _ in 0..ROUNDS {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
    };
    let parse = time(&mut || {
        black_box(serde_json::from_slice::<Value>(black_box(&body)).unwrap());
    });
    let clone = time(&mut || {
        black_box(black_box(&list).clone());
    });
    let ids = time(&mut || {
        for item in &list {
            black_box(subkeeper::intake::message_id(provider, black_box(item)).unwrap());
        }
    });
    let sub = &subs[0];
    let envelopes = time(&mut || {
        for item in &list {
            black_box(sub.envelope(item.clone()));
        }
    });
    let payloads: Vec<Vec<u8>> = list.iter().map(|i| sub.envelope(i.clone())).collect();
    let copies = time(&mut || {
        for p in &payloads {
            black_box(black_box(p).clone());
        }
    });
    vec![
        ("parse the body into a serde_json::Value", parse),
        ("clone the item array (`Ok(items.clone())`)", clone),
        (
            "message ids: serialize each item again, SHA-256, hex via format!",
            ids,
        ),
        (
            "envelopes: serialize each (item included) (clone of the item here, a move in intake)",
            envelopes,
        ),
        (
            "copy each payload for the publish (`payload.clone()`)",
            copies,
        ),
    ]
}

// ---------------------------------------------------------------------------------
// Final accounting and report
// ---------------------------------------------------------------------------------

struct Final {
    last_seq: u64,
    accepted: u64,
    raw_acked: u64,
    failures: u64,
    outbox: i64,
}

async fn final_checks(ctx: &mut Ctx) -> anyhow::Result<Final> {
    let s = Snapshot::take(ctx).await?;
    let mut conn = PgConnection::connect(&ctx.db_url).await?;
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_outbox")
        .fetch_one(&mut conn)
        .await?;
    let f = Final {
        last_seq: s.last_seq,
        accepted: s.accepted,
        raw_acked: ctx.raw_runs.iter().map(|r| r.acked).sum(),
        failures: s.failures,
        outbox,
    };
    if f.last_seq != f.accepted + f.raw_acked {
        let m = ctx_fail(
            "end",
            format!(
                "the stream stored {} messages in all; intake accepted {} + raw acked {} = {}",
                f.last_seq,
                f.accepted,
                f.raw_acked,
                f.accepted + f.raw_acked
            ),
        );
        ctx.failures.push(m);
    }
    if f.outbox > 0 {
        let m = ctx_fail(
            "end",
            format!("{} notifications still in the outbox", f.outbox),
        );
        ctx.failures.push(m);
    }
    println!();
    println!(
        "end: the stream stored {} messages in all = intake accepted {} + raw acked {}; JetStream publish failures {}; outbox {}",
        f.last_seq, f.accepted, f.raw_acked, f.failures, f.outbox
    );
    Ok(f)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_main_table(rows: &[Row], items: u32) {
    println!(
        "| connections | intake req/s | intake notifications/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | raw publishes/s, c publishers (ack p50 / p99 ms) | intake ÷ raw | raw publishes/s, c×{items} publishers (ack p50 / p99 ms) | intake ÷ raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for Row {
        intake: i,
        raw_same: r1,
        raw_in_flight: r10,
    } in rows
    {
        let n = i.notifications_per_s();
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0} ({} / {}) | **{:.2}** | {} | {} |",
            i.connections,
            i.rps(),
            n,
            ms(i.p50_us),
            ms(i.p90_us),
            ms(i.p99_us),
            ms(i.p999_us),
            ms(i.max_us),
            i.non2xx,
            r1.per_s(),
            ms(r1.p50_us),
            ms(r1.p99_us),
            n / r1.per_s().max(1e-9),
            r10.as_ref().map_or("—".into(), |r| format!(
                "{:.0} ({} / {})",
                r.per_s(),
                ms(r.p50_us),
                ms(r.p99_us)
            )),
            r10.as_ref()
                .map_or("—".into(), |r| format!("{:.2}", n / r.per_s().max(1e-9))),
        );
    }
}

fn report(
    ctx: &Ctx,
    idle: f64,
    part_a: &[Row],
    part_b: &[Row],
    experiments: &[WrkRun],
    route: Option<&RouteRun>,
    steps: Option<&[(&'static str, f64)]>,
) {
    let a = &ctx.args;
    let body_bytes = collection(&ctx.subs, a.items).len();
    let item_bytes = ctx.subs[0].item(&"0".repeat(ID_CORE_LEN)).len();
    let envelope = ctx.raw_targets.first().map_or(0, |t| t.1.len());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "webhook intake vs raw JetStream publish — {} providers, {} items/request ({body_bytes} B body, {item_bytes} B per item), envelope {envelope} B, wrk {} threads, {} s per phase after {} s warm-up",
        ctx.subs.len(),
        a.items,
        a.threads,
        a.duration_secs,
        a.warmup_secs
    );
    println!(
        "machine: {cores} cores shared by wrk, the service (+ the idle simulator), Postgres and nats-server; {idle:.2} cores busy before the run"
    );
    println!();
    println!(
        "A. service's notification consumer {}:",
        if ctx.held_off {
            "held off (intake and raw publishing alone)"
        } else {
            "running — it could not be held off on this NATS server"
        }
    );
    print_main_table(part_a, a.items);
    if !part_b.is_empty() {
        println!();
        println!(
            "B. service's notification consumer running (as in production: it consumes what intake and raw publish, on the service's NATS connection and main thread):"
        );
        print_main_table(part_b, a.items);
    }
    if !experiments.is_empty() {
        println!();
        println!(
            "| experiment (part A, {} connections) | req/s | notifications/s | p50 ms | p99 ms | non-2xx |",
            experiments[0].connections
        );
        println!("|---|---|---|---|---|---|");
        let measured = part_a
            .iter()
            .map(|r| &r.intake)
            .filter(|r| r.connections == experiments[0].connections);
        for r in experiments.iter().chain(measured) {
            println!(
                "| {} items/request | {:.0} | {:.0} | {} | {} | {} |",
                r.items,
                r.rps(),
                r.notifications_per_s(),
                ms(r.p50_us),
                ms(r.p99_us),
                r.non2xx
            );
        }
    }
    if let Some(rt) = route {
        println!();
        println!(
            "route-cache miss (the store's route query, {} concurrent, pool {}): {:.0} lookups/s, p50 {} ms, p99 {} ms",
            rt.concurrency,
            Config::default().database_max_connections,
            rt.lookups as f64 / rt.duration.max(1e-9),
            ms(rt.p50_us),
            ms(rt.p99_us)
        );
    }
    if let Some(steps) = steps {
        println!();
        println!(
            "intake's per-request steps for {} items, timed in-process (one thread, µs per request):",
            a.items.max(1)
        );
        println!("| step | µs |");
        println!("|---|---|");
        for (step, us) in steps {
            println!("| {step} | {us:.1} |");
        }
    }

    println!();
    println!(
        "CPU per phase, in cores (of {cores}). \"service main\" is the actix System thread: the service's NATS connection (every publish and ack goes through it), the notification consumer and its actors, the outbox relay, the fleet. \"postgres (this db)\" are the service's backends; \"postgres (rest)\" the server's own processes and other databases' backends."
    );
    // (label, cpu, messages per second, consumer backlog at the end, caught up after)
    let phases: Vec<(String, &CpuDelta, f64, u64, f64)> = ctx
        .wrk_runs
        .iter()
        .filter(|r| !r.warmup)
        .map(|r| {
            (
                format!(
                    "[{}] {:?}: intake c={} items={}",
                    r.tag, r.part, r.connections, r.items
                ),
                &r.cpu,
                if r.items == 0 {
                    r.rps()
                } else {
                    r.notifications_per_s()
                },
                r.backlog,
                r.drain.as_secs_f64(),
            )
        })
        .chain(ctx.raw_runs.iter().filter(|r| !r.warmup).map(|r| {
            (
                format!("[{}] {:?}: raw publishers={}", r.tag, r.part, r.publishers),
                &r.cpu,
                r.per_s(),
                r.backlog,
                r.drain.as_secs_f64(),
            )
        }))
        .collect();
    let columns: Vec<&str> = phases
        .first()
        .map(|p| p.1.groups.iter().map(|(g, _)| *g).collect())
        .unwrap_or_default();
    let cell = |cpu: &CpuDelta, c: &str, scale: f64, digits: usize| {
        cpu.groups
            .iter()
            .find(|(g, _)| *g == c)
            .map_or("0".into(), |(_, v)| format!("{:.digits$}", v * scale))
    };
    println!(
        "| phase | {} | machine busy | iowait | busiest other processes | consumer backlog when the load stopped | caught up after s |",
        columns.join(" | ")
    );
    println!("|---|{}---|---|---|---|---|", "---|".repeat(columns.len()));
    for (label, cpu, _, backlog, drain) in &phases {
        let cells: Vec<String> = columns.iter().map(|c| cell(cpu, c, 1.0, 2)).collect();
        let others: Vec<String> = cpu
            .top_others
            .iter()
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect();
        println!(
            "| {label} | {} | {:.2} | {:.2} | {} | {backlog} | {drain:.1} |",
            cells.join(" | "),
            cpu.machine,
            cpu.iowait,
            others.join(", ")
        );
    }
    println!();
    println!(
        "CPU µs per notification (intake; per request for 0 items) or per message (raw), by component:"
    );
    println!("| phase | per s | {} | machine |", columns.join(" | "));
    println!("|---|---|{}---|", "---|".repeat(columns.len()));
    for (label, cpu, rate, _, _) in &phases {
        let scale = 1e6 / rate.max(1e-9);
        let cells: Vec<String> = columns.iter().map(|c| cell(cpu, c, scale, 1)).collect();
        println!(
            "| {label} | {rate:.0} | {} | {:.1} |",
            cells.join(" | "),
            cpu.machine * scale
        );
    }
    println!();
    println!("every run (warm-ups included), with its checks:");
    println!(
        "| run | what | concurrency | per s | mean / p50 / p99 ms | answered or acked | generated | accepted by the service | stored | whole requests read back |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &ctx.wrk_runs {
        println!(
            "| {}{} | {:?}: intake, {} items/request | {} connections | {:.0} req/s | {} / {} / {} | {} requests | {} requests | {} | {} | {} |",
            r.tag,
            if r.warmup { " (warm-up)" } else { "" },
            r.part,
            r.items,
            r.connections,
            r.rps(),
            ms(r.mean_us),
            ms(r.p50_us),
            ms(r.p99_us),
            r.answered(),
            r.generated,
            r.accepted,
            r.stored,
            r.whole.map_or("—".into(), |w| w.to_string())
        );
    }
    for r in &ctx.raw_runs {
        println!(
            "| {}{} | {:?}: raw, {} B payload | {} publishers | {:.0} msg/s | — / {} / {} | {} | — | — | {} | — |",
            r.tag,
            if r.warmup { " (warm-up)" } else { "" },
            r.part,
            r.payload_bytes,
            r.publishers,
            r.per_s(),
            ms(r.p50_us),
            ms(r.p99_us),
            r.acked,
            r.stored
        );
    }
    println!();
    for note in &ctx.notes {
        println!("note: {note}");
    }
    if ctx.failures.is_empty() {
        println!(
            "checks: OK — every phase stored exactly what the service accepted or JetStream acked, every answered request whole, no item twice, outbox empty at the end"
        );
    } else {
        for f in &ctx.failures {
            println!("CHECK FAILED: {f}");
        }
    }
}

// ---------------------------------------------------------------------------------
// CPU accounting from /proc
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct CpuDelta {
    /// (group, cores).
    groups: Vec<(&'static str, f64)>,
    /// Machine busy, cores.
    machine: f64,
    /// Idle waiting on I/O, cores.
    iowait: f64,
    /// The busiest other processes: (comm, cores), most first.
    top_others: Vec<(String, f64)>,
}

struct CpuClassifier {
    main: u32,
    before_service: HashSet<u32>,
    hz: f64,
    /// This run's database name.
    db: String,
}

impl CpuClassifier {
    fn delta(&self, from: &CpuSample, to: &CpuSample) -> CpuDelta {
        let wall = to.wall_since(from).as_secs_f64().max(1e-9);
        let cores = |ticks: u64| ticks as f64 / self.hz / wall;
        let groups = to.threads_since(from, |tid, name| {
            if tid == self.main {
                "service main"
            } else if name == "raw-publisher" {
                "raw publisher"
            } else if !self.before_service.contains(&tid) && name.starts_with("actix-rt|system") {
                // actix-web's workers: "actix-rt|system:0|arbiter:N", cut to 15 bytes.
                "service HTTP workers"
            } else {
                "other threads"
            }
        });
        // Postgres backends name their database in their command line.
        let postgres = to.processes_since(from, |p| {
            (p.name == "postgres").then(|| p.cmdline.contains(&self.db))
        });
        let pg_ours = *postgres.get(&true).unwrap_or(&0);
        let pg_rest = *postgres.get(&false).unwrap_or(&0);
        let machine_ticks = to.machine.since(&from.machine);
        let group = |g: &str| cores(*groups.get(g).unwrap_or(&0));
        let mut out: Vec<(&'static str, f64)> = vec![
            ("wrk", cores(to.children.saturating_sub(from.children))),
            ("service HTTP workers", group("service HTTP workers")),
            ("service main", group("service main")),
            ("raw publisher", group("raw publisher")),
            ("other threads", group("other threads")),
            ("nats-server", cores(to.named_since(from, "nats-server"))),
            ("postgres (this db)", cores(pg_ours)),
            ("postgres (rest)", cores(pg_rest)),
            // Interrupt time is nobody's process time: mostly loopback TCP here.
            ("kernel irq+softirq", cores(machine_ticks.irq)),
        ];
        let busy = machine_ticks.busy;
        let accounted: f64 = out.iter().map(|(_, c)| c).sum();
        let machine = cores(busy);
        out.push(("other processes", (machine - accounted).max(0.0)));
        // Other processes by name (kworker/1:2 and kworker/0:1 are one "kworker").
        let by_name = to.processes_since(from, |p| {
            (p.name != "postgres" && p.name != "nats-server")
                .then(|| p.name.split('/').next().unwrap_or(&p.name).to_owned())
        });
        let mut top_others: Vec<(String, f64)> = by_name
            .into_iter()
            .map(|(n, t)| (n, cores(t)))
            .filter(|(_, c)| *c >= 0.01)
            .collect();
        top_others.sort_by(|a, b| b.1.total_cmp(&a.1));
        top_others.truncate(4);
        CpuDelta {
            groups: out,
            machine,
            iowait: cores(machine_ticks.iowait),
            top_others,
        }
    }
}
