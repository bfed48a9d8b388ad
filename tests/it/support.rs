//! Test harness: a fresh Postgres database per test, the simulator and subkeeper
//! started through `run_with` on 127.0.0.1:0, and an admin API client.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::simulator::{SimServer, Simulator, SimulatorConfig};
use subkeeper::{Config, RunOptions};
use subkeeper_actors::clock::SystemClock;
use tokio::sync::oneshot;

/// Admin token used by every test.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

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

/// subkeeper + simulator + a fresh database.
pub struct Harness {
    /// Kept so the database is dropped when the harness is.
    _db: TestDb,
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
        subkeeper::install_crypto();
        let db = TestDb::create().await;
        let sim = Simulator::new(SimulatorConfig::default(), Arc::new(SystemClock));
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
        tweak(&mut config);
        config.validate().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let done = actix_rt::spawn(subkeeper::run_with(
            Arc::new(config),
            listener,
            async move {
                let _ = stop_rx.await;
            },
            RunOptions::default(),
        ));
        let harness = Self {
            pool: db.pool().await,
            _db: db,
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
                        "client_id": "11111111-2222-3333-4444-555555555555",
                        "client_secret": "not-a-real-secret",
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
