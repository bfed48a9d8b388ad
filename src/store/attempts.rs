//! Group commit of renewal attempts: every supervisor's `record_attempt` joins a
//! queue, and whichever caller finds no commit running takes everything queued
//! (up to [`MAX_BATCH`]) and writes it in **one** transaction — one fence check
//! for the whole batch, then each attempt's writes, then one commit. A caller
//! returns only once its own attempt is committed (or refused), so a
//! `RenewalResult` is still published only after its attempt is recorded.
//!
//! No timer waits for a batch to fill: while one commit runs, the attempts
//! that arrive queue up and form the next batch, so a lone attempt is written
//! at once and a burst of thousands shares a few hundred commits.
//!
//! Fencing is per attempt: an attempt under a superseded claim is answered
//! `Conflict` and its writes are left out; the others in its batch commit. If
//! the batch itself fails (a deadlock with a lease claim, a value one row
//! refuses, a dropped connection), nothing of it was committed and each attempt
//! is written again in its own transaction, so one bad attempt fails alone.
//!
//! The commit runs in a task of its own: a caller that goes away (its
//! supervisor stopped) does not abandon the others' writes. Shutdown drains the
//! queue by itself: supervisors wait for their writes, and the fleet waits for
//! its supervisors.
//!
//! It owns the SQL of one attempt ([`write_attempt!`]); it must not touch
//! anything but the attempt's own rows.

use super::{Dialect as _, Store, db, on_db, placeholders};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subkeeper_actors::domain::HealthState;
use subkeeper_actors::ports::{AttemptRecord, Fence, RouteState, StoreError};
use subkeeper_actors::telemetry::names;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Attempts written in one transaction at most: enough that a burst of
/// thousands needs few commits, few enough that the row locks a batch holds
/// (every provider in it, shared, until commit) are released within tens of
/// milliseconds.
pub(super) const MAX_BATCH: usize = 256;

/// Sizes the fence query's id list is padded to (by repeating the last id), so
/// that each connection prepares at most this many variants of it rather than
/// one per batch size.
const FENCE_LIST_SIZES: [usize; 5] = [1, 4, 16, 64, MAX_BATCH];

/// One attempt waiting to be written, and where its outcome goes.
struct Pending {
    fence: Fence,
    record: AttemptRecord,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The attempts waiting for the next commit, and the lock that makes one
/// commit run at a time (so that the others' attempts gather meanwhile).
#[derive(Default)]
pub(super) struct AttemptQueue {
    /// Attempts not yet taken into a batch, oldest first.
    pending: Mutex<Vec<Pending>>,
    /// Held by the task committing a batch.
    committing: Arc<tokio::sync::Mutex<()>>,
}

impl AttemptQueue {
    /// Takes up to [`MAX_BATCH`] attempts, oldest first.
    fn take(&self) -> Vec<Pending> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = pending.len().min(MAX_BATCH);
        pending.drain(..n).collect()
    }

    fn push(&self, attempt: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(attempt);
    }
}

/// Writes one attempt's rows inside transaction `$tx` at time `$now`: the
/// subscription changes, the health row, the provider's status and the
/// `renewal_attempts` row. The caller has checked the fence.
macro_rules! write_attempt {
    ($tx:expr, $record:expr, $now:expr) => {{
        let record: &AttemptRecord = $record;
        let now = $now;
        let r = &record.result;
        let h = &record.health;
        let status = h.subscription_status.provider_status();
        let error_message = match h.subscription_status {
            HealthState::Error | HealthState::NeedsReauth => h.failure_reason.clone(),
            _ => None,
        };
        if let Some(old) = &record.replaced {
            // Superseded ids stay routable for late notifications.
            let state = if record.subscription.is_some() {
                RouteState::Replaced
            } else {
                RouteState::Gone
            };
            sqlx::query(
                "UPDATE subscriptions SET state = $1, retired_at = $2 \
                 WHERE provider_id = $3 AND external_id = $4 AND state = 'active'",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(r.provider_id.0)
            .bind(&old.external_id)
            .execute(&mut *$tx)
            .await
            .map_err(db)?;
        }
        if let Some(sub) = &record.subscription {
            sqlx::query(
                "UPDATE subscriptions SET state = 'replaced', retired_at = $1 \
                 WHERE provider_id = $2 AND state = 'active' AND external_id <> $3",
            )
            .bind(now)
            .bind(r.provider_id.0)
            .bind(&sub.external_id)
            .execute(&mut *$tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "INSERT INTO subscriptions \
                   (provider_id, tenant_id, resource, external_id, resource_id, client_state, expires_at, created_at, renewed_at, history_id, state) \
                 SELECT $1, p.tenant_id, p.resource, $2, $3, $4, $5, $6, $7, $8, 'active' FROM providers p WHERE p.id = $1 \
                 ON CONFLICT (external_id) DO UPDATE SET \
                   expires_at = excluded.expires_at, renewed_at = excluded.renewed_at, \
                   resource_id = excluded.resource_id, \
                   history_id = COALESCE(excluded.history_id, subscriptions.history_id), \
                   state = 'active', retired_at = NULL",
            )
            .bind(r.provider_id.0)
            .bind(&sub.external_id)
            .bind(&sub.resource_id)
            .bind(&sub.client_state)
            .bind(sub.expires_at)
            .bind(sub.created_at)
            .bind(sub.renewed_at)
            .bind(&sub.history_id)
            .execute(&mut *$tx)
            .await
            .map_err(db)?;
        }

        sqlx::query(
            "INSERT INTO provider_health \
               (provider_id, tenant_id, subscription_status, subscription_expires_at, last_renewal_attempt_at, \
                last_renewal_result, failure_reason, consecutive_failure_count, next_renewal_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (provider_id) DO UPDATE SET \
               subscription_status = excluded.subscription_status, \
               subscription_expires_at = excluded.subscription_expires_at, \
               last_renewal_attempt_at = excluded.last_renewal_attempt_at, \
               last_renewal_result = excluded.last_renewal_result, \
               failure_reason = excluded.failure_reason, \
               consecutive_failure_count = excluded.consecutive_failure_count, \
               next_renewal_at = excluded.next_renewal_at, \
               updated_at = excluded.updated_at",
        )
        .bind(r.provider_id.0)
        .bind(r.tenant.as_str())
        .bind(h.subscription_status.as_str())
        .bind(h.subscription_expires_at)
        .bind(h.last_renewal_attempt_at)
        .bind(h.last_renewal_result.map(|a| a.as_str()))
        .bind(&h.failure_reason)
        .bind(i32::try_from(h.consecutive_failure_count).unwrap_or(i32::MAX))
        .bind(h.next_renewal_at)
        .bind(now)
        .execute(&mut *$tx)
        .await
        .map_err(db)?;

        sqlx::query(
            "UPDATE providers SET status = $1, error_message = $2, updated_at = $3 \
             WHERE id = $4 AND enabled AND deleted_at IS NULL",
        )
        .bind(status.as_str())
        .bind(&error_message)
        .bind(now)
        .bind(r.provider_id.0)
        .execute(&mut *$tx)
        .await
        .map_err(db)?;

        sqlx::query(
            "INSERT INTO renewal_attempts \
               (provider_id, tenant_id, attempted_at, attempt, action, outcome, error_class, error_message, \
                http_status, duration_ms, new_expiration, subscription_id, status_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(r.provider_id.0)
        .bind(r.tenant.as_str())
        .bind(r.attempted_at)
        .bind(r.attempt.as_str())
        .bind(r.action.as_str())
        .bind(if r.success { "success" } else { "failure" })
        .bind(r.error_class.map(|c| c.as_str()))
        .bind(&r.error_message)
        .bind(r.http_status.map(i32::from))
        .bind(i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
        .bind(r.new_expiration)
        .bind(&r.subscription_id)
        .bind(r.status.as_str())
        .execute(&mut *$tx)
        .await
        .map_err(db)?;
    }};
}

/// What one batch's transaction decided for each of its attempts (by position
/// in the batch): written, or refused under a superseded fence.
type Verdicts = Vec<Result<(), StoreError>>;

impl Store {
    /// Queues the attempt for the next group commit and returns once it is
    /// committed (or refused: `Conflict` under a superseded fence).
    pub(super) async fn record_attempt_grouped(
        &self,
        fence: Fence,
        record: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let (reply, mut outcome) = oneshot::channel();
        self.attempts.push(Pending {
            fence,
            record: record.clone(),
            reply,
        });
        loop {
            tokio::select! {
                // An answer wins over taking the lock: whoever committed ours
                // answered before letting go of it.
                biased;
                answer = &mut outcome => {
                    return answer.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(
                            "the attempt's batch was abandoned before it was written".into(),
                        ))
                    });
                }
                guard = self.attempts.committing.clone().lock_owned() => {
                    let batch = self.attempts.take();
                    if batch.is_empty() {
                        // Ours went with a batch that has answered.
                        continue;
                    }
                    let store = self.clone();
                    tokio::spawn(async move {
                        store.commit_batch(batch).await;
                        drop(guard);
                    });
                }
            }
        }
    }

    /// Writes `batch` in one transaction and answers each attempt; if the
    /// transaction fails, writes each attempt in its own.
    async fn commit_batch(&self, batch: Vec<Pending>) {
        metrics::histogram!(names::ATTEMPT_WRITE_BATCH).record(batch.len() as f64);
        let (records, replies): (Vec<(Fence, AttemptRecord)>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.fence, p.record), p.reply))
            .unzip();
        let verdicts = match self.write_batch(&records).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                if records.len() > 1 {
                    tracing::warn!(attempts = records.len(), error = %e, "a batch of attempt writes failed; writing each on its own");
                }
                let mut verdicts = Vec::with_capacity(records.len());
                for (fence, record) in &records {
                    verdicts.push(self.write_one(*fence, record).await);
                }
                verdicts
            }
        };
        for (reply, verdict) in replies.into_iter().zip(verdicts) {
            // A caller that went away needs no answer.
            let _ = reply.send(verdict);
        }
    }

    /// One transaction for the whole batch: the fences of all its providers
    /// read (and share-locked) in one query, in id order; then the writes of
    /// every attempt whose fence holds, in provider order (the order every
    /// batch locks rows in); then one commit.
    async fn write_batch(
        &self,
        records: &[(Fence, AttemptRecord)],
    ) -> Result<Verdicts, StoreError> {
        let now = self.clock.now();
        let mut ids: Vec<Uuid> = records
            .iter()
            .map(|(_, r)| r.result.provider_id.0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let size = FENCE_LIST_SIZES
            .into_iter()
            .find(|&s| s >= ids.len())
            .unwrap_or(ids.len());
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| records[i].1.result.provider_id.0);
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let sql = format!(
                "SELECT id, lease_token FROM providers WHERE id IN ({}) ORDER BY id {}",
                placeholders(1, size),
                pool.for_share()
            );
            let mut query = sqlx::query_as::<_, (Uuid, Option<i64>)>(sqlx::AssertSqlSafe(sql));
            for i in 0..size {
                query = query.bind(ids[i.min(ids.len() - 1)]);
            }
            let fences: HashMap<Uuid, Option<i64>> =
                query.fetch_all(&mut *tx).await.map_err(db)?.into_iter().collect();
            let mut verdicts: Verdicts = vec![Ok(()); records.len()];
            for i in order {
                let (fence, record) = &records[i];
                let provider = record.result.provider_id;
                let current = fences.get(&provider.0).copied().flatten();
                if current != Some(fence.0) {
                    verdicts[i] = Err(StoreError::Conflict(format!(
                        "provider {provider} is claimed under another fence ({current:?}, not {})",
                        fence.0
                    )));
                    continue;
                }
                write_attempt!(tx, record, now);
            }
            tx.commit().await.map_err(db)?;
            Ok(verdicts)
        })
    }

    /// One attempt in its own transaction, its fence checked first.
    pub(super) async fn write_one(
        &self,
        fence: Fence,
        record: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let provider = record.result.provider_id;
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let sql = format!(
                "SELECT lease_token FROM providers WHERE id = $1 {}",
                pool.for_share()
            );
            let current: Option<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(provider.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            let current = current.flatten();
            if current != Some(fence.0) {
                return Err(StoreError::Conflict(format!(
                    "provider {provider} is claimed under another fence ({current:?}, not {})",
                    fence.0
                )));
            }
            write_attempt!(tx, record, now);
            tx.commit().await.map_err(db)
        })
    }
}
