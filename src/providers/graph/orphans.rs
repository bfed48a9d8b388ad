//! Graph subscriptions whose id we do not know yet, or never will: their
//! `POST /subscriptions` is still waiting for its answer, or that answer was
//! lost (timed out, dropped connection, cancelled, a 504, an unreadable 2xx).
//! Graph chooses the id, so such a subscription cannot be named — until it
//! delivers: its notifications carry the clientState we sent, a fresh random
//! secret per create that only Graph and we know.
//!
//! Creates are listed by clientState before the call. While one is in flight, a
//! notification carrying its clientState belongs to the subscription being
//! created (Graph can deliver before it answers): intake routes it to the
//! provider. Once Graph has answered, the id it returned is the only one that
//! routes from here (for [`ROUTE_AFTER_CREATE`], while the supervisor records
//! it): a notification with the right clientState on any other id is not ours.
//! If Graph refused, the entry goes; if the answer was lost, the entry stays as
//! *lost*, and the first notification carrying its clientState has the orphan
//! deleted — it would otherwise deliver until its own expiry, up to a week for
//! mail, one more with every retry.
//!
//! No operation scans the list (a burst of 100,000 creates must not rescan it on
//! each, nor once a minute): a provider's own entries are indexed, and entries
//! are queued in the order their time runs out, so listing a create drops just
//! the expired ones at the front — O(log n) per create.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkeeper_actors::domain::{Provider, ProviderId};
use subkeeper_actors::ports::clock::{SharedClock, SystemClock};
use tokio::sync::mpsc;

/// How many found orphans may wait for their DELETE; when full, the orphan is
/// listed again and its next notification finds it.
const QUEUE: usize = 1024;

/// Lost creates kept per provider: the oldest go first (a provider whose
/// creates keep timing out must not grow the list without bound).
const LOST_PER_PROVIDER: usize = 8;

/// A found orphan: its owner, the clientState that gave it away, and its
/// subscription id.
#[derive(Debug, Clone)]
pub struct Orphan {
    /// The provider whose create left it behind.
    pub provider: Provider,
    /// The clientState it carries (to list it again if its deletion fails).
    pub client_state: String,
    /// Graph's id of the orphaned subscription.
    pub subscription_id: String,
}

/// A listed create.
#[derive(Debug, Clone)]
struct Listed {
    /// The provider it is for.
    provider: Provider,
    /// When it was asked (domain time).
    asked: DateTime<Utc>,
    /// How long a subscription of its kind lives at most: older entries are gone.
    lifetime: TimeDelta,
    /// Where it stands.
    stage: Stage,
}

/// Where a listed create stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for Graph's answer: any subscription id may be the one.
    InFlight,
    /// Graph answered with this subscription id at this instant; the supervisor
    /// is about to record it, so notifications on that id (and no other) are
    /// still routed from here for a while.
    Created {
        /// The id Graph returned.
        subscription_id: String,
        /// When the answer came.
        at: Instant,
    },
    /// The answer was lost: whatever it created is an orphan.
    Lost,
}

/// How long a created subscription stays routable from here: far longer than
/// recording an attempt takes (as for Google's pending channels).
pub const ROUTE_AFTER_CREATE: Duration = Duration::from_secs(600);

/// The listed creates with their per-provider index and their expiry queues.
#[derive(Debug, Default)]
struct Lists {
    /// Every listed create, by the clientState it sent.
    by_state: HashMap<String, Listed>,
    /// Each provider's listed clientStates, oldest first (at most
    /// [`LOST_PER_PROVIDER`]).
    by_provider: HashMap<ProviderId, Vec<String>>,
    /// Every listed create by when its subscription's lifetime ends (domain
    /// time): the earliest is swept first.
    by_lifetime: BTreeSet<(DateTime<Utc>, String)>,
    /// Answered creates in the order they were answered (their routing ends
    /// `created_ttl` later). An entry no longer answered at that instant (listed
    /// again, removed) is skipped when it reaches the front.
    answered: VecDeque<(Instant, String)>,
}

impl Lists {
    fn insert(&mut self, client_state: String, listed: Listed) {
        let own = self.by_provider.entry(listed.provider.id).or_default();
        own.retain(|s| s != &client_state);
        let dropped: Vec<String> = if own.len() >= LOST_PER_PROVIDER {
            own.drain(..=own.len() - LOST_PER_PROVIDER).collect()
        } else {
            Vec::new()
        };
        own.push(client_state.clone());
        for old in dropped {
            self.unlist(&old);
        }
        self.by_lifetime
            .insert((listed.asked + listed.lifetime, client_state.clone()));
        if let Some(previous) = self.by_state.insert(client_state.clone(), listed) {
            self.by_lifetime
                .remove(&(previous.asked + previous.lifetime, client_state));
        }
    }

    /// Drops an entry from the map and its lifetime queue (not from its
    /// provider's list).
    fn unlist(&mut self, client_state: &str) -> Option<Listed> {
        let listed = self.by_state.remove(client_state)?;
        self.by_lifetime
            .remove(&(listed.asked + listed.lifetime, client_state.to_owned()));
        Some(listed)
    }

    fn remove(&mut self, client_state: &str) -> Option<Listed> {
        let listed = self.unlist(client_state)?;
        if let Some(own) = self.by_provider.get_mut(&listed.provider.id) {
            own.retain(|s| s != client_state);
            if own.is_empty() {
                self.by_provider.remove(&listed.provider.id);
            }
        }
        Some(listed)
    }

    /// Drops the entries whose time is up at `now` (domain) — only those, found
    /// at the fronts of the two queues.
    fn sweep(&mut self, now: DateTime<Utc>, created_ttl: Duration) {
        while let Some((end, _)) = self.by_lifetime.first()
            && *end <= now
        {
            if let Some((_, state)) = self.by_lifetime.pop_first() {
                self.remove(&state);
            }
        }
        while let Some((at, _)) = self.answered.front()
            && at.elapsed() >= created_ttl
        {
            let Some((at, state)) = self.answered.pop_front() else {
                break;
            };
            let still = matches!(
                self.by_state.get(&state).map(|l| &l.stage),
                Some(Stage::Created { at: when, .. }) if *when == at
            );
            if still {
                self.remove(&state);
            }
        }
    }
}

/// Creates whose subscription id is unknown, by the clientState they sent.
pub struct UnconfirmedCreates {
    inner: Mutex<Lists>,
    /// Domain time, the clock creates are stamped with (the demo's runs fast).
    clock: SharedClock,
    /// How long a created subscription stays routable from here.
    created_ttl: Duration,
}

impl Default for UnconfirmedCreates {
    fn default() -> Self {
        Self::with_created_ttl(ROUTE_AFTER_CREATE)
    }
}

impl std::fmt::Debug for UnconfirmedCreates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnconfirmedCreates")
            .field("listed", &self.len())
            .finish_non_exhaustive()
    }
}

impl UnconfirmedCreates {
    /// A list on domain time `clock` (the same clock creates are stamped with).
    pub fn on_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// A list whose created subscriptions stay routable for `created_ttl`.
    pub fn with_created_ttl(created_ttl: Duration) -> Self {
        Self {
            clock: Arc::new(SystemClock),
            inner: Mutex::new(Lists::default()),
            created_ttl,
        }
    }

    /// Whether an entry still routes or awaits cleanup at `now`.
    fn current(&self, listed: &Listed, now: DateTime<Utc>) -> bool {
        now - listed.asked < listed.lifetime
            && match &listed.stage {
                Stage::Created { at, .. } => at.elapsed() < self.created_ttl,
                Stage::InFlight | Stage::Lost => true,
            }
    }

    /// Lists a create for `provider` sending `client_state`, asked at `at`, as
    /// in flight; whatever it creates lives at most `lifetime`.
    pub fn add(
        &self,
        client_state: &str,
        provider: &Provider,
        at: DateTime<Utc>,
        lifetime: TimeDelta,
    ) {
        let mut inner = self.lock();
        inner.sweep(at, self.created_ttl);
        inner.insert(
            client_state.to_owned(),
            Listed {
                provider: provider.clone(),
                asked: at,
                lifetime,
                stage: Stage::InFlight,
            },
        );
    }

    /// Lists an orphan again as lost (its deletion could not be done now).
    pub fn relist(&self, orphan: &Orphan, at: DateTime<Utc>, lifetime: TimeDelta) {
        self.lock().insert(
            orphan.client_state.clone(),
            Listed {
                provider: orphan.provider.clone(),
                asked: at,
                lifetime,
                stage: Stage::Lost,
            },
        );
    }

    /// Unlists a create Graph refused.
    pub fn settle(&self, client_state: &str) {
        self.lock().remove(client_state);
    }

    /// Marks a create Graph answered with `subscription_id`: that id, and only
    /// that id, routes from here until it is recorded.
    pub fn created(&self, client_state: &str, subscription_id: &str) {
        let mut inner = self.lock();
        if let Some(listed) = inner.by_state.get_mut(client_state) {
            let at = Instant::now();
            listed.stage = Stage::Created {
                subscription_id: subscription_id.to_owned(),
                at,
            };
            inner.answered.push_back((at, client_state.to_owned()));
        }
    }

    /// Marks a create whose answer was lost.
    pub fn lose(&self, client_state: &str) {
        if let Some(listed) = self.lock().by_state.get_mut(client_state) {
            listed.stage = Stage::Lost;
        }
    }

    /// Creates listed.
    pub fn len(&self) -> usize {
        self.lock().by_state.len()
    }

    /// True when none is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Marks its create lost when dropped unless settled: a call that returns an
/// uncertain error, or that its caller's timeout drops, leaves an orphan behind.
pub(crate) struct SettleOrLose<'a> {
    creates: &'a UnconfirmedCreates,
    client_state: &'a str,
    settled: bool,
}

impl<'a> SettleOrLose<'a> {
    /// Guards the listed create that sent `client_state`.
    pub(crate) fn new(creates: &'a UnconfirmedCreates, client_state: &'a str) -> Self {
        Self {
            creates,
            client_state,
            settled: false,
        }
    }

    /// Graph refused the create outright: nothing exists.
    pub(crate) fn refused(&mut self) {
        self.creates.settle(self.client_state);
        self.settled = true;
    }

    /// Graph answered with `subscription_id`: route it until it is recorded.
    pub(crate) fn created(&mut self, subscription_id: &str) {
        self.creates.created(self.client_state, subscription_id);
        self.settled = true;
    }
}

impl Drop for SettleOrLose<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.creates.lose(self.client_state);
        }
    }
}

/// What a notification on an unknown subscription id turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nothing of ours.
    Unknown,
    /// The subscription being created right now for this provider: route it.
    Creating(Provider),
    /// A lost create's orphan: queued for deletion, not to be published.
    Orphan,
}

/// What intake holds to report an orphan: the listed creates and the queue to
/// the task that deletes them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrphanCleanup {
    creates: std::sync::Arc<UnconfirmedCreates>,
    queue: mpsc::Sender<Orphan>,
}

impl OrphanCleanup {
    /// Cleanup over `creates`, feeding `queue`.
    pub fn new(creates: std::sync::Arc<UnconfirmedCreates>, queue: mpsc::Sender<Orphan>) -> Self {
        Self { creates, queue }
    }

    /// A notification arrived on `subscription_id`, which no provider owns,
    /// carrying `client_state`: is it a subscription being created, or the
    /// orphan of a create whose answer was lost (then queued for deletion)?
    pub fn claim(&self, client_state: &str, subscription_id: &str) -> Claim {
        if client_state.is_empty() || self.creates.is_empty() {
            return Claim::Unknown;
        }
        let now = self.creates.clock.now();
        let (provider, lifetime) = {
            let mut inner = self.creates.lock();
            let Some(listed) = inner.by_state.get(client_state) else {
                return Claim::Unknown;
            };
            if !self.creates.current(listed, now) {
                inner.remove(client_state);
                return Claim::Unknown;
            }
            match &listed.stage {
                Stage::InFlight => return Claim::Creating(listed.provider.clone()),
                Stage::Created {
                    subscription_id: known,
                    ..
                } => {
                    return if known == subscription_id {
                        Claim::Creating(listed.provider.clone())
                    } else {
                        Claim::Unknown
                    };
                }
                Stage::Lost => {}
            }
            let Some(listed) = inner.remove(client_state) else {
                return Claim::Unknown;
            };
            (listed.provider, listed.lifetime)
        };
        tracing::info!(
            tenant = %provider.tenant, provider = %provider.id, subscription = %subscription_id,
            "orphaned Graph subscription found (its create answer was lost): deleting it"
        );
        let orphan = Orphan {
            provider,
            client_state: client_state.to_owned(),
            subscription_id: subscription_id.to_owned(),
        };
        if let Err(e) = self.queue.try_send(orphan) {
            tracing::warn!(subscription = %subscription_id, "orphan deletion queue full or closed; its next notification tries again");
            self.creates.relist(&e.into_inner(), now, lifetime);
        }
        Claim::Orphan
    }
}

/// Creates the queue between intake and the deleting task.
pub fn queue() -> (mpsc::Sender<Orphan>, mpsc::Receiver<Orphan>) {
    mpsc::channel(QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId};

    fn provider() -> Provider {
        Provider {
            id: ProviderId(uuid::Uuid::new_v4()),
            tenant: TenantId::parse("acme").unwrap(),
            kind: ProviderKind::GraphMail,
            display_name: "m".into(),
            resource: "users/x/messages".into(),
            credentials_id: None,
            enabled: true,
            credentials_version: 0,
        }
    }

    #[test]
    fn in_flight_creates_route_and_lost_ones_are_claimed_once() {
        let creates = Arc::new(UnconfirmedCreates::default());
        let (tx, mut rx) = queue();
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx);
        let p = provider();
        let now = Utc::now();
        let lifetime = TimeDelta::days(7);
        creates.add("flying", &p, now, lifetime);
        creates.add("lost", &p, now, lifetime);
        creates.add("answered", &p, now, lifetime);
        SettleOrLose::new(&creates, "answered").refused();
        drop(SettleOrLose::new(&creates, "lost"));

        assert_eq!(cleanup.claim("answered", "sub-1"), Claim::Unknown);
        assert_eq!(cleanup.claim("", "sub-1"), Claim::Unknown);
        assert_eq!(cleanup.claim("forged", "sub-1"), Claim::Unknown);
        assert_eq!(cleanup.claim("flying", "sub-0"), Claim::Creating(p.clone()));
        assert_eq!(
            cleanup.claim("flying", "sub-0"),
            Claim::Creating(p.clone()),
            "not consumed"
        );
        assert!(rx.try_recv().is_err(), "nothing in flight is deleted");
        assert_eq!(cleanup.claim("lost", "sub-2"), Claim::Orphan);
        assert_eq!(
            cleanup.claim("lost", "sub-2"),
            Claim::Unknown,
            "claimed once"
        );
        let orphan = rx.try_recv().unwrap();
        assert_eq!(
            (orphan.provider.id, orphan.subscription_id.as_str()),
            (p.id, "sub-2")
        );
        assert!(rx.try_recv().is_err());
        // A failed deletion lists it again: the next notification retries.
        creates.relist(&orphan, now, lifetime);
        assert_eq!(cleanup.claim("lost", "sub-2"), Claim::Orphan);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn an_answered_create_routes_its_own_id_until_its_time_is_up() {
        let (tx, _rx) = queue();
        let p = provider();
        let lifetime = TimeDelta::days(7);
        let creates = Arc::new(UnconfirmedCreates::default());
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx.clone());
        creates.add("answered", &p, Utc::now(), lifetime);
        assert_eq!(
            cleanup.claim("answered", "sub-early"),
            Claim::Creating(p.clone()),
            "before the answer any id may be the one Graph is creating"
        );
        SettleOrLose::new(&creates, "answered").created("sub-1");
        assert_eq!(
            cleanup.claim("answered", "sub-1"),
            Claim::Creating(p.clone())
        );
        assert_eq!(
            cleanup.claim("answered", "sub-forged"),
            Claim::Unknown,
            "once Graph named the id, a valid clientState on another id is forged"
        );
        assert_eq!(
            cleanup.claim("answered", "sub-1"),
            Claim::Creating(p.clone()),
            "a forged one does not unlist the real one"
        );

        let creates = Arc::new(UnconfirmedCreates::with_created_ttl(Duration::ZERO));
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx);
        creates.add("answered", &p, Utc::now(), lifetime);
        SettleOrLose::new(&creates, "answered").created("sub-1");
        assert_eq!(cleanup.claim("answered", "sub-1"), Claim::Unknown);
        assert!(creates.is_empty(), "an expired entry is dropped when met");
    }

    #[test]
    fn a_burst_of_creates_costs_constant_time_each() {
        // 100,000 creates across 100,000 providers, then answered: with a rescan
        // of the whole list per create this is ~5·10⁹ steps (minutes); each
        // O(1) it takes well under a second even in a debug build.
        let creates = UnconfirmedCreates::default();
        let now = Utc::now();
        let week = TimeDelta::days(7);
        let providers: Vec<Provider> = (0..100_000).map(|_| provider()).collect();
        let begun = Instant::now();
        for (i, p) in providers.iter().enumerate() {
            let state = format!("s{i}");
            creates.add(&state, p, now, week);
            SettleOrLose::new(&creates, &state).created(&format!("sub-{i}"));
        }
        let took = begun.elapsed();
        assert_eq!(creates.len(), 100_000);
        assert!(
            took < Duration::from_secs(10),
            "100,000 creates took {took:?}: listing a create is not O(1)"
        );
    }

    #[test]
    fn a_provider_keeps_its_newest_creates_only() {
        let creates = UnconfirmedCreates::default();
        let p = provider();
        let other = provider();
        let now = Utc::now();
        let week = TimeDelta::days(7);
        creates.add("other", &other, now - TimeDelta::hours(1), week);
        for i in 0..20 {
            creates.add(&format!("s{i}"), &p, now + TimeDelta::seconds(i), week);
        }
        assert_eq!(creates.len(), LOST_PER_PROVIDER + 1);
        assert!(creates.lock().by_state.contains_key("s19"));
        assert!(!creates.lock().by_state.contains_key("s0"));
        assert!(creates.lock().by_state.contains_key("other"));
    }

    #[test]
    fn old_creates_never_route_and_are_swept() {
        let (tx, _rx) = queue();
        let creates = Arc::new(UnconfirmedCreates::default());
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx);
        let p = provider();
        let now = Utc::now();
        let week = TimeDelta::days(7);
        creates.add("old", &p, now - TimeDelta::days(8), week);
        creates.add("older", &p, now - TimeDelta::days(9), week);
        assert_eq!(cleanup.claim("old", "sub-1"), Claim::Unknown);
        assert_eq!(creates.len(), 1, "an expired entry is dropped when met");
        // Listing the next create drops the rest.
        creates.add("new", &p, now, week);
        assert_eq!(creates.len(), 1);
        assert!(creates.lock().by_state.contains_key("new"));
    }

    #[test]
    fn answered_creates_leave_once_their_routing_ends_and_lost_ones_stay() {
        let creates = UnconfirmedCreates::with_created_ttl(Duration::ZERO);
        let now = Utc::now();
        let week = TimeDelta::days(7);
        for i in 0..1000 {
            let p = provider();
            let state = format!("s{i}");
            creates.add(&state, &p, now, week);
            if i % 10 == 0 {
                drop(SettleOrLose::new(&creates, &state));
            } else {
                SettleOrLose::new(&creates, &state).created(&format!("sub-{i}"));
            }
        }
        // The next create sweeps the answered ones (their routing time is zero);
        // the lost ones wait for their notification or their lifetime.
        creates.add("next", &provider(), now, week);
        assert_eq!(creates.len(), 100 + 1);
        let inner = creates.lock();
        assert_eq!(inner.by_lifetime.len(), inner.by_state.len());
        assert!(inner.answered.is_empty());
    }
}
