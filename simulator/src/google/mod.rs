//! The Google part of the simulator: Calendar v3 watch channels
//! (`events.watch`, `channels.stop`), Gmail v1 watches (`users.watch`,
//! `users.stop`) with Pub/Sub push delivery, and Google's OAuth token endpoint,
//! plus the calls Google makes back to the subscriber.
//!
//! - `model`: tokens, channels and watches as pure state, with Google's rules.
//! - `wire`: Google's JSON shapes and `X-Goog-*` headers.
//! - `http`: actix-web handlers for `/calendar/v3/...` and `/gmail/v1/...`.
//! - `oauth`: `POST /token`.
//! - `delivery`: channel messages and Pub/Sub push POSTs.
//! - `quota`: what a request is charged under Google's quotas, and how Google
//!   words a refusal.
//! - `sync`: the catch-up reads over the change log (Calendar `events.list`
//!   with `syncToken`, Gmail `users.history.list`).
//!
//! Must not share state with `graph/`: the two providers only share the server,
//! the clock, the fault book and the journal.

pub mod delivery;
mod http;
pub mod model;
mod oauth;
mod quota;
mod sync;
pub mod wire;

use actix_web::web;

/// Mounts Calendar under `/calendar/v3`, Gmail under `/gmail/v1` and the token
/// endpoint at `/token`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    http::routes(config);
    sync::routes(config);
    oauth::routes(config);
}
