//! The service under test or bench: its configuration pointed at one run's
//! store, bus and simulator, started through `subkeeper::run_with`
//! on 127.0.0.1:0 on the current actix System, and stopped through its shutdown
//! future — the same function `main` calls.

use crate::backend::TestBackend;
use crate::bus::TestBus;
use crate::db::TestDb;
use crate::sim::SimServer;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::{Config, RunError, RunOptions};
use tokio::sync::oneshot;

/// A listener on 127.0.0.1:0 and its `http://` base URL.
pub fn bind_local() -> std::io::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base_url = format!("http://{}", listener.local_addr()?);
    Ok((listener, base_url))
}

/// The key every test and bench deployment seals secrets at rest with (not a
/// secret: test data only).
pub const SECRET_KEYS: &str = "ktest:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The production defaults, pointed at `db`, `bus` and the simulator `sim`, with
/// the service reachable (by the simulator's validation handshakes and webhooks)
/// at `public_url`. Callers adjust the rest.
pub fn config(db: &TestDb, bus: &TestBus, sim: &SimServer, public_url: &str) -> Config {
    let mut config = Config {
        database_url: db.url.clone(),
        ..towards(sim, public_url)
    };
    bus.configure(&mut config);
    config
}

/// The production defaults, pointed at `backend`'s store and bus (either kind)
/// and the simulator `sim`, with the service reachable at `public_url`.
pub fn config_on(backend: &TestBackend, sim: &SimServer, public_url: &str) -> Config {
    let mut config = towards(sim, public_url);
    backend.configure(&mut config);
    config
}

/// The production defaults with the providers' base URLs at the simulator and
/// the public URL at `public_url`.
fn towards(sim: &SimServer, public_url: &str) -> Config {
    Config {
        public_url: public_url.to_owned(),
        graph_base_url: sim.graph_base_url(),
        login_base_url: sim.login_base_url(),
        google_base_url: sim.google_base_url(),
        google_token_url: format!("{}/token", sim.google_base_url()),
        secret_keys: Some(SECRET_KEYS.into()),
        ..Config::default()
    }
}

/// A running service.
pub struct Service {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Ends the shutdown future `run_with` waits on.
    stop: oneshot::Sender<()>,
    /// `run_with` itself; ends once the service has shut down.
    done: tokio::task::JoinHandle<Result<(), RunError>>,
    /// The service's own shutdown deadline (`shutdown_timeout_seconds`): a stop
    /// waits at least this long, plus [`STOP_MARGIN`], so that the service, not
    /// the caller, decides when it has waited long enough.
    deadline: Duration,
}

/// What a stop waits beyond the service's own deadline: the closing of its pool
/// and the return of `run_with` after the deadline has cut work short.
const STOP_MARGIN: Duration = Duration::from_secs(5);

impl Service {
    /// Starts `run_with(config, listener, …)` on the current actix System.
    pub fn spawn(
        config: Config,
        listener: TcpListener,
        base_url: String,
        options: RunOptions,
    ) -> Self {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let deadline = Duration::from_secs(config.shutdown_timeout_seconds);
        let done = actix_rt::spawn(subkeeper::run_with(
            Arc::new(config),
            listener,
            async move {
                let _ = stop_rx.await;
            },
            options,
        ));
        Self {
            base_url,
            stop,
            done,
            deadline,
        }
    }

    /// Whether the service has ended (on its own, unless stopped).
    pub fn is_finished(&self) -> bool {
        self.done.is_finished()
    }

    /// Waits until `/readyz` answers 2xx (polling every 50 ms, at most `timeout`);
    /// fails at once if the service ends instead.
    pub async fn wait_ready(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let url = format!("{}/readyz", self.base_url);
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if self.is_finished() {
                anyhow::bail!("the service stopped during start-up");
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the service was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops this service, then the simulator `sim` it talks to (30 s and 10 s at
    /// most); both are stopped whatever the first does, and the first error is
    /// returned.
    pub async fn stop_with(self, sim: SimServer) -> anyhow::Result<()> {
        let service = self.stop(Duration::from_secs(30)).await;
        let simulator = crate::sim::stop(sim, Duration::from_secs(10)).await;
        service.and(simulator)
    }

    /// Asks the service to shut down and waits until it has — at most `timeout`,
    /// or the service's own shutdown deadline and a margin if that is longer —
    /// an error if it does not stop in time or ends with an error. Once it
    /// returns Ok, the service's tasks have ended and its pool is closed: the
    /// runtime may be dropped.
    pub async fn stop(self, timeout: Duration) -> anyhow::Result<()> {
        let timeout = timeout.max(self.deadline + STOP_MARGIN);
        let _ = self.stop.send(());
        match tokio::time::timeout(timeout, self.done).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow::anyhow!("the service ended with an error: {e}")),
            Ok(Err(e)) => Err(anyhow::anyhow!("the service task failed: {e}")),
            Err(_) => Err(anyhow::anyhow!(
                "the service did not stop within {timeout:?}"
            )),
        }
    }
}
