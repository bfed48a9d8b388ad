//! Fleet benchmark: N Graph mail providers against the in-process Graph simulator.
//!
//! Measures, on this machine:
//! - wall time from service start until every provider is registered (its first
//!   `registered` result has been persisted and published);
//! - the renewal lag of each provider's first timer-driven renewal, `attempted_at −
//!   scheduled_at` (the attempt starts once it holds a `renewal_concurrency`
//!   permit), in domain seconds and in real milliseconds (domain ÷ speed);
//! - peak RSS (`VmHWM`) of this process, which holds the service **and** the
//!   simulator (and this harness);
//! - where the time went: CPU per thread group of this process, of this run's
//!   Postgres backends and of the whole machine, and what the service's Postgres
//!   connections were doing (`pg_stat_activity`, sampled every 100 ms).
//!
//! How: a fresh database `subkeeper_bench_<random>` is migrated and seeded by direct
//! SQL with N `graph_mail` providers over `--tenants` tenants (one client_credentials
//! connection per tenant). The simulator and the service then start in this process
//! on 127.0.0.1:0 through `subkeeper::run_with`, sharing one `ScaledClock` running
//! `--speed`× faster than real time, so the first renewal (≈ 6 days of domain time
//! after registration: 10,065 min lifetime − 24 h lookahead − ≤ 300 s jitter) falls
//! due within a couple of minutes. Every `RenewalResult` is read from a
//! `BroadcastSink` on a dedicated thread. The database and this run's NATS streams
//! are deleted at the end. Needs Postgres and NATS (the service refuses to start
//! without it) as the integration tests do.
//!
//! The speed-up compresses domain time but not the service's work: the ≤ 300 s of
//! jitter that spreads renewals in production is 60 ms here, so renewals fall due as
//! fast as providers were registered (a worst-case burst), and a one-hour access
//! token lasts 0.7 s, so each tenant refreshes its token about once a second.
//!
//! The plumbing (database, NATS prefixes, simulator and service start/stop, CPU
//! and memory counters, percentiles) is the shared test kit's, `subkeeper-testkit`.
//!
//! With `--backend embedded` the same fleet runs on the embedded SQLite store and
//! the in-process bus (a one-instance install; no Postgres sampling then).
//!
//! Run: `cargo bench --bench fleet -- [--providers N] [--speed S] [--concurrency C]
//! [--db-connections P] [--tenants T] [--timeout-secs S] [--backend postgres|embedded]
//! [--seed-healthy [--idle-secs N]] [--supervisor-threads N]`. Logs (warnings and up;
//! `RUST_LOG` to change) go to stderr, progress too; the report to stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::bail;
use chrono::{TimeDelta, Utc};
use clap::Parser;
use sqlx::{Connection, PgConnection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subkeeper::RunOptions;
use subkeeper::store::{Db, IfMissing, Store};
use subkeeper_actors::domain::{AttemptKind, ProviderId, RenewalAction, RenewalResult};
use subkeeper_actors::memory::BroadcastSink;
use subkeeper_actors::ports::clock::{ScaledClock, SharedClock, SystemClock};
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};
use subkeeper_testkit::backend::{Backend, TestBackend};
use subkeeper_testkit::proc::{self, CpuSample, Memory};
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, Operation};
use subkeeper_testkit::stats::Distribution;
use tokio::sync::broadcast;

/// Graph subscription lifetime the adapter asks for (10,070 min − 5 min skew
/// margin), in domain minutes; used only to explain the schedule in the output.
const LIFETIME_MINUTES: i64 = 10_065;

/// Results the broadcast channel buffers for the collector thread; the collector
/// keeps up easily, and a lag is reported if it ever falls behind.
const EVENT_BUFFER: usize = 8192;

/// How often progress is printed to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "N Graph providers against the in-process simulator")]
struct Args {
    /// Providers to seed.
    #[arg(long, default_value_t = 10_000)]
    providers: u32,
    /// Tenants the providers are spread over (one OAuth connection each).
    #[arg(long, default_value_t = 50)]
    tenants: u32,
    /// Domain seconds per real second. At 5000 the first renewal is due ≈ 103 s
    /// after registration and the 24 h lookahead is 17.3 s of real time.
    #[arg(long, default_value_t = 5000)]
    speed: u32,
    /// `renewal_concurrency`: provider calls in flight across the fleet.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// `database_max_connections` of the service's pool.
    #[arg(long, default_value_t = 10)]
    db_connections: u32,
    /// `supervisor_threads`: threads the supervisors run on (default: the
    /// service's, 1: all on the service's main thread; 0: one per core).
    #[arg(long)]
    supervisor_threads: Option<u32>,
    /// Give up after this many seconds of real time.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// The store and bus: `postgres` (Postgres + NATS JetStream, production) or
    /// `embedded` (the SQLite store and the in-process bus of a one-instance
    /// install; the providers are seeded the same way).
    #[arg(long, value_enum, default_value = "postgres")]
    backend: BenchBackend,
    /// Seed every provider healthy (a live subscription expiring in 6 domain
    /// days, a health row), as a running service leaves them, and measure the
    /// start-up instead: the time until `/readyz` says every provider is loaded
    /// and scheduled. Stops there.
    #[arg(long)]
    seed_healthy: bool,
    /// With `--seed-healthy`: once every provider is scheduled, leave the
    /// service idle this many seconds (real time; use `--speed 1` so nothing
    /// comes due) and report what idling cost the database: transactions
    /// committed and rows read (`pg_stat_database`), per hour.
    #[arg(long, default_value_t = 0)]
    idle_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `--backend`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BenchBackend {
    Postgres,
    Embedded,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    actix_rt::System::new().block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    subkeeper::install_crypto();
    // Deleted when dropped, whatever `measure` returns: the database and this
    // run's NATS subjects and streams (the service needs NATS at start-up even
    // though results go to the in-process sink here), or the data directory.
    let backend = TestBackend::create(
        match args.backend {
            BenchBackend::Postgres => Backend::PostgresNats,
            BenchBackend::Embedded => Backend::Embedded,
        },
        Purpose::Bench,
    )
    .await?;
    measure(&args, &backend).await
}

/// Migrates and seeds `N` providers over `tenants` tenants, interleaved (provider
/// `i` belongs to tenant `i % tenants`, rows in `i` order), as if tenants had
/// connected mailboxes over time: the fleet starts supervisors in table order, so
/// grouping by tenant would let one cached access token serve a whole tenant.
async fn seed(backend: &TestBackend, args: &Args) -> anyhow::Result<()> {
    let store = Store::open(
        &backend.location(),
        2,
        Arc::new(SystemClock),
        IfMissing::Create,
    )
    .await?;
    store.migrate().await?;
    let pool = match store.db() {
        Db::Postgres(pool) => pool,
        Db::Sqlite(pool) => return seed_sqlite(pool, args).await,
    };
    sqlx::query(
        "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, scope) \
         SELECT gen_random_uuid(), 'bench-' || t, 'client_credentials', 'bench-aad-' || t, \
                $2, $3, 'https://graph.microsoft.com/.default' \
         FROM generate_series(0, $1 - 1) AS t",
    )
    .bind(i64::from(args.tenants))
    .bind(GRAPH_CLIENT_ID)
    .bind(GRAPH_CLIENT_SECRET)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id) \
         SELECT gen_random_uuid(), c.tenant_id, 'graph_mail', 'mailbox ' || i || ' inbox', \
                'users/mbx' || i || '@' || c.tenant_id || '.example/messages', c.id \
         FROM generate_series(0, $1 - 1) AS i \
         JOIN oauth_credentials c ON c.tenant_id = 'bench-' || (i % $2) \
         ORDER BY i",
    )
    .bind(i64::from(args.providers))
    .bind(i64::from(args.tenants))
    .execute(pool)
    .await?;
    let seeded: i64 = sqlx::query_scalar("SELECT count(*) FROM providers")
        .fetch_one(pool)
        .await?;
    if seeded != i64::from(args.providers) {
        bail!("seeded {seeded} providers, wanted {}", args.providers);
    }
    pool.close().await;
    Ok(())
}

/// [`seed`] on the embedded store: the same rows, written one by one in one
/// transaction (SQLite has no `generate_series` or `gen_random_uuid`).
async fn seed_sqlite(pool: &sqlx::SqlitePool, args: &Args) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    let mut credentials = Vec::new();
    for t in 0..args.tenants {
        let id = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, scope, created_at, updated_at) \
             VALUES ($1, $2, 'client_credentials', $3, $4, $5, 'https://graph.microsoft.com/.default', $6, $6)",
        )
        .bind(id)
        .bind(format!("bench-{t}"))
        .bind(format!("bench-aad-{t}"))
        .bind(GRAPH_CLIENT_ID)
        .bind(GRAPH_CLIENT_SECRET)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        credentials.push(id);
    }
    for i in 0..args.providers {
        let t = i % args.tenants;
        sqlx::query(
            "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id, created_at, updated_at) \
             VALUES ($1, $2, 'graph_mail', $3, $4, $5, $6, $6)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(format!("bench-{t}"))
        .bind(format!("mailbox {i} inbox"))
        .bind(format!("users/mbx{i}@bench-{t}.example/messages"))
        .bind(credentials[t as usize])
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    pool.close().await;
    Ok(())
}

/// Gives every seeded provider a live subscription expiring in six days, a
/// healthy health row and a change cursor (the state a running service leaves).
async fn seed_healthy(url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    for sql in [
        "UPDATE providers SET status = 'connected'",
        "INSERT INTO subscriptions (provider_id, tenant_id, resource, external_id, client_state, expires_at, created_at, state) \
         SELECT p.id, p.tenant_id, p.resource, 'sub-' || p.id, md5(p.id::text), \
                now() + interval '6 days', now(), 'active' FROM providers p",
        "INSERT INTO provider_health (provider_id, tenant_id, subscription_status, subscription_expires_at, \
                last_renewal_attempt_at, last_renewal_result, consecutive_failure_count, next_renewal_at, updated_at) \
         SELECT p.id, p.tenant_id, 'healthy', now() + interval '6 days', now(), 'registered', 0, \
                now() + interval '5 days', now() FROM providers p",
        // A change cursor just taken, as a running service leaves it: without
        // one every provider's catch-up takes one at start-up (20 a second).
        "INSERT INTO provider_cursors (provider_id, cursor, cursor_at, checked_at, updated_at) \
         SELECT p.id, 'seeded', now(), now(), now() FROM providers p",
        "VACUUM ANALYZE",
    ] {
        sqlx::query(sql).execute(&mut conn).await?;
    }
    Ok(())
}

/// `pg_stat_database` counters of the bench's database: transactions
/// committed, rows returned by scans, rows fetched by index.
async fn database_counters(conn: &mut PgConnection) -> anyhow::Result<(i64, i64, i64)> {
    // A fresh snapshot of the statistics, not the one cached in this session.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_as(
        "SELECT xact_commit, tup_returned, tup_fetched FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Per table: sequential scans, rows they read, index scans, rows fetched by
/// index (`pg_stat_user_tables`).
async fn table_counters(
    conn: &mut PgConnection,
) -> anyhow::Result<BTreeMap<String, (i64, i64, i64, i64)>> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, COALESCE(seq_scan, 0), COALESCE(seq_tup_read, 0), \
                COALESCE(idx_scan, 0), COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, a, b, c, d)| (t, (a, b, c, d)))
        .collect())
}

/// Leaves the service idle for `span` and reports what that cost the
/// database, per hour. The counters lag a backend's flush by up to a few
/// seconds; over minutes that is noise.
async fn measure_idle(url: &str, n: usize, span: Duration) -> anyhow::Result<String> {
    let mut conn = PgConnection::connect(url).await?;
    // Let the start-up's writes settle into the counters first.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = database_counters(&mut conn).await?;
    let tables_before = table_counters(&mut conn).await?;
    eprintln!("idle for {} s …", span.as_secs());
    tokio::time::sleep(span).await;
    let after = database_counters(&mut conn).await?;
    let tables_after = table_counters(&mut conn).await?;
    let per_hour = |a: i64, b: i64| (b - a) as f64 * 3600.0 / span.as_secs_f64();
    let mut report = format!(
        "idle {n} providers for {} s: per hour {:.0} transactions committed, {:.0} rows returned, {:.0} rows fetched (pg_stat_database)",
        span.as_secs(),
        per_hour(before.0, after.0),
        per_hour(before.1, after.1),
        per_hour(before.2, after.2),
    );
    for (table, a) in &tables_after {
        let b = tables_before.get(table).copied().unwrap_or_default();
        if a.1 - b.1 + a.3 - b.3 == 0 {
            continue;
        }
        report.push_str(&format!(
            "\n  {table}: per hour {:.0} seq scans reading {:.0} rows, {:.0} index scans fetching {:.0} rows",
            per_hour(b.0, a.0),
            per_hour(b.1, a.1),
            per_hour(b.2, a.2),
            per_hour(b.3, a.3),
        ));
    }
    Ok(report)
}

/// Polls `/readyz` until every provider is loaded and scheduled; the seconds
/// since `start` it took, and the body last read.
async fn wait_scheduled(
    base_url: &str,
    n: usize,
    start: Instant,
    deadline: Instant,
) -> anyhow::Result<(f64, serde_json::Value)> {
    let http = reqwest::Client::new();
    let mut first_ready: Option<f64> = None;
    loop {
        let body: serde_json::Value = match http.get(format!("{base_url}/readyz")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if body["status"] == "ready" && first_ready.is_none() {
            first_ready = Some(start.elapsed().as_secs_f64());
        }
        if body["providers_scheduled"].as_u64() == Some(n as u64) && body["status"] == "ready" {
            eprintln!("/readyz ready after {:.2} s", first_ready.unwrap_or(0.0));
            return Ok((start.elapsed().as_secs_f64(), body));
        }
        if Instant::now() >= deadline {
            bail!("not every provider scheduled in time: {body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seeds, starts the simulator and the service, waits for every provider to
/// register and then renew once, and prints the report.
async fn measure(args: &Args, backend: &TestBackend) -> anyhow::Result<()> {
    // Postgres: the database (its backends are sampled); embedded: none.
    let url = backend
        .database()
        .map(|db| db.url.clone())
        .unwrap_or_default();
    let url = url.as_str();
    if args.providers == 0 || args.tenants == 0 || args.speed == 0 {
        bail!("--providers, --tenants and --speed must be positive");
    }
    seed(backend, args).await?;
    if args.seed_healthy {
        anyhow::ensure!(!url.is_empty(), "--seed-healthy seeds Postgres only");
        seed_healthy(url).await?;
    }
    let n = args.providers as usize;

    let base: SharedClock = Arc::new(ScaledClock::new(Utc::now(), args.speed));
    let (sim, sim_server) = sim::start(sim::test_config(), base).await?;
    // The simulator's server threads exist once it answers; remember them so
    // their CPU can be told apart from the service's HTTP threads.
    let simulator_threads: HashSet<u32> = proc::threads().into_keys().collect();
    let clock: SharedClock = sim.clock();

    let (listener, public_url) = service::bind_local()?;
    let mut config = service::config_on(backend, &sim_server, &public_url);
    config.database_max_connections = args.db_connections;
    config.renewal_concurrency = args.concurrency;
    if let Some(threads) = args.supervisor_threads {
        config.supervisor_threads = threads;
    }
    let supervisor_threads = config.supervisor_threads();
    // No webhooks flow in this bench: after 24 h of domain time (17 s here)
    // silence detection would flag every provider. It is not what is measured.
    // An idle measurement keeps silence detection on: its sweep is part of
    // what idling costs (nothing goes silent within minutes at `--speed 1`).
    if args.idle_secs == 0 {
        config.mail_silence_seconds = 0;
        config.calendar_silence_seconds = 0;
    }
    config.validate()?;
    let lookahead = TimeDelta::minutes(config.renewal_lookahead_minutes);
    let jitter = config.renewal_jitter_seconds;

    let events = BroadcastSink::new(EVENT_BUFFER);
    let rx = events.subscribe();
    let start = Instant::now();
    let start_cpu = CpuSample::take();
    let progress = Arc::new(Mutex::new(Progress::new(n)));
    {
        let progress = progress.clone();
        // Detached: the sinks' senders live in actors that may outlive the service.
        std::thread::Builder::new()
            .name("bench-collector".into())
            .spawn(move || collect(rx, &progress))?;
    }
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = if url.is_empty() {
        None
    } else {
        let (url, progress, sampling) = (url.to_owned(), progress.clone(), sampling.clone());
        Some(
            std::thread::Builder::new()
                .name("bench-pg-sampler".into())
                .spawn(move || sample_backends(&url, &progress, &sampling))?,
        )
    };
    // Threads that exist before the service: the actix arbiters that appear by
    // the time its fleet runs are the supervisor threads and the service's HTTP
    // workers (its server is built in the same poll that reports the fleet
    // running, and both are named alike, so they cannot be told apart here).
    let before_service: HashSet<u32> = proc::threads().into_keys().collect();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let service = Service::spawn(
        config,
        listener,
        public_url,
        RunOptions {
            clock: Some(clock),
            events: Some(Arc::new(events)),
            on_started: Some(started_tx),
        },
    );
    let pool_threads: HashSet<u32> = match started_rx.await {
        Ok(_) => proc::threads()
            .into_iter()
            .filter(|(tid, t)| !before_service.contains(tid) && t.name.starts_with("actix-rt"))
            .map(|(tid, _)| tid)
            .collect(),
        Err(_) => HashSet::new(),
    };

    eprintln!(
        "{} providers / {} tenants, speed {}×, renewal_concurrency {}, pool {}, supervisor threads {supervisor_threads} ({} service arbiters found, HTTP workers included): first renewals due ≈ {:.0} s after registration",
        args.providers,
        args.tenants,
        args.speed,
        args.concurrency,
        args.db_connections,
        pool_threads.len(),
        (LIFETIME_MINUTES * 60 - lookahead.num_seconds()) as f64 / f64::from(args.speed)
    );
    let deadline = start + Duration::from_secs(args.timeout_secs);
    if args.seed_healthy {
        let scheduled = wait_scheduled(&service.base_url, n, start, deadline).await;
        let cpu = CpuSample::take();
        let peak = Memory::now().peak_rss_kib;
        let db_attempts = attempt_counts(backend).await.unwrap_or_default();
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.map(std::thread::JoinHandle::join);
        let idle = if args.idle_secs > 0 && scheduled.is_ok() {
            Some(measure_idle(url, n, Duration::from_secs(args.idle_secs)).await?)
        } else {
            None
        };
        let requests = sim.requests().len();
        if let Err(e) = service.stop_with(sim_server).await {
            eprintln!("{e:#}");
        }
        let (secs, body) = scheduled?;
        if let Some(idle) = idle {
            println!("{idle}");
        }
        let process: u64 = cpu.threads_since(&start_cpu, |_, _| "all").values().sum();
        println!(
            "start-up with state in the database: {n} providers, all loaded and scheduled {secs:.2} s after start; \
             peak RSS {:.0} MiB (service + simulator + harness); CPU {:.1} s; provider requests {requests}; attempts recorded {db_attempts:?}; /readyz {body}",
            peak as f64 / 1024.0,
            process as f64 / proc::ticks_per_second()
        );
        return Ok(());
    }
    let mut next_report = start + PROGRESS_EVERY;
    let gave_up = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (done, line) = {
            let p = progress.lock().unwrap();
            (
                p.all_renewed.is_some(),
                format!(
                    "t={:>6.1}s registered {}/{n}  first renewal attempted {}/{n}  renewed {}/{n}  failed results {}  rss {} MiB",
                    start.elapsed().as_secs_f64(),
                    p.registered.len(),
                    p.first_renew.len(),
                    p.renewed.len(),
                    p.failed,
                    Memory::now().rss_kib / 1024
                ),
            )
        };
        if done {
            break None;
        }
        if service.is_finished() {
            break Some("the service stopped on its own".to_owned());
        }
        if Instant::now() >= deadline {
            break Some(format!(
                "gave up after {} s: not every provider renewed ({line})",
                args.timeout_secs
            ));
        }
        if Instant::now() >= next_report {
            eprintln!("{line}");
            next_report += PROGRESS_EVERY;
        }
    };
    let peak_rss_kib = Memory::now().peak_rss_kib;

    // What the simulator and the database saw, read before stopping anything.
    let live_at_simulator = sim.subscriptions().len();
    let mut operations: BTreeMap<String, usize> = BTreeMap::new();
    let requests = sim.requests();
    if sim.requests_dropped() > 0 {
        eprintln!(
            "note: the simulator journal let go of its {} oldest requests; the operation counts cover the latest {} only",
            sim.requests_dropped(),
            requests.len()
        );
    }
    // The journal keeps the latest requests (up to its capacity) with their
    // bodies: its size as JSON is a rough lower bound of what it adds to the RSS.
    let journal_bytes = serde_json::to_vec(&requests).map_or(0, |v| v.len());
    for request in requests {
        let op = match request.operation {
            Operation::Token => "token",
            Operation::Create => "create",
            Operation::Renew => "renew (PATCH)",
            _ => "other",
        };
        *operations.entry(op.to_owned()).or_default() += 1;
    }
    let db_attempts = attempt_counts(backend).await.unwrap_or_default();
    sampling.store(false, Ordering::Relaxed);
    let backends = sampler.and_then(|s| s.join().ok()).unwrap_or_default();

    if let Err(e) = service.stop_with(sim_server).await {
        eprintln!("{e:#}");
    }

    let p = progress.lock().unwrap();
    let report = Report {
        args,
        start,
        n,
        lookahead,
        jitter,
        peak_rss_kib,
        live_at_simulator,
        operations,
        journal_bytes,
        db_attempts,
        start_cpu,
        simulator_threads,
        pool_threads,
        supervisor_threads,
        backends,
    };
    report.print(&p);
    match gave_up {
        None => Ok(()),
        Some(why) => bail!("{why}"),
    }
}

/// What the collector has seen so far.
struct Progress {
    n: usize,
    /// Providers with a successful `registered` result.
    registered: HashSet<ProviderId>,
    /// Providers whose first timer-driven renew attempt has finished.
    first_renew: HashSet<ProviderId>,
    /// Providers with a successful timer-driven `renewed` result.
    renewed: HashSet<ProviderId>,
    /// Lag of each provider's first timer-driven renew attempt, domain milliseconds.
    lags_ms: Distribution,
    /// First timer-driven renew attempts that started before their schedule (by
    /// the clock's rounding), counted as a lag of 0.
    early: usize,
    /// First timer-driven renew attempts that did not end `renewed`.
    first_renew_not_renewed: usize,
    /// Provider call durations of successful registrations, wall ms.
    register_ms: Distribution,
    /// Provider call durations of successful renewals, wall ms.
    renew_ms: Distribution,
    /// Results by (attempt, action).
    by_kind: BTreeMap<(String, String), usize>,
    /// Results by error class.
    errors: BTreeMap<String, usize>,
    /// Failed results.
    failed: usize,
    /// Results lost because the collector fell behind the broadcast channel.
    lagged: u64,
    first_registered: Option<CpuSample>,
    all_registered: Option<CpuSample>,
    first_renewed: Option<CpuSample>,
    all_renewed: Option<CpuSample>,
}

impl Progress {
    fn new(n: usize) -> Self {
        Self {
            n,
            registered: HashSet::with_capacity(n),
            first_renew: HashSet::with_capacity(n),
            renewed: HashSet::with_capacity(n),
            lags_ms: Distribution::new(),
            early: 0,
            first_renew_not_renewed: 0,
            register_ms: Distribution::new(),
            renew_ms: Distribution::new(),
            by_kind: BTreeMap::new(),
            errors: BTreeMap::new(),
            failed: 0,
            lagged: 0,
            first_registered: None,
            all_registered: None,
            first_renewed: None,
            all_renewed: None,
        }
    }

    fn record(&mut self, r: &RenewalResult) {
        *self
            .by_kind
            .entry((r.attempt.to_string(), r.action.to_string()))
            .or_default() += 1;
        if !r.success {
            self.failed += 1;
            let class = r.error_class.map_or("none", |c| c.as_str());
            *self.errors.entry(class.to_owned()).or_default() += 1;
        }
        if r.action == RenewalAction::Registered && self.registered.insert(r.provider_id) {
            self.register_ms.record(r.duration_ms);
            if self.first_registered.is_none() {
                self.first_registered = Some(CpuSample::take());
            }
            if self.registered.len() == self.n {
                self.all_registered = Some(CpuSample::take());
            }
        }
        let Some(scheduled) = r.scheduled_at else {
            return;
        };
        if r.attempt == AttemptKind::Renew && self.first_renew.insert(r.provider_id) {
            let lag = (r.attempted_at - scheduled).num_milliseconds();
            self.early += usize::from(lag < 0);
            self.lags_ms.record(u64::try_from(lag).unwrap_or(0));
            if r.action != RenewalAction::Renewed {
                self.first_renew_not_renewed += 1;
            }
        }
        if r.action == RenewalAction::Renewed && self.renewed.insert(r.provider_id) {
            self.renew_ms.record(r.duration_ms);
            if self.first_renewed.is_none() {
                self.first_renewed = Some(CpuSample::take());
            }
            if self.renewed.len() == self.n {
                self.all_renewed = Some(CpuSample::take());
            }
        }
    }
}

/// Reads every result until the channel closes (or the process ends).
fn collect(mut rx: broadcast::Receiver<RenewalResult>, progress: &Mutex<Progress>) {
    loop {
        match rx.blocking_recv() {
            Ok(result) => progress.lock().unwrap().record(&result),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                progress.lock().unwrap().lagged += missed;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Which part of the run a backend sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Before every provider is registered.
    Registration,
    /// From the first renewal until every provider has renewed.
    Renewals,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::Registration => "registration",
            Self::Renewals => "renewals",
        }
    }
}

/// What the sampler saw of the service's Postgres backends during one phase.
#[derive(Default)]
struct PhaseBackends {
    /// Samples taken.
    samples: u64,
    /// Backends summed over the samples, by (state, wait event).
    states: BTreeMap<(String, String), u64>,
    /// Per backend pid: CPU ticks at its first and at its latest sample.
    cpu: HashMap<i32, (u64, u64)>,
    /// Cluster-wide WAL and checkpoint counters at the first and latest sample.
    wal: Option<(WalCounters, WalCounters)>,
    /// This database's committed plus rolled-back transactions
    /// (`pg_stat_database`) at the first and latest sample.
    xacts: Option<(i64, i64)>,
}

/// Transactions the sampler itself runs per sample (three single statements,
/// each its own transaction), taken off the database's count.
const SAMPLER_XACTS: i64 = 3;

/// Cluster-wide counters (every database on the server, not only this run's):
/// WAL records, full-page images, WAL bytes, checkpoints.
type WalCounters = (i64, i64, i64, i64);

impl PhaseBackends {
    /// CPU ticks this database's backends used between their first and last sample.
    fn cpu_ticks(&self) -> u64 {
        self.cpu.values().map(|(first, last)| last - first).sum()
    }
}

type BackendSamples = BTreeMap<Phase, PhaseBackends>;

/// Samples `pg_stat_activity` for the bench database every 100 ms on its own
/// thread and runtime (so it does not compete with the fleet's thread): are the
/// service's connections busy in Postgres (on CPU, waiting for the WAL flush), or
/// idle in a transaction waiting for the service to send the next statement?
fn sample_backends(url: &str, progress: &Mutex<Progress>, running: &AtomicBool) -> BackendSamples {
    let mut out = BackendSamples::new();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return out;
    };
    rt.block_on(async {
        let Ok(mut conn) = PgConnection::connect(url).await else {
            return;
        };
        while running.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let phase = {
                let p = progress.lock().unwrap();
                if p.all_registered.is_none() {
                    Some(Phase::Registration)
                } else if p.first_renewed.is_some() && p.all_renewed.is_none() {
                    Some(Phase::Renewals)
                } else {
                    None
                }
            };
            let Some(phase) = phase else { continue };
            let rows: Vec<(i32, String, String)> = sqlx::query_as(
                "SELECT pid, coalesce(state, '?'), \
                        coalesce(wait_event_type || ':' || wait_event, 'running (CPU)') \
                 FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
            // After a checkpoint, the first change to each page writes the whole
            // page to the WAL; other sessions' CREATE/DROP DATABASE request them.
            let wal: Option<WalCounters> = sqlx::query_as(
                "SELECT w.wal_records, w.wal_fpi, w.wal_bytes::bigint, \
                        b.checkpoints_timed + b.checkpoints_req \
                 FROM pg_stat_wal w, pg_stat_bgwriter b",
            )
            .fetch_one(&mut conn)
            .await
            .ok();
            let xacts: Option<i64> = sqlx::query_scalar(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database \
                 WHERE datname = current_database()",
            )
            .fetch_one(&mut conn)
            .await
            .ok();
            let phase = out.entry(phase).or_default();
            phase.samples += 1;
            if let Some(now) = wal {
                phase.wal.get_or_insert((now, now)).1 = now;
            }
            if let Some(now) = xacts {
                phase.xacts.get_or_insert((now, now)).1 = now;
            }
            for (pid, state, wait) in rows {
                *phase.states.entry((state, wait)).or_default() += 1;
                if let Some(now) = proc::own_ticks(pid) {
                    phase.cpu.entry(pid).or_insert((now, now)).1 = now;
                }
            }
        }
    });
    out
}

/// Attempts as the store recorded them, by (attempt, action).
async fn attempt_counts(backend: &TestBackend) -> anyhow::Result<Vec<(String, String, i64)>> {
    const COUNTS: &str =
        "SELECT attempt, action, count(*) FROM renewal_attempts GROUP BY 1, 2 ORDER BY 1, 2";
    let store = Store::connect(&backend.location(), 1, Arc::new(SystemClock)).await?;
    Ok(match store.db() {
        Db::Postgres(pool) => sqlx::query_as(COUNTS).fetch_all(pool).await?,
        Db::Sqlite(pool) => sqlx::query_as(COUNTS).fetch_all(pool).await?,
    })
}

struct Report<'a> {
    args: &'a Args,
    /// When the service was started: milestones are given from here.
    start: Instant,
    n: usize,
    lookahead: TimeDelta,
    jitter: i64,
    peak_rss_kib: u64,
    live_at_simulator: usize,
    operations: BTreeMap<String, usize>,
    journal_bytes: usize,
    db_attempts: Vec<(String, String, i64)>,
    start_cpu: CpuSample,
    simulator_threads: HashSet<u32>,
    /// The service's arbiter threads: its HTTP workers and, with
    /// `supervisor_threads` > 1, the supervisor threads.
    pool_threads: HashSet<u32>,
    /// Supervisor threads the service runs (`supervisor_threads`, 0 resolved).
    supervisor_threads: usize,
    backends: BackendSamples,
}

impl Report<'_> {
    fn print(&self, p: &Progress) {
        let a = self.args;
        let speed = f64::from(a.speed);
        let secs = |s: &Option<CpuSample>| {
            s.as_ref().map_or("—".to_owned(), |s| {
                format!("{:.2}", s.at.duration_since(self.start).as_secs_f64())
            })
        };
        println!();
        println!(
            "fleet benchmark: {} providers / {} tenants, speed {}×, renewal_concurrency {}, db pool {}, supervisor threads {}",
            a.providers,
            a.tenants,
            a.speed,
            a.concurrency,
            a.db_connections,
            self.supervisor_threads
        );
        println!(
            "schedule: lifetime {LIFETIME_MINUTES} min, lookahead {} min, jitter ≤ {} s → first renewal ≈ {:.1} s real after registration; renewal window (lookahead) = {:.2} s real",
            self.lookahead.num_minutes(),
            self.jitter,
            (LIFETIME_MINUTES * 60 - self.lookahead.num_seconds()) as f64 / speed,
            self.lookahead.num_seconds() as f64 / speed
        );
        println!();
        println!("| milestone (wall time since service start) | seconds |");
        println!("|---|---|");
        println!(
            "| first provider registered | {} |",
            secs(&p.first_registered)
        );
        println!(
            "| all {} registered | {} |",
            self.n,
            secs(&p.all_registered)
        );
        println!("| first provider renewed | {} |", secs(&p.first_renewed));
        println!("| all {} renewed once | {} |", self.n, secs(&p.all_renewed));

        let lags = &p.lags_ms;
        println!();
        println!(
            "| renewal lag, first timer-driven renew ({} providers) | domain s | real ms |",
            lags.len()
        );
        println!("|---|---|---|");
        for (label, pct) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            let lag = lags.percentile(pct).unwrap_or(0);
            println!(
                "| {label} | {:.1} | {:.1} |",
                lag as f64 / 1000.0,
                lag as f64 / speed
            );
        }
        if p.early > 0 {
            println!(
                "({} attempts started before their schedule, by the clock's rounding; counted as 0)",
                p.early
            );
        }
        let window_ms = self.lookahead.num_milliseconds() as f64;
        if let Some(p99) = lags.percentile(99.0) {
            println!(
                "p99 lag = {:.2} % of the {} min renewal window",
                100.0 * p99 as f64 / window_ms,
                self.lookahead.num_minutes()
            );
        }

        println!();
        println!("| provider call (wall ms) | n | p50 | p99 | mean |");
        println!("|---|---|---|---|---|");
        for (label, values) in [
            ("register (create)", &p.register_ms),
            ("renew (PATCH)", &p.renew_ms),
        ] {
            println!(
                "| {label} | {} | {} | {} | {:.1} |",
                values.len(),
                values.percentile(50.0).unwrap_or(0),
                values.percentile(99.0).unwrap_or(0),
                values.mean()
            );
        }

        println!();
        if let (Some(first), Some(all)) = (&p.first_registered, &p.all_registered) {
            let span = (all.at - first.at).as_secs_f64();
            let overall = self.n as f64 / all.at.duration_since(self.start).as_secs_f64();
            let steady = (self.n.saturating_sub(1)) as f64 / span.max(1e-9);
            let bound = f64::from(a.concurrency) * 1000.0 / p.register_ms.mean().max(1e-9);
            println!(
                "registration throughput: {overall:.0}/s from service start, {steady:.0}/s first→last; \
                 concurrency bound (concurrency ÷ mean create call) {bound:.0}/s → observed/bound = {:.2}",
                steady / bound
            );
        }
        if let (Some(first), Some(all)) = (&p.first_renewed, &p.all_renewed) {
            let span = (all.at - first.at).as_secs_f64();
            println!(
                "renewal throughput first→last: {:.0}/s",
                (self.n.saturating_sub(1)) as f64 / span.max(1e-9)
            );
        }
        println!(
            "peak RSS (VmHWM; service + simulator + this harness in one process): {:.0} MiB at end, {} MiB when all were registered",
            self.peak_rss_kib as f64 / 1024.0,
            p.all_registered.as_ref().map_or("—".into(), |s| format!(
                "{:.0}",
                s.memory.peak_rss_kib as f64 / 1024.0
            ))
        );

        let wall = self.print_cpu(
            "registration (start → all registered)",
            Some(&self.start_cpu),
            p.all_registered.as_ref(),
        );
        self.print_backends(Phase::Registration, wall);
        let wall = self.print_cpu(
            "renewals (first → all renewed)",
            p.first_renewed.as_ref(),
            p.all_renewed.as_ref(),
        );
        self.print_backends(Phase::Renewals, wall);

        println!();
        println!(
            "results: {}",
            p.by_kind
                .iter()
                .map(|((attempt, action), c)| format!("{attempt}→{action} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !p.errors.is_empty() {
            println!("failed results by class: {:?}", p.errors);
        }
        println!(
            "first timer-driven renew attempts not ending `renewed`: {}; results missed by the collector: {}",
            p.first_renew_not_renewed, p.lagged
        );
        println!(
            "store: {}",
            self.db_attempts
                .iter()
                .map(|(attempt, action, c)| format!("{attempt}→{action} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "simulator: {} live subscriptions; requests {:?}; request journal ≈ {:.1} MiB as JSON",
            self.live_at_simulator,
            self.operations,
            self.journal_bytes as f64 / (1024.0 * 1024.0)
        );
    }

    fn print_backends(&self, phase: Phase, wall: Option<f64>) {
        let Some(seen) = self.backends.get(&phase) else {
            return;
        };
        let n = seen.samples.max(1) as f64;
        println!();
        let cpu = seen.cpu_ticks() as f64 / proc::ticks_per_second();
        println!(
            "service's Postgres connections during {} (pool {}; mean over {} samples, 100 ms apart); \
             their backends used {cpu:.1} CPU s{}:",
            phase.label(),
            self.args.db_connections,
            seen.samples,
            wall.map_or(String::new(), |w| format!(" = {:.2} cores", cpu / w))
        );
        if let Some((first, last)) = seen.wal {
            let records = (last.0 - first.0).max(0);
            let bytes = (last.2 - first.2).max(0) as f64;
            println!(
                "whole Postgres server meanwhile (all databases): {} checkpoints, {:.0} MiB WAL = {:.1} KiB per provider attempt, {:.0} % of WAL records full-page images",
                last.3 - first.3,
                bytes / (1024.0 * 1024.0),
                bytes / 1024.0 / self.n as f64,
                100.0 * (last.1 - first.1).max(0) as f64 / records.max(1) as f64
            );
        }
        if let Some((first, last)) = seen.xacts {
            // Statistics reach pg_stat_database when a backend goes idle (at
            // most about a second late), which over a phase of many seconds
            // is noise.
            let service =
                (last - first - SAMPLER_XACTS * seen.samples.saturating_sub(1) as i64).max(0);
            println!(
                "Postgres transactions of this database: {service} = {:.0} per 1,000 provider attempts (the sampler's own taken off)",
                service as f64 * 1000.0 / self.n as f64
            );
        }
        println!("| state | waiting on | mean connections |");
        println!("|---|---|---|");
        let mut rows: Vec<_> = seen.states.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1));
        for ((state, wait), count) in rows {
            println!("| {state} | {wait} | {:.2} |", *count as f64 / n);
        }
    }

    /// Prints the CPU table of a phase; returns its wall time in seconds.
    fn print_cpu(
        &self,
        phase: &str,
        from: Option<&CpuSample>,
        to: Option<&CpuSample>,
    ) -> Option<f64> {
        let (Some(from), Some(to)) = (from, to) else {
            return None;
        };
        let hz = proc::ticks_per_second();
        let wall = to.wall_since(from).as_secs_f64().max(1e-9);
        let main_tid = std::process::id();
        let groups = to.threads_since(from, |tid, name| {
            if tid == main_tid {
                "main thread (fleet + supervisors unless on their threads, Graph client, sqlx)"
            } else if self.pool_threads.contains(&tid) {
                "service arbiters: HTTP workers (+ supervisor threads if > 1)"
            } else if name == "bench-collector" {
                "bench collector"
            } else if self.simulator_threads.contains(&tid) {
                "simulator HTTP threads"
            } else {
                "other threads"
            }
        });
        let process: u64 = groups.values().sum();
        let pg = to.named_since(from, "postgres");
        let machine = to.machine.since(&from.machine);
        let (busy, total) = (machine.busy, machine.total.max(1));
        println!();
        println!("CPU during {phase}, {wall:.1} s wall:");
        println!("| where | CPU s | cores |");
        println!("|---|---|---|");
        for (group, t) in &groups {
            let s = *t as f64 / hz;
            println!("| {group} | {s:.1} | {:.2} |", s / wall);
        }
        let s = process as f64 / hz;
        println!("| **bench process total** | {s:.1} | {:.2} |", s / wall);
        let s = pg as f64 / hz;
        println!(
            "| postgres processes (all databases) | {s:.1} | {:.2} |",
            s / wall
        );
        let other = busy.saturating_sub(process).saturating_sub(pg);
        println!(
            "| other processes (builds, other sessions' tests…) | {:.1} | {:.2} |",
            other as f64 / hz,
            other as f64 / hz / wall
        );
        println!(
            "| machine busy (all processes) | {:.1} | {:.2} of {} ({:.0} %) |",
            busy as f64 / hz,
            busy as f64 / hz / wall,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            100.0 * busy as f64 / total as f64
        );
        Some(wall)
    }
}
