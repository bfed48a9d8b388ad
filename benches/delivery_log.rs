//! Delivery log benchmark: webhook intake throughput with the delivery log off
//! and on, in one run, as a ratio.
//!
//! For each side (`off`, then `on`, then each again: two rounds, so drift on this
//! shared machine shows), a fresh database and fresh NATS subjects and streams, the
//! Graph simulator and the service (`subkeeper::run_with` on 127.0.0.1:0, the
//! production defaults but `delivery_log`) start in this process; `--providers`
//! Graph mail providers are created through the admin API and their subscription
//! ids and clientStates read back. Then `--connections` concurrent clients post
//! Graph change-notification collections of `--items` unique items (≈ 1 KB
//! each), spread over the providers, for `--duration-secs`. Measured:
//! - **intake**: items the service answered 202 for, per second of the posting
//!   window (what Graph sees);
//! - **end to end**: the same items ÷ the time from the first post until the
//!   notification consumer has acknowledged every one of them (its durable has
//!   nothing pending) — this includes the delivery log's write, which the
//!   consumer makes once per batch.
//!
//! With the log on, the bench also checks that the `deliveries` table holds one
//! `accepted` row per item. Printed: both rates per side and round, and the ratios
//! on ÷ off (target ≥ 0.9).
//!
//! Run: `cargo bench --bench delivery_log -- [--connections 16] [--items 10]
//! [--duration-secs 10] [--providers 20]`. Needs Postgres and NATS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use subkeeper::RunOptions;
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{Admin, graph_mail_provider};
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim;

#[derive(Parser)]
struct Args {
    /// Concurrent posting clients.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Notifications per request.
    #[arg(long, default_value_t = 10)]
    items: u32,
    /// Seconds of posting per side and round.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Providers the notifications are spread over.
    #[arg(long, default_value_t = 20)]
    providers: u32,
    /// Rounds (each measures off, then on).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    actix_rt::System::new().block_on(bench(args))
}

/// One side's result.
struct Side {
    items: u64,
    intake_per_s: f64,
    end_to_end_per_s: f64,
}

async fn bench(args: Args) -> anyhow::Result<()> {
    subkeeper::install_crypto();
    println!(
        "delivery log off vs on: {} connections × {} items per request, {} s per side, {} providers",
        args.connections, args.items, args.duration_secs, args.providers
    );
    println!("| round | log | items | intake items/s | end-to-end items/s |");
    println!("|---|---|---:|---:|---:|");
    let mut totals = [(0.0, 0.0), (0.0, 0.0)];
    for round in 1..=args.rounds {
        for (i, on) in [false, true].into_iter().enumerate() {
            let side = side(&args, on).await?;
            println!(
                "| {round} | {} | {} | {:.0} | {:.0} |",
                if on { "on" } else { "off" },
                side.items,
                side.intake_per_s,
                side.end_to_end_per_s
            );
            totals[i].0 += side.intake_per_s;
            totals[i].1 += side.end_to_end_per_s;
        }
    }
    println!(
        "ratio on/off (mean of rounds): intake {:.3}, end to end {:.3}",
        totals[1].0 / totals[0].0,
        totals[1].1 / totals[0].1
    );
    Ok(())
}

async fn side(args: &Args, log: bool) -> anyhow::Result<Side> {
    let db = TestDb::create(Purpose::Bench).await?;
    let bus = TestBus::new(Purpose::Bench);
    let (_sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock)).await?;
    let (listener, base_url) = service::bind_local()?;
    let mut config = service::config(&db, &bus, &sim_server, &base_url);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.delivery_log = log;
    // The test kit keeps streams at 8 MiB; a side posts more than that (in a
    // release build, tens of MB): past the limit intake parks items in the
    // outbox and the consumer never sees them all.
    config.nats_webhook_stream_max_bytes = 512 << 20;
    config.mail_silence_seconds = 0;
    config.validate()?;
    let service = Service::spawn(config, listener, base_url.clone(), RunOptions::default());
    let http = reqwest::Client::new();
    service.wait_ready(&http, Duration::from_secs(30)).await?;
    let admin = Admin::new(&http, &base_url, ADMIN_TOKEN);
    for i in 0..args.providers {
        admin
            .create_provider(
                "bench",
                graph_mail_provider(
                    &format!("mbx{i}"),
                    &format!("users/mbx{i}/messages"),
                    "bench-aad",
                ),
            )
            .await?;
    }
    let pool = db.pool().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let subs: Vec<(String, String)> = loop {
        let subs: Vec<(String, String)> = sqlx::query_as(
            "SELECT external_id, client_state FROM subscriptions WHERE state = 'active'",
        )
        .fetch_all(&pool)
        .await?;
        if subs.len() == args.providers as usize {
            break subs;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "providers not registered in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let subs = Arc::new(subs);
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let window = Duration::from_secs(args.duration_secs);
    let mut clients = Vec::new();
    for c in 0..args.connections {
        let (http, url, subs, accepted) = (
            http.clone(),
            format!("{base_url}/webhooks/microsoft"),
            subs.clone(),
            accepted.clone(),
        );
        let items = args.items;
        clients.push(actix_rt::spawn(async move {
            let mut n: u64 = 0;
            while started.elapsed() < window {
                let value: Vec<_> = (0..items)
                    .map(|k| {
                        let (sub, state) = &subs[((n as usize) + k as usize) % subs.len()];
                        let id = format!("AAMkAGI2{c:04}{n:012}{k:04}{}", "x".repeat(120));
                        json!({
                            "subscriptionId": sub, "clientState": state, "changeType": "created",
                            "resource": format!("Users/mbx/Messages/{id}"), "tenantId": "bench-aad",
                            "subscriptionExpirationDateTime": "2026-12-10T00:00:00.0000000Z",
                            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": format!("Users/mbx/Messages/{id}"), "id": id}
                        })
                    })
                    .collect();
                n += 1;
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(json!({ "value": value }).to_string())
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().as_u16() == 202) {
                    accepted.fetch_add(u64::from(items), Ordering::Relaxed);
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    let posting = started.elapsed();
    let items = accepted.load(Ordering::Relaxed);
    // Until the notification consumer has acknowledged every message.
    let nats = async_nats::connect(bus.nats_url().unwrap_or("nats://127.0.0.1:4222")).await?;
    let js = async_nats::jetstream::new(nats);
    let topology = bus.topology();
    let stream = js.get_stream(topology.webhook_stream()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&topology.notification_consumer())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = consumer.info().await?;
        if info.num_pending == 0
            && info.num_ack_pending == 0
            && info.ack_floor.stream_sequence >= items
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer did not catch up in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end_to_end = started.elapsed();
    if log {
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE outcome = 'accepted'")
                .fetch_one(&pool)
                .await?;
        anyhow::ensure!(
            rows == i64::try_from(items)?,
            "{rows} accepted deliveries logged for {items} items"
        );
    }
    pool.close().await;
    service.stop_with(sim_server).await?;
    let _ = js.delete_stream(topology.webhook_stream()).await;
    Ok(Side {
        items,
        intake_per_s: items as f64 / posting.as_secs_f64(),
        end_to_end_per_s: items as f64 / end_to_end.as_secs_f64(),
    })
}
