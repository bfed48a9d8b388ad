//! `LifecycleStore` on Postgres: what the supervisors and the fleet read and write.

use super::{PgStore, db, parse};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use subkeeper_actors::domain::{
    HealthState, Provider, ProviderHealth, ProviderId, Subscription, TenantId,
};
use subkeeper_actors::ports::{AttemptRecord, LifecycleStore, ProviderState, StoreError};

/// Columns of `providers` that make a [`Provider`], prefixed `p.`.
pub(super) const PROVIDER_COLUMNS: &str = "p.id, p.tenant_id, p.kind, p.display_name, p.resource, p.credentials_id, p.enabled, p.credentials_version";

/// Columns of `subscriptions` that make a [`Subscription`], prefixed `s.`.
const SUBSCRIPTION_COLUMNS: &str = "s.provider_id, s.external_id, s.resource_id, s.client_state, s.expires_at, s.created_at, s.renewed_at, s.history_id";

pub(super) fn provider_from(row: &PgRow) -> Result<Provider, StoreError> {
    let tenant: String = row.try_get("tenant_id").map_err(db)?;
    let kind: String = row.try_get("kind").map_err(db)?;
    Ok(Provider {
        id: ProviderId(row.try_get("id").map_err(db)?),
        tenant: TenantId::parse(&tenant).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        kind: parse(&kind)?,
        display_name: row.try_get("display_name").map_err(db)?,
        resource: row.try_get("resource").map_err(db)?,
        credentials_id: row.try_get("credentials_id").map_err(db)?,
        enabled: row.try_get("enabled").map_err(db)?,
        credentials_version: row.try_get("credentials_version").map_err(db)?,
    })
}

fn subscription_from(row: &PgRow) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        provider_id: ProviderId(row.try_get("provider_id").map_err(db)?),
        external_id: row.try_get("external_id").map_err(db)?,
        resource_id: row.try_get("resource_id").map_err(db)?,
        client_state: row.try_get("client_state").map_err(db)?,
        expires_at: row.try_get("expires_at").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        renewed_at: row.try_get("renewed_at").map_err(db)?,
        history_id: row.try_get("history_id").map_err(db)?,
    })
}

pub(super) fn health_from(row: &PgRow, provider: ProviderId) -> Result<ProviderHealth, StoreError> {
    let status: String = row.try_get("subscription_status").map_err(db)?;
    let last: Option<String> = row.try_get("last_renewal_result").map_err(db)?;
    let failures: i32 = row.try_get("consecutive_failure_count").map_err(db)?;
    Ok(ProviderHealth {
        provider_id: provider,
        subscription_status: parse(&status)?,
        subscription_expires_at: row.try_get("subscription_expires_at").map_err(db)?,
        last_renewal_attempt_at: row.try_get("last_renewal_attempt_at").map_err(db)?,
        last_renewal_result: last.as_deref().map(parse).transpose()?,
        failure_reason: row.try_get("failure_reason").map_err(db)?,
        last_webhook_received_at: row.try_get("last_webhook_received_at").map_err(db)?,
        consecutive_failure_count: u32::try_from(failures).unwrap_or(0),
        next_renewal_at: row.try_get("next_renewal_at").map_err(db)?,
        silent_since: row.try_get("silent_since").map_err(db)?,
    })
}

#[async_trait]
impl LifecycleStore for PgStore {
    async fn owned_providers(&self) -> Result<Vec<Provider>, StoreError> {
        // Ownership seam: today this instance owns every enabled provider.
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers p WHERE p.enabled AND p.deleted_at IS NULL"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(provider_from).collect()
    }

    async fn retired_with_subscription(&self) -> Result<Vec<(Provider, Subscription)>, StoreError> {
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS}, {SUBSCRIPTION_COLUMNS} FROM providers p \
             JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
             WHERE NOT p.enabled OR p.deleted_at IS NOT NULL"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((provider_from(r)?, subscription_from(r)?)))
            .collect()
    }

    async fn provider_state(&self, provider: ProviderId) -> Result<ProviderState, StoreError> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.provider_id = $1 AND s.state = 'active'"
        );
        let subscription = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(provider.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(subscription_from)
            .transpose()?;
        let health = sqlx::query("SELECT * FROM provider_health WHERE provider_id = $1")
            .bind(provider.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(|row| health_from(row, provider))
            .transpose()?;
        let had_subscription = subscription.is_some()
            || sqlx::query(
                "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE provider_id = $1) AS had",
            )
            .bind(provider.0)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get::<bool, _>("had")
            .map_err(db)?;
        Ok(ProviderState {
            subscription,
            health,
            had_subscription,
        })
    }

    async fn record_attempt(&self, record: &AttemptRecord) -> Result<(), StoreError> {
        let r = &record.result;
        let h = &record.health;
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db)?;

        if let Some(old) = &record.replaced {
            // Superseded ids stay routable for late notifications.
            let state = if record.subscription.is_some() {
                "replaced"
            } else {
                "gone"
            };
            sqlx::query(
                "UPDATE subscriptions SET state = $1, retired_at = $2 \
                 WHERE provider_id = $3 AND external_id = $4 AND state = 'active'",
            )
            .bind(state)
            .bind(now)
            .bind(r.provider_id.0)
            .bind(&old.external_id)
            .execute(&mut *tx)
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
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "INSERT INTO subscriptions \
                   (provider_id, tenant_id, resource, external_id, resource_id, client_state, expires_at, created_at, renewed_at, history_id, state) \
                 SELECT $1, p.tenant_id, p.resource, $2, $3, $4, $5, $6, $7, $8, 'active' FROM providers p WHERE p.id = $1 \
                 ON CONFLICT (external_id) DO UPDATE SET \
                   expires_at = EXCLUDED.expires_at, renewed_at = EXCLUDED.renewed_at, \
                   resource_id = EXCLUDED.resource_id, \
                   history_id = COALESCE(EXCLUDED.history_id, subscriptions.history_id), \
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
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }

        sqlx::query(
            "INSERT INTO provider_health \
               (provider_id, tenant_id, subscription_status, subscription_expires_at, last_renewal_attempt_at, \
                last_renewal_result, failure_reason, consecutive_failure_count, next_renewal_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (provider_id) DO UPDATE SET \
               subscription_status = EXCLUDED.subscription_status, \
               subscription_expires_at = EXCLUDED.subscription_expires_at, \
               last_renewal_attempt_at = EXCLUDED.last_renewal_attempt_at, \
               last_renewal_result = EXCLUDED.last_renewal_result, \
               failure_reason = EXCLUDED.failure_reason, \
               consecutive_failure_count = EXCLUDED.consecutive_failure_count, \
               next_renewal_at = EXCLUDED.next_renewal_at, \
               updated_at = EXCLUDED.updated_at",
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
        .execute(&mut *tx)
        .await
        .map_err(db)?;

        let status = h.subscription_status.provider_status();
        let error_message = match h.subscription_status {
            HealthState::Error | HealthState::NeedsReauth => h.failure_reason.clone(),
            _ => None,
        };
        sqlx::query(
            "UPDATE providers SET status = $1, error_message = $2, updated_at = $3 \
             WHERE id = $4 AND enabled AND deleted_at IS NULL",
        )
        .bind(status.as_str())
        .bind(error_message)
        .bind(now)
        .bind(r.provider_id.0)
        .execute(&mut *tx)
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
        .execute(&mut *tx)
        .await
        .map_err(db)?;

        tx.commit().await.map_err(db)
    }

    async fn subscription_deleted(
        &self,
        provider: ProviderId,
        external_id: &str,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "UPDATE subscriptions SET state = 'deleted', retired_at = $1 WHERE provider_id = $2 AND external_id = $3",
        )
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
    }
}
