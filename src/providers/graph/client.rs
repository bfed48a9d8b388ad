//! The HTTP side of the Graph adapter: request and response shapes of
//! `/subscriptions`, and one authenticated call with its single 401 retry.
//!
//! Owns URLs, headers, bearer tokens on the wire and turning transport outcomes into
//! [`GraphError`]s. It must not classify (that is `error`'s job) nor decide what a
//! status means for the lifecycle.

use crate::providers::graph::error::{GraphError, GraphErrorBody, Operation};
use crate::providers::oauth::{AccessToken, TokenCache};
use crate::providers::retry_after_of;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::clock::SharedClock;
use url::Url;
use uuid::Uuid;

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

/// A successful answer: status and body.
pub(crate) struct Answer {
    /// HTTP status (2xx, or 404/410 where the caller accepts it).
    pub status: u16,
    /// Raw body.
    pub body: Vec<u8>,
}

/// Authenticated calls to Graph's `/subscriptions`.
pub(crate) struct GraphClient {
    /// Shared HTTP client (timeouts configured on it).
    http: reqwest::Client,
    /// `{graph}/v1.0`, e.g. `https://graph.microsoft.com/v1.0`.
    base: Url,
    /// Bearer tokens.
    tokens: Arc<TokenCache>,
    /// Domain time, for HTTP-date `Retry-After`s.
    clock: SharedClock,
    /// The request timeout the client was built with, for messages.
    request_timeout: Duration,
}

impl GraphClient {
    /// A client for the Graph service at `base` (with the version segment).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        tokens: Arc<TokenCache>,
        clock: SharedClock,
        request_timeout: Duration,
    ) -> Result<Self, GraphError> {
        let base = Url::parse(base)
            .map_err(|e| GraphError::Config(format!("graph_base_url '{base}': {e}")))?;
        if base.cannot_be_a_base() {
            return Err(GraphError::Config(format!(
                "graph_base_url '{base}' cannot take a path"
            )));
        }
        Ok(Self {
            http,
            base,
            tokens,
            clock,
            request_timeout,
        })
    }

    /// `{base}/subscriptions[/{id}]`, the id escaped as one path segment.
    pub fn subscriptions_url(&self, id: Option<&str>) -> Result<Url, GraphError> {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| GraphError::Config("graph_base_url cannot take a path".to_owned()))?;
            segments.pop_if_empty().push("subscriptions");
            if let Some(id) = id {
                segments.push(id);
            }
        }
        Ok(url)
    }

    /// Sends one request with a bearer token for `credentials`. On 401 the token is
    /// dropped, a new one fetched and the request sent once more; a second 401 is
    /// [`GraphError::Unauthorized`]. Statuses in `accept` besides 2xx are answers,
    /// everything else is [`GraphError::Status`].
    pub async fn call(
        &self,
        credentials: Uuid,
        operation: Operation,
        method: reqwest::Method,
        url: Url,
        body: Option<&serde_json::Value>,
        accept: &[u16],
    ) -> Result<Answer, GraphError> {
        let token = self.tokens.token(credentials).await?;
        let (status, headers, bytes) = self
            .send(&token, operation, method.clone(), url.clone(), body)
            .await?;
        let (status, headers, bytes) = if status == 401 {
            tracing::info!(%operation, body = %GraphErrorBody::parse(&bytes), "Graph refused the access token; refreshing it once");
            self.tokens.reject(credentials, &token).await;
            let token = self.tokens.token(credentials).await?;
            let retried = self.send(&token, operation, method, url, body).await?;
            if retried.0 == 401 {
                return Err(GraphError::Unauthorized {
                    operation,
                    body: GraphErrorBody::parse(&retried.2),
                });
            }
            retried
        } else {
            (status, headers, bytes)
        };
        if (200..300).contains(&status) || accept.contains(&status) {
            return Ok(Answer {
                status,
                body: bytes,
            });
        }
        Err(GraphError::Status {
            operation,
            status,
            body: GraphErrorBody::parse(&bytes),
            retry_after: retry_after_of(&headers, self.clock.now()),
        })
    }

    /// One HTTP exchange; the body is read in full under the request timeout.
    async fn send(
        &self,
        token: &AccessToken,
        operation: Operation,
        method: reqwest::Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), GraphError> {
        // Graph echoes client-request-id in its answer and logs; quoting it lets
        // Microsoft support find one call.
        let request_id = Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .header("client-request-id", &request_id);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                GraphError::Timeout {
                    operation,
                    timeout: self.request_timeout,
                }
            } else {
                GraphError::Unreachable {
                    operation,
                    reason: e.to_string(),
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        tracing::debug!(%operation, status, client_request_id = %request_id, "Graph answered");
        Ok((status, headers, bytes.to_vec()))
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
