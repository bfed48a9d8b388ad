//! What webhook intake needs from Postgres: routing a provider-side subscription id
//! (or, for Gmail pushes, a mailbox address) to its provider, the Google providers
//! owed a periodic resync, and the outbox used while JetStream is unreachable. (Batched
//! "last webhook received" updates are the notification actor's, in
//! `notification.rs`.)

use super::{PgStore, db, parse};
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::HashMap;
use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId};
use subkeeper_actors::ports::StoreError;
use uuid::Uuid;

/// What became of a subscription row (`subscriptions.state`, a text column whose
/// CHECK constraint allows exactly these values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RouteState {
    /// The provider's live subscription.
    Active,
    /// Superseded by a newer subscription; still routable for late notifications.
    Replaced,
    /// Lost at the provider (404/410) before a replacement existed; still routable.
    Gone,
    /// Stopped by us (provider retired, channel rotated out): no longer accepted.
    Deleted,
}

/// Where a notification for a subscription id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The provider.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
    /// The secret the provider must echo.
    pub client_state: String,
    /// What became of the subscription; all but `Deleted` are still routable.
    pub state: RouteState,
    /// False once the provider is disabled or deleted.
    pub provider_enabled: bool,
}

impl Route {
    /// The route of a subscription or channel being created right now, known
    /// only in memory until its row is written: live, its provider enabled.
    pub fn in_creation(
        provider: ProviderId,
        tenant: TenantId,
        kind: ProviderKind,
        client_state: String,
    ) -> Self {
        Self {
            provider,
            tenant,
            kind,
            client_state,
            state: RouteState::Active,
            provider_enabled: true,
        }
    }

    /// The provider was disabled or deleted, or we deleted this subscription:
    /// notifications for it are dropped, however authentic.
    pub fn is_retired(&self) -> bool {
        !self.provider_enabled || self.state == RouteState::Deleted
    }
}

/// One row of [`PgStore::routes`], as Postgres returns it.
#[derive(sqlx::FromRow)]
struct RouteRow {
    /// The provider-side subscription id.
    external_id: String,
    /// The provider.
    provider_id: Uuid,
    /// Its tenant, checked by [`TenantId::parse`].
    tenant_id: String,
    /// Its kind, checked by [`ProviderKind`]'s `FromStr`.
    kind: String,
    /// The secret the provider must echo.
    client_state: String,
    /// What became of the subscription.
    state: RouteState,
    /// False once the provider is disabled or deleted.
    provider_enabled: bool,
}

/// A Gmail provider a Pub/Sub push for its mailbox goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRoute {
    /// The provider.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its live watch's id (`gmail:<mailbox>:<uuid>`).
    pub subscription_id: String,
}

/// A provider owed a periodic `resync_required` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncTarget {
    /// The provider.
    pub provider: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
}

/// One notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Row id.
    pub id: i64,
    /// NATS subject.
    pub subject: String,
    /// Nats-Msg-Id (dedup key).
    pub msg_id: String,
    /// Message body.
    pub payload: Vec<u8>,
}

impl PgStore {
    /// The route of a provider-side subscription id, if we ever created it.
    pub async fn route(&self, external_id: &str) -> Result<Option<Route>, StoreError> {
        let mut found = self.routes(&[external_id]).await?;
        Ok(found.remove(external_id))
    }

    /// The routes of the subscription ids we ever created among `external_ids`,
    /// in one query (a webhook request names many).
    pub async fn routes(
        &self,
        external_ids: &[&str],
    ) -> Result<HashMap<String, Route>, StoreError> {
        if external_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<RouteRow> = sqlx::query_as(
            "SELECT s.external_id, s.provider_id, s.tenant_id, p.kind, s.client_state, s.state, \
                    (p.enabled AND p.deleted_at IS NULL) AS provider_enabled \
             FROM subscriptions s JOIN providers p ON p.id = s.provider_id WHERE s.external_id = ANY($1)",
        )
        .bind(external_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                let route = Route {
                    provider: ProviderId(row.provider_id),
                    tenant: TenantId::parse(&row.tenant_id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    kind: parse(&row.kind)?,
                    client_state: row.client_state,
                    state: row.state,
                    provider_enabled: row.provider_enabled,
                };
                Ok((row.external_id, route))
            })
            .collect()
    }

    /// The enabled Gmail providers watching `mailbox` (case-insensitive) that have a
    /// live watch. Several tenants may watch one mailbox; each gets the push.
    pub async fn mailbox_routes(&self, mailbox: &str) -> Result<Vec<MailboxRoute>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.tenant_id, s.external_id \
             FROM providers p JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
             WHERE p.kind = 'gmail' AND lower(p.resource) = lower($1) \
               AND p.enabled AND p.deleted_at IS NULL",
        )
        .bind(mailbox)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let tenant: String = row.try_get("tenant_id").map_err(db)?;
                Ok(MailboxRoute {
                    provider: ProviderId(row.try_get("id").map_err(db)?),
                    tenant: TenantId::parse(&tenant)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    subscription_id: row.try_get("external_id").map_err(db)?,
                })
            })
            .collect()
    }

    /// Enabled Google providers (Calendar and Gmail) with a live subscription: the
    /// ones whose pushes may have been missed.
    pub async fn google_resync_targets(&self) -> Result<Vec<ResyncTarget>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.tenant_id, p.kind FROM providers p \
             WHERE p.kind IN ('google_calendar', 'gmail') AND p.enabled AND p.deleted_at IS NULL \
               AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.provider_id = p.id AND s.state = 'active')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let tenant: String = row.try_get("tenant_id").map_err(db)?;
                let kind: String = row.try_get("kind").map_err(db)?;
                Ok(ResyncTarget {
                    provider: ProviderId(row.try_get("id").map_err(db)?),
                    tenant: TenantId::parse(&tenant)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    kind: parse(&kind)?,
                })
            })
            .collect()
    }

    /// Stores notifications for the relay; an id already there is kept once.
    pub async fn outbox_push(
        &self,
        entries: &[(String, String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (subject, msg_id, payload) in entries {
            sqlx::query(
                "INSERT INTO webhook_outbox (subject, msg_id, payload, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (msg_id) DO NOTHING",
            )
            .bind(subject)
            .bind(msg_id)
            .bind(payload)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The oldest `limit` outbox entries.
    pub async fn outbox_peek(&self, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, subject, msg_id, payload FROM webhook_outbox ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get("id").map_err(db)?,
                    subject: r.try_get("subject").map_err(db)?,
                    msg_id: r.try_get("msg_id").map_err(db)?,
                    payload: r.try_get("payload").map_err(db)?,
                })
            })
            .collect()
    }

    /// Removes entries JetStream acknowledged.
    pub async fn outbox_remove(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Notes a failed relay attempt.
    pub async fn outbox_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2",
        )
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Depth and oldest entry time of the outbox.
    pub async fn outbox_stats(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row =
            sqlx::query("SELECT count(*) AS n, min(created_at) AS oldest FROM webhook_outbox")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok((
            row.try_get("n").map_err(db)?,
            row.try_get("oldest").map_err(db)?,
        ))
    }
}
