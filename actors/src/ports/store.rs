//! The store ports: what the lifecycle, the notification actor and the alerting
//! actor read and write, and the one error a store answers with. Every state write
//! goes through here, so the multi-instance work can attach a fencing token to
//! each.

use crate::alerting::Unhealthy;
use crate::domain::{
    Provider, ProviderHealth, ProviderId, ProviderKind, RenewalResult, Subscription,
};
use crate::notification::Silence;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

/// A store failure, as the core sees it: what kind of failure, and a message for
/// the log (never shown to an API caller as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed; a retry later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time (no connection free, a slow statement).
    #[error("store timed out: {0}")]
    Timeout(String),
    /// The store refused what was asked (a constraint, a value it cannot hold):
    /// retrying the same write fails the same way.
    #[error("store refused: {0}")]
    Rejected(String),
    /// The row changed under the writer (or, with leases, the writer no longer
    /// owns it): the write changed nothing.
    #[error("store conflict: {0}")]
    Conflict(String),
    /// A stored row could not be read back as the type it should be.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// The fencing token of this instance's claim on a provider. Every state write a
/// supervisor makes carries the token it was handed with the provider, and the
/// store applies the write only while that claim is still the provider's current
/// one: a write under a superseded claim (another instance took the provider over)
/// changes nothing and answers [`StoreError::Conflict`]. Tokens only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fence(pub i64);

/// A provider this instance owns, and the fence its writes carry.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedProvider {
    /// The provider.
    pub provider: Provider,
    /// The claim under which this instance writes its state.
    pub fence: Fence,
}

/// Everything one attempt changes, written in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The result as published.
    pub result: RenewalResult,
    /// The live subscription after the attempt (`None`: it is gone).
    pub subscription: Option<Subscription>,
    /// The subscription this attempt replaced (its id stays routable).
    pub replaced: Option<Subscription>,
    /// The health row after the attempt.
    pub health: ProviderHealth,
}

/// What the core remembers about a provider when its supervisor starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderState {
    /// The live subscription, if any.
    pub subscription: Option<Subscription>,
    /// The health row, if any.
    pub health: Option<ProviderHealth>,
    /// True if a subscription ever existed (so a missing one is recreated).
    pub had_subscription: bool,
}

/// An owned provider with everything its supervisor starts from: what the
/// fleet's paged load at start-up hands each supervisor, so that no supervisor
/// queries the store for itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedProvider {
    /// The provider and this instance's claim on it.
    pub owned: OwnedProvider,
    /// Its remembered state.
    pub state: ProviderState,
}

/// A position in the providers' change feed: every change to what the fleet
/// acts on (enabled, deleted, watched resource, credentials, owner and claim)
/// gets a revision, and revisions only grow. What a revision is (a counter, a
/// transaction id) is the store's business; the fleet only keeps the mark the
/// store last gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(pub i64);

/// One provider that changed since a mark, as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderChange {
    /// The provider and its current claim.
    pub owned: OwnedProvider,
    /// Disabled or deleted: its subscription is to be deleted at the provider.
    pub retired: bool,
    /// This instance owns it (always, without leases).
    pub owned_here: bool,
    /// For a retired provider this instance owns: its live subscription, if it
    /// still has one (an orphan to clean up).
    pub subscription: Option<Subscription>,
}

/// What changed between two marks of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeFeed {
    /// Every provider changed since the mark asked for, in no particular order
    /// (some perhaps already listed last time).
    pub changes: Vec<ProviderChange>,
    /// The mark to ask from next time: nothing before it can appear any more.
    pub upto: Revision,
}

/// Persistence the lifecycle needs. Every write goes through here so that a later
/// multi-instance version can attach a fencing token to each.
#[async_trait]
pub trait LifecycleStore: Send + Sync + 'static {
    /// The enabled providers this instance owns, each with the fence its writes
    /// carry. This is the one seam that decides ownership.
    async fn owned_providers(&self) -> Result<Vec<OwnedProvider>, StoreError>;

    /// Providers that are disabled or deleted but still have a live subscription at
    /// the provider: the fleet deletes those (no orphans).
    /// Each comes with the fence its clean-up writes carry.
    async fn retired_with_subscription(
        &self,
    ) -> Result<Vec<(OwnedProvider, Subscription)>, StoreError>;

    /// The change feed's current mark: a later [`Self::changed_since`] from it
    /// returns every change that was not yet visible when it was taken. Take
    /// it before a full read of the providers, so that nothing falls between.
    async fn change_mark(&self) -> Result<Revision, StoreError>;

    /// Every provider changed from `since` on (as it is now), and the mark to
    /// ask from next time. Reads only the changed rows, by index. A change may
    /// be listed again by the next call (until the mark passes it): applying
    /// one twice must be harmless.
    async fn changed_since(&self, since: Revision) -> Result<ChangeFeed, StoreError>;

    /// One page of the enabled providers this instance owns, in id order: those
    /// after `after` (from the first when `None`), at most `limit`, each with its
    /// remembered state. A page shorter than `limit` is the last. A handful of
    /// queries per page, whatever its size.
    async fn load_owned(
        &self,
        after: Option<ProviderId>,
        limit: u32,
    ) -> Result<Vec<LoadedProvider>, StoreError>;

    /// The remembered state of one provider.
    async fn provider_state(&self, provider: ProviderId) -> Result<ProviderState, StoreError>;

    /// Records one attempt: health, subscription changes and a `renewal_attempts`
    /// row, all or nothing, and only under `fence` (else `Conflict`).
    async fn record_attempt(&self, fence: Fence, record: &AttemptRecord) -> Result<(), StoreError>;

    /// Marks a subscription deleted at the provider (a retired provider's live one,
    /// or one rotated out), under `fence`. Notifications for it are ignored from
    /// then on.
    async fn subscription_deleted(
        &self,
        fence: Fence,
        provider: ProviderId,
        external_id: &str,
    ) -> Result<(), StoreError>;
}

/// What the notification actor needs from the store.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Records when webhooks last arrived, for every provider in `seen` in one write
    /// (a provider's latest time wins; times never go backwards), and ends their
    /// silence. Returns the silences it ended, `ended_at` set.
    async fn record_webhooks(
        &self,
        seen: &[(ProviderId, DateTime<Utc>)],
    ) -> Result<Vec<Silence>, StoreError>;

    /// In one write, marks silent every enabled provider whose subscription is alive
    /// and whose last webhook — or the subscription's creation, whichever is later
    /// — is older than `now` minus its kind's threshold. Kinds not in `thresholds`
    /// are never silent. Returns only the providers it marked now (not those already
    /// silent), so each silence is reported once however many instances sweep.
    async fn mark_silent(
        &self,
        now: DateTime<Utc>,
        thresholds: &[(ProviderKind, TimeDelta)],
    ) -> Result<Vec<Silence>, StoreError>;

    /// Every provider currently silent, with when its silence began.
    async fn silent_providers(&self) -> Result<Vec<(ProviderId, DateTime<Utc>)>, StoreError>;
}

/// What the alerting actor reads from the store.
#[async_trait]
pub trait AlertStore: Send + Sync + 'static {
    /// Every unhealthy enabled provider, or just `provider` if it is one.
    async fn unhealthy(&self, provider: Option<ProviderId>) -> Result<Vec<Unhealthy>, StoreError>;
}

/// A provider's catch-up state (`provider_cursors`): its change cursor, the page
/// a read in progress reached, and its proof of life.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CatchUpState {
    /// The change cursor (Graph delta link, Calendar `nextSyncToken`, Gmail
    /// `historyId`); `None` until first taken.
    pub cursor: Option<String>,
    /// Where a read interrupted mid-way resumes (a page token); `None` when no
    /// read is in progress.
    pub page: Option<String>,
    /// When the cursor was taken or last advanced: changes after it are what a
    /// catch-up reads.
    pub cursor_at: Option<DateTime<Utc>>,
    /// When a catch-up or silence check last read the changes successfully
    /// (proof of life, like a webhook).
    pub checked_at: Option<DateTime<Utc>>,
    /// Changes the last silence check found that no webhook announced (0 while
    /// push works).
    pub push_broken: u32,
    /// When push was last found broken.
    pub push_broken_at: Option<DateTime<Utc>>,
}

/// When a provider last showed it was alive: its last webhook and its last
/// successful catch-up or check.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofOfLife {
    /// The provider.
    pub provider: ProviderId,
    /// Its kind (decides `poll_after_silence`).
    pub kind: ProviderKind,
    /// The last webhook received.
    pub last_webhook: Option<DateTime<Utc>>,
    /// The last successful catch-up or check.
    pub checked_at: Option<DateTime<Utc>>,
    /// When its live subscription was created (nothing could arrive before).
    pub subscribed_at: Option<DateTime<Utc>>,
}

impl ProofOfLife {
    /// The latest of the webhook, the check and the subscription's creation.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        [self.last_webhook, self.checked_at, self.subscribed_at]
            .into_iter()
            .flatten()
            .max()
    }
}

/// What one silence sweep found ([`CatchUpStore::silence_sweep`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SilenceSweep {
    /// The providers due a silence check.
    pub due: Vec<ProofOfLife>,
    /// Per kind, the oldest latest sign of life (kinds with no provider are
    /// absent).
    pub oldest: Vec<(ProviderKind, DateTime<Utc>)>,
}

/// What the catch-up runner reads and writes.
#[async_trait]
pub trait CatchUpStore: Send + Sync + 'static {
    /// The provider's catch-up state (default when none is stored) and its
    /// last webhook time.
    async fn catch_up_state(
        &self,
        provider: ProviderId,
    ) -> Result<(CatchUpState, Option<DateTime<Utc>>), StoreError>;

    /// Replaces the provider's catch-up state.
    async fn save_catch_up_state(
        &self,
        provider: ProviderId,
        state: &CatchUpState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The silence sweep, among the enabled providers with a live subscription
    /// that are not waiting for re-authorization, of `providers` (the ones
    /// supervised here): the proof of life of each whose kind is in
    /// `poll_after` and whose latest sign of life is at least that old at `now`,
    /// and per kind the oldest sign of life. Reads what is due, not every
    /// provider.
    async fn silence_sweep(
        &self,
        providers: &[ProviderId],
        now: DateTime<Utc>,
        poll_after: &[(ProviderKind, TimeDelta)],
    ) -> Result<SilenceSweep, StoreError>;
}
