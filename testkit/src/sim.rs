//! The provider simulator, as tests and benches start and drive it. This is the
//! one place that names the simulator's crate path: tests and benches import its
//! types from here (`subkeeper_testkit::sim::…`).

use std::time::Duration;
use subkeeper_actors::ports::clock::SharedClock;

pub use subkeeper_simulator::*;

use crate::admin::{GOOGLE_CLIENT_SECRET, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET};

/// The simulator as tests and benches run it: as strict about credentials as
/// Microsoft (the Graph app every test provider connects through is registered;
/// Google clients are registered as their providers are created, see
/// [`register_google_client`]), lenient only about the plain-http 127.0.0.1
/// the service listens on.
pub fn test_config() -> SimulatorConfig {
    SimulatorConfig {
        allow_http_loopback: true,
        apps: vec![RegisteredApp {
            provider: IdentityProvider::Microsoft,
            client_id: GRAPH_CLIENT_ID.into(),
            client_secret: GRAPH_CLIENT_SECRET.into(),
        }],
        ..SimulatorConfig::default()
    }
}

/// Registers the Google OAuth client `client_id` with [`GOOGLE_CLIENT_SECRET`].
pub fn register_google_client(sim: &Simulator, client_id: &str) {
    sim.register_app(RegisteredApp {
        provider: IdentityProvider::Google,
        client_id: client_id.into(),
        client_secret: GOOGLE_CLIENT_SECRET.into(),
    });
}

/// Starts a simulator with `config` on provider time `clock`, serving on
/// 127.0.0.1:0, and returns once it answers HTTP (so its server threads exist).
pub async fn start(
    config: SimulatorConfig,
    clock: SharedClock,
) -> anyhow::Result<(Simulator, SimServer)> {
    let sim = Simulator::new(config, clock);
    let server = sim.start(std::net::TcpListener::bind("127.0.0.1:0")?)?;
    // Any answer will do (an unknown path is a 404): the worker is serving.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http.get(&server.base_url).send().await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the simulator did not answer at {} within 10 s",
                server.base_url
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((sim, server))
}

/// Stops a simulator server, waiting at most `timeout`.
pub async fn stop(server: SimServer, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, server.stop())
        .await
        .map_err(|_| anyhow::anyhow!("the simulator did not stop within {timeout:?}"))
}
