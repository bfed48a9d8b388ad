//! `LifecycleStore`: what the supervisors and the fleet read and write. Every
//! write checks the writer's fence first, in the same transaction, and changes
//! nothing under a superseded claim.

use super::rows::{
    HEALTH_COLUMNS, HealthRow, PROVIDER_COLUMNS, ProviderRow, SUBSCRIPTION_COLUMNS, SubscriptionRow,
};
use super::{Dialect as _, Store, db, on_db};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use subkeeper_actors::domain::{ProviderId, Subscription};
use subkeeper_actors::ports::{
    AttemptRecord, Fence, LifecycleStore, LoadedProvider, OwnedProvider, ProviderState, RouteState,
    StoreError,
};
use uuid::Uuid;

/// A provider with its live subscription (a retired one being cleaned up).
#[derive(sqlx::FromRow)]
struct RetiredRow {
    #[sqlx(flatten)]
    provider: ProviderRow,
    #[sqlx(flatten)]
    subscription: SubscriptionRow,
}

/// A health row with the provider it belongs to (a page of them).
#[derive(sqlx::FromRow)]
struct HealthOfRow {
    provider_id: Uuid,
    #[sqlx(flatten)]
    health: HealthRow,
}

/// Fails with `Conflict` unless `fence` is the provider's current claim; on
/// Postgres the claim cannot change until the transaction ends.
macro_rules! check_fence {
    ($pool:expr, $tx:expr, $provider:expr, $fence:expr) => {{
        let sql = format!(
            "SELECT lease_token FROM providers WHERE id = $1 {}",
            $pool.for_share()
        );
        let current: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind($provider.0)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db)?;
        if current != Some($fence.0) {
            return Err(StoreError::Conflict(format!(
                "provider {} is claimed under another fence ({current:?}, not {})",
                $provider, $fence.0
            )));
        }
    }};
}

impl Store {
    /// `AND p.owner = <instance>` when this store lists one instance's leases.
    /// (The id is this process's own, an integer, never outside input.)
    fn owner_filter(&self) -> String {
        self.owner
            .map(|owner| format!(" AND p.owner = {owner}"))
            .unwrap_or_default()
    }
}

#[async_trait]
impl LifecycleStore for Store {
    async fn owned_providers(&self) -> Result<Vec<OwnedProvider>, StoreError> {
        // Ownership seam: with leases, the providers this instance claimed;
        // else one instance owns every enabled provider.
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers p WHERE p.enabled AND p.deleted_at IS NULL{}",
            self.owner_filter()
        );
        let rows: Vec<ProviderRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.map_err(db)?
        });
        rows.iter().map(ProviderRow::owned).collect()
    }

    async fn retired_with_subscription(
        &self,
    ) -> Result<Vec<(OwnedProvider, Subscription)>, StoreError> {
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS}, {SUBSCRIPTION_COLUMNS} FROM providers p \
             JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
             WHERE (NOT p.enabled OR p.deleted_at IS NOT NULL){}",
            self.owner_filter()
        );
        let rows: Vec<RetiredRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.map_err(db)?
        });
        rows.into_iter()
            .map(|r| Ok((r.provider.owned()?, r.subscription.into())))
            .collect()
    }

    async fn load_owned(
        &self,
        after: Option<ProviderId>,
        limit: u32,
    ) -> Result<Vec<LoadedProvider>, StoreError> {
        // Keyset paging on the primary key; the page's subscriptions, health rows
        // and subscription history are then read by the id range the page spans
        // (the same on both databases, no arrays): four indexed queries a page.
        let after = after.map_or(Uuid::nil(), |a| a.0);
        let providers_sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers p \
             WHERE p.id > $1 AND p.enabled AND p.deleted_at IS NULL{} ORDER BY p.id LIMIT $2",
            self.owner_filter()
        );
        let subscriptions_sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s \
             WHERE s.provider_id > $1 AND s.provider_id <= $2 AND s.state = 'active'"
        );
        let health_sql = format!(
            "SELECT h.provider_id, {HEALTH_COLUMNS} FROM provider_health h \
             WHERE h.provider_id > $1 AND h.provider_id <= $2"
        );
        let had_sql = "SELECT DISTINCT provider_id FROM subscriptions \
                       WHERE provider_id > $1 AND provider_id <= $2";
        type Page = (
            Vec<ProviderRow>,
            Vec<SubscriptionRow>,
            Vec<HealthOfRow>,
            Vec<Uuid>,
        );
        let (providers, subscriptions, health, had): Page = on_db!(&self.db, pool => {
            let providers: Vec<ProviderRow> = sqlx::query_as(sqlx::AssertSqlSafe(providers_sql))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(db)?;
            let Some(last) = providers.last().map(|p| p.id) else {
                return Ok(Vec::new());
            };
            let subscriptions = sqlx::query_as(sqlx::AssertSqlSafe(subscriptions_sql))
                .bind(after)
                .bind(last)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            let health = sqlx::query_as(sqlx::AssertSqlSafe(health_sql))
                .bind(after)
                .bind(last)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            let had = sqlx::query_scalar(had_sql)
                .bind(after)
                .bind(last)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            (providers, subscriptions, health, had)
        });
        let mut subscriptions: HashMap<Uuid, SubscriptionRow> = subscriptions
            .into_iter()
            .map(|s| (s.provider_id, s))
            .collect();
        let mut health: HashMap<Uuid, HealthRow> = health
            .into_iter()
            .map(|h| (h.provider_id, h.health))
            .collect();
        let had: HashSet<Uuid> = had.into_iter().collect();
        providers
            .iter()
            .map(|row| {
                let subscription = subscriptions.remove(&row.id).map(Subscription::from);
                Ok(LoadedProvider {
                    owned: row.owned()?,
                    state: ProviderState {
                        had_subscription: had.contains(&row.id) || subscription.is_some(),
                        subscription,
                        health: health
                            .remove(&row.id)
                            .map(|h| h.health(ProviderId(row.id)))
                            .transpose()?,
                    },
                })
            })
            .collect()
    }

    async fn provider_state(&self, provider: ProviderId) -> Result<ProviderState, StoreError> {
        let subscription_sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.provider_id = $1 AND s.state = 'active'"
        );
        let health_sql =
            format!("SELECT {HEALTH_COLUMNS} FROM provider_health h WHERE h.provider_id = $1");
        let (subscription, health, had): (Option<SubscriptionRow>, Option<HealthRow>, bool) = on_db!(&self.db, pool => {
            let subscription = sqlx::query_as(sqlx::AssertSqlSafe(subscription_sql))
                .bind(provider.0)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            let health = sqlx::query_as(sqlx::AssertSqlSafe(health_sql))
                .bind(provider.0)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            let had = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE provider_id = $1)",
            )
            .bind(provider.0)
            .fetch_one(pool)
            .await
            .map_err(db)?;
            (subscription, health, had)
        });
        Ok(ProviderState {
            had_subscription: had || subscription.is_some(),
            subscription: subscription.map(Into::into),
            health: health.map(|h| h.health(provider)).transpose()?,
        })
    }

    async fn record_attempt(&self, fence: Fence, record: &AttemptRecord) -> Result<(), StoreError> {
        // Batched with the other supervisors' attempts (see `attempts.rs`).
        self.record_attempt_grouped(fence, record).await
    }

    async fn subscription_deleted(
        &self,
        fence: Fence,
        provider: ProviderId,
        external_id: &str,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            check_fence!(pool, tx, provider, fence);
            sqlx::query(
                "UPDATE subscriptions SET state = $1, retired_at = $2 WHERE provider_id = $3 AND external_id = $4",
            )
            .bind(RouteState::Deleted.as_str())
            .bind(now)
            .bind(provider.0)
            .bind(external_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "UPDATE provider_health SET subscription_expires_at = NULL, next_renewal_at = NULL, updated_at = $1 \
                 WHERE provider_id = $2 \
                   AND NOT EXISTS (SELECT 1 FROM subscriptions WHERE provider_id = $2 AND state = 'active')",
            )
            .bind(now)
            .bind(provider.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }
}
