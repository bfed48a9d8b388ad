//! The event pipeline as operators and downstream services see it: a webhook
//! becomes a last-webhook time and a domain event; a provider that breaks is
//! announced once and its recovery once; a provider that goes quiet is marked
//! silent, alerted on, and cleared by its next webhook; garbage on the webhook
//! stream is thrown away without stopping anything; every renewal attempt reaches
//! the renewal stream once. Every scenario runs on both backends.

use crate::support::{Backend, Harness, on_both_backends, on_test_db, wait_until};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use subkeeper::bus::renewal_message_id;
use subkeeper_actors::domain::{
    DomainEventType, HealthState, ProviderKind, RenewalAction, RenewalResult, TenantId,
};
use subkeeper_actors::ports::AlertStore;
use subkeeper_testkit::sim::{ChangeType, Fault, FaultOperation, FaultRule};

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn live_subscription(h: &Harness, tenant: &str, provider: &str) -> String {
    let view = h
        .wait_provider(tenant, provider, "healthy", |v| {
            v["health"]["subscription_status"] == "healthy"
        })
        .await;
    view["subscription"]["id"].as_str().unwrap().to_owned()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap()
}

/// The health view's row, once `check` holds for it.
async fn wait_health(h: &Harness, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = h.health("acme", id).await;
        if check(&view["health"]) {
            return view["health"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last health: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both_backends!(
    a_new_message_sets_the_last_webhook_time_and_emits_mail_received,
    three_failures_fire_one_alert_and_recovery_resolves_it_once,
    a_provider_without_webhooks_goes_silent_and_one_webhook_clears_it,
    a_malformed_message_on_the_webhook_stream_is_dropped_and_the_rest_flows,
    every_recorded_attempt_is_in_the_renewal_stream_once_and_settled_by_alerting,
);

async fn a_new_message_sets_the_last_webhook_time_and_emits_mail_received(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let provider = h.create_provider("acme", "acme-aad", "alice").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let health = h.health("acme", &provider).await;
    assert!(
        health["health"]["last_webhook_received_at"].is_null(),
        "{health:#}"
    );
    let t = h.topology();
    let received = h
        .subscribe(t.event_subject(DomainEventType::MailReceived, &acme()))
        .await;
    let changed = h
        .subscribe(t.event_subject(DomainEventType::MailChanged, &acme()))
        .await;

    let before = Utc::now();
    let report = h.sim.notify(&sub, ChangeType::Created, 1).await.unwrap();
    assert!(report.all_accepted(), "{report:?}");

    let (subject, event) = received
        .wait_for("mail_received", Duration::from_secs(5), |_| true)
        .await;
    assert_eq!(
        subject,
        format!("{}.event.mail_received.acme", t_prefix(&h))
    );
    assert_eq!(event["type"], "mail_received");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["provider_id"], provider.as_str());
    assert_eq!(event["kind"], "graph_mail");
    assert_eq!(event["change_type"], "created");
    assert_eq!(event["resource"], report.body["value"][0]["resource"]);

    let health = wait_health(&h, &provider, "last_webhook_received_at", |health| {
        !health["last_webhook_received_at"].is_null()
    })
    .await;
    let at = time(&health["last_webhook_received_at"]);
    assert!(
        at >= before - chrono::TimeDelta::seconds(1) && at <= Utc::now(),
        "{at}"
    );
    assert_eq!(
        time(&event["at"]).timestamp_micros(),
        at.timestamp_micros(),
        "the event carries the time recorded (Postgres keeps microseconds)"
    );

    // Any other change to a message is `mail_changed`, not a new message.
    h.sim.notify(&sub, ChangeType::Updated, 1).await.unwrap();
    let (_, event) = changed
        .wait_for("mail_changed", Duration::from_secs(5), |_| true)
        .await;
    assert_eq!(event["change_type"], "updated");
    h.wait_consumer_idle(&t.webhook_stream(), &t.notification_consumer())
        .await;
    assert_eq!(received.all().len(), 1, "{:#?}", received.all());
    h.stop().await;
}

fn t_prefix(h: &Harness) -> String {
    h.bus().subject_prefix.clone()
}

async fn three_failures_fire_one_alert_and_recovery_resolves_it_once(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let t = h.topology();
    let alerts = h.subscribe(format!("{}.alert.acme.>", t_prefix(&h))).await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_resource("users/bob/"),
    );
    let p = h.create_provider("acme", "acme-aad", "bob").await;
    h.wait_provider("acme", &p, "in error", |v| v["status"] == "error")
        .await;
    let (subject, firing) = alerts
        .wait_for("firing", Duration::from_secs(10), |a| {
            a["event"] == "firing"
        })
        .await;
    assert_eq!(
        subject,
        t.alert_subject(&acme(), p.parse().unwrap()),
        "{firing:#}"
    );
    assert_eq!(firing["condition"], "error");
    assert_eq!(firing["state"], "error");
    assert_eq!(firing["provider_id"], p.as_str());
    assert_eq!(firing["tenant"], "acme");
    assert_eq!(firing["kind"], "graph_mail");
    assert_eq!(firing["consecutive_failures"], 3);
    let reason = firing["reason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
    let remediation: Vec<&str> = firing["remediation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let all = remediation.join("\n");
    for needle in [
        format!("PUT /api/v1/tenants/acme/providers/{p}/credentials"),
        format!("{}/webhooks/microsoft", h.base_url),
        "validationToken".to_owned(),
        format!("subkeeper renew --tenant acme --provider {p}"),
    ] {
        assert!(all.contains(&needle), "{needle} not in {all}");
    }

    // It keeps failing on the cool-off cadence: still one alert.
    let attempts = || async {
        let (_, body) = h
            .admin(
                Method::GET,
                &format!("/tenants/acme/providers/{p}/attempts"),
                None,
            )
            .await;
        body["attempts"].as_array().map_or(0, Vec::len)
    };
    let in_error = attempts().await;
    assert!(in_error >= 3);
    // What the escalation timer will ask the store agrees with the alert: the
    // provider has been unhealthy since the attempt that fired it.
    let unhealthy = AlertStore::unhealthy(h.store(), Some(p.parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert_eq!(
        unhealthy[0].since.timestamp_micros(),
        time(&firing["since"]).timestamp_micros()
    );
    assert_eq!(unhealthy[0].state, HealthState::Error);
    wait_until(
        "two more failed attempts",
        Duration::from_secs(20),
        || async { attempts().await >= in_error + 2 },
    )
    .await;

    h.sim.clear_faults();
    h.wait_provider("acme", &p, "recovered", |v| {
        v["health"]["subscription_status"] == "healthy"
    })
    .await;
    let (_, resolved) = alerts
        .wait_for("resolved", Duration::from_secs(10), |a| {
            a["event"] == "resolved"
        })
        .await;
    assert_eq!(resolved["condition"], "error");
    assert_eq!(resolved["state"], "healthy");
    assert_eq!(resolved["since"], firing["since"]);

    // A forced renewal goes through the same pipeline; once the alerting consumer
    // has settled it and everything before it, nothing else was announced.
    let (code, reply) = h.force_renewal("acme", &p).await;
    assert_eq!(code, 200, "{reply:#}");
    assert_eq!(reply["success"], true, "{reply:#}");
    h.wait_consumer_idle(&t.renewal_stream(), &t.alerting_consumer())
        .await;
    let events: Vec<Value> = alerts
        .all()
        .into_iter()
        .map(|(_, a)| a["event"].clone())
        .collect();
    assert_eq!(
        events,
        [json!("firing"), json!("resolved")],
        "{:#?}",
        alerts.all()
    );
    // The alert stream keeps them, once each, for whoever was not listening.
    let stored = h.alert_stream().await;
    let stored: Vec<(Value, Option<String>)> = stored
        .into_iter()
        .map(|m| (m.body["event"].clone(), m.message_id))
        .collect();
    assert_eq!(
        stored,
        [
            (json!("firing"), firing["id"].as_str().map(str::to_owned)),
            (
                json!("resolved"),
                resolved["id"].as_str().map(str::to_owned)
            )
        ]
    );
    h.stop().await;
}

async fn a_provider_without_webhooks_goes_silent_and_one_webhook_clears_it(backend: Backend) {
    let h = Harness::start(backend, |c| {
        c.mail_silence_seconds = 5;
        c.silence_check_interval_seconds = 1;
    })
    .await;
    let alerts = h.subscribe(format!("{}.alert.acme.>", t_prefix(&h))).await;
    let p = h.create_provider("acme", "acme-aad", "carol").await;
    let sub = live_subscription(&h, "acme", &p).await;

    let health = wait_health(&h, &p, "silent_since", |health| {
        !health["silent_since"].is_null()
    })
    .await;
    let since = time(&health["silent_since"]);
    assert!(
        Utc::now() - since >= chrono::TimeDelta::seconds(5),
        "silent before the threshold: {since}"
    );
    let (_, silent) = alerts
        .wait_for("silent alert", Duration::from_secs(10), |a| {
            a["event"] == "silent"
        })
        .await;
    assert_eq!(silent["condition"], "silent");
    assert_eq!(silent["provider_id"], p.as_str());
    assert_eq!(silent["since"], health["silent_since"]);
    assert!(
        silent["remediation"]
            .to_string()
            .contains("subkeeper renew --tenant acme"),
        "{silent:#}"
    );

    let series = format!(
        "subkeeper_provider_silent_seconds{{tenant=\"acme\",provider=\"{p}\",kind=\"graph_mail\"}} "
    );
    let silent_seconds = |text: &str| -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.trim().parse().unwrap())
    };
    wait_until("the silent series", Duration::from_secs(10), || async {
        silent_seconds(&h.metrics().await).is_some()
    })
    .await;
    let text = h.metrics().await;
    assert!(text.contains(&format!(
        "subkeeper_provider_unhealthy{{tenant=\"acme\",provider=\"{p}\",kind=\"graph_mail\",state=\"silent\"}} 1"
    )));
    let first = silent_seconds(&text).unwrap();
    assert!(first >= 5, "silent for less than the threshold: {text}");
    // Let a few more sweeps run (the gauge grows with time): still one alert.
    wait_until(
        "two more seconds of silence",
        Duration::from_secs(10),
        || async { silent_seconds(&h.metrics().await) >= Some(first + 2) },
    )
    .await;
    let silents = || {
        alerts
            .all()
            .into_iter()
            .filter(|(_, a)| a["event"] == "silent")
            .count()
    };
    assert_eq!(silents(), 1, "{:#?}", alerts.all());

    // One webhook ends it: health, board and an alert say so.
    h.sim.notify(&sub, ChangeType::Created, 1).await.unwrap();
    let (_, resolved) = alerts
        .wait_for("silence resolved", Duration::from_secs(10), |a| {
            a["event"] == "resolved"
        })
        .await;
    assert_eq!(resolved["condition"], "silent");
    assert_eq!(resolved["since"], health["silent_since"]);
    let health = h.health("acme", &p).await;
    assert!(health["health"]["silent_since"].is_null(), "{health:#}");
    assert!(!health["health"]["last_webhook_received_at"].is_null());
    let text = h.metrics().await;
    assert_eq!(silent_seconds(&text), None, "still silent on /metrics");
    assert_eq!(silents(), 1);
    h.stop().await;
}

async fn a_malformed_message_on_the_webhook_stream_is_dropped_and_the_rest_flows(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let t = h.topology();
    let provider = h.create_provider("acme", "acme-aad", "dave").await;
    let sub = live_subscription(&h, "acme", &provider).await;
    let received = h
        .subscribe(t.event_subject(DomainEventType::MailReceived, &acme()))
        .await;

    // Something that is not a webhook envelope lands on a webhook subject.
    let subject = t.webhook_subject(ProviderKind::GraphMail, &acme(), provider.parse().unwrap());
    h.publish_to_webhook_stream(&subject, b"this is not a webhook envelope")
        .await;
    h.sim.notify(&sub, ChangeType::Created, 1).await.unwrap();

    received
        .wait_for(
            "mail_received after the garbage",
            Duration::from_secs(5),
            |e| e["provider_id"] == provider.as_str(),
        )
        .await;
    // Both are in the stream and both were settled for good: a message left for
    // redelivery would keep the consumer from going idle.
    assert_eq!(h.webhook_stream().await.len(), 2);
    h.wait_consumer_idle(&t.webhook_stream(), &t.notification_consumer())
        .await;
    assert_eq!(
        received.all().len(),
        1,
        "one event, for the real notification: {:#?}",
        received.all()
    );
    assert!(
        h.metrics().await.contains(
            "subkeeper_consumer_messages_total{consumer=\"notification\",outcome=\"rejected\"}"
        ),
        "the rejected message is not counted"
    );
    let health = h.health("acme", &provider).await;
    assert!(!health["health"]["last_webhook_received_at"].is_null());
    h.stop().await;
}

/// Registrations, forced renewals and a 404 → recreate: every attempt recorded in
/// the store is in the renewal stream exactly once, on its provider's subject with
/// its message id, as the result the admin API answered; the alerting consumer
/// settles them all.
async fn every_recorded_attempt_is_in_the_renewal_stream_once_and_settled_by_alerting(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let bob = h.create_provider("acme", "acme-aad", "bob").await;
    let alice_sub = live_subscription(&h, "acme", &alice).await;
    live_subscription(&h, "acme", &bob).await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Renew,
            Fault::Status {
                status: 404,
                code: "ResourceNotFound".into(),
                retry_after_seconds: None,
            },
        )
        .for_subscription(alice_sub)
        .times(1),
    );
    let mut answered = Vec::new();
    for p in [&alice, &bob] {
        let (code, result) = h.force_renewal("acme", p).await;
        assert_eq!(code, 200, "{result:#}");
        answered.push(serde_json::from_value::<RenewalResult>(result).unwrap());
    }
    assert_eq!(answered[0].action, RenewalAction::Recreated);
    assert_eq!(answered[1].action, RenewalAction::Renewed);

    let recorded: BTreeSet<(uuid::Uuid, String, i64)> = on_test_db!(h, pool => {
        sqlx::query_as::<_, (uuid::Uuid, String, DateTime<Utc>)>(
            "SELECT provider_id, attempt, attempted_at FROM renewal_attempts",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    })
    .into_iter()
    .map(|(p, attempt, at)| (p, attempt, at.timestamp_micros()))
    .collect();
    // Two registrations; alice's renew (404) and recreate; bob's renew.
    assert_eq!(recorded.len(), 5, "{recorded:#?}");
    wait_until(
        "every attempt in the renewal stream",
        Duration::from_secs(10),
        || async { h.renewal_stream().await.len() >= recorded.len() },
    )
    .await;
    let t = h.topology();
    let stored = h.renewal_stream().await;
    assert_eq!(stored.len(), recorded.len(), "duplicates: {stored:#?}");
    let mut in_stream = BTreeSet::new();
    let mut results = Vec::new();
    for m in stored {
        let r: RenewalResult = serde_json::from_value(m.body).unwrap();
        assert_eq!(m.subject, t.renewal_subject(&r.tenant, r.provider_id));
        assert_eq!(
            m.message_id.as_deref(),
            Some(renewal_message_id(&r).as_str())
        );
        in_stream.insert((
            r.provider_id.0,
            r.attempt.to_string(),
            r.attempted_at.timestamp_micros(),
        ));
        results.push(r);
    }
    assert_eq!(in_stream, recorded);
    for r in &answered {
        assert!(
            results.contains(r),
            "the answered result is not in the stream as answered: {r:#?}"
        );
    }
    h.wait_consumer_idle(&t.renewal_stream(), &t.alerting_consumer())
        .await;
    h.stop().await;
}
