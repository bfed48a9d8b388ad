//! The delivery log as an operator reads it: what Graph delivered for a mailbox
//! and what subkeeper did with it — accepted once however often Graph resent it,
//! the resends as duplicates, forged traffic on a real subscription as
//! `bad_client_state` (rate-limited per provider) — with hashes only, never the
//! payload. On both backends.

use crate::support::{Backend, Harness, on_both_backends, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use subkeeper_testkit::sim::ChangeType;

on_both_backends!(
    graph_deliveries_are_logged_accepted_once_resends_as_duplicates_and_forgeries_as_rejected,
    the_delivery_log_can_be_switched_off,
);

/// The provider's delivery log through the admin API, every page of `limit`
/// rows followed.
async fn pages(h: &Harness, tenant: &str, provider: &str, limit: u32) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = h
            .admin(
                Method::GET,
                &format!("/tenants/{tenant}/providers/{provider}/deliveries?limit={limit}{cursor}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        rows.extend(body["deliveries"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return rows,
        }
    }
}

async fn log(h: &Harness, tenant: &str, provider: &str) -> Vec<Value> {
    pages(h, tenant, provider, 500).await
}

fn text(row: &Value, field: &str) -> String {
    row[field].as_str().unwrap_or_default().to_owned()
}

async fn live_subscription(h: &Harness, tenant: &str, provider: &str) -> String {
    let view = h
        .wait_provider(tenant, provider, "healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
    view["subscription"]["id"].as_str().unwrap().to_owned()
}

async fn graph_deliveries_are_logged_accepted_once_resends_as_duplicates_and_forgeries_as_rejected(
    backend: Backend,
) {
    let h = Harness::start(backend, |c| c.delivery_log_rejected_per_minute = 3).await;
    let provider = h.create_provider("acme", "acme-aad", "alice").await;
    let other = h.create_provider("globex", "globex-aad", "carol").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    live_subscription(&h, "globex", &other).await;

    // Graph delivers one new message three times.
    let report = h.sim.notify(&sub, ChangeType::Created, 3).await.unwrap();
    assert!(report.all_accepted(), "{report:?}");
    wait_until(
        "one accepted and two duplicate deliveries logged",
        Duration::from_secs(10),
        || async { log(&h, "acme", &provider).await.len() == 3 },
    )
    .await;
    let rows = log(&h, "acme", &provider).await;
    let outcomes: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (text(r, "kind"), text(r, "outcome"), text(r, "reason")))
        .collect();
    let count = |want: (&str, &str, &str)| {
        outcomes
            .iter()
            .filter(|(k, o, r)| (k.as_str(), o.as_str(), r.as_str()) == want)
            .count()
    };
    assert_eq!(count(("change", "accepted", "ok")), 1, "{outcomes:?}");
    assert_eq!(
        count(("change", "duplicate", "already_seen")),
        2,
        "{outcomes:?}"
    );
    // One item: one idempotency key, one hash — the hash of the item as Graph sent it.
    let item = &report.body["value"][0];
    let expected = subkeeper_actors::notification::sha256_hex(item.to_string().as_bytes());
    for r in &rows {
        assert_eq!(text(r, "payload_sha256"), expected);
        assert_eq!(r["message_id"], rows[0]["message_id"]);
        assert_eq!(text(r, "message_id").len(), 64);
    }

    // Five forged items on the real subscription in one request: refused, and
    // logged at most three times this minute.
    let forged: Vec<_> = (0..5)
        .map(|i| {
            json!({
                "subscriptionId": sub, "clientState": "forged", "changeType": "created",
                "resource": format!("Users/alice/Messages/SECRET-BODY-{i}"), "tenantId": "acme-aad",
            })
        })
        .collect();
    let status = h
        .http
        .post(format!("{}/webhooks/microsoft", h.base_url))
        .header("content-type", "application/json")
        .body(json!({ "value": forged }).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    wait_until(
        "three forged deliveries logged",
        Duration::from_secs(10),
        || async { log(&h, "acme", &provider).await.len() == 6 },
    )
    .await;
    let rows = log(&h, "acme", &provider).await;
    let rejected: Vec<_> = rows.iter().filter(|r| r["outcome"] == "rejected").collect();
    assert_eq!(rejected.len(), 3, "{rows:?}");
    assert!(rejected.iter().all(|r| r["reason"] == "bad_client_state"));
    // Newest first (by the time received, then id: a refused delivery is
    // written by intake, an accepted one later by the consumer, so ids alone
    // need not follow the time), and pages of two give every row exactly once.
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let keys: Vec<(chrono::DateTime<chrono::Utc>, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["received_at"].as_str().unwrap().parse().unwrap(),
                r["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "{keys:?}");
    let paged: Vec<i64> = pages(&h, "acme", &provider, 2)
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(paged, ids);

    // Tenant-scoped: the other tenant's provider shows nothing of acme's, and
    // acme's provider under the other tenant is not found; a bad cursor is a 400.
    assert!(log(&h, "globex", &other).await.is_empty());
    let (status, _) = h
        .admin(
            Method::GET,
            &format!("/tenants/globex/providers/{provider}/deliveries"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = h
        .admin(
            Method::GET,
            &format!("/tenants/acme/providers/{provider}/deliveries?cursor=nope"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");

    // Never the payload: no column holds what the items said.
    let dump: Vec<String> = crate::support::on_test_db!(h, pool => sqlx::query_scalar(
        "SELECT tenant_id || kind || outcome || reason || COALESCE(message_id, '') || payload_sha256 FROM deliveries",
    )
    .fetch_all(pool)
    .await
    .unwrap());
    assert!(!dump.is_empty());
    for row in dump {
        assert!(
            !row.contains("SECRET-BODY") && !row.contains("Users/alice"),
            "{row}"
        );
        assert!(!row.contains("forged"), "{row}");
    }

    // The recorder is the process's (tests share it): the series exist.
    let metrics = h.metrics().await;
    for series in [
        r#"subkeeper_deliveries_logged_total{kind="change",outcome="accepted",reason="ok"} "#,
        r#"subkeeper_deliveries_logged_total{kind="change",outcome="duplicate",reason="already_seen"} "#,
        r#"subkeeper_deliveries_logged_total{kind="change",outcome="rejected",reason="bad_client_state"} "#,
        r#"subkeeper_deliveries_not_logged_total{reason="bad_client_state",why="rate_limited"} "#,
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    h.stop().await;
}

async fn the_delivery_log_can_be_switched_off(backend: Backend) {
    let h = Harness::start(backend, |c| c.delivery_log = false).await;
    let provider = h.create_provider("acme", "acme-aad", "bob").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let report = h.sim.notify(&sub, ChangeType::Created, 2).await.unwrap();
    assert!(report.all_accepted(), "{report:?}");
    wait_until(
        "the notification in the webhook stream",
        Duration::from_secs(10),
        || async { !h.webhook_stream().await.is_empty() },
    )
    .await;
    // The consumer has run (the webhook time is recorded) and logged nothing.
    wait_until(
        "the webhook time recorded",
        Duration::from_secs(10),
        || async {
            !h.health("acme", &provider).await["health"]["last_webhook_received_at"].is_null()
        },
    )
    .await;
    assert_eq!(h.rows("deliveries").await, 0);
    h.stop().await;
}
