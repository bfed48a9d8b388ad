//! What can go wrong talking to Microsoft Graph, and how each failure maps onto the
//! core's [`ErrorClass`] at the port boundary.
//!
//! Owns the leaf error enum ([`GraphError`]) and the classification table. It must
//! not retry, sleep or log: the client retries the one 401, the lifecycle decides
//! everything else from the class.

use crate::providers::limits::Held;
use crate::providers::oauth::TokenError;
use crate::providers::truncate;
use chrono::TimeDelta;
use std::fmt;
use std::time::Duration;
use subkeeper_actors::domain::{ErrorClass, Provider, ProviderKind};
use subkeeper_actors::ports::ApiError;

/// Longest slice of Graph's `error.message` kept, in characters.
const GRAPH_MESSAGE_MAX_CHARS: usize = 400;

/// The subscription operation a failure happened in; a 404 means different things
/// on create (the watched resource is missing) and on renew (the subscription is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /subscriptions`.
    Create,
    /// `PATCH /subscriptions/{id}`.
    Renew,
    /// `DELETE /subscriptions/{id}`.
    Delete,
    /// `GET .../messages/delta`, `GET .../calendarView/delta`.
    Delta,
}

impl Operation {
    /// Lower-case name for messages and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Renew => "renew",
            Self::Delete => "delete",
            Self::Delta => "delta",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Graph's error body (`{"error": {"code", "message", "innerError": {...}}}`),
/// reduced to what an operator needs. Never contains a token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphErrorBody {
    /// `error.code`, e.g. `ResourceNotFound`, `ValidationError`; empty when the
    /// body was not Graph's JSON (a proxy's HTML page, an empty 502).
    pub code: String,
    /// `error.message`, truncated to a few hundred characters.
    pub message: String,
    /// `error.innerError.request-id`: what Microsoft support asks for.
    pub request_id: Option<String>,
}

impl GraphErrorBody {
    /// Parses Graph's error JSON; anything else gives an empty code and message.
    pub fn parse(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
            #[serde(default, rename = "innerError")]
            inner_error: Option<InnerError>,
        }
        #[derive(serde::Deserialize)]
        struct InnerError {
            #[serde(default, rename = "request-id")]
            request_id: Option<String>,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => Self {
                code: error.code,
                message: truncate(&error.message, GRAPH_MESSAGE_MAX_CHARS),
                request_id: error.inner_error.and_then(|i| i.request_id),
            },
            Err(_) => Self::default(),
        }
    }
}

impl fmt::Display for GraphErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code.is_empty(), self.message.is_empty()) {
            (true, true) => f.write_str("no Graph error body")?,
            (false, true) => f.write_str(&self.code)?,
            (true, false) => f.write_str(&self.message)?,
            (false, false) => write!(f, "{}: {}", self.code, self.message)?,
        }
        if let Some(id) = &self.request_id {
            write!(f, " [request-id {id}]")?;
        }
        Ok(())
    }
}

/// A failed Graph call, before classification.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// No access token: credentials missing, grant revoked, token endpoint down.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The call did not complete within the request timeout.
    #[error("Graph {operation} did not answer within {timeout:?}")]
    Timeout {
        /// What was attempted.
        operation: Operation,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// Connection, TLS or protocol failure before an answer arrived.
    #[error("could not reach Graph for {operation}: {reason}")]
    Unreachable {
        /// What was attempted.
        operation: Operation,
        /// The transport error.
        reason: String,
        /// False when the connection was never made (the request was not sent).
        sent: bool,
    },
    /// Graph answered 401 to a freshly acquired token as well.
    #[error("Graph refused a freshly acquired access token for {operation} ({body})")]
    Unauthorized {
        /// What was attempted.
        operation: Operation,
        /// Graph's error.
        body: GraphErrorBody,
    },
    /// Graph answered an error status.
    #[error("Graph refused {operation} with HTTP {status} ({body})")]
    Status {
        /// What was attempted.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// Graph's error.
        body: GraphErrorBody,
        /// `Retry-After`, if sent.
        retry_after: Option<TimeDelta>,
    },
    /// A 2xx whose body is not the subscription Graph should have returned. On
    /// create the subscription may exist at Graph without our knowing its id; it
    /// expires on its own.
    #[error("Graph answered {operation} with HTTP {status} but {reason}")]
    InvalidResponse {
        /// What was attempted.
        operation: Operation,
        /// HTTP status.
        status: u16,
        /// What was wrong with the body.
        reason: String,
    },
    /// The provider is not a Graph provider (the dispatcher sent it to the wrong
    /// adapter).
    #[error("provider kind {0} is not served by the Microsoft Graph adapter")]
    WrongKind(ProviderKind),
    /// The configured Graph base URL is unusable.
    #[error("invalid Graph configuration: {0}")]
    Config(String),
    /// Not sent: Graph throttled the tenant and its `Retry-After` has not
    /// elapsed.
    #[error("Graph {operation} {held}")]
    Held {
        /// What was attempted.
        operation: Operation,
        /// Until when, and why.
        held: Held,
    },
}

impl GraphError {
    /// True when the call may have taken effect at Graph although we got no
    /// usable answer: it timed out, lost its connection, met a gateway timeout
    /// (504: the backend may have finished), or answered a 2xx we could not
    /// read. (Refusals and failures before sending did not.)
    pub fn may_have_created(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Unreachable { sent: true, .. }
                | Self::InvalidResponse { .. }
                | Self::Status { status: 504, .. }
        )
    }

    /// Classifies the failure for the lifecycle and words it for an operator.
    ///
    /// | failure | class |
    /// |---|---|
    /// | token: no/incomplete credentials, `invalid_grant`, `interaction_required`, consent | `reauth_required` |
    /// | token: `invalid_client` | `auth` |
    /// | 401 after one refresh and retry | `auth` |
    /// | 404/410 on renew | `not_found` |
    /// | 404/410 on create (mailbox or resource missing) | `permanent` |
    /// | 400 notificationUrl validation failure / invalid notification URL | `permanent` (check SUBKEEPER_PUBLIC_URL) |
    /// | 403 | `permanent` (names the missing permission) |
    /// | other 4xx | `permanent` |
    /// | 429; 503 with Retry-After | `throttled` (+ retry_after) |
    /// | not sent: the tenant's Retry-After has not elapsed | `throttled` (+ the rest of it) |
    /// | other 5xx, 408, timeouts, connection errors, unreadable 2xx | `transient` |
    ///
    /// 404/410 on delete never gets here: it counts as deleted.
    pub fn classify(&self, provider: &Provider) -> ApiError {
        match self {
            Self::Token(error) => error.to_api_error(),
            Self::Timeout { .. } | Self::Unreachable { .. } => {
                ApiError::new(ErrorClass::Transient, self.to_string())
            }
            Self::InvalidResponse { status, .. } => {
                ApiError::new(ErrorClass::Transient, self.to_string()).with_status(*status)
            }
            Self::Unauthorized { .. } => {
                ApiError::new(ErrorClass::Auth, self.to_string()).with_status(401)
            }
            Self::WrongKind(_) | Self::Config(_) => {
                ApiError::new(ErrorClass::Permanent, self.to_string())
            }
            Self::Held { held, .. } => ApiError::new(ErrorClass::Throttled, self.to_string())
                .with_retry_after(Some(held.retry_after)),
            Self::Status {
                operation,
                status,
                body,
                retry_after,
            } => classify_status(provider, *operation, *status, body, *retry_after)
                .with_status(*status)
                .with_retry_after(*retry_after),
        }
    }
}

/// The classification of an error status.
fn classify_status(
    provider: &Provider,
    operation: Operation,
    status: u16,
    body: &GraphErrorBody,
    retry_after: Option<TimeDelta>,
) -> ApiError {
    let refused = format!("Graph refused {operation} with HTTP {status} ({body})");
    match status {
        429 => ApiError::new(ErrorClass::Throttled, refused),
        503 if retry_after.is_some() => ApiError::new(ErrorClass::Throttled, refused),
        408 | 500..=599 => ApiError::new(ErrorClass::Transient, refused),
        404 | 410 if operation == Operation::Create => ApiError::new(
            ErrorClass::Permanent,
            format!(
                "{refused}: the watched resource '{}' does not exist — check that the mailbox exists, is licensed for Exchange Online, and that the resource path is right",
                provider.resource
            ),
        ),
        404 | 410 => ApiError::new(ErrorClass::NotFound, refused),
        403 => ApiError::new(
            ErrorClass::Permanent,
            format!(
                "{refused}: the app lacks permission on '{}' — grant it {} with admin consent (application permission for app-only credentials, delegated for a user's connection), and check that no Exchange application access policy excludes this mailbox",
                provider.resource,
                required_permission(provider.kind)
            ),
        ),
        400 if is_notification_url_failure(body) => ApiError::new(
            ErrorClass::Permanent,
            format!(
                "{refused}: Graph could not validate the notification URL — check that SUBKEEPER_PUBLIC_URL is a public https:// URL reachable from Microsoft and that POST /webhooks/microsoft?validationToken=… answers 200 with the token as text/plain within 10 seconds"
            ),
        ),
        400 if is_lifetime_refusal(body) => ApiError::new(
            ErrorClass::Permanent,
            format!(
                "{refused}: the requested expiry exceeds what Graph allows for '{}' — Graph has lowered its limit below subkeeper's built-in {} minutes; upgrade subkeeper or report it",
                provider.resource,
                crate::providers::graph::OUTLOOK_MAX_MINUTES
            ),
        ),
        _ => ApiError::new(ErrorClass::Permanent, refused),
    }
}

/// The least-privileged Graph permission that lets an app subscribe to the
/// provider's resource.
pub fn required_permission(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::GraphCalendar => "Calendars.Read",
        _ => "Mail.Read",
    }
}

/// Graph's answer when the validation handshake with the notification (or
/// lifecycle) URL failed, or when it refused the URL outright.
fn is_notification_url_failure(body: &GraphErrorBody) -> bool {
    let message = body.message.to_lowercase();
    body.code.eq_ignore_ascii_case("ValidationError")
        || message.contains("validation request")
        || message.contains("notification url")
        || message.contains("notificationurl")
        || message.contains("notification endpoint")
}

/// Graph's answer to an expiry beyond the resource's maximum ("Subscription
/// expiration can only be 10070 minutes in the future.").
fn is_lifetime_refusal(body: &GraphErrorBody) -> bool {
    body.message
        .to_lowercase()
        .contains("expiration can only be")
}

impl crate::providers::call::Classify for GraphError {
    fn classify(&self, provider: &Provider) -> ApiError {
        GraphError::classify(self, provider)
    }
}
