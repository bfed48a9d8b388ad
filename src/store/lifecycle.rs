//! `LifecycleStore`: what the supervisors and the fleet read and write. Every
//! write checks the writer's fence first, in the same transaction, and changes
//! nothing under a superseded claim.
//!
//! **The providers' change feed** (`change_mark`, `changed_since`): a trigger
//! stamps `providers.revision` on every insert and on every update of a column
//! the fleet acts on (not on the status the lifecycle writes after each
//! attempt), and the fleet reads only rows stamped at or after its mark, through
//! the `providers_revision` index. The hard part is a transaction that stamps a
//! row early and commits late: with a plain sequence, a reader that already saw
//! a higher revision would move its mark past the late one and never see it. So
//! on PostgreSQL the revision is the writing transaction's 64-bit id
//! (`pg_current_xact_id()`), and a mark is `pg_snapshot_xmin(pg_current_snapshot())`:
//! every transaction with a smaller id has ended (committed or rolled back), so
//! the rows stamped below the mark are final and visible. A reader takes
//! everything from its last mark on — with no upper bound, so a change
//! committed while an older transaction is still open is seen at once — and
//! moves its mark only up to the oldest transaction still open. Rows above the
//! mark are read again next time until the mark passes them (applying a change
//! twice is harmless). A write transaction open for minutes on the server (a
//! pg_dump, a report, another database's batch) therefore costs re-reading the
//! few rows changed meanwhile; it delays nothing and loses nothing. The embedded store has one writer at a time, so a counter
//! (`provider_revision`) bumped inside the writing transaction commits in
//! order and its last committed value + 1 is the mark.

use super::rows::{
    HEALTH_COLUMNS, HealthRow, PROVIDER_COLUMNS, ProviderRow, SUBSCRIPTION_COLUMNS, SubscriptionRow,
};
use super::{Db, Dialect as _, Store, db, on_db, statements};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use subkeeper_actors::domain::{ProviderId, Subscription};
use subkeeper_actors::ports::{
    AttemptRecord, ChangeFeed, Fence, LifecycleStore, LoadedProvider, OwnedProvider,
    ProviderChange, ProviderState, Revision, RouteState, StoreError,
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

/// A changed provider as the change feed reads it.
#[derive(sqlx::FromRow)]
struct ChangeRow {
    #[sqlx(flatten)]
    provider: ProviderRow,
    /// Soft-deleted.
    deleted: bool,
    /// This instance owns it.
    owned_here: bool,
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
    /// ` AND p.owner = <instance>` when this store lists one instance's leases.
    pub(super) fn owner_filter(&self) -> String {
        statements::owner_filter(self.owner)
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

    async fn change_mark(&self) -> Result<Revision, StoreError> {
        let mark: i64 = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(pool)
                    .await
                    .map_err(db)?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar("SELECT last + 1 FROM provider_revision WHERE id = 1")
                    .fetch_one(pool)
                    .await
                    .map_err(db)?
            }
        };
        Ok(Revision(mark))
    }

    async fn changed_since(&self, since: Revision) -> Result<ChangeFeed, StoreError> {
        // The mark first: every row stamped below it is visible to the reads
        // below. The read has no upper bound: rows stamped at or above the
        // mark (their transaction committed while an older one, in any
        // database of the server, was still open) are seen now and read again
        // next time, until the mark passes them — applying a change twice is
        // harmless, and a long-running transaction elsewhere (a pg_dump, a
        // report) must not delay a new provider until the hourly full pass.
        let upto = self.change_mark().await?.max(since);
        let changes_sql = statements::change_feed(self.owner);
        let orphans_sql = statements::change_feed_orphans(self.owner);
        let (rows, subscriptions): (Vec<ChangeRow>, Vec<SubscriptionRow>) = on_db!(&self.db, pool => {
            let rows: Vec<ChangeRow> = sqlx::query_as(sqlx::AssertSqlSafe(changes_sql))
                .bind(since.0)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            let any_retired = rows
                .iter()
                .any(|r| r.owned_here && (r.deleted || !r.provider.enabled));
            let subscriptions = if any_retired {
                sqlx::query_as(sqlx::AssertSqlSafe(orphans_sql))
                    .bind(since.0)
                    .fetch_all(pool)
                    .await
                    .map_err(db)?
            } else {
                Vec::new()
            };
            (rows, subscriptions)
        });
        let mut subscriptions: HashMap<Uuid, SubscriptionRow> = subscriptions
            .into_iter()
            .map(|s| (s.provider_id, s))
            .collect();
        let changes = rows
            .into_iter()
            .map(|row| {
                let retired = row.deleted || !row.provider.enabled;
                Ok(ProviderChange {
                    owned: row.provider.owned()?,
                    retired,
                    owned_here: row.owned_here,
                    subscription: subscriptions
                        .remove(&row.provider.id)
                        .filter(|_| retired && row.owned_here)
                        .map(Subscription::from),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(ChangeFeed { changes, upto })
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
