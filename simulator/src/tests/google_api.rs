//! The Google part over real HTTP: token endpoint, Calendar watch/stop with the
//! sync message and `X-Goog-*` notifications, expiry on the sim clock, faults in
//! Google's error shape, Gmail watch/stop and Pub/Sub push. Every watch body sent
//! and every Channel / WatchResponse answered is checked against the Google
//! schemas, and every path against `google.paths.json`.

use super::support::{basic, reply};
use crate::google::model::{CALENDAR_MAX_TTL_SECONDS, DEFAULT_GOOGLE_ACCOUNT};
use crate::{
    DeliveryReport, Fault, FaultOperation, FaultRule, IdentityProvider, Operation, RegisteredApp,
    SimError, SimServer, Simulator, SimulatorConfig,
};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use chrono::TimeDelta;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subkeeper_actors::ports::clock::SystemClock;

const CLIENT_ID: &str = "123456789012-sim.apps.googleusercontent.com";
/// The OAuth client's secret, registered with the simulator.
const CLIENT_SECRET: &str = "s3cret";
const CALENDAR: &str = "alice@example.com";

/// One POST the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Subscriber stand-in: records every POST, answers 200.
struct Receiver {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let data = web::Data::new(Arc::clone(&seen));
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).default_service(web::to(
                |seen: web::Data<Arc<Mutex<Vec<Seen>>>>, req: HttpRequest, body: web::Bytes| async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    seen.lock().unwrap().push(Seen {
                        path: req.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                    });
                    HttpResponse::Ok().finish()
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base_url,
            seen,
            handle,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (wall time, bounded) until `n` POSTs arrived: the sync message is
    /// sent after the watch answer.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        for _ in 0..200 {
            if self.seen().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.seen()
    }
}

struct GoogleHarness {
    sim: Simulator,
    server: SimServer,
    receiver: Receiver,
    http: reqwest::Client,
    channel_schema: jsonschema::Validator,
    watch_request_schema: jsonschema::Validator,
    watch_response_schema: jsonschema::Validator,
    paths: HashMap<String, String>,
}

fn schema(name: &str) -> Value {
    let path = format!("{}/../tests/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&schema(name)).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{instance:#}");
}

impl GoogleHarness {
    async fn start() -> Self {
        Self::with_config(SimulatorConfig {
            allow_http_loopback: true,
            ..SimulatorConfig::default()
        })
        .await
    }

    /// A harness on `config`, with [`CLIENT_ID`] registered.
    async fn with_config(config: SimulatorConfig) -> Self {
        let sim = Simulator::new(config, Arc::new(SystemClock));
        sim.register_app(RegisteredApp {
            provider: IdentityProvider::Google,
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
        });
        let server = sim
            .start(TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let paths: HashMap<String, String> =
            serde_json::from_value(schema("google.paths.json")).unwrap();
        Self {
            sim,
            server,
            receiver: Receiver::start(),
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            channel_schema: validator("google.calendar.Channel.schema.json"),
            watch_request_schema: validator("google.gmail.WatchRequest.schema.json"),
            watch_response_schema: validator("google.gmail.WatchResponse.schema.json"),
            paths,
        }
    }

    fn base(&self) -> String {
        Simulator::google_base_url(&self.server.base_url)
    }

    /// A method's URL from `google.paths.json`, on the simulator: the service
    /// path (`calendar/v3/`) from the root URL, the method path with its
    /// parameters filled in.
    fn url(&self, method: &str, params: &[(&str, &str)]) -> String {
        let (root_key, service_path) = if method.starts_with("calendar.") {
            ("calendar.rootUrl+servicePath", "calendar/v3/")
        } else {
            ("gmail.rootUrl+servicePath", "")
        };
        assert!(self.paths[root_key].ends_with(service_path));
        let mut path = self.paths[method].clone();
        for (name, value) in params {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "{path}");
        format!("{}/{service_path}{path}", self.base())
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> super::support::Reply {
        let response = self
            .http
            .post(format!("{}/token", self.base()))
            .form(form)
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    async fn access_token(&self, refresh_token: &str) -> String {
        let reply = self
            .token_request(&[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", "s3cret"),
                ("refresh_token", refresh_token),
            ])
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["access_token"].as_str().unwrap().to_owned()
    }

    async fn post(&self, url: &str, token: Option<&str>, body: &Value) -> super::support::Reply {
        let mut request = self.http.post(url).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        reply(request.send().await.unwrap()).await
    }

    fn channel_body(&self, id: &str, ttl_seconds: Option<i64>) -> Value {
        let mut body = json!({
            "id": id,
            "type": "web_hook",
            "address": format!("{}/webhooks/google", self.receiver.base_url),
            "token": format!("tok-{id}"),
        });
        if let Some(ttl) = ttl_seconds {
            body["params"] = json!({ "ttl": ttl.to_string() });
        }
        assert_valid(&self.channel_schema, &body);
        body
    }

    async fn watch(&self, token: &str, body: &Value) -> super::support::Reply {
        let url = self.url("calendar.events.watch", &[("calendarId", CALENDAR)]);
        self.post(&url, Some(token), body).await
    }

    async fn watch_ok(&self, token: &str, id: &str, ttl_seconds: Option<i64>) -> Value {
        let reply = self.watch(token, &self.channel_body(id, ttl_seconds)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_valid(&self.channel_schema, &reply.body);
        reply.body
    }

    async fn stop_channel(
        &self,
        token: &str,
        id: &str,
        resource_id: &str,
    ) -> super::support::Reply {
        let body = json!({"id": id, "resourceId": resource_id});
        assert_valid(&self.channel_schema, &body);
        self.post(&self.url("calendar.channels.stop", &[]), Some(token), &body)
            .await
    }

    fn assert_google_error(&self, reply: &super::support::Reply, status: u16, reason: &str) {
        assert_eq!(reply.status, status, "{:?}", reply.body);
        let error = &reply.body["error"];
        assert_eq!(error["code"], status);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error["status"].as_str().is_some());
        assert_eq!(error["errors"][0]["reason"], reason, "{:?}", reply.body);
        assert!(error["errors"][0]["domain"].as_str().is_some());
        assert!(error["errors"][0]["message"].as_str().is_some());
    }

    async fn stop(self) {
        self.receiver.handle.stop(false).await;
        self.server.stop().await;
    }
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(&name.to_ascii_lowercase())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {name} in {:?}", seen.headers))
}

#[actix_web::test]
async fn token_endpoint_issues_bearer_tokens_and_answers_invalid_grant() {
    let h = GoogleHarness::start().await;
    let ok = h
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", "s3cret"),
            ("refresh_token", "1//refresh"),
        ])
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["expires_in"], 3599);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert!(ok.body["scope"].as_str().is_some());
    assert!(
        ok.body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ya29.")
    );

    let missing = h
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], "invalid_request");

    h.sim
        .inject_fault(FaultRule::new(FaultOperation::Token, Fault::InvalidGrant).times(1));
    let revoked = h
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", "s3cret"),
            ("refresh_token", "1//refresh"),
        ])
        .await;
    assert_eq!(revoked.status, 400);
    assert_eq!(
        revoked.body,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );

    h.sim.revoke_google_refresh_token("1//gone");
    let gone = h
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", "s3cret"),
            ("refresh_token", "1//gone"),
        ])
        .await;
    assert_eq!(gone.body["error"], "invalid_grant");

    let tokens: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::Token)
        .collect();
    assert_eq!(
        tokens.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 400, 400, 400]
    );
    assert_eq!(tokens[0].path, "/token");
    assert_eq!(tokens[0].tenant.as_deref(), Some(CLIENT_ID));
    assert_eq!(
        tokens[0].body.as_ref().unwrap()["refresh_token"],
        "<redacted>"
    );
    h.stop().await;
}

#[actix_web::test]
async fn watch_answers_a_channel_and_sends_the_sync_message() {
    let h = GoogleHarness::start().await;
    let token = h.access_token("1//refresh").await;
    let before = h.sim.now();
    let channel = h.watch_ok(&token, "chan-1", Some(3600)).await;
    assert_eq!(channel["kind"], "api#channel");
    assert_eq!(channel["id"], "chan-1");
    assert_eq!(channel["token"], "tok-chan-1");
    assert!(
        channel["resourceUri"]
            .as_str()
            .unwrap()
            .contains("/calendar/v3/calendars/")
    );
    let expiration: i64 = channel["expiration"].as_str().unwrap().parse().unwrap();
    let expected = (before + TimeDelta::seconds(3600)).timestamp_millis();
    assert!(
        (expiration - expected).abs() < 5_000,
        "{expiration} vs {expected}"
    );

    let seen = h.receiver.wait_for(1).await;
    assert_eq!(seen.len(), 1);
    let sync = &seen[0];
    assert_eq!(sync.path, "/webhooks/google");
    assert!(sync.body.is_empty());
    assert_eq!(header(sync, "X-Goog-Channel-ID"), "chan-1");
    assert_eq!(header(sync, "X-Goog-Channel-Token"), "tok-chan-1");
    assert_eq!(header(sync, "X-Goog-Resource-ID"), channel["resourceId"]);
    assert_eq!(header(sync, "X-Goog-Resource-URI"), channel["resourceUri"]);
    assert_eq!(header(sync, "X-Goog-Resource-State"), "sync");
    assert_eq!(header(sync, "X-Goog-Message-Number"), "1");
    assert!(header(sync, "X-Goog-Channel-Expiration").ends_with(" GMT"));

    // Same calendar, same resourceId; the channel id must be unique.
    let second = h.watch_ok(&token, "chan-2", None).await;
    assert_eq!(second["resourceId"], channel["resourceId"]);
    let default_expiry: i64 = second["expiration"].as_str().unwrap().parse().unwrap();
    let week = (h.sim.now() + TimeDelta::days(7)).timestamp_millis();
    assert!((default_expiry - week).abs() < 5_000);
    let duplicate = h.watch(&token, &h.channel_body("chan-1", None)).await;
    h.assert_google_error(&duplicate, 400, "channelIdNotUnique");

    // A ttl beyond the cap is capped, not rejected.
    let long = h.watch_ok(&token, "chan-3", Some(90 * 86_400)).await;
    let capped: i64 = long["expiration"].as_str().unwrap().parse().unwrap();
    let cap = (h.sim.now() + TimeDelta::seconds(CALENDAR_MAX_TTL_SECONDS)).timestamp_millis();
    assert!((capped - cap).abs() < 5_000);

    let creates: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::Create)
        .collect();
    assert_eq!(
        creates[0].path,
        format!("/calendar/v3/calendars/{CALENDAR}/events/watch")
    );
    assert_eq!(creates[0].resource.as_deref(), Some(CALENDAR));
    assert_eq!(creates[0].subscription_id.as_deref(), Some("chan-1"));
    assert_eq!(creates[0].tenant.as_deref(), Some(CLIENT_ID));
    h.stop().await;
}

#[actix_web::test]
async fn watch_rejects_bad_bodies_and_bad_tokens() {
    let h = GoogleHarness::with_config(SimulatorConfig {
        allow_http_loopback: false,
        ..SimulatorConfig::default()
    })
    .await;
    let token = h.access_token("1//refresh").await;
    let no_auth = h.watch("", &h.channel_body("c", None)).await;
    h.assert_google_error(&no_auth, 401, "authError");
    assert!(no_auth.header("www-authenticate").is_some());
    let http_address = h.watch(&token, &h.channel_body("c", None)).await;
    h.assert_google_error(&http_address, 400, "push.webhookUrlNotHttps");
    let unknown_field = h
        .watch(
            &token,
            &json!({"id": "c", "type": "web_hook", "address": "https://x/y", "ttl": "60"}),
        )
        .await;
    h.assert_google_error(&unknown_field, 400, "invalid");
    let bad_type = h
        .watch(
            &token,
            &json!({"id": "c", "type": "email", "address": "https://x/y"}),
        )
        .await;
    h.assert_google_error(&bad_type, 400, "invalid");
    assert!(h.sim.google_channels().is_empty());

    // Access tokens expire on the sim clock.
    h.sim.advance(TimeDelta::seconds(3600));
    let expired = h
        .watch(
            &token,
            &json!({"id": "c", "type": "web_hook", "address": "https://x/y"}),
        )
        .await;
    h.assert_google_error(&expired, 401, "authError");
    h.stop().await;
}

#[actix_web::test]
async fn notifications_stop_after_stop_and_after_expiry() {
    let h = GoogleHarness::start().await;
    let token = h.access_token("1//refresh").await;
    let one = h.watch_ok(&token, "chan-a", Some(3600)).await;
    let two = h.watch_ok(&token, "chan-b", Some(86_400)).await;
    h.receiver.wait_for(2).await;

    let report: DeliveryReport = h.sim.google_notify("chan-a", 2).await.unwrap();
    assert!(report.all_accepted());
    assert_eq!(report.attempts.len(), 2);
    let next = h.sim.google_notify("chan-a", 1).await.unwrap();
    let seen = h.receiver.seen();
    let exists: Vec<&Seen> = seen
        .iter()
        .filter(|s| header(s, "X-Goog-Resource-State") == "exists")
        .collect();
    let numbers: Vec<&str> = exists
        .iter()
        .map(|s| header(s, "X-Goog-Message-Number"))
        .collect();
    assert_eq!(numbers, ["2", "2", "3"], "redeliveries repeat the number");
    assert!(
        exists
            .iter()
            .all(|s| header(s, "X-Goog-Channel-ID") == "chan-a")
    );
    assert!(
        next.headers
            .iter()
            .any(|(k, v)| k == "X-Goog-Message-Number" && v == "3")
    );

    // Stop: unknown or wrong resourceId is 404, the right pair 204, then 404.
    let wrong = h.stop_channel(&token, "chan-a", "not-the-resource").await;
    h.assert_google_error(&wrong, 404, "notFound");
    let stopped = h
        .stop_channel(&token, "chan-a", one["resourceId"].as_str().unwrap())
        .await;
    assert_eq!(stopped.status, 204);
    let again = h
        .stop_channel(&token, "chan-a", one["resourceId"].as_str().unwrap())
        .await;
    h.assert_google_error(&again, 404, "notFound");
    assert!(matches!(
        h.sim.google_notify("chan-a", 1).await,
        Err(SimError::ChannelNotFound { .. })
    ));
    let live: Vec<String> = h.sim.google_channels().into_iter().map(|c| c.id).collect();
    assert_eq!(live, ["chan-b"]);

    // Expiry on the sim clock.
    h.sim.advance(TimeDelta::seconds(86_400));
    assert!(h.sim.google_channels().is_empty());
    assert!(h.sim.google_notify("chan-b", 1).await.is_err());
    let token = h.access_token("1//refresh").await;
    let late = h
        .stop_channel(&token, "chan-b", two["resourceId"].as_str().unwrap())
        .await;
    assert_eq!(late.status, 404);
    let history = h.sim.google_channel_history();
    assert_eq!(history.len(), 2);
    assert!(history[0].stopped && !history[1].stopped);

    // Journal order: the creates, then the stops, with channel ids.
    let order: Vec<(Operation, Option<String>, u16)> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation != Operation::Token)
        .map(|r| (r.operation, r.subscription_id, r.status))
        .collect();
    assert_eq!(
        order,
        [
            (Operation::Create, Some("chan-a".into()), 200),
            (Operation::Create, Some("chan-b".into()), 200),
            (Operation::Delete, Some("chan-a".into()), 404),
            (Operation::Delete, Some("chan-a".into()), 204),
            (Operation::Delete, Some("chan-a".into()), 404),
            (Operation::Delete, Some("chan-b".into()), 404),
        ]
    );
    h.stop().await;
}

#[actix_web::test]
async fn faults_render_google_errors() {
    let h = GoogleHarness::start().await;
    let token = h.access_token("1//refresh").await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 403,
                code: "rateLimitExceeded".into(),
                retry_after_seconds: Some(5),
            },
        )
        .for_resource(CALENDAR)
        .times(1),
    );
    let throttled = h.watch(&token, &h.channel_body("c1", None)).await;
    h.assert_google_error(&throttled, 403, "rateLimitExceeded");
    assert_eq!(
        throttled.body["error"]["errors"][0]["domain"],
        "usageLimits"
    );
    assert_eq!(throttled.header("retry-after"), Some("5"));

    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Create,
            Fault::Status {
                status: 429,
                code: "rateLimitExceeded".into(),
                retry_after_seconds: None,
            },
        )
        .times(1),
    );
    let too_many = h.watch(&token, &h.channel_body("c1", None)).await;
    h.assert_google_error(&too_many, 429, "rateLimitExceeded");
    assert_eq!(too_many.body["error"]["status"], "RESOURCE_EXHAUSTED");

    h.sim
        .inject_fault(FaultRule::new(FaultOperation::Any, Fault::ExpiredToken).times(1));
    let expired = h.watch(&token, &h.channel_body("c1", None)).await;
    h.assert_google_error(&expired, 401, "authError");

    // A client-scoped 503 on stop.
    let created = h.watch_ok(&token, "c1", None).await;
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Delete,
            Fault::Status {
                status: 503,
                code: "backendError".into(),
                retry_after_seconds: None,
            },
        )
        .for_tenant(CLIENT_ID)
        .for_subscription("c1")
        .times(1),
    );
    let down = h
        .stop_channel(&token, "c1", created["resourceId"].as_str().unwrap())
        .await;
    h.assert_google_error(&down, 503, "backendError");
    assert_eq!(down.body["error"]["status"], "UNAVAILABLE");
    assert_eq!(
        h.sim.google_channels().len(),
        1,
        "a failed stop leaves it live"
    );
    h.stop().await;
}

#[actix_web::test]
async fn held_faults_answer_504_and_of_the_google_creates_only_events_watch_commits_first() {
    let h = GoogleHarness::start().await;
    let token = h.access_token("1//refresh").await;

    // A hung events.watch: journaled as 504, then a 504, and no channel.
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::Timeout { seconds: 0 }).times(1),
    );
    let timed_out = h.watch(&token, &h.channel_body("c1", None)).await;
    h.assert_google_error(&timed_out, 504, "backendError");
    assert!(timed_out.header("www-authenticate").is_none());
    assert!(h.sim.google_channels().is_empty());
    let last = h.sim.requests().pop().unwrap();
    assert_eq!((last.operation, last.status), (Operation::Create, 504));
    assert_eq!(last.tenant.as_deref(), Some(CLIENT_ID));
    assert_eq!(last.subscription_id.as_deref(), Some("c1"));

    // A lost events.watch answer: the same 504, but the channel exists.
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::LostAnswer { seconds: 0 }).times(1),
    );
    let lost = h.watch(&token, &h.channel_body("c2", None)).await;
    h.assert_google_error(&lost, 504, "backendError");
    let live: Vec<String> = h.sim.google_channels().into_iter().map(|c| c.id).collect();
    assert_eq!(live, ["c2"]);
    assert_eq!(h.sim.requests().pop().unwrap().status, 504);

    // Gmail's users.watch does not commit before losing its answer.
    h.sim.inject_fault(
        FaultRule::new(FaultOperation::Create, Fault::LostAnswer { seconds: 0 }).times(1),
    );
    let watch_url = h.url("gmail.users.watch", &[("userId", "me")]);
    let body = json!({"topicName": "projects/subkeeper/topics/gmail"});
    let lost = h.post(&watch_url, Some(&token), &body).await;
    h.assert_google_error(&lost, 504, "backendError");
    assert!(h.sim.gmail_watches().is_empty());
    h.stop().await;
}

#[actix_web::test]
async fn gmail_watch_push_and_stop() {
    let h = GoogleHarness::start().await;
    h.sim.register_google_account("1//bob", "bob@example.com");
    let token = h.access_token("1//bob").await;
    let watch_url = h.url("gmail.users.watch", &[("userId", "me")]);
    let body = json!({
        "topicName": "projects/subkeeper/topics/gmail",
        "labelIds": ["INBOX"],
        "labelFilterBehavior": "include",
    });
    assert_valid(&h.watch_request_schema, &body);
    let before = h.sim.now();
    let watched = h.post(&watch_url, Some(&token), &body).await;
    assert_eq!(watched.status, 200, "{:?}", watched.body);
    assert_valid(&h.watch_response_schema, &watched.body);
    let expiration: i64 = watched.body["expiration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((expiration - (before + TimeDelta::days(7)).timestamp_millis()).abs() < 5_000);
    let first_history: u64 = watched.body["historyId"].as_str().unwrap().parse().unwrap();
    let watches = h.sim.gmail_watches();
    assert_eq!(watches.len(), 1);
    assert_eq!(watches[0].email, "bob@example.com");
    assert_eq!(watches[0].label_ids, ["INBOX"]);

    let bad_topic = h
        .post(
            &watch_url,
            Some(&token),
            &json!({"topicName": "gmail-topic"}),
        )
        .await;
    h.assert_google_error(&bad_topic, 400, "invalidArgument");

    // No endpoint yet; then one set through the control API.
    assert_eq!(
        h.sim.gmail_push("bob@example.com").await.unwrap_err(),
        SimError::NoPushEndpoint
    );
    let endpoint = format!("{}/webhooks/gmail?token=deploy-secret", h.receiver.base_url);
    let set = h
        .post(
            &format!("{}/_sim/google/push-endpoint", h.server.base_url),
            None,
            &json!({ "endpoint": endpoint }),
        )
        .await;
    assert_eq!(set.status, 200);
    let report = h.sim.gmail_push("bob@example.com").await.unwrap();
    assert!(report.all_accepted());
    let seen = h.receiver.seen();
    let push = seen.last().unwrap();
    assert_eq!(push.path, "/webhooks/gmail");
    let envelope: Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(
        envelope["subscription"],
        "projects/sim/subscriptions/gmail-push"
    );
    let message = &envelope["message"];
    assert_eq!(message["messageId"], message["message_id"]);
    assert_eq!(message["publishTime"], message["publish_time"]);
    assert!(chrono::DateTime::parse_from_rfc3339(message["publishTime"].as_str().unwrap()).is_ok());
    let data = base64::engine::general_purpose::STANDARD
        .decode(message["data"].as_str().unwrap())
        .unwrap();
    let data: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(data["emailAddress"], "bob@example.com");
    assert!(data["historyId"].as_u64().unwrap() > first_history);

    // Stop, then no push; an unregistered token's `me` is the default account.
    let stop = h
        .post(
            &h.url("gmail.users.stop", &[("userId", "me")]),
            Some(&token),
            &json!({}),
        )
        .await;
    assert_eq!(stop.status, 204);
    assert!(matches!(
        h.sim.gmail_push("bob@example.com").await,
        Err(SimError::WatchNotFound { .. })
    ));
    let other = h.access_token("1//someone").await;
    let watched = h.post(&watch_url, Some(&other), &body).await;
    assert_eq!(watched.status, 200);
    assert_eq!(h.sim.gmail_watches()[0].email, DEFAULT_GOOGLE_ACCOUNT);

    // Watches lapse after 7 days on the sim clock.
    h.sim.advance(TimeDelta::days(7));
    assert!(h.sim.gmail_watches().is_empty());
    assert!(h.sim.gmail_push(DEFAULT_GOOGLE_ACCOUNT).await.is_err());

    let journal: Vec<(Operation, Option<String>, u16)> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/gmail/v1/users/"))
        .map(|r| (r.operation, r.resource, r.status))
        .collect();
    assert_eq!(
        journal,
        [
            (Operation::Create, Some("bob@example.com".into()), 200),
            (Operation::Create, Some("bob@example.com".into()), 400),
            (Operation::Delete, Some("bob@example.com".into()), 204),
            (Operation::Create, Some(DEFAULT_GOOGLE_ACCOUNT.into()), 200),
        ]
    );
    h.stop().await;
}

#[actix_web::test]
async fn control_api_notifies_and_lists_channels() {
    let h = GoogleHarness::start().await;
    let token = h
        .sim
        .issue_google_access_token(CLIENT_ID, "carol@example.com");
    h.watch_ok(&token, "chan-x", None).await;
    h.receiver.wait_for(1).await;
    let control = |path: &str| format!("{}/_sim/google/{path}", h.server.base_url);
    let listed = reply(h.http.get(control("channels")).send().await.unwrap()).await;
    assert_eq!(listed.body[0]["id"], "chan-x");
    assert_eq!(listed.body[0]["calendar_id"], CALENDAR);
    let notified = h
        .post(
            &control("notify"),
            None,
            &json!({"channel_id": "chan-x", "times": 2}),
        )
        .await;
    assert_eq!(notified.status, 200);
    let report: DeliveryReport = serde_json::from_value(notified.body).unwrap();
    assert_eq!(report.attempts.len(), 2);
    let missing = h
        .post(&control("notify"), None, &json!({"channel_id": "nope"}))
        .await;
    assert_eq!(missing.status, 404);
    h.stop().await;
}

#[actix_web::test]
async fn rotation_shows_in_the_journal_and_leaves_one_live_channel() {
    let h = GoogleHarness::start().await;
    let token = h.access_token("1//refresh").await;
    // A client that percent-encodes the calendar id reaches the same calendar.
    let encoded = h.url(
        "calendar.events.watch",
        &[("calendarId", "alice%40example.com")],
    );
    let old = h
        .post(&encoded, Some(&token), &h.channel_body("old", None))
        .await;
    assert_eq!(old.status, 200, "{:?}", old.body);
    assert_valid(&h.channel_schema, &old.body);
    assert_eq!(h.sim.google_channels()[0].calendar_id, CALENDAR);

    // Rotate: the new channel first, then stop the old one.
    h.sim.advance(TimeDelta::days(6));
    let token = h.access_token("1//refresh").await;
    let new = h.watch_ok(&token, "new", None).await;
    assert_eq!(new["resourceId"], old.body["resourceId"]);
    let stopped = h
        .stop_channel(&token, "old", old.body["resourceId"].as_str().unwrap())
        .await;
    assert_eq!(stopped.status, 204);

    let calendar_calls: Vec<(Operation, Option<String>)> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.resource.as_deref() == Some(CALENDAR))
        .map(|r| (r.operation, r.subscription_id))
        .collect();
    assert_eq!(
        calendar_calls,
        [
            (Operation::Create, Some("old".into())),
            (Operation::Create, Some("new".into())),
            (Operation::Delete, Some("old".into())),
        ]
    );
    let live: Vec<String> = h.sim.google_channels().into_iter().map(|c| c.id).collect();
    assert_eq!(live, ["new"]);
    h.stop().await;
}

/// The Google schemas must be able to fail, or checking against them proves
/// nothing.
#[test]
fn google_schemas_reject_misspelt_fields_and_numbers_for_int64() {
    let channel = validator("google.calendar.Channel.schema.json");
    assert!(channel.is_valid(&json!({"id": "c", "type": "web_hook", "address": "https://x"})));
    assert!(!channel.is_valid(&json!({"id": "c", "channelType": "web_hook"})));
    assert!(!channel.is_valid(&json!({"id": "c", "expiration": 1_700_000_000_000_i64})));
    assert!(!channel.is_valid(&json!({"params": {"ttl": 3600}})));
    let request = validator("google.gmail.WatchRequest.schema.json");
    assert!(!request.is_valid(&json!({"topic": "projects/p/topics/t"})));
    assert!(
        !request.is_valid(
            &json!({"topicName": "projects/p/topics/t", "labelFilterBehavior": "INCLUDE"})
        )
    );
    let response = validator("google.gmail.WatchResponse.schema.json");
    assert!(!response.is_valid(&json!({"historyId": 1, "expiration": "1"})));
}

#[actix_web::test]
async fn token_endpoint_refuses_unknown_clients_and_wrong_secrets_like_google() {
    let h = GoogleHarness::start().await;
    let refresh = |client_id: &'static str, secret: &'static str| {
        let h = &h;
        async move {
            h.token_request(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("refresh_token", "1//refresh"),
            ])
            .await
        }
    };
    let unknown = refresh("999-unknown.apps.googleusercontent.com", CLIENT_SECRET).await;
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.body,
        json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})
    );
    let wrong = refresh(CLIENT_ID, "not-the-secret").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.body,
        json!({"error": "invalid_client", "error_description": "Unauthorized"})
    );
    h.stop().await;

    // Told to accept anything, the same unknown client gets a token.
    let lenient = GoogleHarness::with_config(SimulatorConfig {
        accept_any_credentials: true,
        allow_http_loopback: true,
        ..SimulatorConfig::default()
    })
    .await;
    let anyone = lenient
        .token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", "999-unknown.apps.googleusercontent.com"),
            ("client_secret", "whatever"),
            ("refresh_token", "1//refresh"),
        ])
        .await;
    assert_eq!(anyone.status, 200, "{:?}", anyone.body);
    lenient.stop().await;
}

#[actix_web::test]
async fn token_endpoint_takes_basic_client_authentication_and_refuses_two_that_disagree() {
    let h = GoogleHarness::start().await;
    let post = |authorization: String, form: Vec<(&'static str, &'static str)>| {
        let http = h.http.clone();
        let url = format!("{}/token", h.base());
        async move {
            reply(
                http.post(url)
                    .header("authorization", authorization)
                    .form(&form)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let grant = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", "1//refresh"),
    ];
    let granted = post(basic(CLIENT_ID, CLIENT_SECRET), grant.clone()).await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    // The token works on Calendar.
    let token = granted.body["access_token"].as_str().unwrap();
    h.watch_ok(token, "basic-chan", None).await;

    let mut disagreeing = grant.clone();
    disagreeing.push(("client_secret", "another"));
    let conflict = post(basic(CLIENT_ID, CLIENT_SECRET), disagreeing).await;
    assert_eq!(conflict.status, 400);
    assert_eq!(conflict.body["error"], "invalid_request");

    let wrong = post(basic(CLIENT_ID, "nope"), grant).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["error"], "invalid_client");
    h.stop().await;
}

#[actix_web::test]
async fn plain_http_channel_addresses_off_loopback_are_refused_even_when_loopback_is_allowed() {
    let h = GoogleHarness::start().await;
    let token = h.access_token("1//refresh").await;
    let mut elsewhere = h.channel_body("c-far", None);
    elsewhere["address"] = json!("http://hooks.example.com/webhooks/google");
    let refused = h.watch(&token, &elsewhere).await;
    h.assert_google_error(&refused, 400, "push.webhookUrlNotHttps");
    assert!(h.sim.google_channels().is_empty());
    // The loopback receiver is accepted.
    h.watch_ok(&token, "c-near", None).await;
    h.stop().await;
}
