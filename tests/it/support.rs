//! Test harness over the shared test kit (`subkeeper-testkit`): a fresh store and
//! bus per test — an embedded SQLite file with the in-process bus, or a Postgres
//! database with NATS subjects and streams (`Backend`) — the simulator and
//! subkeeper started through `run_with` on 127.0.0.1:0 with test-speed settings,
//! the admin API, and the waits and reads tests observe through, the same on
//! both backends: a stream's messages, a consumer's backlog, a subject's live
//! messages ([`Inbox`]), SQL both databases accept ([`on_test_db!`]).
//!
//! A scenario is one `async fn name(backend: Backend)`; `on_both_backends!(name)`
//! makes it two tests, `name::embedded` and `name::postgres_nats`.

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use subkeeper::RunOptions;
use subkeeper::bus::{Topology, subject_matches};
use subkeeper::store::Store;
use subkeeper_actors::ports::StreamLog as _;
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
pub use subkeeper_testkit::admin::GOOGLE_CLIENT_SECRET;
use subkeeper_testkit::admin::{Admin, graph_mail_provider};
pub use subkeeper_testkit::backend::{Backend, TestBackend};
pub use subkeeper_testkit::bus::{TestBus, nats_url};
pub use subkeeper_testkit::db::TestDb;
use subkeeper_testkit::service::{self, Service};
use subkeeper_testkit::sim::{self, SimServer, Simulator, SimulatorConfig};
use subkeeper_testkit::streams::Streams;

/// Makes each named `async fn name(backend: Backend)` two tests, one per backend:
/// `name::embedded` (SQLite + the in-process bus) and `name::postgres_nats`
/// (Postgres + NATS with JetStream). One body, both backends.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn embedded() {
                super::$name($crate::support::Backend::Embedded).await
            }

            #[actix_web::test]
            async fn postgres_nats() {
                super::$name($crate::support::Backend::PostgresNats).await
            }
        }
    )+};
}
pub(crate) use on_both_backends;

/// Runs `$body` with `$pool` bound to the harness's database pool, whichever
/// database the test runs on: the SQL must be what both Postgres and SQLite
/// accept (no `::` casts; bind typed values — a `uuid::Uuid`, not its text).
macro_rules! on_test_db {
    ($h:expr, $pool:ident => $body:expr) => {
        match $h.store().db() {
            subkeeper::store::Db::Postgres($pool) => $body,
            subkeeper::store::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_test_db;

/// Admin token used by every test (unless a test has the embedded service
/// generate one).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The Pub/Sub push secret every test deployment expects on `/webhooks/gmail`.
pub const GMAIL_PUSH_SECRET: &str = "test-gmail-push-secret-0123456789";

/// The Pub/Sub topic Gmail watches publish to in tests.
pub const GMAIL_TOPIC: &str = "projects/subkeeper-test/topics/gmail";

/// Panics with `e` as it is: one line that names what is missing.
fn fail(e: impl std::fmt::Display) -> ! {
    panic!("{e}")
}

/// Fresh NATS subjects and streams for one test, deleted with it.
pub fn test_bus() -> TestBus {
    TestBus::new(Purpose::Test)
}

/// A fresh store and bus of `backend` for one test, removed with it.
pub async fn test_backend(backend: Backend) -> TestBackend {
    TestBackend::create(backend, Purpose::Test)
        .await
        .unwrap_or_else(|e| fail(e))
}

/// A client of the shared NATS server (one line naming the script if it is down).
pub async fn nats_client() -> async_nats::Client {
    subkeeper_testkit::bus::reachable_nats()
        .await
        .unwrap_or_else(|e| fail(e))
}

/// One message as a reader of the stream sees it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub message_id: Option<String>,
    pub body: Value,
}

impl From<subkeeper_testkit::streams::StoredMessage> for Stored {
    fn from(m: subkeeper_testkit::streams::StoredMessage) -> Self {
        Self {
            body: serde_json::from_slice(&m.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&m.payload).into_owned())
            }),
            subject: m.subject,
            message_id: m.message_id,
        }
    }
}

/// Every message of `stream` on `filter` in a JetStream reached through `client`
/// (a test's own NATS server), oldest first.
pub async fn read_nats_stream(
    client: &async_nats::Client,
    stream: &str,
    filter: &str,
) -> Vec<Stored> {
    Streams::Nats(async_nats::jetstream::new(client.clone()))
        .read(stream, filter)
        .await
        .unwrap()
        .into_iter()
        .map(Stored::from)
        .collect()
}

/// subkeeper + simulator + a fresh store and bus of one backend.
pub struct Harness {
    /// The store and bus (removed when the harness is dropped).
    pub backend: TestBackend,
    /// A store on the service's database, for port calls and SQL.
    store: Store,
    /// The service's streams, read back.
    streams: Streams,
    /// A plain NATS client, as any other service would use (Postgres + NATS only).
    nats: Option<async_nats::Client>,
    pub sim: Simulator,
    pub sim_server: Option<SimServer>,
    pub base_url: String,
    pub http: reqwest::Client,
    /// The admin API with the service's token.
    api: Admin,
    service: Option<Service>,
    /// The service's configuration, to start it again after a stop.
    config: subkeeper::Config,
    /// The service reads the simulator's clock (advanced with `sim.advance`).
    on_sim_clock: bool,
}

impl Harness {
    /// Starts everything on `backend` with test-speed retry settings; `tweak`
    /// adjusts the config. A config without an admin token (on the embedded
    /// backend) has the service generate one, which the harness then uses.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut subkeeper::Config)) -> Self {
        Self::start_with(backend, false, tweak).await
    }

    /// [`Harness::start`], the service reading the simulator's clock, so that
    /// `sim.advance` moves both (hours of provider time pass in a call).
    pub async fn start_on_sim_clock(
        backend: Backend,
        tweak: impl FnOnce(&mut subkeeper::Config),
    ) -> Self {
        Self::start_with(backend, true, tweak).await
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            clock: self
                .on_sim_clock
                .then(|| self.sim.clock() as subkeeper_actors::ports::clock::SharedClock),
            ..RunOptions::default()
        }
    }

    /// Stops the service (gracefully), leaving the simulator running.
    pub async fn stop_service(&mut self) {
        if let Some(service) = self.service.take() {
            service.stop(Duration::from_secs(30)).await.unwrap();
        }
    }

    /// Starts the service again on the same address, store and bus.
    pub async fn start_service(&mut self) {
        let addr = self
            .base_url
            .trim_start_matches("http://")
            .parse::<std::net::SocketAddr>()
            .unwrap();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let service = Service::spawn(
            self.config.clone(),
            listener,
            self.base_url.clone(),
            self.options(),
        );
        service
            .wait_ready(&self.http, Duration::from_secs(20))
            .await
            .unwrap();
        self.service = Some(service);
    }

    async fn start_with(
        backend: Backend,
        on_sim_clock: bool,
        tweak: impl FnOnce(&mut subkeeper::Config),
    ) -> Self {
        crate::logs::capture();
        subkeeper::install_crypto();
        let backend = test_backend(backend).await;
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
        let mut config = service::config_on(&backend, &sim_server, &base_url);
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
        let token = config.admin_token.clone();
        // Pub/Sub's push subscription points at our Gmail endpoint with the secret.
        sim.set_gmail_push_endpoint(Some(format!(
            "{base_url}/webhooks/gmail?token={GMAIL_PUSH_SECRET}"
        )));
        let options = RunOptions {
            clock: on_sim_clock.then(|| sim.clock() as subkeeper_actors::ports::clock::SharedClock),
            ..RunOptions::default()
        };
        let service = Service::spawn(config.clone(), listener, base_url.clone(), options);
        let nats = match backend.bus.is_nats() {
            true => Some(nats_client().await),
            false => None,
        };
        let http = reqwest::Client::new();
        service
            .wait_ready(&http, Duration::from_secs(20))
            .await
            .unwrap();
        // The service runs on the backend asked for, or the test proves nothing.
        let ready: Value = http
            .get(format!("{base_url}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want = match backend.backend {
            Backend::Embedded => "in_process",
            Backend::PostgresNats => "connected",
        };
        assert_eq!(ready["nats"], want, "{ready:#}");
        let store = backend.store().await.unwrap();
        assert_eq!(
            store.is_shared(),
            backend.backend == Backend::PostgresNats,
            "the test's store is not the service's"
        );
        let streams = match &nats {
            Some(client) => Streams::Nats(async_nats::jetstream::new(client.clone())),
            None => Streams::Local(store.clone()),
        };
        let token = token.unwrap_or_else(|| {
            let dir = backend
                .data_dir()
                .expect("only an embedded service generates a token");
            std::fs::read_to_string(dir.join("admin-token"))
                .unwrap()
                .trim()
                .to_owned()
        });
        Self {
            store,
            streams,
            backend,
            nats,
            sim,
            sim_server: Some(sim_server),
            api: Admin::new(&http, &base_url, &token),
            base_url,
            http,
            service: Some(service),
            config,
            on_sim_clock,
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

    /// This test's subjects and streams.
    pub fn bus(&self) -> &TestBus {
        &self.backend.bus
    }

    /// The plain NATS client of a test that runs on Postgres + NATS only.
    pub fn nats(&self) -> &async_nats::Client {
        self.nats
            .as_ref()
            .expect("this test talks NATS: start it on Backend::PostgresNats")
    }

    /// The admin token the service takes.
    pub fn admin_token(&self) -> &str {
        &self.api.token
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

    /// Waits until `n` change cursors are taken: each registration is followed
    /// by a catch-up whose first delta read takes the cursor, after the
    /// subscription is already healthy. A test that counts the simulator's
    /// requests settles this first, or that read lands inside its count.
    pub async fn wait_change_cursors(&self, n: usize) {
        wait_until("change cursors taken", Duration::from_secs(30), || async {
            self.sim
                .requests()
                .iter()
                .filter(|r| r.operation == sim::Operation::ChangeFeed && r.status == 200)
                .count()
                >= n
        })
        .await;
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
        subkeeper_testkit::metrics::scrape(&self.http, &self.base_url)
            .await
            .unwrap()
    }
}

pub use subkeeper_testkit::wait_until;

/// The bus as a test observes it, the same on both backends.
impl Harness {
    /// The subject and stream names of this test's service.
    pub fn topology(&self) -> Topology {
        self.bus().topology()
    }

    /// Every message of `stream` whose subject matches `filter`, oldest first —
    /// what a downstream reader of the stream would see.
    pub async fn read_stream(&self, stream: &str, filter: &str) -> Vec<Stored> {
        self.streams
            .read(stream, filter)
            .await
            .unwrap()
            .into_iter()
            .map(Stored::from)
            .collect()
    }

    /// Every accepted notification in the webhook stream.
    pub async fn webhook_stream(&self) -> Vec<Stored> {
        let t = self.topology();
        self.read_stream(&t.webhook_stream(), &t.webhook_subjects())
            .await
    }

    /// Every renewal result in the renewal stream.
    pub async fn renewal_stream(&self) -> Vec<Stored> {
        let t = self.topology();
        self.read_stream(&t.renewal_stream(), &t.renewal_subjects())
            .await
    }

    /// Every alert event in the alert stream.
    pub async fn alert_stream(&self) -> Vec<Stored> {
        let t = self.topology();
        self.read_stream(&t.alert_stream(), &t.alert_subjects())
            .await
    }

    /// Waits until the durable consumer `durable` of `stream` has been delivered
    /// everything in the stream and has settled it — the actor it feeds has
    /// caught up.
    pub async fn wait_consumer_idle(&self, stream: &str, durable: &str) {
        self.streams
            .wait_idle(stream, durable, Duration::from_secs(20))
            .await
            .unwrap();
    }

    /// Publishes `payload` on a webhook subject straight into the webhook stream,
    /// as a foreign publisher could, owed to the notification consumer.
    pub async fn publish_to_webhook_stream(&self, subject: &str, payload: &[u8]) {
        let t = self.topology();
        self.streams
            .publish(
                &t.webhook_stream(),
                subject,
                payload,
                &[t.notification_consumer().as_str()],
            )
            .await
            .unwrap();
    }

    /// Every message on `subject` (wildcards allowed) from now on, as a
    /// subscriber would see it: a core NATS subscription, or on the in-process
    /// bus (which nothing outside the process can subscribe to) the streams it
    /// keeps every message in, read back as they grow.
    pub async fn subscribe(&self, subject: impl Into<String>) -> Inbox {
        let subject = subject.into();
        match &self.nats {
            Some(client) => Inbox::over_nats(client, subject).await,
            None => Inbox::over_store(self.store.clone(), subject).await,
        }
    }

    /// Sends `body` on the control subject as a plain NATS request and returns the
    /// reply as JSON (Postgres + NATS only: the in-process bus has no outside door).
    pub async fn control_request(&self, body: &[u8]) -> Value {
        let reply = self
            .nats()
            .request(
                self.topology().control_renew_subject(),
                body.to_vec().into(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }
}

/// The database as a test observes it, the same on both backends.
impl Harness {
    /// A store on this test's database, as the service's actors use it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Postgres pool of a test that runs on Postgres + NATS only (for SQL
    /// only Postgres takes).
    pub fn postgres(&self) -> &sqlx::PgPool {
        match self.store.db() {
            subkeeper::store::Db::Postgres(pool) => pool,
            subkeeper::store::Db::Sqlite(_) => {
                panic!("this test reads Postgres: start it on Backend::PostgresNats")
            }
        }
    }

    /// The provider's health after each recorded attempt, oldest first.
    pub async fn statuses_after(&self, provider: &str) -> Vec<String> {
        let provider = uuid(provider);
        on_test_db!(self, pool => sqlx::query_scalar(
            "SELECT status_after FROM renewal_attempts WHERE provider_id = $1 ORDER BY id",
        )
        .bind(provider)
        .fetch_all(pool)
        .await
        .unwrap())
    }

    /// How many attempts are recorded for the provider.
    pub async fn attempt_count(&self, provider: &str) -> i64 {
        let provider = uuid(provider);
        on_test_db!(self, pool => sqlx::query_scalar(
            "SELECT count(*) FROM renewal_attempts WHERE provider_id = $1",
        )
        .bind(provider)
        .fetch_one(pool)
        .await
        .unwrap())
    }

    /// The stored state of the subscription the provider knows as `external_id`
    /// (`active`, `replaced`, `gone`, `deleted`).
    pub async fn subscription_state(&self, external_id: &str) -> String {
        on_test_db!(self, pool => sqlx::query_scalar(
            "SELECT state FROM subscriptions WHERE external_id = $1",
        )
        .bind(external_id)
        .fetch_one(pool)
        .await
        .unwrap())
    }

    /// The stored state of the provider's one subscription.
    pub async fn provider_subscription_state(&self, provider: &str) -> String {
        let provider = uuid(provider);
        on_test_db!(self, pool => sqlx::query_scalar(
            "SELECT state FROM subscriptions WHERE provider_id = $1",
        )
        .bind(provider)
        .fetch_one(pool)
        .await
        .unwrap())
    }

    /// Subscription rows the provider knows as `external_id` (0 or 1).
    pub async fn subscription_rows(&self, external_id: &str) -> i64 {
        on_test_db!(self, pool => sqlx::query_scalar(
            "SELECT count(*) FROM subscriptions WHERE external_id = $1",
        )
        .bind(external_id)
        .fetch_one(pool)
        .await
        .unwrap())
    }

    /// The clientState (channel token) stored for the subscription `external_id`.
    pub async fn client_state(&self, external_id: &str) -> String {
        on_test_db!(self, pool => sqlx::query_scalar(
            "SELECT client_state FROM subscriptions WHERE external_id = $1",
        )
        .bind(external_id)
        .fetch_one(pool)
        .await
        .unwrap())
    }

    /// Sets the stored state of the subscription `external_id`.
    pub async fn set_subscription_state(&self, external_id: &str, state: &str) {
        on_test_db!(self, pool => sqlx::query(
            "UPDATE subscriptions SET state = $1 WHERE external_id = $2",
        )
        .bind(state)
        .bind(external_id)
        .execute(pool)
        .await
        .map(|_| ())
        .unwrap());
    }

    /// How many rows `table` holds.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        on_test_db!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap())
    }

    /// Notifications parked in the outbox, not yet relayed to the webhook stream.
    pub async fn outbox_depth(&self) -> i64 {
        self.rows("webhook_outbox").await
    }
}

/// A provider id as the database stores it (a typed value both databases bind).
pub fn uuid(id: &str) -> uuid::Uuid {
    id.parse().unwrap()
}

/// How often the store-backed inbox looks for new messages.
const INBOX_POLL: Duration = Duration::from_millis(20);

/// Every JSON message on a subject, collected in the background from the moment
/// of subscribing, as any other service subscribed to it would see them.
pub struct Inbox {
    seen: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn json_body(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into()))
}

impl Inbox {
    /// Subscribes to `subject` on NATS; the server has the subscription when this
    /// returns.
    pub async fn over_nats(nats: &async_nats::Client, subject: String) -> Self {
        let mut sub = nats.subscribe(subject).await.unwrap();
        nats.flush().await.unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                let body = json_body(&message.payload);
                sink.lock()
                    .unwrap()
                    .push((message.subject.to_string(), body));
            }
        });
        Self { seen, task }
    }

    /// Follows the in-process bus's streams in `store` (every message it publishes
    /// is stored in one of them, in publish order) for messages on `subject`
    /// stored from now on.
    pub async fn over_store(store: Store, subject: String) -> Self {
        const PAGE: i64 = 500;
        let mut after = 0;
        loop {
            let page = store.read(None, after, PAGE).await.unwrap();
            match page.last() {
                Some(last) => after = last.seq,
                None => break,
            }
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match store.read(None, after, PAGE).await {
                    Ok(page) if !page.is_empty() => {
                        if let Some(last) = page.last() {
                            after = last.seq;
                        }
                        let mut sink = sink.lock().unwrap();
                        for m in page {
                            if subject_matches(&subject, &m.subject) {
                                let body = json_body(&m.payload);
                                sink.push((m.subject, body));
                            }
                        }
                    }
                    _ => tokio::time::sleep(INBOX_POLL).await,
                }
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
