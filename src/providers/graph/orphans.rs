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
//! provider — also for [`ROUTE_AFTER_CREATE`] after the answer, while the
//! supervisor records it. If Graph refused, the entry goes; if the answer was
//! lost, the entry stays as *lost*, and the first notification carrying its clientState
//! has the orphan deleted — it would otherwise deliver until its own expiry, up
//! to a week for mail, one more with every retry.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkeeper_actors::domain::Provider;
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

/// A listed create: its provider, when it was asked, where it stands.
type Listed = (Provider, DateTime<Utc>, Stage);

/// Where a listed create stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for Graph's answer.
    InFlight,
    /// Answered at this instant; the supervisor is about to record it, so its
    /// notifications are still routed from here for a while.
    Created(Instant),
    /// The answer was lost: whatever it created is an orphan.
    Lost,
}

/// How long a created subscription stays routable from here: far longer than
/// recording an attempt takes (as for Google's pending channels).
pub const ROUTE_AFTER_CREATE: Duration = Duration::from_secs(600);

/// Creates whose subscription id is unknown, by the clientState they sent.
#[derive(Debug)]
pub struct UnconfirmedCreates {
    inner: Mutex<HashMap<String, Listed>>,
    /// How long a created subscription stays routable from here.
    created_ttl: Duration,
}

impl Default for UnconfirmedCreates {
    fn default() -> Self {
        Self::with_created_ttl(ROUTE_AFTER_CREATE)
    }
}

impl UnconfirmedCreates {
    /// A list whose created subscriptions stay routable for `created_ttl`.
    pub fn with_created_ttl(created_ttl: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            created_ttl,
        }
    }

    /// Whether an entry in `stage` still routes or awaits cleanup.
    fn current(&self, stage: Stage) -> bool {
        match stage {
            Stage::Created(at) => at.elapsed() < self.created_ttl,
            Stage::InFlight | Stage::Lost => true,
        }
    }

    /// Lists a create for `provider` sending `client_state`, asked at `at`, as
    /// in flight; drops entries older than `lifetime` (those have expired).
    pub fn add(
        &self,
        client_state: &str,
        provider: &Provider,
        at: DateTime<Utc>,
        lifetime: TimeDelta,
    ) {
        let mut inner = self.lock();
        inner.retain(|_, (_, asked, stage)| at - *asked < lifetime && self.current(*stage));
        // Bound what one provider can hold: keep its newest entries.
        let mut own: Vec<(String, DateTime<Utc>)> = inner
            .iter()
            .filter(|(_, (p, _, _))| p.id == provider.id)
            .map(|(state, (_, asked, _))| (state.clone(), *asked))
            .collect();
        if own.len() >= LOST_PER_PROVIDER {
            own.sort_by_key(|(_, asked)| *asked);
            for (state, _) in own.iter().take(own.len() + 1 - LOST_PER_PROVIDER) {
                inner.remove(state);
            }
        }
        inner.insert(
            client_state.to_owned(),
            (provider.clone(), at, Stage::InFlight),
        );
    }

    /// Lists an orphan again as lost (its deletion could not be done now).
    pub fn relist(&self, orphan: &Orphan, at: DateTime<Utc>) {
        self.lock().insert(
            orphan.client_state.clone(),
            (orphan.provider.clone(), at, Stage::Lost),
        );
    }

    /// Unlists a create Graph refused.
    pub fn settle(&self, client_state: &str) {
        self.lock().remove(client_state);
    }

    /// Marks a create Graph answered: routable until it is recorded.
    pub fn created(&self, client_state: &str) {
        if let Some((_, _, stage)) = self.lock().get_mut(client_state) {
            *stage = Stage::Created(Instant::now());
        }
    }

    /// Marks a create whose answer was lost.
    pub fn lose(&self, client_state: &str) {
        if let Some((_, _, stage)) = self.lock().get_mut(client_state) {
            *stage = Stage::Lost;
        }
    }

    /// Creates listed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listed>> {
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

    /// Graph answered with the subscription: route it until it is recorded.
    pub(crate) fn created(&mut self) {
        self.creates.created(self.client_state);
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
        let provider = {
            let mut inner = self.creates.lock();
            match inner.get(client_state) {
                None => return Claim::Unknown,
                Some((provider, _, stage)) if *stage != Stage::Lost => {
                    if self.creates.current(*stage) {
                        return Claim::Creating(provider.clone());
                    }
                    inner.remove(client_state);
                    return Claim::Unknown;
                }
                Some(_) => {}
            }
            let Some((provider, _, _)) = inner.remove(client_state) else {
                return Claim::Unknown;
            };
            provider
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
            self.creates.relist(&e.into_inner(), Utc::now());
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
        creates.relist(&orphan, now);
        assert_eq!(cleanup.claim("lost", "sub-2"), Claim::Orphan);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn an_answered_create_routes_until_its_time_is_up() {
        let (tx, _rx) = queue();
        let p = provider();
        let lifetime = TimeDelta::days(7);
        let creates = Arc::new(UnconfirmedCreates::default());
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx.clone());
        creates.add("answered", &p, Utc::now(), lifetime);
        SettleOrLose::new(&creates, "answered").created();
        assert_eq!(
            cleanup.claim("answered", "sub-1"),
            Claim::Creating(p.clone())
        );

        let creates = Arc::new(UnconfirmedCreates::with_created_ttl(Duration::ZERO));
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx);
        creates.add("answered", &p, Utc::now(), lifetime);
        SettleOrLose::new(&creates, "answered").created();
        assert_eq!(cleanup.claim("answered", "sub-1"), Claim::Unknown);
        assert!(creates.is_empty(), "an expired entry is dropped when met");
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
        assert!(creates.lock().contains_key("s19"));
        assert!(!creates.lock().contains_key("s0"));
        assert!(creates.lock().contains_key("other"));
    }

    #[test]
    fn old_creates_are_dropped_when_a_new_one_is_listed() {
        let creates = UnconfirmedCreates::default();
        let p = provider();
        let now = Utc::now();
        creates.add("old", &p, now - TimeDelta::days(8), TimeDelta::days(7));
        creates.add("new", &p, now, TimeDelta::days(7));
        assert_eq!(creates.len(), 1);
    }
}
