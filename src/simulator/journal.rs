//! The request journal: every request the simulated provider endpoints received,
//! with what the simulator made of it and what it answered.
//!
//! Tests assert on it ("the service renewed exactly once", "it refreshed its token
//! after the 401"). It records; it never decides an answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// What a request asked the provider to do, as the simulator classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `POST /{tenant}/oauth2/v2.0/token` (any grant type).
    Token,
    /// `POST /v1.0/subscriptions`.
    Create,
    /// `PATCH /v1.0/subscriptions/{id}`.
    Renew,
    /// `DELETE /v1.0/subscriptions/{id}`.
    Delete,
    /// `GET /v1.0/subscriptions/{id}`.
    Get,
    /// `GET /v1.0/subscriptions`.
    List,
    /// `POST /v1.0/subscriptions/{id}/reauthorize`.
    Reauthorize,
    /// Anything else under `/v1.0/` (answered the way Graph answers an unknown
    /// segment).
    Other,
}

/// One request as received and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// Path without the query string, e.g. `/v1.0/subscriptions/{id}`.
    pub path: String,
    /// What the request was for.
    pub operation: Operation,
    /// Tenant the request acted for: the path segment on the token endpoint, the
    /// access token's tenant on Graph calls; `None` when the token was unknown.
    pub tenant: Option<String>,
    /// The subscription's resource (from the body on create, from the stored
    /// subscription otherwise), when there is one.
    pub resource: Option<String>,
    /// Subscription id from the path, or the id a create produced.
    pub subscription_id: Option<String>,
    /// HTTP status the simulator answered (for a held `Timeout` fault: the 504 it
    /// answers if the client is still waiting).
    pub status: u16,
    /// Provider (simulated) time the request arrived.
    pub at: DateTime<Utc>,
    /// The request body: JSON as sent, form fields as a JSON object with
    /// `client_secret` redacted, a non-JSON body as a string; `None` when empty.
    pub body: Option<serde_json::Value>,
}

/// Append-only list of [`RecordedRequest`]s, cleared on demand.
#[derive(Debug, Default)]
pub struct Journal {
    /// In arrival order (more precisely: in the order answers were decided).
    entries: Mutex<Vec<RecordedRequest>>,
}

impl Journal {
    /// Adds one entry.
    pub fn record(&self, entry: RecordedRequest) {
        tracing::debug!(
            method = %entry.method,
            path = %entry.path,
            operation = ?entry.operation,
            status = entry.status,
            "simulator answered"
        );
        lock(&self.entries).push(entry);
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<RecordedRequest> {
        lock(&self.entries).clone()
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// Locks a mutex, ignoring poisoning: simulator state stays usable for the
/// assertions that follow a panicking test thread.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
