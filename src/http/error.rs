//! The one HTTP error type: each variant is a status code and a message safe to show
//! a caller. Internal failures are logged with their cause and answered generically.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, error::JsonPayloadError};
use serde_json::json;
use subkeeper_actors::fleet::FleetError;
use subkeeper_actors::ports::StoreError;

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// No such thing for this tenant (also: another tenant's thing).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but refused.
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency is down; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke on our side; details are in the log, not the answer.
    #[error("internal error")]
    Internal,
}

impl HttpError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(json!({ "error": { "code": self.code(), "message": self.to_string() } }))
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure while answering a request");
        Self::Unavailable("the database is unavailable; retry later".into())
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

/// Turns actix's JSON extractor errors into our shape (413 for oversized bodies).
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let message = err.to_string();
    let status = match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        JsonPayloadError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    actix_web::error::InternalError::from_response(
        message.clone(),
        HttpResponse::build(status)
            .json(json!({ "error": { "code": "bad_request", "message": message } })),
    )
    .into()
}
