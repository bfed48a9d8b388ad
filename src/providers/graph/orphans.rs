//! Graph subscriptions that may exist without our knowing their id: their
//! `POST /subscriptions` timed out, lost its connection, was cancelled, or
//! answered something unreadable. Graph may well have created them; each then
//! delivers (and is dropped as unknown) until its own expiry, up to a week for
//! mail — one more with every retry after a lost answer.
//!
//! Graph chooses the id, so we cannot name such a subscription — until it
//! delivers: its notifications carry the clientState we sent, a fresh random
//! secret per create. Creates are listed by clientState before the call and
//! unlisted once the outcome is known; intake hands every unknown subscription
//! id whose clientState matches a listed create to [`OrphanCleanup::claim`],
//! and the adapter deletes it.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use subkeeper_actors::domain::Provider;
use tokio::sync::mpsc;

/// How many found orphans may wait for their DELETE; more are dropped (their
/// next notification finds them again).
const QUEUE: usize = 1024;

/// A found orphan: its owner and its subscription id.
pub type Orphan = (Provider, String);

/// Creates whose outcome is unknown, by the clientState they sent.
#[derive(Debug, Default)]
pub struct UnconfirmedCreates {
    inner: Mutex<HashMap<String, (Provider, DateTime<Utc>)>>,
}

impl UnconfirmedCreates {
    /// Lists a create for `provider` sending `client_state`, asked at `at`;
    /// drops entries older than `lifetime` (those subscriptions have expired).
    pub fn add(
        &self,
        client_state: &str,
        provider: &Provider,
        at: DateTime<Utc>,
        lifetime: TimeDelta,
    ) {
        let mut inner = self.lock();
        inner.retain(|_, (_, asked)| at - *asked < lifetime);
        inner.insert(client_state.to_owned(), (provider.clone(), at));
    }

    /// Unlists a create whose outcome is known.
    pub fn settle(&self, client_state: &str) {
        self.lock().remove(client_state);
    }

    /// The provider of the listed create that sent `client_state`, unlisting it.
    pub fn take(&self, client_state: &str) -> Option<Provider> {
        self.lock()
            .remove(client_state)
            .map(|(provider, _)| provider)
    }

    /// Creates listed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Provider, DateTime<Utc>)>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
    /// carrying `client_state`: if a create whose answer was lost sent it, the
    /// subscription is that create's orphan and is queued for deletion. True
    /// when it was.
    pub fn claim(&self, client_state: &str, subscription_id: &str) -> bool {
        if client_state.is_empty() || self.creates.is_empty() {
            return false;
        }
        let Some(provider) = self.creates.take(client_state) else {
            return false;
        };
        tracing::info!(
            tenant = %provider.tenant, provider = %provider.id, subscription = %subscription_id,
            "orphaned Graph subscription found (its create answer was lost): deleting it"
        );
        if self
            .queue
            .try_send((provider, subscription_id.to_owned()))
            .is_err()
        {
            tracing::warn!(subscription = %subscription_id, "orphan deletion queue full or closed; it expires by itself");
        }
        true
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
    fn only_a_listed_clientstate_is_claimed_and_only_once() {
        let creates = Arc::new(UnconfirmedCreates::default());
        let (tx, mut rx) = queue();
        let cleanup = OrphanCleanup::new(Arc::clone(&creates), tx);
        let p = provider();
        let now = Utc::now();
        creates.add("lost-state", &p, now, TimeDelta::days(7));
        creates.add("answered-state", &p, now, TimeDelta::days(7));
        creates.settle("answered-state");

        assert!(!cleanup.claim("answered-state", "sub-1"));
        assert!(!cleanup.claim("", "sub-1"));
        assert!(!cleanup.claim("forged", "sub-1"));
        assert!(cleanup.claim("lost-state", "sub-2"));
        assert!(!cleanup.claim("lost-state", "sub-2"), "claimed once");
        let (owner, id) = rx.try_recv().unwrap();
        assert_eq!((owner.id, id.as_str()), (p.id, "sub-2"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn old_creates_are_dropped_when_a_new_one_is_listed() {
        let creates = UnconfirmedCreates::default();
        let p = provider();
        let now = Utc::now();
        creates.add("old", &p, now - TimeDelta::days(8), TimeDelta::days(7));
        creates.add("new", &p, now, TimeDelta::days(7));
        assert_eq!(creates.len(), 1);
        assert!(creates.take("old").is_none());
    }
}
