//! Test harness: a fresh Postgres database and fresh NATS subjects and streams per
//! test, the simulator and subkeeper started through `run_with` on 127.0.0.1:0, an
//! admin API client and a plain NATS client.

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::bus::{StreamLimits, Topology};
use subkeeper::{Config, RunOptions};
use subkeeper_actors::clock::SystemClock;
use subkeeper_simulator::{IdentityProvider, RegisteredApp, SimServer, Simulator, SimulatorConfig};
use tokio::sync::oneshot;

/// Admin token used by every test.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The Pub/Sub push secret every test deployment expects on `/webhooks/gmail`.
pub const GMAIL_PUSH_SECRET: &str = "test-gmail-push-secret-0123456789";

/// The Pub/Sub topic Gmail watches publish to in tests.
pub const GMAIL_TOPIC: &str = "projects/subkeeper-test/topics/gmail";

/// The Graph app registration every test provider connects through; the
/// simulator knows it, so a token request with anything else fails as at
/// Microsoft.
pub const GRAPH_CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// [`GRAPH_CLIENT_ID`]'s secret.
pub const GRAPH_CLIENT_SECRET: &str = "not-a-real-secret";

/// The secret of every Google OAuth client a test provider connects through
/// ([`Harness::create_google_provider`] registers the client with it).
pub const GOOGLE_CLIENT_SECRET: &str = "not-a-real-google-secret";

/// Base URL of the Postgres server tests create databases on.
fn server_url() -> String {
    std::env::var("SUBKEEPER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("subkeeper_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect("Postgres must be running on 127.0.0.1:5432 (see .ci/run)");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        Self {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = format!("{}/postgres", server_url());
        // Drop cannot be async: drop the database from a throwaway runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

/// URL of the NATS server (with JetStream) tests share.
pub fn nats_url() -> String {
    std::env::var("SUBKEEPER_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// One test's subject and stream prefixes on the shared NATS server, so tests run in
/// parallel without seeing each other; its streams are deleted when dropped.
pub struct TestBus {
    pub subject_prefix: String,
    pub stream_prefix: String,
}

impl TestBus {
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self {
            subject_prefix: format!("sktest_{id}"),
            stream_prefix: format!("SKTEST_{}", id.to_uppercase()),
        }
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.subject_prefix, &self.stream_prefix)
    }

    /// Points `config` at this test's subjects and streams.
    pub fn configure(&self, config: &mut Config) {
        config.nats_url = nats_url();
        config.nats_subject_prefix = self.subject_prefix.clone();
        config.nats_stream_prefix = self.stream_prefix.clone();
        // NATS reserves each stream's size limit from its storage up front: keep
        // parallel tests (and any a killed run leaves behind) small.
        config.nats_webhook_stream_max_bytes = 8 << 20;
        config.nats_renewal_stream_max_bytes = 8 << 20;
        config.nats_alert_stream_max_bytes = 2 << 20;
    }

    /// The stream limits tests use.
    pub fn limits(&self) -> StreamLimits {
        let mut config = Config::default();
        self.configure(&mut config);
        StreamLimits::from_config(&config)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let topology = self.topology();
        // Drop cannot be async: delete the streams from a throwaway runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(subkeeper::bus::delete_streams(&nats_url(), &topology));
        })
        .join();
    }
}

/// One message as a JetStream consumer reads it back.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub message_id: Option<String>,
    pub body: Value,
}

/// Every message of `stream` on `filter`, oldest first, read through an ephemeral
/// pull consumer — what a downstream consumer of the stream would see.
pub async fn read_stream(client: &async_nats::Client, stream: &str, filter: &str) -> Vec<Stored> {
    let js = async_nats::jetstream::new(client.clone());
    let consumer = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: filter.to_owned(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer.fetch().max_messages(500).messages().await.unwrap();
        let before = out.len();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            out.push(Stored {
                subject: message.subject.to_string(),
                message_id: message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.to_string()),
                body: serde_json::from_slice(&message.payload).unwrap(),
            });
        }
        if out.len() == before {
            return out;
        }
    }
}

/// subkeeper + simulator + a fresh database + fresh NATS subjects and streams.
pub struct Harness {
    /// Kept so the database is dropped when the harness is.
    _db: TestDb,
    /// This test's NATS subjects and streams (deleted when the harness is dropped).
    pub bus: TestBus,
    /// A plain NATS client, as any other service would use.
    pub nats: async_nats::Client,
    pub sim: Simulator,
    pub sim_server: Option<SimServer>,
    pub base_url: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), subkeeper::RunError>>>,
}

impl Harness {
    /// Starts everything with test-speed retry settings; `tweak` adjusts the config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        crate::logs::capture();
        subkeeper::install_crypto();
        let db = TestDb::create().await;
        let bus = TestBus::new();
        // Google's sync message outruns the events.watch answer: the harder order.
        // Strict about credentials: the Graph app every test provider uses is
        // registered (Google clients are, as providers are created); lenient
        // only about the plain-http 127.0.0.1 the service listens on.
        let sim = Simulator::new(
            SimulatorConfig {
                google_sync_before_answer: true,
                allow_http_loopback: true,
                apps: vec![RegisteredApp {
                    provider: IdentityProvider::Microsoft,
                    client_id: GRAPH_CLIENT_ID.into(),
                    client_secret: GRAPH_CLIENT_SECRET.into(),
                }],
                ..SimulatorConfig::default()
            },
            Arc::new(SystemClock),
        );
        let sim_server = sim
            .start(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config {
            database_url: db.url.clone(),
            database_max_connections: 5,
            public_url: base_url.clone(),
            graph_base_url: sim_server.graph_base_url(),
            login_base_url: sim_server.login_base_url(),
            google_base_url: sim_server.google_base_url(),
            google_token_url: format!("{}/token", sim_server.google_base_url()),
            gmail_pubsub_topic: GMAIL_TOPIC.into(),
            gmail_push_secret: Some(GMAIL_PUSH_SECRET.into()),
            admin_token: Some(ADMIN_TOKEN.into()),
            retry_base_seconds: 1,
            retry_max_seconds: 2,
            error_retry_seconds: 2,
            renewal_jitter_seconds: 60,
            provider_timeout_seconds: 5,
            attempt_timeout_seconds: 15,
            reconcile_interval_seconds: 1,
            ..Config::default()
        };
        bus.configure(&mut config);
        tweak(&mut config);
        config.validate().unwrap();
        // Pub/Sub's push subscription points at our Gmail endpoint with the secret.
        sim.set_gmail_push_endpoint(Some(format!(
            "{base_url}/webhooks/gmail?token={GMAIL_PUSH_SECRET}"
        )));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let done = actix_rt::spawn(subkeeper::run_with(
            Arc::new(config),
            listener,
            async move {
                let _ = stop_rx.await;
            },
            RunOptions::default(),
        ));
        let nats = async_nats::connect(nats_url())
            .await
            .expect("NATS with JetStream must be running on 127.0.0.1:4222 (see .ci/run)");
        let harness = Self {
            pool: db.pool().await,
            _db: db,
            bus,
            nats,
            sim,
            sim_server: Some(sim_server),
            base_url,
            http: reqwest::Client::new(),
            stop: Some(stop_tx),
            done: Some(done),
        };
        wait_until("service ready", Duration::from_secs(20), || async {
            harness
                .http
                .get(format!("{}/readyz", harness.base_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        harness
    }

    /// Stops the service and the simulator.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap().unwrap();
        }
        if let Some(server) = self.sim_server.take() {
            server.stop().await;
        }
    }

    /// An admin API request with the bearer token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `POST /tenants/{tenant}/providers/{id}/renew`: a forced renewal, answered
    /// with its RenewalResult.
    pub async fn force_renewal(&self, tenant: &str, id: &str) -> (StatusCode, Value) {
        self.admin(
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/providers/{id}/renew"),
            None,
        )
        .await
    }

    /// The provider's health after each recorded attempt, oldest first.
    pub async fn statuses_after(&self, provider: &str) -> Vec<String> {
        sqlx::query(
            "SELECT status_after FROM renewal_attempts WHERE provider_id = $1::uuid ORDER BY id",
        )
        .bind(provider)
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, "status_after"))
        .collect()
    }

    /// Creates a Graph mail provider for `tenant` whose app lives in Azure AD tenant
    /// `authority`, watching `users/{mailbox}/messages`; returns its id.
    pub async fn create_provider(&self, tenant: &str, authority: &str, mailbox: &str) -> String {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/tenants/{tenant}/providers"),
                Some(json!({
                    "kind": "graph_mail",
                    "display_name": format!("{mailbox} inbox"),
                    "resource": format!("users/{mailbox}/messages"),
                    "credentials": {
                        "flow": "client_credentials",
                        "authority_tenant": authority,
                        "client_id": GRAPH_CLIENT_ID,
                        "client_secret": GRAPH_CLIENT_SECRET,
                    }
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a Google provider (`google_calendar` watching calendar `resource`,
    /// or `gmail` watching mailbox `resource`) connected through the OAuth client
    /// `client_id` (the simulator's tenant for faults) with `refresh_token`;
    /// returns its id.
    pub async fn create_google_provider(
        &self,
        tenant: &str,
        kind: &str,
        resource: &str,
        client_id: &str,
        refresh_token: &str,
    ) -> String {
        self.sim.register_google_account(refresh_token, resource);
        self.sim.register_app(RegisteredApp {
            provider: IdentityProvider::Google,
            client_id: client_id.into(),
            client_secret: GOOGLE_CLIENT_SECRET.into(),
        });
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/tenants/{tenant}/providers"),
                Some(json!({
                    "kind": kind,
                    "display_name": format!("{resource} ({kind})"),
                    "resource": resource,
                    "credentials": {
                        "flow": "refresh_token",
                        "authority_tenant": "google",
                        "client_id": client_id,
                        "client_secret": GOOGLE_CLIENT_SECRET,
                        "refresh_token": refresh_token,
                    }
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// The provider as the admin API shows it.
    pub async fn provider(&self, tenant: &str, id: &str) -> Value {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("/tenants/{tenant}/providers/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the provider's view satisfies `check`; returns that view.
    pub async fn wait_provider(
        &self,
        tenant: &str,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let view = self.provider(tenant, id).await;
            if check(&view) {
                return view;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last view: {view:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes (then panics).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Harness {
    /// The subject and stream names of this test's service.
    pub fn topology(&self) -> Topology {
        self.bus.topology()
    }

    /// Sends `body` on the control subject as a plain NATS request and returns the
    /// reply as JSON.
    pub async fn control_request(&self, body: &[u8]) -> Value {
        let reply = self
            .nats
            .request(
                self.topology().control_renew_subject(),
                body.to_vec().into(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// Every renewal result in this test's renewal stream.
    pub async fn renewal_stream(&self) -> Vec<Stored> {
        let t = self.topology();
        read_stream(&self.nats, &t.renewal_stream(), &t.renewal_subjects()).await
    }
}

impl Harness {
    /// A store on this test's database, as the service's actors use it.
    pub async fn store(&self) -> subkeeper::store::PgStore {
        subkeeper::store::PgStore::connect(&self._db.url, 2, Arc::new(SystemClock))
            .await
            .unwrap()
    }

    /// The provider's health view (`GET …/providers/{id}/health`).
    pub async fn health(&self, tenant: &str, id: &str) -> Value {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("/tenants/{tenant}/providers/{id}/health"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the durable consumer `durable` of `stream` has been delivered
    /// everything in the stream and has settled it — the actor it feeds has caught
    /// up — and returns its state.
    pub async fn wait_consumer_idle(
        &self,
        stream: &str,
        durable: &str,
    ) -> async_nats::jetstream::consumer::Info {
        let js = async_nats::jetstream::new(self.nats.clone());
        let stream = js.get_stream(stream).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let info = stream.consumer_info(durable).await.unwrap();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return info;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer {durable} never caught up: {info:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every JSON message on a subject, collected in the background from the moment
/// of subscribing, as any other service subscribed to it would see them.
pub struct Inbox {
    seen: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Inbox {
    /// Subscribes to `subject` (wildcards allowed); the server has the
    /// subscription when this returns.
    pub async fn subscribe(nats: &async_nats::Client, subject: String) -> Self {
        let mut sub = nats.subscribe(subject).await.unwrap();
        nats.flush().await.unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                let body = serde_json::from_slice(&message.payload).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&message.payload).into())
                });
                sink.lock()
                    .unwrap()
                    .push((message.subject.to_string(), body));
            }
        });
        Self { seen, task }
    }

    /// Everything received so far, oldest first.
    pub fn all(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) for a message matching `check`; returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.all().into_iter().find(|(_, body)| check(body)) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; received: {:#?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}
