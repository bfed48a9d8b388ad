//! What a change's webhook does, seen from a subscriber: announced the way each
//! provider announces it, dropped (in the feed, never sent), held until
//! released, or muted for a whole resource until resumed — through the Rust
//! handle and the `/_sim/changes` control routes.

use super::support::{CALENDAR, Harness, INBOX, TENANT, reply, test_config};
use crate::{
    ChangeDelivery, ChangeReport, ChangeRequest, ChangeType, Delivery, FeedRef, LifecycleEvent,
    ReleaseSelector, SimChange, SimulatorConfig,
};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

/// The whole-mailbox resource of the user the tests watch.
const MAILBOX_MESSAGES: &str = "users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/messages";

impl Harness {
    /// Change notifications the receiver got (lifecycle ones excluded).
    fn change_notifications(&self) -> Vec<Value> {
        self.receiver
            .notifications()
            .into_iter()
            .filter(|n| n.path == "/webhooks/microsoft")
            .map(|n| n.body)
            .collect()
    }

    /// Item ids a full message delta round of the Inbox returns.
    async fn inbox_ids(&self, token: &str) -> Vec<String> {
        let page = self
            .call(
                Method::GET,
                "/users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/mailFolders('Inbox')/messages/delta",
                Some(token),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        page.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[actix_web::test]
async fn an_announced_graph_change_reaches_every_subscription_on_the_resource() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let folder = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let mailbox = h
        .create_ok(&token, &h.subscription_body(MAILBOX_MESSAGES, 60))
        .await;
    h.create_ok(&token, &h.subscription_body(CALENDAR, 60))
        .await;
    let inbox = FeedRef::graph(INBOX);

    let report = h
        .sim
        .make_change(ChangeRequest::new(inbox.clone(), ChangeType::Created))
        .await
        .unwrap();
    assert_eq!(report.change.delivery, ChangeDelivery::Announced);
    assert_eq!(report.deliveries.len(), 2, "the folder's and the mailbox's");
    assert!(report.deliveries.iter().all(|d| d.all_accepted()));
    let seen = h.change_notifications();
    assert_eq!(seen.len(), 2);
    let mut subscriptions: Vec<&str> = seen
        .iter()
        .map(|n| n["value"][0]["subscriptionId"].as_str().unwrap())
        .collect();
    subscriptions.sort_unstable();
    let mut expected = [
        folder["id"].as_str().unwrap(),
        mailbox["id"].as_str().unwrap(),
    ];
    expected.sort_unstable();
    assert_eq!(subscriptions, expected);
    for body in &seen {
        h.assert_notification(body);
        let item = &body["value"][0];
        assert_eq!(item["changeType"], "created");
        assert_eq!(item["clientState"], "client-state-secret");
        assert_eq!(item["resourceData"]["id"], report.change.item_id.as_str());
        assert_eq!(
            item["resourceData"]["@odata.etag"].as_str(),
            report.change.etag.as_deref()
        );
    }

    // The subscriptions asked for created and updated only.
    let deleted = h
        .sim
        .make_change(ChangeRequest::new(inbox.clone(), ChangeType::Deleted))
        .await
        .unwrap();
    assert_eq!(deleted.change.delivery, ChangeDelivery::Announced);
    assert!(deleted.deliveries.is_empty());

    // A subscription waiting for reauthorization hears nothing.
    h.sim
        .lifecycle(
            folder["id"].as_str().unwrap(),
            LifecycleEvent::ReauthorizationRequired,
        )
        .await
        .unwrap();
    let third = h
        .sim
        .make_change(ChangeRequest::new(inbox.clone(), ChangeType::Created))
        .await
        .unwrap();
    assert_eq!(third.deliveries.len(), 1);
    assert_eq!(
        third.deliveries[0].subscription_id,
        mailbox["id"].as_str().unwrap()
    );
    assert_eq!(h.change_notifications().len(), 3);
    h.stop().await;
}

#[actix_web::test]
async fn a_dropped_change_is_in_the_feed_but_sends_nothing() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let dropped = h
        .sim
        .make_change(
            ChangeRequest::new(FeedRef::graph(INBOX), ChangeType::Created).delivery(Delivery::Drop),
        )
        .await
        .unwrap();
    assert_eq!(dropped.change.delivery, ChangeDelivery::Dropped);
    assert!(dropped.deliveries.is_empty());
    assert!(h.change_notifications().is_empty());
    assert_eq!(h.inbox_ids(&token).await, [dropped.change.item_id.as_str()]);
    assert_eq!(
        h.sim.feed_changes(&FeedRef::graph(INBOX)).unwrap(),
        [dropped.change]
    );
    h.stop().await;
}

#[actix_web::test]
async fn held_changes_are_delivered_on_release() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let inbox = FeedRef::graph(INBOX);
    let mut held = Vec::new();
    for _ in 0..2 {
        let report = h
            .sim
            .make_change(
                ChangeRequest::new(inbox.clone(), ChangeType::Created).delivery(Delivery::Hold),
            )
            .await
            .unwrap();
        assert_eq!(report.change.delivery, ChangeDelivery::Held);
        assert!(report.deliveries.is_empty());
        held.push(report.change);
    }
    assert!(h.change_notifications().is_empty());
    assert_eq!(
        h.inbox_ids(&token).await.len(),
        2,
        "held changes are in the feed"
    );
    let listed = h.sim_control(Method::GET, "/changes/held", None).await;
    let listed: Vec<SimChange> = serde_json::from_value(listed.body).unwrap();
    assert_eq!(listed, held);

    // One by id, over the control API.
    let released = h
        .sim_control(
            Method::POST,
            "/changes/release",
            Some(json!({"change_id": held[1].id})),
        )
        .await;
    assert_eq!(released.status, 200);
    let released: Vec<ChangeReport> = serde_json::from_value(released.body).unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].change.delivery, ChangeDelivery::Released);
    assert!(released[0].deliveries[0].all_accepted());
    let seen = h.change_notifications();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["value"][0]["resourceData"]["id"],
        held[1].item_id.as_str()
    );

    // The rest of the feed's.
    let rest = h
        .sim
        .release_changes(&ReleaseSelector {
            change_id: None,
            feed: Some(inbox.clone()),
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].change.id, held[0].id);
    assert_eq!(h.change_notifications().len(), 2);
    assert!(h.sim.held_changes().is_empty());

    let again = h
        .sim_control(
            Method::POST,
            "/changes/release",
            Some(json!({"change_id": held[0].id})),
        )
        .await;
    assert_eq!(again.status, 404);
    let deliveries: Vec<ChangeDelivery> = h
        .sim
        .feed_changes(&inbox)
        .unwrap()
        .iter()
        .map(|c| c.delivery)
        .collect();
    assert_eq!(
        deliveries,
        [ChangeDelivery::Released, ChangeDelivery::Released]
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_muted_resource_drops_every_webhook_until_resumed() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let inbox = FeedRef::graph(INBOX);
    let muted = h
        .sim_control(
            Method::POST,
            "/changes/mute",
            Some(json!({"provider": "graph", "resource": INBOX})),
        )
        .await;
    assert_eq!(muted.status, 200);
    assert_eq!(muted.body["muted"], true);
    assert!(h.sim.feed_muted(&inbox).unwrap());
    // Another spelling of the same folder is the same feed.
    assert!(
        h.sim
            .feed_muted(&FeedRef::graph(
                "users/5D3C1F7E-AAAA-BBBB-CCCC-111122223333/mailfolders/inbox/messages"
            ))
            .unwrap()
    );

    let mut made = Vec::new();
    for kind in [
        ChangeType::Created,
        ChangeType::Created,
        ChangeType::Updated,
    ] {
        let report = h
            .sim
            .make_change(ChangeRequest::new(inbox.clone(), kind))
            .await
            .unwrap();
        assert_eq!(report.change.delivery, ChangeDelivery::Muted);
        assert!(report.deliveries.is_empty());
        made.push(report.change.item_id);
    }
    assert!(h.change_notifications().is_empty());
    assert_eq!(h.inbox_ids(&token).await.len(), 2);

    let resumed = h
        .sim_control(
            Method::POST,
            "/changes/resume",
            Some(json!({"provider": "graph", "resource": INBOX})),
        )
        .await;
    assert_eq!(resumed.body["muted"], false);
    let after = h
        .sim
        .make_change(ChangeRequest::new(inbox.clone(), ChangeType::Updated).item(&made[0]))
        .await
        .unwrap();
    assert_eq!(after.change.delivery, ChangeDelivery::Announced);
    let seen = h.change_notifications();
    assert_eq!(seen.len(), 1, "only the change after resume");
    assert_eq!(seen[0]["value"][0]["changeType"], "updated");
    h.stop().await;
}

#[actix_web::test]
async fn calendar_and_gmail_changes_reach_the_channel_and_the_push_endpoint() {
    let h = Harness::with_config(SimulatorConfig {
        // The channel's sync message arrives before the watch answer.
        google_sync_before_answer: true,
        ..test_config()
    })
    .await;
    let calendar_token = h
        .sim
        .issue_google_access_token("client.apps.googleusercontent.com", "alice@example.com");
    let watched = reply(
        h.http
            .post(format!(
                "{}/calendar/v3/calendars/alice@example.com/events/watch",
                h.server.base_url
            ))
            .bearer_auth(&calendar_token)
            .json(&json!({
                "id": "chan-1",
                "type": "web_hook",
                "address": format!("{}/webhooks/google", h.receiver.base_url),
                "token": "channel-token",
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(watched.status, 200, "{:?}", watched.body);
    assert_eq!(h.receiver.notifications().len(), 1, "the sync message");

    let calendar = FeedRef::google_calendar("alice@example.com");
    let announced = h
        .sim
        .make_change(ChangeRequest::new(calendar.clone(), ChangeType::Created))
        .await
        .unwrap();
    assert_eq!(announced.deliveries.len(), 1);
    let held = h
        .sim
        .make_change(
            ChangeRequest::new(calendar.clone(), ChangeType::Updated).delivery(Delivery::Hold),
        )
        .await
        .unwrap();
    assert!(held.deliveries.is_empty());
    h.sim
        .release_changes(&ReleaseSelector {
            change_id: Some(held.change.id),
            feed: None,
        })
        .await
        .unwrap();
    let messages = h.receiver.notifications();
    assert_eq!(messages.len(), 3);
    for (message, number) in messages[1..].iter().zip(["2", "3"]) {
        assert_eq!(message.path, "/webhooks/google");
        assert_eq!(message.headers["x-goog-resource-state"], "exists");
        assert_eq!(message.headers["x-goog-message-number"], number);
        assert_eq!(message.headers["x-goog-channel-id"], "chan-1");
        assert_eq!(message.headers["x-goog-channel-token"], "channel-token");
        assert_eq!(
            message.headers["x-goog-resource-id"],
            watched.body["resourceId"].as_str().unwrap()
        );
    }

    // Gmail: a held push released after a later one carries its own
    // historyId (pushes can arrive out of order).
    let gmail_token = h
        .sim
        .issue_google_access_token("client.apps.googleusercontent.com", "bob@example.com");
    let watch = reply(
        h.http
            .post(format!("{}/gmail/v1/users/me/watch", h.server.base_url))
            .bearer_auth(&gmail_token)
            .json(&json!({"topicName": "projects/subkeeper/topics/gmail"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(watch.status, 200);
    h.sim
        .set_gmail_push_endpoint(Some(format!("{}/webhooks/gmail", h.receiver.base_url)));
    let mailbox = FeedRef::gmail("bob@example.com");
    let early = h
        .sim
        .make_change(
            ChangeRequest::new(mailbox.clone(), ChangeType::Created).delivery(Delivery::Hold),
        )
        .await
        .unwrap();
    let late = h
        .sim
        .make_change(ChangeRequest::new(mailbox.clone(), ChangeType::Created))
        .await
        .unwrap();
    h.sim
        .release_changes(&ReleaseSelector::default())
        .await
        .unwrap();
    let pushed: Vec<u64> = h
        .receiver
        .notifications()
        .iter()
        .filter(|n| n.path == "/webhooks/gmail")
        .map(|n| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(n.body["message"]["data"].as_str().unwrap())
                .unwrap();
            let data: Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(data["emailAddress"], "bob@example.com");
            data["historyId"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        pushed,
        [
            late.change.history_id.unwrap(),
            early.change.history_id.unwrap()
        ]
    );
    assert!(early.change.history_id < late.change.history_id);
    h.stop().await;
}

#[actix_web::test]
async fn changes_control_api_makes_lists_and_refuses_like_the_rust_api() {
    let h = Harness::start().await;
    let made = h
        .sim_control(
            Method::POST,
            "/changes",
            Some(json!({
                "provider": "graph",
                "resource": INBOX,
                "kind": "created",
                "item_id": "AAMkAGsim-1",
                "subject": "Quarterly report",
                "delivery": "drop",
            })),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    let report: ChangeReport = serde_json::from_value(made.body.clone()).unwrap();
    assert_eq!(report.change.item_id, "AAMkAGsim-1");
    assert_eq!(report.change.kind, ChangeType::Created);
    assert_eq!(report.change.delivery, ChangeDelivery::Dropped);
    assert_eq!(
        report.change.resource,
        "users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/mailFolders('inbox')/messages"
    );
    assert!(report.change.etag.as_deref().unwrap().starts_with("W/\""));

    let exists = h
        .sim_control(
            Method::POST,
            "/changes",
            Some(json!({"provider": "graph", "resource": INBOX, "kind": "created", "item_id": "AAMkAGsim-1"})),
        )
        .await;
    assert_eq!(exists.status, 409);
    let missing = h
        .sim_control(
            Method::POST,
            "/changes",
            Some(json!({"provider": "graph", "resource": INBOX, "kind": "deleted", "item_id": "nope"})),
        )
        .await;
    assert_eq!(missing.status, 404);
    let nothing = h
        .sim_control(
            Method::POST,
            "/changes",
            Some(json!({"provider": "gmail", "resource": "carol@example.com", "kind": "updated"})),
        )
        .await;
    assert_eq!(nothing.status, 404);
    let not_a_feed = h
        .sim_control(
            Method::POST,
            "/changes",
            Some(json!({"provider": "graph", "resource": "users/u1/contacts", "kind": "created"})),
        )
        .await;
    assert_eq!(not_a_feed.status, 400);
    let malformed = h
        .sim_control(Method::POST, "/changes", Some(json!({"kind": "created"})))
        .await;
    assert_eq!(malformed.status, 400);

    let listed = reply(
        h.http
            .get(format!("{}/_sim/changes", h.server.base_url))
            .query(&[("provider", "graph"), ("resource", INBOX)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.status, 200);
    let listed: Vec<SimChange> = serde_json::from_value(listed.body).unwrap();
    assert_eq!(listed, [report.change]);

    let age = h
        .sim_control(Method::GET, "/changes/token-max-age", None)
        .await;
    assert_eq!(age.body, json!({"seconds": null}));
    let negative = h
        .sim_control(
            Method::POST,
            "/changes/token-max-age",
            Some(json!({"seconds": -1})),
        )
        .await;
    assert_eq!(negative.status, 400);
    let expire = h
        .sim_control(
            Method::POST,
            "/changes/expire",
            Some(json!({"provider": "google_calendar", "resource": "alice@example.com"})),
        )
        .await;
    assert_eq!(expire.status, 204);
    h.stop().await;
}
