//! What the notification and alerting actors need from the store: batched "last
//! webhook received" writes that end silences, the silence sweep, and who is
//! unhealthy since when.
//!
//! On Postgres each write is one statement whose row locks make "this call changed
//! it" exact, so a silence that begins or ends is reported by exactly one caller,
//! however many instances run. The embedded store has one writer at a time, so a
//! plain read-then-write transaction is just as exact there.

use super::rows::tenant;
use super::{Db, Dialect as _, Store, db, parse, statements};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use subkeeper_actors::alerting::Unhealthy;
use subkeeper_actors::domain::{ProviderId, ProviderKind};
use subkeeper_actors::notification::Silence;
use subkeeper_actors::ports::StoreError;
use subkeeper_actors::ports::{AlertStore, NotificationStore};
use uuid::Uuid;

/// A silence that began or ended, as the queries return it.
#[derive(sqlx::FromRow)]
struct SilenceRow {
    provider_id: Uuid,
    tenant_id: String,
    kind: String,
    /// When the silence began.
    since: Option<DateTime<Utc>>,
    /// When it ended (the webhook's time), for ended silences.
    ended_at: Option<DateTime<Utc>>,
}

impl SilenceRow {
    fn silence(self) -> Result<Option<Silence>, StoreError> {
        let Some(since) = self.since else {
            return Ok(None);
        };
        Ok(Some(Silence {
            provider_id: ProviderId(self.provider_id),
            tenant: tenant(&self.tenant_id)?,
            kind: parse(&self.kind)?,
            since,
            ended_at: self.ended_at,
        }))
    }
}

/// One row of [`AlertStore::unhealthy`].
#[derive(sqlx::FromRow)]
struct UnhealthyRow {
    id: Uuid,
    tenant_id: String,
    kind: String,
    status: String,
    error_message: Option<String>,
    failures: i32,
    /// First attempt since the provider was last healthy.
    first_bad: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// Before every attempt a store can hold: "no healthy attempt ever".
fn the_beginning() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

fn collect(rows: Vec<SilenceRow>) -> Result<Vec<Silence>, StoreError> {
    rows.into_iter()
        .filter_map(|r| r.silence().transpose())
        .collect()
}

#[async_trait]
impl NotificationStore for Store {
    async fn record_webhooks(
        &self,
        seen: &[(ProviderId, DateTime<Utc>)],
    ) -> Result<Vec<Silence>, StoreError> {
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        // One row per provider, its latest time.
        let mut latest: HashMap<ProviderId, DateTime<Utc>> = HashMap::new();
        for (provider, at) in seen {
            let slot = latest.entry(*provider).or_insert(*at);
            *slot = (*slot).max(*at);
        }
        let rows: Vec<SilenceRow> = match &self.db {
            Db::Postgres(pool) => {
                let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) =
                    latest.into_iter().map(|(p, t)| (p.0, t)).unzip();
                // `o` locks the rows (in id order, so concurrent batches cannot
                // deadlock) and reads `silent_since` as it was before this write:
                // only the caller that clears a silence sees it.
                sqlx::query_as(
                    "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS t(provider_id, at)), \
                          o AS (SELECT h.provider_id, h.silent_since AS was_silent FROM provider_health h \
                                WHERE h.provider_id = ANY($1) ORDER BY h.provider_id FOR UPDATE) \
                     UPDATE provider_health h SET \
                       last_webhook_received_at = GREATEST(h.last_webhook_received_at, v.at), silent_since = NULL \
                     FROM v JOIN o ON o.provider_id = v.provider_id JOIN providers p ON p.id = v.provider_id \
                     WHERE h.provider_id = v.provider_id \
                     RETURNING h.provider_id, h.tenant_id, p.kind, o.was_silent AS since, v.at AS ended_at",
                )
                .bind(&ids)
                .bind(&times)
                .fetch_all(pool)
                .await
                .map_err(db)?
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await.map_err(db)?;
                let mut rows = Vec::new();
                for (provider, at) in latest {
                    let row: Option<SilenceRow> = sqlx::query_as(
                        "SELECT h.provider_id, h.tenant_id, p.kind, h.silent_since AS since, $2 AS ended_at \
                         FROM provider_health h JOIN providers p ON p.id = h.provider_id WHERE h.provider_id = $1",
                    )
                    .bind(provider.0)
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                    sqlx::query(
                        "UPDATE provider_health SET silent_since = NULL, \
                           last_webhook_received_at = max(COALESCE(last_webhook_received_at, $2), $2) \
                         WHERE provider_id = $1",
                    )
                    .bind(provider.0)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    rows.extend(row);
                }
                tx.commit().await.map_err(db)?;
                rows
            }
        };
        collect(rows)
    }

    async fn mark_silent(
        &self,
        now: DateTime<Utc>,
        thresholds: &[(ProviderKind, TimeDelta)],
    ) -> Result<Vec<Silence>, StoreError> {
        if thresholds.is_empty() {
            return Ok(Vec::new());
        }
        let (kinds, cutoffs): (Vec<&str>, Vec<DateTime<Utc>>) = thresholds
            .iter()
            .map(|(kind, silence)| (kind.as_str(), now - *silence))
            .unzip();
        let rows: Vec<SilenceRow> = match &self.db {
            // A silence begins at the last webhook, or at the subscription's creation
            // if none came since (GREATEST ignores NULL): a fresh subscription gets
            // the whole threshold. That instant is kept on the health row
            // (`heard_at`, stamped by triggers, see the migration
            // `change_feed_and_due_sweeps`), so the sweep reads only the rows past
            // their kind's cutoff, by the partial index on (kind, heard_at) WHERE
            // silent_since IS NULL — what is due, not the fleet — planned apart
            // (MATERIALIZED) so that no plan walks every provider. Rows a webhook
            // batch holds are skipped, not waited for: the next sweep sees them.
            Db::Postgres(pool) => sqlx::query_as(statements::MARK_SILENT)
                .bind(&kinds)
                .bind(&cutoffs)
                .bind(now)
                // The latest cutoff as a plain value too: the planner sees how few
                // rows lie below it (it cannot see into the arrays).
                .bind(cutoffs.iter().max().copied())
                .fetch_all(pool)
                .await
                .map_err(db)?,
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await.map_err(db)?;
                let mut rows = Vec::new();
                for (kind, cutoff) in kinds.iter().zip(&cutoffs) {
                    // SQLite's two-argument max() is NULL if either is: COALESCE
                    // stands in for GREATEST's ignoring of NULL.
                    let due: Vec<SilenceRow> = sqlx::query_as(
                        "SELECT h.provider_id, h.tenant_id, p.kind, \
                                max(COALESCE(h.last_webhook_received_at, s.created_at), s.created_at) AS since, \
                                NULL AS ended_at \
                         FROM provider_health h \
                         JOIN providers p ON p.id = h.provider_id AND p.enabled AND p.deleted_at IS NULL \
                         JOIN subscriptions s ON s.provider_id = h.provider_id AND s.state = 'active' AND s.expires_at > $3 \
                         WHERE p.kind = $1 AND h.silent_since IS NULL \
                           AND max(COALESCE(h.last_webhook_received_at, s.created_at), s.created_at) < $2",
                    )
                    .bind(kind)
                    .bind(cutoff)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
                    for row in &due {
                        sqlx::query(
                            "UPDATE provider_health SET silent_since = $1, updated_at = $2 WHERE provider_id = $3",
                        )
                        .bind(row.since)
                        .bind(now)
                        .bind(row.provider_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    }
                    rows.extend(due);
                }
                tx.commit().await.map_err(db)?;
                rows
            }
        };
        collect(rows)
    }

    async fn silent_providers(&self) -> Result<Vec<(ProviderId, DateTime<Utc>)>, StoreError> {
        let rows: Vec<(Uuid, DateTime<Utc>)> = super::on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT provider_id, silent_since FROM provider_health WHERE silent_since IS NOT NULL",
            )
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        Ok(rows
            .into_iter()
            .map(|(id, since)| (ProviderId(id), since))
            .collect())
    }
}

#[async_trait]
impl AlertStore for Store {
    async fn unhealthy(&self, provider: Option<ProviderId>) -> Result<Vec<Unhealthy>, StoreError> {
        // Unhealthy since the first attempt after the last one that left it healthy
        // (or failing); every attempt since then left it in error or needs_reauth.
        let rows: Vec<UnhealthyRow> = super::on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT p.id, p.tenant_id, p.kind, p.status, p.error_message, p.updated_at, \
                        COALESCE(h.consecutive_failure_count, 0) AS failures, \
                        ( SELECT min(a.attempted_at) FROM renewal_attempts a \
                          WHERE a.provider_id = p.id AND a.attempted_at > COALESCE(( \
                            SELECT max(b.attempted_at) FROM renewal_attempts b \
                            WHERE b.provider_id = p.id AND b.status_after NOT IN ('error', 'needs_reauth')), $2) \
                        ) AS first_bad \
                 FROM providers p LEFT JOIN provider_health h ON h.provider_id = p.id \
                 WHERE p.deleted_at IS NULL AND p.enabled AND p.status IN ('error', 'needs_reauth') \
                   AND ($1 IS NULL OR p.id = $1)",
            )
            .bind(provider.map(|p| p.0))
            .bind(the_beginning())
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        rows.into_iter()
            .map(|row| {
                Ok(Unhealthy {
                    provider_id: ProviderId(row.id),
                    tenant: tenant(&row.tenant_id)?,
                    kind: parse(&row.kind)?,
                    state: parse(&row.status)?,
                    since: row.first_bad.unwrap_or(row.updated_at),
                    reason: row.error_message,
                    consecutive_failures: u32::try_from(row.failures).unwrap_or(0),
                })
            })
            .collect()
    }
}
