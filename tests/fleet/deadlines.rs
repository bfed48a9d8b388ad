//! Deadline first, at fleet scale: renewals whose subscriptions are about to
//! lapse overtake a queue of registrations. The permit-level order is unit
//! tested in `actors/src/permits.rs`; this is what a user would notice — the
//! fleet bench once saw subscriptions lapse while their renewals queued behind
//! a burst of new providers.
//!
//! Real service, Postgres, NATS and the simulator over HTTP, on the wall clock.
//! The registrations are made slow at the simulator (each create is held, then
//! answered 504), `renewal_concurrency` is 2, and the providers about to lapse
//! sort last, so every registration asks for a permit before them: in arrival
//! order they would wait for every registration ahead of them. Checked: with
//! the permits switched to arrival order, none of the ten was renewed within
//! the 30 s; deadline first renews all ten 3.5 s after the restart (one held
//! registration's time) with 2 of 60 registrations tried (debug build).

use crate::ADMIN_TOKEN;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::RunOptions;
use subkeeper::store::{Db, Location, Store};
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};
use subkeeper_testkit::bus::TestBus;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, Fault, FaultOperation, FaultRule, Operation, SimServer};
use uuid::Uuid;

/// Providers whose subscriptions are about to lapse.
const SOON: usize = 10;
/// New providers queued for registration ahead of them.
const FRESH: i64 = 60;
/// Tenants the new providers are spread over.
const FRESH_TENANTS: i64 = 20;
/// Provider calls in flight across the fleet.
const CONCURRENCY: u32 = 2;
/// How long the simulator holds each registration before answering 504, in
/// real seconds. In arrival order the last renewal would start only after
/// `FRESH × HOLD ÷ CONCURRENCY` = 90 s.
const HOLD: u64 = 3;
/// How long after the restart the near-expiry subscriptions lapse: far more
/// than deadline first needs (one `HOLD` for a permit to come free, then the
/// renewals), far less than arrival order would take.
const LAPSE_IN: Duration = Duration::from_secs(30);

/// The id of the `i`-th provider about to lapse: above every random id, so the
/// paged load (in id order) starts their supervisors last.
fn soon_id(i: usize) -> Uuid {
    Uuid::parse_str(&format!("ffffffff-ffff-4fff-bfff-{i:012x}")).unwrap()
}

/// A client-credentials connection for the tenant `soon` (Azure AD
/// `soon-aad`) and `SOON` providers of it with [`soon_id`]s; returns the store
/// (migrated).
async fn seed_soon(db: &TestDb) -> Store {
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
    credentials(pool, &["soon"]).await;
    for i in 0..SOON {
        sqlx::query(
            "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id) \
             SELECT $1, 'soon', 'graph_mail', 'mailbox ' || $2, \
                    'users/soon' || $2 || '@soon.example/messages', c.id \
             FROM oauth_credentials c WHERE c.tenant_id = 'soon'",
        )
        .bind(soon_id(i))
        .bind(i as i64)
        .execute(pool)
        .await
        .unwrap();
    }
    store
}

/// A client-credentials connection for each of `tenants` (Azure AD tenant
/// `<tenant>-aad`).
async fn credentials(pool: &sqlx::PgPool, tenants: &[&str]) {
    for tenant in tenants {
        sqlx::query(
            "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, scope) \
             VALUES (gen_random_uuid(), $1, 'client_credentials', $1 || '-aad', $2, $3, \
                     'https://graph.microsoft.com/.default')",
        )
        .bind(tenant)
        .bind(GRAPH_CLIENT_ID)
        .bind(GRAPH_CLIENT_SECRET)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// `FRESH` providers, never registered, spread over `FRESH_TENANTS` tenants
/// (so that no tenant's write budget spaces their registrations out: they all
/// ask for a permit at once), their mailboxes at `fresh.example`.
async fn seed_fresh(pool: &sqlx::PgPool) {
    let tenants: Vec<String> = (0..FRESH_TENANTS).map(|t| format!("fresh-{t}")).collect();
    credentials(
        pool,
        &tenants.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    sqlx::query(
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id) \
         SELECT gen_random_uuid(), c.tenant_id, 'graph_mail', 'mailbox ' || i, \
                'users/fresh' || i || '@fresh.example/messages', c.id \
         FROM generate_series(0, $1 - 1) AS i \
         JOIN oauth_credentials c ON c.tenant_id = 'fresh-' || (i % $2)",
    )
    .bind(FRESH)
    .bind(FRESH_TENANTS)
    .execute(pool)
    .await
    .unwrap();
}

/// Active subscriptions of the near-expiry providers that expire after `after`.
async fn soon_live_after(pool: &sqlx::PgPool, after: chrono::DateTime<chrono::Utc>) -> i64 {
    let ids: Vec<Uuid> = (0..SOON).map(soon_id).collect();
    sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions \
         WHERE provider_id = ANY($1) AND state = 'active' AND expires_at > $2",
    )
    .bind(&ids)
    .bind(after)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Starts the service on `db`, `bus` and the simulator with `CONCURRENCY`
/// permits.
fn start(db: &TestDb, bus: &TestBus, sim_server: &SimServer) -> Service {
    let (listener, base_url) = service::bind_local().unwrap();
    let mut config = service::config(db, bus, sim_server, &base_url);
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.mail_silence_seconds = 0;
    config.calendar_silence_seconds = 0;
    config.renewal_concurrency = CONCURRENCY;
    // One thread: supervisors start, and ask for their permits, in the paged
    // load's id order — the near-expiry ones last, behind every registration.
    config.supervisor_threads = 1;
    config.validate().unwrap();
    Service::spawn(config, listener, base_url, RunOptions::default())
}

#[actix_web::test]
async fn renewals_about_to_lapse_overtake_queued_registrations() {
    subkeeper::install_crypto();
    let db = TestDb::create(Purpose::Test).await.unwrap();
    let bus = TestBus::new(Purpose::Test);
    let store = seed_soon(&db).await;
    let Db::Postgres(pool) = store.db() else {
        panic!("seeded on Postgres");
    };
    let (sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock))
        .await
        .unwrap();

    // First run: the near-expiry providers register (their subscriptions are
    // live at the simulator), then the service stops.
    let first = start(&db, &bus, &sim_server);
    subkeeper_testkit::wait_until(
        "the first providers registered",
        Duration::from_secs(60),
        || async { soon_live_after(pool, chrono::Utc::now()).await == SOON as i64 },
    )
    .await;
    first.stop(Duration::from_secs(30)).await.unwrap();

    // While it was down: their subscriptions now lapse `LAPSE_IN` from now (as
    // far as the service knows), and `FRESH` new providers were added, whose
    // registrations the simulator holds for `HOLD` seconds each.
    seed_fresh(pool).await;
    let lapse_at = chrono::Utc::now() + chrono::TimeDelta::from_std(LAPSE_IN).unwrap();
    sqlx::query(
        "UPDATE subscriptions SET expires_at = $1 WHERE provider_id = ANY($2) AND state = 'active'",
    )
    .bind(lapse_at)
    .bind((0..SOON).map(soon_id).collect::<Vec<_>>())
    .execute(pool)
    .await
    .unwrap();
    sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::Timeout { seconds: HOLD })
            .for_resource("@fresh.example/"),
    );
    sim.clear_requests();

    let restarted = std::time::Instant::now();
    let second = start(&db, &bus, &sim_server);
    // Each is renewed (a new expiry, days away) before it lapses; past the
    // lapse this fails.
    let renewed_by = lapse_at + chrono::TimeDelta::days(1);
    let deadline = tokio::time::Instant::now() + LAPSE_IN;
    loop {
        let renewed = soon_live_after(pool, renewed_by).await;
        if renewed == SOON as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{renewed} of {SOON} near-expiry subscriptions renewed before they lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …while registrations were still queued: not every new provider had been
    // tried yet.
    let requests = sim.requests();
    let registrations = requests
        .iter()
        .filter(|r| {
            r.operation == Operation::Create
                && r.resource
                    .as_deref()
                    .is_some_and(|r| r.contains("@fresh.example/"))
        })
        .count();
    assert!(
        registrations < FRESH as usize,
        "every registration was tried before the renewals finished ({registrations})"
    );
    let renewals = requests
        .iter()
        .filter(|r| r.operation == Operation::Renew && r.tenant.as_deref() == Some("soon-aad"))
        .count();
    assert!(
        renewals >= SOON,
        "{renewals} renew calls for {SOON} providers"
    );
    eprintln!(
        "{SOON} near-expiry subscriptions renewed {:.1} s after the restart (they lapse at {} s), {registrations} of {FRESH} registrations tried",
        restarted.elapsed().as_secs_f64(),
        LAPSE_IN.as_secs()
    );

    // Shutdown is not held up by the queue: the held creates are let go.
    sim.clear_faults();
    second.stop_with(sim_server).await.unwrap();
    pool.close().await;
}
