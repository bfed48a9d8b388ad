//! Google's JSON shapes: the Channel and WatchResponse bodies, the API error
//! body, the OAuth error body and the Pub/Sub push envelope; and the headers of
//! a Calendar channel message.
//!
//! Pure functions of model values; no state, no HTTP.

use crate::google::model::{GoogleError, StoredChannel, StoredWatch};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// Content type of Google API JSON answers.
pub const GOOGLE_JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// Subscription named in every simulated Pub/Sub push.
pub const PUSH_SUBSCRIPTION: &str = "projects/sim/subscriptions/gmail-push";

/// Milliseconds since the epoch as Google's int64-as-string.
pub fn millis_string(at: DateTime<Utc>) -> String {
    at.timestamp_millis().to_string()
}

/// The Channel `events.watch` answers with.
pub fn channel_json(channel: &StoredChannel) -> Value {
    let mut body = json!({
        "kind": "api#channel",
        "id": channel.id,
        "resourceId": channel.resource_id,
        "resourceUri": channel.resource_uri,
        "expiration": millis_string(channel.expiration),
    });
    if let Some(token) = &channel.token {
        body["token"] = json!(token);
    }
    body
}

/// The WatchResponse `users.watch` answers with.
pub fn watch_response_json(watch: &StoredWatch, history_id: u64) -> Value {
    json!({
        "historyId": history_id.to_string(),
        "expiration": millis_string(watch.expiration),
    })
}

/// `error.status` Google pairs with an HTTP status.
fn rpc_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if status >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// `errors[0].domain` for a reason: quota reasons live in `usageLimits`.
fn domain(reason: &str) -> &'static str {
    match reason {
        "rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded" | "dailyLimitExceeded" => {
            "usageLimits"
        }
        _ => "global",
    }
}

/// Google's API error body.
pub fn error_json(error: &GoogleError) -> Value {
    let mut detail = json!({
        "message": error.message,
        "domain": domain(&error.reason),
        "reason": error.reason,
    });
    if error.status == 401 {
        detail["location"] = json!("Authorization");
        detail["locationType"] = json!("header");
    }
    json!({
        "error": {
            "code": error.status,
            "message": error.message,
            "errors": [detail],
            "status": rpc_status(error.status),
        }
    })
}

/// Google's OAuth token endpoint error body.
pub fn oauth_error_json(error: &str, description: &str) -> Value {
    json!({ "error": error, "error_description": description })
}

/// The `X-Goog-*` headers of one channel message (`sync`, `exists`,
/// `not_exists`), in the order Google sends them.
pub fn channel_headers(
    channel: &StoredChannel,
    state: &str,
    message_number: u64,
) -> Vec<(String, String)> {
    let mut headers = vec![("X-Goog-Channel-ID".to_owned(), channel.id.clone())];
    if let Some(token) = &channel.token {
        headers.push(("X-Goog-Channel-Token".to_owned(), token.clone()));
    }
    headers.extend([
        (
            "X-Goog-Channel-Expiration".to_owned(),
            channel
                .expiration
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        ),
        ("X-Goog-Resource-ID".to_owned(), channel.resource_id.clone()),
        (
            "X-Goog-Resource-URI".to_owned(),
            channel.resource_uri.clone(),
        ),
        ("X-Goog-Resource-State".to_owned(), state.to_owned()),
        (
            "X-Goog-Message-Number".to_owned(),
            message_number.to_string(),
        ),
    ]);
    headers
}

/// The Pub/Sub push envelope Gmail's notification arrives in.
pub fn pubsub_push_json(
    email: &str,
    history_id: u64,
    message_id: u64,
    published: DateTime<Utc>,
) -> Value {
    let data = json!({ "emailAddress": email, "historyId": history_id });
    let encoded = base64::engine::general_purpose::STANDARD.encode(data.to_string());
    let publish_time = published.to_rfc3339_opts(SecondsFormat::Millis, true);
    let message_id = message_id.to_string();
    json!({
        "message": {
            "attributes": {},
            "data": encoded,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": publish_time,
            "publish_time": publish_time,
        },
        "subscription": PUSH_SUBSCRIPTION,
    })
}
