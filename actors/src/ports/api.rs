//! The provider-API port: what the core asks of Microsoft Graph and Google
//! (create, renew, delete a subscription) and the classified error it gets back,
//! plus where providers call us back.

use crate::domain::{AttemptKind, ErrorClass, Provider, ProviderKind, Subscription};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// A classified failure of a provider call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ApiError {
    /// How the lifecycle handles it.
    pub class: ErrorClass,
    /// Actionable, human-readable explanation (no secrets).
    pub message: String,
    /// HTTP status answered by the provider, if it answered.
    pub http_status: Option<u16>,
    /// Provider's Retry-After, if given.
    pub retry_after: Option<TimeDelta>,
}

impl ApiError {
    /// A failure with no HTTP status (timeouts, connection errors, bad config).
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            http_status: None,
            retry_after: None,
        }
    }

    /// Attaches the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// Attaches a Retry-After.
    pub fn with_retry_after(mut self, retry_after: Option<TimeDelta>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

/// What the core asks a provider to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Where change notifications go.
    pub notification_url: String,
    /// Where lifecycle notifications go (Graph); ignored by Google.
    pub lifecycle_url: String,
    /// Fresh random secret the provider will echo back (≥ 32 bytes of entropy).
    pub client_state: String,
    /// Requested expiry: the maximum the resource allows.
    pub expires_at: DateTime<Utc>,
}

/// A subscription as the provider created or renewed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSubscription {
    /// Provider-side id.
    pub external_id: String,
    /// Google's resourceId, if any.
    pub resource_id: Option<String>,
    /// The expiry the provider granted.
    pub expires_at: DateTime<Utc>,
    /// The secret of a subscription created by a renew that rotates (Google
    /// channels get a fresh token each); `None` keeps the one already known.
    pub client_state: Option<String>,
    /// The provider's change cursor when the call was answered (Gmail's
    /// `historyId`: changes after it are pushed); `None` keeps the one already
    /// known for the same subscription.
    pub history_id: Option<String>,
}

/// What kind of change a catch-up found for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The item appeared after the cursor was taken.
    Created,
    /// The item existed and changed (or Graph/Calendar cannot tell it apart
    /// from a creation: created before the cursor).
    Updated,
    /// The item was deleted (Graph `@removed`, Calendar `cancelled`, Gmail
    /// `messagesDeleted`).
    Deleted,
}

impl ChangeKind {
    /// The wire name (Graph's `changeType` values).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

/// One changed item, as a catch-up read it from the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemChange {
    /// Created, updated or deleted.
    pub kind: ChangeKind,
    /// The provider's id of the item (message or event id).
    pub item_id: String,
    /// Its version where the API gives one (Graph `changeKey`, Calendar
    /// `etag`, Gmail's history record id): replays of the same version are
    /// published once.
    pub version: Option<String>,
    /// When the provider says it changed (Graph `lastModifiedDateTime`,
    /// Calendar `updated`); `None` where the API does not say (deletions,
    /// Gmail). Tells a change no webhook announced from one that was.
    pub changed_at: Option<DateTime<Utc>>,
    /// When the item was created, where the API says (Graph
    /// `createdDateTime`, Calendar `created`): an item created after the
    /// cursor is replayed as `created`.
    pub created_at: Option<DateTime<Utc>>,
}

/// Where a read of a provider's changes starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangesFrom<'a> {
    /// No cursor: read the initial round only to reach its end and take the
    /// cursor it ends with (the items are the current state, not changes).
    Start,
    /// The cursor a previous read ended with (Graph delta link, Calendar
    /// `nextSyncToken`, Gmail `historyId`).
    Cursor(&'a str),
    /// The next page of a read in progress (as [`ChangesNext::Page`] said).
    Page(&'a str),
}

/// What follows a page of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesNext {
    /// More pages: read on from this position (stored, so a crash resumes here).
    Page(String),
    /// The read is complete: the new cursor.
    Done(String),
}

/// One page of a provider's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    /// The changes on this page, in the provider's order.
    pub changes: Vec<ItemChange>,
    /// What comes next.
    pub next: ChangesNext,
}

/// Why a read of a provider's changes failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangesError {
    /// The cursor no longer holds (Graph 410 `SyncStateNotFound`, Calendar 410
    /// `fullSyncRequired`, Gmail 404 on `history.list`): what changed since it
    /// cannot be read; the consumer must resynchronise and a fresh cursor is
    /// taken.
    #[error("cursor expired: {reason}")]
    CursorExpired {
        /// Which provider answer said so (`graph_sync_state_not_found`, …).
        reason: String,
    },
    /// Any other failure, classified as for subscription calls.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A provider API (Microsoft Graph, Google): create, renew, delete subscriptions.
#[async_trait]
pub trait SubscriptionApi: Send + Sync + 'static {
    /// The longest lifetime this provider's resource allows; the core requests it.
    fn max_lifetime(&self, provider: &Provider) -> TimeDelta;

    /// Resolves once `provider`'s `attempt` may be made as far as the provider's
    /// rate limits go (its place in the tenant's or account's budget, the end of
    /// a short `Retry-After`). The supervisor awaits it *before* it takes a
    /// fleet-wide permit, so a tenant out of budget never holds permits other
    /// tenants need; the time spent here is not part of the attempt's timeout.
    /// Never fails: the adapter checks again when it sends. Default: at once.
    async fn admit(&self, provider: &Provider, attempt: AttemptKind) {
        let _ = (provider, attempt);
    }

    /// Creates a subscription.
    async fn create(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError>;

    /// Extends `subscription` to `expires_at`. Families that cannot extend (Google
    /// Calendar channels) create the replacement here and return its id; the
    /// supervisor records it first and then stops the old one with
    /// [`SubscriptionApi::delete`], so notifications never have nowhere to go.
    async fn renew(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError>;

    /// Deletes `subscription` at the provider. A subscription that is already gone
    /// counts as deleted.
    async fn delete(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), ApiError>;

    /// Reads one page (at most `page_size` items) of what changed in the
    /// provider's resource since `from`: Graph delta, Calendar `events.list`
    /// with a `syncToken`, Gmail `history.list`. Default: the family cannot
    /// (a permanent failure).
    async fn changes_since(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        let _ = (from, page_size);
        Err(ChangesError::Api(ApiError::new(
            ErrorClass::Permanent,
            format!("{} has no change feed", provider.kind),
        )))
    }
}

/// Where the providers call us back, derived from the public URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackUrls {
    /// Public base URL, without trailing slash.
    pub public_url: String,
}

impl CallbackUrls {
    /// Change-notification URL for a provider kind.
    pub fn notification_url(&self, kind: ProviderKind) -> String {
        match kind {
            ProviderKind::GraphMail | ProviderKind::GraphCalendar => {
                format!("{}/webhooks/microsoft", self.public_url)
            }
            ProviderKind::GoogleCalendar => format!("{}/webhooks/google", self.public_url),
            ProviderKind::Gmail => format!("{}/webhooks/gmail", self.public_url),
        }
    }

    /// Lifecycle-notification URL (Graph only; others get the notification URL).
    pub fn lifecycle_url(&self, kind: ProviderKind) -> String {
        if kind.is_graph() {
            format!("{}/webhooks/microsoft/lifecycle", self.public_url)
        } else {
            self.notification_url(kind)
        }
    }
}
