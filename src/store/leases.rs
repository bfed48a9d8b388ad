//! `LeaseStore` on Postgres: which instance owns which provider.
//!
//! Unlike the rest of the store, lease times are read from the database's own
//! clock (`clock_timestamp()`), not the caller's: whether an instance is alive is a
//! matter of real time, and the database is the one clock all instances share,
//! so a skewed machine clock cannot make a live instance look dead.
//!
//! Claims and releases are set-based statements over a bounded batch; a claim
//! locks its candidate rows with `FOR UPDATE SKIP LOCKED`, so instances claiming
//! at the same moment take different providers, and a row another instance
//! claimed meanwhile is re-checked and skipped (its owner is now live).

use super::{Db, Store, db};
use async_trait::async_trait;
use sqlx::postgres::PgPool;
use std::time::Duration;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::{Fence, LeaseStore, Membership, StoreError};

/// One instance's leases.
#[derive(Clone)]
pub struct Leases {
    pool: PgPool,
    instance: i64,
    ttl: Duration,
    /// The highest provider id the last claim took: the next claim goes on
    /// from there (then from the start), so claiming N providers in batches
    /// does not walk the rows already claimed again on every batch (which made
    /// claiming 100,000 quadratic: tens of seconds before the first was loaded).
    claim_cursor: std::sync::Arc<std::sync::Mutex<uuid::Uuid>>,
    /// The fleet's counts as the last count saw them; a heartbeat counts again
    /// only when a provider changed since (see [`Counted`]).
    counted: std::sync::Arc<std::sync::Mutex<Option<Counted>>>,
}

/// What a heartbeat counted, and the change-feed mark it counted at.
///
/// Counting the enabled providers (and this instance's) reads the whole fleet:
/// every 5 s at 100,000 providers that was ~144 million rows an hour, nearly
/// all an idle instance read. Every change that moves a count (enabled,
/// deleted_at, owner, lease_token) stamps the row's `revision` with its
/// transaction id, so a heartbeat first asks whether any row has a revision at
/// or above the mark — one probe of the `providers_revision` index — and counts
/// again only then. Any transaction the count could not see has an id at or
/// above the mark (`pg_snapshot_xmin` of the count's own snapshot), so a row it
/// changed is found by the probe once it commits. Rows are removed for good
/// only after they were soft-deleted (counted out then); a full count still
/// runs every [`RECOUNT_EVERY`] as a backstop.
#[derive(Clone, Copy)]
struct Counted {
    mark: i64,
    providers: i64,
    owned: i64,
    at: std::time::Instant,
}

/// The longest a heartbeat goes on one count while nothing changed.
const RECOUNT_EVERY: Duration = Duration::from_secs(3600);

impl Leases {
    /// Claims up to `limit` claimable providers with ids above `after`, in id
    /// order, and moves the cursor to the last one taken.
    async fn claim_after(&self, after: uuid::Uuid, limit: u32) -> Result<u32, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "WITH candidates AS ( \
               SELECT p.id FROM providers p \
               WHERE p.id > $3 AND (p.owner IS NULL OR p.owner NOT IN ({LIVE})) \
                 AND ((p.enabled AND p.deleted_at IS NULL) \
                      OR EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider_id = p.id AND s.state = 'active')) \
               ORDER BY p.id LIMIT $2 FOR UPDATE OF p SKIP LOCKED) \
             UPDATE providers p SET owner = $1, lease_token = nextval('lease_tokens') \
             FROM candidates c WHERE p.id = c.id RETURNING p.id"
        )))
        .bind(self.instance)
        .bind(i64::from(limit))
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut cursor = self
            .claim_cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cursor = ids.iter().max().copied().unwrap_or(uuid::Uuid::nil());
        Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX))
    }
}

/// `ttl` as a Postgres interval literal's value in seconds.
fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

impl Leases {
    /// Registers this process as a new instance of the fleet on `store`'s
    /// database. Only a shared (Postgres) store has leases: `None` for SQLite.
    pub async fn join(store: &Store, ttl: Duration) -> Result<Option<Self>, StoreError> {
        let Db::Postgres(shared) = store.db() else {
            return Ok(None);
        };
        // Leases have connections of their own: a heartbeat queued behind a
        // busy pool (a start-up, a burst of renewals) would let the lease lapse
        // and the fleet churn between instances.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(ttl / 2)
            .connect_with((*shared.connect_options()).clone())
            .await
            .map_err(db)?;
        let pool = &pool;
        let host = hostname();
        let instance: i64 = sqlx::query_scalar(
            "INSERT INTO instances (host, pid, lease_until) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) RETURNING id",
        )
        .bind(&host)
        .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
        .bind(seconds(ttl))
        .fetch_one(pool)
        .await
        .map_err(db)?;
        tracing::info!(instance, host = %host, ttl_seconds = ttl.as_secs_f64(), "joined the fleet");
        Ok(Some(Self {
            pool: pool.clone(),
            instance,
            ttl,
            claim_cursor: Default::default(),
            counted: Default::default(),
        }))
    }

    /// This instance's id (the `owner` of the providers it holds).
    pub fn instance(&self) -> i64 {
        self.instance
    }

    /// The live instance other than this one that owns `provider`, if any.
    pub async fn owner_of(&self, provider: ProviderId) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT owner FROM providers WHERE id = $1 AND owner <> $2 AND owner IN ({LIVE})"
        )))
        .bind(provider.0)
        .bind(self.instance)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    /// The live instances other than this one.
    pub async fn other_live_instances(&self) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM ({LIVE}) l WHERE id <> $1"
        )))
        .bind(self.instance)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }
}

/// The host name, for operators reading the `instances` table.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Instances whose lease is current.
const LIVE: &str = "SELECT id FROM instances WHERE lease_until > clock_timestamp() AND NOT leaving";

#[async_trait]
impl LeaseStore for Leases {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn heartbeat(&self) -> Result<Membership, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Re-inserted if someone cleaned the row up while this process was stopped.
        let lapsed: bool = sqlx::query_scalar(
            "WITH before AS (SELECT lease_until FROM instances WHERE id = $1) \
             INSERT INTO instances (id, host, pid, lease_until) \
             VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4)) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(), \
               lease_until = excluded.lease_until, leaving = false \
             RETURNING COALESCE((SELECT lease_until FROM before) <= clock_timestamp(), true)",
        )
        .bind(self.instance)
        .bind(hostname())
        .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
        .bind(seconds(self.ttl))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        // Rows of instances dead for a long time are only clutter.
        sqlx::query(
            "DELETE FROM instances WHERE lease_until < clock_timestamp() - interval '1 day'",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let live: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM ({LIVE}) l"
        )))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let last = *self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unchanged = match last {
            Some(c) if c.at.elapsed() < RECOUNT_EVERY => {
                !sqlx::query_scalar::<_, bool>(super::statements::STAMPED_SINCE)
                    .bind(c.mark)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?
            }
            _ => false,
        };
        let counted = match last {
            Some(c) if unchanged => c,
            _ => {
                let (providers, owned, mark): (i64, i64, i64) = sqlx::query_as(
                    "SELECT count(*), count(*) FILTER (WHERE owner = $1), \
                            pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                     FROM providers WHERE enabled AND deleted_at IS NULL",
                )
                .bind(self.instance)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                let c = Counted {
                    mark,
                    providers,
                    owned,
                    at: std::time::Instant::now(),
                };
                *self
                    .counted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c);
                c
            }
        };
        let (providers, owned) = (counted.providers, counted.owned);
        tx.commit().await.map_err(db)?;
        Ok(Membership {
            live_instances: u32::try_from(live).unwrap_or(u32::MAX).max(1),
            providers: u64::try_from(providers).unwrap_or(0),
            owned: u64::try_from(owned).unwrap_or(0),
            lapsed,
        })
    }

    async fn claim(&self, limit: u32) -> Result<u32, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let cursor = *self
            .claim_cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut claimed = self.claim_after(cursor, limit).await?;
        if claimed < limit && !cursor.is_nil() {
            // Past the last id: the rest lies before the cursor.
            claimed += self.claim_after(uuid::Uuid::nil(), limit - claimed).await?;
        }
        Ok(claimed)
    }

    async fn release(&self, providers: &[(ProviderId, Fence)]) -> Result<u32, StoreError> {
        if providers.is_empty() {
            return Ok(0);
        }
        let ids: Vec<uuid::Uuid> = providers.iter().map(|(p, _)| p.0).collect();
        let fences: Vec<i64> = providers.iter().map(|(_, f)| f.0).collect();
        let released = sqlx::query(
            "UPDATE providers p SET owner = NULL \
             FROM unnest($2::uuid[], $3::bigint[]) AS r(id, fence) \
             WHERE p.id = r.id AND p.lease_token = r.fence AND p.owner = $1",
        )
        .bind(self.instance)
        .bind(&ids)
        .bind(&fences)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(u32::try_from(released).unwrap_or(u32::MAX))
    }

    async fn disowned(&self, providers: &[ProviderId]) -> Result<Vec<ProviderId>, StoreError> {
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<uuid::Uuid> = providers.iter().map(|p| p.0).collect();
        let rows: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM providers WHERE id = ANY($2) AND enabled AND deleted_at IS NULL \
             AND owner IS DISTINCT FROM $1",
        )
        .bind(self.instance)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(ProviderId).collect())
    }

    async fn leave(&self) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let released = sqlx::query("UPDATE providers SET owner = NULL WHERE owner = $1")
            .bind(self.instance)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query(
            "UPDATE instances SET leaving = true, lease_until = clock_timestamp() WHERE id = $1",
        )
        .bind(self.instance)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::info!(instance = self.instance, released, "left the fleet");
        Ok(u32::try_from(released).unwrap_or(u32::MAX))
    }
}
