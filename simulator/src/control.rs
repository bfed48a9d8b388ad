//! The control API under `/_sim/`: the [`Simulator`] handle's methods over HTTP,
//! for the demo, shell scripts and tests in other processes.
//!
//! Owns only request parsing and status mapping; every action delegates to the
//! handle. Bodies are JSON in the same shapes the Rust types serialize to.
//! Control requests are not journaled (the journal is about the provider API).

use crate::{
    ChangeType, FaultRule, IdentityProvider, LifecycleEvent, RegisteredApp, RequestFilter,
    SimError, Simulator, SimulatorConfig,
};
use actix_web::{HttpResponse, web};
use chrono::TimeDelta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Mounts `/_sim`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/_sim")
            .service(
                web::resource("/faults")
                    .route(web::get().to(list_faults))
                    .route(web::post().to(add_fault))
                    .route(web::delete().to(clear_faults)),
            )
            .service(
                web::resource("/requests")
                    .route(web::get().to(list_requests))
                    .route(web::delete().to(clear_requests)),
            )
            .configure(crate::limits::routes)
            .service(
                web::resource("/apps")
                    .route(web::get().to(list_apps))
                    .route(web::post().to(register_app)),
            )
            .route("/subscriptions", web::get().to(list_subscriptions))
            .route("/notify", web::post().to(notify))
            .route("/lifecycle", web::post().to(lifecycle))
            .route("/clock", web::get().to(clock))
            .route("/clock/advance", web::post().to(advance_clock))
            .route("/config", web::get().to(config_view))
            .route("/google/channels", web::get().to(list_google_channels))
            .route("/google/notify", web::post().to(google_notify))
            .route("/google/gmail-watches", web::get().to(list_gmail_watches))
            .route("/google/gmail-push", web::post().to(gmail_push))
            .service(
                web::resource("/google/push-endpoint")
                    .route(web::get().to(push_endpoint))
                    .route(web::post().to(set_push_endpoint)),
            )
            .configure(crate::changes::control::routes),
    );
}

/// `POST /_sim/notify` body.
#[derive(Debug, Deserialize)]
struct NotifyRequest {
    /// Subscription to notify about.
    subscription_id: String,
    /// `created` unless given.
    #[serde(default = "default_change_type")]
    change_type: ChangeType,
    /// How many POSTs of the same body; 1 unless given.
    #[serde(default = "one")]
    times: u32,
}

fn default_change_type() -> ChangeType {
    ChangeType::Created
}

fn one() -> u32 {
    1
}

/// `POST /_sim/lifecycle` body.
#[derive(Debug, Deserialize)]
struct LifecycleRequest {
    /// Subscription the event is about.
    subscription_id: String,
    /// `reauthorizationRequired`, `subscriptionRemoved` or `missed`.
    event: LifecycleEvent,
}

/// `POST /_sim/google/notify` body.
#[derive(Debug, Deserialize)]
struct GoogleNotifyRequest {
    /// Calendar channel to send an `exists` message on.
    channel_id: String,
    /// How many POSTs of the same message number; 1 unless given.
    #[serde(default = "one")]
    times: u32,
}

/// `POST /_sim/google/gmail-push` body.
#[derive(Debug, Deserialize)]
struct GmailPushRequest {
    /// Mailbox with a live watch.
    email: String,
}

/// `POST /_sim/google/push-endpoint` body.
#[derive(Debug, Deserialize)]
struct PushEndpointRequest {
    /// Pub/Sub push endpoint URL; `null` clears it.
    endpoint: Option<String>,
}

/// `POST /_sim/clock/advance` body.
#[derive(Debug, Deserialize)]
struct AdvanceRequest {
    /// Provider seconds to jump forward.
    seconds: i64,
}

/// `GET /_sim/apps`: the registered client ids by identity provider (never
/// the secrets).
async fn list_apps(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "microsoft": sim.registered_client_ids(IdentityProvider::Microsoft),
        "google": sim.registered_client_ids(IdentityProvider::Google),
    }))
}

/// `POST /_sim/apps` with a [`RegisteredApp`]: registers it (replacing the
/// secret of one already registered).
async fn register_app(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let app: RegisteredApp = match parse(&body) {
        Ok(app) => app,
        Err(message) => return bad_request(&message),
    };
    if app.client_id.is_empty() || app.client_secret.is_empty() {
        return bad_request("client_id and client_secret must not be empty");
    }
    sim.register_app(app);
    list_apps(sim).await
}

async fn list_faults(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.faults())
}

async fn add_fault(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let rule: FaultRule = match parse(&body) {
        Ok(rule) => rule,
        Err(message) => return bad_request(&message),
    };
    if let Err(message) = rule.validate() {
        return bad_request(&message);
    }
    sim.inject_fault(rule.clone());
    HttpResponse::Created().json(rule)
}

async fn clear_faults(sim: web::Data<Simulator>) -> HttpResponse {
    sim.clear_faults();
    HttpResponse::NoContent().finish()
}

/// `GET /_sim/requests`, narrowed by a [`RequestFilter`] in the query string
/// (`?tenant=…&app=…&user=…&operation=renew&writes=true&status=429`).
async fn list_requests(
    sim: web::Data<Simulator>,
    filter: web::Query<RequestFilter>,
) -> HttpResponse {
    HttpResponse::Ok().json(sim.requests_where(&filter))
}

async fn clear_requests(sim: web::Data<Simulator>) -> HttpResponse {
    sim.clear_requests();
    HttpResponse::NoContent().finish()
}

async fn list_subscriptions(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.subscriptions())
}

async fn notify(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: NotifyRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match sim
        .notify(&request.subscription_id, request.change_type, request.times)
        .await
    {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => sim_error(&error),
    }
}

async fn lifecycle(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: LifecycleRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match sim.lifecycle(&request.subscription_id, request.event).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => sim_error(&error),
    }
}

async fn list_google_channels(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.google_channels())
}

async fn list_gmail_watches(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(sim.gmail_watches())
}

async fn google_notify(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: GoogleNotifyRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match sim.google_notify(&request.channel_id, request.times).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => sim_error(&error),
    }
}

async fn gmail_push(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: GmailPushRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    match sim.gmail_push(&request.email).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(error) => sim_error(&error),
    }
}

async fn push_endpoint(sim: web::Data<Simulator>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "endpoint": sim.gmail_push_endpoint() }))
}

async fn set_push_endpoint(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: PushEndpointRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    if let Some(endpoint) = &request.endpoint
        && url::Url::parse(endpoint).is_err()
    {
        return bad_request("endpoint is not a URL");
    }
    sim.set_gmail_push_endpoint(request.endpoint);
    push_endpoint(sim).await
}

async fn clock(sim: web::Data<Simulator>) -> HttpResponse {
    clock_view(&sim)
}

async fn advance_clock(sim: web::Data<Simulator>, body: web::Bytes) -> HttpResponse {
    let request: AdvanceRequest = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let Some(by) = TimeDelta::try_seconds(request.seconds) else {
        return bad_request("seconds out of range");
    };
    sim.advance(by);
    clock_view(&sim)
}

async fn config_view(sim: web::Data<Simulator>) -> HttpResponse {
    let SimulatorConfig {
        allow_http_loopback,
        allow_http_hosts,
        accept_any_credentials,
        apps: _,
        validation_timeout,
        validate_endpoints,
        notification_timeout,
        gmail_push_endpoint: _,
        google_sync_before_answer,
        journal_capacity,
        limits,
    } = sim.config();
    HttpResponse::Ok().json(json!({
        "allow_http_loopback": allow_http_loopback,
        "allow_http_hosts": allow_http_hosts,
        "accept_any_credentials": accept_any_credentials,
        "validation_timeout_ms": validation_timeout.as_millis(),
        "validate_endpoints": validate_endpoints,
        "notification_timeout_ms": notification_timeout.as_millis(),
        "gmail_push_endpoint": sim.gmail_push_endpoint(),
        "google_sync_before_answer": google_sync_before_answer,
        "journal_capacity": journal_capacity,
        "journal_dropped": sim.requests_dropped(),
        "limits": limits,
    }))
}

fn clock_view(sim: &Simulator) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "now": sim.now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "offset_seconds": sim.clock().offset().num_seconds(),
    }))
}

/// The body as `T`, or why it is not one.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| err.to_string())
}

fn bad_request(message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message }))
}

fn sim_error(error: &SimError) -> HttpResponse {
    let body = json!({ "error": error.to_string() });
    match error {
        SimError::SubscriptionNotFound { .. } => HttpResponse::NotFound().json(body),
        SimError::ReauthorizationPending { .. } => HttpResponse::Conflict().json(body),
        SimError::ChannelNotFound { .. } | SimError::WatchNotFound { .. } => {
            HttpResponse::NotFound().json(body)
        }
        SimError::NoPushEndpoint => HttpResponse::Conflict().json(body),
    }
}
