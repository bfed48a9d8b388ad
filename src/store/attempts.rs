//! Group commit of renewal attempts: every supervisor's `record_attempt` joins a
//! queue, and a caller that finds a commit slot free takes everything queued
//! (up to [`MAX_BATCH`]) and writes it in **one** transaction — one fence check
//! for the whole batch, then the attempts' writes, then one commit. A caller
//! returns only once its own attempt is committed (or refused), so a
//! `RenewalResult` is still published only after its attempt is recorded.
//!
//! No timer waits for a batch to fill: while the commits in flight run (a few
//! on Postgres, one on SQLite, which has one writer anyway), the attempts that
//! arrive queue up and form the next batch, so a lone attempt is written at once
//! and a burst of thousands shares a few dozen commits.
//!
//! On Postgres the batch's writes are set-based: each statement takes arrays
//! (`unnest`), so a batch costs the same eight round trips whatever its size —
//! on a busy machine every round trip waits for a core, and that wait, not the
//! statements, was what an attempt cost. SQLite runs in-process and writes
//! attempt by attempt. A batch in which a provider appears twice (never from
//! the supervisors, which have one attempt in flight each) is written in
//! rounds, so that the later attempt wins as it would alone.
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
//! It owns the SQL of an attempt's writes (SQLite: [`write_attempt_sqlite`];
//! Postgres: [`statements`]); it must not touch
//! anything but the attempt's own rows.

use super::{Dialect as _, Store, db, on_db, placeholders};
use chrono::{DateTime, Utc};
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

/// The attempts waiting for the next commit, and the commit slots (so that
/// the others' attempts gather while the commits in flight run).
pub(super) struct AttemptQueue {
    /// Attempts not yet taken into a batch, oldest first.
    pending: Mutex<Vec<Pending>>,
    /// One permit per commit that may run at once; held by the task
    /// committing a batch.
    committing: Arc<tokio::sync::Semaphore>,
}

impl AttemptQueue {
    /// A queue with `commits` commits in flight at most (at least one).
    pub(super) fn new(commits: usize) -> Self {
        Self {
            pending: Mutex::default(),
            committing: Arc::new(tokio::sync::Semaphore::new(commits.max(1))),
        }
    }

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

/// Writes one attempt's rows on SQLite, inside the caller's transaction: the
/// subscription changes, the health row, the provider's status and the
/// `renewal_attempts` row, statement by statement (in-process: no round trips
/// to save). The caller has checked the fence. Postgres writes the same rows
/// as sets ([`statements`]).
async fn write_attempt_sqlite(
    conn: &mut sqlx::SqliteConnection,
    record: &AttemptRecord,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
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
        .execute(&mut *conn)
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
        .execute(&mut *conn)
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
            .execute(&mut *conn)
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
        .execute(&mut *conn)
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
    .execute(&mut *conn)
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
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// The answer a queued attempt got, or `Unavailable` if its batch was
/// dropped unanswered (its task panicked).
fn answered(
    answer: Result<Result<(), StoreError>, oneshot::error::RecvError>,
) -> Result<(), StoreError> {
    answer.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the attempt's batch was abandoned before it was written".into(),
        ))
    })
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
                // An answer wins over taking a slot: whoever committed ours
                // answered before letting go of its slot.
                biased;
                answer = &mut outcome => return answered(answer),
                // (The slots are never closed; if they were, this branch
                // would end and the answer still come.)
                Ok(slot) = self.attempts.committing.clone().acquire_owned() => {
                    let batch = self.attempts.take();
                    if batch.is_empty() {
                        // Ours went with a batch in flight: it answers.
                        drop(slot);
                        return answered(outcome.await);
                    }
                    let store = self.clone();
                    tokio::spawn(async move {
                        store.commit_batch(batch).await;
                        drop(slot);
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
            Err(e) if records.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(attempts = records.len(), error = %e, "a batch of attempt writes failed; writing each on its own");
                let mut verdicts = Vec::with_capacity(records.len());
                for one in records.chunks(1) {
                    let own = self.write_batch(one).await;
                    verdicts.push(own.and_then(|mut own| own.pop().unwrap_or(Ok(()))));
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
            let mut accepted = Vec::with_capacity(records.len());
            for i in order {
                let (fence, record) = &records[i];
                let provider = record.result.provider_id;
                let current = fences.get(&provider.0).copied().flatten();
                if current == Some(fence.0) {
                    accepted.push(record);
                } else {
                    verdicts[i] = Err(StoreError::Conflict(format!(
                        "provider {provider} is claimed under another fence ({current:?}, not {})",
                        fence.0
                    )));
                }
            }
            for round in rounds(accepted) {
                tx.write_set(&round, now).await?;
            }
            tx.commit().await.map_err(db)?;
            Ok(verdicts)
        })
    }
}

/// Splits attempts (in provider order) into rounds in which each provider
/// appears once: the first attempt of every provider, then the second, …, so
/// that a later attempt of a provider is written after, and wins over, an
/// earlier one. From the supervisors (one attempt in flight each) there is
/// one round.
fn rounds(attempts: Vec<&AttemptRecord>) -> Vec<Vec<&AttemptRecord>> {
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    let mut rounds: Vec<Vec<&AttemptRecord>> = Vec::new();
    for record in attempts {
        let n = seen.entry(record.result.provider_id.0).or_default();
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(record);
        *n += 1;
    }
    rounds
}

/// The statements a Postgres batch runs, one per kind of row, each taking its
/// values as arrays; public so that the plans test explains exactly these.
pub mod statements {
    /// Marks each replaced subscription `replaced` or `gone` (still routable).
    pub const RETIRE_REPLACED: &str = "UPDATE subscriptions s SET state = v.state, retired_at = $4 \
                 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(provider_id, external_id, state) \
                 WHERE s.provider_id = v.provider_id AND s.external_id = v.external_id AND s.state = 'active'";
    /// Marks any other active subscription of each provider `replaced`.
    pub const REPLACE_OTHERS: &str = "UPDATE subscriptions s SET state = 'replaced', retired_at = $3 \
                 FROM unnest($1::uuid[], $2::text[]) AS v(provider_id, external_id) \
                 WHERE s.provider_id = v.provider_id AND s.state = 'active' AND s.external_id <> v.external_id";
    /// Inserts each live subscription or brings it up to date.
    pub const UPSERT_LIVE: &str = "INSERT INTO subscriptions \
                   (provider_id, tenant_id, resource, external_id, resource_id, client_state, expires_at, created_at, renewed_at, history_id, state) \
                 SELECT v.provider_id, p.tenant_id, p.resource, v.external_id, v.resource_id, v.client_state, \
                        v.expires_at, v.created_at, v.renewed_at, v.history_id, 'active' \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], \
                             $7::timestamptz[], $8::text[]) \
                      AS v(provider_id, external_id, resource_id, client_state, expires_at, created_at, renewed_at, history_id) \
                 JOIN providers p ON p.id = v.provider_id \
                 ON CONFLICT (external_id) DO UPDATE SET \
                   expires_at = excluded.expires_at, renewed_at = excluded.renewed_at, \
                   resource_id = excluded.resource_id, \
                   history_id = COALESCE(excluded.history_id, subscriptions.history_id), \
                   state = 'active', retired_at = NULL";
    /// Writes each provider's health row whole.
    pub const UPSERT_HEALTH: &str = "INSERT INTO provider_health \
               (provider_id, tenant_id, subscription_status, subscription_expires_at, last_renewal_attempt_at, \
                last_renewal_result, failure_reason, consecutive_failure_count, next_renewal_at, updated_at) \
             SELECT v.*, $10 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], \
                                         $6::text[], $7::text[], $8::int4[], $9::timestamptz[]) AS v \
             ON CONFLICT (provider_id) DO UPDATE SET \
               subscription_status = excluded.subscription_status, \
               subscription_expires_at = excluded.subscription_expires_at, \
               last_renewal_attempt_at = excluded.last_renewal_attempt_at, \
               last_renewal_result = excluded.last_renewal_result, \
               failure_reason = excluded.failure_reason, \
               consecutive_failure_count = excluded.consecutive_failure_count, \
               next_renewal_at = excluded.next_renewal_at, \
               updated_at = excluded.updated_at";
    /// Sets each provider's status and error message, as the API and the page show them.
    pub const UPDATE_PROVIDERS: &str = "UPDATE providers p SET status = v.status, error_message = v.error_message, updated_at = $4 \
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, status, error_message) \
             WHERE p.id = v.id AND p.enabled AND p.deleted_at IS NULL";
    /// Records the attempts.
    pub const INSERT_ATTEMPTS: &str = "INSERT INTO renewal_attempts \
               (provider_id, tenant_id, attempted_at, attempt, action, outcome, error_class, error_message, \
                http_status, duration_ms, new_expiration, subscription_id, status_after) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], \
                                  $7::text[], $8::text[], $9::int4[], $10::int8[], $11::timestamptz[], $12::text[], $13::text[])";
}

/// Writes attempts whose fences are checked (at most one per provider, in
/// provider order) inside a transaction: for each, its subscription changes,
/// health row, provider status and `renewal_attempts` row.
pub(super) trait SetWriter {
    /// Writes `records` at `now`.
    async fn write_set(
        &mut self,
        records: &[&AttemptRecord],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// SQLite runs in-process: a statement costs no round trip, so attempt by
/// attempt.
impl SetWriter for sqlx::Transaction<'static, sqlx::Sqlite> {
    async fn write_set(
        &mut self,
        records: &[&AttemptRecord],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for record in records {
            write_attempt_sqlite(self, record, now).await?;
        }
        Ok(())
    }
}

/// Postgres: one statement per kind of row, its values as arrays (`unnest`).
impl SetWriter for sqlx::Transaction<'static, sqlx::Postgres> {
    async fn write_set(
        &mut self,
        records: &[&AttemptRecord],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Subscriptions replaced by this attempt (their ids stay routable).
        let replaced: Vec<_> = records
            .iter()
            .filter_map(|r| r.replaced.as_ref().map(|old| (r, old)))
            .collect();
        if !replaced.is_empty() {
            let providers: Vec<Uuid> = replaced
                .iter()
                .map(|(r, _)| r.result.provider_id.0)
                .collect();
            let external: Vec<&str> = replaced
                .iter()
                .map(|(_, old)| old.external_id.as_str())
                .collect();
            let states: Vec<&str> = replaced
                .iter()
                .map(|(r, _)| {
                    if r.subscription.is_some() {
                        RouteState::Replaced.as_str()
                    } else {
                        RouteState::Gone.as_str()
                    }
                })
                .collect();
            sqlx::query(statements::RETIRE_REPLACED)
                .bind(&providers)
                .bind(&external)
                .bind(&states)
                .bind(now)
                .execute(&mut **self)
                .await
                .map_err(db)?;
        }

        // The live subscriptions: any other active one is replaced, then each
        // is inserted or brought up to date.
        let live: Vec<_> = records
            .iter()
            .filter_map(|r| r.subscription.as_ref().map(|s| (r, s)))
            .collect();
        if !live.is_empty() {
            let providers: Vec<Uuid> = live.iter().map(|(r, _)| r.result.provider_id.0).collect();
            let external: Vec<&str> = live.iter().map(|(_, s)| s.external_id.as_str()).collect();
            sqlx::query(statements::REPLACE_OTHERS)
                .bind(&providers)
                .bind(&external)
                .bind(now)
                .execute(&mut **self)
                .await
                .map_err(db)?;
            let resource_ids: Vec<Option<&str>> =
                live.iter().map(|(_, s)| s.resource_id.as_deref()).collect();
            let client_states: Vec<&str> =
                live.iter().map(|(_, s)| s.client_state.as_str()).collect();
            let expires: Vec<DateTime<Utc>> = live.iter().map(|(_, s)| s.expires_at).collect();
            let created: Vec<DateTime<Utc>> = live.iter().map(|(_, s)| s.created_at).collect();
            let renewed: Vec<Option<DateTime<Utc>>> =
                live.iter().map(|(_, s)| s.renewed_at).collect();
            let history: Vec<Option<&str>> =
                live.iter().map(|(_, s)| s.history_id.as_deref()).collect();
            sqlx::query(statements::UPSERT_LIVE)
                .bind(&providers)
                .bind(&external)
                .bind(&resource_ids)
                .bind(&client_states)
                .bind(&expires)
                .bind(&created)
                .bind(&renewed)
                .bind(&history)
                .execute(&mut **self)
                .await
                .map_err(db)?;
        }

        // Health rows, written whole.
        let providers: Vec<Uuid> = records.iter().map(|r| r.result.provider_id.0).collect();
        let tenants: Vec<&str> = records.iter().map(|r| r.result.tenant.as_str()).collect();
        let statuses: Vec<&str> = records
            .iter()
            .map(|r| r.health.subscription_status.as_str())
            .collect();
        let expires: Vec<Option<DateTime<Utc>>> = records
            .iter()
            .map(|r| r.health.subscription_expires_at)
            .collect();
        let attempted: Vec<Option<DateTime<Utc>>> = records
            .iter()
            .map(|r| r.health.last_renewal_attempt_at)
            .collect();
        let results: Vec<Option<&str>> = records
            .iter()
            .map(|r| r.health.last_renewal_result.map(|a| a.as_str()))
            .collect();
        let reasons: Vec<Option<&str>> = records
            .iter()
            .map(|r| r.health.failure_reason.as_deref())
            .collect();
        let failures: Vec<i32> = records
            .iter()
            .map(|r| i32::try_from(r.health.consecutive_failure_count).unwrap_or(i32::MAX))
            .collect();
        let next: Vec<Option<DateTime<Utc>>> =
            records.iter().map(|r| r.health.next_renewal_at).collect();
        sqlx::query(statements::UPSERT_HEALTH)
            .bind(&providers)
            .bind(&tenants)
            .bind(&statuses)
            .bind(&expires)
            .bind(&attempted)
            .bind(&results)
            .bind(&reasons)
            .bind(&failures)
            .bind(&next)
            .bind(now)
            .execute(&mut **self)
            .await
            .map_err(db)?;

        // The providers' status, as the API and the page show it.
        let statuses: Vec<&str> = records
            .iter()
            .map(|r| r.health.subscription_status.provider_status().as_str())
            .collect();
        let messages: Vec<Option<&str>> = records
            .iter()
            .map(|r| match r.health.subscription_status {
                HealthState::Error | HealthState::NeedsReauth => r.health.failure_reason.as_deref(),
                _ => None,
            })
            .collect();
        sqlx::query(statements::UPDATE_PROVIDERS)
            .bind(&providers)
            .bind(&statuses)
            .bind(&messages)
            .bind(now)
            .execute(&mut **self)
            .await
            .map_err(db)?;

        // The attempts themselves.
        let r: Vec<_> = records.iter().map(|r| &r.result).collect();
        let attempted: Vec<DateTime<Utc>> = r.iter().map(|r| r.attempted_at).collect();
        let attempts: Vec<&str> = r.iter().map(|r| r.attempt.as_str()).collect();
        let actions: Vec<&str> = r.iter().map(|r| r.action.as_str()).collect();
        let outcomes: Vec<&str> = r
            .iter()
            .map(|r| if r.success { "success" } else { "failure" })
            .collect();
        let classes: Vec<Option<&str>> = r
            .iter()
            .map(|r| r.error_class.map(|c| c.as_str()))
            .collect();
        let messages: Vec<Option<&str>> = r.iter().map(|r| r.error_message.as_deref()).collect();
        let http: Vec<Option<i32>> = r.iter().map(|r| r.http_status.map(i32::from)).collect();
        let durations: Vec<i64> = r
            .iter()
            .map(|r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
            .collect();
        let expirations: Vec<Option<DateTime<Utc>>> = r.iter().map(|r| r.new_expiration).collect();
        let subscription_ids: Vec<Option<&str>> =
            r.iter().map(|r| r.subscription_id.as_deref()).collect();
        let after: Vec<&str> = r.iter().map(|r| r.status.as_str()).collect();
        sqlx::query(statements::INSERT_ATTEMPTS)
            .bind(&providers)
            .bind(&tenants)
            .bind(&attempted)
            .bind(&attempts)
            .bind(&actions)
            .bind(&outcomes)
            .bind(&classes)
            .bind(&messages)
            .bind(&http)
            .bind(&durations)
            .bind(&expirations)
            .bind(&subscription_ids)
            .bind(&after)
            .execute(&mut **self)
            .await
            .map_err(db)?;
        Ok(())
    }
}
