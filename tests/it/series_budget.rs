//! `/metrics` of a service supervising 1,000 tenants' providers stays within a
//! per-metric series budget: counters and histograms are independent of tenants,
//! per-provider series exist only for the unhealthy few. `promtool check metrics`
//! accepts the output.
//!
//! The fleet is seeded by SQL (one Graph mail provider per tenant, each with a live
//! subscription and a health row) and supervised by the real service, so the gauges
//! come from the same health board a production scrape reads. Seeded states: 25
//! providers in `error` (every call to their Azure AD tenant fails, so they stay
//! there), 15 in `needs_reauth` (parked, never called), 10 healthy but `silent`,
//! 950 healthy with a renewal days away (never called).
//!
//! Postgres + NATS only: the budget is about the exposition, which the store does
//! not shape, and the seeding SQL is Postgres' (`generate_series`, `md5()::uuid`);
//! the per-stream series it checks are JetStream's.

use crate::monitoring::promtool_check_metrics;
use crate::support::{Backend, Harness, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use subkeeper_actors::telemetry::names;
use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule};

const TENANTS: usize = 1000;
const ERROR: usize = 25;
const NEEDS_REAUTH: usize = 15;
const SILENT: usize = 10;

/// The per-provider families: the only ones allowed a tenant or provider label.
const PER_PROVIDER: &[&str] = &[
    names::PROVIDER_CONSECUTIVE_FAILURES,
    names::PROVIDER_UNHEALTHY,
    names::PROVIDER_EXPIRES_IN,
    names::PROVIDER_SILENT,
];

/// Series allowed per family (histograms: label sets without `le`), from the
/// bounded label sets of docs/metrics.md: 4 subscription kinds, 3 actions, 2
/// outcomes, 6 error classes, 6 exported states, 4 webhook kinds, 5 results, 3
/// streams, 2 consumers × 3 outcomes, 4 alert events, 4 actors, 3 encoded values.
/// None depends on the number of tenants or providers.
fn budget(family: &str) -> Option<usize> {
    Some(match family {
        names::RENEWAL_ATTEMPTS => 4 * 3 * 2,
        names::RENEWAL_ERRORS => 4 * 6,
        names::RENEWAL_DURATION | names::RENEWAL_LAG => 4,
        names::PROVIDERS => 4 * 6,
        names::NEAREST_EXPIRY => 4,
        names::EXPIRING => 4 * 2,
        names::WEBHOOKS_RECEIVED => 4 * 5,
        names::WEBHOOK_RESPONSE => 4,
        names::JETSTREAM_PUBLISH | names::JETSTREAM_PUBLISH_FAILURES => 3,
        names::OUTBOX_DEPTH | names::OUTBOX_OLDEST_AGE => 1,
        // notification, alerting, supervisor, fleet, catch_up.
        names::ACTORS_RUNNING => 5,
        names::BUILD_INFO => 1,
        names::CONSUMER_MESSAGES => 2 * 3,
        names::ALERTS_PUBLISHED => 4,
        names::ENCODE_FAILURES => 3,
        // Three families; four wait reasons.
        names::PROVIDER_RATE_LIMITED
        | names::PROVIDER_LIMIT_WAIT_SECONDS
        | names::PROVIDER_REQUESTS_HELD => 3,
        names::PROVIDER_LIMIT_WAITS => 3 * 4,
        names::FLEET_INSTANCES => 1,
        // claimed, released, lapsed.
        names::LEASE_CHANGES => 3,
        // started, loaded, scheduled.
        names::FLEET_PROVIDERS => 3,
        // 4 kinds × 8 triggers × 7 outcomes (an upper bound: most pairs never occur).
        names::CATCH_UPS => 4 * 8 * 7,
        names::CATCH_UP_REPLAYED | names::CATCH_UP_CALLS | names::PROVIDER_FRESHNESS_OLDEST => 4,
        names::CATCH_UP_QUEUED => 1,
        // 4 delivery kinds × 3 outcomes × 9 reasons of the one taxonomy (upper bound).
        names::DELIVERIES_LOGGED => 4 * 3 * 9,
        // 9 reasons × rate_limited / write_failed.
        names::DELIVERIES_NOT_LOGGED => 9 * 2,
        // renewal_attempts, audit, deliveries, page_sessions.
        names::RETENTION_ROWS_REMOVED => 4,
        // started, finished.
        names::TENANT_OFFBOARDINGS => 2,
        // One histogram without labels.
        names::ATTEMPT_WRITE_BATCH => 1,
        // Exactly the unhealthy providers (checked separately).
        names::PROVIDER_CONSECUTIVE_FAILURES => ERROR + NEEDS_REAUTH,
        names::PROVIDER_UNHEALTHY => ERROR + NEEDS_REAUTH + SILENT,
        names::PROVIDER_EXPIRES_IN => ERROR + NEEDS_REAUTH,
        names::PROVIDER_SILENT => SILENT,
        _ => return None,
    })
}

/// One sample line of the exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The sample lines of a text exposition, and each family's `# TYPE`.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let name = line[..end].to_owned();
        let mut labels = BTreeMap::new();
        if line[end..].starts_with('{') {
            let mut chars = line[end + 1..].chars();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                let key = key.trim_start_matches(',').trim().to_owned();
                if key.is_empty() || key.starts_with('}') {
                    break;
                }
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next().unwrap()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                match chars.next() {
                    Some(',') => {}
                    Some('}') => break,
                    other => panic!("unexpected {other:?} in {line}"),
                }
            }
        }
        samples.push(Sample { name, labels });
    }
    (samples, types)
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count`
/// belong to the histogram).
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

async fn seed(h: &Harness) {
    let subkeeper::store::Db::Postgres(pool) = h.store().db() else {
        panic!("seeded with Postgres SQL: run on Backend::PostgresNats");
    };
    let mut tx = pool.begin().await.unwrap();
    // Roles by index: [0, 25) error, [25, 40) needs_reauth, [40, 50) silent, rest healthy.
    let role = format!(
        "CASE WHEN t < {e} THEN 'error' WHEN t < {r} THEN 'needs_reauth' \
         WHEN t < {s} THEN 'silent' ELSE 'healthy' END",
        e = ERROR,
        r = ERROR + NEEDS_REAUTH,
        s = ERROR + NEEDS_REAUTH + SILENT
    );
    let seeded = format!(
        "CREATE TEMP TABLE seeded ON COMMIT DROP AS \
         SELECT t, 'budget-' || lpad(t::text, 4, '0') AS tenant, \
                md5('credentials' || t)::uuid AS credentials, md5('provider' || t)::uuid AS provider, \
                'users/mbx' || t || '/messages' AS resource, {role} AS role \
         FROM generate_series(0, {last}) AS t",
        last = TENANTS - 1
    );
    for sql in [
        seeded.as_str(),
        "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, scope) \
         SELECT credentials, tenant, 'client_credentials', \
                CASE role WHEN 'error' THEN 'budget-broken-aad' ELSE 'budget-aad' END, \
                '11111111-2222-3333-4444-555555555555', $1, \
                'https://graph.microsoft.com/.default' FROM seeded",
        "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id, status) \
         SELECT provider, tenant, 'graph_mail', 'mailbox ' || t, resource, credentials, \
                CASE role WHEN 'error' THEN 'error' WHEN 'needs_reauth' THEN 'needs_reauth' ELSE 'connected' END \
         FROM seeded",
        "INSERT INTO subscriptions (provider_id, tenant_id, resource, external_id, client_state, expires_at, created_at) \
         SELECT provider, tenant, resource, 'budget-subscription-' || t, 'budget-client-state', \
                now() + interval '3 days', now() - interval '3 days' FROM seeded",
        "INSERT INTO provider_health (provider_id, tenant_id, subscription_status, subscription_expires_at, \
                last_webhook_received_at, consecutive_failure_count, failure_reason, silent_since) \
         SELECT provider, tenant, \
                CASE role WHEN 'error' THEN 'error' WHEN 'needs_reauth' THEN 'needs_reauth' ELSE 'healthy' END, \
                now() + interval '3 days', \
                CASE role WHEN 'silent' THEN now() - interval '2 days' ELSE now() END, \
                CASE role WHEN 'error' THEN 5 ELSE 0 END, \
                CASE role WHEN 'error' THEN 'transient: seeded' END, \
                CASE role WHEN 'silent' THEN now() - interval '2 days' END \
         FROM seeded",
    ] {
        // The secret is bound, never inlined: sqlx logs each statement's text at
        // DEBUG, and the secrets test reads every line this process logs.
        let query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let query = match sql.contains("$1") {
            true => query.bind(subkeeper_testkit::admin::GRAPH_CLIENT_SECRET),
            false => query,
        };
        query.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[actix_web::test]
async fn a_thousand_tenants_stay_within_the_series_budget_and_pass_promtool() {
    let h = Harness::start(Backend::PostgresNats, |c| {
        // The error providers retry once at start, then not again during the test.
        c.error_retry_seconds = 3600;
        c.silence_check_interval_seconds = 1;
    })
    .await;
    // Every call for the error providers' Azure AD tenant fails.
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Any,
            Fault::Status {
                status: 503,
                code: "ServiceUnavailable".into(),
                retry_after_seconds: None,
            },
        )
        .for_tenant("budget-broken-aad"),
    );
    seed(&h).await;

    // The board holds all of them, in the seeded states.
    let want = [
        (
            "healthy",
            TENANTS - ERROR - NEEDS_REAUTH, // silent providers are healthy too
        ),
        ("error", ERROR),
        ("needs_reauth", NEEDS_REAUTH),
        ("silent", SILENT),
    ];
    let counts = |text: &str| -> BTreeMap<String, usize> {
        let prefix = format!("{}{{", names::PROVIDERS);
        let mut by_state = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
            let state = line
                .split("state=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            *by_state.entry(state.to_owned()).or_insert(0) += value as usize;
        }
        by_state
    };
    wait_until(
        "1,000 providers on the board",
        Duration::from_secs(60),
        || async {
            let by_state = counts(&h.metrics().await);
            want.iter()
                .all(|(state, n)| by_state.get(*state) == Some(n))
        },
    )
    .await;
    // The error providers' one attempt each has been made (counters included).
    wait_until(
        "the error providers tried once",
        Duration::from_secs(30),
        || async {
            let n: i64 = crate::support::on_test_db!(h, pool => sqlx::query_scalar(
                "SELECT count(DISTINCT provider_id) FROM renewal_attempts",
            )
            .fetch_one(pool)
            .await
            .unwrap());
            n as usize == ERROR
        },
    )
    .await;

    let text = h.metrics().await;
    let (samples, types) = parse(&text);
    let streams: BTreeSet<String> = h.topology().streams().into_iter().collect();
    let mut series: BTreeMap<&str, BTreeSet<Vec<(String, String)>>> = BTreeMap::new();
    let mut raw: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &samples {
        let family = family(&s.name, &types);
        assert!(
            names::ALL.contains(&family),
            "unexpected family {family} in /metrics"
        );
        let per_provider = PER_PROVIDER.contains(&family);
        for label in ["tenant", "provider"] {
            assert_eq!(
                s.labels.contains_key(label),
                per_provider,
                "{} {:?}: only per-provider gauges name a {label}",
                s.name,
                s.labels
            );
        }
        // The test binary runs many services in one process, each with its own
        // stream prefix, and the recorder is process-wide: count this service's
        // streams (a deployment has exactly these three).
        if let Some(stream) = s.labels.get("stream")
            && !streams.contains(stream)
        {
            assert!(
                ["_WEBHOOKS", "_RENEWALS", "_ALERTS"]
                    .iter()
                    .any(|suffix| stream.ends_with(suffix)),
                "unexpected stream {stream}"
            );
            continue;
        }
        let key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(family).or_default().insert(key);
        *raw.entry(family).or_default() += 1;
    }
    for name in names::ALL {
        assert!(budget(name).is_some(), "{name} has no series budget");
    }
    let mut report = Vec::new();
    for (family, sets) in &series {
        let allowed = budget(family).unwrap();
        report.push(format!(
            "{family}: {} (budget {allowed}, {} lines)",
            sets.len(),
            raw[family]
        ));
        assert!(
            sets.len() <= allowed,
            "{family} has {} series, budget {allowed}: {sets:#?}",
            sets.len()
        );
        if PER_PROVIDER.contains(family) {
            assert_eq!(
                sets.len(),
                allowed,
                "{family}: exactly the unhealthy providers"
            );
        }
    }
    // Series recorded while the service starts are there: the recorder is
    // installed before anything records (a later install loses them for good).
    let present = |family: &str, label: &str, value: &str| {
        series.get(family).is_some_and(|sets| {
            sets.iter()
                .any(|set| set.iter().any(|(k, v)| k == label && v == value))
        })
    };
    for stream in &streams {
        assert!(
            present(names::JETSTREAM_PUBLISH_FAILURES, "stream", stream),
            "{stream}: the failure counter is exported at 0 from start-up"
        );
    }
    for actor in ["fleet", "notification", "alerting", "provider_supervisor"] {
        assert!(
            present(names::ACTORS_RUNNING, "actor", actor),
            "{actor} not running"
        );
    }
    let total: usize = raw.values().sum();
    eprintln!(
        "series budget, {TENANTS} tenants: {total} sample lines\n  {}",
        report.join("\n  ")
    );
    // The unhealthy ones are the seeded ones, by tenant.
    let tenants_of = |family: &str| -> BTreeSet<String> {
        samples
            .iter()
            .filter(|s| s.name == family)
            .map(|s| s.labels["tenant"].clone())
            .collect()
    };
    let tenant = |t: usize| format!("budget-{t:04}");
    assert_eq!(
        tenants_of(names::PROVIDER_CONSECUTIVE_FAILURES),
        (0..ERROR + NEEDS_REAUTH).map(tenant).collect()
    );
    assert_eq!(
        tenants_of(names::PROVIDER_SILENT),
        (ERROR + NEEDS_REAUTH..ERROR + NEEDS_REAUTH + SILENT)
            .map(tenant)
            .collect()
    );

    let (ok, output) = promtool_check_metrics(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{output}\n--- exposition ---\n{text}"
    );
    h.stop().await;
}
