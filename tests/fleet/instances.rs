//! Several instances sharing one fleet, as real processes (see
//! [`crate::cluster`]): the fleet spread evenly, a killed instance's providers
//! adopted within the lease TTL with nothing lapsing and nothing renewed twice
//! at once, a paused former owner standing down, a SIGTERM that leaves rotation
//! first and hands over at once, and requests passed to the owner.

use crate::cluster::{ADMIN_TOKEN, Cluster, HEARTBEAT, LEASE_TTL};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subkeeper_testkit::sim::{Operation, Simulator};
use subkeeper_testkit::wait_until;

/// Renewals of one subscription closer together than this were made by two
/// supervisors at once (each renews once a minute).
const TOO_CLOSE: chrono::TimeDelta = chrono::TimeDelta::seconds(20);

/// Subscriptions renewed twice within [`TOO_CLOSE`], with the gap. A pair that
/// straddles `killed_at` is not "at once": a renewal the killed instance made
/// but did not live to record is made again by the adopter, which is right.
fn renewed_twice_at_once(
    sim: &Simulator,
    killed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<(String, String)> {
    let mut by_subscription: HashMap<String, Vec<chrono::DateTime<chrono::Utc>>> = HashMap::new();
    for r in sim.requests() {
        if r.operation == Operation::Renew
            && r.status < 300
            && let Some(id) = r.subscription_id
        {
            by_subscription.entry(id).or_default().push(r.at);
        }
    }
    let mut doubled = Vec::new();
    for (id, mut times) in by_subscription {
        times.sort();
        for pair in times.windows(2) {
            // A request sent just before the kill can reach the simulator's
            // journal a moment after it.
            let straddles = killed_at
                .is_some_and(|k| pair[0] <= k + chrono::TimeDelta::seconds(1) && k <= pair[1]);
            if pair[1] - pair[0] < TOO_CLOSE && !straddles {
                doubled.push((id.clone(), format!("{} and {}", pair[0], pair[1])));
            }
        }
    }
    doubled
}

/// Creates per resource that the simulator accepted.
fn creates(sim: &Simulator) -> HashMap<String, usize> {
    let mut creates = HashMap::new();
    for r in sim.requests() {
        if r.operation == Operation::Create
            && r.status < 300
            && let Some(resource) = r.resource
        {
            *creates.entry(resource).or_default() += 1;
        }
    }
    creates
}

#[actix_web::test]
async fn three_instances_share_the_fleet_and_adopt_a_killed_ones_providers() {
    const PROVIDERS: usize = 3_000;
    let mut cluster = Cluster::new(PROVIDERS).await;
    for _ in 0..3 {
        cluster.start_instance().await;
    }
    let ids: Vec<i64> =
        futures_util::future::join_all((0..3).map(|n| cluster.instance_id(n))).await;

    // Every provider registered exactly once, and the fleet spread evenly.
    wait_until(
        "3,000 providers registered and spread over three instances",
        Duration::from_secs(180),
        || async {
            let owners = cluster.owners().await;
            let live = cluster.live();
            live.len() == PROVIDERS && ids.iter().all(|id| owners.get(&Some(*id)) == Some(&1_000))
        },
    )
    .await;
    assert!(
        cluster.live().values().all(|n| *n == 1),
        "a provider has two live subscriptions: {:?}",
        cluster.duplicates()
    );

    // A round of renewals, then one instance dies mid-run.
    wait_until("renewals under way", Duration::from_secs(120), || async {
        cluster
            .sim
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::Renew)
            .count()
            >= PROVIDERS / 2
    })
    .await;
    let victim = ids[1];
    let killed_at = chrono::Utc::now();
    cluster.instances[1].signal("KILL");
    let killed = Instant::now();
    println!(
        "killed pid {} (instance {victim})",
        cluster.instances[1].pid()
    );
    wait_until(
        "the killed instance's providers adopted",
        Duration::from_secs(30),
        || async {
            let owners = cluster.owners().await;
            !owners.contains_key(&Some(victim)) && !owners.contains_key(&None)
        },
    )
    .await;
    let failover = killed.elapsed();
    println!(
        "failover: all of the killed instance's providers owned again after {:.2} s",
        failover.as_secs_f64()
    );
    assert!(
        failover <= LEASE_TTL + 3 * HEARTBEAT,
        "adoption took {failover:?}, more than the lease TTL plus three heartbeats"
    );
    let owners = cluster.owners().await;
    assert_eq!(owners.get(&Some(ids[0])), Some(&1_500), "{owners:?}");
    assert_eq!(owners.get(&Some(ids[2])), Some(&1_500), "{owners:?}");

    // Another full round of renewals on the survivors: nothing lapses (a lapsed
    // subscription is renewed into a 404 and created again).
    let renewed_since: usize = cluster
        .sim
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::Renew)
        .count();
    wait_until(
        "another round of renewals",
        Duration::from_secs(150),
        || async {
            cluster
                .sim
                .requests()
                .iter()
                .filter(|r| r.operation == Operation::Renew)
                .count()
                >= renewed_since + PROVIDERS
        },
    )
    .await;
    let live = cluster.live();
    assert_eq!(
        live.len(),
        PROVIDERS,
        "every provider has a live subscription"
    );
    assert!(
        live.values().all(|n| *n == 1),
        "a provider has two live subscriptions: {:?} (killed at {})",
        cluster.duplicates(),
        killed_at
    );
    let recreated: Vec<_> = creates(&cluster.sim)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        recreated.is_empty(),
        "subscriptions lapsed and were created again: {:?}",
        &recreated[..recreated.len().min(5)]
    );
    let doubled = renewed_twice_at_once(&cluster.sim, Some(killed_at));
    assert!(
        doubled.is_empty(),
        "renewed by two instances at once: {:?} (killed at {killed_at})",
        &doubled[..doubled.len().min(5)]
    );
    assert_eq!(
        cluster.sim.requests_dropped(),
        0,
        "the journal kept every request"
    );
    cluster.stop().await;
}

#[actix_web::test]
async fn a_paused_former_owner_writes_nothing_and_stands_down() {
    const PROVIDERS: usize = 300;
    let mut cluster = Cluster::new(PROVIDERS).await;
    cluster.start_instance().await;
    cluster.start_instance().await;
    let (a, b) = (cluster.instance_id(0).await, cluster.instance_id(1).await);
    wait_until(
        "providers registered and spread over two instances",
        Duration::from_secs(120),
        || async {
            let owners = cluster.owners().await;
            cluster.live().len() == PROVIDERS
                && owners.get(&Some(a)) == Some(&150)
                && owners.get(&Some(b)) == Some(&150)
        },
    )
    .await;
    let pool = cluster.pool().await;
    let held_by_a: HashMap<uuid::Uuid, i64> = sqlx::query_as::<_, (uuid::Uuid, i64)>(
        "SELECT id, lease_token FROM providers WHERE owner = $1",
    )
    .bind(a)
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();

    // A stops past its lease; B adopts everything under new fences.
    let stopped_at = chrono::Utc::now();
    cluster.instances[0].signal("STOP");
    wait_until("B owns every provider", Duration::from_secs(30), || async {
        cluster.owners().await.get(&Some(b)) == Some(&(PROVIDERS as i64))
    })
    .await;
    let refenced: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT id, lease_token FROM providers WHERE id = ANY($1)")
            .bind(held_by_a.keys().copied().collect::<Vec<_>>())
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        refenced.iter().all(|(id, token)| *token > held_by_a[id]),
        "every adopted provider carries a newer fence"
    );
    // While A sleeps, its renewals came due: B made them.
    let attempts_before: i64 = sqlx::query_scalar("SELECT count(*) FROM renewal_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();

    // A wakes up: it must notice its lease ran out and stand its supervisors down
    // rather than write under its old claims.
    cluster.instances[0].signal("CONT");
    let metrics = format!("{}/metrics", cluster.instances[0].base_url);
    let http = cluster.http.clone();
    wait_until(
        "A noticed its lease had lapsed",
        Duration::from_secs(30),
        || async {
            let Ok(r) = http.get(&metrics).send().await else {
                return false;
            };
            let text = r.text().await.unwrap_or_default();
            subkeeper_testkit::metrics::sum(
                &text,
                "subkeeper_lease_changes_total",
                &[("change", "lapsed")],
            ) >= 1.0
        },
    )
    .await;
    let log = std::fs::read_to_string(&cluster.instances[0].log).unwrap();
    assert!(
        log.contains("lease had run out"),
        "A says why it stands down:\n{}",
        cluster.instances[0].log_tail()
    );
    // Whatever A wrote after waking, it wrote under claims it holds now: no
    // provider has two live subscriptions, none lost its subscription, and no
    // renewal was made twice at once.
    wait_until(
        "the two instances balanced again",
        Duration::from_secs(60),
        || async {
            let owners = cluster.owners().await;
            owners.get(&Some(a)) == Some(&150) && owners.get(&Some(b)) == Some(&150)
        },
    )
    .await;
    let live = cluster.live();
    assert_eq!(live.len(), PROVIDERS);
    assert!(
        live.values().all(|n| *n == 1),
        "a provider has two live subscriptions: {:?}",
        cluster.duplicates()
    );
    let doubled = renewed_twice_at_once(&cluster.sim, Some(stopped_at));
    assert!(
        doubled.is_empty(),
        "renewed by two instances at once: {doubled:?}"
    );
    // What is asked of an instance for a provider another owns reaches the
    // owner: a forced renewal through A's admin API of one of B's providers,
    // and a tenant-wide one that covers both instances' providers.
    let (tenant, provider): (String, uuid::Uuid) =
        sqlx::query_as("SELECT tenant_id, id FROM providers WHERE owner = $1 ORDER BY id LIMIT 1")
            .bind(b)
            .fetch_one(&pool)
            .await
            .unwrap();
    let via_a = |path: String| {
        cluster
            .http
            .post(format!(
                "{}/api/v1/tenants/{tenant}/{path}",
                cluster.instances[0].base_url
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let one = via_a(format!("providers/{provider}/renew")).await.unwrap();
    assert_eq!(
        one.status(),
        reqwest::StatusCode::OK,
        "forced renewal of B's provider through A"
    );
    let one: serde_json::Value = one.json().await.unwrap();
    assert_eq!(one["provider_id"], provider.to_string());
    assert_eq!(one["success"], true, "{one}");
    let of_tenant: i64 =
        sqlx::query_scalar("SELECT count(*) FROM providers WHERE tenant_id = $1 AND enabled")
            .bind(&tenant)
            .fetch_one(&pool)
            .await
            .unwrap();
    let all = via_a("renew".into()).await.unwrap();
    assert_eq!(all.status(), reqwest::StatusCode::OK);
    let all: serde_json::Value = all.json().await.unwrap();
    let results = all
        .as_array()
        .or_else(|| all["results"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        results.len() as i64,
        of_tenant,
        "every provider of the tenant, on either instance: {all}"
    );
    let attempts_after: i64 = sqlx::query_scalar("SELECT count(*) FROM renewal_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(attempts_after >= attempts_before);
    pool.close().await;
    cluster.stop().await;
}

#[actix_web::test]
async fn sigterm_leaves_rotation_first_and_hands_the_providers_over_at_once() {
    const PROVIDERS: usize = 300;
    // The deadline counts from SIGTERM: an instance that has been up for longer
    // than its deadline still drains, stops and hands over in full.
    const DEADLINE: Duration = Duration::from_secs(8);
    let mut cluster = Cluster::new(PROVIDERS).await;
    let spawned = Instant::now();
    cluster
        .start_instance_with(|c| {
            c.shutdown_drain_seconds = 2;
            c.shutdown_timeout_seconds = DEADLINE.as_secs();
        })
        .await;
    cluster.start_instance().await;
    let (a, b) = (cluster.instance_id(0).await, cluster.instance_id(1).await);
    wait_until(
        "providers registered and spread over two instances",
        Duration::from_secs(120),
        || async {
            let owners = cluster.owners().await;
            cluster.live().len() == PROVIDERS
                && owners.get(&Some(a)) == Some(&150)
                && owners.get(&Some(b)) == Some(&150)
                && spawned.elapsed() > DEADLINE + Duration::from_secs(1)
        },
    )
    .await;

    cluster.instances[0].signal("TERM");
    let terminated = Instant::now();
    // Out of rotation at once, while webhooks are still taken during the drain.
    let base = cluster.instances[0].base_url.clone();
    let ready = cluster
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "shutting_down");
    let validation = cluster
        .http
        .post(format!(
            "{base}/webhooks/microsoft?validationToken=still-here"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(validation.status(), reqwest::StatusCode::OK);
    assert_eq!(validation.text().await.unwrap(), "still-here");

    // Exits by itself, cleanly, within its deadline, having released its leases:
    // B owns everything sooner than a crash's lease TTL would allow.
    let status = loop {
        if let Some(status) = cluster.instances[0].child.try_wait().unwrap() {
            break status;
        }
        assert!(
            terminated.elapsed() < DEADLINE + Duration::from_secs(2),
            "still running after its {DEADLINE:?} deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        cluster.instances[0].log_tail()
    );
    let pool = cluster.pool().await;
    let leaving: bool = sqlx::query_scalar("SELECT leaving FROM instances WHERE id = $1")
        .bind(a)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(leaving, "the instance marked itself as leaving");
    wait_until("B owns every provider", Duration::from_secs(10), || async {
        cluster.owners().await.get(&Some(b)) == Some(&(PROVIDERS as i64))
    })
    .await;
    let handed_over = terminated.elapsed();
    println!(
        "graceful hand-over: B owns all after {:.2} s (2 s of drain included)",
        handed_over.as_secs_f64()
    );
    assert!(
        handed_over < Duration::from_secs(2) + LEASE_TTL,
        "released providers were taken over at B's next heartbeat, not after a TTL"
    );
    let log = std::fs::read_to_string(&cluster.instances[0].log).unwrap();
    assert!(
        log.contains("left the fleet"),
        "{}",
        cluster.instances[0].log_tail()
    );
    assert!(cluster.live().values().all(|n| *n == 1));
    pool.close().await;
    cluster.stop().await;
}
