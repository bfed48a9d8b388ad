//! Fleet-scale integration tests: thousands of providers, the providers' limits
//! held for simulated hours. They load the 2-core machine for minutes, so they
//! live in their own test binary, which cargo runs after `it` has finished
//! rather than beside its parallel tests (where their load made 3-second
//! webhook deadlines miss). Same rules: real Postgres, real NATS, the simulator
//! over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod clocked;
mod cluster;
mod deadlines;
mod instances;
mod limits;
mod restarts;
mod servers;
mod startup;
mod threads;

/// The admin token of these tests' services.
pub const ADMIN_TOKEN: &str = cluster::ADMIN_TOKEN;
