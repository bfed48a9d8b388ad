//! The NATS side as other services and operators see it: forced renewals over a
//! plain NATS request and `subkeeper renew`, error replies that change nothing, and
//! every RenewalResult in the renewal stream, once.
//!
//! Postgres + NATS only, but for the de-duplication of renewal results, which
//! both buses promise: the control subject and its queue group, `subkeeper renew`
//! over NATS, the JetStream streams' settings and an unreachable NATS server exist
//! only there. `subkeeper renew` against an embedded service (through the admin
//! API) is in `embedded.rs`.

use crate::support::{
    Backend, Harness, TestBus, nats_client, nats_url, on_both_backends, test_backend, test_bus,
    wait_until,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::bus::{NatsBus, Topology, renewal_message_id};
use subkeeper::store::{IfMissing, Store};
use subkeeper::{Config, RunOptions};
use subkeeper_actors::domain::{
    AttemptKind, HealthState, ProviderId, ProviderKind, RenewalAction, RenewalResult, TenantId,
};
use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule, Operation, RecordedRequest};

fn healthy(view: &Value) -> bool {
    view["health"]["subscription_status"] == "healthy"
}

/// Graph subscription id of a provider, once it is healthy.
async fn live_subscription(h: &Harness, tenant: &str, provider: &str) -> String {
    let view = h.wait_provider(tenant, provider, "healthy", healthy).await;
    view["subscription"]["id"].as_str().unwrap().to_owned()
}

/// PATCHes the simulator received for one subscription.
fn renews_of(requests: &[RecordedRequest], subscription: &str) -> usize {
    requests
        .iter()
        .filter(|r| {
            r.operation == Operation::Renew && r.subscription_id.as_deref() == Some(subscription)
        })
        .count()
}

/// `(provider, attempt, attempted_at to the microsecond)` of every recorded attempt.
async fn recorded_attempts(h: &Harness) -> BTreeSet<(String, String, i64)> {
    sqlx::query("SELECT provider_id::text AS p, attempt, attempted_at FROM renewal_attempts")
        .fetch_all(h.postgres())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let at: DateTime<Utc> = r.get("attempted_at");
            (r.get("p"), r.get("attempt"), at.timestamp_micros())
        })
        .collect()
}

#[actix_web::test]
async fn a_plain_nats_request_forces_renewals_and_every_result_lands_in_the_stream_once() {
    let h = Harness::start(Backend::PostgresNats, |_| {}).await;
    let ready: Value = h
        .http
        .get(format!("{}/readyz", h.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["nats"], "connected", "{ready:#}");

    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let bob = h.create_provider("acme", "acme-aad", "bob").await;
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    let alice_sub = live_subscription(&h, "acme", &alice).await;
    let bob_sub = live_subscription(&h, "acme", &bob).await;
    let carol_sub = live_subscription(&h, "contoso", &carol).await;
    h.wait_change_cursors(2).await;
    let before = h.sim.requests();

    // One provider: its RenewalResult comes back and Graph saw the PATCH.
    let reply = h
        .control_request(
            json!({"tenant": "acme", "provider_id": alice})
                .to_string()
                .as_bytes(),
        )
        .await;
    let result: RenewalResult = serde_json::from_value(reply.clone()).unwrap();
    assert_eq!(result.provider_id.to_string(), alice);
    assert!(result.success, "{reply:#}");
    assert_eq!(result.action, RenewalAction::Renewed);
    assert_eq!(result.subscription_id.as_deref(), Some(alice_sub.as_str()));
    let after = h.sim.requests();
    assert_eq!(
        renews_of(&after, &alice_sub),
        renews_of(&before, &alice_sub) + 1
    );
    let granted = h
        .sim
        .subscriptions()
        .into_iter()
        .find(|s| s.id == alice_sub)
        .unwrap()
        .expiration_date_time;
    let granted_ms = (result.new_expiration.unwrap() - granted).num_milliseconds();
    assert!(
        granted_ms.abs() < 1000,
        "stored expiry is not the one Graph granted"
    );

    // The whole tenant: one result per provider of acme, none for contoso.
    let reply = h
        .control_request(json!({"tenant": "acme"}).to_string().as_bytes())
        .await;
    let results: Vec<RenewalResult> = serde_json::from_value(reply.clone()).unwrap();
    let renewed: BTreeSet<String> = results
        .iter()
        .filter(|r| r.success && r.action == RenewalAction::Renewed)
        .map(|r| r.provider_id.to_string())
        .collect();
    assert_eq!(
        renewed,
        BTreeSet::from([alice.clone(), bob.clone()]),
        "{reply:#}"
    );
    let after = h.sim.requests();
    assert_eq!(
        renews_of(&after, &alice_sub),
        renews_of(&before, &alice_sub) + 2
    );
    assert_eq!(
        renews_of(&after, &bob_sub),
        renews_of(&before, &bob_sub) + 1
    );
    assert_eq!(
        renews_of(&after, &carol_sub),
        renews_of(&before, &carol_sub)
    );

    // Every attempt recorded in Postgres is in the renewal stream exactly once, on
    // its provider's subject, with its message id, and is the result replied.
    let t = h.topology();
    let attempts = recorded_attempts(&h).await;
    assert_eq!(
        attempts.len(),
        3 + 3,
        "3 registrations and 3 forced renewals"
    );
    wait_until(
        "every attempt published",
        Duration::from_secs(5),
        || async { h.renewal_stream().await.len() >= attempts.len() },
    )
    .await;
    let stored = h.renewal_stream().await;
    let mut in_stream = BTreeSet::new();
    for m in &stored {
        let r: RenewalResult = serde_json::from_value(m.body.clone()).unwrap();
        assert_eq!(m.subject, t.renewal_subject(&r.tenant, r.provider_id));
        assert_eq!(
            m.message_id.as_deref(),
            Some(renewal_message_id(&r).as_str())
        );
        in_stream.insert((
            r.provider_id.to_string(),
            r.attempt.to_string(),
            r.attempted_at.timestamp_micros(),
        ));
    }
    assert_eq!(stored.len(), attempts.len(), "duplicates in the stream");
    assert_eq!(in_stream, attempts);
    let replied = h
        .read_stream(
            &t.renewal_stream(),
            &t.renewal_subject(&result.tenant, result.provider_id),
        )
        .await
        .into_iter()
        .map(|m| serde_json::from_value::<RenewalResult>(m.body).unwrap())
        .any(|r| r == result);
    assert!(
        replied,
        "the replied result is not in the stream as replied"
    );

    h.stop().await;
}

/// Runs the built `subkeeper` binary with a test's NATS settings.
async fn subkeeper_cli(bus: &TestBus, args: &[&str]) -> std::process::Output {
    let mut command = crate::startup::subkeeper_binary(args);
    command
        .env("SUBKEEPER_NATS_URL", nats_url())
        .env("SUBKEEPER_NATS_SUBJECT_PREFIX", &bus.subject_prefix)
        .env("SUBKEEPER_NATS_STREAM_PREFIX", &bus.stream_prefix);
    crate::startup::output(command).await
}

#[actix_web::test]
async fn subkeeper_renew_prints_the_reply_and_exits_by_its_outcome() {
    let h = Harness::start(Backend::PostgresNats, |_| {}).await;
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    let alice_sub = live_subscription(&h, "acme", &alice).await;
    let carol_sub = live_subscription(&h, "contoso", &carol).await;

    // Renewed: the RenewalResult on stdout, exit 0, and Graph saw the PATCH.
    let before = renews_of(&h.sim.requests(), &alice_sub);
    let out = subkeeper_cli(
        h.bus(),
        &["renew", "--tenant", "acme", "--provider", &alice],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: RenewalResult = serde_json::from_str(&stdout).unwrap();
    assert!(
        result.success && result.action == RenewalAction::Renewed,
        "{stdout}"
    );
    assert_eq!(renews_of(&h.sim.requests(), &alice_sub), before + 1);

    // Another tenant's provider: an error reply, exit 1, and Graph saw nothing.
    let calls = h.sim.requests().len();
    let out = subkeeper_cli(
        h.bus(),
        &["renew", "--tenant", "acme", "--provider", &carol],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "not_found", "{reply:#}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("renewal refused"));
    assert_eq!(h.sim.requests().len(), calls);
    assert_eq!(renews_of(&h.sim.requests(), &carol_sub), 0);

    // Renewed but Graph failed: the failed RenewalResult, exit 3.
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Renew,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_subscription(&alice_sub)
        .times(1),
    );
    let out = subkeeper_cli(
        h.bus(),
        &["renew", "--tenant", "acme", "--provider", &alice],
    )
    .await;
    let result: RenewalResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(3), "{result:?}");
    assert!(!result.success);
    assert_eq!(result.http_status, Some(500));

    // Nobody serving those subjects: a clear message and exit 1, not a hang.
    let idle = test_bus();
    let out = subkeeper_cli(
        &idle,
        &["renew", "--tenant", "acme", "--timeout-seconds", "5"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no subkeeper instance answers"), "{stderr}");
    h.stop().await;
}

#[actix_web::test]
async fn bad_requests_get_error_replies_and_change_nothing() {
    let h = Harness::start(Backend::PostgresNats, |_| {}).await;
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    live_subscription(&h, "acme", &alice).await;
    live_subscription(&h, "contoso", &carol).await;
    h.wait_change_cursors(2).await;
    let calls = h.sim.requests().len();
    let attempts = recorded_attempts(&h).await;
    let published = h.renewal_stream().await.len();

    // A well-formed request without a reply subject is ignored, not executed.
    h.nats()
        .publish(
            h.topology().control_renew_subject(),
            json!({"tenant": "acme", "provider_id": alice})
                .to_string()
                .into(),
        )
        .await
        .unwrap();

    let unknown = ProviderId::new().to_string();
    let other_tenants = format!("no provider {carol} for tenant acme");
    for (body, code, says) in [
        ("renew alice please".to_owned(), "bad_request", "expected"),
        ("{}".to_owned(), "bad_request", "missing field `tenant`"),
        (
            json!({"tenant": "a.b"}).to_string(),
            "bad_request",
            "tenant id must be",
        ),
        (
            json!({"tenant": "acme", "provider": alice}).to_string(),
            "bad_request",
            "unknown field",
        ),
        (
            json!({"tenant": "acme", "provider_id": "alice"}).to_string(),
            "bad_request",
            "UUID",
        ),
        (
            json!({"tenant": "acme", "provider_id": unknown}).to_string(),
            "not_found",
            unknown.as_str(),
        ),
        // Another tenant's provider reads exactly like a missing one.
        (
            json!({"tenant": "acme", "provider_id": carol}).to_string(),
            "not_found",
            other_tenants.as_str(),
        ),
        (
            json!({"tenant": "nobody"}).to_string(),
            "not_found",
            "no active provider",
        ),
    ] {
        let reply = h.control_request(body.as_bytes()).await;
        assert_eq!(reply["error"]["code"], code, "{body}: {reply:#}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }

    // Requests are taken in order, so the ignored one has been handled by now.
    assert_eq!(
        h.sim.requests().len(),
        calls,
        "Graph or the token endpoint was called"
    );
    assert_eq!(recorded_attempts(&h).await, attempts);
    assert_eq!(h.renewal_stream().await.len(), published);
    h.stop().await;
}

fn a_result(tenant: &str, attempt: AttemptKind) -> RenewalResult {
    RenewalResult {
        provider_id: ProviderId::new(),
        tenant: TenantId::parse(tenant).unwrap(),
        kind: ProviderKind::GraphMail,
        success: true,
        attempt,
        action: attempt.success_action(),
        new_expiration: Some(Utc::now() + chrono::TimeDelta::days(7)),
        subscription_id: Some("sub-1".into()),
        history_id: None,
        error_class: None,
        error_message: None,
        http_status: None,
        consecutive_failures: 0,
        status: HealthState::Healthy,
        previous_status: HealthState::Renewing,
        attempted_at: Utc::now(),
        scheduled_at: None,
        duration_ms: 40,
    }
}

on_both_backends!(the_same_result_published_twice_is_stored_once);

/// A renewal result carries a message id derived from its attempt: published
/// twice (a retry after a lost ack), it is stored once, on either bus.
async fn the_same_result_published_twice_is_stored_once(backend: Backend) {
    let backend = test_backend(backend).await;
    let store = Store::open(
        &backend.location(),
        2,
        Arc::new(subkeeper_actors::ports::clock::SystemClock),
        IfMissing::Create,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let bus = backend.bus(&store).await.unwrap();
    // Every instance sets the streams up at start-up: doing it again changes nothing.
    bus.ensure_streams(backend.bus.limits()).await.unwrap();
    bus.ensure_streams(backend.bus.limits()).await.unwrap();
    let t = backend.bus.topology();

    let sink = bus.renewal_sink();
    let renew = a_result("acme", AttemptKind::Renew);
    sink.renewal(&renew).await;
    sink.renewal(&renew).await;
    // The 404 → recreate of the same turn is a different message.
    let mut recreate = renew.clone();
    recreate.attempt = AttemptKind::Recreate;
    recreate.action = RenewalAction::Recreated;
    sink.renewal(&recreate).await;

    let stored = backend
        .streams(&store)
        .await
        .unwrap()
        .read(&t.renewal_stream(), &t.renewal_subjects())
        .await
        .unwrap();
    let subject = t.renewal_subject(&renew.tenant, renew.provider_id);
    assert_eq!(stored.len(), 2, "{stored:#?}");
    for (m, r) in stored.iter().zip([&renew, &recreate]) {
        assert_eq!(m.subject, subject);
        assert_eq!(
            m.message_id.as_deref(),
            Some(renewal_message_id(r).as_str())
        );
        assert_eq!(
            serde_json::from_slice::<RenewalResult>(&m.payload).unwrap(),
            *r
        );
    }
    if let subkeeper::bus::Bus::Local(local) = &bus {
        local.stop();
    }
}

/// The JetStream streams every instance declares at start-up: declaring them
/// again changes nothing, and their windows, storage and limits are as documented.
#[actix_web::test]
async fn jetstream_streams_are_declared_idempotently_with_their_windows_and_limits() {
    let js = async_nats::jetstream::new(nats_client().await);
    let test = test_bus();
    let t: Topology = test.topology();
    let bus = NatsBus::connect(&nats_url(), t.clone()).await.unwrap();
    bus.ensure_streams(test.limits()).await.unwrap();
    bus.ensure_streams(test.limits()).await.unwrap();
    let info = js
        .get_stream(t.webhook_stream())
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(24 * 3600));
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(info.config.subjects, vec![t.webhook_subjects()]);
    assert_eq!(
        info.config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    let info = js
        .get_stream(t.renewal_stream())
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(info.config.max_bytes, 8 << 20);
    assert!(info.config.max_age > Duration::ZERO);
}

/// The store is embedded (it does not matter here): the test needs no server.
#[actix_web::test]
async fn start_up_fails_clearly_when_nats_is_unreachable() {
    let dir =
        subkeeper_testkit::backend::DataDir::create(subkeeper_testkit::Purpose::Test).unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        admin_token: Some(crate::support::ADMIN_TOKEN.into()),
        // Nothing listens on port 1.
        nats_url: "nats://127.0.0.1:1".into(),
        ..Config::default()
    };
    let started = tokio::time::Instant::now();
    let outcome = subkeeper::run_with(
        Arc::new(config),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::future::pending(),
        RunOptions::default(),
    )
    .await;
    let err = outcome.expect_err("started without NATS").to_string();
    assert!(
        err.contains("SUBKEEPER_NATS_URL") && err.contains("nats://127.0.0.1:1"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}
