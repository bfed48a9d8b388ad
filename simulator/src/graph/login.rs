//! The Microsoft identity platform's v2 token endpoint,
//! `POST /{tenant}/oauth2/v2.0/token`, for the `client_credentials` and
//! `refresh_token` grants.
//!
//! Any client id, secret or non-empty refresh token is accepted: the simulator
//! checks the protocol (required parameters, scope form, grant type), not
//! credentials. Errors come back in AAD's shape (`error`, `error_description`
//! starting with an `AADSTS` code, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`). Access tokens are opaque strings the Graph model
//! remembers with tenant, expiry and whether they are app-only.

use crate::Simulator;
use crate::exchange::{form_for_journal, status_code};
use crate::faults::{Fault, FaultTarget};
use crate::graph::model::{ACCESS_TOKEN_LIFETIME_SECONDS, random_token};
use crate::journal::{Operation, RecordedRequest, lock};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Form fields never written to the journal.
const SECRET_FIELDS: &[&str] = &["client_secret", "client_assertion"];

/// Mounts the token endpoint.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config.service(web::resource("/{tenant}/oauth2/v2.0/token").route(web::post().to(token)));
}

/// An error as the identity platform reports it.
#[derive(Debug, Clone)]
struct AadError {
    /// HTTP status.
    status: u16,
    /// OAuth error, e.g. `invalid_grant`.
    error: String,
    /// The AADSTS number.
    code: u32,
    /// Text after `AADSTS{code}: `.
    description: String,
    /// Seconds for `Retry-After`.
    retry_after_seconds: Option<u64>,
}

impl AadError {
    fn new(status: u16, error: &str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status,
            error: error.to_owned(),
            code,
            description: description.into(),
            retry_after_seconds: None,
        }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    fn invalid_grant() -> Self {
        Self::new(
            400,
            "invalid_grant",
            70_000,
            "The request was denied because one or more scopes requested are unauthorized or expired. The user must first sign in and grant the client application access to the requested scope.",
        )
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
async fn token(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    tenant: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let tenant = tenant.into_inner();
    let at = sim.now();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let correlation_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let record = |status: u16| {
        sim.shared.journal.record(RecordedRequest {
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            operation: Operation::Token,
            tenant: Some(tenant.clone()),
            resource: None,
            subscription_id: None,
            status,
            at,
            body: form_for_journal(&form, SECRET_FIELDS),
        });
    };
    let fail = |error: AadError| {
        record(error.status);
        aad_error_response(&error, &correlation_id, sim.now())
    };

    let fault = sim.shared.faults.take(&FaultTarget {
        operation: Operation::Token,
        tenant: Some(&tenant),
        resource: None,
        subscription_id: None,
    });
    match fault {
        Some(Fault::InvalidGrant) => return fail(AadError::invalid_grant()),
        Some(Fault::Status {
            status,
            code,
            retry_after_seconds,
        }) => {
            let mut error = AadError::new(
                status,
                &code,
                50_000,
                "There was an error issuing a token or an issue with our sign-in service.",
            );
            error.retry_after_seconds = retry_after_seconds;
            return fail(error);
        }
        Some(Fault::Timeout { seconds } | Fault::LostAnswer { seconds }) => {
            let error = AadError::new(
                504,
                "temporarily_unavailable",
                50_000,
                "There was an error issuing a token or an issue with our sign-in service.",
            );
            // Journal first: a client that gives up drops this future.
            record(error.status);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            return aad_error_response(&error, &correlation_id, sim.now());
        }
        // Applies to Graph calls only; never matched here.
        Some(Fault::ExpiredToken) | None => {}
    }

    match issue(&sim, &tenant, &form) {
        Ok(answer) => {
            record(200);
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store, no-cache"))
                .insert_header((header::PRAGMA, "no-cache"))
                .content_type("application/json; charset=utf-8")
                .body(answer.to_string())
        }
        Err(error) => fail(error),
    }
}

/// Checks the grant and issues an access token (and a rotated refresh token for
/// the `refresh_token` grant).
fn issue(sim: &Simulator, tenant: &str, form: &HashMap<String, String>) -> Result<Value, AadError> {
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let grant_type = field("grant_type").ok_or_else(|| AadError::missing("grant_type"))?;
    let client_id = field("client_id").ok_or_else(|| AadError::missing("client_id"))?;
    match grant_type {
        "client_credentials" => {
            if field("client_secret").is_none() && field("client_assertion").is_none() {
                return Err(AadError::missing("client_secret"));
            }
            let scope = field("scope").ok_or_else(|| AadError::missing("scope"))?;
            // Client credentials only ever get the app's static permissions.
            if !scope.ends_with("/.default") || scope.split_whitespace().count() != 1 {
                return Err(AadError::new(
                    400,
                    "invalid_scope",
                    1_002_012,
                    format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                ));
            }
            let access_token = new_access_token(sim, tenant, client_id, true);
            Ok(json!({
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_LIFETIME_SECONDS,
                "ext_expires_in": ACCESS_TOKEN_LIFETIME_SECONDS,
                "access_token": access_token,
            }))
        }
        "refresh_token" => {
            field("refresh_token").ok_or_else(|| AadError::missing("refresh_token"))?;
            let scope = field("scope").unwrap_or("https://graph.microsoft.com/.default");
            let access_token = new_access_token(sim, tenant, client_id, false);
            Ok(json!({
                "token_type": "Bearer",
                "scope": scope,
                "expires_in": ACCESS_TOKEN_LIFETIME_SECONDS,
                "ext_expires_in": ACCESS_TOKEN_LIFETIME_SECONDS,
                "access_token": access_token,
                // The identity platform rotates refresh tokens on every use.
                "refresh_token": format!("0.A{}", random_token(180)),
            }))
        }
        other => Err(AadError::new(
            400,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{other}'."),
        )),
    }
}

/// A new access token; `app_only` for the client-credentials grant.
fn new_access_token(sim: &Simulator, tenant: &str, client_id: &str, app_only: bool) -> String {
    let now = sim.now();
    lock(&sim.shared.graph).issue_token(tenant, client_id, app_only, now)
}

fn aad_error_response(error: &AadError, correlation_id: &str, now: DateTime<Utc>) -> HttpResponse {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error.error,
        "error_description": format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            error.code, error.description
        ),
        "error_codes": [error.code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={}", error.code),
    });
    let mut response = HttpResponse::build(status_code(error.status));
    if let Some(seconds) = error.retry_after_seconds {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    response
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}
