//! The providers' request limits as the simulator enforces them: a tenant
//! throttled for hours gets no request before each `Retry-After` has elapsed
//! and is renewed once it lifts; 5,000 mailboxes of one tenant register without
//! ever exceeding the tenant's write budget.
//!
//! Both run the real service and the simulator over HTTP on one clock (the
//! simulator's, as the demo and the fleet bench share it), with real Postgres
//! and NATS, set up here from the test kit rather than the shared harness
//! because the harness runs on the wall clock.

use crate::clocked::OnOneClock;
use chrono::TimeDelta;
use reqwest::{Method, StatusCode};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkeeper::store::{Db, Location, Store};
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_actors::telemetry::names;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, graph_mail_provider};
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::sim::{ForcedThrottle, Operation, RequestFilter, busiest_window};
use subkeeper_testkit::wait_until;

/// Creates one Graph mail provider per mailbox, for `tenant` in Azure AD tenant
/// `authority`; their resources.
async fn mailboxes(
    env: &OnOneClock,
    tenant: &str,
    authority: &str,
    names: &[&str],
) -> (Vec<String>, HashSet<String>) {
    let mut ids = Vec::new();
    let mut resources = HashSet::new();
    for name in names {
        let resource = format!("users/{name}@{authority}.example/messages");
        let id = env
            .admin
            .create_provider(tenant, graph_mail_provider(name, &resource, authority))
            .await
            .unwrap();
        ids.push(id);
        resources.insert(resource);
    }
    (ids, resources)
}

/// The sum of a metric's samples with these labels.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    subkeeper_testkit::metrics::sum(text, name, labels)
}

#[actix_web::test]
async fn a_tenant_throttled_for_hours_gets_nothing_before_retry_after_and_is_renewed_after() {
    // 600×: ten minutes of provider time per second, three hours in 18 s.
    let env = OnOneClock::start(TestDb::create(Purpose::Test).await.unwrap(), 600, |c| {
        // Renew about an hour after registering (Graph grants 10,065 minutes),
        // spread over ten minutes, so renewals fall due during the throttle.
        c.renewal_lookahead_minutes = 10_000;
        c.renewal_jitter_seconds = 600;
        // No webhooks flow here: silence checks would read every mailbox's
        // changes during the throttle. They pass the same limits, but what is
        // checked is the renewals.
        c.mail_poll_after_silence_seconds = 0;
        c.calendar_poll_after_silence_seconds = 0;
    })
    .await;
    let names: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (throttled_ids, throttled) = mailboxes(&env, "acme", "throttled-aad", &names).await;
    let (_, calm) = mailboxes(&env, "globex", "calm-aad", &["ann", "ben", "cat"]).await;
    let all: HashSet<String> = throttled.union(&calm).cloned().collect();
    wait_until(
        "every mailbox registered",
        Duration::from_secs(30),
        || async { env.live_on(&all).len() == all.len() },
    )
    .await;
    // Each registration is followed by a catch-up that takes the mailbox's
    // change cursor (a delta read); let those finish first, so that the first
    // 429 is the one renewal below meets on its own, not a read racing a
    // renewal already on its way.
    wait_until(
        "every mailbox's change cursor taken",
        Duration::from_secs(30),
        || async {
            let reads = |tenant: &str| {
                env.sim
                    .requests_for_tenant(tenant)
                    .iter()
                    .filter(|r| r.operation == Operation::ChangeFeed && r.status == 200)
                    .count()
            };
            reads("throttled-aad") >= throttled.len() && reads("calm-aad") >= calm.len()
        },
    )
    .await;

    // Microsoft throttles the tenant for three hours, asking each time for
    // 30 minutes of quiet.
    let hours = TimeDelta::hours(3);
    let window = env
        .sim
        .force_throttle(ForcedThrottle::graph_tenant("throttled-aad", hours).retry_after(1800));
    let lifted_at = window.until;
    // The first 429 is met by one renewal on its own. (A request already on
    // its way when a throttle starts cannot know of it; what is checked is
    // everything after the first answer.)
    let (status, result) = env
        .admin
        .request(
            Method::POST,
            &format!("/tenants/acme/providers/{}/renew", throttled_ids[0]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["error_class"], "throttled", "{result}");

    // After the throttle every mailbox of the tenant is renewed: each expiry
    // now counts from after the lift.
    let renewed_after_lift = lifted_at + TimeDelta::minutes(10_000);
    wait_until(
        "every throttled mailbox renewed after the lift",
        Duration::from_secs(90),
        || async {
            let live = env.live_on(&throttled);
            live.len() == throttled.len() && live.iter().all(|(_, e)| *e >= renewed_after_lift)
        },
    )
    .await;
    assert!(env.sim.now() >= lifted_at);

    // Nothing reached the provider for a budget before its Retry-After.
    let early = env.sim.early_retries();
    assert!(early.is_empty(), "requests before Retry-After: {early:#?}");
    let requests = env.sim.requests_for_tenant("throttled-aad");
    let refused: Vec<_> = requests.iter().filter(|r| r.status == 429).collect();
    // One request per 30-minute wait found out whether the throttle was
    // still on, not one per mailbox.
    let waits = (hours.num_minutes() / 30 + 2) as usize;
    assert!(
        !refused.is_empty() && refused.len() <= waits,
        "{} refused requests for {} waits",
        refused.len(),
        waits
    );
    // No subscription lapsed: every one stayed live throughout (they expire
    // days after registration) and is live now.
    assert_eq!(env.live_on(&all).len(), all.len());
    // The other tenant kept renewing during the throttle.
    let calm_renewals = env
        .sim
        .requests_for_tenant("calm-aad")
        .into_iter()
        .filter(|r| r.operation == Operation::Renew && r.status == 200)
        .filter(|r| r.at >= window.from && r.at < lifted_at)
        .count();
    assert!(calm_renewals >= 3, "calm-aad renewed {calm_renewals} times");
    // The attempts that came due were held here, and said so.
    let text = env.metrics().await;
    assert!(metric(&text, names::PROVIDER_REQUESTS_HELD, &[("family", "graph")]) >= 1.0);
    assert!(metric(&text, names::PROVIDER_RATE_LIMITED, &[("family", "graph")]) >= 1.0);
    let pool = env.db.pool().await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM renewal_attempts WHERE error_class = 'throttled' AND error_message LIKE '%not sent%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(held >= 1, "no attempt was held");
    env.stop().await;
}

/// Mailboxes in the big tenant.
const FLEET: usize = 5_000;

/// Credentials rows they are connected through: one app in one Azure AD
/// tenant, so one budget, whichever row a provider uses.
const CONNECTIONS: usize = 5;

/// Seeds `FLEET` Graph mail providers of tenant `bulk` (Azure AD tenant
/// `bulk-aad`) by SQL, as the fleet bench does: the admin API would take
/// minutes to create them one by one.
async fn seed_fleet(db: &TestDb) {
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
         SELECT gen_random_uuid(), 'bulk', 'client_credentials', 'bulk-aad', $2, $3, \
                'https://graph.microsoft.com/.default' \
         FROM generate_series(1, $1)",
    )
    .bind(CONNECTIONS as i64)
    .bind(GRAPH_CLIENT_ID)
    .bind(GRAPH_CLIENT_SECRET)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH c AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM oauth_credentials) \
         INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id) \
         SELECT gen_random_uuid(), 'bulk', 'graph_mail', 'mailbox ' || i, \
                'users/mbx' || i || '@bulk.example/messages', c.id \
         FROM generate_series(0, $1 - 1) AS i JOIN c ON c.n = i % $2",
    )
    .bind(FLEET as i64)
    .bind(CONNECTIONS as i64)
    .execute(pool)
    .await
    .unwrap();
    pool.close().await;
}

#[actix_web::test]
async fn five_thousand_mailboxes_of_one_tenant_register_within_its_write_budget() {
    let db = TestDb::create(Purpose::Test).await.unwrap();
    seed_fleet(&db).await;
    let started = Instant::now();
    // The wall clock: Graph's 1,000 writes per 20 s is 50 a second, well below
    // what the service can send here, so the budget is what paces it.
    let env = OnOneClock::start(db, 1, |_| {}).await;
    wait_until(
        "every mailbox registered at Graph",
        Duration::from_secs(400),
        || async { env.sim.subscriptions().len() == FLEET },
    )
    .await;
    let took = started.elapsed();

    let writes = env.sim.requests_where(&RequestFilter {
        tenant: Some("bulk-aad".into()),
        app: Some(GRAPH_CLIENT_ID.into()),
        writes: Some(true),
        ..RequestFilter::default()
    });
    let busiest = busiest_window(&writes, TimeDelta::seconds(20));
    let refused = writes.iter().filter(|r| r.status == 429).count();
    eprintln!(
        "{FLEET} mailboxes of one tenant registered in {:.1} s; {} writes, busiest 20 s window {busiest}, {refused} refused",
        took.as_secs_f64(),
        writes.len()
    );
    assert_eq!(env.sim.requests_dropped(), 0, "the journal let requests go");
    assert!(busiest <= 1_000, "{busiest} writes in one 20 s window");
    assert_eq!(refused, 0, "Graph refused {refused} writes");
    let other: Vec<(Operation, u16)> = writes
        .iter()
        .filter(|r| !(r.operation == Operation::Create && r.status == 201))
        .map(|r| (r.operation, r.status))
        .collect();
    assert!(
        other.is_empty(),
        "writes other than a created subscription: {other:?}"
    );
    // The budget, not the service, set the pace: requests waited for it.
    let text = env.metrics().await;
    assert!(
        metric(
            &text,
            names::PROVIDER_LIMIT_WAITS,
            &[("family", "graph"), ("reason", "rate")]
        ) >= 1.0
    );
    // And every one is recorded (the last answers may still be on their way in).
    let pool = env.db.pool().await.unwrap();
    wait_until(
        "every registration recorded",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
                .fetch_one(&pool)
                .await
                .unwrap();
            n as usize == FLEET
        },
    )
    .await;
    pool.close().await;
    env.stop().await;
}
