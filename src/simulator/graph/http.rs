//! actix-web handlers for Graph v1.0 `/subscriptions`: create, renew (PATCH),
//! delete, get, list and reauthorize.
//!
//! Every handler follows Graph's order: authenticate the bearer token, consult
//! the fault rules, then validate and act on the model. Each request is journaled
//! exactly once, with the status it was answered. Handlers never hold the state
//! lock across an await (the validation handshake runs unlocked).

use crate::simulator::Simulator;
use crate::simulator::faults::{Fault, FaultTarget};
use crate::simulator::graph::delivery;
use crate::simulator::graph::model::{Caller, CreatePolicy, GraphError};
use crate::simulator::graph::wire;
use crate::simulator::journal::{Operation, RecordedRequest, lock};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::time::Duration;

/// `WWW-Authenticate` Graph sends with a 401.
const WWW_AUTHENTICATE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";

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

/// One Graph request in flight: what it is about, and how to answer and journal
/// it.
struct Exchange {
    /// The simulator answering.
    sim: Simulator,
    /// Request method.
    method: String,
    /// Request path without query.
    path: String,
    /// Classified operation.
    operation: Operation,
    /// Bearer token from `Authorization`, if any.
    bearer: Option<String>,
    /// Tenant, once the token is known.
    tenant: Option<String>,
    /// Resource, once known.
    resource: Option<String>,
    /// Subscription id, once known.
    subscription_id: Option<String>,
    /// Body as journaled.
    recorded_body: Option<Value>,
    /// Provider time of arrival.
    at: DateTime<Utc>,
    /// `request-id` of this answer.
    request_id: String,
    /// The caller's `client-request-id`, or the request id when absent (as Graph).
    client_request_id: String,
}

impl Exchange {
    fn begin(
        sim: &Simulator,
        req: &HttpRequest,
        operation: Operation,
        subscription_id: Option<String>,
        raw_body: &[u8],
    ) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = req
            .headers()
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| request_id.clone());
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
        Self {
            sim: sim.clone(),
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            operation,
            bearer,
            tenant: None,
            resource: None,
            subscription_id,
            recorded_body: body_for_journal(raw_body),
            at: sim.now(),
            request_id,
            client_request_id,
        }
    }

    /// Resolves the bearer token; remembers the tenant for the journal.
    fn authenticate(&mut self) -> Result<Caller, GraphError> {
        let now = self.sim.now();
        let caller = lock(&self.sim.shared.graph).authenticate(self.bearer.as_deref(), now)?;
        self.tenant = Some(caller.tenant.clone());
        Ok(caller)
    }

    /// The fault rule hitting this request, if any (counts the rule down).
    fn fault(&self) -> Option<Fault> {
        self.sim.shared.faults.take(&FaultTarget {
            operation: self.operation,
            tenant: self.tenant.as_deref(),
            resource: self.resource.as_deref(),
            subscription_id: self.subscription_id.as_deref(),
        })
    }

    /// Answers as the fault says.
    async fn faulted(self, fault: Fault) -> HttpResponse {
        match fault {
            Fault::Status {
                status,
                code,
                retry_after_seconds,
            } => self.fail(GraphError {
                status,
                code,
                message: canned_message(status).to_owned(),
                retry_after_seconds,
            }),
            // Graph creates do not commit first here: a plain timeout.
            Fault::Timeout { seconds } | Fault::LostAnswer { seconds } => {
                let error = GraphError::new(504, "GatewayTimeout", canned_message(504));
                // Journal first: a client that gives up drops this future.
                self.record(error.status);
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                self.render_error(&error)
            }
            Fault::ExpiredToken => self.fail(GraphError::unauthenticated(
                "Access token has expired or is not yet valid.",
            )),
            // Never matched for Graph operations; answered sensibly anyway.
            Fault::InvalidGrant => self.fail(GraphError::unauthenticated(
                "Access token validation failure.",
            )),
        }
    }

    fn record(&self, status: u16) {
        self.sim.shared.journal.record(RecordedRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            operation: self.operation,
            tenant: self.tenant.clone(),
            resource: self.resource.clone(),
            subscription_id: self.subscription_id.clone(),
            status,
            at: self.at,
            body: self.recorded_body.clone(),
        });
    }

    fn fail(self, error: GraphError) -> HttpResponse {
        self.record(error.status);
        self.render_error(&error)
    }

    fn render_error(&self, error: &GraphError) -> HttpResponse {
        let body = wire::graph_error_json(
            error,
            &self.request_id,
            &self.client_request_id,
            self.sim.now(),
        );
        let mut response = self.builder(error.status);
        if error.status == 401 {
            response.insert_header((header::WWW_AUTHENTICATE, WWW_AUTHENTICATE));
        }
        if let Some(seconds) = error.retry_after_seconds {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response
            .content_type(wire::GRAPH_JSON_CONTENT_TYPE)
            .body(body.to_string())
    }

    fn json(self, status: u16, body: &Value) -> HttpResponse {
        self.record(status);
        self.builder(status)
            .content_type(wire::GRAPH_JSON_CONTENT_TYPE)
            .body(body.to_string())
    }

    fn empty(self, status: u16) -> HttpResponse {
        self.record(status);
        self.builder(status).finish()
    }

    fn builder(&self, status: u16) -> actix_web::HttpResponseBuilder {
        let mut builder = HttpResponse::build(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        builder
            .insert_header(("request-id", self.request_id.clone()))
            .insert_header(("client-request-id", self.client_request_id.clone()));
        builder
    }

    fn policy(&self) -> CreatePolicy {
        CreatePolicy {
            require_https: self.sim.shared.config.require_https,
        }
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
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }

    let now = sim.now();
    let new = {
        let graph = lock(&sim.shared.graph);
        graph.validate_create(&parsed.unwrap_or(Value::Null), now, ex.policy())
    };
    let new = match new {
        Ok(new) => new,
        Err(error) => return ex.fail(error),
    };
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
    let mut ex = Exchange::begin(&sim, &req, Operation::Renew, Some(id.clone()), &body);
    ex.resource = lock(&sim.shared.graph).resource_of(&id);
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }

    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let update = {
        let now = sim.now();
        lock(&sim.shared.graph).validate_update(&caller, &id, &parsed, now, ex.policy())
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
    let mut ex = Exchange::begin(&sim, &req, Operation::Delete, Some(id.clone()), &body);
    ex.resource = lock(&sim.shared.graph).resource_of(&id);
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
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
    let mut ex = Exchange::begin(&sim, &req, Operation::Get, Some(id.clone()), &[]);
    ex.resource = lock(&sim.shared.graph).resource_of(&id);
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
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
    let mut ex = Exchange::begin(&sim, &req, Operation::List, None, &[]);
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
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
    let mut ex = Exchange::begin(&sim, &req, Operation::Reauthorize, Some(id.clone()), &body);
    ex.resource = lock(&sim.shared.graph).resource_of(&id);
    let caller = match ex.authenticate() {
        Ok(caller) => caller,
        Err(error) => return ex.fail(error),
    };
    if let Some(fault) = ex.fault() {
        return ex.faulted(fault).await;
    }
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
    let ex = Exchange::begin(&sim, &req, Operation::Other, None, &body);
    ex.fail(GraphError::new(
        400,
        "BadRequest",
        format!("Resource not found for the segment '{segment}'."),
    ))
}

/// JSON as sent, a non-JSON body as a string, nothing for an empty body.
fn body_for_journal(raw: &[u8]) -> Option<Value> {
    if raw.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned())),
    )
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
