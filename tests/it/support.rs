//! Test harness over the shared test kit (`subkeeper-testkit`): a fresh Postgres
//! database and fresh NATS subjects and streams per test, the simulator and
//! subkeeper started through `run_with` on 127.0.0.1:0 with test-speed settings,
//! the admin API and a plain NATS client, and the waits tests observe through.

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::RunOptions;
use subkeeper::bus::Topology;
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
pub use subkeeper_testkit::admin::GOOGLE_CLIENT_SECRET;
use subkeeper_testkit::admin::{Admin, graph_mail_provider};
pub use subkeeper_testkit::bus::{TestBus, nats_url};
pub use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, SimServer, Simulator, SimulatorConfig};

/// Admin token used by every test.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The Pub/Sub push secret every test deployment expects on `/webhooks/gmail`.
pub const GMAIL_PUSH_SECRET: &str = "test-gmail-push-secret-0123456789";

/// The Pub/Sub topic Gmail watches publish to in tests.
pub const GMAIL_TOPIC: &str = "projects/subkeeper-test/topics/gmail";

/// A fresh database for one test, dropped with it.
pub async fn test_db() -> TestDb {
    TestDb::create(Purpose::Test).await.unwrap()
}

/// Fresh NATS subjects and streams for one test, deleted with it.
pub fn test_bus() -> TestBus {
    TestBus::new(Purpose::Test)
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
    let consumer = subkeeper_testkit::bus::replay(&js, stream, Some(filter))
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
    /// The admin API with the test token.
    api: Admin,
    service: Option<Service>,
}

impl Harness {
    /// Starts everything with test-speed retry settings; `tweak` adjusts the config.
    pub async fn start(tweak: impl FnOnce(&mut subkeeper::Config)) -> Self {
        crate::logs::capture();
        subkeeper::install_crypto();
        let db = test_db().await;
        let bus = test_bus();
        // Google's sync message outruns the events.watch answer: the harder order.
        let (sim, sim_server) = sim::start(
            SimulatorConfig {
                google_sync_before_answer: true,
                ..sim::test_config()
            },
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        let (listener, base_url) = service::bind_local().unwrap();
        let mut config = service::config(&db, &bus, &sim_server, &base_url);
        config.database_max_connections = 5;
        config.gmail_pubsub_topic = GMAIL_TOPIC.into();
        config.gmail_push_secret = Some(GMAIL_PUSH_SECRET.into());
        config.admin_token = Some(ADMIN_TOKEN.into());
        config.retry_base_seconds = 1;
        config.retry_max_seconds = 2;
        config.error_retry_seconds = 2;
        config.renewal_jitter_seconds = 60;
        config.provider_timeout_seconds = 5;
        config.attempt_timeout_seconds = 15;
        config.reconcile_interval_seconds = 1;
        tweak(&mut config);
        config.validate().unwrap();
        // Pub/Sub's push subscription points at our Gmail endpoint with the secret.
        sim.set_gmail_push_endpoint(Some(format!(
            "{base_url}/webhooks/gmail?token={GMAIL_PUSH_SECRET}"
        )));
        let service = Service::spawn(config, listener, base_url.clone(), RunOptions::default());
        let nats = async_nats::connect(nats_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "NATS with JetStream is not reachable at {} ({e}): run scripts/test (or scripts/test-services), which installs and starts it",
                    nats_url()
                )
            });
        let http = reqwest::Client::new();
        service
            .wait_ready(&http, Duration::from_secs(20))
            .await
            .unwrap();
        Self {
            pool: db.pool().await.unwrap(),
            _db: db,
            bus,
            nats,
            sim,
            sim_server: Some(sim_server),
            api: Admin::new(&http, &base_url, ADMIN_TOKEN),
            base_url,
            http,
            service: Some(service),
        }
    }

    /// Stops the service and the simulator.
    pub async fn stop(mut self) {
        match (self.service.take(), self.sim_server.take()) {
            (Some(service), Some(server)) => service.stop_with(server).await.unwrap(),
            (Some(service), None) => service.stop(Duration::from_secs(30)).await.unwrap(),
            (None, Some(server)) => sim::stop(server, Duration::from_secs(10)).await.unwrap(),
            (None, None) => {}
        }
    }

    /// An admin API request with the bearer token.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.api.request(method, path, body).await.unwrap()
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
        self.api
            .create_provider(
                tenant,
                graph_mail_provider(
                    &format!("{mailbox} inbox"),
                    &format!("users/{mailbox}/messages"),
                    authority,
                ),
            )
            .await
            .unwrap()
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
        sim::register_google_client(&self.sim, client_id);
        self.api
            .create_provider(
                tenant,
                json!({
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
                }),
            )
            .await
            .unwrap()
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
    pub async fn store(&self) -> subkeeper::store::Store {
        subkeeper::store::Store::connect(
            &subkeeper::store::Location::Postgres(self._db.url.clone()),
            2,
            Arc::new(SystemClock),
        )
        .await
        .unwrap()
    }

    /// The URL of this test's database.
    pub fn database_url(&self) -> &str {
        &self._db.url
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

    /// Notifications parked in the outbox, not yet relayed to JetStream.
    pub async fn outbox_depth(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_outbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
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
        subkeeper_testkit::bus::wait_consumer_idle(&js, stream, durable, Duration::from_secs(20))
            .await
            .unwrap()
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
