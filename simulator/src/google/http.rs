//! actix-web handlers for Calendar v3 `events.watch` / `channels.stop` and Gmail
//! v1 `users.watch` / `users.stop`.
//!
//! Every handler follows Google's order (the shared [`exchange`] prologue):
//! authenticate the bearer token, consult the fault rules, then validate and act
//! on the model. This module keeps what is Google's own: its error wording, the
//! journal's view of a request (tenant = the OAuth client id, resource =
//! calendarId / mailbox, subscription id = channel id) and the `sync` message.
//! The state lock is never held across an await; the `sync` message is sent
//! from a spawned task after the answer, as Google sends it independently of
//! the watch response — or, with `google_sync_before_answer`, before the answer
//! (the race a subscriber must survive, pinned).

use crate::Simulator;
use crate::exchange::{self, Dialect, ErrorAnswer};
use crate::faults::Fault;
use crate::google::model::{GoogleCaller, GoogleError, GoogleState};
use crate::google::{delivery, quota, wire};
use crate::journal::{Operation, lock};
use crate::limits::{Charge, Throttle};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::Value;

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

/// A Google API request in flight (tenant = the OAuth client id, subscription
/// id = the channel id).
pub(super) type Exchange = exchange::Exchange<GoogleDialect>;

/// How Google words its answers: errors in Google's `error` object with
/// `errors[].reason`, no per-request headers.
pub(super) struct GoogleDialect;

impl ErrorAnswer for GoogleError {
    fn status(&self) -> u16 {
        self.status
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after_seconds
    }
}

impl Dialect for GoogleDialect {
    type Caller = GoogleCaller;
    type Error = GoogleError;

    const JSON_CONTENT_TYPE: &'static str = wire::GOOGLE_JSON_CONTENT_TYPE;
    const WWW_AUTHENTICATE: &'static str =
        "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";

    fn open(_req: &HttpRequest) -> Self {
        Self
    }

    /// Google journals the client id of any token it ever issued, even one it
    /// now refuses.
    fn tenant_of_token(sim: &Simulator, bearer: Option<&str>) -> Option<String> {
        lock(&sim.shared.google).client_of(bearer)
    }

    fn authenticate(
        sim: &Simulator,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(GoogleCaller, String), GoogleError> {
        let caller = lock(&sim.shared.google).authenticate(bearer, now)?;
        let client_id = caller.client_id.clone();
        Ok((caller, client_id))
    }

    fn fault_error(fault: Fault) -> GoogleError {
        match fault {
            Fault::Status {
                status,
                code,
                retry_after_seconds,
            } => GoogleError {
                status,
                message: canned_message(&code, status),
                reason: code,
                retry_after_seconds,
            },
            // Only events.watch commits before losing its answer: it acts, then
            // answers the fault.
            Fault::Timeout { .. } | Fault::LostAnswer { .. } => {
                GoogleError::new(504, "backendError", "Deadline exceeded")
            }
            Fault::ExpiredToken | Fault::InvalidGrant => GoogleError::unauthenticated(),
        }
    }

    fn charge(
        caller: &GoogleCaller,
        operation: Operation,
        path: &str,
        _resource: Option<&str>,
    ) -> Charge {
        quota::charge(caller, operation, path)
    }

    fn throttle_error(throttle: Throttle) -> GoogleError {
        quota::throttle_error(throttle)
    }

    fn error_body(&self, _sim: &Simulator, error: &GoogleError) -> Value {
        wire::error_json(error)
    }
}

/// What only Gmail's handlers need of an exchange.
impl Exchange {
    /// The prologue of a Gmail call on `users/{user_id}`: authenticate, resolve
    /// the mailbox (`me` is the token's account), charge the quotas, then
    /// consult the fault rules, which match on the mailbox address.
    pub(super) async fn admit_mailbox(
        mut self,
        user_id: &str,
    ) -> Result<(Self, GoogleCaller, String), HttpResponse> {
        self.resource = Some(user_id.to_owned());
        let caller = match self.authenticate() {
            Ok(caller) => caller,
            Err(error) => return Err(self.fail(error)),
        };
        let email = GoogleState::mailbox(&caller, user_id);
        self.resource = Some(email.clone());
        let this = self.charge_limits(&caller).map_err(|answer| *answer)?;
        match this.fault() {
            Some(fault) => Err(this.faulted(fault).await),
            None => Ok((this, caller, email)),
        }
    }
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
    let mut ex = Exchange::begin(&sim, &req, Operation::Create, None, &body);
    ex.resource = Some(calendar_id.clone());
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    ex.subscription_id = parsed
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (ex, caller, lost_answer) = match ex.admit_committing().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let channel = {
        let now = sim.now();
        let mut google = lock(&sim.shared.google);
        google
            .validate_watch(&parsed.unwrap_or(Value::Null), &|url| sim.http_allowed(url))
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
    if let Some(fault) = lost_answer {
        // The channel exists and delivers; the caller never hears of it.
        return ex.faulted(fault).await;
    }
    ex.json(200, &wire::channel_json(&channel))
}

/// `POST /calendar/v3/channels/stop`.
async fn channels_stop(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let mut ex = Exchange::begin(&sim, &req, Operation::Delete, None, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    ex.subscription_id = parsed.get("id").and_then(Value::as_str).map(str::to_owned);
    ex.resource = ex
        .subscription_id
        .as_deref()
        .and_then(|id| lock(&sim.shared.google).calendar_of(id));
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = sim.now();
    let stopped = lock(&sim.shared.google).stop_channel(&caller, &parsed, now);
    match stopped {
        Ok(()) => ex.empty(204),
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
    let ex = Exchange::begin(&sim, &req, Operation::Create, None, &body);
    let (ex, caller, email) = match ex.admit_mailbox(&user_id).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
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
        Ok(body) => ex.json(200, &body),
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
    let ex = Exchange::begin(&sim, &req, Operation::Delete, None, &body);
    let (ex, _caller, email) = match ex.admit_mailbox(&user_id).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    lock(&sim.shared.google).stop_watch(&email);
    ex.empty(204)
}
