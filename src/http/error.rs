//! The one HTTP error type: each variant is a status code and a message safe to show
//! a caller. Internal failures are logged with their cause and answered generically.
//! actix's own refusals (extractor failures, an oversized body, no such route) are
//! turned into it here, so every error a caller sees has the same JSON shape:
//! `{"error": {"code": "...", "message": "..."}}`.

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;
use serde_json::json;
use subkeeper_actors::fleet::FleetError;
use subkeeper_actors::ports::StoreError;

/// The one error shape every refusal answers with (for the OpenAPI document).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable word: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `payload_too_large`, `unsupported_media_type`, `unprocessable`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// What to do about it, for a human.
    pub message: String,
}

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The caller is known but may not act here (a tenant token on another
    /// tenant's URL, or on an admin-only route).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing for this tenant (also: another tenant's thing).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body is not of a media type this route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but refused.
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency is down; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke on our side: the message says what failed, never why (the
    /// cause is in the log).
    #[error("{0}")]
    Internal(String),
}

impl HttpError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The body every error answers with.
    pub(super) fn body(code: &str, message: &str) -> serde_json::Value {
        json!({ "error": { "code": code, "message": message } })
    }

    /// A refused body read (what actix's `Bytes` extractor reports).
    fn from_body(e: &actix_web::Error) -> Self {
        let too_large = matches!(e.as_error::<PayloadError>(), Some(PayloadError::Overflow))
            || e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE;
        if too_large {
            Self::PayloadTooLarge("request body is larger than this endpoint accepts".into())
        } else {
            tracing::debug!(error = %e, "request body could not be read");
            Self::BadRequest("request body could not be read".into())
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(Self::body(self.code(), &self.to_string()))
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        match e {
            // The input got past validation but the database would not hold it:
            // the caller's to fix, and retrying the same request will not help.
            StoreError::Rejected(_) => {
                tracing::warn!(error = %e, "the store refused a request's write");
                Self::Unprocessable("the database refused a value in the request".into())
            }
            // A conflict (the row changed under the write) may succeed on retry.
            StoreError::Unavailable(_)
            | StoreError::Timeout(_)
            | StoreError::Conflict(_)
            | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "store failure while answering a request");
                Self::Unavailable("the database is unavailable; retry later".into())
            }
        }
    }
}

impl From<FleetError> for HttpError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::UnknownProvider { .. } | FleetError::NoProviders(_) => {
                Self::NotFound(e.to_string())
            }
            FleetError::SupervisorGone | FleetError::FleetGone => Self::Unavailable(e.to_string()),
        }
    }
}

/// A request body, read under the app's `PayloadConfig` limit like actix's
/// `Bytes`, whose refusals (too large, unreadable) answer as [`HttpError`]
/// rather than actix's plain text.
pub struct Body(pub web::Bytes);

impl FromRequest for Body {
    type Error = HttpError;
    type Future = LocalBoxFuture<'static, Result<Self, HttpError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move { bytes.await.map(Body).map_err(|e| HttpError::from_body(&e)) })
    }
}

/// actix's JSON extractor errors in our shape; serde's message names the field.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => {
            HttpError::PayloadTooLarge(format!("request body is larger than {limit} bytes"))
        }
        JsonPayloadError::ContentType => {
            HttpError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(e) => {
            HttpError::BadRequest(format!("invalid JSON body: {e}"))
        }
        JsonPayloadError::Serialize(e) => {
            tracing::error!(error = %e, "a JSON answer could not be serialized");
            HttpError::Internal("the answer could not be encoded".into())
        }
        JsonPayloadError::Payload(e) => HttpError::from_body(&e.into()),
        _ => HttpError::BadRequest("request body could not be read".into()),
    }
    .into()
}

/// actix's query-string extractor errors in our shape.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let QueryPayloadError::Deserialize(e) = err else {
        return HttpError::BadRequest("invalid query string".into()).into();
    };
    HttpError::BadRequest(format!("invalid query string: {e}")).into()
}

/// actix's path extractor errors in our shape: a path segment that cannot be
/// what the route expects names nothing.
pub fn path_error(err: PathError, req: &HttpRequest) -> actix_web::Error {
    tracing::debug!(error = %err, path = req.path(), "path not understood");
    HttpError::NotFound("no such resource".into()).into()
}

/// What answers a request no route matches (also a known path with the wrong
/// method: each route is registered for its one method).
pub async fn no_route() -> Result<HttpResponse, HttpError> {
    Err(HttpError::NotFound("no such route".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_write_is_the_callers_422_and_an_outage_a_503() {
        for (e, status) in [
            (StoreError::Rejected("23505".into()), 422),
            (StoreError::Conflict("row changed".into()), 503),
            (StoreError::Unavailable("connection refused".into()), 503),
            (StoreError::Timeout("pool timed out".into()), 503),
            (StoreError::Corrupt("bad kind".into()), 503),
        ] {
            let answered = HttpError::from(e.clone());
            assert_eq!(answered.status_code().as_u16(), status, "{e}");
            assert!(
                !answered.to_string().contains(&e.to_string()),
                "the store's message leaks into the answer: {answered}"
            );
        }
    }
}
