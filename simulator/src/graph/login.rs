//! The Microsoft identity platform's v2 token endpoint,
//! `POST /{tenant}/oauth2/v2.0/token`, for the `client_credentials` and
//! `refresh_token` grants.
//!
//! The client authenticates with its id and secret in the form body or by HTTP
//! Basic (RFC 6749 §2.3.1); both at once must agree. Only registered apps
//! ([`crate::apps`]) get tokens: an unknown client id, a wrong secret, and the
//! client-credentials grant on `/common` or `/consumers` fail as the identity
//! platform fails them — unless the simulator accepts any credential. Any
//! non-empty refresh token is accepted. Errors come back in AAD's shape
//! (`error`, `error_description` starting with an `AADSTS` code, `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`). Access tokens are opaque
//! strings the Graph model remembers with tenant, expiry and whether they are
//! app-only.

use crate::Simulator;
use crate::apps::{ClientAuthError, IdentityProvider, PresentedClient, presented_client};
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

/// Tenant segments that name no directory, on which the identity platform
/// refuses the client-credentials grant (an app-only token needs a tenant).
const NO_DIRECTORY_SEGMENTS: &[&str] = &["common", "consumers"];

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

    /// Client authentication the endpoint cannot read (two methods that
    /// disagree, or a Basic header that is not `base64(id:secret)`).
    fn unreadable_client_auth(error: ClientAuthError) -> Self {
        let description = match error {
            ClientAuthError::Conflicting => {
                "The client was authenticated both in the Authorization header and in the request body, with different values. Use one client authentication method."
            }
            ClientAuthError::MalformedBasic => {
                "The Authorization header is not valid Basic client authentication (base64 of the URL-encoded client id and secret joined by ':')."
            }
        };
        Self::new(400, "invalid_request", 90_100, description)
    }

    /// The client-credentials grant on `/common` or `/consumers`.
    fn no_directory() -> Self {
        Self::new(
            400,
            "invalid_request",
            9_001_023,
            "The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        )
    }

    /// A client id no app registration has.
    fn unknown_app(client_id: &str, tenant: &str) -> Self {
        Self::new(
            400,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// A secret that is not the app's.
    fn invalid_secret(client_id: &str) -> Self {
        Self::new(
            401,
            "invalid_client",
            7_000_215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
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
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let client = presented_client(authorization, &form);
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
            app: None,
            user: None,
            resource: None,
            subscription_id: None,
            status,
            retry_after_seconds: None,
            throttled_by: None,
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

    let client = match client {
        Ok(client) => client,
        Err(error) => return fail(AadError::unreadable_client_auth(error)),
    };
    match issue(&sim, &tenant, &form, &client) {
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
fn issue(
    sim: &Simulator,
    tenant: &str,
    form: &HashMap<String, String>,
    client: &PresentedClient,
) -> Result<Value, AadError> {
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let grant_type = field("grant_type").ok_or_else(|| AadError::missing("grant_type"))?;
    let client_id = client
        .client_id
        .as_deref()
        .ok_or_else(|| AadError::missing("client_id"))?;
    let secret = client.client_secret.as_deref();
    match grant_type {
        "client_credentials" => {
            if secret.is_none() && field("client_assertion").is_none() {
                // As AAD answers a confidential client that sent no credential.
                return Err(AadError::new(
                    401,
                    "invalid_client",
                    7_000_218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ));
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
            authenticate_client(sim, tenant, client_id, secret, true)?;
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
            authenticate_client(sim, tenant, client_id, secret, false)?;
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

/// Checks the client against the registered apps, in the identity platform's
/// order: a directory for app-only tokens, a known app, then its secret (a
/// public client refreshing a delegated token sends none). Everything passes
/// when the simulator accepts any credential.
fn authenticate_client(
    sim: &Simulator,
    tenant: &str,
    client_id: &str,
    secret: Option<&str>,
    app_only: bool,
) -> Result<(), AadError> {
    if sim.shared.config.accept_any_credentials {
        return Ok(());
    }
    if app_only && NO_DIRECTORY_SEGMENTS.contains(&tenant.to_ascii_lowercase().as_str()) {
        return Err(AadError::no_directory());
    }
    let apps = lock(&sim.shared.apps);
    let registered = apps
        .secret_of(IdentityProvider::Microsoft, client_id)
        .ok_or_else(|| AadError::unknown_app(client_id, tenant))?;
    match secret {
        Some(secret) if secret != registered => Err(AadError::invalid_secret(client_id)),
        _ => Ok(()),
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
