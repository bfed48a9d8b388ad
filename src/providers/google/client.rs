//! The HTTP side of the Google adapters: request and response shapes of Calendar's
//! `events.watch` / `channels.stop` and Gmail's `users.watch` / `users.stop`, and
//! what Google's calls look like to the shared authenticated call
//! (`providers::call`).
//!
//! Owns Google's wire shapes and how call outcomes become [`GoogleError`]s. It must
//! not classify (that is `error`'s job).

use crate::providers::call::{Answer, Api, BearerClient, CallFailure};
use crate::providers::google::error::{Call, GoogleError, GoogleErrorBody};
use crate::providers::limits::{Held, RateLimited};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Gmail quota units a `users.watch` costs (Gmail's per-method table; the
/// simulator charges the same).
pub const USERS_WATCH_UNITS: u32 = 100;

/// Gmail quota units a `users.stop` costs.
pub const USERS_STOP_UNITS: u32 = 50;

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

/// Google's wire: its name in logs and its base URL setting; Google has no
/// request id header.
pub(crate) static GOOGLE: Api = Api {
    name: "Google",
    base_setting: "google_base_url",
    token_setting: "google_token_url",
    request_id_header: None,
};

/// Authenticated calls to the Calendar and Gmail APIs: every one a POST under
/// `https://www.googleapis.com` (Calendar under `calendar/v3`, Gmail under
/// `gmail/v1`).
pub(crate) type GoogleClient = BearerClient<GoogleError>;

impl CallFailure for GoogleError {
    type Op = Call;
    type Body = GoogleErrorBody;

    fn parse_body(body: &[u8]) -> GoogleErrorBody {
        GoogleErrorBody::parse(body)
    }

    fn timeout(call: Call, timeout: Duration) -> Self {
        Self::Timeout { call, timeout }
    }

    fn unreachable(call: Call, reason: String, sent: bool) -> Self {
        Self::Unreachable { call, reason, sent }
    }

    fn unauthorized(call: Call, body: GoogleErrorBody) -> Self {
        Self::Unauthorized { call, body }
    }

    fn refused(
        call: Call,
        status: u16,
        body: GoogleErrorBody,
        retry_after: Option<TimeDelta>,
    ) -> Self {
        Self::Status {
            call,
            status,
            body,
            retry_after,
        }
    }

    fn config(reason: String) -> Self {
        Self::Config(reason)
    }

    fn held(call: Call, held: Held) -> Self {
        Self::Held { call, held }
    }

    fn rate_limit(
        status: u16,
        body: &GoogleErrorBody,
        retry_after: Option<TimeDelta>,
    ) -> Option<RateLimited> {
        body.rate_limit(status, retry_after)
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
