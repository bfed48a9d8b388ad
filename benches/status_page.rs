//! Status page benchmark: response times of `/` with 100,000 providers.
//!
//! A fresh database `subkeeper_bench_<random>` is migrated and seeded by direct
//! SQL with `--providers` Graph mail providers over `--tenants` tenants, each with
//! a health row: 1 in 100 in `error` (with a failure reason), 1 in 200 in
//! `needs_reauth`, the rest `connected`. They are seeded disabled, so the fleet
//! supervises none of them and the page is measured alone (the page reads
//! `providers.status`, whatever `enabled` says). The service and the simulator
//! start in this process (`subkeeper::run_with` on 127.0.0.1:0), the bench signs
//! in with the admin token, and then requests, one at a time, `--requests` times
//! each:
//! - the first page (every tenant, the 50 that need a human first),
//! - a filtered page (`?tenant=bench-7&status=connected`),
//! - the second page of the unfiltered list (its cursor).
//!
//! Each request's wall time (HTTP round trip: session lookup, the list's queries,
//! counts, rendering) is recorded; p50/p99/max are printed — once with the
//! counts by status taken on every view (`status_page_counts_seconds = 0`, as
//! before they were kept), once with them kept 10 s (the default). The tenant
//! filter's query, as it was (`SELECT DISTINCT`) and as it is (a skip scan), is
//! also timed directly. The database and this
//! run's NATS streams are deleted at the end.
//!
//! Run: `cargo bench --bench status_page -- [--providers 100000] [--tenants 100]
//! [--requests 200]`. Needs Postgres and NATS like the integration tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkeeper::RunOptions;
use subkeeper::store::{Db, Location, Store};
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim;
use subkeeper_testkit::stats::Distribution;

#[derive(Parser)]
struct Args {
    /// Providers to seed.
    #[arg(long, default_value_t = 100_000)]
    providers: u32,
    /// Tenants they are spread over.
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// Requests per measured page.
    #[arg(long, default_value_t = 200)]
    requests: u32,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

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
    let started = Instant::now();
    seed(&db.url, &args).await?;
    eprintln!(
        "seeded {} providers over {} tenants in {:.1} s",
        args.providers,
        args.tenants,
        started.elapsed().as_secs_f64()
    );
    tenant_queries(&db.url, &args).await?;
    // The same pages twice: counting on every view (as before the counts were
    // kept), then with the counts kept for 10 s (the default).
    for counts_seconds in [0, 10] {
        pages(&db, &bus, &args, counts_seconds).await?;
    }
    Ok(())
}

/// The tenant filter's query as it was (`SELECT DISTINCT`, every row) and as
/// it is (a skip scan over the index), timed directly: p50/p99 of `--requests`
/// runs each.
async fn tenant_queries(url: &str, args: &Args) -> anyhow::Result<()> {
    let store = Store::connect(&Location::Postgres(url.into()), 1, Arc::new(SystemClock)).await?;
    let Db::Postgres(pool) = store.db() else {
        anyhow::bail!("the status page bench runs on Postgres");
    };
    let distinct = "SELECT DISTINCT tenant_id FROM providers WHERE deleted_at IS NULL ORDER BY tenant_id LIMIT $1";
    let skip_scan = "WITH RECURSIVE t(tenant_id) AS ( \
           SELECT (SELECT min(tenant_id) FROM providers WHERE deleted_at IS NULL) \
           UNION ALL \
           SELECT (SELECT min(p.tenant_id) FROM providers p WHERE p.deleted_at IS NULL AND p.tenant_id > t.tenant_id) \
           FROM t WHERE t.tenant_id IS NOT NULL) \
         SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL LIMIT $1";
    println!(
        "tenant filter query, 200 tenants at most, {} runs each",
        args.requests
    );
    println!("| query | p50 ms | p99 ms |");
    println!("|---|---:|---:|");
    let mut found = Vec::new();
    for (name, sql) in [
        ("SELECT DISTINCT (before)", distinct),
        ("skip scan (now)", skip_scan),
    ] {
        let mut times = Distribution::new();
        let mut tenants: Vec<String> = Vec::new();
        for _ in 0..args.requests {
            let t = Instant::now();
            tenants = sqlx::query_scalar(sql)
                .bind(200_i64)
                .fetch_all(pool)
                .await?;
            times.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        let ms = |p: f64| times.percentile(p).unwrap_or(0) as f64 / 1000.0;
        println!("| {name} | {:.2} | {:.2} |", ms(50.0), ms(99.0));
        found.push(tenants);
    }
    anyhow::ensure!(found[0] == found[1], "the two tenant queries disagree");
    pool.close().await;
    Ok(())
}

/// Starts the service on the seeded database with the counts kept
/// `counts_seconds`, signs in and times the pages.
async fn pages(db: &TestDb, bus: &TestBus, args: &Args, counts_seconds: u64) -> anyhow::Result<()> {
    let (_sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock)).await?;
    let (listener, base_url) = service::bind_local()?;
    let mut config = service::config(db, bus, &sim_server, &base_url);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.status_page_counts_seconds = counts_seconds;
    config.validate()?;
    let service = Service::spawn(config, listener, base_url.clone(), RunOptions::default());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    service.wait_ready(&http, Duration::from_secs(60)).await?;

    let signed = http
        .post(format!("{base_url}/sign-in"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await?;
    let cookie = signed.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let first = get(&http, &base_url, "/", &cookie).await?;
    let rows = first.matches("<tr class=\"provider ").count();
    let attention = first.matches("<tr class=\"provider error").count()
        + first.matches("<tr class=\"provider needs_reauth").count();
    let next = first
        .split("class=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .ok_or_else(|| anyhow::anyhow!("the first page has no next page link"))?;
    anyhow::ensure!(rows == 50, "the first page shows {rows} providers, not 50");
    anyhow::ensure!(
        attention == 50,
        "the first page shows {attention} providers needing a human, not 50"
    );

    let pages = [
        ("first page (every tenant)", "/".to_owned()),
        (
            "filtered (tenant bench-7, connected)",
            "/?tenant=bench-7&status=connected".to_owned(),
        ),
        ("second page (cursor)", next),
    ];
    println!(
        "status page, {} providers over {} tenants, {} requests each, one at a time, counts kept {counts_seconds} s",
        args.providers, args.tenants, args.requests
    );
    println!("| page | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (name, path) in &pages {
        let body = get(&http, &base_url, path, &cookie).await?;
        anyhow::ensure!(body.contains("<tr class=\"provider "), "{name}: no rows");
        let mut times = Distribution::new();
        for _ in 0..args.requests {
            let t = Instant::now();
            get(&http, &base_url, path, &cookie).await?;
            times.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        let ms = |p: f64| times.percentile(p).unwrap_or(0) as f64 / 1000.0;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            ms(50.0),
            ms(99.0),
            ms(100.0)
        );
    }
    service.stop_with(sim_server).await?;
    Ok(())
}

async fn get(
    http: &reqwest::Client,
    base_url: &str,
    path: &str,
    cookie: &str,
) -> anyhow::Result<String> {
    let response = http
        .get(format!("{base_url}{path}"))
        .header("cookie", cookie)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{path}: HTTP {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// Seeds the providers (disabled, so nothing is supervised) and their health rows.
async fn seed(url: &str, args: &Args) -> anyhow::Result<()> {
    let store = Store::connect(&Location::Postgres(url.into()), 2, Arc::new(SystemClock)).await?;
    store.migrate().await?;
    let Db::Postgres(pool) = store.db() else {
        anyhow::bail!("the status page bench seeds Postgres");
    };
    sqlx::query(
        "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, scope, created_at, updated_at) \
         SELECT gen_random_uuid(), 'bench-' || t, 'client_credentials', 'bench-aad-' || t, \
                $2, $3, 'https://graph.microsoft.com/.default', now(), now() \
         FROM generate_series(0, $1 - 1) AS t",
    )
    .bind(i64::from(args.tenants))
    .bind(GRAPH_CLIENT_ID)
    .bind(GRAPH_CLIENT_SECRET)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id, enabled, status, error_message, created_at, updated_at) \
         SELECT gen_random_uuid(), c.tenant_id, 'graph_mail', 'mailbox ' || i || ' inbox', \
                'users/mbx' || i || '@' || c.tenant_id || '.example/messages', c.id, false, \
                CASE WHEN i % 100 = 0 THEN 'error' WHEN i % 200 = 1 THEN 'needs_reauth' ELSE 'connected' END, \
                CASE WHEN i % 100 = 0 THEN 'transient (HTTP 500): Graph refused create with HTTP 500' END, \
                now() - (($1 - i) * interval '1 second'), now() \
         FROM generate_series(0, $1 - 1) AS i \
         JOIN oauth_credentials c ON c.tenant_id = 'bench-' || (i % $2)",
    )
    .bind(i64::from(args.providers))
    .bind(i64::from(args.tenants))
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO provider_health (provider_id, tenant_id, subscription_status, subscription_expires_at, \
           last_renewal_attempt_at, last_renewal_result, failure_reason, consecutive_failure_count, next_renewal_at) \
         SELECT id, tenant_id, CASE status WHEN 'connected' THEN 'healthy' ELSE status END, \
                now() + interval '6 days', now() - interval '1 hour', \
                CASE status WHEN 'connected' THEN 'renewed' ELSE 'failed' END, error_message, \
                CASE status WHEN 'connected' THEN 0 ELSE 3 END, now() + interval '5 days' \
         FROM providers",
    )
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    pool.close().await;
    Ok(())
}
