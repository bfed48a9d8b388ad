//! The status page's counts by status ("3 error, 1 needs_reauth, …"), kept in
//! the process for a few seconds. Counting every provider of every tenant is
//! the one read of the page whose cost grows with the whole table (an
//! index-only scan of all 100,000 rows at 100,000 providers): without this,
//! every page view paid it. With it, one view per scope and time to live
//! (`status_page_counts_seconds`) pays it and the others read memory; the page
//! says how old its counts are.
//! An operator's action on the page (Retry renewal, Delete) drops what is kept,
//! so the page they land on counts afresh.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use subkeeper_actors::domain::{ProviderStatus, TenantId};
use subkeeper_actors::ports::{StatusPageStore, StoreError};

/// Scopes kept at most (every tenant, and one per tenant filtered on); past
/// it everything is dropped and counted again: memory stays bounded whatever
/// tenants are asked for.
const MAX_SCOPES: usize = 1024;

/// The counts of one scope, as counted at `at`.
#[derive(Debug, Clone)]
pub struct Counts {
    /// Providers by status (statuses without any are absent).
    pub by_status: Vec<(ProviderStatus, i64)>,
    /// When they were counted (on the service's clock, for the page's note).
    pub at: DateTime<Utc>,
}

impl Counts {
    /// The number of providers in `status`.
    pub fn of(&self, status: ProviderStatus) -> i64 {
        self.by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// Counts by scope (`None`: every tenant), each with the instant it was
/// counted (monotonic: what the time to live is measured on).
type Kept = HashMap<Option<TenantId>, (Instant, Arc<Counts>)>;

/// The counts kept, by scope.
pub struct BoardCounts {
    /// How long counts are served from memory; zero: never.
    ttl: Duration,
    /// What is kept.
    kept: Mutex<Kept>,
}

impl BoardCounts {
    /// Counts kept for `ttl` (zero: counted on every view).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            kept: Mutex::default(),
        }
    }

    /// How long counts are served from memory.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The counts of `tenant` (or of every tenant), from memory while younger
    /// than the time to live, else counted now through `store`. Two views that
    /// miss at once both count: that costs a query, never a wrong answer.
    pub async fn get(
        &self,
        store: &dyn StatusPageStore,
        tenant: Option<&TenantId>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Counts>, StoreError> {
        let key = tenant.cloned();
        if let Some((counted, counts)) = self.lock().get(&key)
            && counted.elapsed() < self.ttl
        {
            return Ok(Arc::clone(counts));
        }
        let counts = Arc::new(Counts {
            by_status: store.board_counts(tenant).await?,
            at: now,
        });
        let mut kept = self.lock();
        if kept.len() >= MAX_SCOPES {
            kept.clear();
        }
        kept.insert(key, (Instant::now(), Arc::clone(&counts)));
        Ok(counts)
    }

    /// Forgets every count: the next view counts afresh.
    pub fn forget(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding it leaves nothing half-written worth refusing.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};
    use subkeeper_actors::ports::{BoardCursor, BoardFilter, BoardRow, SessionGrant};

    /// Counts how often the counts are read from the store.
    #[derive(Default)]
    struct Counting(AtomicU32);

    #[async_trait]
    impl StatusPageStore for Counting {
        async fn board(
            &self,
            _: &BoardFilter,
            _: Option<BoardCursor>,
            _: u32,
        ) -> Result<(Vec<BoardRow>, bool), StoreError> {
            Ok((Vec::new(), false))
        }
        async fn board_counts(
            &self,
            tenant: Option<&TenantId>,
        ) -> Result<Vec<(ProviderStatus, i64)>, StoreError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(vec![(
                ProviderStatus::Connected,
                i64::from(n) + i64::from(tenant.is_some()) * 100,
            )])
        }
        async fn board_tenants(&self, _: u32) -> Result<Vec<TenantId>, StoreError> {
            Ok(Vec::new())
        }
        async fn create_session(
            &self,
            _: &str,
            _: &SessionGrant,
            _: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        async fn session(&self, _: &str) -> Result<Option<SessionGrant>, StoreError> {
            Ok(None)
        }
        async fn end_session(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn counts_are_read_once_per_scope_until_forgotten() {
        let store = Counting::default();
        let cache = BoardCounts::new(Duration::from_secs(3600));
        let acme = TenantId::parse("acme").unwrap();
        let now = Utc::now();
        let all = cache.get(&store, None, now).await.unwrap();
        assert_eq!(all.of(ProviderStatus::Connected), 0);
        assert_eq!(all.of(ProviderStatus::Error), 0);
        // The same scope again: from memory, with the time it was counted.
        let later = now + chrono::TimeDelta::seconds(3);
        let again = cache.get(&store, None, later).await.unwrap();
        assert_eq!(again.of(ProviderStatus::Connected), 0);
        assert_eq!(again.at, now);
        // Another scope is counted on its own.
        let one = cache.get(&store, Some(&acme), later).await.unwrap();
        assert_eq!(one.of(ProviderStatus::Connected), 101);
        assert_eq!(store.0.load(Ordering::SeqCst), 2);
        // After an action on the page: counted afresh.
        cache.forget();
        let fresh = cache.get(&store, None, later).await.unwrap();
        assert_eq!(fresh.of(ProviderStatus::Connected), 2);
        assert_eq!(fresh.at, later);
    }

    #[tokio::test]
    async fn without_a_time_to_live_every_view_counts() {
        let store = Counting::default();
        let cache = BoardCounts::new(Duration::ZERO);
        for n in 0..3 {
            let counts = cache.get(&store, None, Utc::now()).await.unwrap();
            assert_eq!(counts.of(ProviderStatus::Connected), n);
        }
    }
}
