//! The housekeeping job: retention deletes old renewal attempts, audit rows and
//! delivery-log rows, and expired status-page sessions, in bounded batches and
//! keeps new ones; tenant offboarding retires every
//! provider of the tenant (its subscriptions deleted at the simulator), revokes
//! its tokens, removes its rows and keeps one audit record — and resumes an
//! offboarding it finds in the store.

use crate::support::{Backend, Harness, on_both_backends, on_test_db, uuid};
use crate::tokens::{call, make_token};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use std::time::Duration;
use subkeeper_actors::domain::TenantId;
use subkeeper_actors::ports::{AdminStore as _, AuditContext, RetainedTable};

on_both_backends!(
    retention_deletes_old_rows_in_bounded_batches_and_keeps_new_ones,
    the_retention_job_removes_what_is_older_than_the_configured_ages_and_counts_it,
    offboarding_retires_a_tenant_at_the_providers_and_removes_its_rows_keeping_one_audit_record,
);

/// Inserts `n` audit rows of `tenant` at `at`.
async fn audit_rows(h: &Harness, tenant: &str, at: DateTime<Utc>, n: usize) {
    for i in 0..n {
        on_test_db!(h, pool => sqlx::query(
            "INSERT INTO audit_log (tenant_id, at, actor, action, target, outcome, request_hash) \
             VALUES ($1, $2, 'admin', 'provider.update', $3, 'ok', 'x')")
            .bind(tenant).bind(at).bind(format!("old-{i}"))
            .execute(pool).await.map(|_| ()).unwrap());
    }
}

/// Inserts `n` renewal attempts of `provider` (of `tenant`) at `at`.
async fn attempt_rows(h: &Harness, tenant: &str, provider: &str, at: DateTime<Utc>, n: usize) {
    for _ in 0..n {
        on_test_db!(h, pool => sqlx::query(
            "INSERT INTO renewal_attempts (provider_id, tenant_id, attempted_at, attempt, action, outcome, duration_ms, status_after) \
             VALUES ($1, $2, $3, 'renew', 'renewed', 'success', 5, 'healthy')")
            .bind(uuid(provider)).bind(tenant).bind(at)
            .execute(pool).await.map(|_| ()).unwrap());
    }
}

/// Inserts `n` delivery-log rows of `provider` (of `tenant`) received at `at`,
/// each with its own message id.
async fn delivery_rows(h: &Harness, tenant: &str, provider: &str, at: DateTime<Utc>, n: usize) {
    for _ in 0..n {
        on_test_db!(h, pool => sqlx::query(
            "INSERT INTO deliveries (tenant_id, provider_id, received_at, kind, outcome, reason, message_id, payload_sha256) \
             VALUES ($1, $2, $3, 'change', 'accepted', 'ok', $4, 'x')")
            .bind(tenant).bind(uuid(provider)).bind(at).bind(uuid::Uuid::new_v4().to_string())
            .execute(pool).await.map(|_| ()).unwrap());
    }
}

/// Inserts `n` status-page sessions (admin sign-ins) that expire at `expires`.
async fn session_rows(h: &Harness, expires: DateTime<Utc>, n: usize) {
    for _ in 0..n {
        on_test_db!(h, pool => sqlx::query(
            "INSERT INTO page_sessions (id_hash, token_id, tenant_id, created_at, expires_at) \
             VALUES ($1, NULL, NULL, $2, $3)")
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(expires - TimeDelta::hours(12)).bind(expires)
            .execute(pool).await.map(|_| ()).unwrap());
    }
}

/// Rows of `table` from before `before` (`at_column` is its time).
async fn older_than(h: &Harness, table: &str, at_column: &str, before: DateTime<Utc>) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE {at_column} < $1");
    on_test_db!(h, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(before).fetch_one(pool).await.unwrap())
}

/// Ids of `table`'s rows.
async fn ids(h: &Harness, table: &str) -> Vec<i64> {
    let sql = format!("SELECT id FROM {table} ORDER BY id");
    on_test_db!(h, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap())
}

/// Rows of `tenant` in `table`.
async fn tenant_rows(h: &Harness, table: &str, tenant: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id = $1");
    on_test_db!(h, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(tenant).fetch_one(pool).await.unwrap())
}

async fn retention_deletes_old_rows_in_bounded_batches_and_keeps_new_ones(backend: Backend) {
    // The job itself stays asleep: this drives the store's batches directly.
    let h = Harness::start(backend, |c| c.housekeeping_interval_seconds = 3600).await;
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    h.wait_provider("acme", &alice, "registered", |v| {
        !v["subscription"].is_null()
    })
    .await;
    let now = Utc::now();
    let cutoff = now - TimeDelta::days(30);
    audit_rows(&h, "acme", now - TimeDelta::days(40), 10).await;
    attempt_rows(&h, "acme", &alice, now - TimeDelta::days(40), 7).await;
    attempt_rows(&h, "acme", &alice, now - TimeDelta::days(29), 2).await;
    let kept_audit: Vec<i64> = {
        let sql = "SELECT id FROM audit_log WHERE at >= $1 ORDER BY id";
        on_test_db!(h, pool => sqlx::query_scalar(sql).bind(cutoff).fetch_all(pool).await.unwrap())
    };
    assert!(
        !kept_audit.is_empty(),
        "the provider's creation is a new audit row"
    );

    let mut batches = Vec::new();
    loop {
        let removed = h
            .store()
            .purge_before(RetainedTable::Audit, cutoff, 4)
            .await
            .unwrap();
        batches.push(removed);
        if removed < 4 {
            break;
        }
    }
    assert_eq!(batches, vec![4, 4, 2], "audit rows removed per batch");
    assert_eq!(
        ids(&h, "audit_log").await,
        kept_audit,
        "a new audit row went"
    );
    let removed = h
        .store()
        .purge_before(RetainedTable::Attempts, cutoff, 5)
        .await
        .unwrap();
    assert_eq!(removed, 5);
    let removed = h
        .store()
        .purge_before(RetainedTable::Attempts, cutoff, 5)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(
        older_than(&h, "renewal_attempts", "attempted_at", cutoff).await,
        0
    );
    // The two 29-day-old attempts (and the registration) stay.
    assert!(h.attempt_count(&alice).await >= 3);

    // The delivery log: 9 old rows go 4, 4, 1; the 3 new ones stay.
    delivery_rows(&h, "acme", &alice, now - TimeDelta::days(40), 9).await;
    delivery_rows(&h, "acme", &alice, now - TimeDelta::days(29), 3).await;
    let young_deliveries = older_than(&h, "deliveries", "received_at", now + TimeDelta::days(1))
        .await
        - older_than(&h, "deliveries", "received_at", cutoff).await;
    let mut batches = Vec::new();
    loop {
        let removed = h
            .store()
            .purge_before(RetainedTable::Deliveries, cutoff, 4)
            .await
            .unwrap();
        batches.push(removed);
        if removed < 4 {
            break;
        }
    }
    assert_eq!(batches, vec![4, 4, 1], "delivery rows removed per batch");
    assert_eq!(older_than(&h, "deliveries", "received_at", cutoff).await, 0);
    assert_eq!(
        older_than(&h, "deliveries", "received_at", now + TimeDelta::days(1)).await,
        young_deliveries,
        "a new delivery row went"
    );
    assert!(young_deliveries >= 3);

    // Sessions: the 5 expired go 3, 2; the 2 still valid stay.
    session_rows(&h, now - TimeDelta::minutes(1), 5).await;
    session_rows(&h, now + TimeDelta::hours(1), 2).await;
    let first = h
        .store()
        .purge_before(RetainedTable::Sessions, now, 3)
        .await
        .unwrap();
    let second = h
        .store()
        .purge_before(RetainedTable::Sessions, now, 3)
        .await
        .unwrap();
    assert_eq!((first, second), (3, 2), "sessions removed per batch");
    assert_eq!(older_than(&h, "page_sessions", "expires_at", now).await, 0);
    assert_eq!(
        older_than(&h, "page_sessions", "expires_at", now + TimeDelta::days(1)).await,
        2,
        "a valid session went"
    );
    h.stop().await;
}

async fn the_retention_job_removes_what_is_older_than_the_configured_ages_and_counts_it(
    backend: Backend,
) {
    let h = Harness::start(backend, |c| {
        c.retention_attempts_days = 7;
        c.retention_audit_days = 30;
        c.retention_deliveries_days = 10;
        c.housekeeping_interval_seconds = 1;
        c.housekeeping_batch = 3;
    })
    .await;
    let bob = h.create_provider("acme", "acme-aad", "bob").await;
    h.wait_provider("acme", &bob, "registered", |v| !v["subscription"].is_null())
        .await;
    let now = Utc::now();
    attempt_rows(&h, "acme", &bob, now - TimeDelta::days(8), 5).await;
    // Older than the attempts' age, younger than the audit's: kept.
    audit_rows(&h, "acme", now - TimeDelta::days(8), 2).await;
    audit_rows(&h, "acme", now - TimeDelta::days(31), 4).await;
    let young_audit = older_than(&h, "audit_log", "at", now + TimeDelta::days(1)).await - 4;
    // Older than the attempts' age, younger than the delivery log's: kept.
    delivery_rows(&h, "acme", &bob, now - TimeDelta::days(9), 2).await;
    delivery_rows(&h, "acme", &bob, now - TimeDelta::days(11), 4).await;
    session_rows(&h, now - TimeDelta::hours(1), 4).await;
    session_rows(&h, now + TimeDelta::hours(1), 1).await;

    subkeeper_testkit::wait_until(
        "old rows deleted by the job",
        Duration::from_secs(20),
        || async {
            older_than(
                &h,
                "renewal_attempts",
                "attempted_at",
                now - TimeDelta::days(7),
            )
            .await
                == 0
                && older_than(&h, "audit_log", "at", now - TimeDelta::days(30)).await == 0
                && older_than(&h, "deliveries", "received_at", now - TimeDelta::days(10)).await == 0
                && older_than(&h, "page_sessions", "expires_at", now).await == 0
        },
    )
    .await;
    assert_eq!(
        older_than(&h, "audit_log", "at", now + TimeDelta::days(1)).await,
        young_audit,
        "a young audit row went"
    );
    assert_eq!(
        older_than(&h, "deliveries", "received_at", now).await,
        2,
        "a delivery row younger than its age went"
    );
    assert_eq!(
        older_than(&h, "page_sessions", "expires_at", now + TimeDelta::days(1)).await,
        1,
        "a valid session went"
    );
    assert!(
        h.attempt_count(&bob).await >= 1,
        "the registration attempt went"
    );
    let metrics = h.metrics().await;
    let removed = |table| {
        subkeeper_testkit::metrics::sum(
            &metrics,
            "subkeeper_retention_rows_removed_total",
            &[("table", table)],
        )
    };
    // The recorder is the process's: other tests' runs count there too.
    assert!(removed("renewal_attempts") >= 5.0, "{metrics}");
    assert!(removed("audit") >= 4.0, "{metrics}");
    assert!(removed("deliveries") >= 4.0, "{metrics}");
    assert!(removed("page_sessions") >= 4.0, "{metrics}");
    h.stop().await;
}

async fn offboarding_retires_a_tenant_at_the_providers_and_removes_its_rows_keeping_one_audit_record(
    backend: Backend,
) {
    let h = Harness::start(backend, |c| {
        c.housekeeping_interval_seconds = 1;
        c.housekeeping_batch = 2;
    })
    .await;
    let mut acme = Vec::new();
    for mailbox in ["alice", "bob", "dave"] {
        acme.push(h.create_provider("acme", "acme-aad", mailbox).await);
    }
    let erin = h.create_provider("globex", "globex-aad", "erin").await;
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    for (tenant, id) in acme
        .iter()
        .map(|id| ("acme", id))
        .chain([("globex", &erin), ("contoso", &carol)])
    {
        h.wait_provider(tenant, id, "registered", |v| !v["subscription"].is_null())
            .await;
    }
    let at_sim = |mailbox: &str| {
        let resource = format!("users/{mailbox}/messages");
        h.sim
            .subscriptions()
            .iter()
            .filter(|s| s.resource == resource)
            .count()
    };
    assert_eq!(at_sim("alice") + at_sim("bob") + at_sim("dave"), 3);
    let (_, acme_token) = make_token(&h, "acme", "acme ops").await;
    let (_, contoso_token) = make_token(&h, "contoso", "contoso ops").await;

    // Not with a tenant token (even its own), not without the confirmation.
    let (status, body) = call(
        &h,
        &acme_token,
        Method::DELETE,
        "/tenants/acme?confirm=acme",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for query in ["", "?confirm=", "?confirm=contoso", "?confirm=ACME"] {
        let (status, body) = h
            .admin(Method::DELETE, &format!("/tenants/acme{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    assert_eq!(h.rows("tenant_offboardings").await, 0);
    let (status, _) = call(
        &h,
        &acme_token,
        Method::GET,
        "/tenants/acme/providers",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Offboard acme through the API; globex's offboarding was accepted by an
    // instance that died before it did anything: only its record is in the
    // store, and the job resumes it.
    let (status, body) = h
        .admin(Method::DELETE, "/tenants/acme?confirm=acme", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    h.store()
        .begin_offboarding(
            &TenantId::parse("globex").unwrap(),
            &AuditContext {
                actor: "admin".into(),
                request_hash: subkeeper::store::request_hash(
                    b"DELETE /api/v1/tenants/globex?confirm=globex",
                ),
            },
        )
        .await
        .unwrap();
    // Its tokens are dead at once.
    let (status, _) = call(
        &h,
        &acme_token,
        Method::GET,
        "/tenants/acme/providers",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    subkeeper_testkit::wait_until(
        "acme and globex offboarded",
        Duration::from_secs(60),
        || async {
            let mut left = 0;
            for tenant in ["acme", "globex"] {
                for table in [
                    "providers",
                    "subscriptions",
                    "provider_health",
                    "renewal_attempts",
                    "oauth_credentials",
                    "api_tokens",
                ] {
                    left += tenant_rows(&h, table, tenant).await;
                }
            }
            left == 0
                && h.rows("tenant_offboardings WHERE finished_at IS NOT NULL")
                    .await
                    == 2
        },
    )
    .await;
    // Their subscriptions are gone at the provider; contoso's is not.
    assert_eq!(
        at_sim("alice") + at_sim("bob") + at_sim("dave") + at_sim("erin"),
        0
    );
    assert_eq!(at_sim("carol"), 1);
    // One audit record each, saying it finished.
    for (tenant, hash) in [
        (
            "acme",
            subkeeper::store::request_hash(b"DELETE /api/v1/tenants/acme?confirm=acme"),
        ),
        (
            "globex",
            subkeeper::store::request_hash(b"DELETE /api/v1/tenants/globex?confirm=globex"),
        ),
    ] {
        let (status, audit) = h
            .admin(Method::GET, &format!("/tenants/{tenant}/audit"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let rows = audit["audit"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{audit}");
        assert_eq!(rows[0]["action"], "tenant.offboard");
        assert_eq!(rows[0]["outcome"], "ok");
        assert_eq!(rows[0]["actor"], "admin");
        assert_eq!(rows[0]["request_hash"], hash.as_str());
    }
    // Asking again finds nothing left to do and keeps the one record.
    let (status, _) = h
        .admin(Method::DELETE, "/tenants/acme?confirm=acme", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    subkeeper_testkit::wait_until("the repeat finished", Duration::from_secs(20), || async {
        h.rows("tenant_offboardings WHERE finished_at IS NOT NULL")
            .await
            == 2
    })
    .await;
    assert_eq!(tenant_rows(&h, "audit_log", "acme").await, 1);
    // Contoso is untouched.
    h.wait_provider("contoso", &carol, "still healthy", |v| {
        !v["subscription"].is_null()
    })
    .await;
    let (status, _) = call(
        &h,
        &contoso_token,
        Method::GET,
        "/tenants/contoso/providers",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let metrics = h.metrics().await;
    // The recorder is the process's: other tests' offboardings count there too.
    assert!(
        subkeeper_testkit::metrics::sum(
            &metrics,
            "subkeeper_tenant_offboardings_total",
            &[("step", "finished")]
        ) >= 3.0,
        "{metrics}"
    );
    h.stop().await;
}
