//! The webhooks a change sets off, addressed the way each provider addresses
//! them: a Graph change notification to every live subscription on the
//! resource whose `changeType` includes the change (none while a
//! reauthorization is pending), a Calendar `exists` message to every live
//! channel on the calendar, a Gmail Pub/Sub push with the change's historyId
//! when the mailbox has a live watch.
//!
//! Owns addressing only; the bodies come from `graph/wire.rs` and
//! `google/wire.rs` and the POSTs from `graph/delivery.rs` and
//! `google/delivery.rs`. Reads subscriptions, channels and watches (bumping a
//! channel's message number, as sending does) and changes nothing else. Never
//! holds a lock across a POST.

use crate::changes::SimChange;
use crate::changes::feed::FeedKey;
use crate::journal::lock;
use crate::{DeliveryReport, Simulator, google, graph};
use serde_json::Value;

/// Sends `change`'s webhooks now; one report per POST target.
pub(super) async fn announce(
    sim: &Simulator,
    key: &FeedKey,
    change: &SimChange,
) -> Vec<DeliveryReport> {
    match key {
        FeedKey::GraphMessages { .. } | FeedKey::GraphEvents { .. } => {
            graph_notifications(sim, key, change).await
        }
        FeedKey::CalendarEvents { calendar_id } => calendar_messages(sim, calendar_id).await,
        FeedKey::GmailHistory { email } => gmail_push(sim, email, change).await,
    }
}

async fn graph_notifications(
    sim: &Simulator,
    key: &FeedKey,
    change: &SimChange,
) -> Vec<DeliveryReport> {
    let now = sim.now();
    let subscriptions: Vec<_> = lock(&sim.shared.graph)
        .all_live(now)
        .into_iter()
        .filter(|s| key.covers_subscription(&s.resource))
        .filter(|s| !s.reauthorization_required)
        .filter(|s| {
            s.change_type
                .split(',')
                .any(|t| t.trim() == change.kind.as_str())
        })
        .collect();
    let mut reports = Vec::with_capacity(subscriptions.len());
    for subscription in subscriptions {
        let mut body =
            graph::wire::change_notification_json(&subscription, change.kind, &change.item_id);
        if let Some(etag) = &change.etag
            && let Some(data) = body
                .pointer_mut("/value/0/resourceData")
                .and_then(Value::as_object_mut)
        {
            // The item's real version, not the made-up one `notify` uses.
            data.insert("@odata.etag".to_owned(), Value::String(etag.clone()));
        }
        let attempts = graph::delivery::post_notifications(
            &sim.shared.http,
            &subscription.notification_url,
            &body,
            1,
            sim.shared.config.notification_timeout,
        )
        .await;
        reports.push(DeliveryReport {
            subscription_id: subscription.id,
            url: Some(subscription.notification_url),
            body,
            attempts,
            headers: Vec::new(),
        });
    }
    reports
}

async fn calendar_messages(sim: &Simulator, calendar_id: &str) -> Vec<DeliveryReport> {
    let now = sim.now();
    let channel_ids: Vec<String> = lock(&sim.shared.google)
        .all_channels()
        .into_iter()
        .filter(|c| c.is_live(now) && c.calendar_id == calendar_id)
        .map(|c| c.id)
        .collect();
    let mut reports = Vec::with_capacity(channel_ids.len());
    for id in channel_ids {
        let Some(channel) = lock(&sim.shared.google).next_message_number(&id, now) else {
            continue;
        };
        let headers = google::wire::channel_headers(&channel, "exists", channel.message_number);
        let attempts = google::delivery::post_times(
            &sim.shared.http,
            &channel.address,
            &headers,
            None,
            1,
            sim.shared.config.notification_timeout,
        )
        .await;
        reports.push(DeliveryReport {
            subscription_id: channel.id,
            url: Some(channel.address),
            body: Value::Null,
            attempts,
            headers,
        });
    }
    reports
}

async fn gmail_push(sim: &Simulator, email: &str, change: &SimChange) -> Vec<DeliveryReport> {
    let (Some(endpoint), Some(history_id)) = (sim.gmail_push_endpoint(), change.history_id) else {
        return Vec::new();
    };
    let now = sim.now();
    let target = {
        let mut google = lock(&sim.shared.google);
        let watch = google
            .all_watches()
            .into_iter()
            .find(|w| w.email == email && w.is_live(now));
        watch.map(|w| (w, google.next_push_message_id()))
    };
    let Some((watch, message_id)) = target else {
        return Vec::new();
    };
    let body = google::wire::pubsub_push_json(&watch.email, history_id, message_id, now);
    let attempts = google::delivery::post_times(
        &sim.shared.http,
        &endpoint,
        &[],
        Some(&body),
        1,
        sim.shared.config.notification_timeout,
    )
    .await;
    vec![DeliveryReport {
        subscription_id: watch.email,
        url: Some(endpoint),
        body,
        attempts,
        headers: Vec::new(),
    }]
}
