//! The Microsoft part of the simulator: Graph v1.0 `/subscriptions` and the
//! identity platform's v2 token endpoint, plus the calls Graph makes back to the
//! subscriber.
//!
//! - `model`: tokens and subscriptions as pure state, with Graph's rules.
//! - `wire`: Graph's JSON shapes and date format.
//! - `http`: actix-web handlers for `/v1.0/subscriptions`.
//! - `login`: `POST /{tenant}/oauth2/v2.0/token`.
//! - `discovery`: the OpenID Connect metadata and signing keys of the
//!   identity platform, for clients that discover the token endpoint.
//! - `delivery`: validation handshakes and notification POSTs.
//! - `throttling`: what a request is charged under Graph's limits, and how
//!   Graph words a refusal.
//! - `delta`: the delta queries over the change log (`messages/delta`,
//!   `calendarView/delta`).

pub mod delivery;
mod delta;
mod discovery;
mod http;
mod login;
pub mod model;
mod throttling;
pub mod wire;

use actix_web::web;

/// Mounts Graph under `/v1.0` and the token endpoint at the root.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    // Before the `/v1.0` scope, which answers every path it does not know.
    delta::routes(config);
    http::routes(config);
    login::routes(config);
    discovery::routes(config);
}
