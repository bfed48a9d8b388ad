//! No secret reaches a log line: the admin token, the Gmail push secret, OAuth
//! client secrets and refresh tokens, Graph clientStates and Calendar channel
//! tokens — neither on the happy path nor on the refusals, whose WARN lines are
//! where a request's URL and headers tend to leak — nor an API answer or the
//! audit trail (tenant tokens included). On the embedded backend the
//! service generates its own admin token (none is configured), which must not
//! reach the logs either.

use crate::support::{
    ADMIN_TOKEN, Backend, GMAIL_PUSH_SECRET, Harness, on_both_backends, on_test_db, wait_until,
};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use subkeeper_simulator::ChangeType;

on_both_backends!(no_configured_or_generated_secret_reaches_the_logs);

async fn no_configured_or_generated_secret_reaches_the_logs(backend: Backend) {
    let h = Harness::start(backend, |c| {
        if backend == Backend::Embedded {
            c.admin_token = None;
        }
    })
    .await;
    if backend == Backend::Embedded {
        assert_ne!(h.admin_token(), ADMIN_TOKEN, "the token was not generated");
    }
    assert!(crate::logs::capture(), "logs are not captured");
    let tenant = "acme";
    let refresh_calendar = format!("rt-cal-{}", uuid::Uuid::new_v4().simple());
    let refresh_gmail = format!("rt-gmail-{}", uuid::Uuid::new_v4().simple());
    let mailbox = format!("erin-{}@example.com", uuid::Uuid::new_v4().simple());

    let graph = h.create_provider(tenant, "acme-aad", "erin").await;
    let calendar = h
        .create_google_provider(
            tenant,
            "google_calendar",
            "erin@example.com",
            "client-acme",
            &refresh_calendar,
        )
        .await;
    let gmail = h
        .create_google_provider(tenant, "gmail", &mailbox, "client-acme", &refresh_gmail)
        .await;
    for p in [&graph, &calendar, &gmail] {
        h.wait_provider(tenant, p, "healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
    }

    // The happy paths: a Graph change, a Gmail push, forced renewals.
    let sub = h
        .sim
        .subscriptions()
        .into_iter()
        .find(|s| s.resource.contains("erin"))
        .unwrap();
    assert!(
        h.sim
            .notify(&sub.id, ChangeType::Created, 1)
            .await
            .unwrap()
            .all_accepted()
    );
    assert!(h.sim.gmail_push(&mailbox).await.unwrap().all_accepted());
    for p in [&graph, &calendar, &gmail] {
        let (code, result) = h.force_renewal(tenant, p).await;
        assert_eq!(code, 200, "{result:#}");
    }

    // The refusals, each logged at WARN inside its request's span.
    let gmail_url = |query: &str| format!("{}/webhooks/gmail{query}", h.base_url);
    for (query, body) in [
        (
            format!("?token={GMAIL_PUSH_SECRET}"),
            json!({"message": {"data": "not base64!", "messageId": "1"}}),
        ),
        (
            format!("?token={GMAIL_PUSH_SECRET}&x=1"),
            json!({"nope": 1}),
        ),
        ("?token=wrong-secret-wrong-secret".into(), json!({})),
    ] {
        let status = h
            .http
            .post(gmail_url(&query))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_client_error(), "{query}: {status}");
    }
    let forged = json!({"value": [{
        "subscriptionId": sub.id, "clientState": "forged-client-state", "changeType": "created",
        "resource": "Users/erin/Messages/AAA", "tenantId": "acme-aad",
        "subscriptionExpirationDateTime": "2026-11-28T00:00:00.0000000Z",
    }]});
    let status = h
        .http
        .post(format!("{}/webhooks/microsoft", h.base_url))
        .json(&forged)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::ACCEPTED);
    let status = h
        .http
        .get(format!("{}/api/v1/tenants/{tenant}/providers", h.base_url))
        .bearer_auth(format!("{}-wrong", h.admin_token()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let channel = h
        .sim
        .google_channels()
        .into_iter()
        .find(|c| c.calendar_id == "erin@example.com")
        .unwrap();
    let status = h
        .http
        .post(format!("{}/webhooks/google", h.base_url))
        .header("X-Goog-Channel-ID", &channel.id)
        .header("X-Goog-Channel-Token", "forged-channel-token")
        .header("X-Goog-Resource-ID", &channel.resource_id)
        .header("X-Goog-Resource-State", "exists")
        .header("X-Goog-Message-Number", "7")
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success() || status.is_client_error(), "{status}");

    // A tenant token made, used to replace credentials, and revoked: the
    // token, the new secret and the old ones stay out of the audit trail and
    // of every API answer.
    let (token_id, tenant_token) = crate::tokens::make_token(&h, tenant, "ops").await;
    let new_secret = format!("replaced-secret-{}", uuid::Uuid::new_v4().simple());
    let (status, body) = crate::tokens::call(
        &h,
        &tenant_token,
        reqwest::Method::PUT,
        &format!("/tenants/{tenant}/providers/{graph}/credentials"),
        Some(json!({"flow": "client_credentials", "authority_tenant": "acme-aad",
                    "client_id": subkeeper_testkit::admin::GRAPH_CLIENT_ID, "client_secret": new_secret})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut answers = String::new();
    for path in [
        format!("/tenants/{tenant}/providers"),
        format!("/tenants/{tenant}/providers/{graph}"),
        format!("/tenants/{tenant}/providers/{gmail}/health"),
        format!("/tenants/{tenant}/providers/{calendar}/attempts"),
        format!("/tenants/{tenant}/audit"),
        "/tokens".to_owned(),
    ] {
        let (status, body) = h.admin(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        answers.push_str(&body.to_string());
    }
    let (status, _) = h
        .admin(
            reqwest::Method::DELETE,
            &format!("/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let audit: Vec<(String, String, String, String, String)> = on_test_db!(h, pool => sqlx::query_as(
        "SELECT actor, action, target, outcome, request_hash FROM audit_log").fetch_all(pool).await.unwrap());
    assert!(
        audit
            .iter()
            .any(|(actor, action, ..)| *actor == format!("token:{token_id}")
                && action == "provider.credentials"),
        "{audit:?}"
    );
    let audit = format!("{audit:?}");

    // What was logged is what this test did (so the check below can fail) …
    wait_until(
        "the refused Gmail push logged",
        Duration::from_secs(10),
        || async { crate::logs::text().contains("http.target=/webhooks/gmail") },
    )
    .await;
    let logged = crate::logs::text();
    assert!(
        logged.contains(&graph),
        "the provider's own lines are not captured"
    );

    // … and none of the secrets it used.
    let mut secrets = vec![
        h.admin_token().to_owned(),
        GMAIL_PUSH_SECRET.to_owned(),
        subkeeper_testkit::admin::GRAPH_CLIENT_SECRET.to_owned(),
        crate::support::GOOGLE_CLIENT_SECRET.to_owned(),
        refresh_calendar,
        refresh_gmail,
    ];
    secrets.extend(
        h.sim
            .subscriptions()
            .into_iter()
            .filter_map(|s| s.client_state),
    );
    secrets.extend(
        h.sim
            .google_channel_history()
            .into_iter()
            .filter_map(|c| c.token),
    );
    assert!(secrets.len() >= 8, "{secrets:?}");
    for secret in [&tenant_token, &new_secret] {
        for (place, text) in [("an API answer", &answers), ("the audit trail", &audit)] {
            assert!(!text.contains(secret.as_str()), "a secret reached {place}");
        }
    }
    for secret in &secrets {
        for (place, text) in [("an API answer", &answers), ("the audit trail", &audit)] {
            assert!(!text.contains(secret.as_str()), "a secret reached {place}");
        }
    }
    secrets.push(tenant_token);
    secrets.push(new_secret);
    for secret in &secrets {
        if let Some(at) = logged.find(secret.as_str()) {
            let line_start = logged[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logged[at..].find('\n').map_or(logged.len(), |i| at + i);
            panic!(
                "a secret reached the logs: {}",
                logged[line_start..line_end].replace(secret.as_str(), "<SECRET>")
            );
        }
    }
    h.stop().await;
}

// Client secrets and refresh tokens are stored sealed, never in clear; the
// adapters open them (the providers register); `subkeeper rotate-key` re-seals
// every row under the new first key — values from before sealing included — so
// the old key can be dropped.
on_both_backends!(oauth_secrets_are_stored_sealed_and_rotate_key_reseals_them_under_the_new_key);

async fn oauth_secrets_are_stored_sealed_and_rotate_key_reseals_them_under_the_new_key(
    backend: Backend,
) {
    use subkeeper::store::{Location, Store};
    use subkeeper_actors::ports::CredentialSource as _;
    use subkeeper_testkit::service::SECRET_KEYS;

    /// A credentials row as stored: id and every text column.
    type Row = (
        uuid::Uuid,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );

    let h = Harness::start(backend, |_| {}).await;
    let refresh = format!("rt-sealed-{}", uuid::Uuid::new_v4().simple());
    let graph = h.create_provider("acme", "acme-aad", "sealed").await;
    let calendar = h
        .create_google_provider(
            "acme",
            "google_calendar",
            "sealed@example.com",
            "client-acme",
            &refresh,
        )
        .await;
    for p in [&graph, &calendar] {
        h.wait_provider("acme", p, "healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
    }
    let secrets = [
        subkeeper_testkit::admin::GRAPH_CLIENT_SECRET,
        crate::support::GOOGLE_CLIENT_SECRET,
        refresh.as_str(),
    ];
    let rows = || async {
        let rows: Vec<Row> = on_test_db!(h, pool => sqlx::query_as(
            "SELECT id, client_id, client_secret, client_secret_key, refresh_token, refresh_token_key \
             FROM oauth_credentials",
        )
        .fetch_all(pool)
        .await
        .unwrap());
        rows
    };
    let in_clear = |row: &Row| {
        let text = format!("{row:?}");
        secrets.iter().any(|s| text.contains(s)).then_some(text)
    };
    let stored = rows().await;
    assert_eq!(stored.len(), 2);
    for row in &stored {
        assert_eq!(row.3.as_deref(), Some("ktest"), "{row:?}");
        assert_eq!(in_clear(row), None, "a secret is stored in clear");
    }

    // A row from before sealing existed: its secret in clear, no key.
    let graph_credentials = stored
        .iter()
        .find(|r| r.1 == subkeeper_testkit::admin::GRAPH_CLIENT_ID)
        .unwrap()
        .0;
    on_test_db!(h, pool => sqlx::query(
        "UPDATE oauth_credentials SET client_secret = $1, client_secret_key = NULL WHERE id = $2",
    )
    .bind(subkeeper_testkit::admin::GRAPH_CLIENT_SECRET)
    .bind(graph_credentials)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected());

    let new_key =
        subkeeper::secrets::Keyring::generate_entry(chrono::Utc::now().date_naive()).unwrap();
    let new_id = new_key.split(':').next().unwrap().to_owned();
    let location = h.backend.location();
    let mut rotate = crate::startup::subkeeper_binary(&["rotate-key"]);
    match &location {
        Location::Postgres(url) => rotate.env("SUBKEEPER_DATABASE_URL", url),
        Location::Sqlite(path) => rotate.env(
            "SUBKEEPER_DATABASE_URL",
            format!("sqlite:{}", path.display()),
        ),
    };
    rotate.env("SUBKEEPER_SECRET_KEYS", format!("{new_key},{SECRET_KEYS}"));
    let out = crate::startup::output(rotate).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 credentials re-sealed"), "{stdout}");
    for row in rows().await {
        assert_eq!(row.3.as_deref(), Some(new_id.as_str()), "{row:?}");
        assert!(row.5.is_none() || row.5.as_deref() == Some(new_id.as_str()));
        assert_eq!(in_clear(&row), None, "a secret is stored in clear");
    }
    // Only the new key is needed from now on.
    let store = Store::connect(
        &location,
        1,
        std::sync::Arc::new(subkeeper_actors::ports::clock::SystemClock),
    )
    .await
    .unwrap()
    .with_keyring(std::sync::Arc::new(
        subkeeper::secrets::Keyring::parse(&new_key).unwrap(),
    ));
    let mut opened = Vec::new();
    for row in rows().await {
        let c = store.credentials(row.0).await.unwrap().unwrap();
        opened.extend(c.client_secret);
        opened.extend(c.refresh_token);
    }
    opened.sort();
    let mut expected: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(opened, expected);
    h.stop().await;
}

/// A PostgreSQL deployment without a key is refused at start, saying how to make
/// one: secrets are never stored in clear by accident.
#[actix_web::test]
async fn a_postgres_deployment_without_secret_keys_is_refused_with_the_way_to_make_one() {
    let db = subkeeper_testkit::db::TestDb::create(subkeeper_testkit::Purpose::Test)
        .await
        .unwrap();
    let mut run = crate::startup::subkeeper_binary(&["run"]);
    run.env("SUBKEEPER_DATABASE_URL", &db.url)
        .env("SUBKEEPER_HTTP_ADDR", "127.0.0.1:0");
    let out = crate::startup::output(run).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("SUBKEEPER_SECRET_KEYS is not set")
            && stderr.contains("subkeeper rotate-key --print-new-key"),
        "{stderr}"
    );
}
