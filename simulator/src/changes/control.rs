//! The `/_sim/changes` control routes: [`Simulator`]'s change-log methods over
//! HTTP, mounted inside the `/_sim` scope.
//!
//! Owns request parsing and status mapping only; every action delegates to the
//! handle. Bodies are the Rust types' JSON. Not journaled (the journal is about
//! the provider API).

use crate::Simulator;
use crate::changes::{ChangeError, ChangeRequest, FeedRef, ReleaseSelector};
use actix_web::{HttpResponse, web};
use chrono::TimeDelta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Mounts `/changes...` inside `/_sim`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/changes")
                .route(web::post().to(make_change))
                .route(web::get().to(list_changes)),
        )
        .route("/changes/held", web::get().to(held))
        .route("/changes/release", web::post().to(release))
        .route("/changes/mute", web::post().to(mute))
        .route("/changes/resume", web::post().to(resume))
        .route("/changes/expire", web::post().to(expire))
        .service(
            web::resource("/changes/token-max-age")
                .route(web::get().to(max_age))
                .route(web::post().to(set_max_age)),
        );
}

/// `POST /_sim/changes/token-max-age` body.
#[derive(Debug, Deserialize)]
struct MaxAgeRequest {
    /// Provider seconds a token lives; `null` lifts the limit.
    seconds: Option<i64>,
}

async fn make_change(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: ChangeRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match sim.make_change(request).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => change_error(&error),
    }
}

/// `GET /_sim/changes?provider=...&resource=...`.
async fn list_changes(sim: web::Data<Simulator>, query: web::Query<FeedRef>) -> HttpResponse {
    match sim.feed_changes(&query) {
        Ok(changes) => HttpResponse::Ok().json(changes),
        Err(error) => change_error(&error),
    }
}

async fn held(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.held_changes())
}

async fn release(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let selector: ReleaseSelector = if body.is_empty() {
        ReleaseSelector::default()
    } else {
        match parse(&body) {
            Ok(selector) => selector,
            Err(message) => return bad_request(&message),
        }
    };
    match sim.release_changes(&selector).await {
        Ok(reports) => HttpResponse::Ok().json(reports),
        Err(error) => change_error(&error),
    }
}

async fn mute(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    muting(&sim, &body, true)
}

async fn resume(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    muting(&sim, &body, false)
}

fn muting(sim: &Simulator, body: &[u8], muted: bool) -> HttpResponse {
    let feed: FeedRef = match parse(body) {
        Ok(feed) => feed,
        Err(message) => return bad_request(&message),
    };
    let done = if muted {
        sim.mute_feed(&feed)
    } else {
        sim.resume_feed(&feed)
    };
    match done {
        Ok(()) => HttpResponse::Ok().json(json!({
            "provider": feed.provider,
            "resource": feed.resource,
            "muted": muted,
        })),
        Err(error) => change_error(&error),
    }
}

async fn expire(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let feed: FeedRef = match parse(&body) {
        Ok(feed) => feed,
        Err(message) => return bad_request(&message),
    };
    match sim.expire_feed_tokens(&feed) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(error) => change_error(&error),
    }
}

async fn max_age(sim: web::Data<Simulator>) -> HttpResponse {
    max_age_view(&sim)
}

async fn set_max_age(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: MaxAgeRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let max_age = match request.seconds {
        None => None,
        Some(seconds) if seconds >= 0 => match TimeDelta::try_seconds(seconds) {
            Some(age) => Some(age),
            None => return bad_request("seconds out of range"),
        },
        Some(_) => return bad_request("seconds must not be negative"),
    };
    sim.set_feed_token_max_age(max_age);
    max_age_view(&sim)
}

fn max_age_view(sim: &Simulator) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "seconds": sim.feed_token_max_age().map(|age| age.num_seconds()),
    }))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| err.to_string())
}

fn bad_request(message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message }))
}

fn change_error(error: &ChangeError) -> HttpResponse {
    let body = json!({ "error": error.to_string() });
    match error {
        ChangeError::InvalidFeed { .. } => HttpResponse::BadRequest().json(body),
        ChangeError::ItemExists { .. } => HttpResponse::Conflict().json(body),
        ChangeError::ItemNotFound { .. }
        | ChangeError::NoLiveItem
        | ChangeError::NotHeld { .. } => HttpResponse::NotFound().json(body),
    }
}
