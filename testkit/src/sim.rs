//! The provider simulator, as tests and benches start and drive it. This is the
//! one place that names the simulator's crate path: tests and benches import its
//! types from here (`subkeeper_testkit::sim::…`).

use std::time::Duration;
use subkeeper_actors::clock::SharedClock;

pub use subkeeper::simulator::*;

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
