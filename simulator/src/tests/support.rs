//! Test harness: a simulator server, a subscriber stand-in (the receiver), an
//! HTTP client, and the vendor schemas.

use crate::{IdentityProvider, RegisteredApp, SimServer, Simulator, SimulatorConfig};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use chrono::TimeDelta;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use subkeeper_actors::ports::clock::SystemClock;

/// A tenant id as the service would configure it.
pub const TENANT: &str = "7f1c2a9e-3b4d-4e5f-8a6b-9c0d1e2f3a4b";
/// Another tenant, for isolation and filter tests.
pub const OTHER_TENANT: &str = "0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9";
/// The app registration's client id.
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The app registration's secret, registered with the simulator.
pub const CLIENT_SECRET: &str = "s3cret";

/// What the tests run with unless they say otherwise: strict about
/// credentials, but receiving on plain-http 127.0.0.1.
pub fn test_config() -> SimulatorConfig {
    SimulatorConfig {
        allow_http_loopback: true,
        ..SimulatorConfig::default()
    }
}
/// A mailbox resource of the kind subkeeper subscribes to.
pub const INBOX: &str = "users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/mailFolders('Inbox')/messages";
/// A calendar resource.
pub const CALENDAR: &str = "users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/events";

/// How the receiver answers a validation handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// 200, text/plain, the decoded token: what a correct endpoint does.
    Echo,
    /// This status with the token as body.
    Status(u16),
    /// 200 text/plain with a different body.
    WrongBody,
    /// 200 with the token but as JSON.
    WrongContentType,
    /// Never answers.
    Hang,
}

/// How the receiver answers a notification POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// This status, empty body.
    Status(u16),
    /// Never answers.
    Hang,
}

/// A handshake the receiver saw.
#[derive(Debug, Clone)]
pub struct SeenValidation {
    /// Path it was sent to.
    pub path: String,
    /// Decoded `validationToken`.
    pub token: String,
    /// Request content type.
    pub content_type: String,
}

/// A notification the receiver saw.
#[derive(Debug, Clone)]
pub struct SeenNotification {
    /// Path it was sent to.
    pub path: String,
    /// Parsed body.
    pub body: Value,
    /// Request content type.
    pub content_type: String,
    /// Request headers, names lower-cased (Calendar messages live in them).
    pub headers: HashMap<String, String>,
}

#[derive(Debug)]
struct ReceiverState {
    handshake: Mutex<Handshake>,
    answer: Mutex<Answer>,
    validations: Mutex<Vec<SeenValidation>>,
    notifications: Mutex<Vec<SeenNotification>>,
}

/// The subscriber stand-in.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub fn start() -> Self {
        let state = Arc::new(ReceiverState {
            handshake: Mutex::new(Handshake::Echo),
            answer: Mutex::new(Answer::Status(202)),
            validations: Mutex::new(Vec::new()),
            notifications: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base_url,
            state,
            handle,
        }
    }

    pub fn notification_url(&self) -> String {
        format!("{}/webhooks/microsoft", self.base_url)
    }

    pub fn lifecycle_url(&self) -> String {
        format!("{}/webhooks/microsoft/lifecycle", self.base_url)
    }

    pub fn set_handshake(&self, mode: Handshake) {
        *self.state.handshake.lock().unwrap() = mode;
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    pub fn validations(&self) -> Vec<SeenValidation> {
        self.state.validations.lock().unwrap().clone()
    }

    pub fn notifications(&self) -> Vec<SeenNotification> {
        self.state.notifications.lock().unwrap().clone()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn receive(
    state: web::Data<ReceiverState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    if let Some(token) = query.get("validationToken") {
        state.validations.lock().unwrap().push(SeenValidation {
            path: req.path().to_owned(),
            token: token.clone(),
            content_type,
        });
        let mode = *state.handshake.lock().unwrap();
        return match mode {
            Handshake::Echo => HttpResponse::Ok()
                .content_type("text/plain")
                .body(token.clone()),
            Handshake::Status(status) => {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .content_type("text/plain")
                    .body(token.clone())
            }
            Handshake::WrongBody => HttpResponse::Ok()
                .content_type("text/plain")
                .body(format!("\"{token}\"")),
            Handshake::WrongContentType => HttpResponse::Ok().json(json!({ "token": token })),
            Handshake::Hang => std::future::pending().await,
        };
    }
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    state.notifications.lock().unwrap().push(SeenNotification {
        path: req.path().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        content_type,
        headers,
    });
    let answer = *state.answer.lock().unwrap();
    match answer {
        Answer::Status(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
        }
        Answer::Hang => std::future::pending().await,
    }
}

/// An HTTP answer from the simulator.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// `error.code` of a Graph error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// `error.message` of a Graph error body.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Simulator + server + receiver + client + schemas.
pub struct Harness {
    pub sim: Simulator,
    pub server: SimServer,
    pub receiver: Receiver,
    pub http: reqwest::Client,
    subscription_schema: jsonschema::Validator,
    notification_schema: jsonschema::Validator,
}

impl Harness {
    pub async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    /// A harness on `config`, with [`CLIENT_ID`] registered.
    pub async fn with_config(config: SimulatorConfig) -> Self {
        let sim = Simulator::new(config, Arc::new(SystemClock));
        sim.register_app(RegisteredApp {
            provider: IdentityProvider::Microsoft,
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
        });
        let server = sim
            .start(TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let receiver = Receiver::start();
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Self {
            sim,
            server,
            receiver,
            http,
            subscription_schema: schema("graph.Subscription.schema.json"),
            notification_schema: schema("graph.ChangeNotificationCollection.schema.json"),
        }
    }

    pub fn graph(&self, path: &str) -> String {
        format!("{}{path}", self.server.graph_base_url())
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!(
            "{}/{tenant}/oauth2/v2.0/token",
            self.server.login_base_url()
        )
    }

    /// POSTs a form to the token endpoint.
    pub async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        let response = self
            .http
            .post(self.token_url(tenant))
            .form(form)
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    /// An app-only access token from the token endpoint.
    pub async fn app_token(&self, tenant: &str) -> String {
        let reply = self
            .token_request(
                tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT_ID),
                    ("client_secret", "s3cret"),
                    ("scope", "https://graph.microsoft.com/.default"),
                ],
            )
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["access_token"].as_str().unwrap().to_owned()
    }

    /// A create body for `resource` expiring `minutes` from provider now, with
    /// both notification URLs on the receiver.
    pub fn subscription_body(&self, resource: &str, minutes: i64) -> Value {
        json!({
            "changeType": "created,updated",
            "notificationUrl": self.receiver.notification_url(),
            "lifecycleNotificationUrl": self.receiver.lifecycle_url(),
            "resource": resource,
            "expirationDateTime": (self.sim.now() + TimeDelta::minutes(minutes)).to_rfc3339(),
            "clientState": "client-state-secret",
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.graph(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        reply(request.send().await.unwrap()).await
    }

    /// Creates a subscription and asserts Graph's 201 with a schema-valid body.
    pub async fn create_ok(&self, token: &str, body: &Value) -> Value {
        let reply = self
            .call(
                reqwest::Method::POST,
                "/subscriptions",
                Some(token),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        self.assert_subscription(&reply.body);
        reply.body
    }

    /// Checks a subscription body against the vendor schema and Graph's format.
    pub fn assert_subscription(&self, body: &Value) {
        assert_valid(&self.subscription_schema, body);
        let expiry = body["expirationDateTime"].as_str().unwrap();
        assert!(is_graph_datetime(expiry), "{expiry}");
    }

    /// Checks a notification body against the vendor schema.
    pub fn assert_notification(&self, body: &Value) {
        assert_valid(&self.notification_schema, body);
        for item in body["value"].as_array().unwrap() {
            let expiry = item["subscriptionExpirationDateTime"].as_str().unwrap();
            assert!(is_graph_datetime(expiry), "{expiry}");
        }
    }

    pub async fn stop(self) {
        self.receiver.stop().await;
        self.server.stop().await;
    }
}

/// `Authorization: Basic` as RFC 6749 §2.3.1 builds it for client
/// authentication: id and secret form-urlencoded, joined by `:`, base64.
pub fn basic(client_id: &str, secret: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let joined = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(joined)
    )
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/../tests/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{instance:#}");
}

/// `2026-11-28T07:00:00.0000000Z`.
fn is_graph_datetime(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() == 28
        && text.ends_with('Z')
        && bytes[19] == b'.'
        && bytes[20..27].iter().all(u8::is_ascii_digit)
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

/// The schemas must be able to fail, or checking against them proves nothing.
#[test]
fn schemas_reject_misspelt_and_missing_fields() {
    let subscription = schema("graph.Subscription.schema.json");
    let good = json!({
        "resource": "me/messages", "changeType": "created",
        "notificationUrl": "https://x", "expirationDateTime": "2026-01-01T00:00:00.0000000Z"
    });
    assert!(subscription.is_valid(&good));
    let mut typo = good.clone();
    typo["notificationURL"] = json!("https://x");
    assert!(!subscription.is_valid(&typo));

    let notification = schema("graph.ChangeNotificationCollection.schema.json");
    assert!(!notification.is_valid(&json!({"value": [{"subscriptionId": "s"}]})));
    assert!(!notification.is_valid(&json!({"value": [{
        "subscriptionId": "s", "subscriptionExpirationDateTime": "x", "tenantId": "t",
        "lifecycleEvent": "expired"
    }]})));
}

/// Asserts `ours` has every field of the vendor's documented example
/// `vendor`, with the same JSON type, recursively (arrays: their first
/// elements, when both have one). Extra fields in `ours` are allowed.
pub fn assert_same_shape(vendor: &Value, ours: &Value) {
    fn walk(vendor: &Value, ours: &Value, at: &str, errors: &mut Vec<String>) {
        let kind = |v: &Value| match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if kind(vendor) != kind(ours) {
            errors.push(format!(
                "{at}: {} where the vendor has {}",
                kind(ours),
                kind(vendor)
            ));
            return;
        }
        match (vendor, ours) {
            (Value::Object(v), Value::Object(o)) => {
                for (key, value) in v {
                    match o.get(key) {
                        Some(mine) => walk(value, mine, &format!("{at}/{key}"), errors),
                        None => errors.push(format!("{at}/{key} missing")),
                    }
                }
            }
            (Value::Array(v), Value::Array(o)) => {
                if let (Some(v), Some(o)) = (v.first(), o.first()) {
                    walk(v, o, &format!("{at}/0"), errors);
                }
            }
            _ => {}
        }
    }
    let mut errors = Vec::new();
    walk(vendor, ours, "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}\n{ours:#}");
}

#[test]
fn shape_check_can_fail() {
    let vendor = json!({"id": "x", "@removed": {"reason": "deleted"}, "list": [{"a": 1}]});
    assert_same_shape(
        &vendor,
        &json!({"id": "y", "@removed": {"reason": "gone"}, "list": [{"a": 2, "b": 3}], "extra": true}),
    );
    for wrong in [
        json!({"id": 1, "@removed": {"reason": "deleted"}, "list": []}),
        json!({"id": "y", "list": []}),
        json!({"id": "y", "@removed": {}, "list": []}),
        json!({"id": "y", "@removed": {"reason": "d"}, "list": [{"a": "1"}]}),
    ] {
        let result = std::panic::catch_unwind(|| assert_same_shape(&vendor, &wrong));
        assert!(result.is_err(), "{wrong}");
    }
}

impl Harness {
    /// A request to the simulator's control API (`/_sim{path}`).
    pub async fn sim_control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}/_sim{path}", self.server.base_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.unwrap()).await
    }
}
