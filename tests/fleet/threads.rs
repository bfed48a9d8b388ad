//! The fleet with its supervisors on two threads of their own
//! (`supervisor_threads = 2`), sharing one store pool, one bus and one Graph
//! client with the service's main thread: providers register, renew on their
//! timers again and again, subscriptions Graph removed are recreated, deleted providers
//! are retired (their subscriptions deleted at Graph), nothing lapses, and the
//! service shuts down cleanly — its supervisor threads ended, none panicked
//! (`run_with` answers an error otherwise).
//!
//! Real service, Postgres, NATS and the simulator over HTTP, on one clock
//! running 20× real time with renewals one domain minute after each create or
//! renewal (every 3 s real).

use crate::clocked::OnOneClock;
use reqwest::{Method, StatusCode};
use std::collections::HashSet;
use std::time::Duration;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::graph_mail_provider;
use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::sim::LifecycleEvent;
use subkeeper_testkit::wait_until;

/// Providers, spread over [`TENANTS`] tenants.
const PROVIDERS: usize = 60;
/// Tenants (Azure AD tenants `t<k>-aad`).
const TENANTS: usize = 3;
/// Domain seconds per real second.
const SPEED: u32 = 20;

/// Providers of `pool` with at least `n` successful attempts of `action`
/// (`renewed`, `recreated`) among `ids`.
async fn with_attempts(pool: &sqlx::PgPool, ids: &[uuid::Uuid], action: &str, n: i64) -> usize {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT provider_id FROM renewal_attempts \
         WHERE provider_id = ANY($1) AND action = $2 AND outcome = 'success' \
         GROUP BY provider_id HAVING count(*) >= $3) AS p",
    )
    .bind(ids)
    .bind(action)
    .bind(n)
    .fetch_one(pool)
    .await
    .unwrap();
    usize::try_from(count).unwrap()
}

#[actix_web::test]
async fn two_supervisor_threads_renew_recreate_retire_and_stop_cleanly() {
    let env = OnOneClock::start(TestDb::create(Purpose::Test).await.unwrap(), SPEED, |c| {
        c.supervisor_threads = 2;
        // Renew one domain minute after each create or renewal.
        c.renewal_lookahead_minutes = (subkeeper::providers::graph::OUTLOOK_MAX_MINUTES - 5) - 1;
        c.renewal_jitter_seconds = 5;
    })
    .await;
    let (sim, admin) = (&env.sim, &env.admin);
    let mut providers: Vec<(String, uuid::Uuid, String)> = Vec::new();
    for i in 0..PROVIDERS {
        let tenant = format!("t{}", i % TENANTS);
        let resource = format!("users/mbx{i}@{tenant}.example/messages");
        let id = admin
            .create_provider(
                &tenant,
                graph_mail_provider(&format!("mailbox {i}"), &resource, &format!("{tenant}-aad")),
            )
            .await
            .unwrap();
        providers.push((tenant, id.parse().unwrap(), resource));
    }
    let all: Vec<uuid::Uuid> = providers.iter().map(|p| p.1).collect();
    let pool = &env.db.pool().await.unwrap();

    // Every provider registers and renews on its timer, twice.
    wait_until(
        "every provider renewed twice",
        Duration::from_secs(120),
        || async { with_attempts(pool, &all, "renewed", 2).await == PROVIDERS },
    )
    .await;

    // Graph removes t1's subscriptions and says so (`subscriptionRemoved`):
    // each is recreated.
    let t1: Vec<uuid::Uuid> = providers
        .iter()
        .filter(|p| p.0 == "t1")
        .map(|p| p.1)
        .collect();
    for subscription in sim.subscriptions() {
        if subscription.resource.contains("@t1.example/") {
            // One renewed meanwhile is another id: removed or not, each
            // provider's subscription is recreated once its removal is told.
            let _ = sim
                .lifecycle(&subscription.id, LifecycleEvent::SubscriptionRemoved)
                .await;
        }
    }
    wait_until(
        "every t1 subscription recreated",
        Duration::from_secs(60),
        || async { with_attempts(pool, &t1, "recreated", 1).await == t1.len() },
    )
    .await;

    // t2's providers are deleted: retired, their subscriptions deleted at Graph.
    let t2: Vec<&(String, uuid::Uuid, String)> = providers.iter().filter(|p| p.0 == "t2").collect();
    for (tenant, id, _) in &t2 {
        let (status, body) = admin
            .request(
                Method::DELETE,
                &format!("/tenants/{tenant}/providers/{id}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let retired: HashSet<&str> = t2.iter().map(|p| p.2.as_str()).collect();
    wait_until(
        "the deleted providers' subscriptions deleted at Graph",
        Duration::from_secs(60),
        || async {
            !sim.subscriptions()
                .iter()
                .any(|s| retired.contains(s.resource.as_str()))
        },
    )
    .await;

    // The others keep renewing (twice more each) and none has lapsed: each has
    // exactly one live subscription at Graph, not expired.
    let kept: Vec<&(String, uuid::Uuid, String)> =
        providers.iter().filter(|p| p.0 != "t2").collect();
    let kept_ids: Vec<uuid::Uuid> = kept.iter().map(|p| p.1).collect();
    wait_until(
        "the remaining providers renewed twice more",
        Duration::from_secs(60),
        || async { with_attempts(pool, &kept_ids, "renewed", 4).await == kept.len() },
    )
    .await;
    let now = sim.now();
    let live = sim.subscriptions();
    for (_, id, resource) in &kept {
        let mine: Vec<_> = live.iter().filter(|s| &s.resource == resource).collect();
        assert_eq!(mine.len(), 1, "{id}: {mine:?}");
        assert!(mine[0].expiration_date_time > now, "{id} lapsed: {mine:?}");
    }

    // A clean stop: supervisors drained, their threads ended without a panic.
    pool.close().await;
    env.stop().await;
}
