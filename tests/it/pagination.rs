//! Cursor pagination on every list (providers, attempts, audit, tokens): every
//! row exactly once across pages while a writer adds rows, and a malformed
//! cursor or limit is a 400 in the API's error shape.

use crate::support::{Backend, Harness, on_both_backends, on_test_db, uuid};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use subkeeper_actors::domain::TenantId;
use subkeeper_actors::ports::{AdminStore as _, AuditRecord};

on_both_backends!(
    every_list_returns_each_row_exactly_once_across_pages_while_a_writer_adds_rows,
    a_malformed_cursor_or_limit_is_a_400_and_the_limit_is_capped,
);

/// Reads every page of `path` (`?limit=` already in it) and returns the ids of
/// the rows under `name`, in order.
async fn read_all(h: &Harness, path: &str, name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = h.admin(Method::GET, &url, None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        for row in page[name].as_array().unwrap() {
            ids.push(match &row["id"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        match &page["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => return ids,
            other => panic!("next_cursor is {other}"),
        }
    }
}

/// No id twice, and every id of `before` present.
fn exactly_once(list: &str, read: &[String], before: &[String]) {
    let unique: HashSet<&String> = read.iter().collect();
    assert_eq!(
        unique.len(),
        read.len(),
        "{list}: a row came twice: {read:?}"
    );
    for id in before {
        assert!(unique.contains(id), "{list}: row {id} never came");
    }
}

async fn every_list_returns_each_row_exactly_once_across_pages_while_a_writer_adds_rows(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let mut providers = Vec::new();
    for i in 0..12 {
        providers.push(
            h.create_provider("acme", "acme-aad", &format!("m{i}"))
                .await,
        );
    }
    let first = providers[0].clone();
    let tenant = TenantId::parse("acme").unwrap();
    for i in 0..40 {
        audit(&h, &tenant, i).await;
        attempt(&h, &first).await;
    }
    let (_, all) = h
        .admin(Method::GET, "/tenants/acme/audit?limit=500", None)
        .await;
    let audit_before: Vec<String> = all["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].to_string())
        .collect();
    let (_, all) = h
        .admin(
            Method::GET,
            &format!("/tenants/acme/providers/{first}/attempts?limit=500"),
            None,
        )
        .await;
    let attempts_before: Vec<String> = all["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].to_string())
        .collect();
    assert!(attempts_before.len() >= 40);

    // The writer adds providers, audit rows and attempts while the reader pages.
    let writer = async {
        for i in 0..10 {
            h.create_provider("acme", "acme-aad", &format!("late{i}"))
                .await;
            audit(&h, &tenant, 100 + i).await;
            attempt(&h, &first).await;
        }
    };
    let reader = async {
        let p = read_all(&h, "/tenants/acme/providers?limit=5", "providers").await;
        let a = read_all(&h, "/tenants/acme/audit?limit=7", "audit").await;
        let t = read_all(
            &h,
            &format!("/tenants/acme/providers/{first}/attempts?limit=6"),
            "attempts",
        )
        .await;
        (p, a, t)
    };
    let ((), (p, a, t)) = futures_util::join!(writer, reader);
    exactly_once("providers", &p, &providers);
    exactly_once("audit", &a, &audit_before);
    exactly_once("attempts", &t, &attempts_before);
    // Providers are oldest first, so the ones added while paging came too once
    // the reader reached the end after them; a final read has all 22.
    let p = read_all(&h, "/tenants/acme/providers?limit=5", "providers").await;
    assert_eq!(p.len(), 22);
    exactly_once("providers", &p, &providers);
    // Newest first for audit and attempts.
    let (_, page) = h
        .admin(Method::GET, "/tenants/acme/audit?limit=2", None)
        .await;
    assert!(
        page["audit"][0]["at"].as_str() >= page["audit"][1]["at"].as_str(),
        "{page}"
    );

    // Tokens, admin-wide, the same way.
    let mut tokens = Vec::new();
    for i in 0..9 {
        let (_, body) = h
            .admin(
                Method::POST,
                "/tokens",
                Some(json!({"tenant": "acme", "name": format!("t{i}")})),
            )
            .await;
        tokens.push(body["id"].as_str().unwrap().to_owned());
    }
    let read = read_all(&h, "/tokens?limit=4", "tokens").await;
    assert_eq!(read, tokens);
    h.stop().await;
}

async fn audit(h: &Harness, tenant: &TenantId, i: usize) {
    h.store()
        .record_audit(&AuditRecord {
            tenant: tenant.clone(),
            actor: "admin".into(),
            action: "provider.renew".into(),
            target: format!("t{i}"),
            outcome: "ok".into(),
            request_hash: subkeeper::store::request_hash(b""),
        })
        .await
        .unwrap();
}

async fn attempt(h: &Harness, provider: &str) {
    let now = chrono::Utc::now();
    on_test_db!(h, pool => sqlx::query(
        "INSERT INTO renewal_attempts (provider_id, tenant_id, attempted_at, attempt, action, outcome, duration_ms, status_after) \
         VALUES ($1, 'acme', $2, 'renew', 'renewed', 'success', 5, 'healthy')")
        .bind(uuid(provider)).bind(now)
        .execute(pool).await.map(|_| ()).unwrap());
}

async fn a_malformed_cursor_or_limit_is_a_400_and_the_limit_is_capped(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let id = h.create_provider("acme", "acme-aad", "alice").await;
    let lists = [
        "/tenants/acme/providers".to_owned(),
        format!("/tenants/acme/providers/{id}/attempts"),
        "/tenants/acme/audit".to_owned(),
        "/tokens".to_owned(),
    ];
    // A real cursor of a list keyed by sequence ids (audit), and one keyed by
    // UUIDs (providers), each refused by the other kind.
    for _ in 0..3 {
        h.create_provider("acme", "acme-aad", "more").await;
    }
    let (_, page) = h
        .admin(Method::GET, "/tenants/acme/audit?limit=1", None)
        .await;
    let seq_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = h
        .admin(Method::GET, "/tenants/acme/providers?limit=1", None)
        .await;
    let uuid_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    for list in &lists {
        let other = if list.ends_with("providers") || list == "/tokens" {
            &seq_cursor
        } else {
            &uuid_cursor
        };
        for query in [
            "limit=0".to_owned(),
            "limit=-1".to_owned(),
            "limit=ten".to_owned(),
            "limit=".to_owned(),
            "cursor=not-a-cursor".to_owned(),
            "cursor=".to_owned(),
            "cursor=%F0%9F%92%A9".to_owned(),
            format!("cursor={}", &seq_cursor[..seq_cursor.len() - 3]),
            format!("cursor={other}"),
        ] {
            let sep = if list.contains('?') { '&' } else { '?' };
            let (status, body) = h
                .admin(Method::GET, &format!("{list}{sep}{query}"), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{list}?{query}: {body}");
            assert_eq!(
                body["error"]["code"], "bad_request",
                "{list}?{query}: {body}"
            );
        }
        let (status, body) = h
            .admin(Method::GET, &format!("{list}?limit=100000"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{list}: {body}");
    }
    h.stop().await;
}
