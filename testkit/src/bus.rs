//! The bus of one test or bench run: its own subject and stream prefixes — on
//! the shared NATS server, so runs proceed in parallel without seeing each other,
//! its streams deleted when it ends; or for the in-process bus, whose streams live
//! in the run's own store — and the JetStream look-ups tests and benches observe
//! the service through (consumer backlog, a replay of a stream).

use crate::Purpose;
use async_nats::jetstream::{self, consumer};
use std::time::Duration;
use subkeeper::Config;
use subkeeper::bus::{StreamLimits, Topology};

/// URL of the NATS server (with JetStream) runs share (`SUBKEEPER_TEST_NATS_URL`,
/// default the local server on 4222).
pub fn nats_url() -> String {
    std::env::var("SUBKEEPER_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A client of the shared NATS server, or an error of one line that names NATS,
/// its URL and the script that starts it.
pub async fn reachable_nats() -> anyhow::Result<async_nats::Client> {
    async_nats::connect(nats_url()).await.map_err(|e| {
        anyhow::anyhow!(
            "NATS with JetStream is not reachable at {} ({e}): run scripts/test (or scripts/test-services), which installs and starts it",
            nats_url()
        )
    })
}

/// One run's subject and stream prefixes; its streams are deleted when dropped.
#[derive(Debug)]
pub struct TestBus {
    /// `sktest_<random>` / `skbench_<random>`.
    pub subject_prefix: String,
    /// The same in upper case: `SKTEST_<RANDOM>` / `SKBENCH_<RANDOM>`.
    pub stream_prefix: String,
    /// The NATS server (streams on it, deleted on drop), or `None` for the
    /// in-process bus (streams in the run's store, gone with it; NATS is never
    /// contacted).
    nats: Option<String>,
}

impl TestBus {
    /// Fresh prefixes on NATS; nothing is created until the service (or a test)
    /// does.
    pub fn new(purpose: Purpose) -> Self {
        Self::with(purpose, Some(nats_url()))
    }

    /// Fresh prefixes on the NATS server at `url`, such as a test's own server
    /// that it restarts.
    pub fn on(url: &str, purpose: Purpose) -> Self {
        Self::with(purpose, Some(url.to_owned()))
    }

    /// Fresh prefixes for the in-process bus: no NATS URL is configured.
    pub fn local(purpose: Purpose) -> Self {
        Self::with(purpose, None)
    }

    fn with(purpose: Purpose, nats: Option<String>) -> Self {
        let id = crate::fresh_id()[..12].to_owned();
        let prefix = purpose.bus_prefix();
        Self {
            subject_prefix: format!("{prefix}_{id}"),
            stream_prefix: format!("{prefix}_{id}").to_uppercase(),
            nats,
        }
    }

    /// True for NATS, false for the in-process bus.
    pub fn is_nats(&self) -> bool {
        self.nats.is_some()
    }

    /// The NATS server's URL (`None` for the in-process bus).
    pub fn nats_url(&self) -> Option<&str> {
        self.nats.as_deref()
    }

    /// The subject and stream names under these prefixes.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.subject_prefix, &self.stream_prefix)
    }

    /// Points `config` at this run's NATS server (none, for the in-process bus),
    /// subjects and streams.
    pub fn configure(&self, config: &mut Config) {
        config.nats_url = self.nats.clone().unwrap_or_default();
        config.nats_subject_prefix = self.subject_prefix.clone();
        config.nats_stream_prefix = self.stream_prefix.clone();
        // NATS reserves each stream's size limit from its storage up front: keep
        // parallel runs (and any a killed run leaves behind) small. A bench that
        // fills a stream raises its limit after this.
        config.nats_webhook_stream_max_bytes = 8 << 20;
        config.nats_renewal_stream_max_bytes = 8 << 20;
        config.nats_alert_stream_max_bytes = 2 << 20;
    }

    /// The stream limits `configure` sets.
    pub fn limits(&self) -> StreamLimits {
        let mut config = Config::default();
        self.configure(&mut config);
        StreamLimits::from_config(&config)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let Some(url) = self.nats.clone() else {
            return;
        };
        let topology = self.topology();
        crate::block_on_aside(async move {
            subkeeper::bus::delete_streams(&url, &topology).await;
        });
    }
}

/// Messages the durable `durable` of `stream` has yet to deliver or to have
/// settled: 0 once the actor it feeds has caught up.
pub async fn consumer_backlog(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> anyhow::Result<u64> {
    let info = js.get_stream(stream).await?.consumer_info(durable).await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Waits (polling every 50 ms, at most `timeout`) until the durable `durable` of
/// `stream` has delivered and settled everything in the stream; returns its state.
pub async fn wait_consumer_idle(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    timeout: Duration,
) -> anyhow::Result<consumer::Info> {
    let stream = js.get_stream(stream).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = stream.consumer_info(durable).await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(info);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("consumer {durable} did not catch up within {timeout:?}: {info:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An ephemeral pull consumer that replays `stream` from its first message
/// (only `filter`, when given), acknowledging nothing: what a downstream reader
/// of the stream would see, without disturbing the service's own consumers.
pub async fn replay(
    js: &jetstream::Context,
    stream: &str,
    filter: Option<&str>,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| anyhow::anyhow!("stream {stream}: {e}"))?;
    Ok(stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.unwrap_or_default().to_owned(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        })
        .await?)
}
