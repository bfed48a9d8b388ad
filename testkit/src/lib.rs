//! One test kit for subkeeper's integration tests (`tests/it`) and its benches
//! (`benches/`): a fresh store and bus per run — a Postgres database and NATS
//! subjects and streams, or an embedded SQLite file in a data directory of its
//! own with the in-process bus ([`backend::Backend`]) — what the service
//! published read back the same way on either ([`streams::Streams`]), the
//! provider simulator and the service started through `subkeeper::run_with` on
//! 127.0.0.1:0 and stopped again, the admin API, process and machine CPU and
//! memory counters, and percentiles.
//!
//! It owns the plumbing only: what a test asserts or a bench measures and reports
//! stays with the test or the bench. Dev-only (`publish = false`). It returns
//! errors instead of panicking, so the caller decides whether a failure is a
//! failed test or a bench that cleans up and reports.

pub mod admin;
pub mod backend;
pub mod bus;
pub mod db;
pub mod metrics;
pub mod proc;
pub mod service;
pub mod sim;
pub mod stats;
pub mod streams;

/// Who a database or a set of NATS streams is for: the name says so, so anything a
/// killed run leaves behind is easy to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An integration test (`subkeeper_test_…`, `sktest_…`).
    Test,
    /// A bench run (`subkeeper_bench_…`, `skbench_…`).
    Bench,
}

impl Purpose {
    /// Prefix of a database name.
    fn database_prefix(self) -> &'static str {
        match self {
            Self::Test => "subkeeper_test",
            Self::Bench => "subkeeper_bench",
        }
    }

    /// Prefix of NATS subjects (lower case) and streams (upper case).
    fn bus_prefix(self) -> &'static str {
        match self {
            Self::Test => "sktest",
            Self::Bench => "skbench",
        }
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes (then
/// panics naming `what`): how tests wait for what a user would observe.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A fresh random id (32 hex digits).
fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Runs `work` to completion on a throwaway current-thread runtime on a thread of
/// its own: how a `Drop` (which cannot be async) cleans up, whatever runtime, if
/// any, the caller is on.
fn block_on_aside<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(work),
            Err(e) => eprintln!("cleanup skipped: no runtime: {e}"),
        }
    })
    .join();
}
