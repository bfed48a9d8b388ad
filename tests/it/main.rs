//! Integration tests: the real service through `run_with`, real Postgres (a fresh
//! database per test), real NATS (fresh subjects and streams per test), the
//! provider simulator over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod lifecycle;
mod nats;
mod pipeline;
mod support;
mod webhooks;
