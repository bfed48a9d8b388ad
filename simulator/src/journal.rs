//! The request journal: every request the simulated provider endpoints received,
//! with what the simulator made of it and what it answered.
//!
//! Tests assert on it ("the service renewed exactly once", "it refreshed its token
//! after the 401"). It records; it never decides an answer. It keeps the latest
//! entries up to a capacity (a long `subkeeper simulate` must not grow without
//! bound), and counts what it let go.

use crate::limits::LimitKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// A read of a change feed: Graph `GET .../messages/delta` and
    /// `GET .../calendarView/delta`, Calendar `events.list`, Gmail
    /// `users.history.list`.
    ChangeFeed,
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
    /// The app (OAuth client id) the access token was issued to; `None` on the
    /// token endpoints and when the token was unknown.
    #[serde(default)]
    pub app: Option<String>,
    /// Whose per-user budget the request drew on: Graph — the mailbox an
    /// Outlook resource names (lowercased user id or UPN, `me` for the signed-in
    /// user); Google — the account behind the token. `None` otherwise.
    #[serde(default)]
    pub user: Option<String>,
    /// The subscription's resource (from the body on create, from the stored
    /// subscription otherwise), when there is one.
    pub resource: Option<String>,
    /// Subscription id from the path, or the id a create produced.
    pub subscription_id: Option<String>,
    /// HTTP status the simulator answered (for a held `Timeout` fault: the 504 it
    /// answers if the client is still waiting).
    pub status: u16,
    /// Seconds of the `Retry-After` header answered, if any (provider seconds).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// The provider limit (or forced throttle) that refused the request, when
    /// one did; `None` for a request served, or refused for another reason
    /// (an injected fault included).
    #[serde(default)]
    pub throttled_by: Option<LimitKind>,
    /// Provider (simulated) time the request arrived.
    pub at: DateTime<Utc>,
    /// The request body: JSON as sent, form fields as a JSON object with
    /// `client_secret` redacted, a non-JSON body as a string; `None` when empty.
    pub body: Option<serde_json::Value>,
}

/// Entries a journal keeps by default: about 50 MiB of requests with bodies,
/// more than a 10,000-provider benchmark run makes.
pub const DEFAULT_JOURNAL_CAPACITY: usize = 100_000;

/// The latest [`RecordedRequest`]s, up to a capacity, cleared on demand.
#[derive(Debug)]
pub struct Journal {
    /// In arrival order (more precisely: in the order answers were decided).
    entries: Mutex<VecDeque<RecordedRequest>>,
    /// Entries kept at most; the oldest go first.
    capacity: usize,
    /// Entries let go to stay within `capacity`.
    dropped: AtomicU64,
}

impl Default for Journal {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_JOURNAL_CAPACITY)
    }
}

impl Journal {
    /// A journal keeping the latest `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds one entry, letting the oldest go when full.
    pub fn record(&self, entry: RecordedRequest) {
        tracing::debug!(
            method = %entry.method,
            path = %entry.path,
            operation = ?entry.operation,
            status = entry.status,
            "simulator answered"
        );
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity {
            entries.pop_front();
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::info!(
                    capacity = self.capacity,
                    "simulator journal full: the oldest requests are let go from now on"
                );
            }
        }
        entries.push_back(entry);
    }

    /// A copy of every entry kept, oldest first.
    pub fn entries(&self) -> Vec<RecordedRequest> {
        lock(&self.entries).iter().cloned().collect()
    }

    /// Entries let go so far to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            operation: Operation::Create,
            tenant: None,
            app: None,
            user: None,
            resource: None,
            subscription_id: None,
            status: 201,
            retry_after_seconds: None,
            throttled_by: None,
            at: Utc::now(),
            body: None,
        }
    }

    #[test]
    fn a_full_journal_keeps_the_latest_entries_and_counts_the_rest() {
        let journal = Journal::with_capacity(3);
        for i in 0..5 {
            journal.record(entry(&format!("/{i}")));
        }
        let paths: Vec<String> = journal.entries().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/2", "/3", "/4"]);
        assert_eq!(journal.dropped(), 2);
        journal.clear();
        assert!(journal.entries().is_empty());
    }
}
