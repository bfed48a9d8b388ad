//! The core's integration tests, one binary (the crate compiles once): thirty
//! simulated days of Graph (`thirty_days`) and Google (`thirty_days_google`)
//! providers under paused time, on the harness in `common`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod retire;
mod thirty_days;
mod thirty_days_google;
