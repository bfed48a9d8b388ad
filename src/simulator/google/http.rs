//! actix-web handlers for Calendar v3 `events.watch` / `channels.stop` and Gmail
//! v1 `users.watch` / `users.stop`.
//!
//! Every handler follows Google's order: authenticate the bearer token, consult
//! the fault rules, then validate and act on the model. Each request is journaled
//! exactly once (tenant = the OAuth client id, resource = calendarId / mailbox,
//! subscription id = channel id). The state lock is never held across an await;
//! the `sync` message is sent from a spawned task after the answer, as Google
//! sends it independently of the watch response — or, with
//! `google_sync_before_answer`, before the answer (the race a subscriber must
//! survive, pinned).

use crate::simulator::Simulator;
use crate::simulator::faults::{Fault, FaultTarget};
use crate::simulator::google::model::{GoogleCaller, GoogleError, GoogleState};
use crate::simulator::google::{delivery, wire};
use crate::simulator::journal::{Operation, RecordedRequest, lock};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// `WWW-Authenticate` Google sends with a 401.
const WWW_AUTHENTICATE: &str =
    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";

/// Mounts `/calendar/v3` and `/gmail/v1`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/calendar/v3/calendars/{calendar_id}/events/watch")
                .route(web::post().to(events_watch)),
        )
        .service(web::resource("/calendar/v3/channels/stop").route(web::post().to(channels_stop)))
        .service(
            web::resource("/gmail/v1/users/{user_id}/watch").route(web::post().to(gmail_watch)),
        )
        .service(web::resource("/gmail/v1/users/{user_id}/stop").route(web::post().to(gmail_stop)));
}

/// One Google API request in flight.
struct Exchange {
    /// The simulator answering.
    sim: Simulator,
    /// Request method.
    method: String,
    /// Request path without query.
    path: String,
    /// Classified operation.
    operation: Operation,
    /// Bearer token, if any.
    bearer: Option<String>,
    /// OAuth client id of the token, once known.
    client_id: Option<String>,
    /// calendarId or mailbox.
    resource: Option<String>,
    /// Channel id.
    channel_id: Option<String>,
    /// Body as journaled.
    recorded_body: Option<Value>,
    /// Provider time of arrival.
    at: DateTime<Utc>,
}

impl Exchange {
    fn begin(sim: &Simulator, req: &HttpRequest, operation: Operation, raw_body: &[u8]) -> Self {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    token.trim().to_owned()
                }
                _ => String::new(),
            });
        let client_id = lock(&sim.shared.google).client_of(bearer.as_deref());
        let recorded_body =
            if raw_body.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(raw_body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(raw_body).into_owned())
                }))
            };
        Self {
            sim: sim.clone(),
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            operation,
            bearer,
            client_id,
            resource: None,
            channel_id: None,
            recorded_body,
            at: sim.now(),
        }
    }

    fn authenticate(&mut self) -> Result<GoogleCaller, GoogleError> {
        let now = self.sim.now();
        let caller = lock(&self.sim.shared.google).authenticate(self.bearer.as_deref(), now)?;
        self.client_id = Some(caller.client_id.clone());
        Ok(caller)
    }

    fn fault(&self) -> Option<Fault> {
        self.sim.shared.faults.take(&FaultTarget {
            operation: self.operation,
            tenant: self.client_id.as_deref(),
            resource: self.resource.as_deref(),
            subscription_id: self.channel_id.as_deref(),
        })
    }

    async fn faulted(self, fault: Fault) -> HttpResponse {
        match fault {
            Fault::Status {
                status,
                code,
                retry_after_seconds,
            } => self.fail(GoogleError {
                status,
                message: canned_message(&code, status),
                reason: code,
                retry_after_seconds,
            }),
            // Only events.watch commits before losing its answer (`lost`).
            Fault::Timeout { seconds } | Fault::LostAnswer { seconds } => self.lost(seconds).await,
            Fault::ExpiredToken | Fault::InvalidGrant => self.fail(GoogleError::unauthenticated()),
        }
    }

    /// Holds the answer for `seconds` of wall time, then a 504.
    async fn lost(self, seconds: u64) -> HttpResponse {
        let error = GoogleError::new(504, "backendError", "Deadline exceeded");
        // Journal first: a client that gives up drops this future.
        self.record(error.status);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        render_error(&error)
    }

    fn record(&self, status: u16) {
        self.sim.shared.journal.record(RecordedRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            operation: self.operation,
            tenant: self.client_id.clone(),
            resource: self.resource.clone(),
            subscription_id: self.channel_id.clone(),
            status,
            at: self.at,
            body: self.recorded_body.clone(),
        });
    }

    fn fail(self, error: GoogleError) -> HttpResponse {
        self.record(error.status);
        render_error(&error)
    }

    fn json(self, body: &Value) -> HttpResponse {
        self.record(200);
        HttpResponse::Ok()
            .content_type(wire::GOOGLE_JSON_CONTENT_TYPE)
            .body(body.to_string())
    }

    fn no_content(self) -> HttpResponse {
        self.record(204);
        HttpResponse::NoContent().finish()
    }
}

fn render_error(error: &GoogleError) -> HttpResponse {
    let mut response = HttpResponse::build(
        StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    if error.status == 401 {
        response.insert_header((header::WWW_AUTHENTICATE, WWW_AUTHENTICATE));
    }
    if let Some(seconds) = error.retry_after_seconds {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    response
        .content_type(wire::GOOGLE_JSON_CONTENT_TYPE)
        .body(wire::error_json(error).to_string())
}

/// The message Google words an injected error with.
fn canned_message(reason: &str, status: u16) -> String {
    match reason {
        "rateLimitExceeded" => "Rate Limit Exceeded".to_owned(),
        "userRateLimitExceeded" => "User Rate Limit Exceeded".to_owned(),
        "quotaExceeded" => "Quota exceeded".to_owned(),
        "notFound" => "Not Found".to_owned(),
        "forbidden" => "Forbidden".to_owned(),
        "backendError" => "Backend Error".to_owned(),
        _ => match status {
            429 => "Resource has been exhausted (e.g. check quota).".to_owned(),
            500 => "Internal error encountered.".to_owned(),
            503 => "The service is currently unavailable.".to_owned(),
            _ => reason.to_owned(),
        },
    }
}

/// `POST /calendar/v3/calendars/{calendarId}/events/watch`.
async fn events_watch(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    calendar_id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let calendar_id = calendar_id.into_inner();
    let mut ex = Exchange::begin(&sim, &req, Operation::Create, &body);
    ex.resource = Some(calendar_id.clone());
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    ex.channel_id = parsed
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    let lost_answer = match ex.fault() {
        Some(Fault::LostAnswer { seconds }) => Some(seconds),
        Some(fault) => return ex.faulted(fault).await,
        None => None,
    };
    let channel = {
        let now = sim.now();
        let mut google = lock(&sim.shared.google);
        google
            .validate_watch(
                &parsed.unwrap_or(Value::Null),
                sim.shared.config.require_https,
            )
            .map(|new| google.insert_channel(&caller, &calendar_id, new, now))
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(error) => return ex.fail(error),
    };

    let headers = wire::channel_headers(&channel, "sync", 1);
    let http = sim.shared.http.clone();
    let timeout = sim.shared.config.notification_timeout;
    let address = channel.address.clone();
    let sync = async move {
        let attempts = delivery::post_times(&http, &address, &headers, None, 1, timeout).await;
        tracing::debug!(address, ?attempts, "simulator sent the sync message");
    };
    if sim.shared.config.google_sync_before_answer {
        sync.await;
    } else {
        tokio::spawn(sync);
    }
    if let Some(seconds) = lost_answer {
        // The channel exists and delivers; the caller never hears of it.
        return ex.lost(seconds).await;
    }
    ex.json(&wire::channel_json(&channel))
}

/// `POST /calendar/v3/channels/stop`.
async fn channels_stop(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let mut ex = Exchange::begin(&sim, &req, Operation::Delete, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    ex.channel_id = parsed.get("id").and_then(Value::as_str).map(str::to_owned);
    ex.resource = ex
        .channel_id
        .as_deref()
        .and_then(|id| lock(&sim.shared.google).calendar_of(id));
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
    let now = sim.now();
    let stopped = lock(&sim.shared.google).stop_channel(&caller, &parsed, now);
    match stopped {
        Ok(()) => ex.no_content(),
        Err(error) => ex.fail(error),
    }
}

/// `POST /gmail/v1/users/{userId}/watch`.
async fn gmail_watch(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    user_id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let user_id = user_id.into_inner();
    let mut ex = Exchange::begin(&sim, &req, Operation::Create, &body);
    ex.resource = Some(user_id.clone());
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    let email = GoogleState::mailbox(&caller, &user_id);
    ex.resource = Some(email.clone());
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = {
        let now = sim.now();
        let mut google = lock(&sim.shared.google);
        google.validate_gmail_watch(&parsed).map(|new| {
            let (watch, history_id) = google.insert_watch(&caller, &email, &user_id, new, now);
            wire::watch_response_json(&watch, history_id)
        })
    };
    match answer {
        Ok(body) => ex.json(&body),
        Err(error) => ex.fail(error),
    }
}

/// `POST /gmail/v1/users/{userId}/stop`.
async fn gmail_stop(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    user_id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let user_id = user_id.into_inner();
    let mut ex = Exchange::begin(&sim, &req, Operation::Delete, &body);
    ex.resource = Some(user_id.clone());
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    let email = GoogleState::mailbox(&caller, &user_id);
    ex.resource = Some(email.clone());
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
    lock(&sim.shared.google).stop_watch(&email);
    ex.no_content()
}
