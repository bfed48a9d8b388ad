//! Webhook intake on the two backends, paired in one run: the embedded store
//! with the in-process bus (what `cargo run -- demo` and a one-instance
//! install use) against PostgreSQL with NATS JetStream (production).
//!
//! Each round starts the simulator and the service in this process on
//! 127.0.0.1:0 with a fresh backend, creates `--providers` Graph mail providers
//! through the admin API, waits until each has a live subscription, and then
//! posts Graph change-notification collections of one item each (a unique item
//! id, the subscription's real clientState) from `--connections` concurrent
//! clients on a thread of their own for `--duration-secs`. A 202 is only given
//! once the notification is durable: in the store's stream (embedded) or in
//! JetStream (or the outbox). Reported per round: accepted notifications/s and
//! the response time p50/p99; then the embedded ÷ Postgres+NATS ratio of each
//! pair (rounds alternate embedded, postgres, embedded, postgres, …, so a
//! drift of the machine hits both sides alike).
//!
//! ```sh
//! cargo bench --bench intake_backends                          # 2 pairs, 16 connections, 10 s
//! cargo bench --bench intake_backends -- --pairs 3 --connections 32
//! ```
//! Needs Postgres and NATS for the production side (scripts/test-services).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use subkeeper::RunOptions;
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{Admin, graph_mail_provider};
use subkeeper_testkit::backend::{Backend, TestBackend};
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, SimSubscription};
use subkeeper_testkit::stats::Distribution;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

struct Args {
    providers: usize,
    connections: usize,
    duration: Duration,
    pairs: usize,
}

fn args() -> Args {
    let mut args = Args {
        providers: 100,
        connections: 16,
        duration: Duration::from_secs(10),
        pairs: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match a.as_str() {
            "--providers" => args.providers = value().parse().unwrap(),
            "--connections" => args.connections = value().parse().unwrap(),
            "--duration-secs" => args.duration = Duration::from_secs(value().parse().unwrap()),
            "--pairs" => args.pairs = value().parse().unwrap(),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// What one round measured.
struct Round {
    backend: Backend,
    accepted: u64,
    refused: u64,
    seconds: f64,
    latency_us: Distribution,
}

impl Round {
    fn per_second(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }
}

/// A Graph change-notification collection of one new item for `s`.
fn notification(s: &SimSubscription, item: &str) -> String {
    let resource = format!("{}/{item}", s.resource.replace("/messages", "/Messages"));
    serde_json::json!({
        "value": [{
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": s.expiration_date_time,
            "changeType": "created",
            "resource": resource,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Message",
                "@odata.id": resource,
                "@odata.etag": "W/\"CQAAABYAAAC\"",
                "id": item,
            },
            "clientState": s.client_state,
            "tenantId": s.tenant,
        }]
    })
    .to_string()
}

/// Posts notifications from `connections` clients for `duration`, on a thread
/// and runtime of their own (apart from the service's).
fn load(url: String, subs: Vec<SimSubscription>, connections: usize, duration: Duration) -> Round {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(connections)
                .build()
                .unwrap();
            let subs = Arc::new(subs);
            let stop = Arc::new(AtomicBool::new(false));
            let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..connections {
                let (http, url, subs, stop) =
                    (http.clone(), url.clone(), subs.clone(), stop.clone());
                let (accepted, refused) = (accepted.clone(), refused.clone());
                tasks.push(tokio::spawn(async move {
                    let mut latency = Distribution::new();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let s = &subs[(c + n * connections) % subs.len()];
                        let item = format!("AAMkAG{c:04}x{n:010}{}", "A".repeat(120));
                        n += 1;
                        let sent = Instant::now();
                        let ok = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(notification(s, &item))
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == reqwest::StatusCode::ACCEPTED);
                        latency.record(sent.elapsed().as_micros() as u64);
                        if ok {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    latency
                }));
            }
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            let mut latency_us = Distribution::new();
            for t in tasks {
                latency_us.merge(&t.await.unwrap());
            }
            Round {
                backend: Backend::Embedded, // set by the caller
                accepted: accepted.load(Ordering::Relaxed),
                refused: refused.load(Ordering::Relaxed),
                seconds: started.elapsed().as_secs_f64(),
                latency_us,
            }
        })
    })
    .join()
    .unwrap()
}

async fn round(backend: Backend, args: &Args) -> anyhow::Result<Round> {
    let store = TestBackend::create(backend, Purpose::Bench).await?;
    let (sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock)).await?;
    let (listener, base_url) = service::bind_local()?;
    let mut config = service::config_on(&store, &sim_server, &base_url);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.mail_silence_seconds = 0;
    config.calendar_silence_seconds = 0;
    config.log_filter = "warn".into();
    config.validate()?;
    let service = Service::spawn(config, listener, base_url.clone(), RunOptions::default());
    let http = reqwest::Client::new();
    service.wait_ready(&http, Duration::from_secs(60)).await?;
    let admin = Admin::new(&http, &base_url, ADMIN_TOKEN);
    for i in 0..args.providers {
        admin
            .create_provider(
                &format!("tenant-{}", i % 10),
                graph_mail_provider(
                    &format!("mailbox {i}"),
                    &format!("users/mbx{i}@bench.example/messages"),
                    &format!("aad-{}", i % 10),
                ),
            )
            .await?;
    }
    let registered = Instant::now();
    while sim.subscriptions().len() < args.providers {
        anyhow::ensure!(
            registered.elapsed() < Duration::from_secs(120),
            "providers not registered within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subs = sim.subscriptions();
    let url = format!("{base_url}/webhooks/microsoft");
    let (connections, duration) = (args.connections, args.duration);
    let mut measured =
        tokio::task::spawn_blocking(move || load(url, subs, connections, duration)).await?;
    measured.backend = backend;
    service.stop_with(sim_server).await?;
    Ok(measured)
}

fn main() -> anyhow::Result<()> {
    let args = args();
    subkeeper::install_crypto();
    actix_rt::System::new().block_on(async {
        let mut rounds = Vec::new();
        for pair in 0..args.pairs {
            for backend in [Backend::Embedded, Backend::PostgresNats] {
                let r = round(backend, &args).await?;
                println!(
                    "pair {pair} {:<13} accepted {:>7} ({:>7.0}/s) refused {:>4}  p50 {:>6.2} ms  p99 {:>6.2} ms",
                    backend.name(),
                    r.accepted,
                    r.per_second(),
                    r.refused,
                    r.latency_us.percentile(50.0).unwrap_or(0) as f64 / 1000.0,
                    r.latency_us.percentile(99.0).unwrap_or(0) as f64 / 1000.0,
                );
                rounds.push(r);
            }
        }
        println!(
            "\n{} providers, {} connections, {} s per round, one item per request",
            args.providers,
            args.connections,
            args.duration.as_secs()
        );
        for (pair, two) in rounds.chunks(2).enumerate() {
            println!(
                "pair {pair}: embedded ÷ postgres_nats = {:.2} (notifications/s)",
                two[0].per_second() / two[1].per_second()
            );
        }
        Ok(())
    })
}
