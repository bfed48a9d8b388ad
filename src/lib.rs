//! subkeeper: keeps webhook subscriptions alive for every tenant's mailboxes and
//! calendars — Microsoft Graph change notifications, Google Calendar watch channels
//! and Gmail watches — takes in their webhooks, and makes sure a human is paged
//! before anything goes silent.
//!
//! This crate adapts the world to the core in `subkeeper-actors`: configuration,
//! the Postgres store, provider adapters, the NATS bus, the HTTP layer and telemetry.
//! [`run`] wires them; `main` only parses the CLI and calls it. The provider simulator
//! that `simulate`, `demo` and the tests use is its own crate, `subkeeper-simulator`.

pub mod app;
pub mod bus;
pub mod cli;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod housekeeping;
pub mod http;
pub mod intake;
pub mod provider_cli;
pub mod providers;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod tokens;

pub use app::{RunError, RunOptions, Running, run, run_with};
pub use config::Config;

/// Installs rustls' ring crypto provider for reqwest (once; later calls are no-ops).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
