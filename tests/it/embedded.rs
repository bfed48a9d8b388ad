//! What a user of the embedded mode (no database or NATS URL) meets that has no
//! Postgres + NATS twin in the shared suite: `subkeeper renew` reaching the
//! service through its admin API, `status` and `migrate` on a data directory, one
//! instance per store, and a webhook answered 202 surviving a `kill -9` of the
//! real binary to be delivered once after the restart.

use crate::monitoring::free_port;
use crate::startup::{output, subkeeper_binary};
use crate::support::{Backend, Harness, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use subkeeper::Config;
use subkeeper::bus::Topology;
use subkeeper::store::{Db, Location, Store};
use subkeeper_actors::domain::{RenewalAction, RenewalResult};
use subkeeper_actors::ports::StreamLog as _;
use subkeeper_actors::ports::clock::SystemClock;
use subkeeper_testkit::Purpose;
use subkeeper_testkit::admin::{Admin, graph_mail_provider};
use subkeeper_testkit::backend::DataDir;
use subkeeper_testkit::sim::{self, Fault, FaultOperation, FaultRule, Operation};

/// Runs `subkeeper renew` as an operator on the service's machine would: the
/// data directory (where the service wrote its admin token) and the address it
/// listens on, no token and no NATS URL.
async fn renew_cli(data_dir: &Path, http_addr: &str, args: &[&str]) -> std::process::Output {
    let mut command = subkeeper_binary(&[&["renew"], args].concat());
    command
        .env("SUBKEEPER_DATA_DIR", data_dir)
        .env("SUBKEEPER_HTTP_ADDR", http_addr);
    output(command).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// PATCHes the simulator received for one subscription.
fn renews_of(h: &Harness, subscription: &str) -> usize {
    h.sim
        .requests()
        .iter()
        .filter(|r| {
            r.operation == Operation::Renew && r.subscription_id.as_deref() == Some(subscription)
        })
        .count()
}

#[actix_web::test]
async fn subkeeper_renew_reaches_an_embedded_service_through_its_admin_api() {
    // No token configured: the service writes one to its data directory, where
    // `renew` finds it.
    let h = Harness::start(Backend::Embedded, |c| c.admin_token = None).await;
    let dir = h.backend.data_dir().unwrap().to_owned();
    let addr = h.base_url.trim_start_matches("http://").to_owned();
    let alice = h.create_provider("acme", "acme-aad", "alice").await;
    let bob = h.create_provider("acme", "acme-aad", "bob").await;
    let carol = h.create_provider("contoso", "contoso-aad", "carol").await;
    let mut subs = BTreeMap::new();
    for (tenant, p) in [("acme", &alice), ("acme", &bob), ("contoso", &carol)] {
        let view = h
            .wait_provider(tenant, p, "healthy", |v| {
                v["health"]["subscription_status"] == "healthy"
            })
            .await;
        subs.insert(
            p.clone(),
            view["subscription"]["id"].as_str().unwrap().to_owned(),
        );
    }
    h.wait_change_cursors(3).await;

    // One provider renewed: its RenewalResult on stdout, exit 0, Graph saw the PATCH.
    let before = renews_of(&h, &subs[&alice]);
    let out = renew_cli(&dir, &addr, &["--tenant", "acme", "--provider", &alice]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: RenewalResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result.success, "{}", text(&out.stdout));
    assert_eq!(result.action, RenewalAction::Renewed);
    assert_eq!(result.provider_id.to_string(), alice);
    assert_eq!(renews_of(&h, &subs[&alice]), before + 1);

    // The whole tenant: one result per provider of acme, none for contoso.
    let carol_before = renews_of(&h, &subs[&carol]);
    let out = renew_cli(&dir, &addr, &["--tenant", "acme"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results: Vec<RenewalResult> = serde_json::from_slice(&out.stdout).unwrap();
    let mut renewed: Vec<String> = results
        .iter()
        .filter(|r| r.success)
        .map(|r| r.provider_id.to_string())
        .collect();
    renewed.sort();
    let mut want = vec![alice.clone(), bob.clone()];
    want.sort();
    assert_eq!(renewed, want, "{}", text(&out.stdout));
    assert_eq!(renews_of(&h, &subs[&carol]), carol_before);

    // Another tenant's provider: the error printed, exit 1, nothing called.
    let calls = h.sim.requests().len();
    let out = renew_cli(&dir, &addr, &["--tenant", "acme", "--provider", &carol]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "not_found", "{reply:#}");
    assert!(
        text(&out.stderr).contains("renewal refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(h.sim.requests().len(), calls);

    // Renewed, but Graph failed: the failed RenewalResult, exit 3.
    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::Renew,
            Fault::Status {
                status: 500,
                code: "InternalServerError".into(),
                retry_after_seconds: None,
            },
        )
        .for_subscription(&subs[&alice])
        .times(1),
    );
    let out = renew_cli(&dir, &addr, &["--tenant", "acme", "--provider", &alice]).await;
    let result: RenewalResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(3), "{result:?}");
    assert!(!result.success);
    assert_eq!(result.http_status, Some(500));

    // No service at that address: a clear message and exit 1, not a hang.
    let closed = format!("127.0.0.1:{}", free_port());
    let out = renew_cli(
        &dir,
        &closed,
        &["--tenant", "acme", "--timeout-seconds", "5"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("no answer from the service at http://{closed}"))
            && stderr.contains("SUBKEEPER_HTTP_ADDR"),
        "{stderr}"
    );

    // A data directory no embedded service ran in has no token to offer.
    let empty = DataDir::create(Purpose::Test).unwrap();
    let out = renew_cli(empty.path(), &addr, &["--tenant", "acme"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("SUBKEEPER_ADMIN_TOKEN"), "{stderr}");
    h.stop().await;
}

#[actix_web::test]
async fn status_names_the_command_that_creates_the_embedded_store_and_migrate_creates_it() {
    let dir = DataDir::create(Purpose::Test).unwrap();
    let store = dir.store_file();
    let with_dir = |args: &[&str]| {
        let mut command = subkeeper_binary(args);
        command.env("SUBKEEPER_DATA_DIR", dir.path());
        command
    };

    let out = output(with_dir(&["status"])).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&store.display().to_string()) && stderr.contains("subkeeper migrate"),
        "status does not say which file is missing and what creates it: {stderr}"
    );
    assert!(!store.exists(), "status must not create the store");

    let out = output(with_dir(&["migrate"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("embedded SQLite store {}", store.display())),
        "{}",
        text(&out.stdout)
    );
    assert!(store.is_file());

    let out = output(with_dir(&["status"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no provider needs attention"),
        "{}",
        text(&out.stdout)
    );
}

/// `subkeeper run` as a process on an embedded data directory, killed with
/// SIGKILL when dropped.
struct Running {
    child: Child,
    log: std::path::PathBuf,
}

/// Where the binary under test is told to find the simulator and to listen.
struct Setup<'a> {
    dir: &'a Path,
    port: u16,
    sim: &'a sim::SimServer,
}

impl Running {
    fn start(setup: &Setup<'_>, log_name: &str) -> Self {
        let log = setup.dir.join(log_name);
        let file = std::fs::File::create(&log).unwrap();
        let mut command: Command = subkeeper_binary(&["run"]);
        let base = format!("http://127.0.0.1:{}", setup.port);
        command
            .env("SUBKEEPER_DATA_DIR", setup.dir)
            .env("SUBKEEPER_HTTP_ADDR", format!("127.0.0.1:{}", setup.port))
            .env("SUBKEEPER_PUBLIC_URL", &base)
            .env("SUBKEEPER_GRAPH_BASE_URL", setup.sim.graph_base_url())
            .env("SUBKEEPER_LOGIN_BASE_URL", setup.sim.login_base_url())
            .env("SUBKEEPER_GOOGLE_BASE_URL", setup.sim.google_base_url())
            .env(
                "SUBKEEPER_GOOGLE_TOKEN_URL",
                format!("{}/token", setup.sim.google_base_url()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Self {
            child: command.spawn().unwrap(),
            log,
        }
    }

    /// What the process logged (warnings and errors).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; fails at once if the process exits.
    async fn wait_ready(&mut self, http: &reqwest::Client, base_url: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if http
                .get(format!("{base_url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("subkeeper run exited ({status}) at start: {}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subkeeper run not ready within 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing settled.
    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Graph change notification for a new message, as Graph posts it.
fn graph_item(subscription: &str, client_state: &str, message: &str) -> Value {
    json!({
        "subscriptionId": subscription,
        "clientState": client_state,
        "changeType": "created",
        "resource": format!("Users/alice/Messages/{message}"),
        "tenantId": "acme-aad",
        "subscriptionExpirationDateTime": "2026-11-28T00:00:00.0000000Z",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": message},
    })
}

/// Messages the durable `consumer` still owes, read from the SQLite file.
async fn pending(store: &Store, consumer: &str) -> i64 {
    store.pending(consumer).await.unwrap()
}

/// A webhook answered 202 by an embedded service is in its durable stream: the
/// process is killed with SIGKILL right after the answers (checked to have left
/// messages the notification consumer had not settled — else the burst is
/// doubled and the round repeated), restarted on the same data directory, and
/// every notification becomes its `mail_received` event exactly once.
#[actix_web::test]
async fn a_webhook_answered_202_survives_kill_9_and_is_delivered_once_after_restart() {
    subkeeper::install_crypto();
    let dir = DataDir::create(Purpose::Test).unwrap();
    let (_sim, sim_server) = sim::start(sim::test_config(), Arc::new(SystemClock))
        .await
        .unwrap();
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let setup = Setup {
        dir: dir.path(),
        port,
        sim: &sim_server,
    };
    let http = reqwest::Client::new();
    let mut service = Running::start(&setup, "run-0.log");
    service.wait_ready(&http, &base_url).await;

    // One store per process: a second `run` on the same data directory is refused.
    let mut second = subkeeper_binary(&["run"]);
    second
        .env("SUBKEEPER_DATA_DIR", dir.path())
        .env("SUBKEEPER_HTTP_ADDR", format!("127.0.0.1:{}", free_port()));
    let out = output(second).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("another subkeeper instance is using the embedded store"),
        "{}",
        text(&out.stderr)
    );

    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let admin = Admin::new(&http, &base_url, token.trim());
    let provider = admin
        .create_provider(
            "acme",
            graph_mail_provider("alice inbox", "users/alice/messages", "acme-aad"),
        )
        .await
        .unwrap();
    let subscription = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, view) = admin
                .request(
                    reqwest::Method::GET,
                    &format!("/tenants/acme/providers/{provider}"),
                    None,
                )
                .await
                .unwrap();
            if view["health"]["subscription_status"] == "healthy" {
                break view["subscription"]["id"].as_str().unwrap().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the provider did not register: {view:#} {}",
                service.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let store = Store::connect(
        &Location::Sqlite(dir.store_file()),
        1,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let Db::Sqlite(pool) = store.db() else {
        unreachable!("an embedded store")
    };
    let client_state: String =
        sqlx::query_scalar("SELECT client_state FROM subscriptions WHERE external_id = $1")
            .bind(&subscription)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(!client_state.is_empty());
    let t = Topology::from_config(&Config::default());
    let consumer = t.notification_consumer();

    // Bursts until a kill leaves notifications the consumer had not settled.
    let mut sent: Vec<String> = Vec::new();
    let mut burst = 100;
    let mut round = 0;
    let left = loop {
        round += 1;
        let messages: Vec<String> = (0..burst).map(|i| format!("r{round}-m{i}")).collect();
        let answers = futures_util::future::join_all(messages.iter().map(|m| {
            let body = json!({ "value": [graph_item(&subscription, &client_state, m)] });
            http.post(format!("{base_url}/webhooks/microsoft"))
                .json(&body)
                .send()
        }))
        .await;
        service.kill_9();
        let statuses: Vec<u16> = answers
            .into_iter()
            .map(|a| a.unwrap().status().as_u16())
            .collect();
        assert!(
            statuses.iter().all(|s| *s == 202),
            "every notification answered 202: {statuses:?}"
        );
        sent.extend(messages);
        let left = pending(&store, &consumer).await;
        if left > 0 {
            break left;
        }
        assert!(
            round < 6,
            "after {round} bursts (the last of {burst}) the consumer had settled everything before the kill each time"
        );
        burst *= 2;
        service = Running::start(&setup, &format!("run-{round}.log"));
        service.wait_ready(&http, &base_url).await;
    };
    // The stream holds every notification answered, once.
    let stored = store
        .read(Some(&t.webhook_stream()), 0, 100_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), sent.len(), "one stored message per 202");
    assert!(left as usize <= sent.len());
    eprintln!(
        "kill -9 after {} notifications in {round} burst(s): {left} unsettled",
        sent.len()
    );

    // Restarted on the same data directory: the consumer delivers what was owed.
    let mut service = Running::start(&setup, "run-after-kill.log");
    service.wait_ready(&http, &base_url).await;
    wait_until(
        "the notification consumer settled everything",
        Duration::from_secs(60),
        || async { pending(&store, &consumer).await == 0 },
    )
    .await;
    wait_until(
        "the alerting consumer settled everything",
        Duration::from_secs(30),
        || async { pending(&store, &t.alerting_consumer()).await == 0 },
    )
    .await;

    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for m in store
        .read(Some(&t.event_stream()), 0, 100_000)
        .await
        .unwrap()
    {
        let event: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(event["type"], "mail_received", "{event:#}");
        assert_eq!(event["provider_id"], provider.as_str());
        let resource = event["resource"].as_str().unwrap();
        let message = resource.rsplit('/').next().unwrap().to_owned();
        *events.entry(message).or_default() += 1;
    }
    let twice: Vec<_> = events.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<_> = sent.iter().filter(|m| !events.contains_key(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} notifications never became an event: {missing:?}",
        missing.len(),
        sent.len()
    );
    assert_eq!(events.len(), sent.len());
    drop(service);
    sim::stop(sim_server, Duration::from_secs(10))
        .await
        .unwrap();
}
