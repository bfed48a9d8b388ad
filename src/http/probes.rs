//! Liveness, readiness and the Prometheus scrape endpoint.

use super::AppState;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The process is up and serving HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when Postgres answers and the fleet has loaded its providers (every
/// owned provider's supervisor started with its state; the body says how many
/// are loaded and scheduled), and
/// not shutting down (SIGTERM fails readiness first). The NATS
/// connection state is reported but does not decide: the instance keeps renewing
/// subscriptions (results stay in Postgres) while NATS is away and reconnects by
/// itself; and taking every instance out of rotation during a NATS outage would also
/// cut off webhook intake, which is meant to keep answering through one (outbox).
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.admin.ping().await;
    let fleet = state.fleet.status().await;
    let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
    let ready = !draining && database && fleet.is_some_and(|f| f.ready);
    let body = json!({
        "status": if draining { "shutting_down" } else if ready { "ready" } else { "not_ready" },
        "database": database,
        "nats": state.bus.connection_state().as_str(),
        "fleet_ready": fleet.is_some_and(|f| f.ready),
        "providers_supervised": fleet.map_or(0, |f| f.supervised),
        "providers_loaded": fleet.map_or(0, |f| f.loaded),
        "providers_scheduled": fleet.map_or(0, |f| f.scheduled),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&state.board))
}
