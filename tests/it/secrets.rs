//! No secret reaches a log line: the admin token, the Gmail push secret, OAuth
//! client secrets and refresh tokens, Graph clientStates and Calendar channel
//! tokens — neither on the happy path nor on the refusals, whose WARN lines are
//! where a request's URL and headers tend to leak. On the embedded backend the
//! service generates its own admin token (none is configured), which must not
//! reach the logs either.

use crate::support::{
    ADMIN_TOKEN, Backend, GMAIL_PUSH_SECRET, Harness, on_both_backends, wait_until,
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
