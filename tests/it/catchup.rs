//! No change lost, as a consumer of the bus sees it: a cursor is taken for every
//! family when its subscription is registered; changes whose webhooks the
//! simulator drops are found by the silence check, replayed once each as
//! `source: replay` notifications, followed by `caught_up` and `push_broken`,
//! an alert naming tenant and provider, and a recreated subscription after
//! which webhooks flow again; a quiet provider is checked and stays healthy
//! with its freshness advancing; an expired cursor on each family becomes
//! `resync_required` with the reason and a fresh cursor. Every scenario runs on
//! both backends, with the simulator over HTTP.

use crate::support::{Backend, Harness, Stored, on_both_backends, uuid};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::CatchUpStore;
use subkeeper_testkit::admin::graph_mail_provider;
use subkeeper_testkit::sim::{ChangeRequest, ChangeType, Delivery, FeedRef};
use subkeeper_testkit::wait_until;

/// How long a scenario may wait for what it expects.
const WAIT: Duration = Duration::from_secs(60);

/// A service whose providers get a silence check after 3 s without proof of
/// life (looked for every second).
async fn start(backend: Backend) -> Harness {
    Harness::start(backend, |c| {
        c.mail_poll_after_silence_seconds = 3;
        c.calendar_poll_after_silence_seconds = 3;
        c.catch_up_sweep_seconds = 1;
        c.catch_up_retry_seconds = 1;
    })
    .await
}

/// The four families' providers of tenant `acme`, each healthy with a cursor:
/// (kind, provider id, the simulator's feed).
async fn four_providers(h: &Harness) -> Vec<(&'static str, String, FeedRef)> {
    let tenant = "acme";
    let mail = h
        .create_provider(tenant, "contoso", "alice@example.com")
        .await;
    let mut calendar_body =
        graph_mail_provider("bob calendar", "users/bob@example.com/events", "contoso");
    calendar_body["kind"] = json!("graph_calendar");
    let (status, body) = h
        .admin(
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/providers"),
            Some(calendar_body),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let calendar = body["id"].as_str().unwrap().to_owned();
    let google = h
        .create_google_provider(
            tenant,
            "google_calendar",
            "carol@example.com",
            "client-acme",
            "rt-carol",
        )
        .await;
    let gmail = h
        .create_google_provider(
            tenant,
            "gmail",
            "dana@example.com",
            "client-acme",
            "rt-dana",
        )
        .await;
    let providers = vec![
        (
            "graph_mail",
            mail,
            FeedRef::graph("users/alice@example.com/messages"),
        ),
        (
            "graph_calendar",
            calendar,
            FeedRef::graph("users/bob@example.com/events"),
        ),
        (
            "google_calendar",
            google,
            FeedRef::google_calendar("carol@example.com"),
        ),
        ("gmail", gmail, FeedRef::gmail("dana@example.com")),
    ];
    for (kind, id, _) in &providers {
        h.wait_provider(tenant, id, kind, |v| v["status"] == "connected")
            .await;
        let store = h.store().clone();
        let provider = ProviderId(uuid(id));
        wait_until(&format!("{kind} cursor taken"), WAIT, || {
            let store = store.clone();
            async move {
                store
                    .catch_up_state(provider)
                    .await
                    .is_ok_and(|(s, _)| s.cursor.is_some())
            }
        })
        .await;
    }
    providers
}

/// The replays of `provider` on the webhook stream.
fn replays<'a>(stream: &'a [Stored], provider: &str) -> Vec<&'a Stored> {
    stream
        .iter()
        .filter(|m| {
            m.body["provider_id"] == provider && m.body["notification"]["source"] == "replay"
        })
        .collect()
}

on_both_backends!(
    changes_made_while_the_service_was_down_reach_the_bus_once_as_replays_then_caught_up,
    a_change_seen_by_webhook_and_by_a_catch_up_is_told_apart_and_replays_are_stored_once,
    dropped_webhooks_are_found_replayed_once_alerted_and_the_subscription_recreated,
    a_quiet_provider_is_checked_stays_healthy_and_its_freshness_advances,
    an_expired_cursor_on_every_family_becomes_resync_required_with_a_fresh_cursor,
);

async fn dropped_webhooks_are_found_replayed_once_alerted_and_the_subscription_recreated(
    backend: Backend,
) {
    let h = start(backend).await;
    let events = h
        .subscribe(format!("{}.event.>", h.bus().subject_prefix))
        .await;
    let providers = four_providers(&h).await;
    // Settled: each provider's first silence check has found it quiet (the
    // catch-ups of its registration are behind it).
    for (kind, id, _) in &providers {
        events
            .wait_for(&format!("{kind} quiet"), WAIT, |e| {
                e["type"] == "caught_up"
                    && e["provider_id"] == id.as_str()
                    && e["window"]["trigger"] == "silence_check"
            })
            .await;
    }
    let mut subscriptions = HashMap::new();
    for (_, id, feed) in &providers {
        let view = h.provider("acme", id).await;
        subscriptions.insert(id.clone(), view["subscription"]["id"].clone());
        // Every webhook of the feed is dropped from now on.
        h.sim.mute_feed(feed).unwrap();
        h.sim
            .make_change(
                ChangeRequest::new(feed.clone(), ChangeType::Created)
                    .item(format!("item-{id}"))
                    .delivery(Delivery::Drop),
            )
            .await
            .unwrap();
    }
    for (kind, id, _) in &providers {
        let (_, broken) = events
            .wait_for(&format!("{kind} push_broken"), WAIT, |e| {
                e["type"] == "push_broken" && e["provider_id"] == id.as_str()
            })
            .await;
        assert!(
            broken["window"]["changes"].as_u64() >= Some(1),
            "{broken:#}"
        );
        events
            .wait_for(&format!("{kind} caught_up"), WAIT, |e| {
                e["type"] == "caught_up"
                    && e["provider_id"] == id.as_str()
                    && e["window"]["changes"].as_u64() >= Some(1)
            })
            .await;
        // The replayed change reached downstream, marked as a replay.
        events
            .wait_for(&format!("{kind} replayed change event"), WAIT, |e| {
                e["provider_id"] == id.as_str()
                    && e["source"] == "replay"
                    && e["item_id"] == format!("item-{id}").as_str()
            })
            .await;
    }
    // The alert names tenant and provider.
    for (kind, id, _) in &providers {
        let names_it = |alerts: &[Stored]| {
            alerts.iter().any(|a| {
                a.body["event"] == "push_broken"
                    && a.body["provider_id"] == id.as_str()
                    && a.body["tenant"] == "acme"
                    && a.body["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(id.as_str()) && r.contains("acme"))
            })
        };
        wait_until(
            &format!("{kind}: a push_broken alert naming acme/{id}"),
            WAIT,
            || async { names_it(&h.alert_stream().await) },
        )
        .await;
    }
    // Each subscription is recreated.
    for (kind, id, _) in &providers {
        let old = subscriptions[id].clone();
        h.wait_provider("acme", id, &format!("{kind} recreated"), |v| {
            v["subscription"]["id"] != old && v["status"] == "connected"
        })
        .await;
    }
    // Checks keep running (3 s apart) and must not publish the item again.
    let stream = h.webhook_stream().await;
    for (kind, id, _) in &providers {
        let mine = replays(&stream, id);
        let item = format!("item-{id}");
        let of_item = mine
            .iter()
            .filter(|m| m.body["notification"]["itemId"] == item.as_str())
            .count();
        assert_eq!(
            of_item, 1,
            "{kind}: the item was replayed {of_item} times: {mine:#?}"
        );
    }
    // Webhooks flow again once push works: an announced change on the Graph
    // mailbox arrives as a webhook, not a replay.
    let (_, mail, feed) = &providers[0];
    h.sim.resume_feed(feed).unwrap();
    h.sim
        .make_change(ChangeRequest::new(feed.clone(), ChangeType::Created).item("after-fix"))
        .await
        .unwrap();
    events
        .wait_for("a webhook after the recreate", WAIT, |e| {
            e["provider_id"] == mail.as_str() && e["source"] == "webhook"
        })
        .await;
    h.stop().await;
}

async fn a_quiet_provider_is_checked_stays_healthy_and_its_freshness_advances(backend: Backend) {
    let h = start(backend).await;
    let events = h
        .subscribe(format!("{}.event.>", h.bus().subject_prefix))
        .await;
    let mail = h
        .create_provider("acme", "contoso", "erin@example.com")
        .await;
    h.wait_provider("acme", &mail, "registered", |v| v["status"] == "connected")
        .await;
    let store = h.store().clone();
    let provider = ProviderId(uuid(&mail));
    let first = {
        let polled = store.clone();
        wait_until("cursor taken", WAIT, move || {
            let store = polled.clone();
            async move {
                store
                    .catch_up_state(provider)
                    .await
                    .is_ok_and(|(s, _)| s.checked_at.is_some())
            }
        })
        .await;
        store.catch_up_state(provider).await.unwrap().0.checked_at
    };
    let (_, quiet) = events
        .wait_for("a quiet check", WAIT, |e| {
            e["type"] == "caught_up"
                && e["provider_id"] == mail.as_str()
                && e["window"]["trigger"] == "silence_check"
                && e["window"]["changes"] == 0
        })
        .await;
    assert_eq!(quiet["reason"], "silence_check", "{quiet:#}");
    let (state, _) = store.catch_up_state(provider).await.unwrap();
    assert!(state.checked_at > first, "the check is proof of life");
    assert_eq!(state.push_broken, 0);
    assert!(
        events.all().iter().all(|(_, e)| e["type"] != "push_broken"),
        "a quiet provider is not broken"
    );
    let view = h.provider("acme", &mail).await;
    assert_eq!(view["status"], "connected", "{view:#}");
    // Freshness is exported per kind and stays under the check interval.
    let metrics = h.metrics().await;
    let freshness = subkeeper_testkit::metrics::sum(
        &metrics,
        "subkeeper_provider_freshness_oldest_seconds",
        &[("kind", "graph_mail")],
    );
    assert!(freshness < 30.0, "freshness {freshness}\n{metrics}");
    h.stop().await;
}

async fn an_expired_cursor_on_every_family_becomes_resync_required_with_a_fresh_cursor(
    backend: Backend,
) {
    let h = start(backend).await;
    let events = h
        .subscribe(format!("{}.event.>", h.bus().subject_prefix))
        .await;
    let providers = four_providers(&h).await;
    let mut cursors = HashMap::new();
    for (_, id, feed) in &providers {
        let (state, _) = h
            .store()
            .catch_up_state(ProviderId(uuid(id)))
            .await
            .unwrap();
        cursors.insert(id.clone(), state.cursor);
        // A change, so Gmail's history moves past the cursor before it is forgotten.
        h.sim
            .make_change(ChangeRequest::new(feed.clone(), ChangeType::Created))
            .await
            .unwrap();
        h.sim.expire_feed_tokens(feed).unwrap();
    }
    let reasons = [
        ("graph_mail", "graph_sync_state_not_found"),
        ("graph_calendar", "graph_sync_state_not_found"),
        ("google_calendar", "calendar_full_sync_required"),
        ("gmail", "gmail_history_not_found"),
    ];
    for ((kind, id, _), (_, reason)) in providers.iter().zip(reasons) {
        let (_, resync) = events
            .wait_for(&format!("{kind} resync_required"), WAIT, |e| {
                e["type"] == "resync_required"
                    && e["provider_id"] == id.as_str()
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("cursor_expired"))
            })
            .await;
        assert!(
            resync["reason"].as_str().unwrap().contains(reason),
            "{kind}: {resync:#}"
        );
        let store = h.store().clone();
        let provider = ProviderId(uuid(id));
        let old = cursors[id].clone();
        wait_until(&format!("{kind} fresh cursor"), WAIT, move || {
            let store = store.clone();
            let old = old.clone();
            async move {
                store
                    .catch_up_state(provider)
                    .await
                    .is_ok_and(|(s, _)| s.cursor.is_some() && s.cursor != old)
            }
        })
        .await;
    }
    // No crash loop: one resync per provider, the next checks are quiet.
    for (kind, id, _) in &providers {
        events
            .wait_for(&format!("{kind} quiet after the resync"), WAIT, |e| {
                e["type"] == "caught_up" && e["provider_id"] == id.as_str()
            })
            .await;
        let resyncs = events
            .all()
            .iter()
            .filter(|(_, e)| {
                e["type"] == "resync_required"
                    && e["provider_id"] == id.as_str()
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("cursor_expired"))
            })
            .count();
        assert_eq!(resyncs, 1, "{kind}");
    }
    h.stop().await;
}

/// Items `item` of `provider` on the webhook stream, replays only.
fn replays_of(stream: &[Stored], provider: &str, item: &str) -> usize {
    replays(stream, provider)
        .iter()
        .filter(|m| m.body["notification"]["itemId"] == item)
        .count()
}

async fn changes_made_while_the_service_was_down_reach_the_bus_once_as_replays_then_caught_up(
    backend: Backend,
) {
    let mut h = Harness::start_on_sim_clock(backend, |c| {
        c.catch_up_sweep_seconds = 1;
        c.catch_up_retry_seconds = 1;
    })
    .await;
    let providers = four_providers(&h).await;
    let events = h
        .subscribe(format!("{}.event.>", h.bus().subject_prefix))
        .await;
    h.stop_service().await;
    // Four hours pass at the providers while subkeeper is down; every feed
    // changes twice an hour (nothing can deliver their webhooks).
    let mut made: Vec<(String, String)> = Vec::new();
    for hour in 0..4 {
        h.sim.advance(chrono::TimeDelta::hours(1));
        for (_, id, feed) in &providers {
            for n in 0..2 {
                let item = format!("gap-{hour}-{n}-{id}");
                h.sim
                    .make_change(
                        ChangeRequest::new(feed.clone(), ChangeType::Created).item(item.clone()),
                    )
                    .await
                    .unwrap();
                made.push((id.clone(), item));
            }
        }
    }
    h.start_service().await;
    for (kind, id, _) in &providers {
        let (_, caught_up) = events
            .wait_for(&format!("{kind} caught_up after the restart"), WAIT, |e| {
                e["type"] == "caught_up"
                    && e["provider_id"] == id.as_str()
                    && e["window"]["trigger"] == "startup"
            })
            .await;
        // Every change of the gap was on the stream before `caught_up`.
        let stream = h.webhook_stream().await;
        for (p, item) in made.iter().filter(|(p, _)| p == id) {
            assert_eq!(
                replays_of(&stream, p, item),
                1,
                "{kind}: {item} not replayed exactly once before {caught_up:#}"
            );
        }
        assert_eq!(caught_up["window"]["changes"], 8, "{kind}: {caught_up:#}");
        let from = caught_up["window"]["from"].as_str().unwrap();
        let to = caught_up["window"]["to"].as_str().unwrap();
        let hours = (chrono::DateTime::parse_from_rfc3339(to).unwrap()
            - chrono::DateTime::parse_from_rfc3339(from).unwrap())
        .num_hours();
        assert!(
            hours >= 4,
            "{kind}: the window covers the gap: {caught_up:#}"
        );
    }
    // Downstream gets one change event per replay, marked as such.
    for (id, item) in &made {
        events
            .wait_for(&format!("the replayed {item}"), WAIT, |e| {
                e["provider_id"] == id.as_str()
                    && e["source"] == "replay"
                    && e["item_id"] == item.as_str()
            })
            .await;
    }
    h.stop().await;
}

async fn a_change_seen_by_webhook_and_by_a_catch_up_is_told_apart_and_replays_are_stored_once(
    backend: Backend,
) {
    let mut h = Harness::start_on_sim_clock(backend, |c| {
        c.catch_up_sweep_seconds = 1;
        c.catch_up_retry_seconds = 1;
    })
    .await;
    let providers = four_providers(&h).await;
    let (_, mail, feed) = providers[0].clone();
    let provider = ProviderId(uuid(&mail));
    let events = h
        .subscribe(format!("{}.event.>", h.bus().subject_prefix))
        .await;
    // Announced: it arrives as a webhook.
    h.sim
        .make_change(ChangeRequest::new(feed.clone(), ChangeType::Created).item("both-ways"))
        .await
        .unwrap();
    events
        .wait_for("the webhook", WAIT, |e| {
            e["provider_id"] == mail.as_str() && e["source"] == "webhook"
        })
        .await;
    let (before, _) = h.store().catch_up_state(provider).await.unwrap();
    // A restart an hour later catches up and finds it too.
    h.stop_service().await;
    h.sim.advance(chrono::TimeDelta::hours(1));
    h.start_service().await;
    events
        .wait_for("the replay of the webhook's change", WAIT, |e| {
            e["provider_id"] == mail.as_str()
                && e["source"] == "replay"
                && e["item_id"] == "both-ways"
        })
        .await;
    // A crash between publishing and storing the new cursor: the stored
    // cursor goes back, and the next catch-up reads the same change again.
    h.stop_service().await;
    h.store()
        .save_catch_up_state(provider, &before, h.sim.now())
        .await
        .unwrap();
    h.sim.advance(chrono::TimeDelta::hours(1));
    h.start_service().await;
    let caught_up = |n: usize| {
        events
            .all()
            .iter()
            .filter(|(_, e)| {
                e["type"] == "caught_up"
                    && e["provider_id"] == mail.as_str()
                    && e["window"]["trigger"] == "startup"
            })
            .count()
            >= n
    };
    wait_until("the second catch-up", WAIT, || async { caught_up(2) }).await;
    let stream = h.webhook_stream().await;
    let of_item: Vec<&Stored> = stream
        .iter()
        .filter(|m| m.body["provider_id"] == mail.as_str())
        .filter(|m| {
            m.body["notification"]["itemId"] == "both-ways"
                || m.body["notification"]["resource"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("both-ways"))
        })
        .collect();
    let webhooks = of_item
        .iter()
        .filter(|m| m.body["notification"]["source"] != "replay")
        .count();
    let replayed = of_item
        .iter()
        .filter(|m| m.body["notification"]["source"] == "replay")
        .count();
    assert_eq!(webhooks, 1, "{of_item:#?}");
    assert_eq!(
        replayed, 1,
        "the same item version is stored once: {of_item:#?}"
    );
    h.stop().await;
}
