//! Calls Graph makes to the subscriber: the validation handshake on
//! `notificationUrl` / `lifecycleNotificationUrl`, and change and lifecycle
//! notification POSTs.
//!
//! Owns the outgoing HTTP and how its outcome reads (a Graph error for a failed
//! handshake, a [`DeliveryAttempt`] per POST). Holds no state.

use crate::graph::model::GraphError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use url::Url;

/// One POST of a notification collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// Status the endpoint answered; `None` when it did not answer in time or
    /// could not be reached.
    pub status: Option<u16>,
    /// Wall-clock time from sending to the answer (or to giving up).
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Why there is no status (timeout, connection refused).
    pub error: Option<String>,
}

impl DeliveryAttempt {
    /// Graph counts any 2xx within the deadline as delivered.
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The validation token Graph sends. Real tokens are free text with spaces and
/// colons, so a receiver that forgets to URL-decode the query fails here too.
pub fn new_validation_token() -> String {
    format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    )
}

/// Runs the validation handshake against `endpoint`: POST
/// `{endpoint}?validationToken=…` with `Content-Type: text/plain`, expecting 200,
/// `text/plain`, body exactly the token, within `timeout`.
pub async fn validate_endpoint(
    http: &reqwest::Client,
    endpoint: &str,
    timeout: Duration,
) -> Result<(), GraphError> {
    let token = new_validation_token();
    let mut url = Url::parse(endpoint).map_err(|_| {
        GraphError::new(
            400,
            "InvalidRequest",
            format!("Invalid notification url='{endpoint}'."),
        )
    })?;
    url.query_pairs_mut().append_pair("validationToken", &token);

    let sent = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(timeout)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return Err(handshake_timed_out()),
        Err(err) => {
            tracing::debug!(endpoint, error = %err, "validation request could not be sent");
            return Err(validation_error(
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            ));
        }
    };
    let status = response.status().as_u16();
    if status != 200 {
        return Err(validation_error(&format!(
            "Subscription validation request failed. HTTP status code is '{}'. Notification endpoint must respond with 200 OK to validation request.",
            dotnet_status_name(status)
        )));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Reading the body can time out too: the deadline covers the whole answer.
    let body = match response.text().await {
        Ok(body) => body,
        Err(err) if err.is_timeout() => return Err(handshake_timed_out()),
        Err(_) => String::new(),
    };
    if !content_type.starts_with("text/plain") {
        return Err(validation_error(
            "Subscription validation request failed. Response must be of content type 'text/plain'.",
        ));
    }
    if body != token {
        return Err(validation_error(
            "Subscription validation request failed. Response must exactly match validationToken query parameter.",
        ));
    }
    Ok(())
}

/// POSTs `body` to `endpoint` `times` times, one after the other, as Graph
/// redelivers an unacknowledged notification.
pub async fn post_notifications(
    http: &reqwest::Client,
    endpoint: &str,
    body: &serde_json::Value,
    times: u32,
    timeout: Duration,
) -> Vec<DeliveryAttempt> {
    let mut attempts = Vec::with_capacity(times as usize);
    for _ in 0..times {
        attempts.push(post_once(http, endpoint, body, timeout).await);
    }
    attempts
}

async fn post_once(
    http: &reqwest::Client,
    endpoint: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> DeliveryAttempt {
    let started = Instant::now();
    let sent = http
        .post(endpoint)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body.to_string())
        .timeout(timeout)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            // Drain the body so the latency covers the whole answer.
            let drained = response.bytes().await;
            DeliveryAttempt {
                status: Some(status),
                latency: started.elapsed(),
                error: drained.err().map(|e| e.to_string()),
            }
        }
        Err(err) => DeliveryAttempt {
            status: None,
            latency: started.elapsed(),
            error: Some(if err.is_timeout() {
                format!("no answer within {} ms", timeout.as_millis())
            } else {
                err.to_string()
            }),
        },
    }
}

fn validation_error(message: &str) -> GraphError {
    GraphError::new(400, "ValidationError", message)
}

fn handshake_timed_out() -> GraphError {
    GraphError::new(
        400,
        "InvalidRequest",
        "Subscription validation request timed out.",
    )
}

/// Graph words the status with .NET's `HttpStatusCode` names.
fn dotnet_status_name(status: u16) -> String {
    let name = match status {
        201 => "Created",
        202 => "Accepted",
        204 => "NoContent",
        301 => "MovedPermanently",
        302 => "Redirect",
        307 => "TemporaryRedirect",
        308 => "PermanentRedirect",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        408 => "RequestTimeout",
        409 => "Conflict",
        415 => "UnsupportedMediaType",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        501 => "NotImplemented",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// `Duration` as fractional milliseconds in JSON.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(deserializer)?;
        Ok(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default())
    }
}
