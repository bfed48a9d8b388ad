//! The HTTP surface (actix-web): provider webhooks, health and readiness, metrics,
//! and the admin API. Handlers translate HTTP to calls on the store and the fleet
//! handle; they hold no lifecycle logic. Errors go through [`HttpError`], which maps
//! to status codes and never leaks internals — actix's extractor and routing
//! refusals too, and bodies are read through [`error::Body`] for that reason.

mod admin;
pub mod auth;
pub mod board_counts;
mod error;
pub mod openapi;
pub mod page;
mod probes;
pub mod span;
mod status_page;
mod webhooks;

use error::Body;
pub use error::HttpError;

use crate::bus::Bus;
use crate::config::Config;
use crate::intake::{GoogleIntake, GraphIntake};
use crate::telemetry::MetricsRenderer;
use actix_web::web;
use std::sync::Arc;
use subkeeper_actors::board::HealthBoard;
use subkeeper_actors::fleet::FleetHandle;
use subkeeper_actors::ports::AdminStore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Set once shutdown began: `/readyz` fails.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The admin reads and writes (and the store's readiness).
    pub admin: Arc<dyn AdminStore>,
    /// The delivery log, read back.
    pub deliveries: Arc<dyn subkeeper_actors::ports::DeliveryLog>,
    /// The status page's list and sessions.
    pub page: Arc<dyn subkeeper_actors::ports::StatusPageStore>,
    /// The fleet.
    pub fleet: FleetHandle,
    /// The health board (metrics, readiness).
    pub board: HealthBoard,
    /// Renders `/metrics`.
    pub metrics: MetricsRenderer,
    /// The bus (readiness reports its connection state).
    pub bus: Bus,
    /// Graph webhook intake.
    pub graph_intake: GraphIntake,
    /// Google Calendar and Gmail intake.
    pub google_intake: GoogleIntake,
    /// Wakes the housekeeping job (an offboarding was asked for).
    pub housekeeping: crate::housekeeping::HousekeepingHandle,
    /// The service's clock (the one the store and the fleet read; tests and
    /// the demo run it faster): what the status page says "now" is.
    pub clock: subkeeper_actors::ports::clock::SharedClock,
    /// The status page's counts by status, kept a few seconds.
    pub board_counts: Arc<board_counts::BoardCounts>,
}

/// Registers every route on an actix-web app.
pub fn routes(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let max_body = state.config.webhook_max_body_bytes;
        cfg.app_data(web::Data::new(state))
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(error::json_error),
            )
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .default_service(web::to(error::no_route))
            .configure(webhooks::routes)
            .configure(probes::routes)
            .configure(status_page::routes)
            .service(
                web::scope("/api/v1")
                    .configure(openapi::routes)
                    .configure(admin::routes),
            );
    }
}
