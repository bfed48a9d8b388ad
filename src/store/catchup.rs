//! What the catch-up actor needs from the store: each provider's change cursor
//! and the page a read reached (`provider_cursors`), and the silence sweep:
//! the supervised providers whose proof of life (last webhook, last check, or
//! when the live subscription was made) is older than their kind's threshold.
//!
//! On PostgreSQL that proof of life is kept on the health row (`alive_at`,
//! stamped by triggers on `provider_health`, `subscriptions` and
//! `provider_cursors`; see the migration `change_feed_and_due_sweeps`), so a
//! sweep reads only the due rows and, per kind, the one oldest — by the index
//! on (kind, alive_at) — whatever the size of the fleet. Its due providers are
//! those this instance owns; the oldest per kind is the whole fleet's (with
//! several instances each reports the same). The embedded store (one
//! instance, a small fleet) reads every provider and picks them out here.

use super::{Db, Store, db, on_db, parse, statements};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{HashMap, HashSet};
use subkeeper_actors::domain::{ProviderId, ProviderKind};
use subkeeper_actors::ports::{CatchUpState, CatchUpStore, ProofOfLife, SilenceSweep, StoreError};
use uuid::Uuid;

/// A `provider_cursors` row with the provider's last webhook.
#[derive(sqlx::FromRow)]
struct CursorRow {
    cursor: Option<String>,
    page: Option<String>,
    cursor_at: Option<DateTime<Utc>>,
    checked_at: Option<DateTime<Utc>>,
    push_broken: Option<i32>,
    push_broken_at: Option<DateTime<Utc>>,
    last_webhook: Option<DateTime<Utc>>,
}

/// One provider's proof of life, as [`CatchUpStore::silence_sweep`] reads it.
#[derive(sqlx::FromRow)]
struct ProofRow {
    id: Uuid,
    kind: String,
    last_webhook: Option<DateTime<Utc>>,
    checked_at: Option<DateTime<Utc>>,
    subscribed_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl CatchUpStore for Store {
    async fn catch_up_state(
        &self,
        provider: ProviderId,
    ) -> Result<(CatchUpState, Option<DateTime<Utc>>), StoreError> {
        let row: Option<CursorRow> = on_db!(&self.db, pool => sqlx::query_as(
            "SELECT c.cursor, c.page, c.cursor_at, c.checked_at, c.push_broken, c.push_broken_at, \
                    h.last_webhook_received_at AS last_webhook \
             FROM providers p \
             LEFT JOIN provider_cursors c ON c.provider_id = p.id \
             LEFT JOIN provider_health h ON h.provider_id = p.id \
             WHERE p.id = $1",
        )
        .bind(provider.0)
        .fetch_optional(pool)
        .await
        .map_err(db)?);
        let Some(row) = row else {
            return Err(StoreError::Rejected(format!("no provider {provider}")));
        };
        Ok((
            CatchUpState {
                cursor: row.cursor,
                page: row.page,
                cursor_at: row.cursor_at,
                checked_at: row.checked_at,
                push_broken: row.push_broken.map_or(0, |n| u32::try_from(n).unwrap_or(0)),
                push_broken_at: row.push_broken_at,
            },
            row.last_webhook,
        ))
    }

    async fn save_catch_up_state(
        &self,
        provider: ProviderId,
        state: &CatchUpState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let push_broken = i32::try_from(state.push_broken).unwrap_or(i32::MAX);
        on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO provider_cursors \
               (provider_id, cursor, page, cursor_at, checked_at, push_broken, push_broken_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (provider_id) DO UPDATE SET cursor = excluded.cursor, page = excluded.page, \
               cursor_at = excluded.cursor_at, checked_at = excluded.checked_at, \
               push_broken = excluded.push_broken, push_broken_at = excluded.push_broken_at, \
               updated_at = excluded.updated_at",
        )
        .bind(provider.0)
        .bind(&state.cursor)
        .bind(&state.page)
        .bind(state.cursor_at)
        .bind(state.checked_at)
        .bind(push_broken)
        .bind(state.push_broken_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(db)?);
        Ok(())
    }

    async fn silence_sweep(
        &self,
        providers: &[ProviderId],
        now: DateTime<Utc>,
        poll_after: &[(ProviderKind, TimeDelta)],
    ) -> Result<SilenceSweep, StoreError> {
        let wanted: HashSet<Uuid> = providers.iter().map(|p| p.0).collect();
        let (due, oldest): (Vec<ProofRow>, Vec<(String, DateTime<Utc>)>) = match &self.db {
            Db::Postgres(pool) => {
                let (kinds, cutoffs): (Vec<&str>, Vec<DateTime<Utc>>) = poll_after
                    .iter()
                    .map(|(kind, limit)| (kind.as_str(), now - *limit))
                    .unzip();
                // The due rows first, on their own (MATERIALIZED: planned
                // apart, so the planner cannot turn it into a walk over every
                // provider of this instance with a lookup each), then theirs.
                let due = sqlx::query_as(sqlx::AssertSqlSafe(statements::silence_due(self.owner)))
                    .bind(&kinds)
                    .bind(&cutoffs)
                    // The latest cutoff as a plain value: the planner sees how few
                    // rows lie below it (it cannot see into the arrays).
                    .bind(cutoffs.iter().max().copied())
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
                let all: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                // Per kind, the index's first row: the oldest in the whole
                // fleet (every instance reports the same; dashboards take the
                // max). Joining it to this instance's providers let the
                // planner walk all of them (measured: 4.5 s a sweep at 100k).
                let oldest = sqlx::query_as(statements::OLDEST_ALIVE)
                    .bind(&all)
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
                (due, oldest)
            }
            Db::Sqlite(pool) => {
                let rows: Vec<ProofRow> = sqlx::query_as(
                    "SELECT p.id, p.kind, h.last_webhook_received_at AS last_webhook, c.checked_at, \
                            s.created_at AS subscribed_at \
                     FROM providers p \
                     JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
                     LEFT JOIN provider_health h ON h.provider_id = p.id \
                     LEFT JOIN provider_cursors c ON c.provider_id = p.id \
                     WHERE p.enabled AND p.deleted_at IS NULL \
                       AND (h.subscription_status IS NULL OR h.subscription_status <> 'needs_reauth')",
                )
                .fetch_all(pool)
                .await
                .map_err(db)?;
                let cutoffs: HashMap<&str, DateTime<Utc>> = poll_after
                    .iter()
                    .map(|(kind, limit)| (kind.as_str(), now - *limit))
                    .collect();
                let mut oldest: HashMap<String, DateTime<Utc>> = HashMap::new();
                let mut due = Vec::new();
                for row in rows.into_iter().filter(|r| wanted.contains(&r.id)) {
                    let Some(latest) = [row.last_webhook, row.checked_at, row.subscribed_at]
                        .into_iter()
                        .flatten()
                        .max()
                    else {
                        continue;
                    };
                    let slot = oldest.entry(row.kind.clone()).or_insert(latest);
                    *slot = (*slot).min(latest);
                    if cutoffs.get(row.kind.as_str()).is_some_and(|c| latest <= *c) {
                        due.push(row);
                    }
                }
                (due, oldest.into_iter().collect())
            }
        };
        Ok(SilenceSweep {
            due: due
                .into_iter()
                .filter(|r| wanted.contains(&r.id))
                .map(|r| {
                    Ok(ProofOfLife {
                        provider: ProviderId(r.id),
                        kind: parse(&r.kind)?,
                        last_webhook: r.last_webhook,
                        checked_at: r.checked_at,
                        subscribed_at: r.subscribed_at,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            oldest: oldest
                .into_iter()
                .map(|(kind, at)| Ok((parse(&kind)?, at)))
                .collect::<Result<_, StoreError>>()?,
        })
    }
}
