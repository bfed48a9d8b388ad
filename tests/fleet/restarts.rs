//! The servers subkeeper depends on restart under it: NATS, then PostgreSQL,
//! each stopped for a while and started again while the simulator streams
//! change notifications and the fleet renews. Every webhook the service
//! acknowledged (answered 2xx) is in JetStream exactly once afterwards, and every
//! subscription is still alive and renewed after both restarts.
//!
//! The servers are the test's own ([`crate::servers`]): the shared ones on 4222
//! and 5432 serve every other test and are never restarted.

use crate::cluster::Cluster;
use crate::servers::{PrivateNats, PrivatePostgres};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::sim::{ChangeType, Simulator};
use subkeeper_testkit::streams::Streams;
use subkeeper_testkit::wait_until;
use tokio::sync::Mutex;

const PROVIDERS: usize = 60;

/// What the notification stream has seen so far.
#[derive(Default)]
struct Sent {
    /// Item ids of notifications the service answered 2xx (it owes them).
    acknowledged: Vec<String>,
    /// Notifications it refused or did not answer in time (the provider would
    /// send them again; the service owes nothing).
    refused: usize,
}

impl Sent {
    fn attempted(&self) -> usize {
        self.acknowledged.len() + self.refused
    }
}

/// Notifies each live subscription in turn about a new item until `stop`.
async fn stream_notifications(sim: Simulator, sent: Arc<Mutex<Sent>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        for subscription in sim.subscriptions() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(report) = sim.notify(&subscription.id, ChangeType::Created, 1).await else {
                continue; // renewed or recreated in between
            };
            let item = report.body["value"][0]["resourceData"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut sent = sent.lock().await;
            if report.all_accepted() {
                sent.acknowledged.push(item);
            } else {
                sent.refused += 1;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Waits until `more` further notifications were acknowledged.
async fn acknowledged_more(sent: &Arc<Mutex<Sent>>, more: usize, while_doing: &str) {
    let from = sent.lock().await.acknowledged.len();
    wait_until(
        &format!("{more} more webhooks acknowledged {while_doing}"),
        Duration::from_secs(60),
        || async { sent.lock().await.acknowledged.len() >= from + more },
    )
    .await;
}

/// Expiration per resource of the live subscriptions.
fn expirations(sim: &Simulator) -> HashMap<String, chrono::DateTime<chrono::Utc>> {
    sim.subscriptions()
        .into_iter()
        .map(|s| (s.resource, s.expiration_date_time))
        .collect()
}

#[actix_web::test]
async fn nats_and_postgres_restart_under_load_and_nothing_acknowledged_is_lost() {
    let mut nats = PrivateNats::start().await;
    let postgres = PrivatePostgres::start().await;
    let db = TestDb::create_on(&postgres.url(), Purpose::Test)
        .await
        .unwrap();
    let bus = TestBus::on(&nats.url(), Purpose::Test);
    let topology = bus.topology();
    let mut cluster = Cluster::on(db, bus, PROVIDERS).await;
    // The test kit keeps streams small for the shared server; this server is
    // the test's own, and every acknowledged webhook must reach the stream
    // (a full stream refuses publishes: they would wait in the outbox).
    cluster
        .start_instance_with(|c| c.nats_webhook_stream_max_bytes = 1 << 30)
        .await;
    wait_until(
        "every provider registered",
        Duration::from_secs(60),
        || async { cluster.live().len() == PROVIDERS },
    )
    .await;

    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = tokio::spawn(stream_notifications(
        cluster.sim.clone(),
        sent.clone(),
        stop.clone(),
    ));
    acknowledged_more(&sent, 20, "before any restart").await;

    // NATS down: webhooks are still acknowledged (parked in the outbox in
    // Postgres), then relayed once NATS is back.
    nats.stop();
    acknowledged_more(&sent, 20, "while NATS is down").await;
    nats.start_again().await;
    acknowledged_more(&sent, 20, "after NATS came back").await;

    // Postgres down: whatever is acknowledged went straight to JetStream;
    // what could not be made durable is refused, and renewals wait.
    postgres.stop().await;
    let attempted_before = sent.lock().await.attempted();
    wait_until(
        "20 notifications sent while Postgres is down",
        Duration::from_secs(90),
        || async { sent.lock().await.attempted() >= attempted_before + 20 },
    )
    .await;
    postgres.start_again().await;
    acknowledged_more(&sent, 20, "after Postgres came back").await;
    let restarted = expirations(&cluster.sim);

    // Every subscription renewed after both restarts (renewals come round every
    // minute), and none lapsed or doubled on the way.
    wait_until(
        "every subscription renewed after the restarts",
        Duration::from_secs(150),
        || async {
            let now = expirations(&cluster.sim);
            now.len() == PROVIDERS
                && restarted
                    .iter()
                    .all(|(resource, before)| now.get(resource).is_some_and(|e| e > before))
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    streamer.await.unwrap();
    assert!(
        cluster.live().values().all(|n| *n == 1),
        "two live subscriptions on one resource: {:?}",
        cluster.duplicates()
    );

    // Every acknowledged webhook is in the stream exactly once (the relay may
    // still be sending what the outbox held).
    let sent = sent.lock().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let streams = Streams::Nats(async_nats::jetstream::new(client));
    let started = std::time::Instant::now();
    let counts = loop {
        let messages = streams
            .read(&topology.webhook_stream(), &topology.webhook_subjects())
            .await
            .unwrap();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for message in &messages {
            let body = String::from_utf8_lossy(&message.payload);
            for item in &sent.acknowledged {
                if body.contains(item.as_str()) {
                    *counts.entry(item.as_str()).or_default() += 1;
                }
            }
        }
        let missing = sent.acknowledged.len() - counts.len();
        if missing == 0 {
            break counts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{missing} of {} acknowledged webhooks are not in JetStream",
            sent.acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    println!(
        "{} webhooks acknowledged across a NATS and a Postgres restart, each in JetStream once; {} refused while a server was down",
        sent.acknowledged.len(),
        sent.refused
    );
    drop(sent);
    cluster.stop().await;
}
