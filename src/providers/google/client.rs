//! The HTTP side of the Google adapters: request and response shapes of Calendar's
//! `events.watch` / `channels.stop` and Gmail's `users.watch` / `users.stop`, and
//! one authenticated call with its single 401 retry.
//!
//! Owns URLs, headers, bearer tokens on the wire and turning transport outcomes into
//! [`GoogleError`]s. It must not classify (that is `error`'s job).

use crate::providers::google::error::{Call, GoogleError, GoogleErrorBody};
use crate::providers::oauth::{AccessToken, TokenCache};
use crate::providers::retry_after_of;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::clock::SharedClock;
use url::Url;
use uuid::Uuid;

/// The channel type Google delivers over HTTPS POSTs.
pub const WEB_HOOK: &str = "web_hook";

/// Body of Calendar `events.watch` (a `Channel` resource).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchChannelBody<'a> {
    /// Our channel id (a UUID; Google echoes it as `X-Goog-Channel-ID`).
    pub id: &'a str,
    /// Always [`WEB_HOOK`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where Google POSTs notifications.
    pub address: &'a str,
    /// Per-channel secret Google echoes as `X-Goog-Channel-Token` (≤ 256 chars).
    pub token: &'a str,
    /// `ttl`: requested lifetime in seconds, as a string.
    pub params: BTreeMap<&'static str, String>,
}

/// Body of Calendar `channels.stop`: the channel and the resource it watches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopChannelBody<'a> {
    /// Our channel id.
    pub id: &'a str,
    /// Google's `resourceId` from the watch answer.
    pub resource_id: &'a str,
}

/// Body of Gmail `users.watch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GmailWatchBody<'a> {
    /// Pub/Sub topic, `projects/{project}/topics/{topic}`.
    pub topic_name: &'a str,
    /// Labels whose changes are pushed.
    pub label_ids: Vec<&'a str>,
    /// `include`: only changes to `label_ids` are pushed.
    pub label_filter_behavior: &'static str,
}

/// The parts of Calendar's `Channel` answer the adapter reads back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChannelAnswer {
    /// Our channel id, echoed.
    pub id: String,
    /// Google's opaque id of the watched resource; needed to stop the channel.
    pub resource_id: String,
    /// Expiry, Unix milliseconds as a string.
    #[serde(default)]
    pub expiration: Option<String>,
}

/// Gmail's `WatchResponse`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GmailWatchAnswer {
    /// The mailbox's current history id (where a sync would start).
    #[serde(default)]
    pub history_id: Option<String>,
    /// Expiry, Unix milliseconds as a string.
    pub expiration: String,
}

/// Parses Google's expiration: Unix epoch milliseconds as a decimal string.
pub fn parse_millis(raw: &str) -> Option<DateTime<Utc>> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
}

/// A successful answer: status and body.
pub(crate) struct Answer {
    /// HTTP status (2xx, or 404/410 where the caller accepts it).
    pub status: u16,
    /// Raw body.
    pub body: Vec<u8>,
}

/// Authenticated calls to the Calendar and Gmail APIs.
pub(crate) struct GoogleClient {
    /// Shared HTTP client (timeouts configured on it).
    http: reqwest::Client,
    /// `https://www.googleapis.com`; Calendar is under `calendar/v3`, Gmail under
    /// `gmail/v1`.
    base: Url,
    /// Bearer tokens.
    tokens: Arc<TokenCache>,
    /// Domain time, for HTTP-date `Retry-After`s.
    clock: SharedClock,
    /// The request timeout the client was built with, for messages.
    request_timeout: Duration,
}

impl GoogleClient {
    /// A client for the Google APIs at `base`.
    pub fn new(
        http: reqwest::Client,
        base: &str,
        tokens: Arc<TokenCache>,
        clock: SharedClock,
        request_timeout: Duration,
    ) -> Result<Self, GoogleError> {
        let base = Url::parse(base)
            .map_err(|e| GoogleError::Config(format!("google_base_url '{base}': {e}")))?;
        if base.cannot_be_a_base() {
            return Err(GoogleError::Config(format!(
                "google_base_url '{base}' cannot take a path"
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

    /// `{base}/` plus `segments`, each escaped as one path segment (calendar ids
    /// and mailbox addresses come from the database; they must not add segments).
    pub fn url(&self, segments: &[&str]) -> Result<Url, GoogleError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| GoogleError::Config("google_base_url cannot take a path".to_owned()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one POST with a bearer token for `credentials`. On 401 the token is
    /// dropped, a new one fetched and the request sent once more; a second 401 is
    /// [`GoogleError::Unauthorized`]. Statuses in `accept` besides 2xx are answers,
    /// everything else is [`GoogleError::Status`].
    pub async fn post(
        &self,
        credentials: Uuid,
        call: Call,
        url: Url,
        body: Option<&serde_json::Value>,
        accept: &[u16],
    ) -> Result<Answer, GoogleError> {
        let token = self.tokens.token(credentials).await?;
        let (status, headers, bytes) = self.send(&token, call, url.clone(), body).await?;
        let (status, headers, bytes) = if status == 401 {
            tracing::info!(%call, body = %GoogleErrorBody::parse(&bytes), "Google refused the access token; refreshing it once");
            self.tokens.reject(credentials, &token).await;
            let token = self.tokens.token(credentials).await?;
            let retried = self.send(&token, call, url, body).await?;
            if retried.0 == 401 {
                return Err(GoogleError::Unauthorized {
                    call,
                    body: GoogleErrorBody::parse(&retried.2),
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
        Err(GoogleError::Status {
            call,
            status,
            body: GoogleErrorBody::parse(&bytes),
            retry_after: retry_after_of(&headers, self.clock.now()),
        })
    }

    /// One HTTP exchange; the body is read in full under the request timeout.
    async fn send(
        &self,
        token: &AccessToken,
        call: Call,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), GoogleError> {
        let mut request = self
            .http
            .post(url)
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json");
        request = match body {
            Some(body) => request.json(body),
            // Google wants a Content-Length on bodiless POSTs.
            None => request.header(reqwest::header::CONTENT_LENGTH, "0"),
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                GoogleError::Timeout {
                    call,
                    timeout: self.request_timeout,
                }
            } else {
                GoogleError::Unreachable {
                    call,
                    reason: e.to_string(),
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        tracing::debug!(%call, status, "Google answered");
        Ok((status, headers, bytes.to_vec()))
    }
}

/// Reads a 2xx body as `T`, or says why it is not one.
pub(crate) fn parse_answer<T: serde::de::DeserializeOwned>(
    call: Call,
    answer: &Answer,
) -> Result<T, GoogleError> {
    serde_json::from_slice(&answer.body).map_err(|e| GoogleError::InvalidResponse {
        call,
        status: answer.status,
        reason: format!("the body is not the expected resource ({e})"),
    })
}
