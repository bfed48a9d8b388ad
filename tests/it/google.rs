//! Google Calendar and Gmail as a user sees them, through the same supervisor as
//! Microsoft: channel rotation (new channel before the old one is stopped, one live
//! channel at the end), stale, forged and sync messages publishing nothing, a
//! redelivered message stored once, a Gmail Pub/Sub push on the right subject,
//! every watch/stop body checked against Google's schemas, and one scenario table
//! of three strikes and needs_reauth run against both families. Every scenario
//! runs on both backends.

use crate::support::{
    Backend, GMAIL_PUSH_SECRET, GMAIL_TOPIC, Harness, on_both_backends, test_backend, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use subkeeper_testkit::sim::{Fault, FaultOperation, FaultRule, Operation, RecordedRequest};

fn status(view: &Value) -> &str {
    view["health"]["subscription_status"].as_str().unwrap_or("")
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/tests/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{instance:#}");
}

/// True when `path` is the request path of `method` in `google.paths.json`
/// (`{param}` matching one non-empty segment) under `prefix` (`/calendar/v3/` or
/// `/`, where the simulator mounts the service path).
fn path_matches(method: &str, prefix: &str, path: &str) -> bool {
    let file = format!(
        "{}/tests/schemas/google.paths.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let paths: HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let template = format!("{prefix}{}", paths[method]);
    let want: Vec<&str> = template.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    want.len() == got.len()
        && want.iter().zip(&got).all(|(w, g)| {
            if w.starts_with('{') && w.ends_with('}') {
                !g.is_empty()
            } else {
                w == g
            }
        })
}

/// POSTs a Calendar channel message to our endpoint, as Google would.
async fn channel_message(
    h: &Harness,
    channel_id: &str,
    token: &str,
    resource_id: &str,
    state: &str,
    number: u64,
) -> StatusCode {
    h.http
        .post(format!("{}/webhooks/google", h.base_url))
        .header("X-Goog-Channel-ID", channel_id)
        .header("X-Goog-Channel-Token", token)
        .header("X-Goog-Resource-ID", resource_id)
        .header("X-Goog-Resource-State", state)
        .header("X-Goog-Message-Number", number.to_string())
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap()
        .status()
}

/// The sample value of `subkeeper_webhooks_received_total{kind,result}`, 0 if absent.
fn received(metrics: &str, kind: &str, result: &str) -> f64 {
    subkeeper_testkit::metrics::sum(
        metrics,
        "subkeeper_webhooks_received_total",
        &[("kind", kind), ("result", result)],
    )
}

/// Requests of `operation` whose path starts with `prefix`, in journal order.
fn journal(h: &Harness, prefix: &str) -> Vec<(usize, RecordedRequest)> {
    h.sim
        .requests()
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r.path.starts_with(prefix))
        .collect()
}

/// Creates a `google_calendar` provider for `calendar` and waits until it is
/// healthy; its id and its live channel's id.
async fn healthy_calendar(
    h: &Harness,
    tenant: &str,
    calendar: &str,
    refresh_token: &str,
) -> (String, String) {
    let p = h
        .create_google_provider(
            tenant,
            "google_calendar",
            calendar,
            "client-acme",
            refresh_token,
        )
        .await;
    let view = h
        .wait_provider(tenant, &p, "calendar registered", |v| {
            status(v) == "healthy"
        })
        .await;
    let channel = view["subscription"]["id"].as_str().unwrap().to_owned();
    (p, channel)
}

on_both_backends!(
    calendar_rotation_opens_the_new_channel_before_stopping_the_old_and_publishes_only_real_changes,
    gmail_watch_is_renewed_in_place_and_a_pubsub_push_reaches_the_webhook_stream,
    three_strikes_and_needs_reauth_for_microsoft,
    three_strikes_and_needs_reauth_for_google_the_same_way,
    google_providers_get_periodic_resync_events_and_graph_ones_do_not,
    messages_on_a_channel_still_being_opened_are_routed_by_its_pending_open,
    a_channel_whose_watch_answer_was_lost_is_stopped_after_the_next_watch,
    deleting_one_of_two_gmail_providers_on_a_mailbox_keeps_the_watch_for_the_other,
    a_gmail_push_whose_history_id_is_not_a_number_is_refused_and_not_published,
);

async fn calendar_rotation_opens_the_new_channel_before_stopping_the_old_and_publishes_only_real_changes(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let tenant = "acme";
    let calendar = "team@example.com";
    let (p, first_id) = healthy_calendar(&h, tenant, calendar, "rt-acme").await;
    let live = h.sim.google_channels();
    assert_eq!(live.len(), 1, "{live:#?}");
    let old = live[0].clone();
    assert_eq!(old.id, first_id);
    assert_eq!(old.calendar_id, calendar);
    assert_eq!(old.address, format!("{}/webhooks/google", h.base_url));

    // Rotation: a forced renewal opens a new channel, records it, stops the old.
    let resync = h
        .subscribe(format!(
            "{}.event.resync_required.{tenant}",
            h.bus().subject_prefix
        ))
        .await;
    let (code, result) = h.force_renewal(tenant, &p).await;
    assert_eq!(code, 200, "{result:#}");
    assert_eq!(result["action"], "renewed", "{result:#}");
    let new_id = result["subscription_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, first_id, "a Calendar channel cannot be extended");
    wait_until("old channel stopped", Duration::from_secs(10), || async {
        h.sim.google_channels().iter().all(|c| c.id != first_id)
    })
    .await;
    let requests = journal(&h, "/calendar/v3/");
    let opened = requests
        .iter()
        .find(|(_, r)| {
            r.operation == Operation::Create
                && r.subscription_id.as_deref() == Some(new_id.as_str())
        })
        .map(|(i, _)| *i)
        .expect("the new channel's events.watch is in the journal");
    let stopped = requests
        .iter()
        .find(|(_, r)| {
            r.operation == Operation::Delete
                && r.subscription_id.as_deref() == Some(first_id.as_str())
        })
        .map(|(i, _)| *i)
        .expect("the old channel's channels.stop is in the journal");
    assert!(
        opened < stopped,
        "new channel opened (#{opened}) before the old one was stopped (#{stopped})"
    );
    let live = h.sim.google_channels();
    assert_eq!(
        live.len(),
        1,
        "exactly one live channel per calendar: {live:#?}"
    );
    assert_eq!(live[0].id, new_id);
    assert_ne!(live[0].token, old.token, "each channel has its own token");
    assert_eq!(h.subscription_state(&first_id).await, "deleted");
    let (_, event) = resync
        .wait_for("resync on rotation", Duration::from_secs(5), |e| {
            e["provider_id"] == p.as_str() && e["reason"] == "channel_rotated"
        })
        .await;
    assert_eq!(event["kind"], "google_calendar");

    // Messages that must not be published: the stopped channel (with its own,
    // once valid token), a forged token on the live channel, and a sync.
    let new = live[0].clone();
    let old_token = old.token.clone().unwrap();
    let new_token = new.token.clone().unwrap();
    assert_eq!(
        channel_message(&h, &old.id, &old_token, &old.resource_id, "exists", 2).await,
        StatusCode::OK
    );
    assert_eq!(
        channel_message(&h, &new.id, "forged-token", &new.resource_id, "exists", 90).await,
        StatusCode::OK
    );
    assert_eq!(
        channel_message(&h, &new.id, &new_token, &new.resource_id, "sync", 1).await,
        StatusCode::OK
    );
    // Missing headers are a bad request.
    let bare = h
        .http
        .post(format!("{}/webhooks/google", h.base_url))
        .header("X-Goog-Channel-ID", new.id.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);

    // A real change, delivered three times with the same message number.
    let report = h.sim.google_notify(&new_id, 3).await.unwrap();
    assert!(report.all_accepted(), "{report:#?}");
    let number = report
        .headers
        .iter()
        .find(|(k, _)| k == "X-Goog-Message-Number")
        .map(|(_, v)| v.clone())
        .unwrap();

    let t = h.topology();
    let subject = format!(
        "{}.webhook.google_calendar.{tenant}.{p}",
        h.bus().subject_prefix
    );
    // Intake answers a delivery only once the webhook stream has acknowledged its
    // publish (stored, or recognised as a duplicate) or the outbox has taken it,
    // and the relay deletes an outbox entry only after the stream's ack. So once all three
    // deliveries are answered and the outbox is empty, the stream holds all they
    // will ever add: no straggler can come later.
    wait_until(
        "the outbox relayed everything",
        Duration::from_secs(10),
        || async { h.outbox_depth().await == 0 },
    )
    .await;
    let stored = h
        .read_stream(
            &t.webhook_stream(),
            &format!("{}.webhook.>", h.bus().subject_prefix),
        )
        .await;
    assert_eq!(stored.len(), 1, "one change, stored once: {stored:#?}");
    assert_eq!(stored[0].subject, subject);
    assert_eq!(
        stored[0].message_id.as_deref(),
        Some(format!("{new_id}:{number}").as_str())
    );
    assert_eq!(stored[0].body["subscription_id"], new_id.as_str());
    assert_eq!(stored[0].body["notification"]["resourceState"], "exists");

    let metrics = h.metrics().await;
    assert!(
        received(&metrics, "google", "bad_client_state") >= 1.0,
        "{metrics}"
    );
    assert!(
        received(&metrics, "google", "retired") >= 1.0,
        "stopped channel: {metrics}"
    );
    assert!(
        received(&metrics, "google", "rejected") >= 1.0,
        "bad request: {metrics}"
    );
    assert!(
        received(&metrics, "google", "validation") >= 1.0,
        "{metrics}"
    );

    // Every body the adapter sent is a Google Channel; every path is Google's.
    let channel = schema("google.calendar.Channel.schema.json");
    for (_, r) in journal(&h, "/calendar/v3/") {
        let method = match r.operation {
            // The catch-up after a channel replacement reads events.list
            // (a GET without a body).
            Operation::ChangeFeed if r.method == "GET" => continue,
            Operation::Create => "calendar.events.watch",
            Operation::Delete => "calendar.channels.stop",
            other => panic!("unexpected Calendar call {other:?}: {r:#?}"),
        };
        assert!(
            path_matches(method, "/calendar/v3/", &r.path),
            "{} is not {method}",
            r.path
        );
        let body = r.body.clone().expect("watch and stop have bodies");
        assert_valid(&channel, &body);
        if r.operation == Operation::Create {
            assert_eq!(body["type"], "web_hook");
            assert!(body["token"].as_str().is_some_and(|t| t.len() >= 32));
            let ttl: i64 = body["params"]["ttl"].as_str().unwrap().parse().unwrap();
            assert!((6 * 86_400..=7 * 86_400).contains(&ttl), "ttl {ttl}");
        } else {
            assert_eq!(body, json!({"id": first_id, "resourceId": old.resource_id}));
        }
    }
    h.stop().await;
}

async fn gmail_watch_is_renewed_in_place_and_a_pubsub_push_reaches_the_webhook_stream(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let tenant = "acme";
    let mailbox = "dana@example.com";
    let p = h
        .create_google_provider(tenant, "gmail", mailbox, "client-acme", "rt-dana")
        .await;
    let view = h
        .wait_provider(tenant, &p, "gmail registered", |v| status(v) == "healthy")
        .await;
    let watch_id = view["subscription"]["id"].as_str().unwrap().to_owned();
    let watches = h.sim.gmail_watches();
    assert_eq!(watches.len(), 1, "{watches:#?}");
    assert_eq!(watches[0].email, mailbox);
    assert_eq!(watches[0].topic_name, GMAIL_TOPIC);
    assert_eq!(watches[0].label_ids, vec!["INBOX".to_owned()]);
    // The historyId the watch answered is stored and shown.
    let first_history = h.sim.gmail_history_id(mailbox).unwrap();
    assert_eq!(
        view["subscription"]["history_id"],
        first_history.to_string().as_str(),
        "{view:#}"
    );
    let changes = h
        .subscribe(format!(
            "{}.event.mail_changed.{tenant}",
            h.bus().subject_prefix
        ))
        .await;

    // Renewal calls users.watch again and keeps the id.
    let (code, result) = h.force_renewal(tenant, &p).await;
    assert_eq!(code, 200, "{result:#}");
    assert_eq!(result["action"], "renewed");
    assert_eq!(result["subscription_id"], watch_id.as_str());
    assert_eq!(h.sim.gmail_watches().len(), 1);

    // A new message: Gmail publishes, Pub/Sub pushes, we store it.
    let report = h.sim.gmail_push(mailbox).await.unwrap();
    assert!(report.all_accepted(), "{report:#?}");
    let message_id = report.body["message"]["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = h.topology();
    let subject = format!("{}.webhook.gmail.{tenant}.{p}", h.bus().subject_prefix);
    wait_until("the push stored", Duration::from_secs(10), || async {
        !h.read_stream(&t.webhook_stream(), &subject)
            .await
            .is_empty()
    })
    .await;
    let stored = h.read_stream(&t.webhook_stream(), &subject).await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(
        stored[0].message_id.as_deref(),
        Some(format!("{message_id}:{p}").as_str())
    );
    assert_eq!(stored[0].body["kind"], "gmail");
    assert_eq!(stored[0].body["notification"]["emailAddress"], mailbox);
    assert_eq!(stored[0].body["subscription_id"], watch_id.as_str());
    // Downstream hears of the change with the historyId to read from.
    let pushed_history = h.sim.gmail_history_id(mailbox).unwrap();
    assert!(pushed_history > first_history);
    let (_, event) = changes
        .wait_for("mail_changed event", Duration::from_secs(10), |e| {
            e["provider_id"] == p.as_str()
        })
        .await;
    assert_eq!(event["history_id"], pushed_history.to_string().as_str());

    // The next watch answers the mailbox's new historyId; the stored one follows.
    let (code, _) = h.force_renewal(tenant, &p).await;
    assert_eq!(code, 200);
    let (_, view) = h
        .admin(
            Method::GET,
            &format!("/tenants/{tenant}/providers/{p}"),
            None,
        )
        .await;
    assert_eq!(
        view["subscription"]["history_id"],
        pushed_history.to_string().as_str(),
        "{view:#}"
    );
    assert_eq!(view["subscription"]["id"], watch_id.as_str());

    // Without the deployment's secret nothing is read; junk is a bad request.
    let push = |query: &'static str, body: Value| {
        let url = format!("{}/webhooks/gmail{query}", h.base_url);
        let http = h.http.clone();
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    };
    assert_eq!(
        push("", report.body.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        push("?token=wrong-secret-wrong-secret", report.body.clone()).await,
        StatusCode::FORBIDDEN
    );
    let good = Box::leak(format!("?token={GMAIL_PUSH_SECRET}").into_boxed_str());
    assert_eq!(
        push(
            good,
            json!({"message": {"data": "not base64!", "messageId": "1"}})
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(h.read_stream(&t.webhook_stream(), &subject).await.len(), 1);

    // Every watch body is a Gmail WatchRequest on Gmail's path.
    let request = schema("google.gmail.WatchRequest.schema.json");
    let watches: Vec<_> = journal(&h, "/gmail/v1/")
        .into_iter()
        .filter(|(_, r)| r.operation == Operation::Create)
        .collect();
    assert_eq!(watches.len(), 3, "register and two renewals");
    for (_, r) in watches {
        assert!(
            path_matches("gmail.users.watch", "/", &r.path),
            "{}",
            r.path
        );
        assert_valid(&request, r.body.as_ref().unwrap());
    }

    // Deleting the provider stops the watch.
    let (code, _) = h
        .admin(
            Method::DELETE,
            &format!("/tenants/{tenant}/providers/{p}"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    wait_until("watch stopped", Duration::from_secs(10), || async {
        h.sim.gmail_watches().is_empty()
    })
    .await;
    let stops: Vec<_> = journal(&h, "/gmail/v1/")
        .into_iter()
        .filter(|(_, r)| r.operation == Operation::Delete)
        .collect();
    assert_eq!(stops.len(), 1);
    assert!(
        path_matches("gmail.users.stop", "/", &stops[0].1.path),
        "{}",
        stops[0].1.path
    );
    h.stop().await;
}

/// A provider family the scenario runs against.
#[derive(Debug, Clone, Copy)]
enum Family {
    GraphMail,
    GoogleCalendar,
}

impl Family {
    /// Creates a provider named `name` whose OAuth identity (Azure AD tenant for
    /// Graph, OAuth client id for Google) is `identity`.
    async fn create(self, h: &Harness, name: &str, identity: &str) -> String {
        match self {
            Self::GraphMail => h.create_provider("acme", identity, name).await,
            Self::GoogleCalendar => {
                h.create_google_provider(
                    "acme",
                    "google_calendar",
                    &format!("{name}@example.com"),
                    identity,
                    &format!("rt-{name}"),
                )
                .await
            }
        }
    }
}

/// One table, both families: a healthy provider stays healthy; a revoked grant
/// parks its provider in needs_reauth with a remediation and no further calls;
/// three failed creates put a provider in error with the reason, once; healing
/// brings it back with the count reset. Only the adapter differs.
async fn scenario(backend: Backend, family: Family) {
    let h = Harness::start(backend, |_| {}).await;
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Token, Fault::InvalidGrant).for_tenant("revoked-identity"),
    );
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_resource("bob"),
    );
    let alice = family.create(&h, "alice", "good-identity").await;
    let bob = family.create(&h, "bob", "good-identity").await;
    let carol = family.create(&h, "carol", "revoked-identity").await;

    // (provider, the status an operator sees once the lifecycle has settled)
    let rows = [
        (alice.as_str(), "connected"),
        (carol.as_str(), "needs_reauth"),
        (bob.as_str(), "error"),
    ];
    for (id, want) in rows {
        h.wait_provider("acme", id, &format!("{family:?} {want}"), |v| {
            v["status"] == want && (want != "connected" || status(v) == "healthy")
        })
        .await;
    }
    let view = h.provider("acme", &carol).await;
    assert!(
        view["error_message"]
            .as_str()
            .unwrap()
            .contains("re-authorize"),
        "{family:?}: {view:#}"
    );
    let parked_calls = || {
        h.sim
            .requests()
            .iter()
            .filter(|r| r.tenant.as_deref() == Some("revoked-identity"))
            .count()
    };
    let calls_when_parked = parked_calls();
    let view = h.provider("acme", &bob).await;
    assert_eq!(
        view["health"]["consecutive_failure_count"], 3,
        "{family:?}: {view:#}"
    );
    let reason = view["health"]["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("transient") && reason.contains("500"),
        "{family:?}: {reason}"
    );

    h.sim.clear_faults();
    let view = h
        .wait_provider("acme", &bob, "bob recovered", |v| status(v) == "healthy")
        .await;
    assert_eq!(view["status"], "connected");
    assert_eq!(view["health"]["consecutive_failure_count"], 0);
    let statuses = h.statuses_after(&bob).await;
    let into_error = statuses
        .windows(2)
        .filter(|w| w[0] != "error" && w[1] == "error")
        .count();
    assert_eq!(into_error, 1, "{family:?} transitions: {statuses:?}");
    assert_eq!(
        parked_calls(),
        calls_when_parked,
        "{family:?}: needs_reauth provider was called"
    );
    assert_eq!(h.provider("acme", &carol).await["status"], "needs_reauth");
    h.stop().await;
}

async fn three_strikes_and_needs_reauth_for_microsoft(backend: Backend) {
    scenario(backend, Family::GraphMail).await;
}

async fn three_strikes_and_needs_reauth_for_google_the_same_way(backend: Backend) {
    scenario(backend, Family::GoogleCalendar).await;
}

async fn google_providers_get_periodic_resync_events_and_graph_ones_do_not(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let tenant = "acme";
    let calendar = h
        .create_google_provider(
            tenant,
            "google_calendar",
            "ops@example.com",
            "client-acme",
            "rt-ops",
        )
        .await;
    let mail = h.create_provider(tenant, "acme-aad", "erin").await;
    for id in [&calendar, &mail] {
        h.wait_provider(tenant, id, "registered", |v| status(v) == "healthy")
            .await;
    }
    let inbox = h
        .subscribe(format!(
            "{}.event.resync_required.{tenant}",
            h.bus().subject_prefix
        ))
        .await;
    // The service's own timer runs every `google_resync_minutes`; the same task on
    // a short period, against this test's store and bus.
    let bus = h.backend.bus(h.store()).await.unwrap();
    let task = subkeeper::intake::spawn_google_resync(
        std::sync::Arc::new(h.store().clone()),
        bus.domain_events(),
        std::sync::Arc::new(subkeeper_actors::ports::clock::SystemClock),
        Duration::from_millis(200),
    )
    .unwrap();
    let (_, event) = inbox
        .wait_for("a periodic resync", Duration::from_secs(5), |e| {
            e["reason"] == "periodic"
        })
        .await;
    assert_eq!(event["provider_id"], calendar.as_str());
    assert_eq!(event["kind"], "google_calendar");
    // A second event for the calendar means a second period has run. The task
    // publishes in order (on one connection, or into one store), so every event
    // of the first period, the Graph provider's included if it got one, has
    // arrived before it.
    wait_until("a second period", Duration::from_secs(5), || async {
        inbox
            .all()
            .iter()
            .filter(|(_, e)| e["reason"] == "periodic" && e["provider_id"] == calendar.as_str())
            .count()
            >= 2
    })
    .await;
    task.abort();
    let periodic: Vec<Value> = inbox
        .all()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["reason"] == "periodic")
        .collect();
    assert!(periodic.len() >= 2, "one per period: {periodic:#?}");
    assert!(
        periodic
            .iter()
            .all(|e| e["provider_id"] == calendar.as_str()),
        "Graph providers have lifecycle notifications instead: {periodic:#?}"
    );
    h.stop().await;
}

/// Google sends a new channel's `sync` message — and can send its first change —
/// before `events.watch` has answered, so before the channel's row exists. Intake
/// routes those by the Calendar adapter's pending open, checked against its
/// token like any other; a channel nobody is opening stays unknown.
async fn messages_on_a_channel_still_being_opened_are_routed_by_its_pending_open(backend: Backend) {
    use std::sync::Arc;
    use subkeeper::intake::{ChannelMessage, ChannelOutcome, Dropped, GoogleIntake, IntakePorts};
    use subkeeper::providers::google::{PendingChannel, PendingChannels};
    use subkeeper::store::{IfMissing, Store};
    use subkeeper_actors::domain::{ProviderId, TenantId};
    use subkeeper_actors::ports::clock::{SharedClock, SystemClock};

    let backend = test_backend(backend).await;
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Store::open(&backend.location(), 2, clock.clone(), IfMissing::Create)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let bus = backend.bus(&store).await.unwrap();
    let streams = backend.streams(&store).await.unwrap();
    let pending = Arc::new(PendingChannels::default());
    let routes = Arc::new(store);
    let intake = GoogleIntake::new(
        IntakePorts {
            routes: routes.clone(),
            publisher: bus.publisher(),
            outbox: routes,
        },
        clock,
        Duration::from_secs(2),
        None,
        Arc::clone(&pending),
    );
    let provider = ProviderId(uuid::Uuid::new_v4());
    let token = "t".repeat(40);
    let message = |token: &str, state: &str, number: u64| ChannelMessage {
        channel_id: "channel-being-opened".into(),
        token: token.into(),
        resource_id: "resource-1".into(),
        resource_state: state.into(),
        message_number: number,
        resource_uri: None,
        channel_expiration: None,
    };

    // Nobody is opening it: unknown, whatever it claims.
    assert_eq!(
        intake
            .channel_message(&message(&token, "sync", 1))
            .await
            .unwrap(),
        ChannelOutcome::Dropped(Dropped::UnknownSubscription)
    );

    pending.open(
        "channel-being-opened",
        PendingChannel {
            provider,
            tenant: TenantId::parse("acme").unwrap(),
            token: token.clone(),
        },
    );
    assert_eq!(
        intake
            .channel_message(&message(&token, "sync", 1))
            .await
            .unwrap(),
        ChannelOutcome::Synced
    );
    assert_eq!(
        intake
            .channel_message(&message("forged-token", "exists", 2))
            .await
            .unwrap(),
        ChannelOutcome::Dropped(Dropped::BadClientState)
    );
    assert_eq!(
        intake
            .channel_message(&message(&token, "exists", 2))
            .await
            .unwrap(),
        ChannelOutcome::Published
    );
    let prefix = &backend.bus.subject_prefix;
    let stored = streams
        .read(
            &bus.topology().webhook_stream(),
            &format!("{prefix}.webhook.>"),
        )
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        1,
        "only the authenticated change: {stored:#?}"
    );
    assert_eq!(
        stored[0].subject,
        format!("{prefix}.webhook.google_calendar.acme.{provider}")
    );
    assert_eq!(
        stored[0].message_id.as_deref(),
        Some("channel-being-opened:2")
    );

    // Google refused to open it: unknown again.
    pending.forget("channel-being-opened");
    assert_eq!(
        intake
            .channel_message(&message(&token, "exists", 3))
            .await
            .unwrap(),
        ChannelOutcome::Dropped(Dropped::UnknownSubscription)
    );
}

/// Google opened the channel but its answer never arrived (the call timed out):
/// the channel delivers anyway, and every retry would add another for up to a
/// week. The next channel opened for the calendar names its resourceId, and the
/// lost one is stopped with it: one live channel, no pile-up.
async fn a_channel_whose_watch_answer_was_lost_is_stopped_after_the_next_watch(backend: Backend) {
    let h = Harness::start(backend, |c| c.provider_timeout_seconds = 1).await;
    let tenant = "acme";
    let calendar = "lost@example.com";
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::LostAnswer { seconds: 3 })
            .for_resource(calendar)
            .times(1),
    );
    let (_, live_id) = healthy_calendar(&h, tenant, calendar, "rt-lost").await;
    wait_until(
        "the lost channel stopped",
        Duration::from_secs(10),
        || async { h.sim.google_channels().len() == 1 },
    )
    .await;

    let history = h.sim.google_channel_history();
    assert_eq!(history.len(), 2, "{history:#?}");
    let (lost, live) = (&history[0], &history[1]);
    assert_eq!(live.id, live_id);
    assert!(!live.stopped);
    assert!(lost.stopped, "the lost channel was stopped: {lost:#?}");
    assert_eq!(
        lost.resource_id, live.resource_id,
        "one resourceId per calendar"
    );

    let calls = journal(&h, "/calendar/v3/");
    let position = |op: Operation, id: &str, status: u16| {
        calls
            .iter()
            .position(|(_, r)| {
                r.operation == op && r.subscription_id.as_deref() == Some(id) && r.status == status
            })
            .unwrap_or_else(|| panic!("{op:?} {id} {status} not in {calls:#?}"))
    };
    let lost_watch = position(Operation::Create, &lost.id, 504);
    let live_watch = position(Operation::Create, &live.id, 200);
    let stop = position(Operation::Delete, &lost.id, 204);
    assert!(lost_watch < live_watch && live_watch < stop);

    // The lost channel was never recorded: nothing routes to it.
    assert_eq!(h.subscription_rows(&lost.id).await, 0);
    h.stop().await;
}

/// Gmail keeps one watch per mailbox: when two providers watch the same
/// mailbox (two tenants, or a provider re-created before the old one was
/// deleted), deleting one must not stop the watch the other relies on.
async fn deleting_one_of_two_gmail_providers_on_a_mailbox_keeps_the_watch_for_the_other(
    backend: Backend,
) {
    let h = Harness::start(backend, |_| {}).await;
    let mailbox = "shared@example.com";
    let old = h
        .create_google_provider("acme", "gmail", mailbox, "client-acme", "rt-shared-acme")
        .await;
    let new = h
        .create_google_provider(
            "globex",
            "gmail",
            mailbox,
            "client-globex",
            "rt-shared-globex",
        )
        .await;
    for (tenant, p) in [("acme", &old), ("globex", &new)] {
        h.wait_provider(tenant, p, "gmail registered", |v| status(v) == "healthy")
            .await;
    }
    assert_eq!(h.sim.gmail_watches().len(), 1, "one watch per mailbox");

    let (code, _) = h
        .admin(
            Method::DELETE,
            &format!("/tenants/acme/providers/{old}"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    wait_until(
        "the old provider retired",
        Duration::from_secs(10),
        || async { h.provider_subscription_state(&old).await == "deleted" },
    )
    .await;
    assert_eq!(h.sim.gmail_watches().len(), 1, "the watch is still live");
    assert!(
        journal(&h, "/gmail/v1/")
            .iter()
            .all(|(_, r)| r.operation != Operation::Delete),
        "users.stop was not called"
    );

    // The remaining provider still hears of new mail.
    assert!(h.sim.gmail_push(mailbox).await.unwrap().all_accepted());
    let t = h.topology();
    let subject = format!("{}.webhook.gmail.globex.{new}", h.bus().subject_prefix);
    wait_until(
        "the push stored for globex",
        Duration::from_secs(10),
        || async {
            !h.read_stream(&t.webhook_stream(), &subject)
                .await
                .is_empty()
        },
    )
    .await;
    let acme = format!("{}.webhook.gmail.acme.{old}", h.bus().subject_prefix);
    assert!(h.read_stream(&t.webhook_stream(), &acme).await.is_empty());

    // The last one out stops it.
    let (code, _) = h
        .admin(
            Method::DELETE,
            &format!("/tenants/globex/providers/{new}"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    wait_until("the watch stopped", Duration::from_secs(10), || async {
        h.sim.gmail_watches().is_empty()
    })
    .await;
    h.stop().await;
}

/// A Gmail push whose historyId is not a whole number (a JSON number or a string
/// of digits, as Gmail sends it) is refused with 400 and never published: the
/// historyId is what downstream calls `history.list` from.
async fn a_gmail_push_whose_history_id_is_not_a_number_is_refused_and_not_published(
    backend: Backend,
) {
    use base64::Engine as _;
    let h = Harness::start(backend, |_| {}).await;
    let mailbox = "erin@example.com";
    let p = h
        .create_google_provider("acme", "gmail", mailbox, "client-acme", "rt-erin")
        .await;
    h.wait_provider("acme", &p, "gmail registered", |v| status(v) == "healthy")
        .await;
    let push = |message_id: &str, history_id: Value| {
        let data = json!({"emailAddress": mailbox, "historyId": history_id});
        let body = json!({
            "message": {
                "data": base64::engine::general_purpose::STANDARD.encode(data.to_string()),
                "messageId": message_id,
                "publishTime": "2026-11-21T08:00:00Z",
            },
            "subscription": "projects/subkeeper-test/subscriptions/gmail-push",
        });
        h.http
            .post(format!(
                "{}/webhooks/gmail?token={GMAIL_PUSH_SECRET}",
                h.base_url
            ))
            .json(&body)
            .send()
    };
    let t = h.topology();
    let subject = format!("{}.webhook.gmail.acme.{p}", h.bus().subject_prefix);
    let outbox = || h.outbox_depth();

    for (n, bad) in [
        json!("abc"),
        json!(""),
        json!("-5"),
        json!(-5),
        json!("1.5"),
        json!(1.5),
        json!("12 345"),
        json!({"id": 12345}),
        json!([12345]),
        json!(null),
        json!(true),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = push(&format!("bad-{n}"), bad.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "historyId {bad}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("historyId")),
            "historyId {bad}: {body}"
        );
    }
    // A 2xx is only answered once the stream (or the outbox) holds the message, so
    // what was refused is already absent here.
    assert!(
        h.read_stream(&t.webhook_stream(), &subject)
            .await
            .is_empty()
    );
    assert_eq!(outbox().await, 0);

    // Gmail's own forms are taken: a numeric string and a number.
    for (message_id, good) in [
        ("good-string", json!("12345")),
        ("good-number", json!(12346)),
    ] {
        let resp = push(message_id, good.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "historyId {good}");
    }
    let stored = h.read_stream(&t.webhook_stream(), &subject).await;
    let ids: Vec<_> = stored.iter().filter_map(|s| s.message_id.clone()).collect();
    assert_eq!(
        ids,
        [format!("good-string:{p}"), format!("good-number:{p}")],
        "{stored:#?}"
    );
    h.stop().await;
}
