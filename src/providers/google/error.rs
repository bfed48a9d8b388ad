//! What can go wrong talking to Google Calendar and Gmail, and how each failure
//! maps onto the core's [`ErrorClass`] at the port boundary.
//!
//! Owns the leaf error enum ([`GoogleError`]) and the classification table. It must
//! not retry, sleep or log: the client retries the one 401, the lifecycle decides
//! everything else from the class.

use crate::providers::limits::{Held, RateLimited};
use crate::providers::oauth::TokenError;
use crate::providers::truncate;
use chrono::TimeDelta;
use std::fmt;
use std::time::Duration;
use subkeeper_actors::domain::{ErrorClass, Provider, ProviderKind};
use subkeeper_actors::ports::ApiError;

/// Longest slice of Google's `error.message` kept, in characters.
const GOOGLE_MESSAGE_MAX_CHARS: usize = 400;

/// `error.errors[].reason` values with which Google answers 403 for a quota or
/// rate limit (as opposed to a missing permission): retry later.
const THROTTLING_REASONS: [&str; 5] = [
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "quotaExceeded",
    "dailyLimitExceeded",
    "variableTermLimitExceeded",
];

/// The Google call a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Calendar `POST calendars/{calendarId}/events/watch`.
    EventsWatch,
    /// Calendar `POST channels/stop`.
    ChannelsStop,
    /// Gmail `POST users/{userId}/watch`.
    UsersWatch,
    /// Gmail `POST users/{userId}/stop`.
    UsersStop,
    /// Calendar `GET calendars/{calendarId}/events` (sync).
    EventsList,
    /// Gmail `GET users/{userId}/history`.
    HistoryList,
    /// Gmail `GET users/{userId}/profile`.
    GetProfile,
}

impl Call {
    /// Google's method name, for messages and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventsWatch => "events.watch",
            Self::ChannelsStop => "channels.stop",
            Self::UsersWatch => "users.watch",
            Self::UsersStop => "users.stop",
            Self::EventsList => "events.list",
            Self::HistoryList => "history.list",
            Self::GetProfile => "users.getProfile",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Google's JSON error body (`{"error": {"code", "message", "status", "errors":
/// [{"domain", "reason", "message"}]}}`), reduced to what an operator and the
/// classification need. Never contains a token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoogleErrorBody {
    /// `error.message`, truncated; empty when the body was not Google's JSON.
    pub message: String,
    /// `error.status`, e.g. `PERMISSION_DENIED`, `NOT_FOUND`.
    pub status: String,
    /// `error.errors[0].domain`, e.g. `usageLimits`, `global`.
    pub domain: String,
    /// `error.errors[0].reason`, e.g. `rateLimitExceeded`, `notFound`.
    pub reason: String,
}

impl GoogleErrorBody {
    /// Parses Google's error JSON; anything else gives empty fields.
    pub fn parse(body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(default)]
            message: String,
            #[serde(default)]
            status: String,
            #[serde(default)]
            errors: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            #[serde(default)]
            domain: String,
            #[serde(default)]
            reason: String,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => {
                let first = error.errors.into_iter().next();
                Self {
                    message: truncate(&error.message, GOOGLE_MESSAGE_MAX_CHARS),
                    status: error.status,
                    domain: first.as_ref().map(|i| i.domain.clone()).unwrap_or_default(),
                    reason: first.map(|i| i.reason).unwrap_or_default(),
                }
            }
            Err(_) => Self::default(),
        }
    }

    /// True when a 403 is a quota or rate limit rather than a refusal.
    pub fn is_throttling(&self) -> bool {
        self.domain == "usageLimits" || THROTTLING_REASONS.contains(&self.reason.as_str())
    }

    /// How far a rate-limit answer reaches: a 429 or `userRateLimitExceeded`
    /// is the account's; any other throttling 403 (`rateLimitExceeded`,
    /// `quotaExceeded`, …) the OAuth client's project, every account of it.
    pub fn rate_limit(&self, status: u16, retry_after: Option<TimeDelta>) -> Option<RateLimited> {
        match status {
            429 => Some(RateLimited::Caller { retry_after }),
            403 if self.reason == "userRateLimitExceeded" => {
                Some(RateLimited::Caller { retry_after })
            }
            403 if self.is_throttling() => Some(RateLimited::Project { retry_after }),
            _ => None,
        }
    }
}

impl fmt::Display for GoogleErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() && self.message.is_empty() {
            return f.write_str("no Google error body");
        }
        if !self.reason.is_empty() {
            write!(f, "{}", self.reason)?;
            if !self.domain.is_empty() {
                write!(f, "/{}", self.domain)?;
            }
            if !self.message.is_empty() {
                f.write_str(": ")?;
            }
        }
        f.write_str(&self.message)
    }
}

/// A failed Google call, before classification.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GoogleError {
    /// No access token: credentials missing, grant revoked, token endpoint down.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The call did not complete within the request timeout.
    #[error("Google {call} did not answer within {timeout:?}")]
    Timeout {
        /// What was attempted.
        call: Call,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// Connection, TLS or protocol failure before an answer arrived.
    #[error("could not reach Google for {call}: {reason}")]
    Unreachable {
        /// What was attempted.
        call: Call,
        /// The transport error.
        reason: String,
        /// False when the connection was never made (the request was not sent).
        sent: bool,
    },
    /// Google answered 401 to a freshly acquired access token as well.
    #[error("Google refused a freshly acquired access token for {call} ({body})")]
    Unauthorized {
        /// What was attempted.
        call: Call,
        /// Google's error.
        body: GoogleErrorBody,
    },
    /// Google answered an error status.
    #[error("Google refused {call} with HTTP {status} ({body})")]
    Status {
        /// What was attempted.
        call: Call,
        /// HTTP status.
        status: u16,
        /// Google's error.
        body: GoogleErrorBody,
        /// `Retry-After`, if sent.
        retry_after: Option<TimeDelta>,
    },
    /// A 2xx whose body is not what Google should have returned. A channel may
    /// exist at Google without our knowing it; it expires on its own.
    #[error("Google answered {call} with HTTP {status} but {reason}")]
    InvalidResponse {
        /// What was attempted.
        call: Call,
        /// HTTP status.
        status: u16,
        /// What was wrong with the body.
        reason: String,
    },
    /// The provider is not of the family this adapter serves.
    #[error("provider kind {0} is not served by this Google adapter")]
    WrongKind(ProviderKind),
    /// The configuration is unusable (base URL, missing Pub/Sub topic).
    #[error("invalid Google configuration: {0}")]
    Config(String),
    /// subkeeper's own store could not answer a question the call depends on.
    #[error("could not read subkeeper's store: {0}")]
    Store(String),
    /// Not sent: Google rate-limited the account (or the OAuth client) and the
    /// wait has not elapsed.
    #[error("Google {call} {held}")]
    Held {
        /// What was attempted.
        call: Call,
        /// Until when, and why.
        held: Held,
    },
}

impl GoogleError {
    /// True when the call may have taken effect at Google although we got no
    /// usable answer: it timed out, lost its connection, met a gateway timeout
    /// (504: the backend may have finished), or answered a 2xx we could not
    /// read. (Refusals and failures before sending did not.)
    pub fn may_have_opened(&self) -> bool {
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
    /// | token: no/incomplete credentials, `invalid_grant` (refresh token expired or revoked) | `reauth_required` |
    /// | token: `invalid_client` | `auth` |
    /// | 401 after one refresh and retry | `auth` |
    /// | 429; 403 `usageLimits` / `rateLimitExceeded` / `userRateLimitExceeded`; 503 with Retry-After | `throttled` (+ retry_after) |
    /// | not sent: the account's (or client's) wait after a rate limit has not elapsed | `throttled` (+ the rest of it) |
    /// | 404 on a watch (calendar or mailbox missing) | `permanent` |
    /// | other 403 (scope or sharing missing), 400, other 4xx | `permanent` |
    /// | 5xx, 408, timeouts, connection errors, unreadable 2xx | `transient` |
    ///
    /// 404 on a stop never gets here: the channel or watch is already gone.
    pub fn classify(&self, provider: &Provider) -> ApiError {
        match self {
            Self::Token(error) => error.to_api_error(),
            Self::Timeout { .. } | Self::Unreachable { .. } | Self::Store(_) => {
                ApiError::new(ErrorClass::Transient, self.to_string())
            }
            Self::InvalidResponse { status, .. } => {
                ApiError::new(ErrorClass::Transient, self.to_string()).with_status(*status)
            }
            Self::Unauthorized { .. } => ApiError::new(
                ErrorClass::Auth,
                format!(
                    "{self}: check the Google OAuth client (client_id/client_secret) and that the API is enabled in its project"
                ),
            )
            .with_status(401),
            Self::WrongKind(_) | Self::Config(_) => {
                ApiError::new(ErrorClass::Permanent, self.to_string())
            }
            Self::Held { held, .. } => ApiError::new(ErrorClass::Throttled, self.to_string())
                .with_retry_after(Some(held.retry_after)),
            Self::Status {
                call,
                status,
                body,
                retry_after,
            } => classify_status(provider, *call, *status, body, *retry_after)
                .with_status(*status)
                .with_retry_after(*retry_after),
        }
    }
}

/// The classification of an error status.
fn classify_status(
    provider: &Provider,
    call: Call,
    status: u16,
    body: &GoogleErrorBody,
    retry_after: Option<TimeDelta>,
) -> ApiError {
    let refused = format!("Google refused {call} with HTTP {status} ({body})");
    match status {
        429 => ApiError::new(ErrorClass::Throttled, refused),
        403 if body.is_throttling() => ApiError::new(ErrorClass::Throttled, refused),
        503 if retry_after.is_some() => ApiError::new(ErrorClass::Throttled, refused),
        408 | 500..=599 => ApiError::new(ErrorClass::Transient, refused),
        404 | 410 => ApiError::new(
            ErrorClass::Permanent,
            format!(
                "{refused}: '{}' does not exist or is not visible to the connected account — check the {} and that the account it was authorized with can read it",
                provider.resource,
                what_is_watched(provider.kind)
            ),
        ),
        403 => ApiError::new(
            ErrorClass::Permanent,
            format!(
                "{refused}: the connected account may not watch '{}' — re-authorize with the {} scope and check that the API is enabled in the OAuth client's project",
                provider.resource,
                required_scope(provider.kind)
            ),
        ),
        _ => ApiError::new(ErrorClass::Permanent, refused),
    }
}

/// What a provider's `resource` names, for messages.
fn what_is_watched(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Gmail => "mailbox address",
        _ => "calendar id",
    }
}

/// The narrowest OAuth scope that lets an account watch the provider's resource.
pub fn required_scope(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Gmail => "https://www.googleapis.com/auth/gmail.readonly",
        _ => "https://www.googleapis.com/auth/calendar.readonly",
    }
}

impl crate::providers::call::Classify for GoogleError {
    fn classify(&self, provider: &Provider) -> ApiError {
        GoogleError::classify(self, provider)
    }
}
