//! Integration tests: the real service through `run_with` (the real binary where
//! a process matters), the provider simulator over real HTTP, and one scenario
//! suite — lifecycle, intake, pipeline, alerting, admin API — run on both
//! backends: the embedded SQLite store with the in-process bus (a fresh data
//! directory per test; no server needed) and real Postgres with real NATS (a fresh
//! database and fresh subjects and streams per test). `cargo test --test it
//! embedded` runs the embedded half; tests that stay on one backend say why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod alerting_e2e;
mod attempts;
mod catchup;
mod deliveries;
mod demo;
mod embedded;
mod google;
mod housekeeping;
mod lifecycle;
mod logs;
mod monitoring;
mod nats;
mod openapi;
mod pagination;
mod pipeline;
mod plans;
mod providers_cli;
mod secrets;
mod series_budget;
mod startup;
mod status_page;
mod support;
mod tokens;
mod webhooks;
