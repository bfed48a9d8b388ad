//! The HTTP side of the Graph adapter: request and response shapes of
//! `/subscriptions`, and what Graph's calls look like to the shared authenticated
//! call (`providers::call`).
//!
//! Owns Graph's URLs and headers and how call outcomes become [`GraphError`]s. It
//! must not classify (that is `error`'s job) nor decide what a status means for the
//! lifecycle.

use crate::providers::call::{Answer, Api, BearerClient, CallFailure};
use crate::providers::graph::error::{GraphError, GraphErrorBody, Operation};
use crate::providers::limits::{Held, RateLimited};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use url::Url;

/// Change types subscribed to. Graph accepts `created`, `updated` and `deleted`,
/// comma-separated, for Outlook messages and events alike; we take all three so a
/// moved, edited or deleted mail or meeting reaches downstream too.
pub const CHANGE_TYPES: &str = "created,updated,deleted";

/// Newest TLS version our notification endpoint supports; Graph's default and
/// the only value it will keep accepting.
pub const LATEST_SUPPORTED_TLS_VERSION: &str = "v1_2";

/// Body of `POST /subscriptions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody<'a> {
    /// See [`CHANGE_TYPES`].
    pub change_type: &'static str,
    /// Where change notifications go.
    pub notification_url: &'a str,
    /// Where lifecycle notifications go (can only be set at creation).
    pub lifecycle_notification_url: &'a str,
    /// The watched resource, e.g. `users/{id}/messages`.
    pub resource: &'a str,
    /// Requested expiry, ISO 8601 in UTC (see [`graph_datetime`]).
    pub expiration_date_time: String,
    /// Secret Graph echoes in every notification (≤ 128 characters).
    pub client_state: &'a str,
    /// See [`LATEST_SUPPORTED_TLS_VERSION`].
    pub latest_supported_tls_version: &'static str,
}

/// Body of `PATCH /subscriptions/{id}`: renewal only moves the expiry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewBody {
    /// Requested expiry, ISO 8601 in UTC.
    pub expiration_date_time: String,
}

/// The parts of Graph's subscription resource the adapter reads back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionBody {
    /// Graph's subscription id.
    id: String,
    /// The expiry Graph granted.
    expiration_date_time: String,
}

/// A subscription as Graph returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantedSubscription {
    /// Graph's subscription id.
    pub id: String,
    /// The expiry Graph granted (what is stored, never what was requested).
    pub expires_at: DateTime<Utc>,
}

/// Formats an instant the way Graph accepts it: ISO 8601, UTC, `Z` suffix, whole
/// seconds (truncating only ever asks for slightly less than the maximum).
pub fn graph_datetime(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses Graph's `expirationDateTime`: RFC 3339 with up to seven fractional
/// digits (`2026-11-28T07:00:00.0000000Z`); a value without an offset is UTC, as
/// Graph documents all subscription times.
pub fn parse_graph_datetime(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// Graph's wire: its name in logs, its base URL setting, and the
/// `client-request-id` Graph echoes in its answer and logs, so that quoting it
/// lets Microsoft support find one call.
pub(crate) static GRAPH: Api = Api {
    name: "Graph",
    base_setting: "graph_base_url",
    token_setting: "login_base_url",
    request_id_header: Some("client-request-id"),
};

/// Authenticated calls to Graph's `/subscriptions`.
pub(crate) type GraphClient = BearerClient<GraphError>;

impl CallFailure for GraphError {
    type Op = Operation;
    type Body = GraphErrorBody;

    fn parse_body(body: &[u8]) -> GraphErrorBody {
        GraphErrorBody::parse(body)
    }

    fn timeout(operation: Operation, timeout: Duration) -> Self {
        Self::Timeout { operation, timeout }
    }

    fn unreachable(operation: Operation, reason: String, sent: bool) -> Self {
        Self::Unreachable {
            operation,
            reason,
            sent,
        }
    }

    fn unauthorized(operation: Operation, body: GraphErrorBody) -> Self {
        Self::Unauthorized { operation, body }
    }

    fn refused(
        operation: Operation,
        status: u16,
        body: GraphErrorBody,
        retry_after: Option<TimeDelta>,
    ) -> Self {
        Self::Status {
            operation,
            status,
            body,
            retry_after,
        }
    }

    fn config(reason: String) -> Self {
        Self::Config(reason)
    }

    fn held(operation: Operation, held: Held) -> Self {
        Self::Held { operation, held }
    }

    /// Every 429 (`TooManyRequests`, `ApplicationThrottled`) is the tenant's:
    /// which budget Graph counted it against is only in its message, which
    /// clients must not parse, so the whole tenant waits (seconds, for the
    /// budgets; what Graph says, for a throttled tenant).
    fn rate_limit(
        status: u16,
        _body: &GraphErrorBody,
        retry_after: Option<TimeDelta>,
    ) -> Option<RateLimited> {
        (status == 429).then_some(RateLimited::Caller { retry_after })
    }
}

/// `{base}/subscriptions[/{id}]`, the id escaped as one path segment.
pub(crate) fn subscriptions_url(client: &GraphClient, id: Option<&str>) -> Result<Url, GraphError> {
    match id {
        Some(id) => client.url(&["subscriptions", id]),
        None => client.url(&["subscriptions"]),
    }
}

/// Reads the subscription Graph returned from a 2xx body.
pub(crate) fn granted(
    operation: Operation,
    answer: &Answer,
) -> Result<GrantedSubscription, GraphError> {
    let invalid = |reason: String| GraphError::InvalidResponse {
        operation,
        status: answer.status,
        reason,
    };
    let parsed: SubscriptionBody = serde_json::from_slice(&answer.body)
        .map_err(|e| invalid(format!("the body is not a subscription ({e})")))?;
    let expires_at = parse_graph_datetime(&parsed.expiration_date_time).ok_or_else(|| {
        invalid(format!(
            "expirationDateTime '{}' is not a date-time",
            parsed.expiration_date_time
        ))
    })?;
    Ok(GrantedSubscription {
        id: parsed.id,
        expires_at,
    })
}
