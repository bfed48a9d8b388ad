//! Start-up at scale: a fleet whose state is already in Postgres is loaded in
//! pages (a few queries per 1,000 providers) and every supervisor arms its
//! timer from that state — no provider is called, none queries the store for
//! itself, and `/readyz` says how many are loaded and scheduled.

use crate::ADMIN_TOKEN;
use serde_json::Value;
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
use subkeeper_testkit::sim::Operation;
use subkeeper_testkit::wait_until;

/// Providers seeded healthy: three pages and a part.
const FLEET: i64 = 3_500;

/// Seeds `FLEET` Graph mail providers, each with a live subscription that
/// expires in six days and a healthy health row, as a running service leaves
/// them.
async fn seed_healthy(db: &TestDb) {
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
         VALUES (gen_random_uuid(), 'warm', 'client_credentials', 'warm-aad', $1, $2, \
                 'https://graph.microsoft.com/.default')",
    )
    .bind(GRAPH_CLIENT_ID)
    .bind(GRAPH_CLIENT_SECRET)
    .execute(pool)
    .await
    .unwrap();
    for sql in [
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id, status) \
         SELECT gen_random_uuid(), 'warm', 'graph_mail', 'mailbox ' || i, \
                'users/mbx' || i || '@warm.example/messages', c.id, 'connected' \
         FROM generate_series(0, $1 - 1) AS i, oauth_credentials c",
        "INSERT INTO subscriptions (provider_id, tenant_id, resource, external_id, client_state, expires_at, created_at, state) \
         SELECT p.id, p.tenant_id, p.resource, 'sub-' || p.id, md5(p.id::text), \
                now() + interval '6 days', now(), 'active' \
         FROM providers p WHERE $1 > 0",
        "INSERT INTO provider_health (provider_id, tenant_id, subscription_status, subscription_expires_at, \
                last_renewal_attempt_at, last_renewal_result, consecutive_failure_count, next_renewal_at, updated_at) \
         SELECT p.id, p.tenant_id, 'healthy', now() + interval '6 days', now(), 'registered', 0, \
                now() + interval '5 days', now() \
         FROM providers p WHERE $1 > 0",
    ] {
        sqlx::query(sql).bind(FLEET).execute(pool).await.unwrap();
    }
    pool.close().await;
}

#[actix_web::test]
async fn a_fleet_already_in_the_database_is_scheduled_from_its_stored_state() {
    subkeeper::install_crypto();
    let db = TestDb::create(Purpose::Test).await.unwrap();
    seed_healthy(&db).await;
    let bus = TestBus::new(Purpose::Test);
    let (sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock))
        .await
        .unwrap();
    let (listener, base_url) = service::bind_local().unwrap();
    let mut config = service::config(&db, &bus, &sim_server, &base_url);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.mail_silence_seconds = 0;
    config.calendar_silence_seconds = 0;
    // A small pool: 3,500 supervisors each loading their own state through it
    // was the start-up livelock; the paged load needs one connection at a time.
    config.database_max_connections = 2;
    config.validate().unwrap();
    let began = Instant::now();
    let service = Service::spawn(config, listener, base_url.clone(), RunOptions::default());
    let http = reqwest::Client::new();
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        "every seeded provider loaded and scheduled",
        Duration::from_secs(60),
        || async {
            let Ok(response) = http.get(format!("{base_url}/readyz")).send().await else {
                return false;
            };
            let Ok(body) = response.json::<Value>().await else {
                return false;
            };
            let done = body["status"] == "ready"
                && body["providers_scheduled"] == FLEET
                && body["providers_loaded"] == FLEET
                && body["providers_supervised"] == FLEET;
            *last.borrow_mut() = body;
            done
        },
    )
    .await;
    eprintln!(
        "{FLEET} providers with state in the database scheduled {:.2} s after start: {}",
        began.elapsed().as_secs_f64(),
        last.borrow()
    );
    // Their state was used: nothing was registered again, nothing renewed early.
    // (Providers seeded without a change cursor get one taken in the
    // background by the catch-up actor, at its spread pace: reads, not
    // subscription calls.)
    let calls: Vec<_> = sim
        .requests()
        .into_iter()
        .map(|r| r.operation)
        .filter(|op| matches!(op, Operation::Create | Operation::Renew | Operation::Delete))
        .collect();
    assert!(
        calls.is_empty(),
        "a subscription was created, renewed or deleted at start-up: {calls:?}"
    );
    let metrics = subkeeper_testkit::metrics::scrape(&http, &base_url)
        .await
        .unwrap();
    for stage in ["started", "loaded", "scheduled"] {
        let line = format!("subkeeper_fleet_providers{{stage=\"{stage}\"}} {FLEET}");
        assert!(metrics.contains(&line), "no `{line}` in /metrics");
    }
    service.stop_with(sim_server).await.unwrap();
}
