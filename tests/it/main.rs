//! Integration tests: the real service through `run_with`, real Postgres (a fresh
//! database per test), real NATS (fresh subjects and streams per test), the
//! provider simulator over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod alerting_e2e;
mod google;
mod lifecycle;
mod limits;
mod logs;
mod monitoring;
mod nats;
mod pipeline;
mod secrets;
mod series_budget;
mod startup;
mod support;
mod webhooks;
