//! What the catch-up actor needs from the store: each provider's change cursor
//! and the page a read reached (`provider_cursors`), and every supervised
//! provider's proof of life (its last webhook, last check, and when its live
//! subscription was made).

use super::{Store, db, on_db, parse};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::{CatchUpState, CatchUpStore, ProofOfLife, StoreError};
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

/// One row of [`CatchUpStore::proofs_of_life`].
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

    async fn proofs_of_life(
        &self,
        providers: &[ProviderId],
    ) -> Result<Vec<ProofOfLife>, StoreError> {
        let wanted: HashSet<Uuid> = providers.iter().map(|p| p.0).collect();
        let rows: Vec<ProofRow> = on_db!(&self.db, pool => sqlx::query_as(
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
        .map_err(db)?);
        rows.into_iter()
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
            .collect()
    }
}
