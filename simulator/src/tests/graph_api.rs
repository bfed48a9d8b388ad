//! Graph `/subscriptions` as a client and a subscriber see it: handshake,
//! create/get/list/renew/delete, expiry on the provider clock, lifetime limits,
//! change and lifecycle notifications.

use super::support::{
    Answer, CALENDAR, CLIENT_ID, Handshake, Harness, INBOX, OTHER_TENANT, TENANT, test_config,
};
use crate::graph::model::OUTLOOK_MAX_MINUTES;
use crate::{ChangeType, LifecycleEvent, Operation, SimError, SimulatorConfig};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[actix_web::test]
async fn create_runs_the_handshake_on_both_urls_and_answers_graphs_shape() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let body = h.subscription_body(INBOX, 4_000);
    let created = h.create_ok(&token, &body).await;

    assert_eq!(
        created["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity"
    );
    assert_eq!(created["resource"], INBOX);
    assert_eq!(created["applicationId"], CLIENT_ID);
    assert_eq!(created["clientState"], "client-state-secret");
    assert_eq!(created["latestSupportedTlsVersion"], "v1_2");
    assert_eq!(created["includeResourceData"], false);
    let id = created["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    // Graph keeps the expiry the client asked for (to 100 ns).
    let asked = DateTime::parse_from_rfc3339(body["expirationDateTime"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let got = DateTime::parse_from_rfc3339(created["expirationDateTime"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!((got - asked).abs() < TimeDelta::microseconds(1));

    let validations = h.receiver.validations();
    assert_eq!(validations.len(), 2);
    assert_eq!(validations[0].path, "/webhooks/microsoft");
    assert_eq!(validations[1].path, "/webhooks/microsoft/lifecycle");
    for seen in &validations {
        // Real tokens contain spaces and colons: the receiver had to URL-decode.
        assert!(seen.token.starts_with("Validation: "), "{}", seen.token);
        assert!(seen.content_type.starts_with("text/plain"));
    }

    let fetched = h
        .call(
            Method::GET,
            &format!("/subscriptions/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(fetched.status, 200);
    h.assert_subscription(&fetched.body);
    assert_eq!(fetched.body["id"], id);

    let listed = h
        .call(Method::GET, "/subscriptions", Some(&token), None)
        .await;
    assert_eq!(listed.status, 200);
    let items = listed.body["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    for item in items {
        h.assert_subscription(item);
    }

    let live = h.sim.subscriptions();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].tenant, TENANT);

    let journal = h.sim.requests();
    let create = journal
        .iter()
        .find(|r| r.operation == Operation::Create)
        .unwrap();
    assert_eq!(create.status, 201);
    assert_eq!(create.tenant.as_deref(), Some(TENANT));
    assert_eq!(create.resource.as_deref(), Some(INBOX));
    assert_eq!(create.subscription_id.as_deref(), Some(id));
    assert_eq!(create.body.as_ref().unwrap()["resource"], INBOX);
    h.stop().await;
}

#[actix_web::test]
async fn failed_handshakes_answer_400_and_create_nothing() {
    let h = Harness::with_config(SimulatorConfig {
        validation_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    let token = h.app_token(TENANT).await;
    let cases = [
        (
            Handshake::Status(404),
            "ValidationError",
            "Subscription validation request failed. HTTP status code is 'NotFound'. Notification endpoint must respond with 200 OK to validation request.",
        ),
        (
            Handshake::Status(202),
            "ValidationError",
            "Subscription validation request failed. HTTP status code is 'Accepted'. Notification endpoint must respond with 200 OK to validation request.",
        ),
        (
            Handshake::WrongBody,
            "ValidationError",
            "Subscription validation request failed. Response must exactly match validationToken query parameter.",
        ),
        (
            Handshake::WrongContentType,
            "ValidationError",
            "Subscription validation request failed. Response must be of content type 'text/plain'.",
        ),
        (
            Handshake::Hang,
            "InvalidRequest",
            "Subscription validation request timed out.",
        ),
    ];
    for (mode, code, message) in cases {
        h.receiver.set_handshake(mode);
        let reply = h
            .call(
                Method::POST,
                "/subscriptions",
                Some(&token),
                Some(&h.subscription_body(INBOX, 60)),
            )
            .await;
        assert_eq!(reply.status, 400, "{mode:?}");
        assert_eq!(reply.code(), code, "{mode:?}");
        assert_eq!(reply.message(), message, "{mode:?}");
        assert!(reply.body["error"]["innerError"]["request-id"].is_string());
    }
    // Nothing listening at all.
    h.receiver.set_handshake(Handshake::Echo);
    let mut unreachable = h.subscription_body(INBOX, 60);
    unreachable["notificationUrl"] = json!("http://127.0.0.1:9/webhooks/microsoft");
    let reply = h
        .call(
            Method::POST,
            "/subscriptions",
            Some(&token),
            Some(&unreachable),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "ValidationError");

    assert!(h.sim.subscriptions().is_empty());
    let listed = h
        .call(Method::GET, "/subscriptions", Some(&token), None)
        .await;
    assert_eq!(listed.body["value"], json!([]));
    assert!(
        h.sim
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::Create)
            .all(|r| r.status == 400 && r.subscription_id.is_none())
    );
    h.stop().await;
}

#[actix_web::test]
async fn subscriptions_expire_on_the_provider_clock() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());

    // Renewing before expiry moves the expiry.
    let renewed_to = h.sim.now() + TimeDelta::minutes(120);
    let renewed = h
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(&json!({"expirationDateTime": renewed_to.to_rfc3339()})),
        )
        .await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    h.assert_subscription(&renewed.body);
    assert_eq!(
        h.sim.subscriptions()[0].expiration_date_time,
        crate::graph::model::truncate_to_ticks(renewed_to)
    );

    h.sim.advance(TimeDelta::minutes(121));
    // The access token expired too: get a fresh one, as a client would.
    let token = h.app_token(TENANT).await;
    let patch = h
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(&json!({"expirationDateTime": (h.sim.now() + TimeDelta::hours(1)).to_rfc3339()})),
        )
        .await;
    assert_eq!(patch.status, 404);
    assert_eq!(patch.code(), "ResourceNotFound");
    assert_eq!(patch.message(), "The object was not found.");
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        404
    );
    assert_eq!(
        h.call(Method::DELETE, &path, Some(&token), None)
            .await
            .status,
        404
    );
    assert!(h.sim.subscriptions().is_empty());
    assert!(matches!(
        h.sim
            .notify(created["id"].as_str().unwrap(), ChangeType::Created, 1)
            .await,
        Err(SimError::SubscriptionNotFound { .. })
    ));
    h.stop().await;
}

#[actix_web::test]
async fn maximum_lifetimes_are_enforced_on_create_and_renew() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;

    // Seven days exactly is what the docs say, and what live Graph rejects.
    let too_long = h
        .call(
            Method::POST,
            "/subscriptions",
            Some(&token),
            Some(&h.subscription_body(CALENDAR, 10_080)),
        )
        .await;
    assert_eq!(too_long.status, 400);
    assert_eq!(too_long.code(), "ExtensionError");
    assert_eq!(
        too_long.message(),
        "Subscription expiration can only be 10070 minutes in the future."
    );
    // A rejected create does not reach the subscriber.
    assert!(h.receiver.validations().is_empty());

    let created = h
        .create_ok(&token, &h.subscription_body(CALENDAR, OUTLOOK_MAX_MINUTES))
        .await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());
    let renew_too_far = h
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(&json!({
                "expirationDateTime": (h.sim.now() + TimeDelta::minutes(OUTLOOK_MAX_MINUTES + 5)).to_rfc3339()
            })),
        )
        .await;
    assert_eq!(renew_too_far.status, 400);
    assert_eq!(renew_too_far.code(), "ExtensionError");

    let in_the_past = h
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(
                &json!({"expirationDateTime": (h.sim.now() - TimeDelta::minutes(1)).to_rfc3339()}),
            ),
        )
        .await;
    assert_eq!(in_the_past.status, 400);

    // Rich notifications: one day.
    let mut rich = h.subscription_body(INBOX, 1_441);
    rich["includeResourceData"] = json!(true);
    rich["encryptionCertificate"] = json!("MIIB...");
    rich["encryptionCertificateId"] = json!("cert-1");
    let reply = h
        .call(Method::POST, "/subscriptions", Some(&token), Some(&rich))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.message(),
        "Subscription expiration can only be 1440 minutes in the future."
    );
    h.stop().await;
}

#[actix_web::test]
async fn create_rejects_bad_bodies_like_graph() {
    let h = Harness::with_config(SimulatorConfig {
        allow_http_loopback: false,
        ..SimulatorConfig::default()
    })
    .await;
    let token = h.app_token(TENANT).await;
    let post = |body: serde_json::Value| {
        let h = &h;
        let token = token.clone();
        async move {
            h.call(Method::POST, "/subscriptions", Some(&token), Some(&body))
                .await
        }
    };

    let http_url = post(h.subscription_body(INBOX, 60)).await;
    assert_eq!(http_url.status, 400);
    assert_eq!(http_url.code(), "InvalidRequest");
    assert_eq!(
        http_url.message(),
        "NotificationUrl scheme='http' is not supported."
    );

    let mut missing = h.subscription_body(INBOX, 60);
    missing.as_object_mut().unwrap().remove("changeType");
    assert_eq!(
        post(missing).await.message(),
        "changeType is a required property for subscription creation."
    );

    let mut long_state = h.subscription_body(INBOX, 60);
    long_state["notificationUrl"] = json!("https://hooks.example.com/x");
    long_state["lifecycleNotificationUrl"] = json!("https://hooks.example.com/y");
    long_state["clientState"] = json!("x".repeat(129));
    let reply = post(long_state).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.message().contains("clientState"),
        "{}",
        reply.message()
    );

    let mut typo = h.subscription_body(INBOX, 60);
    typo["expirationDatetime"] = typo["expirationDateTime"].clone();
    assert_eq!(post(typo).await.code(), "BadRequest");

    let not_json = h
        .http
        .post(h.graph("/subscriptions"))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    assert!(h.receiver.validations().is_empty());
    assert!(h.sim.subscriptions().is_empty());
    h.stop().await;
}

#[actix_web::test]
async fn subscriptions_are_private_to_tenant_and_app_and_can_be_deleted() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let other = h.app_token(OTHER_TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());

    assert_eq!(
        h.call(Method::GET, &path, Some(&other), None).await.status,
        404
    );
    assert_eq!(
        h.call(Method::DELETE, &path, Some(&other), None)
            .await
            .status,
        404
    );
    let others = h
        .call(Method::GET, "/subscriptions", Some(&other), None)
        .await;
    assert_eq!(others.body["value"], json!([]));

    let deleted = h.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(deleted.body, serde_json::Value::Null);
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        404
    );
    assert!(h.sim.subscriptions().is_empty());

    let unknown = h
        .call(Method::GET, "/nosuchsegment/items", Some(&token), None)
        .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.message(),
        "Resource not found for the segment 'nosuchsegment'."
    );
    h.stop().await;
}

#[actix_web::test]
async fn change_notifications_and_redeliveries_reach_the_subscriber() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let id = created["id"].as_str().unwrap();

    let report = h.sim.notify(id, ChangeType::Created, 3).await.unwrap();
    assert_eq!(report.attempts.len(), 3);
    assert!(report.all_accepted());
    assert!(report.attempts.iter().all(|a| a.status == Some(202)));
    assert_eq!(
        report.url.as_deref(),
        Some(h.receiver.notification_url().as_str())
    );

    let seen = h.receiver.notifications();
    assert_eq!(seen.len(), 3);
    for notification in &seen {
        assert_eq!(notification.path, "/webhooks/microsoft");
        assert!(notification.content_type.starts_with("application/json"));
        h.assert_notification(&notification.body);
        // Redeliveries carry the same item.
        assert_eq!(notification.body, report.body);
    }
    let item = &seen[0].body["value"][0];
    assert_eq!(item["subscriptionId"], id);
    assert_eq!(item["changeType"], "created");
    assert_eq!(item["clientState"], "client-state-secret");
    assert_eq!(item["tenantId"], TENANT);
    assert_eq!(
        item["subscriptionExpirationDateTime"],
        created["expirationDateTime"]
    );
    assert_eq!(
        item["resourceData"]["@odata.type"],
        "#Microsoft.Graph.Message"
    );
    let resource = item["resource"].as_str().unwrap();
    assert!(
        resource.starts_with("Users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/Messages/"),
        "{resource}"
    );
    assert_eq!(item["resourceData"]["@odata.id"], resource);

    // A subscriber that errors or stalls shows up in the report.
    h.receiver.set_answer(Answer::Status(500));
    let failed = h.sim.notify(id, ChangeType::Updated, 1).await.unwrap();
    assert_eq!(failed.attempts[0].status, Some(500));
    assert!(!failed.all_accepted());
    h.stop().await;
}

#[actix_web::test]
async fn a_stalled_subscriber_gets_no_more_than_the_notification_deadline() {
    let h = Harness::with_config(SimulatorConfig {
        notification_timeout: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let token = h.app_token(TENANT).await;
    let created = h
        .create_ok(&token, &h.subscription_body(CALENDAR, 60))
        .await;
    h.receiver.set_answer(Answer::Hang);
    let report = h
        .sim
        .notify(created["id"].as_str().unwrap(), ChangeType::Deleted, 1)
        .await
        .unwrap();
    let attempt = &report.attempts[0];
    assert_eq!(attempt.status, None);
    assert!(attempt.error.as_deref().unwrap().contains("no answer"));
    assert!(attempt.latency >= Duration::from_millis(200));
    assert_eq!(
        report.body["value"][0]["resourceData"]["@odata.type"],
        "#Microsoft.Graph.Event"
    );
    h.assert_notification(&report.body);
    h.stop().await;
}

#[actix_web::test]
async fn lifecycle_events_reach_the_lifecycle_url_and_take_effect() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/subscriptions/{id}");

    // reauthorizationRequired: notifications stop until the app renews.
    let report = h
        .sim
        .lifecycle(&id, LifecycleEvent::ReauthorizationRequired)
        .await
        .unwrap();
    assert!(report.all_accepted());
    assert_eq!(
        report.url.as_deref(),
        Some(h.receiver.lifecycle_url().as_str())
    );
    assert!(h.sim.subscriptions()[0].reauthorization_required);
    assert!(matches!(
        h.sim.notify(&id, ChangeType::Created, 1).await,
        Err(SimError::ReauthorizationPending { .. })
    ));
    let renewed = h
        .call(
            Method::PATCH,
            &path,
            Some(&token),
            Some(
                &json!({"expirationDateTime": (h.sim.now() + TimeDelta::minutes(90)).to_rfc3339()}),
            ),
        )
        .await;
    assert_eq!(renewed.status, 200);
    assert!(h.sim.notify(&id, ChangeType::Created, 1).await.is_ok());

    // The reauthorize action clears a challenge too.
    h.sim
        .lifecycle(&id, LifecycleEvent::ReauthorizationRequired)
        .await
        .unwrap();
    let reauthorized = h
        .call(
            Method::POST,
            &format!("{path}/reauthorize"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reauthorized.status, 200);
    assert!(!h.sim.subscriptions()[0].reauthorization_required);

    let missed = h.sim.lifecycle(&id, LifecycleEvent::Missed).await.unwrap();
    assert!(missed.all_accepted());

    let removed = h
        .sim
        .lifecycle(&id, LifecycleEvent::SubscriptionRemoved)
        .await
        .unwrap();
    assert!(removed.all_accepted());
    assert!(h.sim.subscriptions().is_empty());
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        404
    );

    let lifecycle: Vec<_> = h
        .receiver
        .notifications()
        .into_iter()
        .filter(|n| n.path == "/webhooks/microsoft/lifecycle")
        .collect();
    let events: Vec<_> = lifecycle
        .iter()
        .map(|n| {
            n.body["value"][0]["lifecycleEvent"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events,
        [
            "reauthorizationRequired",
            "reauthorizationRequired",
            "missed",
            "subscriptionRemoved"
        ]
    );
    for notification in &lifecycle {
        h.assert_notification(&notification.body);
        let item = &notification.body["value"][0];
        assert_eq!(item["subscriptionId"], id.as_str());
        assert_eq!(item["tenantId"], TENANT);
        assert_eq!(item["clientState"], "client-state-secret");
    }
    h.stop().await;
}

#[actix_web::test]
async fn without_a_lifecycle_url_no_lifecycle_notification_is_sent() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let mut body = h.subscription_body(INBOX, 60);
    body.as_object_mut()
        .unwrap()
        .remove("lifecycleNotificationUrl");
    let created = h.create_ok(&token, &body).await;
    assert_eq!(created["lifecycleNotificationUrl"], serde_json::Value::Null);
    assert_eq!(h.receiver.validations().len(), 1);

    let report = h
        .sim
        .lifecycle(
            created["id"].as_str().unwrap(),
            LifecycleEvent::SubscriptionRemoved,
        )
        .await
        .unwrap();
    assert_eq!(report.url, None);
    assert!(report.attempts.is_empty());
    assert!(h.receiver.notifications().is_empty());
    // The removal itself still happened.
    assert!(h.sim.subscriptions().is_empty());
    h.assert_notification(&report.body);
    h.stop().await;
}
