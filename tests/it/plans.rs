//! Query plans that stay right when the tables grow from empty, and idle cost
//! that follows the work that is due (PostgreSQL only: the embedded store is
//! one instance with a small fleet).
//!
//! One test seeds 100,000 providers with their subscriptions, health rows and
//! cursors straight in SQL, runs ANALYZE, and runs the hot statements under
//! `EXPLAIN (ANALYZE, FORMAT JSON)` (rolled back) — on the store's own pool,
//! with the `plan_cache_mode` the service sets — asserting that none scans
//! `providers`, `subscriptions`, `provider_health` or `provider_cursors`
//! sequentially, nor walks one by index (touches more than 2,000 of its rows:
//! a nested loop over every provider is as bad as a Seq Scan). The group
//! commit's writes, the change feed and the silence sweeps are the store's own
//! text (`subkeeper::store::statements`); the few others are copied here (each
//! names the function it comes from). The same test then runs the real store
//! methods on the seeded fleet and checks that they find exactly the providers
//! seeded as due. Another test shows the change feed does not lose a change
//! whose transaction commits after a later one, and the last that a lease
//! heartbeat, which counts the fleet only after a change, misses none.

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use std::sync::Arc;
use subkeeper::store::{IfMissing, Location, Store, statements};
use subkeeper_actors::domain::{ProviderId, ProviderKind};
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_actors::ports::{
    CatchUpStore, LeaseStore as _, LifecycleStore, NotificationStore, ProviderChange, Revision,
};
use subkeeper_testkit::Purpose;
use subkeeper_testkit::db::TestDb;
use uuid::Uuid;

/// Providers seeded.
const FLEET: i64 = 100_000;
/// Of them, the `graph_mail` ones whose last webhook is two days old: due for
/// both silence sweeps under the thresholds below.
const QUIET: i64 = 12;
/// The instance that owns the seeded providers.
const OWNER: i64 = 1;

async fn store_on(db: &TestDb) -> Store {
    let store = Store::open(
        &Location::Postgres(db.url.clone()),
        4,
        Arc::new(SystemClock),
        IfMissing::Refuse,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

fn pool(store: &Store) -> sqlx::PgPool {
    match store.db() {
        subkeeper::store::Db::Postgres(pool) => pool.clone(),
        subkeeper::store::Db::Sqlite(_) => unreachable!("a Postgres store"),
    }
}

/// Seeds the fleet: every provider owned by [`OWNER`], enabled, with a live
/// subscription made an hour ago, a health row and a cursor checked recently;
/// provider `i` is of kind `i % 4`; the first [`QUIET`] `graph_mail` ones last
/// heard from two days ago.
async fn seed(pool: &sqlx::PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for sql in [
        // Bulk rows without their triggers (the revision stamp, re-stamping
        // health rows that do not exist yet) and foreign-key checks: seconds
        // fewer. The health rows below are stamped by their trigger.
        "SET session_replication_role = replica",
        "INSERT INTO instances (id, host, pid, lease_until) VALUES (1, 'test', 1, now() + interval '1 day')",
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, enabled, status, created_at, updated_at, owner, lease_token) \
         SELECT md5('p' || i)::uuid, 'tenant' || (i % 500), \
                (ARRAY['graph_mail','graph_calendar','google_calendar','gmail'])[1 + i % 4], \
                'provider ' || i, 'users/u' || i || '/messages', true, 'connected', now(), now(), 1, 2 \
         FROM generate_series(1, 100000) AS i",
        "INSERT INTO subscriptions (provider_id, tenant_id, resource, external_id, client_state, expires_at, created_at, state) \
         SELECT md5('p' || i)::uuid, 'tenant' || (i % 500), 'users/u' || i || '/messages', 'sub-' || i, 'cs', \
                now() + interval '3 days', now() - interval '1 hour', 'active' \
         FROM generate_series(1, 100000) AS i",
        "INSERT INTO provider_cursors (provider_id, cursor, checked_at, updated_at) \
         SELECT md5('p' || i)::uuid, 'c' || i, now() - interval '3 days', now() \
         FROM generate_series(1, 100000) AS i",
        "SET session_replication_role = origin",
        "INSERT INTO provider_health (provider_id, tenant_id, subscription_status, subscription_expires_at, \
                last_renewal_attempt_at, last_renewal_result, last_webhook_received_at, next_renewal_at, updated_at) \
         SELECT md5('p' || i)::uuid, 'tenant' || (i % 500), 'healthy', now() + interval '3 days', \
                now() - interval '1 hour', 'registered', \
                CASE WHEN i % 4 = 0 AND i <= 4 * 12 THEN now() - interval '2 days' ELSE now() - interval '1 minute' END, \
                now() + interval '2 days', now() \
         FROM generate_series(1, 100000) AS i",
        "ANALYZE",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }
    drop(conn);
    // The subscriptions were made an hour ago: back-date them below the
    // quiet ones' last webhook so that webhook is their latest sign of life.
    sqlx::query("UPDATE subscriptions SET created_at = now() - interval '3 days' WHERE provider_id IN (SELECT md5('p' || i)::uuid FROM generate_series(4, 48, 4) AS i)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
}

/// Fleet-sized tables: no hot statement may scan one sequentially or touch
/// more than [`TOUCHED`] of its rows.
const FLEET_TABLES: [&str; 4] = [
    "providers",
    "subscriptions",
    "provider_health",
    "provider_cursors",
];

/// Rows of a fleet-sized table one hot statement may touch (returned or
/// filtered out, over all loops) on the seeded fleet.
const TOUCHED: f64 = 2_000.0;

/// What is wrong with `plan` (an `EXPLAIN (ANALYZE, FORMAT JSON)` node tree):
/// sequential scans of fleet-sized tables, and scans that touched too many of
/// their rows (an index walk over the whole fleet is as bad as a Seq Scan).
fn fleet_walks(plan: &Value, found: &mut Vec<String>) {
    if let Some(node) = plan.as_object() {
        if let Some(table) = node.get("Relation Name").and_then(Value::as_str)
            && FLEET_TABLES.contains(&table)
        {
            let kind = node.get("Node Type").and_then(Value::as_str).unwrap_or("");
            let number = |key: &str| node.get(key).and_then(Value::as_f64).unwrap_or(0.0);
            let touched = (number("Actual Rows") + number("Rows Removed by Filter"))
                * number("Actual Loops").max(1.0);
            if kind == "Seq Scan" || touched > TOUCHED {
                found.push(format!("{kind} on {table} touching {touched} rows"));
            }
        }
        for child in node.values() {
            fleet_walks(child, found);
        }
    } else if let Some(items) = plan.as_array() {
        for item in items {
            fleet_walks(item, found);
        }
    }
}

/// A statement and the values it runs with.
type Bind = Box<
    dyn for<'q> Fn(
        sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
>;

/// Runs `sql`, bound by `bind`, under `EXPLAIN ANALYZE` in a transaction it
/// rolls back, and asserts that it neither scans a fleet-sized table
/// sequentially nor walks one.
async fn assert_indexed(conn: &mut sqlx::PgConnection, what: &str, sql: &str, bind: &Bind) {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
    let query = bind(sqlx::query(sqlx::AssertSqlSafe(explain)));
    let row = query.fetch_one(&mut *conn).await;
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    let row = row.unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
    let plan: Value = sqlx::Row::get(&row, 0);
    let mut found = Vec::new();
    fleet_walks(&plan, &mut found);
    assert!(
        found.is_empty(),
        "{what}: {found:?} at {FLEET} providers:\n{sql}\n{plan:#}"
    );
}

#[actix_web::test]
async fn the_hot_statements_use_indexes_at_100k_providers_and_sweeps_read_only_what_is_due() {
    let db = TestDb::create(Purpose::Test).await.unwrap();
    let store = store_on(&db).await.owned_by(OWNER);
    let pool = pool(&store);
    let started = std::time::Instant::now();
    seed(&pool).await;
    let seeded = started.elapsed();

    let now = Utc::now();
    let provider = Uuid::parse_str(
        &sqlx::query_scalar::<_, String>("SELECT md5('p77')::uuid::text")
            .fetch_one(&pool)
            .await
            .unwrap(),
    )
    .unwrap();
    // Where the first page of `load_owned` (1,000 providers) ends.
    let page_end: Uuid =
        sqlx::query_scalar("SELECT id FROM providers ORDER BY id OFFSET 999 LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let mark = store.change_mark().await.unwrap();
    let kinds = vec!["graph_mail".to_owned(), "gmail".to_owned()];
    let cutoffs = vec![now - TimeDelta::hours(6), now - TimeDelta::hours(6)];
    let all_kinds: Vec<String> = ProviderKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();

    // The store's own statements for this instance, not copies.
    let change_feed = statements::change_feed(Some(OWNER));
    let change_feed_orphans = statements::change_feed_orphans(Some(OWNER));
    let silence_due = statements::silence_due(Some(OWNER));
    let statements: Vec<(&str, &str, Bind)> = vec![
        // lifecycle.rs subscription_deleted (and a batch's fence query, one id).
        (
            "record_attempt: fence check",
            "SELECT lease_token FROM providers WHERE id = $1 FOR SHARE",
            Box::new(move |q| q.bind(provider)),
        ),
        // attempts.rs: the set-based statements of a group commit (one
        // provider's row in each array, as a lone attempt writes them).
        (
            "group commit: replaced subscriptions",
            statements::RETIRE_REPLACED,
            Box::new(move |q| {
                q.bind(vec![provider])
                    .bind(vec!["sub-77"])
                    .bind(vec!["replaced"])
                    .bind(now)
            }),
        ),
        (
            "group commit: other live subscriptions",
            statements::REPLACE_OTHERS,
            Box::new(move |q| q.bind(vec![provider]).bind(vec!["sub-new"]).bind(now)),
        ),
        (
            "group commit: live subscriptions",
            statements::UPSERT_LIVE,
            Box::new(move |q| {
                q.bind(vec![provider])
                    .bind(vec!["sub-77"])
                    .bind(vec![None::<String>])
                    .bind(vec!["cs"])
                    .bind(vec![now])
                    .bind(vec![now])
                    .bind(vec![Some(now)])
                    .bind(vec![None::<String>])
            }),
        ),
        (
            "group commit: health rows",
            statements::UPSERT_HEALTH,
            Box::new(move |q| {
                q.bind(vec![provider])
                    .bind(vec!["t77"])
                    .bind(vec!["healthy"])
                    .bind(vec![Some(now)])
                    .bind(vec![Some(now)])
                    .bind(vec![Some("renewed")])
                    .bind(vec![None::<String>])
                    .bind(vec![0_i32])
                    .bind(vec![Some(now)])
                    .bind(now)
            }),
        ),
        (
            "group commit: providers' status",
            statements::UPDATE_PROVIDERS,
            Box::new(move |q| {
                q.bind(vec![provider])
                    .bind(vec!["connected"])
                    .bind(vec![None::<String>])
                    .bind(now)
            }),
        ),
        (
            "group commit: attempts",
            statements::INSERT_ATTEMPTS,
            Box::new(move |q| {
                q.bind(vec![provider])
                    .bind(vec!["t77"])
                    .bind(vec![now])
                    .bind(vec!["renew"])
                    .bind(vec!["renewed"])
                    .bind(vec!["success"])
                    .bind(vec![None::<String>])
                    .bind(vec![None::<String>])
                    .bind(vec![Some(200_i32)])
                    .bind(vec![5_i64])
                    .bind(vec![Some(now)])
                    .bind(vec![Some("sub-77")])
                    .bind(vec!["healthy"])
            }),
        ),
        // The change feed (lifecycle.rs changed_since).
        (
            "change feed",
            &change_feed,
            Box::new(move |q| q.bind(mark.0)),
        ),
        // leases.rs heartbeat: the probe before counting the fleet again.
        (
            "lease heartbeat: stamped since",
            statements::STAMPED_SINCE,
            Box::new(move |q| q.bind(mark.0)),
        ),
        (
            "change feed: orphans",
            &change_feed_orphans,
            Box::new(move |q| q.bind(mark.0)),
        ),
        // notification.rs mark_silent.
        ("mark_silent", statements::MARK_SILENT, {
            let (kinds, cutoffs) = (kinds.clone(), cutoffs.clone());
            Box::new(move |q| {
                q.bind(kinds.clone())
                    .bind(cutoffs.clone())
                    .bind(now)
                    .bind(cutoffs.iter().max().copied())
            })
        }),
        // catchup.rs silence_sweep.
        ("catch-up: due", &silence_due, {
            let (kinds, cutoffs) = (kinds.clone(), cutoffs.clone());
            Box::new(move |q| {
                q.bind(kinds.clone())
                    .bind(cutoffs.clone())
                    .bind(cutoffs.iter().max().copied())
            })
        }),
        (
            "catch-up: oldest per kind",
            statements::OLDEST_ALIVE,
            Box::new(move |q| q.bind(all_kinds.clone())),
        ),
        // notification.rs silent_providers.
        (
            "silent providers",
            "SELECT provider_id, silent_since FROM provider_health WHERE silent_since IS NOT NULL",
            Box::new(|q| q),
        ),
        // intake.rs routes.
        (
            "intake: route by subscription id",
            "SELECT s.external_id, s.provider_id, s.tenant_id, p.kind, s.client_state, s.state, \
                    (p.enabled AND p.deleted_at IS NULL) AS provider_enabled \
             FROM subscriptions s JOIN providers p ON p.id = s.provider_id \
             WHERE s.external_id IN ($1, $2)",
            Box::new(|q| q.bind("sub-77").bind("sub-78")),
        ),
        // lifecycle.rs load_owned (one page).
        (
            "load_owned: providers",
            "SELECT p.id, p.kind FROM providers p \
             WHERE p.id > $1 AND p.enabled AND p.deleted_at IS NULL AND p.owner = 1 ORDER BY p.id LIMIT $2",
            Box::new(|q| q.bind(Uuid::nil()).bind(1000_i64)),
        ),
        (
            "load_owned: subscriptions",
            "SELECT s.provider_id, s.external_id FROM subscriptions s \
             WHERE s.provider_id > $1 AND s.provider_id <= $2 AND s.state = 'active'",
            Box::new(move |q| q.bind(Uuid::nil()).bind(page_end)),
        ),
        (
            "load_owned: health",
            "SELECT h.provider_id, h.subscription_status FROM provider_health h \
             WHERE h.provider_id > $1 AND h.provider_id <= $2",
            Box::new(move |q| q.bind(Uuid::nil()).bind(page_end)),
        ),
    ];
    // As the service plans them (its pool sets plan_cache_mode), and as a
    // generic plan cached while the tables were small would.
    let mut conn = pool.acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan", "the service's own setting");
    for (what, sql, bind) in &statements {
        assert_indexed(&mut conn, what, sql, bind).await;
    }

    // The real sweeps on the seeded fleet find exactly the quiet providers.
    let quiet: Vec<ProviderId> = sqlx::query_scalar::<_, Uuid>(
        "SELECT md5('p' || i)::uuid FROM generate_series(4, 48, 4) AS i",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(ProviderId)
    .collect();
    assert_eq!(quiet.len(), QUIET as usize);
    let mut expected = quiet.clone();
    expected.sort();
    let supervised: Vec<ProviderId> = sqlx::query_scalar::<_, Uuid>("SELECT id FROM providers")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(ProviderId)
        .collect();
    let sweep = store
        .silence_sweep(
            &supervised,
            now,
            &[
                (ProviderKind::GraphMail, TimeDelta::hours(6)),
                (ProviderKind::Gmail, TimeDelta::hours(6)),
            ],
        )
        .await
        .unwrap();
    let mut due: Vec<ProviderId> = sweep.due.iter().map(|p| p.provider).collect();
    due.sort();
    assert_eq!(due, expected, "the catch-up sweep's due providers");
    let oldest_mail = sweep
        .oldest
        .iter()
        .find(|(k, _)| *k == ProviderKind::GraphMail)
        .map(|(_, at)| *at)
        .unwrap();
    assert!(
        (now - oldest_mail) > TimeDelta::hours(47),
        "oldest graph_mail sign of life: {oldest_mail}"
    );
    assert_eq!(sweep.oldest.len(), 4, "every kind has providers");

    let marked = store
        .mark_silent(now, &[(ProviderKind::GraphMail, TimeDelta::hours(6))])
        .await
        .unwrap();
    let mut silent: Vec<ProviderId> = marked.iter().map(|s| s.provider_id).collect();
    silent.sort();
    assert_eq!(silent, expected, "mark_silent marks the quiet ones");
    assert!(
        store
            .mark_silent(now, &[(ProviderKind::GraphMail, TimeDelta::hours(6))])
            .await
            .unwrap()
            .is_empty(),
        "each silence is reported once"
    );
    // A webhook ends one silence; the sweep no longer finds it due.
    let ended = store.record_webhooks(&[(quiet[0], now)]).await.unwrap();
    assert_eq!(ended.len(), 1);
    let sweep = store
        .silence_sweep(
            &supervised,
            now,
            &[(ProviderKind::GraphMail, TimeDelta::hours(6))],
        )
        .await
        .unwrap();
    assert_eq!(
        sweep.due.len(),
        QUIET as usize - 1,
        "the webhook is proof of life"
    );

    // The change feed: disabling three providers lists those three.
    let before = store.change_mark().await.unwrap();
    sqlx::query("UPDATE providers SET enabled = false WHERE id IN (SELECT md5('p' || i)::uuid FROM generate_series(1, 3) AS i)")
        .execute(&pool)
        .await
        .unwrap();
    // What every attempt writes is no change to the fleet.
    sqlx::query("UPDATE providers SET status = 'error', error_message = 'x', updated_at = now() WHERE id = $1")
        .bind(provider)
        .execute(&pool)
        .await
        .unwrap();
    let (changes, upto) = changes_until(&store, before, 3).await;
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|c| c.retired && c.owned_here && c.subscription.is_some())
    );
    assert!(store.changed_since(upto).await.unwrap().changes.is_empty());
    eprintln!(
        "seeded {FLEET} providers in {seeded:?}; whole test {:?}",
        started.elapsed()
    );
}

/// The changes from `since` on, read until there are at least `n` (the mark
/// is the server's oldest running write transaction: others on the shared
/// server, such as other tests, may hold it back a moment), and the next mark.
async fn changes_until(
    store: &Store,
    since: Revision,
    n: usize,
) -> (Vec<ProviderChange>, Revision) {
    let mut changes = Vec::new();
    let mut upto = since;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let next = store.changed_since(upto).await.unwrap();
        // A change may be listed again until the mark passes it: the latest
        // listing of each provider counts once.
        for change in next.changes {
            changes.retain(|c: &ProviderChange| c.owned.provider.id != change.owned.provider.id);
            changes.push(change);
        }
        upto = next.upto;
        if changes.len() >= n {
            return (changes, upto);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} changes within a minute: {changes:?}",
            changes.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A transaction that stamps a provider first but commits after a later one:
/// the feed must not move its mark past the earlier change and lose it (what
/// a plain sequence and "the highest revision read" would do).
#[actix_web::test]
async fn the_change_feed_keeps_a_change_whose_transaction_commits_late() {
    let db = TestDb::create(Purpose::Test).await.unwrap();
    let store = store_on(&db).await;
    let pool = pool(&store);
    let start = store.change_mark().await.unwrap();
    sqlx::query(
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, created_at, updated_at) \
         SELECT md5('p' || i)::uuid, 'acme', 'graph_mail', 'p' || i, 'users/u' || i || '/messages', now(), now() \
         FROM generate_series(1, 2) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT md5('p' || i)::uuid FROM generate_series(1, 2) AS i")
            .fetch_all(&pool)
            .await
            .unwrap();
    let (early, late) = (ids[0], ids[1]);
    // Past their creation.
    let (_, mark) = changes_until(&store, start, 2).await;

    // The early change is stamped first and stays uncommitted …
    let mut slow = db.connect().await.unwrap();
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::query("UPDATE providers SET enabled = false WHERE id = $1")
        .bind(early)
        .execute(&mut slow)
        .await
        .unwrap();
    // … while a later one commits at once.
    sqlx::query("UPDATE providers SET enabled = false WHERE id = $1")
        .bind(late)
        .execute(&pool)
        .await
        .unwrap();
    let first = store.changed_since(mark).await.unwrap();
    assert!(
        first.changes.iter().all(|c| c.owned.provider.id.0 != early),
        "an uncommitted change cannot be read"
    );
    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();

    // Reading on from the first read's mark finds both changes (the late one
    // perhaps again): a mark that had moved past the early one would never
    // list it.
    let (changes, _) = changes_until(&store, first.upto, 2).await;
    let mut seen: Vec<Uuid> = changes.iter().map(|c| c.owned.provider.id.0).collect();
    seen.sort();
    let mut both = vec![early, late];
    both.sort();
    assert_eq!(seen, both, "the change that committed late was lost");
    assert!(changes.iter().all(|c| c.retired), "both are disabled");
}

/// A heartbeat counts the fleet again only when a provider was stamped since
/// its last count; it must still see every change, one whose transaction
/// commits after the count included.
#[actix_web::test]
async fn a_lease_heartbeat_counts_again_only_after_a_change_and_misses_none() {
    let db = TestDb::create(Purpose::Test).await.unwrap();
    let store = store_on(&db).await;
    let pool = pool(&store);
    let add = |from: i32, to: i32| {
        sqlx::query(
            "INSERT INTO providers (id, tenant_id, kind, display_name, resource, created_at, updated_at) \
             SELECT md5('p' || i)::uuid, 'acme', 'graph_mail', 'p' || i, 'users/u' || i || '/messages', now(), now() \
             FROM generate_series($1::int, $2::int) AS i",
        )
        .bind(from)
        .bind(to)
        .execute(&pool)
    };
    add(1, 3).await.unwrap();
    let leases = subkeeper::store::Leases::join(&store, std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .expect("Postgres has leases");
    let counts = |m: subkeeper_actors::ports::Membership| (m.live_instances, m.providers, m.owned);
    assert_eq!(counts(leases.heartbeat().await.unwrap()), (1, 3, 0));
    assert_eq!(
        counts(leases.heartbeat().await.unwrap()),
        (1, 3, 0),
        "nothing changed"
    );

    // Claimed (owner and fence stamp the rows), one disabled, one deleted.
    assert_eq!(leases.claim(10).await.unwrap(), 3);
    assert_eq!(counts(leases.heartbeat().await.unwrap()), (1, 3, 3));
    sqlx::query("UPDATE providers SET enabled = false WHERE id = md5('p1')::uuid")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(counts(leases.heartbeat().await.unwrap()), (1, 2, 2));
    sqlx::query("UPDATE providers SET deleted_at = now() WHERE id = md5('p2')::uuid")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(counts(leases.heartbeat().await.unwrap()), (1, 1, 1));

    // A provider added by a transaction that is still open when a heartbeat
    // counts, and commits after a later change and count.
    let mut slow = db.connect().await.unwrap();
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::query(
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, created_at, updated_at) \
         VALUES (md5('p9')::uuid, 'acme', 'graph_mail', 'p9', 'users/u9/messages', now(), now())",
    )
    .execute(&mut slow)
    .await
    .unwrap();
    add(4, 4).await.unwrap();
    assert_eq!(counts(leases.heartbeat().await.unwrap()), (1, 2, 1));
    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    assert_eq!(
        counts(leases.heartbeat().await.unwrap()),
        (1, 3, 1),
        "the provider committed late was not counted"
    );
    drop(slow);
    leases.leave().await.unwrap();
    drop(leases);
    store.close().await;
}
