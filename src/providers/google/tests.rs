//! The Google adapters' pure parts (classification of Google's error answers, the
//! wire shapes) and the pending-channel contract against the simulator. The
//! service-level round trips live in `tests/it/google.rs`.

use super::*;
use subkeeper_actors::domain::{ErrorClass, ProviderId, TenantId};

fn provider(kind: ProviderKind) -> Provider {
    Provider {
        id: ProviderId(uuid::Uuid::new_v4()),
        tenant: TenantId::parse("acme").unwrap(),
        kind,
        display_name: "test".into(),
        resource: "team@example.com".into(),
        credentials_id: Some(uuid::Uuid::new_v4()),
        enabled: true,
        credentials_version: 0,
    }
}

fn status(call: Call, status: u16, body: &str, retry: Option<i64>) -> ApiError {
    GoogleError::Status {
        call,
        status,
        body: GoogleErrorBody::parse(body.as_bytes()),
        retry_after: retry.map(TimeDelta::seconds),
    }
    .classify(&provider(ProviderKind::GoogleCalendar))
}

fn google_error(code: u16, domain: &str, reason: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": "m", "errors": [{"domain": domain, "reason": reason, "message": "m"}]}}).to_string()
}

#[test]
fn rate_limits_are_throttled_and_other_refusals_permanent() {
    let rate = status(
        Call::EventsWatch,
        403,
        &google_error(403, "usageLimits", "rateLimitExceeded"),
        Some(7),
    );
    assert_eq!(rate.class, ErrorClass::Throttled);
    assert_eq!(rate.retry_after, Some(TimeDelta::seconds(7)));
    let user = status(
        Call::EventsWatch,
        403,
        &google_error(403, "usageLimits", "userRateLimitExceeded"),
        None,
    );
    assert_eq!(user.class, ErrorClass::Throttled);
    assert_eq!(
        status(Call::UsersWatch, 429, "", None).class,
        ErrorClass::Throttled
    );
    let forbidden = status(
        Call::EventsWatch,
        403,
        &google_error(403, "global", "forbidden"),
        None,
    );
    assert_eq!(forbidden.class, ErrorClass::Permanent);
    assert!(
        forbidden.message.contains("calendar.readonly"),
        "{}",
        forbidden.message
    );
    let missing = status(
        Call::EventsWatch,
        404,
        &google_error(404, "global", "notFound"),
        None,
    );
    assert_eq!(missing.class, ErrorClass::Permanent);
    assert!(
        missing.message.contains("team@example.com"),
        "{}",
        missing.message
    );
    assert_eq!(
        status(Call::EventsWatch, 400, "", None).class,
        ErrorClass::Permanent
    );
    assert_eq!(
        status(Call::EventsWatch, 500, "", None).class,
        ErrorClass::Transient
    );
    assert_eq!(
        status(Call::EventsWatch, 503, "", None).class,
        ErrorClass::Transient
    );
    assert_eq!(
        status(Call::EventsWatch, 503, "", Some(3)).class,
        ErrorClass::Throttled
    );
    let p = provider(ProviderKind::GoogleCalendar);
    assert_eq!(
        GoogleError::Unauthorized {
            call: Call::EventsWatch,
            body: GoogleErrorBody::default()
        }
        .classify(&p)
        .class,
        ErrorClass::Auth
    );
    assert_eq!(
        GoogleError::Timeout {
            call: Call::EventsWatch,
            timeout: Duration::from_secs(1)
        }
        .classify(&p)
        .class,
        ErrorClass::Transient
    );
}

#[test]
fn expirations_are_unix_milliseconds() {
    assert_eq!(
        parse_millis("1426325213000"),
        DateTime::parse_from_rfc3339("2015-03-14T09:26:53Z")
            .ok()
            .map(|d| d.with_timezone(&Utc))
    );
    assert_eq!(parse_millis("soon"), None);
}

#[test]
fn watch_bodies_have_googles_field_names() {
    let body = serde_json::to_value(WatchChannelBody {
        id: "c1",
        kind: WEB_HOOK,
        address: "https://x/webhooks/google",
        token: "t",
        params: BTreeMap::from([("ttl", "60".to_owned())]),
    })
    .unwrap();
    assert_eq!(body["type"], "web_hook");
    assert_eq!(body["params"]["ttl"], "60");
    let stop = serde_json::to_value(StopChannelBody {
        id: "c1",
        resource_id: "r1",
    })
    .unwrap();
    assert_eq!(stop, serde_json::json!({"id": "c1", "resourceId": "r1"}));
    let gmail = serde_json::to_value(GmailWatchBody {
        topic_name: "projects/p/topics/t",
        label_ids: vec!["INBOX"],
        label_filter_behavior: "include",
    })
    .unwrap();
    assert_eq!(gmail["topicName"], "projects/p/topics/t");
    assert_eq!(gmail["labelIds"][0], "INBOX");
}

/// What the test's webhook receiver saw of one channel message.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    channel_id: String,
    state: String,
    /// Whether the adapter's pending registry knew the channel with this token
    /// at the moment the message arrived.
    pending_with_token: bool,
}

/// Google answering `events.watch` only after its sync message was answered (the
/// race a subscriber must survive): the adapter has registered the channel as
/// pending before calling, so intake can route that sync; a refused watch leaves
/// nothing behind.
#[actix_web::test]
async fn a_channel_is_pending_before_events_watch_is_called_and_forgotten_when_refused() {
    use crate::providers::oauth::OAuthCredentials;
    use crate::providers::test_support::MemoryCredentials;
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use subkeeper_actors::ports::CreateRequest;
    use subkeeper_actors::ports::clock::SystemClock;
    use subkeeper_simulator::{
        Fault, FaultOperation, FaultRule, IdentityProvider, Operation, RegisteredApp, Simulator,
        SimulatorConfig,
    };

    let sim = Simulator::new(
        SimulatorConfig {
            google_sync_before_answer: true,
            allow_http_loopback: true,
            apps: vec![RegisteredApp {
                provider: IdentityProvider::Google,
                client_id: "client-acme".into(),
                client_secret: "not-a-real-google-secret".into(),
            }],
            ..SimulatorConfig::default()
        },
        Arc::new(SystemClock),
    );
    let server = sim
        .start(TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}/webhooks/google", listener.local_addr().unwrap());

    let credentials = Arc::new(MemoryCredentials::default());
    let credentials_id = uuid::Uuid::new_v4();
    credentials.insert(OAuthCredentials::refresh_token(
        credentials_id,
        "google",
        "client-acme",
        Some("not-a-real-google-secret".into()),
        "rt-acme",
    ));
    sim.register_google_account("rt-acme", "team@example.com");
    let apis = GoogleApis::new(
        GoogleConfig {
            base_url: server.google_base_url(),
            token_url: format!("{}/token", server.google_base_url()),
            calendar_address: address.clone(),
            ..GoogleConfig::default()
        },
        credentials,
        Arc::new(crate::providers::test_support::NoOtherWatchers),
        sim.clock(),
    )
    .unwrap();
    let pending = apis.calendar.pending_channels();

    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let receiver = {
        let pending = Arc::clone(&pending);
        let seen = Arc::clone(&seen);
        HttpServer::new(move || {
            let pending = Arc::clone(&pending);
            let seen = Arc::clone(&seen);
            App::new().default_service(web::to(move |req: HttpRequest| {
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let channel_id = header("X-Goog-Channel-ID");
                let pending_with_token = pending
                    .get(&channel_id)
                    .is_some_and(|p| p.token == header("X-Goog-Channel-Token"));
                seen.lock().unwrap().push(Seen {
                    channel_id,
                    state: header("X-Goog-Resource-State"),
                    pending_with_token,
                });
                async { HttpResponse::Ok().finish() }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run()
    };
    actix_web::rt::spawn(receiver);

    let mut p = provider(ProviderKind::GoogleCalendar);
    p.credentials_id = Some(credentials_id);
    let request = CreateRequest {
        notification_url: address.clone(),
        lifecycle_url: String::new(),
        client_state: "s".repeat(48),
        expires_at: sim.now() + TimeDelta::days(7),
    };
    let opened = apis.calendar.create(&p, &request).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Seen {
            channel_id: opened.external_id.clone(),
            state: "sync".into(),
            pending_with_token: true,
        }],
        "the sync arrived before the answer, while the channel was pending"
    );
    assert_eq!(
        pending.get(&opened.external_id).map(|c| c.provider),
        Some(p.id)
    );

    // Google refuses the next one: nothing stays pending for it.
    sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 500,
                code: "backendError".into(),
                retry_after_seconds: None,
            },
        )
        .times(1),
    );
    let refused = apis.calendar.create(&p, &request).await.unwrap_err();
    assert_eq!(refused.class, ErrorClass::Transient);
    let refused_id = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.operation == Operation::Create)
        .and_then(|r| r.subscription_id)
        .expect("the refused watch is journaled with its channel id");
    assert_ne!(refused_id, opened.external_id);
    assert!(pending.get(&refused_id).is_none());
    assert_eq!(pending.len(), 1, "only the opened channel");
    server.stop().await;
}
