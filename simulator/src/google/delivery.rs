//! Calls Google makes to the subscriber: Calendar channel messages (an empty
//! POST whose meaning is in `X-Goog-*` headers) and Pub/Sub push deliveries of
//! Gmail notifications.
//!
//! Owns only the outgoing HTTP; holds no state. Google counts 102, 200, 201,
//! 202 and 204 as delivered (see [`DeliveryAttempt::accepted`], which takes any
//! 2xx).

use crate::DeliveryAttempt;
use std::time::{Duration, Instant};

/// POSTs the same message `times` times (redeliveries), one after the other.
pub async fn post_times(
    http: &reqwest::Client,
    endpoint: &str,
    headers: &[(String, String)],
    body: Option<&serde_json::Value>,
    times: u32,
    timeout: Duration,
) -> Vec<DeliveryAttempt> {
    let mut attempts = Vec::with_capacity(times as usize);
    for _ in 0..times {
        attempts.push(post_once(http, endpoint, headers, body, timeout).await);
    }
    attempts
}

async fn post_once(
    http: &reqwest::Client,
    endpoint: &str,
    headers: &[(String, String)],
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> DeliveryAttempt {
    let started = Instant::now();
    let mut request = http.post(endpoint).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request = match body {
        Some(body) => request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
        // Channel messages carry no body, only a zero Content-Length.
        None => request.header(reqwest::header::CONTENT_LENGTH, "0"),
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
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
