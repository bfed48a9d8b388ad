//! Catch-up benchmark: N Graph mail providers, subkeeper stopped for an hour
//! while every mailbox changes, then restarted.
//!
//! Measures, on this machine:
//! - the time from the restart until every provider has caught up (its cursor
//!   advanced past the outage), at the configured `catch_up_starts_per_second`
//!   and `catch_up_concurrency`;
//! - catch-up throughput: changes read from the simulator's delta and stored on
//!   the webhook stream per second (`subkeeper_catch_up_replayed_total` over the
//!   catch-up's wall time), and separately for one provider with many changes
//!   (`--big` changes on the first provider);
//! - with `--quiet-day`, the provider calls quiet providers cost over 24 h of
//!   provider time at the default `poll_after_silence` (the clock is advanced in
//!   30-minute steps; `subkeeper_catch_up_calls_total` before and after).
//!
//! How: a fresh database is migrated and seeded by SQL with N `graph_mail`
//! providers over `--tenants` tenants (as `benches/fleet.rs` does); the
//! simulator and the service run in this process through `subkeeper::run_with`
//! on the simulator's clock. Once every provider has registered and taken its
//! cursor, the service is stopped, provider time moves one hour, every mailbox
//! gets `--changes` dropped changes (the first one `--big`), and the service is
//! started again. Needs Postgres and NATS, as the integration tests do.
//!
//! Run: `cargo bench --bench catchup -- [--providers N] [--tenants T]
//! [--changes C] [--big B] [--starts-per-second S] [--concurrency C]
//! [--quiet-day]`. Progress on stderr, the report on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::bail;
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkeeper::RunOptions;
use subkeeper::store::{Db, Location, Store};
use subkeeper_actors::ports::clock::{SharedClock, SystemClock};
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, ChangeRequest, ChangeType, Delivery, FeedRef};

#[derive(Parser, Debug, Clone)]
#[command(about = "Catch-up after a one-hour outage of N Graph providers")]
struct Args {
    /// Providers to seed.
    #[arg(long, default_value_t = 10_000)]
    providers: u32,
    /// Tenants the providers are spread over.
    #[arg(long, default_value_t = 50)]
    tenants: u32,
    /// Changes every mailbox gets during the outage.
    #[arg(long, default_value_t = 1)]
    changes: u32,
    /// Changes the first mailbox gets during the outage (single-provider throughput).
    #[arg(long, default_value_t = 10_000)]
    big: u32,
    /// `catch_up_starts_per_second`.
    #[arg(long, default_value_t = 20)]
    starts_per_second: u32,
    /// `catch_up_concurrency`.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Also advance 24 h of provider time over the quiet fleet and count the
    /// silence checks' provider calls.
    #[arg(long)]
    quiet_day: bool,
    /// Give up after this many seconds per phase.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
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
    let db = TestDb::create(Purpose::Bench).await?;
    let bus = TestBus::new(Purpose::Bench);
    measure(&args, &db, &bus).await
}

/// N `graph_mail` providers over `tenants` tenants, interleaved.
async fn seed(url: &str, args: &Args) -> anyhow::Result<Vec<String>> {
    let store = Store::connect(&Location::Postgres(url.into()), 2, Arc::new(SystemClock)).await?;
    store.migrate().await?;
    let Db::Postgres(pool) = store.db() else {
        bail!("the catch-up bench seeds Postgres");
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
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id, created_at) \
         SELECT gen_random_uuid(), c.tenant_id, 'graph_mail', 'mailbox ' || i || ' inbox', \
                'users/mbx' || i || '@' || c.tenant_id || '.example/messages', c.id, \
                now() + i * interval '1 microsecond' \
         FROM generate_series(0, $1 - 1) AS i \
         JOIN oauth_credentials c ON c.tenant_id = 'bench-' || (i % $2) \
         ORDER BY i",
    )
    .bind(i64::from(args.providers))
    .bind(i64::from(args.tenants))
    .execute(pool)
    .await?;
    let resources: Vec<String> =
        sqlx::query_scalar("SELECT resource FROM providers ORDER BY created_at")
            .fetch_all(pool)
            .await?;
    pool.close().await;
    Ok(resources)
}

/// Providers whose cursor was taken or advanced at or after `since`.
async fn caught_up_since(pool: &sqlx::PgPool, since: DateTime<Utc>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM provider_cursors WHERE cursor IS NOT NULL AND cursor_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await
    .unwrap_or(0)
}

/// Waits until `caught_up_since(since)` reaches `n`; the seconds it took.
async fn wait_caught_up(
    pool: &sqlx::PgPool,
    since: DateTime<Utc>,
    n: i64,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(5);
    loop {
        let done = caught_up_since(pool, since).await;
        if done >= n {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > timeout {
            bail!("{what}: only {done}/{n} after {timeout:?}");
        }
        if Instant::now() >= next_report {
            eprintln!(
                "{what}: {done}/{n} after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            next_report += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of an unlabelled-by-us counter summed over its series.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = subkeeper_testkit::metrics::scrape(http, base)
        .await
        .unwrap();
    subkeeper_testkit::metrics::sum(&text, name, &[])
}

async fn measure(args: &Args, db: &TestDb, bus: &TestBus) -> anyhow::Result<()> {
    let url = db.url.as_str();
    let resources = seed(url, args).await?;
    let n = i64::from(args.providers);
    let pool = sqlx::PgPool::connect(url).await?;
    let (sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock)).await?;
    let clock: SharedClock = sim.clock();
    let timeout = Duration::from_secs(args.timeout_secs);

    let (listener, public_url) = service::bind_local()?;
    let mut config = service::config(db, bus, &sim_server, &public_url);
    config.mail_silence_seconds = 0;
    config.calendar_silence_seconds = 0;
    config.catch_up_starts_per_second = args.starts_per_second;
    config.catch_up_concurrency = args.concurrency;
    config.catch_up_sweep_seconds = 1;
    // Every replay is stored on the webhook stream: more than the test kit's
    // small default holds (the catch-up refuses to skip what it cannot store).
    config.nats_webhook_stream_max_bytes = 1 << 30;
    config.validate()?;
    let options = || RunOptions {
        clock: Some(clock.clone()),
        ..RunOptions::default()
    };
    let http = reqwest::Client::new();

    // Registration: every provider registers and takes its cursor.
    let started = clock.now();
    let t = Instant::now();
    let service = Service::spawn(config.clone(), listener, public_url.clone(), options());
    service.wait_ready(&http, Duration::from_secs(60)).await?;
    wait_caught_up(&pool, started, n, "cursors taken", timeout).await?;
    let registration = t.elapsed().as_secs_f64();
    eprintln!("{n} providers registered with cursors in {registration:.1} s");
    service.stop(Duration::from_secs(60)).await?;

    // One hour of provider time passes with subkeeper down; every mailbox changes.
    sim.advance(TimeDelta::hours(1));
    let t = Instant::now();
    let mut made = 0_u64;
    for (i, resource) in resources.iter().enumerate() {
        let count = if i == 0 { args.big } else { args.changes };
        for _ in 0..count {
            sim.make_change(
                ChangeRequest::new(FeedRef::graph(resource.clone()), ChangeType::Created)
                    .delivery(Delivery::Drop),
            )
            .await?;
            made += 1;
        }
    }
    eprintln!("{made} changes made in {:.1} s", t.elapsed().as_secs_f64());

    // Restart: everything is caught up.
    let restarted_at = clock.now();
    let (listener, public_url) = service::bind_local()?;
    let mut config = config.clone();
    config.public_url = public_url.clone();
    let t = Instant::now();
    let service = Service::spawn(config.clone(), listener, public_url.clone(), options());
    service.wait_ready(&http, Duration::from_secs(60)).await?;
    let first = {
        let first_id: String =
            sqlx::query_scalar("SELECT id::text FROM providers ORDER BY created_at LIMIT 1")
                .fetch_one(&pool)
                .await?;
        first_id
    };
    let mut big_seconds = None;
    let fleet_seconds = loop {
        if big_seconds.is_none() {
            let done: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM provider_cursors WHERE provider_id = $1::uuid AND cursor_at >= $2 AND page IS NULL)",
            )
            .bind(&first)
            .bind(restarted_at)
            .fetch_one(&pool)
            .await?;
            if done {
                big_seconds = Some(t.elapsed().as_secs_f64());
            }
        }
        if caught_up_since(&pool, restarted_at).await >= n && big_seconds.is_some() {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > timeout {
            bail!("not caught up within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let replayed = metric(&http, &public_url, "subkeeper_catch_up_replayed_total").await;
    let calls = metric(&http, &public_url, "subkeeper_catch_up_calls_total").await;
    println!("## catch-up after a one-hour outage");
    println!(
        "providers {n}, tenants {}, changes per mailbox {}, first mailbox {}, catch_up_starts_per_second {}, catch_up_concurrency {}, page size {}",
        args.tenants,
        args.changes,
        args.big,
        args.starts_per_second,
        args.concurrency,
        config.catch_up_page_size
    );
    println!("registration with cursors: {registration:.1} s");
    println!(
        "every provider caught up: {fleet_seconds:.1} s after the restart ({:.1} providers/s)",
        n as f64 / fleet_seconds
    );
    println!(
        "changes replayed {replayed:.0} (made {made}), delta calls {calls:.0}: {:.0} changes/s over the whole catch-up",
        replayed / fleet_seconds
    );
    if let Some(big) = big_seconds {
        println!(
            "first mailbox, {} changes: caught up {big:.1} s after the restart ({:.0} changes/s, while the rest of the fleet also ran)",
            args.big,
            f64::from(args.big) / big
        );
    }

    if args.quiet_day {
        // 24 h of provider time over the quiet fleet, in 30-minute steps; each
        // step waits for the checks it made due.
        let before = metric(&http, &public_url, "subkeeper_catch_up_calls_total").await;
        let poll = TimeDelta::seconds(config.mail_poll_after_silence_seconds);
        for step in 0..48 {
            sim.advance(TimeDelta::minutes(30));
            let at = clock.now();
            // Every check this step made due has run once no provider's last
            // proof of life is older than `poll_after_silence`.
            let deadline = Instant::now() + timeout;
            loop {
                let stale: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM provider_cursors WHERE checked_at <= $1",
                )
                .bind(at - poll)
                .fetch_one(&pool)
                .await?;
                if stale == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("step {step}: {stale} checks did not run");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let after = metric(&http, &public_url, "subkeeper_catch_up_calls_total").await;
        println!(
            "quiet day (default mail_poll_after_silence_seconds {}): {:.0} delta calls for {n} quiet providers = {:.2} per provider per day",
            config.mail_poll_after_silence_seconds,
            after - before,
            (after - before) / n as f64
        );
    }
    service.stop_with(sim_server).await?;
    pool.close().await;
    Ok(())
}
