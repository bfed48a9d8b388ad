//! `AdminStore`: the tenant-scoped queries behind the admin API and the operator
//! CLI. Every function takes the tenant the caller speaks for and never returns
//! or changes another tenant's rows; secrets are written, never read back; every
//! change leaves an audit row in the same transaction.

use super::rows::{HEALTH_COLUMNS, HealthRow, PROVIDER_COLUMNS, ProviderRow};
use super::{Dialect as _, Store, db, on_db, parse};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId};
use subkeeper_actors::ports::{
    AdminStore, AttemptView, Attention, NewCredentials, NewProvider, ProviderPatch, ProviderView,
    StoreError, SubscriptionView,
};
use uuid::Uuid;

/// SHA-256 of a request body, hex: the audit trail proves what was asked without
/// keeping secrets.
pub fn request_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends an audit row inside the transaction `$tx`.
macro_rules! audit {
    ($tx:expr, $now:expr, $tenant:expr, $action:expr, $target:expr, $hash:expr) => {
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, at, action, target, request_hash) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($tenant.as_str())
        .bind($now)
        .bind($action)
        .bind($target)
        .bind($hash)
        .execute(&mut *$tx)
        .await
        .map_err(db)?
    };
}

/// Inserts a credentials row — its secrets sealed — inside the transaction
/// `$tx` and evaluates to its id.
macro_rules! insert_credentials {
    ($store:expr, $tx:expr, $now:expr, $tenant:expr, $credentials:expr, $kind:expr) => {{
        let id = Uuid::new_v4();
        let c: &NewCredentials = $credentials;
        let (client_secret, client_secret_key) =
            $store.seal(c.client_secret.as_deref(), id, "client_secret")?;
        let (refresh_token, refresh_token_key) =
            $store.seal(c.refresh_token.as_deref(), id, "refresh_token")?;
        sqlx::query(
            "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, client_secret_key, \
               refresh_token, refresh_token_key, scope, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(id)
        .bind($tenant.as_str())
        .bind(&c.flow)
        .bind(c.authority($kind))
        .bind(&c.client_id)
        .bind(client_secret)
        .bind(client_secret_key)
        .bind(refresh_token)
        .bind(refresh_token_key)
        .bind(c.scope($kind))
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(db)?;
        id
    }};
}

/// A provider with its live subscription and health row, as the admin API shows
/// it.
#[derive(sqlx::FromRow)]
struct ViewRow {
    #[sqlx(flatten)]
    provider: ProviderRow,
    status: String,
    error_message: Option<String>,
    sub_id: Option<String>,
    sub_expires_at: Option<DateTime<Utc>>,
    sub_history_id: Option<String>,
    h_provider_id: Option<Uuid>,
    #[sqlx(flatten)]
    health: OptionalHealth,
}

/// The health columns of a LEFT JOIN: all NULL when the provider has no row yet.
#[derive(sqlx::FromRow)]
struct OptionalHealth {
    subscription_status: Option<String>,
    subscription_expires_at: Option<DateTime<Utc>>,
    last_renewal_attempt_at: Option<DateTime<Utc>>,
    last_renewal_result: Option<String>,
    failure_reason: Option<String>,
    last_webhook_received_at: Option<DateTime<Utc>>,
    consecutive_failure_count: Option<i32>,
    next_renewal_at: Option<DateTime<Utc>>,
    silent_since: Option<DateTime<Utc>>,
}

impl ViewRow {
    fn view(self) -> Result<ProviderView, StoreError> {
        let provider = self.provider.provider()?;
        let health = match (self.h_provider_id, self.health) {
            (Some(_), h) => Some(
                HealthRow {
                    subscription_status: h.subscription_status.unwrap_or_default(),
                    subscription_expires_at: h.subscription_expires_at,
                    last_renewal_attempt_at: h.last_renewal_attempt_at,
                    last_renewal_result: h.last_renewal_result,
                    failure_reason: h.failure_reason,
                    last_webhook_received_at: h.last_webhook_received_at,
                    consecutive_failure_count: h.consecutive_failure_count.unwrap_or(0),
                    next_renewal_at: h.next_renewal_at,
                    silent_since: h.silent_since,
                }
                .health(provider.id)?,
            ),
            (None, _) => None,
        };
        Ok(ProviderView {
            id: provider.id,
            tenant: provider.tenant,
            kind: provider.kind,
            display_name: provider.display_name,
            resource: provider.resource,
            enabled: provider.enabled,
            status: parse(&self.status)?,
            error_message: self.error_message,
            subscription: self
                .sub_id
                .zip(self.sub_expires_at)
                .map(|(id, expires_at)| SubscriptionView {
                    id,
                    expires_at,
                    history_id: self.sub_history_id,
                }),
            health,
        })
    }
}

/// One row of `renewal_attempts` as the admin API shows it.
#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempted_at: DateTime<Utc>,
    attempt: String,
    action: String,
    error_class: Option<String>,
    error_message: Option<String>,
    http_status: Option<i32>,
    duration_ms: i64,
    new_expiration: Option<DateTime<Utc>>,
}

/// One row of [`AdminStore::needing_attention`].
#[derive(sqlx::FromRow)]
struct AttentionRow {
    tenant_id: String,
    id: Uuid,
    display_name: String,
    status: String,
    error_message: Option<String>,
}

impl Store {
    /// The views of the tenant's providers matching `filter` (SQL over `p.`,
    /// `$1` the tenant, `$2` the provider when given), oldest first.
    async fn views(
        &self,
        filter: &str,
        tenant: &TenantId,
        id: Option<ProviderId>,
    ) -> Result<Vec<ProviderView>, StoreError> {
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS}, p.status, p.error_message, s.external_id AS sub_id, s.expires_at AS sub_expires_at, \
               s.history_id AS sub_history_id, h.provider_id AS h_provider_id, {HEALTH_COLUMNS} \
             FROM providers p \
             LEFT JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
             LEFT JOIN provider_health h ON h.provider_id = p.id \
             WHERE p.deleted_at IS NULL AND {filter} ORDER BY p.created_at, p.id"
        );
        let rows: Vec<ViewRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
            if let Some(id) = id {
                query = query.bind(id.0);
            }
            query.fetch_all(pool).await.map_err(db)?
        });
        rows.into_iter().map(ViewRow::view).collect()
    }
}

#[async_trait]
impl AdminStore for Store {
    async fn ping(&self) -> bool {
        Store::ping(self).await
    }

    async fn create_provider(
        &self,
        tenant: &TenantId,
        new: &NewProvider,
        hash: &str,
    ) -> Result<ProviderView, StoreError> {
        let id = ProviderId::new();
        let now = self.clock.now();
        let enabled = new.enabled.unwrap_or(true);
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let credentials_id = insert_credentials!(self, tx, now, tenant, &new.credentials, new.kind);
            sqlx::query(
                "INSERT INTO providers (id, tenant_id, kind, display_name, resource, credentials_id, enabled, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(id.0)
            .bind(tenant.as_str())
            .bind(new.kind.as_str())
            .bind(new.display_name.trim())
            .bind(new.resource.trim())
            .bind(credentials_id)
            .bind(enabled)
            .bind(if enabled { "connected" } else { "disabled" })
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            audit!(tx, now, tenant, "provider.create", id.to_string(), hash);
            tx.commit().await.map_err(db)?;
        });
        self.provider_view(tenant, id)
            .await?
            .ok_or_else(|| StoreError::Unavailable("provider vanished after insert".into()))
    }

    async fn list_providers(&self, tenant: &TenantId) -> Result<Vec<ProviderView>, StoreError> {
        self.views("p.tenant_id = $1", tenant, None).await
    }

    async fn provider_view(
        &self,
        tenant: &TenantId,
        id: ProviderId,
    ) -> Result<Option<ProviderView>, StoreError> {
        Ok(self
            .views("p.tenant_id = $1 AND p.id = $2", tenant, Some(id))
            .await?
            .pop())
    }

    async fn patch_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        patch: &ProviderPatch,
        hash: &str,
    ) -> Result<Option<ProviderView>, StoreError> {
        let now = self.clock.now();
        let updated = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let updated = sqlx::query(
                "UPDATE providers SET \
                   display_name = COALESCE($1, display_name), \
                   enabled = COALESCE($2, enabled), \
                   status = CASE WHEN $2 IS NULL THEN status WHEN $2 THEN 'connected' ELSE 'disabled' END, \
                   updated_at = $3 \
                 WHERE tenant_id = $4 AND id = $5 AND deleted_at IS NULL",
            )
            .bind(patch.display_name.as_deref().map(str::trim))
            .bind(patch.enabled)
            .bind(now)
            .bind(tenant.as_str())
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if updated > 0 {
                audit!(tx, now, tenant, "provider.update", id.to_string(), hash);
                tx.commit().await.map_err(db)?;
            }
            updated
        });
        if updated == 0 {
            return Ok(None);
        }
        self.provider_view(tenant, id).await
    }

    async fn delete_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let deleted = sqlx::query(
                "UPDATE providers SET deleted_at = $1, enabled = false, status = 'disabled', updated_at = $1 \
                 WHERE tenant_id = $2 AND id = $3 AND deleted_at IS NULL",
            )
            .bind(now)
            .bind(tenant.as_str())
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            audit!(tx, now, tenant, "provider.delete", id.to_string(), hash);
            tx.commit().await.map_err(db)?;
        });
        Ok(true)
    }

    async fn replace_credentials(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        credentials: &NewCredentials,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let sql = format!(
                "SELECT kind FROM providers WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL {}",
                pool.for_update()
            );
            let kind: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            let Some(kind) = kind else {
                return Ok(false);
            };
            let kind: ProviderKind = parse(&kind)?;
            let credentials_id = insert_credentials!(self, tx, now, tenant, credentials, kind);
            sqlx::query(
                "UPDATE providers SET credentials_id = $1, credentials_version = credentials_version + 1, updated_at = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(credentials_id)
            .bind(now)
            .bind(tenant.as_str())
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            audit!(tx, now, tenant, "provider.credentials", id.to_string(), hash);
            tx.commit().await.map_err(db)?;
        });
        Ok(true)
    }

    async fn attempts(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        limit: i64,
    ) -> Result<Vec<AttemptView>, StoreError> {
        let rows: Vec<AttemptRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT attempted_at, attempt, action, error_class, error_message, http_status, duration_ms, new_expiration \
                 FROM renewal_attempts WHERE tenant_id = $1 AND provider_id = $2 ORDER BY attempted_at DESC, id DESC LIMIT $3",
            )
            .bind(tenant.as_str())
            .bind(id.0)
            .bind(limit.clamp(1, 500))
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        Ok(rows
            .into_iter()
            .map(|r| AttemptView {
                attempted_at: r.attempted_at,
                attempt: r.attempt,
                action: r.action,
                error_class: r.error_class,
                error_message: r.error_message,
                http_status: r.http_status,
                duration_ms: r.duration_ms,
                new_expiration: r.new_expiration,
            })
            .collect())
    }

    async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT status, count(*) AS n FROM providers WHERE deleted_at IS NULL GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await
            .map_err(db)
        })
    }

    async fn needing_attention(&self) -> Result<Vec<Attention>, StoreError> {
        let rows: Vec<AttentionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT tenant_id, id, display_name, status, error_message FROM providers \
                 WHERE deleted_at IS NULL AND status IN ('error', 'needs_reauth') ORDER BY tenant_id, display_name",
            )
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        Ok(rows
            .into_iter()
            .map(|r| Attention {
                tenant: r.tenant_id,
                provider: ProviderId(r.id),
                display_name: r.display_name,
                status: r.status,
                error_message: r.error_message,
            })
            .collect())
    }
}
