//! The Graph adapter against the simulator over real HTTP on 127.0.0.1: round
//! trips, wire shapes checked against the vendor schema, the classification table,
//! and the token cache (single flight, expiry on the clock, refresh-token rotation).

use super::*;
use crate::providers::oauth::{OAuthCredentials, OAuthFlow};
use crate::providers::test_support::MemoryCredentials;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;
use std::net::TcpListener;
use std::time::Instant;
use subkeeper_actors::domain::{ErrorClass, ProviderId, ProviderKind, TenantId};
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_simulator::{
    Fault, FaultOperation, FaultRule, IdentityProvider, Operation as SimOperation, RecordedRequest,
    RegisteredApp, SimServer, Simulator, SimulatorConfig,
};
use uuid::Uuid;

const AZURE_TENANT: &str = "7f1c2a9e-3b4d-4e5f-8a6b-9c0d1e2f3a4b";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const INBOX: &str = "users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/mailFolders('Inbox')/messages";
const CALENDAR: &str = "users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/events";

/// The subscriber side of the validation handshake: echoes `validationToken` as
/// text/plain, as subkeeper's `/webhooks/microsoft` does.
async fn echo_validation(req: HttpRequest) -> HttpResponse {
    let token = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned());
    match token {
        Some(token) => HttpResponse::Ok().content_type("text/plain").body(token),
        None => HttpResponse::Accepted().finish(),
    }
}

struct Harness {
    sim: Simulator,
    _server: SimServer,
    credentials: Arc<MemoryCredentials>,
    api: GraphApi,
    /// `http://127.0.0.1:PORT` of the handshake receiver.
    public_url: String,
    credentials_id: Uuid,
}

impl Harness {
    async fn start() -> Self {
        Self::with_timeout(Duration::from_secs(10)).await
    }

    async fn with_timeout(request_timeout: Duration) -> Self {
        // Strict about credentials (the app is registered), lenient only about
        // the plain-http loopback receiver.
        let sim = Simulator::new(
            SimulatorConfig {
                allow_http_loopback: true,
                apps: vec![RegisteredApp {
                    provider: IdentityProvider::Microsoft,
                    client_id: CLIENT_ID.into(),
                    client_secret: "not-a-real-secret".into(),
                }],
                ..SimulatorConfig::default()
            },
            Arc::new(SystemClock),
        );
        let server = sim
            .start(TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let public_url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = HttpServer::new(|| App::new().default_service(web::to(echo_validation)))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        actix_web::rt::spawn(receiver);

        let credentials = Arc::new(MemoryCredentials::default());
        let credentials_id = Uuid::new_v4();
        credentials.insert(OAuthCredentials::client_credentials(
            credentials_id,
            AZURE_TENANT,
            CLIENT_ID,
            "not-a-real-secret",
        ));
        let config = GraphConfig {
            graph_base_url: server.graph_base_url(),
            login_base_url: server.login_base_url(),
            request_timeout,
            connect_timeout: Duration::from_secs(2),
        };
        // The adapter reads the simulator's clock, so moving provider time
        // expires cached tokens too.
        let clock: SharedClock = sim.clock();
        let api = GraphApi::new(config, credentials.clone(), clock).unwrap();
        Self {
            sim,
            _server: server,
            credentials,
            api,
            public_url,
            credentials_id,
        }
    }

    fn provider(&self, kind: ProviderKind) -> Provider {
        Provider {
            id: ProviderId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            kind,
            display_name: "Support inbox".to_owned(),
            resource: if kind == ProviderKind::GraphCalendar {
                CALENDAR
            } else {
                INBOX
            }
            .to_owned(),
            credentials_id: Some(self.credentials_id),
            enabled: true,
            credentials_version: 1,
        }
    }

    fn mail(&self) -> Provider {
        self.provider(ProviderKind::GraphMail)
    }

    fn create_request(&self, provider: &Provider) -> CreateRequest {
        CreateRequest {
            notification_url: format!("{}/webhooks/microsoft", self.public_url),
            lifecycle_url: format!("{}/webhooks/microsoft/lifecycle", self.public_url),
            client_state: "c".repeat(64),
            expires_at: self.sim.now() + self.api.max_lifetime(provider),
        }
    }

    async fn create(&self, provider: &Provider) -> Result<ProviderSubscription, ApiError> {
        self.api
            .create(provider, &self.create_request(provider))
            .await
    }

    fn subscription(&self, provider: &Provider, created: &ProviderSubscription) -> Subscription {
        Subscription {
            provider_id: provider.id,
            external_id: created.external_id.clone(),
            resource_id: None,
            client_state: "c".repeat(64),
            expires_at: created.expires_at,
            created_at: self.sim.now(),
            renewed_at: None,
            history_id: None,
        }
    }

    fn requests(&self, operation: SimOperation) -> Vec<RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }

    fn token_requests(&self) -> usize {
        self.requests(SimOperation::Token).len()
    }

    fn fault(&self, operation: FaultOperation, fault: Fault, times: u32) {
        self.sim
            .inject_fault(FaultRule::new(operation, fault).times(times));
    }
}

fn status(status: u16, code: &str, retry_after_seconds: Option<u64>) -> Fault {
    Fault::Status {
        status,
        code: code.to_owned(),
        retry_after_seconds,
    }
}

fn subscription_schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemas/graph.Subscription.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_valid(schema: &Value, instance: &Value) {
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} violates the schema: {errors:?}"
    );
}

#[actix_web::test]
async fn create_renew_delete_round_trip() {
    let h = Harness::start().await;
    let provider = h.mail();
    let request = h.create_request(&provider);
    let created = h.api.create(&provider, &request).await.unwrap();

    let live = h.sim.subscriptions();
    assert_eq!(live.len(), 1);
    let sub = &live[0];
    assert_eq!(sub.id, created.external_id);
    assert_eq!(sub.resource, INBOX);
    assert_eq!(sub.change_type, "created,updated,deleted");
    assert_eq!(
        sub.client_state.as_deref(),
        Some(request.client_state.as_str())
    );
    assert_eq!(sub.notification_url, request.notification_url);
    assert_eq!(
        sub.lifecycle_notification_url.as_deref(),
        Some(request.lifecycle_url.as_str())
    );
    assert_eq!(sub.tenant, AZURE_TENANT);
    assert_eq!(sub.application_id, CLIENT_ID);
    // What Graph granted is what we report (the request asked for whole seconds).
    assert_eq!(created.expires_at, sub.expiration_date_time);
    assert!(created.resource_id.is_none());

    // Six days later, renew to the maximum again.
    h.sim.advance(TimeDelta::days(6));
    let subscription = h.subscription(&provider, &created);
    let wanted = h.sim.now() + h.api.max_lifetime(&provider);
    let renewed = h.api.renew(&provider, &subscription, wanted).await.unwrap();
    assert_eq!(renewed.external_id, created.external_id);
    let live = h.sim.subscriptions();
    assert_eq!(renewed.expires_at, live[0].expiration_date_time);
    assert!(renewed.expires_at > created.expires_at + TimeDelta::days(5));
    assert!((wanted - renewed.expires_at).num_seconds().abs() <= 1);

    h.api.delete(&provider, &subscription).await.unwrap();
    assert!(h.sim.subscriptions().is_empty());
    // Already gone counts as deleted.
    h.api.delete(&provider, &subscription).await.unwrap();
    let deletes = h.requests(SimOperation::Delete);
    assert_eq!(
        deletes.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![204, 404]
    );
    // One token before the six days, one after: the hour-long token expired.
    assert_eq!(h.token_requests(), 2);
}

#[actix_web::test]
async fn calendar_providers_subscribe_to_events() {
    let h = Harness::start().await;
    let provider = h.provider(ProviderKind::GraphCalendar);
    let created = h.create(&provider).await.unwrap();
    let live = h.sim.subscriptions();
    assert_eq!(live[0].id, created.external_id);
    assert_eq!(live[0].resource, CALENDAR);
}

#[actix_web::test]
async fn request_bodies_match_the_vendor_schema() {
    let h = Harness::start().await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let subscription = h.subscription(&provider, &created);
    h.api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(3))
        .await
        .unwrap();

    let schema = subscription_schema();
    let create = h.requests(SimOperation::Create)[0].body.clone().unwrap();
    assert_valid(&schema, &create);
    assert_eq!(create["latestSupportedTlsVersion"], "v1_2");
    let expiry = create["expirationDateTime"].as_str().unwrap();
    assert!(expiry.ends_with('Z'), "{expiry} is not UTC");

    // PATCH is a partial update: same properties, none required.
    let mut partial = schema.clone();
    partial["definitions"]["Subscription"]
        .as_object_mut()
        .unwrap()
        .remove("required");
    let renew = h.requests(SimOperation::Renew)[0].body.clone().unwrap();
    assert_valid(&partial, &renew);
    assert_eq!(
        renew.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["expirationDateTime"]
    );
    // The partial schema still rejects a misspelt property.
    let validator = jsonschema::validator_for(&partial).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({"expirationDatetime": "x"})));
}

#[actix_web::test]
async fn the_maximum_lifetime_is_accepted_and_one_more_minute_is_not() {
    let h = Harness::start().await;
    let provider = h.mail();
    assert_eq!(
        h.api.max_lifetime(&provider),
        TimeDelta::minutes(OUTLOOK_MAX_MINUTES) - CLOCK_SKEW_MARGIN
    );
    h.create(&provider).await.unwrap();

    // Graph's own ceiling plus a minute is refused, and says so.
    let mut request = h.create_request(&provider);
    request.expires_at = h.sim.now() + TimeDelta::minutes(OUTLOOK_MAX_MINUTES + 1);
    let err = h.api.create(&provider, &request).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.http_status, Some(400));
    assert!(
        err.message.contains("can only be 10070 minutes"),
        "{}",
        err.message
    );
    assert!(err.message.contains("lowered its limit"), "{}", err.message);
}

#[actix_web::test]
async fn renew_of_a_missing_subscription_is_not_found() {
    let h = Harness::start().await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let mut subscription = h.subscription(&provider, &created);

    // Injected 404 on renew.
    h.fault(
        FaultOperation::Renew,
        status(404, "ResourceNotFound", None),
        1,
    );
    let err = h
        .api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(1))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound);
    assert_eq!(err.http_status, Some(404));
    assert!(err.message.contains("ResourceNotFound"), "{}", err.message);

    // And the simulator's own answer for an id it never issued.
    subscription.external_id = Uuid::new_v4().to_string();
    let err = h
        .api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(1))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound);

    // A subscription that expired at Graph is gone too.
    let subscription = h.subscription(&provider, &created);
    h.sim.advance(TimeDelta::days(8));
    let err = h
        .api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(1))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound);
}

#[actix_web::test]
async fn throttling_carries_retry_after() {
    let h = Harness::start().await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let subscription = h.subscription(&provider, &created);
    let expiry = h.sim.now() + TimeDelta::days(1);

    h.fault(
        FaultOperation::Renew,
        status(429, "TooManyRequests", Some(17)),
        1,
    );
    let err = h
        .api
        .renew(&provider, &subscription, expiry)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.http_status, Some(429));
    assert_eq!(err.retry_after, Some(TimeDelta::seconds(17)));

    // Until then nothing more goes to the tenant: the next call is not sent and
    // fails as throttled with what is left of the wait.
    let requests = h.sim.requests().len();
    let err = h
        .api
        .renew(&provider, &subscription, expiry)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.http_status, None);
    assert!(err.retry_after.is_some_and(|r| r <= TimeDelta::seconds(17)));
    assert_eq!(
        h.sim.requests().len(),
        requests,
        "a held call reached Graph"
    );
    h.sim.advance(TimeDelta::seconds(17));

    // 503 with Retry-After is throttling too; without it, an outage.
    h.fault(
        FaultOperation::Renew,
        status(503, "ServiceUnavailable", Some(4)),
        1,
    );
    let err = h
        .api
        .renew(&provider, &subscription, expiry)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, Some(TimeDelta::seconds(4)));

    h.fault(
        FaultOperation::Renew,
        status(503, "ServiceUnavailable", None),
        1,
    );
    let err = h
        .api
        .renew(&provider, &subscription, expiry)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.retry_after, None);

    // 429 without a hint: throttled, the lifecycle backs off on its own.
    h.fault(
        FaultOperation::Create,
        status(429, "TooManyRequests", None),
        1,
    );
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert_eq!(err.retry_after, None);
}

#[actix_web::test]
async fn server_errors_are_transient() {
    let h = Harness::start().await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let subscription = h.subscription(&provider, &created);
    for code in [500, 502, 504] {
        h.fault(
            FaultOperation::Renew,
            status(code, "InternalServerError", None),
            1,
        );
        let err = h
            .api
            .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(1))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient, "HTTP {code}");
        assert_eq!(err.http_status, Some(code));
    }
    h.fault(
        FaultOperation::Delete,
        status(500, "InternalServerError", None),
        1,
    );
    let err = h.api.delete(&provider, &subscription).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
}

#[actix_web::test]
async fn a_hung_request_is_transient_within_the_timeout() {
    let timeout = Duration::from_millis(400);
    let h = Harness::with_timeout(timeout).await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let subscription = h.subscription(&provider, &created);

    h.fault(FaultOperation::Renew, Fault::Timeout { seconds: 5 }, 1);
    let started = Instant::now();
    let err = h
        .api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(1))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.http_status, None);
    assert!(err.message.contains("did not answer"), "{}", err.message);
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");

    // A hung token endpoint is just as transient.
    h.api.tokens().invalidate(h.credentials_id).await;
    h.fault(FaultOperation::Token, Fault::Timeout { seconds: 5 }, 1);
    let started = Instant::now();
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
}

#[actix_web::test]
async fn unreachable_graph_is_transient() {
    let h = Harness::start().await;
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = GraphConfig {
        graph_base_url: Simulator::graph_base_url(&base),
        login_base_url: Simulator::login_base_url(&base),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    };
    let api = GraphApi::new(config, h.credentials.clone(), Arc::new(SystemClock)).unwrap();
    let err = api
        .create(&h.mail(), &h.create_request(&h.mail()))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.message.contains("token endpoint"), "{}", err.message);
}

#[actix_web::test]
async fn an_expired_token_is_refreshed_once_and_the_call_succeeds() {
    let h = Harness::start().await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let subscription = h.subscription(&provider, &created);
    assert_eq!(h.token_requests(), 1);

    h.fault(FaultOperation::Renew, Fault::ExpiredToken, 1);
    let renewed = h
        .api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(2))
        .await
        .unwrap();
    assert_eq!(renewed.external_id, created.external_id);
    assert_eq!(
        h.token_requests(),
        2,
        "the 401 fetched exactly one new token"
    );
    let renews: Vec<u16> = h
        .requests(SimOperation::Renew)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(renews, vec![401, 200]);
}

#[actix_web::test]
async fn a_second_401_is_auth() {
    let h = Harness::start().await;
    let provider = h.mail();
    let created = h.create(&provider).await.unwrap();
    let subscription = h.subscription(&provider, &created);

    h.fault(FaultOperation::Renew, Fault::ExpiredToken, 2);
    let err = h
        .api
        .renew(&provider, &subscription, h.sim.now() + TimeDelta::days(2))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    assert_eq!(err.http_status, Some(401));
    assert!(
        err.message.contains("InvalidAuthenticationToken"),
        "{}",
        err.message
    );
    assert_eq!(
        h.requests(SimOperation::Renew).len(),
        2,
        "retried exactly once"
    );
}

#[actix_web::test]
async fn invalid_grant_requires_reauthorization() {
    let h = Harness::start().await;
    let provider = h.mail();
    h.fault(FaultOperation::Token, Fault::InvalidGrant, 1);
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ReauthRequired);
    assert_eq!(err.http_status, Some(400));
    assert!(err.message.contains("invalid_grant"), "{}", err.message);
    assert!(err.message.contains("AADSTS70000"), "{}", err.message);
    // Only the AADSTS line: no trace ids, and never the secret.
    assert!(!err.message.contains("Trace ID"), "{}", err.message);
    assert!(!err.message.contains("not-a-real-secret"));
    assert!(
        h.requests(SimOperation::Create).is_empty(),
        "no Graph call without a token"
    );

    // The failure is not cached: the next attempt asks again and succeeds.
    h.create(&provider).await.unwrap();
}

#[actix_web::test]
async fn token_endpoint_failures_are_classified() {
    let h = Harness::start().await;
    let provider = h.mail();
    let cases = [
        (status(401, "invalid_client", None), ErrorClass::Auth, None),
        (
            status(400, "interaction_required", None),
            ErrorClass::ReauthRequired,
            None,
        ),
        (
            status(400, "unauthorized_client", None),
            ErrorClass::ReauthRequired,
            None,
        ),
        (
            status(400, "invalid_scope", None),
            ErrorClass::Permanent,
            None,
        ),
        (
            status(500, "server_error", None),
            ErrorClass::Transient,
            None,
        ),
        (
            status(503, "temporarily_unavailable", None),
            ErrorClass::Transient,
            None,
        ),
        (
            status(429, "temporarily_unavailable", Some(9)),
            ErrorClass::Throttled,
            Some(TimeDelta::seconds(9)),
        ),
    ];
    for (fault, class, retry_after) in cases {
        h.fault(FaultOperation::Token, fault.clone(), 1);
        let err = h.create(&provider).await.unwrap_err();
        assert_eq!(err.class, class, "{fault:?}: {}", err.message);
        assert_eq!(err.retry_after, retry_after, "{fault:?}");
        assert!(err.message.contains("AADSTS"), "{}", err.message);
    }
}

#[actix_web::test]
async fn missing_credentials_require_reauthorization() {
    let h = Harness::start().await;
    let mut provider = h.mail();
    provider.credentials_id = None;
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ReauthRequired);
    assert!(
        err.message.contains("no OAuth credentials"),
        "{}",
        err.message
    );

    let unknown = Uuid::new_v4();
    provider.credentials_id = Some(unknown);
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ReauthRequired);
    assert!(
        err.message.contains(&unknown.to_string()),
        "{}",
        err.message
    );

    // A client-credentials row without its secret.
    let incomplete = Uuid::new_v4();
    let mut row = OAuthCredentials::client_credentials(incomplete, AZURE_TENANT, CLIENT_ID, "x");
    row.client_secret = None;
    h.credentials.insert(row);
    provider.credentials_id = Some(incomplete);
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ReauthRequired);
    assert!(err.message.contains("client_secret"), "{}", err.message);
    assert_eq!(h.token_requests(), 0);
}

#[actix_web::test]
async fn a_failed_handshake_is_permanent_and_names_the_public_url() {
    let h = Harness::start().await;
    let provider = h.mail();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut request = h.create_request(&provider);
    request.notification_url = format!("{dead}/webhooks/microsoft");
    let err = h.api.create(&provider, &request).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.http_status, Some(400));
    assert!(err.message.contains("ValidationError"), "{}", err.message);
    assert!(
        err.message.contains("SUBKEEPER_PUBLIC_URL"),
        "{}",
        err.message
    );
    assert!(h.sim.subscriptions().is_empty());
}

#[actix_web::test]
async fn forbidden_and_missing_resources_on_create_are_permanent() {
    let h = Harness::start().await;
    let provider = h.mail();
    h.fault(
        FaultOperation::Create,
        status(403, "ErrorAccessDenied", None),
        1,
    );
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(err.http_status, Some(403));
    assert!(err.message.contains("Mail.Read"), "{}", err.message);

    let calendar = h.provider(ProviderKind::GraphCalendar);
    h.fault(
        FaultOperation::Create,
        status(403, "ErrorAccessDenied", None),
        1,
    );
    let err = h.create(&calendar).await.unwrap_err();
    assert!(err.message.contains("Calendars.Read"), "{}", err.message);

    // On create a 404 is the mailbox, not the subscription: recreating won't help.
    h.fault(
        FaultOperation::Create,
        status(404, "ResourceNotFound", None),
        1,
    );
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("does not exist"), "{}", err.message);

    h.fault(FaultOperation::Create, status(409, "Conflict", None), 1);
    assert_eq!(
        h.create(&provider).await.unwrap_err().class,
        ErrorClass::Permanent
    );
}

#[actix_web::test]
async fn concurrent_calls_share_one_token_request() {
    let h = Harness::start().await;
    let provider = h.mail();
    let (a, b, c) = tokio::join!(
        h.create(&provider),
        h.create(&provider),
        h.create(&provider)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(h.token_requests(), 1);
    assert_eq!(h.sim.subscriptions().len(), 3);

    // A failing token request is shared by the callers waiting on it too.
    h.api.tokens().invalidate(h.credentials_id).await;
    h.fault(FaultOperation::Token, Fault::InvalidGrant, 1);
    let (a, b) = tokio::join!(h.create(&provider), h.create(&provider));
    assert_eq!(a.unwrap_err().class, ErrorClass::ReauthRequired);
    assert_eq!(b.unwrap_err().class, ErrorClass::ReauthRequired);
    assert_eq!(h.token_requests(), 2);
}

#[actix_web::test]
async fn tokens_are_replaced_before_they_expire_on_the_clock() {
    let h = Harness::start().await;
    let provider = h.mail();
    let tokens = h.api.tokens();
    let first = tokens.token(h.credentials_id).await.unwrap();
    // The simulator issues 3599 s tokens; the cache stops 5 minutes short.
    assert_eq!(
        first.expires_at() - first.refresh_at(),
        TimeDelta::minutes(5)
    );

    h.sim.advance(TimeDelta::minutes(50));
    assert_eq!(tokens.token(h.credentials_id).await.unwrap(), first);
    assert_eq!(h.token_requests(), 1);

    // Inside the margin: a new token, before Graph would have refused the old.
    h.sim.advance(TimeDelta::minutes(6));
    h.create(&provider).await.unwrap();
    assert_eq!(h.token_requests(), 2);
    assert_eq!(h.requests(SimOperation::Create)[0].status, 201);
}

#[actix_web::test]
async fn a_transient_refresh_failure_keeps_the_still_valid_token() {
    let h = Harness::start().await;
    let provider = h.mail();
    h.api.tokens().token(h.credentials_id).await.unwrap();
    h.sim.advance(TimeDelta::minutes(57));
    h.fault(
        FaultOperation::Token,
        status(503, "temporarily_unavailable", None),
        1,
    );
    // Both callers keep working, the one waiting included, on one failed request.
    let (a, b) = tokio::join!(h.create(&provider), h.create(&provider));
    a.unwrap();
    b.unwrap();
    let tokens: Vec<u16> = h
        .requests(SimOperation::Token)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(tokens, vec![200, 503]);

    // Past the real expiry there is nothing to fall back on.
    h.sim.advance(TimeDelta::minutes(5));
    h.fault(
        FaultOperation::Token,
        status(503, "temporarily_unavailable", None),
        1,
    );
    assert_eq!(
        h.create(&provider).await.unwrap_err().class,
        ErrorClass::Transient
    );
}

#[actix_web::test]
async fn rotated_refresh_tokens_are_stored_and_used() {
    let h = Harness::start().await;
    let delegated = Uuid::new_v4();
    h.credentials.insert(OAuthCredentials::refresh_token(
        delegated,
        AZURE_TENANT,
        CLIENT_ID,
        None,
        "0.original-refresh-token",
    ));
    let mut provider = h.mail();
    provider.credentials_id = Some(delegated);

    h.create(&provider).await.unwrap();
    let stored = h.credentials.stored();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], "0.original-refresh-token");

    // The next refresh presents the rotated token.
    h.sim.advance(TimeDelta::hours(2));
    h.create(&provider).await.unwrap();
    let forms: Vec<Value> = h
        .requests(SimOperation::Token)
        .into_iter()
        .filter_map(|r| r.body)
        .collect();
    assert_eq!(forms.len(), 2);
    assert_eq!(forms[0]["grant_type"], "refresh_token");
    assert_eq!(forms[0]["refresh_token"], "0.original-refresh-token");
    assert_eq!(
        forms[0]["scope"],
        crate::providers::oauth::GRAPH_DELEGATED_SCOPE
    );
    assert_eq!(forms[1]["refresh_token"], stored[0].as_str());
    assert_eq!(h.credentials.stored().len(), 2);
    assert_eq!(
        h.credentials.rows.lock().unwrap()[&delegated].flow,
        OAuthFlow::RefreshToken
    );
}

#[actix_web::test]
async fn client_credentials_post_the_documented_form() {
    let h = Harness::start().await;
    h.create(&h.mail()).await.unwrap();
    let token = &h.requests(SimOperation::Token)[0];
    assert_eq!(token.path, format!("/{AZURE_TENANT}/oauth2/v2.0/token"));
    let form = token.body.clone().unwrap();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");
    assert!(form.get("client_secret").is_some());
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let id = Uuid::new_v4();
    let creds = OAuthCredentials::refresh_token(id, "t", "c", Some("s3cr3t".into()), "r3fr3sh");
    let shown = format!("{creds:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("r3fr3sh"),
        "{shown}"
    );
}

#[test]
fn graph_dates_round_trip() {
    let at = parse_graph_datetime("2026-11-28T07:00:00.1234567Z").unwrap();
    assert_eq!(at.timestamp_subsec_nanos(), 123_456_700);
    assert_eq!(graph_datetime(at), "2026-11-28T07:00:00Z");
    assert_eq!(
        parse_graph_datetime("2026-11-28T07:00:00.0000000"),
        parse_graph_datetime("2026-11-28T07:00:00Z")
    );
    assert_eq!(
        parse_graph_datetime("2026-11-28T08:00:00+01:00"),
        parse_graph_datetime("2026-11-28T07:00:00Z")
    );
    assert!(parse_graph_datetime("tomorrow").is_none());
}

#[test]
fn graph_error_bodies_parse_and_tolerate_junk() {
    let body = br#"{"error":{"code":"ValidationError","message":"Subscription validation request failed.","innerError":{"date":"2024-08-09T15:10:35","request-id":"cd1c","client-request-id":"cd1c"}}}"#;
    let parsed = GraphErrorBody::parse(body);
    assert_eq!(parsed.code, "ValidationError");
    assert_eq!(parsed.request_id.as_deref(), Some("cd1c"));
    assert_eq!(
        parsed.to_string(),
        "ValidationError: Subscription validation request failed. [request-id cd1c]"
    );
    let junk = GraphErrorBody::parse(b"<html>502 Bad Gateway</html>");
    assert_eq!(junk, GraphErrorBody::default());
    assert_eq!(junk.to_string(), "no Graph error body");
}

#[test]
fn oauth_flows_round_trip_through_their_stored_names() {
    for flow in [OAuthFlow::ClientCredentials, OAuthFlow::RefreshToken] {
        assert_eq!(flow.grant_type().parse::<OAuthFlow>(), Ok(flow));
        assert_eq!(
            serde_json::to_value(flow).unwrap(),
            Value::String(flow.grant_type().to_owned())
        );
    }
    assert!("password".parse::<OAuthFlow>().is_err());
}

#[actix_web::test]
async fn a_credential_store_outage_does_not_fail_a_token_refresh_once_credentials_were_read() {
    let h = Harness::start().await;
    let provider = h.mail();
    h.create(&provider).await.unwrap();
    assert_eq!(h.token_requests(), 1);

    // The database goes away and the token is due: the refresh still happens,
    // with the credentials as last read, and the call succeeds.
    h.credentials.set_unavailable(true);
    h.api.tokens().invalidate(h.credentials_id).await;
    h.create(&provider).await.unwrap();
    assert_eq!(h.token_requests(), 2, "a new token was fetched");

    // The remembered copy is refused (a human may have just replaced it): that
    // says nothing about the stored credentials, so it is not a reason to stop.
    h.api.tokens().invalidate(h.credentials_id).await;
    h.fault(FaultOperation::Token, Fault::InvalidGrant, 1);
    let err = h.create(&provider).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{}", err.message);
    assert!(
        err.message.contains("last read were refused"),
        "{}",
        err.message
    );
    assert_eq!(h.token_requests(), 3);

    // Credentials never read: nothing to fall back on, the failure is reported as
    // the store's (transient), not the provider's.
    let other = Uuid::new_v4();
    h.credentials.insert(OAuthCredentials::client_credentials(
        other,
        AZURE_TENANT,
        CLIENT_ID,
        "not-a-real-secret",
    ));
    let mut stranger = h.mail();
    stranger.credentials_id = Some(other);
    let err = h.create(&stranger).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(
        err.message.contains("could not read OAuth credentials"),
        "{}",
        err.message
    );
    assert_eq!(
        h.token_requests(),
        3,
        "no token request without credentials"
    );

    // The store is back: changed credentials are read again, not the remembered
    // copy (here: another directory tenant, visible in the token request's path).
    h.credentials.set_unavailable(false);
    let moved = "0a0b0c0d-1111-2222-3333-444455556666";
    h.credentials.insert(OAuthCredentials::client_credentials(
        h.credentials_id,
        moved,
        CLIENT_ID,
        "not-a-real-secret",
    ));
    h.api.tokens().invalidate(h.credentials_id).await;
    let _ = h.create(&provider).await;
    let last = h.requests(SimOperation::Token).pop().unwrap();
    assert!(
        last.path.starts_with(&format!("/{moved}/")),
        "{}",
        last.path
    );
}
