//! What the real services refuse, the simulator refuses the same way — and
//! what they accept, it accepts: app-only tokens on `me/...` and plain-http
//! notification URLs. All over real HTTP.

use super::support::{CLIENT_ID, CLIENT_SECRET, Harness, INBOX, Reply, TENANT, reply};
use crate::SimulatorConfig;
use reqwest::Method;
use serde_json::{Value, json};

/// A mailbox addressed through the signed-in user.
const MY_INBOX: &str = "me/mailFolders('Inbox')/messages";

#[actix_web::test]
async fn an_app_only_token_on_me_is_graphs_400_and_a_delegated_one_is_served() {
    let h = Harness::start().await;
    let app = h.app_token(TENANT).await;
    let assert_me_refused = |reply: &Reply| {
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(reply.code(), "BadRequest");
        assert_eq!(
            reply.message(),
            "/me request is only valid with delegated authentication flow."
        );
    };
    let created = h
        .call(
            Method::POST,
            "/subscriptions",
            Some(&app),
            Some(&h.subscription_body(MY_INBOX, 60)),
        )
        .await;
    assert_me_refused(&created);
    assert!(h.sim.subscriptions().is_empty());
    assert!(
        h.receiver.validations().is_empty(),
        "no handshake for a refused create"
    );
    let read = h.call(Method::GET, "/me/messages", Some(&app), None).await;
    assert_me_refused(&read);

    // The same app's `users/{id}/...` is fine with that token.
    h.create_ok(&app, &h.subscription_body(INBOX, 60)).await;

    // A delegated token (refresh-token grant) has a user behind `me`.
    let delegated = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("refresh_token", "0.Arefresh"),
            ],
        )
        .await;
    let user = delegated.body["access_token"].as_str().unwrap();
    let mine = h.create_ok(user, &h.subscription_body(MY_INBOX, 60)).await;
    assert_eq!(mine["resource"], MY_INBOX);
    h.stop().await;
}

#[actix_web::test]
async fn plain_http_notification_urls_are_refused_unless_loopback_is_allowed() {
    let strict = Harness::with_config(SimulatorConfig::default()).await;
    let token = strict.app_token(TENANT).await;
    let create = |h: &Harness, token: String, body: Value| {
        let http = h.http.clone();
        let url = h.graph("/subscriptions");
        async move {
            reply(
                http.post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    // The receiver on http://127.0.0.1 is refused by default, as Graph would.
    let refused = create(&strict, token.clone(), strict.subscription_body(INBOX, 60)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.code(), "InvalidRequest");
    assert_eq!(
        refused.message(),
        "NotificationUrl scheme='http' is not supported."
    );
    // An https notificationUrl with an http lifecycle URL: refused for that URL.
    let mut lifecycle = strict.subscription_body(INBOX, 60);
    lifecycle["notificationUrl"] = json!("https://hooks.example.com/graph");
    let refused = create(&strict, token, lifecycle).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.message(),
        "LifecycleNotificationUrl scheme='http' is not supported."
    );
    assert!(strict.receiver.validations().is_empty());
    assert!(strict.sim.subscriptions().is_empty());
    strict.stop().await;

    // Allowed for loopback: the same body is created...
    let lenient = Harness::start().await;
    let token = lenient.app_token(TENANT).await;
    lenient
        .create_ok(&token, &lenient.subscription_body(INBOX, 60))
        .await;
    // ...but http to any other host is still refused.
    let mut elsewhere = lenient.subscription_body(INBOX, 60);
    elsewhere["notificationUrl"] = json!("http://hooks.example.com/graph");
    let refused = create(&lenient, token, elsewhere).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.message(),
        "NotificationUrl scheme='http' is not supported."
    );
    lenient.stop().await;
}
