//! actix-web handlers for Graph v1.0 `/subscriptions`: create, renew (PATCH),
//! delete, get, list and reauthorize.
//!
//! Every handler follows Graph's order (the shared [`exchange`] prologue):
//! authenticate the bearer token, consult the fault rules, then validate and act
//! on the model. This module keeps what is Graph's own: its answers' request ids
//! and error wording, and the validation handshake. Handlers never hold the
//! state lock across an await (the validation handshake runs unlocked).

use crate::Simulator;
use crate::exchange::{self, Dialect, ErrorAnswer};
use crate::faults::Fault;
use crate::graph::delivery;
use crate::graph::model::{self, Caller, CreatePolicy, GraphError};
use crate::graph::throttling;
use crate::graph::wire;
use crate::journal::{Operation, lock};
use crate::limits::{Charge, Throttle};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

/// Mounts `/v1.0`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/v1.0")
            .service(
                web::resource("/subscriptions")
                    .route(web::post().to(create))
                    .route(web::get().to(list))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/subscriptions/{id}/reauthorize")
                    .route(web::post().to(reauthorize))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/subscriptions/{id}")
                    .route(web::get().to(get))
                    .route(web::patch().to(update))
                    .route(web::delete().to(delete))
                    .default_service(web::to(method_not_allowed)),
            )
            .default_service(web::to(unknown_segment)),
    );
}

/// A Graph request in flight.
pub(super) type Exchange = exchange::Exchange<GraphDialect>;

/// How Graph words its answers: every answer carries `request-id` and
/// `client-request-id`, errors come in Graph's `error` object with
/// `innerError`.
pub(super) struct GraphDialect {
    /// `request-id` of this answer.
    request_id: String,
    /// The caller's `client-request-id`, or the request id when absent (as Graph).
    client_request_id: String,
}

impl ErrorAnswer for GraphError {
    fn status(&self) -> u16 {
        self.status
    }

    fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after_seconds
    }
}

impl Dialect for GraphDialect {
    type Caller = Caller;
    type Error = GraphError;

    const JSON_CONTENT_TYPE: &'static str = wire::GRAPH_JSON_CONTENT_TYPE;
    const WWW_AUTHENTICATE: &'static str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";

    fn open(req: &HttpRequest) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = req
            .headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| request_id.clone());
        Self {
            request_id,
            client_request_id,
        }
    }

    fn authenticate(
        sim: &Simulator,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Caller, String), GraphError> {
        let caller = lock(&sim.shared.graph).authenticate(bearer, now)?;
        let tenant = caller.tenant.clone();
        Ok((caller, tenant))
    }

    fn fault_error(fault: Fault) -> GraphError {
        match fault {
            Fault::Status {
                status,
                code,
                retry_after_seconds,
            } => GraphError {
                status,
                code,
                message: canned_message(status).to_owned(),
                retry_after_seconds,
            },
            // Held answers end in a gateway timeout (a lost create commits first).
            Fault::Timeout { .. } | Fault::LostAnswer { .. } => {
                GraphError::new(504, "GatewayTimeout", canned_message(504))
            }
            Fault::ExpiredToken => {
                GraphError::unauthenticated("Access token has expired or is not yet valid.")
            }
            // Never matched for Graph operations; answered sensibly anyway.
            Fault::InvalidGrant => GraphError::unauthenticated("Access token validation failure."),
        }
    }

    fn charge(caller: &Caller, operation: Operation, path: &str, resource: Option<&str>) -> Charge {
        throttling::charge(caller, operation, path, resource)
    }

    fn throttle_error(throttle: Throttle) -> GraphError {
        throttling::throttle_error(throttle)
    }

    fn error_body(&self, sim: &Simulator, error: &GraphError) -> Value {
        wire::graph_error_json(error, &self.request_id, &self.client_request_id, sim.now())
    }

    fn builder(&self, status: u16) -> HttpResponseBuilder {
        let mut builder = HttpResponse::build(exchange::status_code(status));
        builder
            .insert_header(("request-id", self.request_id.clone()))
            .insert_header(("client-request-id", self.client_request_id.clone()));
        builder
    }
}

/// What only Graph's handlers need of an exchange.
impl Exchange {
    /// Starts answering a request on subscription `id`; fault rules and the
    /// journal see its resource when it is (or was) stored.
    fn begin_on(
        sim: &Simulator,
        req: &HttpRequest,
        operation: Operation,
        id: &str,
        raw_body: &[u8],
    ) -> Self {
        let mut ex = Self::begin(sim, req, operation, Some(id.to_owned()), raw_body);
        ex.resource = lock(&sim.shared.graph).resource_of(id);
        ex
    }

    /// The handshake on `url`, unless the simulator was told to skip it.
    async fn handshake(&self, url: &str) -> Result<(), GraphError> {
        let config = &self.sim.shared.config;
        if !config.validate_endpoints {
            return Ok(());
        }
        delivery::validate_endpoint(&self.sim.shared.http, url, config.validation_timeout).await
    }
}

/// `POST /v1.0/subscriptions`.
async fn create(sim: web::Data<Simulator>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut ex = Exchange::begin(&sim, &req, Operation::Create, None, &body);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    ex.resource = parsed
        .as_ref()
        .and_then(|v| v.get("resource"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (mut ex, caller, lost_answer) = match ex.admit_committing().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };

    let now = sim.now();
    let http_allowed = |url: &Url| sim.http_allowed(url);
    let policy = CreatePolicy {
        http_allowed: &http_allowed,
    };
    let new = {
        let graph = lock(&sim.shared.graph);
        graph.validate_create(&parsed.unwrap_or(Value::Null), now, policy)
    };
    let new = match new {
        Ok(new) => new,
        Err(error) => return ex.fail(error),
    };
    if caller.app_only && model::names_me(&new.resource) {
        return ex.fail(GraphError::me_requires_delegated());
    }
    if let Err(error) = ex.handshake(&new.notification_url).await {
        return ex.fail(error);
    }
    if let Some(url) = &new.lifecycle_notification_url
        && let Err(error) = ex.handshake(url).await
    {
        return ex.fail(error);
    }

    let subscription = {
        let now = sim.now();
        let mut graph = lock(&sim.shared.graph);
        graph.purge_expired(now);
        graph.insert(&caller, new, now)
    };
    ex.subscription_id = Some(subscription.id.clone());
    if let Some(fault) = lost_answer {
        // The subscription exists and delivers; the caller never hears of it.
        return ex.faulted(fault).await;
    }
    ex.json(201, &wire::subscription_json(&subscription, true))
}

/// `PATCH /v1.0/subscriptions/{id}`: renew, and/or move the notification URL.
async fn update(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = id.into_inner();
    let ex = Exchange::begin_on(&sim, &req, Operation::Renew, &id, &body);
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };

    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let http_allowed = |url: &Url| sim.http_allowed(url);
    let policy = CreatePolicy {
        http_allowed: &http_allowed,
    };
    let update = {
        let now = sim.now();
        lock(&sim.shared.graph).validate_update(&caller, &id, &parsed, now, policy)
    };
    let update = match update {
        Ok(update) => update,
        Err(error) => return ex.fail(error),
    };
    if let Some(url) = &update.notification_url
        && let Err(error) = ex.handshake(url).await
    {
        return ex.fail(error);
    }
    let updated = {
        let now = sim.now();
        lock(&sim.shared.graph).apply_update(&caller, &id, update, now)
    };
    match updated {
        Ok(subscription) => ex.json(200, &wire::subscription_json(&subscription, true)),
        // Expired during the handshake.
        Err(error) => ex.fail(error),
    }
}

/// `DELETE /v1.0/subscriptions/{id}`.
async fn delete(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = id.into_inner();
    let ex = Exchange::begin_on(&sim, &req, Operation::Delete, &id, &body);
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = sim.now();
    let deleted = lock(&sim.shared.graph).delete(&caller, &id, now);
    match deleted {
        Ok(()) => ex.empty(204),
        Err(error) => ex.fail(error),
    }
}

/// `GET /v1.0/subscriptions/{id}`.
async fn get(sim: web::Data<Simulator>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    let ex = Exchange::begin_on(&sim, &req, Operation::Get, &id, &[]);
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = sim.now();
    let found = lock(&sim.shared.graph)
        .get(&caller, &id, now)
        .map(|s| wire::subscription_json(s, true));
    match found {
        Ok(body) => ex.json(200, &body),
        Err(error) => ex.fail(error),
    }
}

/// `GET /v1.0/subscriptions`: the calling app's live subscriptions in its tenant.
async fn list(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let ex = Exchange::begin(&sim, &req, Operation::List, None, &[]);
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = sim.now();
    let mine = lock(&sim.shared.graph).list(&caller, now);
    ex.json(200, &wire::subscription_list_json(&mine))
}

/// `POST /v1.0/subscriptions/{id}/reauthorize`.
async fn reauthorize(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let id = id.into_inner();
    let ex = Exchange::begin_on(&sim, &req, Operation::Reauthorize, &id, &body);
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let now = sim.now();
    let done = lock(&sim.shared.graph).reauthorize(&caller, &id, now);
    match done {
        Ok(()) => ex.empty(200),
        Err(error) => ex.fail(error),
    }
}

/// A known path with a method Graph does not allow on it.
async fn method_not_allowed(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let ex = Exchange::begin(&sim, &req, Operation::Other, None, &body);
    ex.fail(GraphError::new(
        405,
        "BadRequest",
        "Specified HTTP method is not allowed for the request uri.",
    ))
}

/// Any other path under `/v1.0`: Graph answers 400 naming the first segment it
/// does not know.
async fn unknown_segment(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let segment = req
        .path()
        .trim_start_matches("/v1.0")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut ex = Exchange::begin(&sim, &req, Operation::Other, None, &body);
    if segment.eq_ignore_ascii_case("me") {
        // Graph knows `me`; it only needs a user behind the token.
        match ex.authenticate() {
            Err(error) => return ex.fail(error),
            Ok(caller) if caller.app_only => {
                return ex.fail(GraphError::me_requires_delegated());
            }
            Ok(_) => {}
        }
    }
    ex.fail(GraphError::new(
        400,
        "BadRequest",
        format!("Resource not found for the segment '{segment}'."),
    ))
}

/// Message for an injected status fault, in Graph's tone.
fn canned_message(status: u16) -> &'static str {
    match status {
        400 => "Bad request.",
        403 => "Access is denied. Check credentials and try again.",
        404 => "The object was not found.",
        409 => "Conflict.",
        429 => "Too many requests. Retry after the number of seconds in the Retry-After header.",
        500 => "An internal server error occurred.",
        502 => "Bad gateway.",
        503 => "The service is temporarily unavailable. Please retry later.",
        504 => "The operation timed out.",
        _ => "The request failed.",
    }
}
