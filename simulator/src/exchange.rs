//! One request to a simulated provider API while it is being answered, and the
//! order every provider family answers in: authenticate the bearer token,
//! consult the fault rules, then let the handler act on its model. Each request
//! is journaled exactly once, with the status it was answered.
//!
//! Owns what Graph and Google share: reading the bearer token, journaling the
//! body, matching fault rules, holding an answer for a `Timeout` or
//! `LostAnswer` fault (journaled first, then a 504 after the wait), and the
//! skeleton of an error response (`WWW-Authenticate` on 401, `Retry-After`).
//! What differs per family — error body shapes and wordings, how an injected
//! fault is worded, extra response headers, token rules — lives in the family's
//! [`Dialect`]. It must not touch a family's state except through that trait.
//!
//! Between authentication and the fault rules, the providers' request limits
//! (`limits/`) are consulted; the family says what a request is charged
//! ([`Dialect::charge`]) and how a refusal is worded ([`Dialect::throttle_error`]).
//!
//! The token endpoints (`graph/login.rs`, `google/oauth.rs`) answer without a
//! bearer token and in OAuth's shapes; they share only the helpers at the end
//! (status codes, the redacted form for the journal).

use crate::Simulator;
use crate::faults::{Fault, FaultTarget};
use crate::journal::{Operation, RecordedRequest};
use crate::limits::{Charge, LimitKind, MailboxPermit, Throttle};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// What an error answer must tell the shared plumbing.
pub(crate) trait ErrorAnswer {
    /// HTTP status.
    fn status(&self) -> u16;
    /// Seconds for a `Retry-After` header; none when absent.
    fn retry_after_seconds(&self) -> Option<u64>;
}

/// How one provider family words its answers and checks its tokens.
pub(crate) trait Dialect: Sized {
    /// Who calls, from a valid access token.
    type Caller;
    /// The family's error, rendered with [`Dialect::error_body`].
    type Error: ErrorAnswer;

    /// `Content-Type` of the family's JSON answers.
    const JSON_CONTENT_TYPE: &'static str;
    /// `WWW-Authenticate` the family sends with a 401.
    const WWW_AUTHENTICATE: &'static str;

    /// The per-request state the family's answers carry (Graph: request ids).
    fn open(req: &HttpRequest) -> Self;

    /// The tenant the journal names before the token is checked, if the family
    /// knows one from the token alone.
    fn tenant_of_token(_sim: &Simulator, _bearer: Option<&str>) -> Option<String> {
        None
    }

    /// Resolves the bearer token at provider time `now`; on success the caller
    /// and the tenant the journal and fault rules know it by.
    fn authenticate(
        sim: &Simulator,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Self::Caller, String), Self::Error>;

    /// The error an injected fault answers with (for `Timeout` and
    /// `LostAnswer`: the 504 sent once the hold is over).
    fn fault_error(fault: Fault) -> Self::Error;

    /// What an authenticated request draws on under the provider's limits.
    fn charge(
        caller: &Self::Caller,
        operation: Operation,
        path: &str,
        resource: Option<&str>,
    ) -> Charge;

    /// The error a provider limit (or a forced throttle) answers with.
    fn throttle_error(throttle: Throttle) -> Self::Error;

    /// The JSON body of an error answer, rendered when it is sent.
    fn error_body(&self, sim: &Simulator, error: &Self::Error) -> Value;

    /// A response builder with the headers every answer of the family carries.
    fn builder(&self, status: u16) -> HttpResponseBuilder {
        HttpResponse::build(status_code(status))
    }
}

/// One API request in flight: what it is about, and how to answer and journal
/// it.
pub(crate) struct Exchange<D> {
    /// The simulator answering.
    pub(crate) sim: Simulator,
    /// Request method.
    method: String,
    /// Request path without query.
    path: String,
    /// Classified operation.
    operation: Operation,
    /// Bearer token from `Authorization`, if any.
    bearer: Option<String>,
    /// Tenant the journal and fault rules name (Google: the OAuth client id),
    /// once known.
    pub(crate) tenant: Option<String>,
    /// Resource (Graph resource path, calendarId or mailbox), once known.
    pub(crate) resource: Option<String>,
    /// Subscription (or channel) id, once known.
    pub(crate) subscription_id: Option<String>,
    /// App (OAuth client id) of the token, once authenticated.
    app: Option<String>,
    /// Whose per-user budget the request draws on, once charged.
    user: Option<String>,
    /// The limit that refused the request, if one did.
    throttled_by: Option<LimitKind>,
    /// The mailbox slot this request holds while it is answered; given back
    /// when the exchange is dropped.
    permit: Option<MailboxPermit>,
    /// Body as journaled.
    recorded_body: Option<Value>,
    /// Provider time of arrival.
    at: DateTime<Utc>,
    /// The family's per-request state.
    dialect: D,
}

impl<D: Dialect> Exchange<D> {
    /// Starts answering `req`.
    pub(crate) fn begin(
        sim: &Simulator,
        req: &HttpRequest,
        operation: Operation,
        subscription_id: Option<String>,
        raw_body: &[u8],
    ) -> Self {
        let dialect = D::open(req);
        let bearer = bearer_token(req);
        let tenant = D::tenant_of_token(sim, bearer.as_deref());
        Self {
            sim: sim.clone(),
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            operation,
            bearer,
            tenant,
            resource: None,
            subscription_id,
            app: None,
            user: None,
            throttled_by: None,
            permit: None,
            recorded_body: body_for_journal(raw_body),
            at: sim.now(),
            dialect,
        }
    }

    /// Resolves the bearer token; remembers the tenant for the journal.
    pub(crate) fn authenticate(&mut self) -> Result<D::Caller, D::Error> {
        let now = self.sim.now();
        let (caller, tenant) = D::authenticate(&self.sim, self.bearer.as_deref(), now)?;
        self.tenant = Some(tenant);
        Ok(caller)
    }

    /// Charges the request to the provider's limits; `Err` is the refusal,
    /// already journaled (boxed: it is large next to `Self`). Admitted, it holds
    /// its mailbox slot (if it takes one) until the exchange is dropped.
    pub(crate) fn charge_limits(mut self, caller: &D::Caller) -> Result<Self, Box<HttpResponse>> {
        let charge = D::charge(caller, self.operation, &self.path, self.resource.as_deref());
        self.app = Some(charge.app.clone());
        self.user.clone_from(&charge.user);
        let shared = &self.sim.shared;
        match shared
            .limits
            .admit(&shared.config.limits, &charge, self.sim.now())
        {
            Ok(permit) => {
                self.permit = permit;
                Ok(self)
            }
            Err(throttle) => {
                self.throttled_by = Some(throttle.limit);
                Err(Box::new(self.fail(D::throttle_error(throttle))))
            }
        }
    }

    /// The fault rule hitting this request, if any (counts the rule down).
    pub(crate) fn fault(&self) -> Option<Fault> {
        self.sim.shared.faults.take(&FaultTarget {
            operation: self.operation,
            tenant: self.tenant.as_deref(),
            resource: self.resource.as_deref(),
            subscription_id: self.subscription_id.as_deref(),
        })
    }

    /// The prologue of every API handler: authenticate, charge the provider's
    /// limits, then consult the fault rules. `Err` is the answer already
    /// journaled (a held fault is waited out first).
    pub(crate) async fn admit(mut self) -> Result<(Self, D::Caller), HttpResponse> {
        let caller = match self.authenticate() {
            Ok(caller) => caller,
            Err(error) => return Err(self.fail(error)),
        };
        let this = self.charge_limits(&caller).map_err(|answer| *answer)?;
        match this.fault() {
            Some(fault) => Err(this.faulted(fault).await),
            None => Ok((this, caller)),
        }
    }

    /// [`Exchange::admit`] for a create that commits before it can lose its
    /// answer: a `LostAnswer` fault is handed back for the handler to apply
    /// (with [`Exchange::faulted`]) once the subscription or channel exists.
    pub(crate) async fn admit_committing(
        mut self,
    ) -> Result<(Self, D::Caller, Option<Fault>), HttpResponse> {
        let caller = match self.authenticate() {
            Ok(caller) => caller,
            Err(error) => return Err(self.fail(error)),
        };
        let this = self.charge_limits(&caller).map_err(|answer| *answer)?;
        match this.fault() {
            Some(fault @ Fault::LostAnswer { .. }) => Ok((this, caller, Some(fault))),
            Some(fault) => Err(this.faulted(fault).await),
            None => Ok((this, caller, None)),
        }
    }

    /// Answers as the fault says: `Timeout` and `LostAnswer` hold the answer,
    /// then send a 504; the others answer at once.
    pub(crate) async fn faulted(self, fault: Fault) -> HttpResponse {
        let held = match fault {
            Fault::Timeout { seconds } | Fault::LostAnswer { seconds } => Some(seconds),
            Fault::Status { .. } | Fault::ExpiredToken | Fault::InvalidGrant => None,
        };
        let error = D::fault_error(fault);
        match held {
            Some(seconds) => {
                // Journal first: a client that gives up drops this future.
                self.record(error.status(), error.retry_after_seconds());
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                self.render_error(&error)
            }
            None => self.fail(error),
        }
    }

    /// Answers with an error.
    pub(crate) fn fail(self, error: D::Error) -> HttpResponse {
        self.record(error.status(), error.retry_after_seconds());
        self.render_error(&error)
    }

    /// Answers `status` with a JSON body.
    pub(crate) fn json(self, status: u16, body: &Value) -> HttpResponse {
        self.record(status, None);
        self.dialect
            .builder(status)
            .content_type(D::JSON_CONTENT_TYPE)
            .body(body.to_string())
    }

    /// Answers `status` without a body.
    pub(crate) fn empty(self, status: u16) -> HttpResponse {
        self.record(status, None);
        self.dialect.builder(status).finish()
    }

    fn record(&self, status: u16, retry_after_seconds: Option<u64>) {
        self.sim.shared.journal.record(RecordedRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            operation: self.operation,
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            user: self.user.clone(),
            resource: self.resource.clone(),
            subscription_id: self.subscription_id.clone(),
            status,
            retry_after_seconds,
            throttled_by: self.throttled_by,
            at: self.at,
            body: self.recorded_body.clone(),
        });
    }

    fn render_error(&self, error: &D::Error) -> HttpResponse {
        let body = self.dialect.error_body(&self.sim, error);
        let mut response = self.dialect.builder(error.status());
        if error.status() == 401 {
            response.insert_header((header::WWW_AUTHENTICATE, D::WWW_AUTHENTICATE));
        }
        if let Some(seconds) = error.retry_after_seconds() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response
            .content_type(D::JSON_CONTENT_TYPE)
            .body(body.to_string())
    }
}

/// `status` as actix knows it; a status it cannot represent becomes a 500.
pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The token of a `Bearer` `Authorization` header; an empty token for another
/// scheme (answered as a missing token), none without the header.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                token.trim().to_owned()
            }
            _ => String::new(),
        })
}

/// A token endpoint's form as the journal keeps it: a JSON object of its
/// fields with `secret_fields` redacted; nothing for an empty form.
pub(crate) fn form_for_journal(
    form: &HashMap<String, String>,
    secret_fields: &[&str],
) -> Option<Value> {
    if form.is_empty() {
        return None;
    }
    let object: Map<String, Value> = form
        .iter()
        .map(|(k, v)| {
            let value = if secret_fields.contains(&k.as_str()) {
                "<redacted>".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), Value::String(value))
        })
        .collect();
    Some(Value::Object(object))
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
