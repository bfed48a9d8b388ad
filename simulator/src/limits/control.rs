//! The control API for limits, mounted inside `/_sim`: forced throttles
//! (`/_sim/throttles`) and the journal queries that prove compliance
//! (`/_sim/requests/early-retries`, `/_sim/requests/busiest-window`).
//!
//! Owns only request parsing and status mapping; every action delegates to the
//! [`Simulator`] handle, as the rest of `/_sim` does.

use super::{ForcedThrottle, RequestFilter, busiest_window};
use crate::Simulator;
use actix_web::{HttpResponse, web};
use chrono::TimeDelta;
use serde::Deserialize;
use serde_json::json;

/// Mounts the routes; called inside the `/_sim` scope.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/throttles")
                .route(web::get().to(list_throttles))
                .route(web::post().to(add_throttle))
                .route(web::delete().to(clear_throttles)),
        )
        .route("/requests/early-retries", web::get().to(early_retries))
        .route("/requests/busiest-window", web::get().to(busiest));
}

/// `GET /_sim/requests/busiest-window` query, besides the [`RequestFilter`].
#[derive(Debug, Deserialize)]
struct WindowQuery {
    /// Window length, in provider seconds.
    seconds: u64,
}

/// `GET /_sim/throttles`: forced throttles that have not ended.
async fn list_throttles(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.throttle_windows())
}

/// `POST /_sim/throttles` with a [`ForcedThrottle`]: 201 with the window set.
async fn add_throttle(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let throttle: ForcedThrottle = match serde_json::from_slice(&body) {
        Ok(throttle) => throttle,
        Err(err) => return bad_request(&err.to_string()),
    };
    if let Err(message) = throttle.validate() {
        return bad_request(&message);
    }
    HttpResponse::Created().json(sim.force_throttle(throttle))
}

/// `DELETE /_sim/throttles`: ends every forced throttle.
async fn clear_throttles(sim: web::Data<Simulator>) -> HttpResponse {
    sim.clear_throttle_windows();
    HttpResponse::NoContent().finish()
}

/// `GET /_sim/requests/early-retries`: requests that came before the
/// `Retry-After` they were given had elapsed.
async fn early_retries(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.early_retries())
}

/// `GET /_sim/requests/busiest-window?seconds=20&tenant=…&writes=true`: the most
/// matching requests in any window that long.
async fn busiest(
    sim: web::Data<Simulator>,
    window: web::Query<WindowQuery>,
    filter: web::Query<RequestFilter>,
) -> HttpResponse {
    let Some(span) = i64::try_from(window.seconds)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .filter(|span| *span > TimeDelta::zero())
    else {
        return bad_request("seconds must be a positive number of seconds");
    };
    let requests = sim.requests_where(&filter);
    HttpResponse::Ok().json(json!({
        "seconds": window.seconds,
        "requests": busiest_window(&requests, span),
    }))
}

fn bad_request(message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message }))
}
