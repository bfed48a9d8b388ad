//! Changes the simulated providers make to watched resources, and the record
//! the vendors' catch-up APIs read back: per feed (a Graph mail folder, a Graph
//! user's calendar, a Google calendar, a Gmail mailbox) an ordered log of
//! created / updated / deleted items with their versions and provider times.
//!
//! Every change is announced by webhook as the provider does it (Graph change
//! notification, Calendar `exists` message, Gmail Pub/Sub push), dropped (in
//! the feed, no webhook: a missed delivery) or held (its webhook sent on a
//! later release); a feed can be muted so every webhook is dropped until it is
//! resumed.
//!
//! - `feed`: feed names and Graph resource paths.
//! - `model`: the log, items and cursors as pure state.
//! - `announce`: the webhooks, through `graph/delivery.rs` and
//!   `google/delivery.rs`.
//! - `control`: the `/_sim/changes` routes.
//!
//! The catch-up endpoints themselves live with their families
//! (`graph/delta.rs`, `google/sync.rs`). This module must not change
//! subscriptions, channels or watches; it only reads them to address webhooks.

mod announce;
pub(crate) mod control;
pub(crate) mod feed;
pub(crate) mod model;

pub use crate::graph::wire::ChangeType;
pub use feed::{FeedProvider, FeedRef};
pub use model::{ChangeDelivery, Delivery, SimChange, TOKEN_CACHE_CAPACITY};

use crate::journal::lock;
use crate::{DeliveryReport, Simulator};
use chrono::{DateTime, TimeDelta, Utc};
use feed::FeedKey;
use model::ChangeSpec;
use serde::{Deserialize, Serialize};

/// What went wrong making or releasing a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The resource names no feed of that provider.
    #[error("{resource:?} is not a {provider:?} feed: {reason}")]
    InvalidFeed {
        /// Provider named.
        provider: FeedProvider,
        /// Resource named.
        resource: String,
        /// Why not.
        reason: String,
    },
    /// A create named an id the feed already has (live or deleted).
    #[error("item {item_id} already exists")]
    ItemExists {
        /// The id asked for.
        item_id: String,
    },
    /// An update or delete named an item the feed does not have live.
    #[error("no live item {item_id}")]
    ItemNotFound {
        /// The id asked for.
        item_id: String,
    },
    /// An update or delete without an item id, on a feed with no live item.
    #[error("no live item to change")]
    NoLiveItem,
    /// A release named a change that is not held.
    #[error("change {change_id} is not held")]
    NotHeld {
        /// The id asked for.
        change_id: u64,
    },
}

/// A change to make: `POST /_sim/changes` takes it as JSON, the feed's fields
/// inline (`{"provider": "graph", "resource": "...", "kind": "created"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// The feed changed.
    #[serde(flatten)]
    pub feed: FeedRef,
    /// `created`, `updated` or `deleted`.
    pub kind: ChangeType,
    /// The item: made up for a create when absent; for an update or delete,
    /// the newest live item when absent.
    #[serde(default)]
    pub item_id: Option<String>,
    /// Subject (messages) or summary (events); made up on create when absent.
    #[serde(default)]
    pub subject: Option<String>,
    /// Events: start time (they last an hour); on create, the next full hour
    /// after provider now when absent.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// `announce` (default), `drop` or `hold`.
    #[serde(default)]
    pub delivery: Delivery,
}

impl ChangeRequest {
    /// A change of `kind` on `feed`, announced, on a made-up or the newest item.
    pub fn new(feed: FeedRef, kind: ChangeType) -> Self {
        Self {
            feed,
            kind,
            item_id: None,
            subject: None,
            start: None,
            delivery: Delivery::Announce,
        }
    }

    /// On this item.
    pub fn item(mut self, item_id: impl Into<String>) -> Self {
        self.item_id = Some(item_id.into());
        self
    }

    /// With this subject or summary.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Events: starting at `start`.
    pub fn starting(mut self, start: DateTime<Utc>) -> Self {
        self.start = Some(start);
        self
    }

    /// Its webhook handled so.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }
}

/// A change and the webhooks sent for it (none when dropped, muted or held).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// The change as logged.
    pub change: SimChange,
    /// One per subscription, channel or push sent to.
    pub deliveries: Vec<DeliveryReport>,
}

/// Which held changes a release sends: one by id, those of one feed, or all
/// (`{}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReleaseSelector {
    /// Only this change.
    #[serde(default)]
    pub change_id: Option<u64>,
    /// Only this feed's.
    #[serde(default, flatten)]
    pub feed: Option<FeedRef>,
}

impl Simulator {
    /// Makes a change on a feed and handles its webhook as asked: announced
    /// now (to every live subscription, channel or watch of the resource),
    /// dropped, or held for [`Simulator::release_changes`]. A muted feed drops
    /// what would be announced. Gmail changes move the mailbox's historyId —
    /// the one `users.watch` and pushes report.
    pub async fn make_change(&self, request: ChangeRequest) -> Result<ChangeReport, ChangeError> {
        let key = FeedKey::parse(&request.feed)?;
        let spec = ChangeSpec {
            kind: request.kind,
            item_id: request.item_id,
            subject: request.subject,
            start: request.start,
            delivery: request.delivery,
        };
        let now = self.now();
        let change = lock(&self.shared.changes).record(&key, &spec, now, || match &key {
            // Lock order: the change log, then Google's state; never the reverse.
            FeedKey::GmailHistory { email } => lock(&self.shared.google).advance_history_id(email),
            _ => 0,
        })?;
        let deliveries = if change.delivery == ChangeDelivery::Announced {
            announce::announce(self, &key, &change).await
        } else {
            Vec::new()
        };
        Ok(ChangeReport { change, deliveries })
    }

    /// Sends the webhooks of held changes (oldest first) as the provider
    /// would now, and marks them released.
    pub async fn release_changes(
        &self,
        selector: &ReleaseSelector,
    ) -> Result<Vec<ChangeReport>, ChangeError> {
        let feed = selector.feed.as_ref().map(FeedKey::parse).transpose()?;
        let held: Vec<(FeedKey, SimChange)> = lock(&self.shared.changes)
            .held()
            .into_iter()
            .filter(|(key, change)| {
                selector.change_id.is_none_or(|id| id == change.id)
                    && feed.as_ref().is_none_or(|f| f == key)
            })
            .collect();
        if let Some(change_id) = selector.change_id
            && held.is_empty()
        {
            return Err(ChangeError::NotHeld { change_id });
        }
        let mut reports = Vec::with_capacity(held.len());
        for (key, change) in held {
            // Released meanwhile by a concurrent call: skip.
            let Some(released) = lock(&self.shared.changes).release(&key, change.id) else {
                continue;
            };
            let deliveries = announce::announce(self, &key, &released).await;
            reports.push(ChangeReport {
                change: released,
                deliveries,
            });
        }
        Ok(reports)
    }

    /// Drops every webhook of `feed` from now on (the changes are still made
    /// and logged) until [`Simulator::resume_feed`].
    pub fn mute_feed(&self, feed: &FeedRef) -> Result<(), ChangeError> {
        let key = FeedKey::parse(feed)?;
        lock(&self.shared.changes).set_muted(&key, true);
        Ok(())
    }

    /// Announces `feed`'s changes again (those made while muted stay missed).
    pub fn resume_feed(&self, feed: &FeedRef) -> Result<(), ChangeError> {
        let key = FeedKey::parse(feed)?;
        lock(&self.shared.changes).set_muted(&key, false);
        Ok(())
    }

    /// Whether `feed` is muted.
    pub fn feed_muted(&self, feed: &FeedRef) -> Result<bool, ChangeError> {
        let key = FeedKey::parse(feed)?;
        Ok(lock(&self.shared.changes).is_muted(&key))
    }

    /// Expires every token handed out for `feed`: Graph delta and skip tokens
    /// answer 410 `SyncStateNotFound`, Calendar sync and page tokens 410
    /// `fullSyncRequired`; Gmail forgets the mailbox's history, so a
    /// `startHistoryId` before its current historyId answers 404.
    pub fn expire_feed_tokens(&self, feed: &FeedRef) -> Result<(), ChangeError> {
        let key = FeedKey::parse(feed)?;
        let gmail_current = match &key {
            FeedKey::GmailHistory { email } => {
                Some(lock(&self.shared.google).history_span(email).0)
            }
            _ => None,
        };
        lock(&self.shared.changes).expire(&key, gmail_current);
        Ok(())
    }

    /// Sets the age (provider time) past which every feed's tokens are
    /// refused as expired, and Gmail history is forgotten; `None` lifts it.
    pub fn set_feed_token_max_age(&self, max_age: Option<TimeDelta>) {
        lock(&self.shared.changes).set_max_age(max_age);
    }

    /// The age past which tokens are refused, if any.
    pub fn feed_token_max_age(&self) -> Option<TimeDelta> {
        lock(&self.shared.changes).max_age()
    }

    /// The changes made on `feed`, oldest first.
    pub fn feed_changes(&self, feed: &FeedRef) -> Result<Vec<SimChange>, ChangeError> {
        let key = FeedKey::parse(feed)?;
        Ok(lock(&self.shared.changes).changes(&key))
    }

    /// Changes whose webhooks are held, oldest first.
    pub fn held_changes(&self) -> Vec<SimChange> {
        lock(&self.shared.changes)
            .held()
            .into_iter()
            .map(|(_, change)| change)
            .collect()
    }
}
