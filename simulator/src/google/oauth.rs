//! Google's OAuth 2.0 token endpoint, `POST /token`, for the `refresh_token`
//! grant (what a server holding a user's offline consent uses).
//!
//! The client authenticates with its id and secret in the form body or by HTTP
//! Basic (RFC 6749 §2.3.1); both at once must agree. Only registered OAuth
//! clients ([`crate::apps`]) get tokens — an unknown client id or a wrong
//! secret is a 401 `invalid_client`, as at Google — unless the simulator
//! accepts any credential. Any non-empty refresh token is accepted unless it
//! was revoked ([`Simulator::revoke_google_refresh_token`]) or a fault says
//! otherwise. Errors come back in Google's OAuth shape (`error`,
//! `error_description`).

use crate::Simulator;
use crate::apps::{ClientAuthError, IdentityProvider, presented_client};
use crate::exchange::{form_for_journal, status_code};
use crate::faults::{Fault, FaultTarget};
use crate::google::model::ACCESS_TOKEN_LIFETIME_SECONDS;
use crate::google::wire;
use crate::journal::{Operation, RecordedRequest, lock};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// Scopes granted when the request names none (a refresh grant keeps the
/// scopes of the original consent).
const DEFAULT_SCOPES: &str = "https://www.googleapis.com/auth/calendar.readonly https://www.googleapis.com/auth/gmail.readonly";

/// Form fields never written to the journal.
const SECRET_FIELDS: &[&str] = &["client_secret", "refresh_token"];

/// Mounts `/token`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config.service(web::resource("/token").route(web::post().to(token)));
}

/// An OAuth error: status, `error`, `error_description`.
struct OAuthError {
    /// HTTP status.
    status: u16,
    /// `error`.
    error: String,
    /// `error_description`.
    description: String,
    /// Seconds for `Retry-After`.
    retry_after_seconds: Option<u64>,
}

impl OAuthError {
    fn new(status: u16, error: &str, description: &str) -> Self {
        Self {
            status,
            error: error.to_owned(),
            description: description.to_owned(),
            retry_after_seconds: None,
        }
    }

    fn invalid_grant() -> Self {
        Self::new(400, "invalid_grant", "Token has been expired or revoked.")
    }
}

/// `POST /token`.
async fn token(sim: web::Data<Simulator>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = sim.now();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let client = presented_client(authorization, &form);
    let client_id = match &client {
        Ok(client) => client.client_id.clone(),
        Err(_) => form.get("client_id").filter(|c| !c.is_empty()).cloned(),
    };
    let record = |status: u16| {
        sim.shared.journal.record(RecordedRequest {
            method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            operation: Operation::Token,
            tenant: client_id.clone(),
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
    let fail = |error: OAuthError| {
        record(error.status);
        render(&error)
    };

    let fault = sim.shared.faults.take(&FaultTarget {
        operation: Operation::Token,
        tenant: client_id.as_deref(),
        resource: None,
        subscription_id: None,
    });
    match fault {
        Some(Fault::InvalidGrant) => return fail(OAuthError::invalid_grant()),
        Some(Fault::Status {
            status,
            code,
            retry_after_seconds,
        }) => {
            let mut error = OAuthError::new(status, &code, "Sorry, the server is unavailable.");
            error.retry_after_seconds = retry_after_seconds;
            return fail(error);
        }
        Some(Fault::Timeout { seconds } | Fault::LostAnswer { seconds }) => {
            let error = OAuthError::new(504, "temporarily_unavailable", "Deadline exceeded.");
            record(error.status);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            return render(&error);
        }
        Some(Fault::ExpiredToken) | None => {}
    }

    let client = match client {
        Ok(client) => client,
        Err(error) => {
            let description = match error {
                ClientAuthError::Conflicting => {
                    "Client authentication in the Authorization header and in the body disagree; use one method."
                }
                ClientAuthError::MalformedBasic => "Malformed Basic client authentication.",
            };
            return fail(OAuthError::new(400, "invalid_request", description));
        }
    };
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let grant_type = field("grant_type").unwrap_or_default();
    if grant_type != "refresh_token" {
        return fail(OAuthError::new(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        ));
    }
    let Some(client_id) = client.client_id.as_deref() else {
        return fail(OAuthError::new(
            400,
            "invalid_request",
            "Could not determine client ID from request.",
        ));
    };
    let Some(secret) = client.client_secret.as_deref() else {
        return fail(OAuthError::new(401, "invalid_client", "Unauthorized"));
    };
    if !sim.shared.config.accept_any_credentials {
        let registered = lock(&sim.shared.apps)
            .secret_of(IdentityProvider::Google, client_id)
            .map(str::to_owned);
        match registered {
            None => {
                return fail(OAuthError::new(
                    401,
                    "invalid_client",
                    "The OAuth client was not found.",
                ));
            }
            Some(registered) if registered != secret => {
                return fail(OAuthError::new(401, "invalid_client", "Unauthorized"));
            }
            Some(_) => {}
        }
    }
    let Some(refresh_token) = field("refresh_token") else {
        return fail(OAuthError::new(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        ));
    };
    let access_token = {
        let now = sim.now();
        let mut google = lock(&sim.shared.google);
        if google.is_revoked(refresh_token) {
            None
        } else {
            Some(google.issue_token(client_id, Some(refresh_token), now))
        }
    };
    let Some(access_token) = access_token else {
        return fail(OAuthError::invalid_grant());
    };
    record(200);
    let answer = json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFETIME_SECONDS,
        "scope": field("scope").unwrap_or(DEFAULT_SCOPES),
        "token_type": "Bearer",
    });
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            "no-cache, no-store, max-age=0, must-revalidate",
        ))
        .insert_header((header::PRAGMA, "no-cache"))
        .content_type("application/json; charset=utf-8")
        .body(answer.to_string())
}

fn render(error: &OAuthError) -> HttpResponse {
    let mut response = HttpResponse::build(status_code(error.status));
    if let Some(seconds) = error.retry_after_seconds {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    response
        .content_type("application/json; charset=utf-8")
        .body(wire::oauth_error_json(&error.error, &error.description).to_string())
}
