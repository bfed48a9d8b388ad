//! The durable-stream port: where the in-process bus (used when no NATS server is
//! configured) keeps its streams — the messages published, deduplicated within a
//! window, and what each durable consumer still has to settle — so that a webhook
//! acknowledged to a provider survives a crash of the process, as it would in
//! JetStream. The store implements it.

use crate::delivery::Settlement;
use crate::ports::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A message as a durable stream keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMessage {
    /// Position in the log, increasing in publish order across streams.
    pub seq: i64,
    /// The stream it belongs to (`WEBHOOKS`, `RENEWALS`, `ALERTS`, `EVENTS`).
    pub stream: String,
    /// The subject it was published on.
    pub subject: String,
    /// The publisher's de-duplication key, while the stream's duplicate window
    /// still remembers it (JetStream's `Nats-Msg-Id`).
    pub msg_id: Option<String>,
    /// Its body.
    pub payload: Vec<u8>,
    /// When it was stored.
    pub published_at: DateTime<Utc>,
    /// For a consumer's delivery: how many times it was handed out, this time
    /// included. Zero when read from the log.
    pub delivered: u64,
}

/// What [`StreamLog::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this sequence number, owed to every consumer named.
    Stored(i64),
    /// A message with the same id is already in the stream's window: nothing
    /// changed.
    Duplicate,
}

/// One message to append.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The subject.
    pub subject: &'a str,
    /// The de-duplication key, if the publisher gave one.
    pub msg_id: Option<&'a str>,
    /// The body.
    pub payload: &'a [u8],
    /// The durable consumers that must each settle it.
    pub consumers: &'a [&'a str],
    /// When it is stored.
    pub now: DateTime<Utc>,
}

/// Durable streams with at-least-once consumers, in the store.
#[async_trait]
pub trait StreamLog: Send + Sync + 'static {
    /// Stores one message (and the consumers' claims on it) durably before
    /// answering.
    async fn append(&self, message: Append<'_>) -> Result<Appended, StoreError>;

    /// Up to `limit` messages `consumer` has not settled and that are due at
    /// `now`, oldest first; each counts as delivered once more.
    async fn due(
        &self,
        consumer: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StreamMessage>, StoreError>;

    /// Applies a consumer's settlements: `Ack` and `Reject` end its claim,
    /// `Retry(d)` makes the message due again `d` after `now`.
    async fn settle(
        &self,
        consumer: &str,
        settlements: &[(i64, Settlement)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Messages after `after` (a sequence number), oldest first, in every stream
    /// or just `stream`: what a tap or `subkeeper tail` reads.
    async fn read(
        &self,
        stream: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StreamMessage>, StoreError>;

    /// Forgets the message ids of `stream` stored before `dedup_before` (their
    /// duplicate window has passed) and deletes its messages stored before
    /// `delete_before` that no consumer still owes. Returns how many were deleted.
    async fn trim(
        &self,
        stream: &str,
        dedup_before: DateTime<Utc>,
        delete_before: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Messages `consumer` has not settled yet (a gauge, and the crash tests).
    async fn pending(&self, consumer: &str) -> Result<i64, StoreError>;
}
