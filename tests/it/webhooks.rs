//! Webhook intake as Graph and downstream consumers see it: notifications reach
//! the webhook stream on the right subject, once; bad input is answered and never
//! published; a NATS outage loses nothing (the outbox); lifecycle notifications do
//! their job. Every scenario runs on both backends except the NATS outage, which
//! is about NATS.

use crate::support::{Backend, Harness, on_both_backends, read_nats_stream, wait_until};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use subkeeper_actors::domain::{DomainEventType, ProviderKind, TenantId};
use subkeeper_testkit::sim::{ChangeType, LifecycleEvent, Operation};

async fn live_subscription(h: &Harness, tenant: &str, provider: &str) -> String {
    let view = h
        .wait_provider(tenant, provider, "healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
    view["subscription"]["id"].as_str().unwrap().to_owned()
}

async fn webhook_messages(h: &Harness) -> Vec<crate::support::Stored> {
    h.webhook_stream().await
}

on_both_backends!(
    a_new_message_reaches_the_webhook_stream_once_even_when_graph_delivers_it_three_times,
    bad_notifications_get_their_answer_and_nothing_is_published,
    lifecycle_notifications_renew_recreate_and_ask_for_resync,
    a_request_mixing_real_items_with_thousands_of_forged_ids_publishes_exactly_the_real_ones,
    a_subscription_whose_create_answer_was_lost_is_deleted_when_it_first_delivers,
    a_notification_on_a_subscription_still_being_created_is_published,
    a_route_carries_the_subscription_state_and_only_deleted_ones_are_retired,
    a_notification_for_a_retired_provider_is_counted_as_retired,
);

async fn post(h: &Harness, body: impl Into<reqwest::Body>) -> StatusCode {
    h.http
        .post(format!("{}/webhooks/microsoft", h.base_url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_new_message_reaches_the_webhook_stream_once_even_when_graph_delivers_it_three_times(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let provider = h.create_provider("acme", "acme-aad", "alice").await;
    let sub = live_subscription(&h, "acme", &provider).await;

    let report = h.sim.notify(&sub, ChangeType::Created, 3).await.unwrap();
    assert!(report.all_accepted(), "{report:?}");
    assert!(
        report.attempts.iter().all(|a| a.status == Some(202)),
        "{report:?}"
    );

    wait_until(
        "the notification in the webhook stream",
        Duration::from_secs(1),
        || async { !webhook_messages(&h).await.is_empty() },
    )
    .await;
    let stored = webhook_messages(&h).await;
    assert_eq!(
        stored.len(),
        1,
        "three deliveries of one item are stored once"
    );
    let expected_subject = h.topology().webhook_subject(
        ProviderKind::GraphMail,
        &TenantId::parse("acme").unwrap(),
        provider.parse().unwrap(),
    );
    assert_eq!(stored[0].subject, expected_subject);
    let body = &stored[0].body;
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["provider_id"], provider.as_str());
    assert_eq!(body["subscription_id"], sub.as_str());
    assert_eq!(
        body["notification"], report.body["value"][0],
        "the Graph item is carried as received"
    );
    h.stop().await;
}

async fn bad_notifications_get_their_answer_and_nothing_is_published(backend: Backend) {
    let h = Harness::start(backend, |c| c.webhook_max_body_bytes = 4096).await;
    let provider = h.create_provider("acme", "acme-aad", "bob").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let item = |sub: &str, state: &str| {
        json!({"value": [{
            "subscriptionId": sub, "clientState": state, "changeType": "created",
            "resource": "Users/bob/Messages/AAA", "tenantId": "acme-aad",
            "subscriptionExpirationDateTime": "2026-11-28T00:00:00.0000000Z",
            "resourceData": {"id": "AAA"}
        }]})
        .to_string()
    };

    // Wrong clientState and an unknown subscription: acknowledged (Graph must not
    // retry forged or stale traffic) but dropped.
    assert_eq!(
        post(&h, item(&sub, "forged-client-state")).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(&h, item("00000000-0000-0000-0000-000000000000", "x")).await,
        StatusCode::ACCEPTED
    );
    // The real clientState on an id Graph never gave us: once the create's answer
    // named the subscription, only that id routes (this used to be published for
    // ten minutes after every create).
    let real_state = h
        .sim
        .subscriptions()
        .into_iter()
        .find(|s| s.id == sub)
        .and_then(|s| s.client_state)
        .unwrap();
    assert_eq!(
        post(
            &h,
            item("11111111-1111-1111-1111-111111111111", &real_state)
        )
        .await,
        StatusCode::ACCEPTED
    );
    // Malformed: 400.
    assert_eq!(post(&h, "{not json").await, StatusCode::BAD_REQUEST);
    assert_eq!(
        post(&h, r#"{"value": [{"changeType": "created"}]}"#).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(post(&h, r#"{"items": []}"#).await, StatusCode::BAD_REQUEST);
    // Oversized: 413.
    assert_eq!(
        post(&h, "x".repeat(5000)).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    assert!(
        webhook_messages(&h).await.is_empty(),
        "nothing may be published"
    );
    let metrics = h.metrics().await;
    for result in ["bad_client_state", "unknown_subscription"] {
        assert!(
            metrics.contains(&format!(
                "subkeeper_webhooks_received_total{{kind=\"microsoft\",result=\"{result}\"}}"
            )),
            "{result} not counted"
        );
    }
    h.stop().await;
}

/// A private nats-server this test can kill and restart; its storage is removed
/// when the test ends.
struct Nats {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

fn spawn_nats(port: u16, dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server is not installed: run scripts/test (or scripts/test-services), which installs it")
}

impl Nats {
    fn start(port: u16, dir: &std::path::Path) -> Self {
        Self {
            child: spawn_nats(port, dir),
            port,
            dir: dir.to_owned(),
        }
    }

    async fn wait_ready(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(
            "private nats-server up",
            Duration::from_secs(10),
            || async { tokio::net::TcpStream::connect(&addr).await.is_ok() },
        )
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same storage.
    fn restart(&mut self) {
        self.kill();
        self.child = spawn_nats(self.port, &self.dir);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Postgres + NATS only: an outage of NATS, and the Postgres outbox that bridges
/// it, exist only there (the in-process bus cannot be down without the process).
#[actix_web::test]
async fn a_thousand_notifications_through_a_nats_outage_are_all_kept_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir =
        std::env::temp_dir().join(format!("subkeeper-nats-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nats = Nats::start(port, &dir);
    nats.wait_ready().await;
    let url = format!("nats://127.0.0.1:{port}");
    let h = Harness::start(Backend::PostgresNats, |c| {
        c.nats_url = url.clone();
        c.outbox_relay_interval_ms = 100;
        c.webhook_publish_timeout_ms = 500;
    })
    .await;
    let provider = h.create_provider("acme", "acme-aad", "carol").await;
    let sub = live_subscription(&h, "acme", &provider).await;

    let mut statuses = Vec::new();
    let mut items = Vec::new();
    for round in 0..10 {
        if round == 3 {
            nats.kill();
        }
        if round == 7 {
            let parked = h.outbox_depth().await;
            assert!(
                parked >= 300,
                "the outage must have parked notifications in the outbox, found {parked}"
            );
            nats.restart();
            nats.wait_ready().await;
        }
        let reports = futures_util::future::join_all(
            (0..100).map(|_| h.sim.notify(&sub, ChangeType::Created, 1)),
        )
        .await;
        for report in reports {
            let report = report.unwrap();
            statuses.extend(report.attempts.iter().map(|a| a.status));
            items.push(
                report.body["value"][0]["resourceData"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert_eq!(statuses.len(), 1000);
    assert!(
        statuses.iter().all(|s| *s == Some(202)),
        "every request answered 202: {:?}",
        statuses
            .iter()
            .filter(|s| **s != Some(202))
            .collect::<Vec<_>>()
    );
    assert_eq!(items.iter().collect::<HashSet<_>>().len(), 1000);

    // The relay drains the outbox into JetStream once NATS is back.
    let client = async_nats::connect(&url).await.unwrap();
    let t = h.topology();
    wait_until("all 1000 in JetStream", Duration::from_secs(60), || async {
        let stored = read_nats_stream(&client, &t.webhook_stream(), &t.webhook_subjects()).await;
        stored.len() >= 1000
    })
    .await;
    let stored = read_nats_stream(&client, &t.webhook_stream(), &t.webhook_subjects()).await;
    assert_eq!(stored.len(), 1000, "no duplicates");
    let ids: HashSet<String> = stored
        .iter()
        .map(|m| {
            m.body["notification"]["resourceData"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, items.into_iter().collect::<HashSet<_>>());
    assert_eq!(h.outbox_depth().await, 0, "outbox drained");
    h.stop().await;
    drop(nats);
}

async fn lifecycle_notifications_renew_recreate_and_ask_for_resync(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let provider = h.create_provider("acme", "acme-aad", "dave").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let events = h.topology().event_subject(
        DomainEventType::ResyncRequired,
        &TenantId::parse("acme").unwrap(),
    );
    let resyncs = h.subscribe(events).await;

    // reauthorizationRequired → the service renews now (Graph sees the PATCH).
    let report = h
        .sim
        .lifecycle(&sub, LifecycleEvent::ReauthorizationRequired)
        .await
        .unwrap();
    assert!(report.all_accepted(), "{report:?}");
    wait_until("the PATCH", Duration::from_secs(10), || async {
        h.sim.requests().iter().any(|r| {
            r.operation == Operation::Renew
                && r.subscription_id.as_deref() == Some(sub.as_str())
                && r.status == 200
        })
    })
    .await;

    // missed → a resync event for the tenant.
    h.sim.lifecycle(&sub, LifecycleEvent::Missed).await.unwrap();
    let (_, event) = resyncs
        .wait_for("resync event", Duration::from_secs(5), |_| true)
        .await;
    assert_eq!(event["provider_id"], provider.as_str());
    assert_eq!(event["reason"], "missed");

    // subscriptionRemoved → recreated now (Graph sees a new POST) and a resync event.
    h.sim
        .lifecycle(&sub, LifecycleEvent::SubscriptionRemoved)
        .await
        .unwrap();
    wait_until("a new subscription", Duration::from_secs(10), || async {
        h.sim
            .subscriptions()
            .iter()
            .any(|s| s.resource == "users/dave/messages" && s.id != sub)
    })
    .await;
    let (_, event) = resyncs
        .wait_for("second resync event", Duration::from_secs(5), |e| {
            e["reason"] != "missed"
        })
        .await;
    assert_eq!(event["reason"], "subscription_removed");
    assert_eq!(resyncs.all().len(), 2, "{:#?}", resyncs.all());
    let view = h
        .wait_provider("acme", &provider, "recreated", |v| {
            v["subscription"]["id"].as_str().is_some_and(|id| id != sub)
        })
        .await;
    assert_eq!(view["health"]["last_renewal_result"], "recreated");
    h.stop().await;
}

/// One request naming two providers' subscriptions among thousands of forged
/// ids (one route lookup for the whole request): exactly the real items are
/// published, each on its provider's subject, a repeated one once.
async fn a_request_mixing_real_items_with_thousands_of_forged_ids_publishes_exactly_the_real_ones(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let bob = h.create_provider("globex", "globex-aad", "bob").await;
    let alice_sub = live_subscription(&h, "acme", &alice).await;
    let bob_sub = live_subscription(&h, "globex", &bob).await;
    let alice_state = h.client_state(&alice_sub).await;
    let bob_state = h.client_state(&bob_sub).await;
    let item = |sub: &str, state: &str, message: &str| {
        json!({
            "subscriptionId": sub, "clientState": state, "changeType": "created",
            "resource": format!("Users/x/Messages/{message}"), "tenantId": "aad",
            "subscriptionExpirationDateTime": "2026-11-28T00:00:00.0000000Z",
            "resourceData": {"id": message}
        })
    };
    let mut items = vec![
        item(&alice_sub, &alice_state, "A1"),
        item(&alice_sub, "forged-client-state", "A2"),
        item(&bob_sub, &bob_state, "B1"),
    ];
    items
        .extend((0..3_000).map(|i| item(&uuid::Uuid::new_v4().to_string(), "x", &format!("F{i}"))));
    items.push(item(&alice_sub, &alice_state, "A1"));
    let body = json!({ "value": items }).to_string();
    assert!(body.len() < 1 << 20, "within the default body limit");
    assert_eq!(post(&h, body).await, StatusCode::ACCEPTED);

    wait_until("both real items stored", Duration::from_secs(5), || async {
        webhook_messages(&h).await.len() >= 2
    })
    .await;
    let stored = webhook_messages(&h).await;
    let mut got: Vec<(String, String)> = stored
        .iter()
        .map(|m| {
            (
                m.body["provider_id"].as_str().unwrap().to_owned(),
                m.body["notification"]["resourceData"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (alice.clone(), "A1".to_owned()),
        (bob.clone(), "B1".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want, "{stored:#?}");
    for m in &stored {
        let provider = m.body["provider_id"].as_str().unwrap();
        assert!(
            m.subject.ends_with(&format!(".{provider}")),
            "{}",
            m.subject
        );
    }
    h.stop().await;
}

/// Probe, not a test (run it with `--ignored --nocapture`, see BENCHMARKS.md):
/// the time the service takes to answer 1 MiB of minimal Graph items naming
/// random subscription ids — what one unauthenticated request can cost it.
#[actix_web::test]
#[ignore = "measurement probe: prints timings, run by hand"]
async fn probe_forged_flood() {
    let h = Harness::start(Backend::PostgresNats, |_| {}).await;
    let mut items = Vec::new();
    let mut size = 0;
    while size < (1 << 20) - 100 {
        let item = format!("{{\"subscriptionId\":\"{}\"}}", uuid::Uuid::new_v4());
        size += item.len() + 1;
        items.push(item);
    }
    let body = format!("{{\"value\":[{}]}}", items.join(","));
    let mut millis = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(post(&h, body.clone()).await, StatusCode::ACCEPTED);
        millis.push(started.elapsed().as_millis());
    }
    assert!(webhook_messages(&h).await.is_empty());
    eprintln!(
        "forged flood: {} items, {} bytes per request; answered in {millis:?} ms",
        items.len(),
        body.len()
    );
    h.stop().await;
}

/// Graph created the subscription but its answer never arrived (the call timed
/// out): the orphan delivers with the clientState we sent, under an id we never
/// learned. Its first notification gives it away; it is deleted at Graph and
/// nothing it sent is published.
async fn a_subscription_whose_create_answer_was_lost_is_deleted_when_it_first_delivers(
    backend: Backend,
) {
    use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule};
    let h = Harness::start(backend, |c| c.provider_timeout_seconds = 1).await;
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::LostAnswer { seconds: 3 })
            .for_resource("orphan")
            .times(1),
    );
    let provider = h.create_provider("acme", "acme-aad", "orphan").await;
    let live = live_subscription(&h, "acme", &provider).await;
    let subs = h.sim.subscriptions();
    assert_eq!(subs.len(), 2, "the lost create left one behind: {subs:#?}");
    let orphan = subs.iter().find(|s| s.id != live).unwrap().id.clone();

    // A change: both subscriptions deliver it.
    let report = h.sim.notify(&orphan, ChangeType::Created, 1).await.unwrap();
    assert!(report.all_accepted(), "{report:?}");
    wait_until(
        "the orphan deleted at Graph",
        Duration::from_secs(10),
        || async { h.sim.subscriptions().len() == 1 },
    )
    .await;
    assert_eq!(h.sim.subscriptions()[0].id, live);
    let deletes: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::Delete)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!(deletes[0].subscription_id.as_deref(), Some(orphan.as_str()));
    assert!(
        webhook_messages(&h).await.is_empty(),
        "the orphan's notification is not published"
    );
    // The live subscription is untouched and still delivers.
    assert!(
        h.sim
            .notify(&live, ChangeType::Created, 1)
            .await
            .unwrap()
            .all_accepted()
    );
    wait_until("the live change stored", Duration::from_secs(5), || async {
        webhook_messages(&h).await.len() == 1
    })
    .await;
    h.stop().await;
}

/// Graph can deliver on a subscription before its create has answered: the
/// notification carries the clientState of the create in flight and is routed
/// to that provider. Here the answer then never arrives (a 504), so the same
/// subscription becomes an orphan: its next notification gets it deleted.
async fn a_notification_on_a_subscription_still_being_created_is_published(backend: Backend) {
    use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule};
    // The answer is held 4 s (the client waits up to 8): room for the early
    // notification even on a loaded machine.
    let h = Harness::start(backend, |c| c.provider_timeout_seconds = 8).await;
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::LostAnswer { seconds: 4 })
            .for_resource("early")
            .times(1),
    );
    let provider = h.create_provider("acme", "acme-aad", "early").await;
    wait_until(
        "the subscription created, its answer held",
        Duration::from_secs(5),
        || async { h.sim.subscriptions().len() == 1 },
    )
    .await;
    let first = h.sim.subscriptions()[0].id.clone();
    assert!(
        h.sim
            .notify(&first, ChangeType::Created, 1)
            .await
            .unwrap()
            .all_accepted()
    );
    wait_until(
        "the early change stored",
        Duration::from_secs(5),
        || async { webhook_messages(&h).await.len() == 1 },
    )
    .await;
    let stored = webhook_messages(&h).await;
    assert_eq!(stored[0].body["provider_id"], provider.as_str());
    assert_eq!(stored[0].body["subscription_id"], first.as_str());

    // The answer was a 504: the supervisor creates again, the first is an orphan.
    let live = live_subscription(&h, "acme", &provider).await;
    assert_ne!(live, first);
    assert!(
        h.sim
            .notify(&first, ChangeType::Updated, 1)
            .await
            .unwrap()
            .all_accepted()
    );
    wait_until("the orphan deleted", Duration::from_secs(10), || async {
        h.sim.subscriptions().iter().all(|s| s.id != first)
    })
    .await;
    assert_eq!(
        webhook_messages(&h).await.len(),
        1,
        "the orphan's second change is not published"
    );
    h.stop().await;
}

/// Every state a subscription row can be in comes back from the store as its own
/// route state, and only a deleted one (or a retired provider) stops intake: a
/// replaced or gone id stays routable for late notifications.
async fn a_route_carries_the_subscription_state_and_only_deleted_ones_are_retired(
    backend: Backend,
) {
    use subkeeper_actors::ports::{IntakeStore as _, RouteState};
    let h = Harness::start(backend, |_| {}).await;
    let provider = h.create_provider("acme", "acme-aad", "carol").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let store = h.store();
    for (stored, state, retired) in [
        ("active", RouteState::Active, false),
        ("replaced", RouteState::Replaced, false),
        ("gone", RouteState::Gone, false),
        ("deleted", RouteState::Deleted, true),
    ] {
        h.set_subscription_state(&sub, stored).await;
        let route = store
            .routes(&[sub.as_str()])
            .await
            .unwrap()
            .remove(&sub)
            .expect("a route");
        assert_eq!(route.state, state, "{stored}");
        assert_eq!(route.is_retired(), retired, "{stored}");
    }
    h.stop().await;
}

/// A late notification for a deleted provider's subscription is acknowledged and
/// dropped, and counted as `retired` — not as `rejected`, which an operator reads
/// as malformed or forged traffic.
async fn a_notification_for_a_retired_provider_is_counted_as_retired(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let provider = h.create_provider("acme", "acme-aad", "dave").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let client_state = h.client_state(&sub).await;
    let (code, _) = h
        .admin(
            reqwest::Method::DELETE,
            &format!("/tenants/acme/providers/{provider}"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    wait_until(
        "the subscription deleted",
        Duration::from_secs(10),
        || async { h.subscription_state(&sub).await == "deleted" },
    )
    .await;

    // The recorder is process-wide and tests run in parallel: compare the series
    // before and after, and only ever expect it to grow by at least this one.
    let received = |metrics: &str, result: &str| {
        let series =
            format!("subkeeper_webhooks_received_total{{kind=\"microsoft\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let before = received(&h.metrics().await, "retired");
    let late = json!({"value": [{
        "subscriptionId": sub, "clientState": client_state, "changeType": "created",
        "resource": "Users/dave/Messages/AAA", "tenantId": "acme-aad",
        "subscriptionExpirationDateTime": "2026-11-28T00:00:00.0000000Z",
        "resourceData": {"id": "AAA"}
    }]});
    assert_eq!(post(&h, late.to_string()).await, StatusCode::ACCEPTED);

    assert!(webhook_messages(&h).await.is_empty(), "nothing published");
    let metrics = h.metrics().await;
    assert!(
        received(&metrics, "retired") >= before + 1.0,
        "a retired provider's notification is not counted as retired: {metrics}"
    );
    h.stop().await;
}
