//! What webhook intake reads and writes: routing a provider-side subscription id
//! (or, for Gmail pushes, a mailbox address) to its provider, the Google providers
//! owed a periodic resync, and the outbox used while the bus cannot take a
//! notification. (Batched "last webhook received" updates are the notification
//! actor's, in `notification.rs`.)

use super::rows::tenant;
use super::{Dialect as _, Store, db, on_db, parse, placeholders};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::{
    DurableMessage, IntakeStore, MailboxRoute, Outbox, OutboxEntry, ResyncTarget, Route, StoreError,
};
use uuid::Uuid;

/// One row of [`IntakeStore::routes`].
#[derive(sqlx::FromRow)]
struct RouteRow {
    /// The provider-side subscription id.
    external_id: String,
    provider_id: Uuid,
    tenant_id: String,
    kind: String,
    client_state: String,
    /// What became of the subscription.
    state: String,
    /// False once the provider is disabled or deleted.
    provider_enabled: bool,
}

/// One row of [`IntakeStore::mailbox_routes`].
#[derive(sqlx::FromRow)]
struct MailboxRow {
    id: Uuid,
    tenant_id: String,
    external_id: String,
}

/// One row of [`IntakeStore::google_resync_targets`].
#[derive(sqlx::FromRow)]
struct TargetRow {
    id: Uuid,
    tenant_id: String,
    kind: String,
}

/// One row of the outbox.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    subject: String,
    msg_id: String,
    payload: Vec<u8>,
}

#[async_trait]
impl IntakeStore for Store {
    async fn routes(&self, external_ids: &[&str]) -> Result<HashMap<String, Route>, StoreError> {
        if external_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT s.external_id, s.provider_id, s.tenant_id, p.kind, s.client_state, s.state, \
                    (p.enabled AND p.deleted_at IS NULL) AS provider_enabled \
             FROM subscriptions s JOIN providers p ON p.id = s.provider_id \
             WHERE s.external_id IN ({})",
            placeholders(1, external_ids.len())
        );
        let rows: Vec<RouteRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in external_ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await.map_err(db)?
        });
        rows.into_iter()
            .map(|row| {
                let route = Route {
                    provider: ProviderId(row.provider_id),
                    tenant: tenant(&row.tenant_id)?,
                    kind: parse(&row.kind)?,
                    client_state: row.client_state,
                    state: parse(&row.state)?,
                    provider_enabled: row.provider_enabled,
                };
                Ok((row.external_id, route))
            })
            .collect()
    }

    async fn mailbox_routes(&self, mailbox: &str) -> Result<Vec<MailboxRoute>, StoreError> {
        let rows: Vec<MailboxRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT p.id, p.tenant_id, s.external_id \
                 FROM providers p JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
                 WHERE p.kind = 'gmail' AND lower(p.resource) = lower($1) \
                   AND p.enabled AND p.deleted_at IS NULL",
            )
            .bind(mailbox)
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        rows.into_iter()
            .map(|row| {
                Ok(MailboxRoute {
                    provider: ProviderId(row.id),
                    tenant: tenant(&row.tenant_id)?,
                    subscription_id: row.external_id,
                })
            })
            .collect()
    }

    async fn google_resync_targets(&self) -> Result<Vec<ResyncTarget>, StoreError> {
        let rows: Vec<TargetRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT p.id, p.tenant_id, p.kind FROM providers p \
                 WHERE p.kind IN ('google_calendar', 'gmail') AND p.enabled AND p.deleted_at IS NULL \
                   AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider_id = p.id AND s.state = 'active')",
            )
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        rows.into_iter()
            .map(|row| {
                Ok(ResyncTarget {
                    provider: ProviderId(row.id),
                    tenant: tenant(&row.tenant_id)?,
                    kind: parse(&row.kind)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Outbox for Store {
    async fn push(&self, messages: &[DurableMessage]) -> Result<(), StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            for m in messages {
                sqlx::query(
                    "INSERT INTO webhook_outbox (subject, msg_id, payload, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (msg_id) DO NOTHING",
                )
                .bind(&m.subject)
                .bind(&m.msg_id)
                .bind(&m.payload)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    async fn peek(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows: Vec<OutboxRow> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, subject, msg_id, payload FROM webhook_outbox ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db)?
        });
        Ok(rows
            .into_iter()
            .map(|r| OutboxEntry {
                id: r.id,
                message: DurableMessage {
                    subject: r.subject,
                    msg_id: r.msg_id,
                    payload: r.payload,
                },
            })
            .collect())
    }

    async fn remove(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM webhook_outbox WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        on_db!(&self.db, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(*id);
            }
            query.execute(pool).await.map_err(db)?;
        });
        Ok(())
    }

    async fn failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query("UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2")
                .bind(error)
                .bind(id)
                .execute(pool)
                .await
                .map_err(db)?;
        });
        Ok(())
    }

    async fn stats(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query_as("SELECT count(*), min(created_at) FROM webhook_outbox")
                .fetch_one(pool)
                .await
                .map_err(db)
        })
    }
}
