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
    AdminStore, AttemptView, Attention, AuditContext, AuditRecord, AuditView, Cursor, CursorKey,
    NewCredentials, NewProvider, OffboardingProgress, Page, PageRequest, ProviderPatch,
    ProviderView, RetainedTable, StoreError, SubscriptionView, TokenGrant, TokenView,
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
    ($tx:expr, $now:expr, $tenant:expr, $action:expr, $target:expr, $audit:expr) => {{
        let audit: &AuditContext = $audit;
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, at, actor, action, target, outcome, request_hash) \
             VALUES ($1, $2, $3, $4, $5, 'ok', $6)",
        )
        .bind($tenant.as_str())
        .bind($now)
        .bind(&audit.actor)
        .bind($action)
        .bind($target)
        .bind(&audit.request_hash)
        .execute(&mut *$tx)
        .await
        .map_err(db)?
    }};
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
    created_at: DateTime<Utc>,
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
            created_at: self.created_at,
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
    id: i64,
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

/// Which of a tenant's providers [`Store::views`] reads.
enum Which {
    /// One provider.
    One(ProviderId),
    /// A page, oldest first.
    Page(PageRequest),
}

impl Store {
    /// The views of the tenant's providers: one, or a page ordered by
    /// `(created_at, id)`. A page starts with a row-value comparison, which both
    /// databases answer with a range scan of `providers_tenant_created` (the
    /// `a > x OR (a = x AND …)` spelling made Postgres filter every earlier row).
    async fn views(
        &self,
        tenant: &TenantId,
        which: Which,
    ) -> Result<Vec<ProviderView>, StoreError> {
        let (filter, limit) = match &which {
            Which::One(_) => ("AND p.id = $2", ""),
            Which::Page(PageRequest { after: None, .. }) => ("", "LIMIT $2"),
            Which::Page(PageRequest { after: Some(_), .. }) => {
                ("AND (p.created_at, p.id) > ($2, $3)", "LIMIT $4")
            }
        };
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS}, p.created_at, p.status, p.error_message, s.external_id AS sub_id, s.expires_at AS sub_expires_at, \
               s.history_id AS sub_history_id, h.provider_id AS h_provider_id, {HEALTH_COLUMNS} \
             FROM providers p \
             LEFT JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
             LEFT JOIN provider_health h ON h.provider_id = p.id \
             WHERE p.deleted_at IS NULL AND p.tenant_id = $1 {filter} ORDER BY p.created_at, p.id {limit}"
        );
        let rows: Vec<ViewRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
            match &which {
                Which::One(id) => query = query.bind(id.0),
                Which::Page(page) => {
                    if let Some((at, key)) = page.after_uuid()? {
                        query = query.bind(at).bind(key);
                    }
                    query = query.bind(page.fetch());
                }
            }
            query.fetch_all(pool).await.map_err(db)?
        });
        rows.into_iter().map(ViewRow::view).collect()
    }
}

/// One row of `audit_log`.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    tenant_id: String,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    request_hash: String,
}

/// One row of `api_tokens`.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    tenant_id: String,
    name: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    fn view(self) -> Result<TokenView, StoreError> {
        Ok(TokenView {
            id: self.id,
            tenant: super::rows::tenant(&self.tenant_id)?,
            name: self.name,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// The tenant's tables, dependents first, in the order offboarding empties
/// them: `(table, key column)`. Audit rows go last, all but the offboarding's
/// own record.
const TENANT_TABLES: [(&str, &str); 6] = [
    ("renewal_attempts", "id"),
    ("provider_health", "provider_id"),
    ("subscriptions", "id"),
    ("providers", "id"),
    ("oauth_credentials", "id"),
    ("api_tokens", "id"),
];

/// The action of the one audit record an offboarding keeps.
const OFFBOARD_ACTION: &str = "tenant.offboard";

#[async_trait]
impl AdminStore for Store {
    async fn ping(&self) -> bool {
        Store::ping(self).await
    }

    async fn create_provider(
        &self,
        tenant: &TenantId,
        new: &NewProvider,
        audit: &AuditContext,
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
            audit!(tx, now, tenant, "provider.create", id.to_string(), audit);
            tx.commit().await.map_err(db)?;
        });
        self.provider_view(tenant, id)
            .await?
            .ok_or_else(|| StoreError::Unavailable("provider vanished after insert".into()))
    }

    async fn list_providers(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<ProviderView>, StoreError> {
        let rows = self.views(tenant, Which::Page(*page)).await?;
        Ok(Page::from_rows(rows, page, |v| Cursor {
            at: v.created_at,
            key: CursorKey::Uuid(v.id.0),
        }))
    }

    async fn provider_view(
        &self,
        tenant: &TenantId,
        id: ProviderId,
    ) -> Result<Option<ProviderView>, StoreError> {
        Ok(self.views(tenant, Which::One(id)).await?.pop())
    }

    async fn patch_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        patch: &ProviderPatch,
        audit: &AuditContext,
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
                audit!(tx, now, tenant, "provider.update", id.to_string(), audit);
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
        audit: &AuditContext,
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
            audit!(tx, now, tenant, "provider.delete", id.to_string(), audit);
            tx.commit().await.map_err(db)?;
        });
        Ok(true)
    }

    async fn replace_credentials(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        credentials: &NewCredentials,
        audit: &AuditContext,
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
            audit!(tx, now, tenant, "provider.credentials", id.to_string(), audit);
            tx.commit().await.map_err(db)?;
        });
        Ok(true)
    }

    async fn attempts(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        page: &PageRequest,
    ) -> Result<Page<AttemptView>, StoreError> {
        let after = page.after_seq()?;
        let (filter, limit) = match after {
            Some(_) => ("AND (attempted_at, id) < ($3, $4)", "$5"),
            None => ("", "$3"),
        };
        let sql = format!(
            "SELECT id, attempted_at, attempt, action, error_class, error_message, http_status, duration_ms, new_expiration \
             FROM renewal_attempts WHERE tenant_id = $1 AND provider_id = $2 {filter} \
             ORDER BY attempted_at DESC, id DESC LIMIT {limit}"
        );
        let rows: Vec<AttemptRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .bind(id.0);
            if let Some((at, seq)) = after {
                query = query.bind(at).bind(seq);
            }
            query.bind(page.fetch()).fetch_all(pool).await.map_err(db)?
        });
        let views = rows
            .into_iter()
            .map(|r| AttemptView {
                id: r.id,
                attempted_at: r.attempted_at,
                attempt: r.attempt,
                action: r.action,
                error_class: r.error_class,
                error_message: r.error_message,
                http_status: r.http_status,
                duration_ms: r.duration_ms,
                new_expiration: r.new_expiration,
            })
            .collect();
        Ok(Page::from_rows(views, page, |v| Cursor {
            at: v.attempted_at,
            key: CursorKey::Seq(v.id),
        }))
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
    async fn record_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO audit_log (tenant_id, at, actor, action, target, outcome, request_hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(record.tenant.as_str())
            .bind(now)
            .bind(&record.actor)
            .bind(&record.action)
            .bind(&record.target)
            .bind(&record.outcome)
            .bind(&record.request_hash)
            .execute(pool)
            .await
            .map_err(db)?;
        });
        Ok(())
    }

    async fn audit_log(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<AuditView>, StoreError> {
        let after = page.after_seq()?;
        let (filter, limit) = match after {
            Some(_) => ("AND (at, id) < ($2, $3)", "$4"),
            None => ("", "$2"),
        };
        let sql = format!(
            "SELECT id, at, tenant_id, actor, action, target, outcome, request_hash FROM audit_log \
             WHERE tenant_id = $1 {filter} ORDER BY at DESC, id DESC LIMIT {limit}"
        );
        let rows: Vec<AuditRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
            if let Some((at, seq)) = after {
                query = query.bind(at).bind(seq);
            }
            query.bind(page.fetch()).fetch_all(pool).await.map_err(db)?
        });
        let views = rows
            .into_iter()
            .map(|r| AuditView {
                id: r.id,
                at: r.at,
                tenant: r.tenant_id,
                actor: r.actor,
                action: r.action,
                target: r.target,
                outcome: r.outcome,
                request_hash: r.request_hash,
            })
            .collect();
        Ok(Page::from_rows(views, page, |v| Cursor {
            at: v.at,
            key: CursorKey::Seq(v.id),
        }))
    }

    async fn create_token(
        &self,
        tenant: &TenantId,
        name: &str,
        token_hash: &str,
        audit: &AuditContext,
    ) -> Result<TokenView, StoreError> {
        let id = Uuid::new_v4();
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            sqlx::query(
                "INSERT INTO api_tokens (id, tenant_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(tenant.as_str())
            .bind(name)
            .bind(token_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            audit!(tx, now, tenant, "token.create", id.to_string(), audit);
            tx.commit().await.map_err(db)?;
        });
        Ok(TokenView {
            id,
            tenant: tenant.clone(),
            name: name.to_owned(),
            created_at: now,
            revoked_at: None,
        })
    }

    async fn tokens(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<TokenView>, StoreError> {
        let after = page.after_uuid()?;
        // $1 is the tenant or NULL for all of them.
        let (filter, limit) = match after {
            Some(_) => ("AND (created_at, id) > ($2, $3)", "$4"),
            None => ("", "$2"),
        };
        let sql = format!(
            "SELECT id, tenant_id, name, created_at, revoked_at FROM api_tokens \
             WHERE ($1 IS NULL OR tenant_id = $1) {filter} ORDER BY created_at, id LIMIT {limit}"
        );
        let rows: Vec<TokenRow> = on_db!(&self.db, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(tenant.map(TenantId::as_str));
            if let Some((at, key)) = after {
                query = query.bind(at).bind(key);
            }
            query.bind(page.fetch()).fetch_all(pool).await.map_err(db)?
        });
        let views = rows
            .into_iter()
            .map(TokenRow::view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(views, page, |v| Cursor {
            at: v.created_at,
            key: CursorKey::Uuid(v.id),
        }))
    }

    async fn revoke_token(
        &self,
        id: Uuid,
        audit: &AuditContext,
    ) -> Result<Option<TokenView>, StoreError> {
        let now = self.clock.now();
        let row: Option<TokenRow> = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let revoked = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            let row: Option<TokenRow> = sqlx::query_as(
                "SELECT id, tenant_id, name, created_at, revoked_at FROM api_tokens WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let (Some(row), true) = (&row, revoked > 0) {
                let tenant = super::rows::tenant(&row.tenant_id)?;
                audit!(tx, now, tenant, "token.revoke", id.to_string(), audit);
            }
            tx.commit().await.map_err(db)?;
            row
        });
        row.map(TokenRow::view).transpose()
    }

    async fn token_grant(&self, token_hash: &str) -> Result<Option<TokenGrant>, StoreError> {
        let row: Option<(Uuid, String)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, tenant_id FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .map_err(db)?
        });
        row.map(|(id, tenant)| {
            Ok(TokenGrant {
                id,
                tenant: super::rows::tenant(&tenant)?,
            })
        })
        .transpose()
    }

    async fn begin_offboarding(
        &self,
        tenant: &TenantId,
        audit: &AuditContext,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            sqlx::query(
                "INSERT INTO tenant_offboardings (tenant_id, requested_at, actor) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET finished_at = NULL",
            )
            .bind(tenant.as_str())
            .bind(now)
            .bind(&audit.actor)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            // One record of it, however often it is asked for or resumed: a
            // repeat reopens the record it left.
            let reopened = sqlx::query(
                "UPDATE audit_log SET outcome = 'in_progress' WHERE tenant_id = $1 AND action = $2",
            )
            .bind(tenant.as_str())
            .bind(OFFBOARD_ACTION)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if reopened == 0 {
                sqlx::query(
                    "INSERT INTO audit_log (tenant_id, at, actor, action, target, outcome, request_hash) \
                     VALUES ($1, $2, $3, $4, $1, 'in_progress', $5)",
                )
                .bind(tenant.as_str())
                .bind(now)
                .bind(&audit.actor)
                .bind(OFFBOARD_ACTION)
                .bind(&audit.request_hash)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
        });
        Ok(())
    }

    async fn pending_offboardings(&self) -> Result<Vec<TenantId>, StoreError> {
        let rows: Vec<String> = on_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT tenant_id FROM tenant_offboardings WHERE finished_at IS NULL ORDER BY requested_at",
            )
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        rows.iter().map(|t| super::rows::tenant(t)).collect()
    }

    async fn offboard_step(
        &self,
        tenant: &TenantId,
        batch: u32,
    ) -> Result<OffboardingProgress, StoreError> {
        let now = self.clock.now();
        let batch = i64::from(batch.max(1));
        let mut progress = OffboardingProgress {
            providers_retired: 0,
            subscriptions_pending: 0,
            rows_removed: 0,
            finished: false,
        };
        on_db!(&self.db, pool => {
            // 1. Retire the providers still supervised, as a single delete does:
            // the fleet deletes their subscriptions at the providers.
            progress.providers_retired = sqlx::query(
                "UPDATE providers SET deleted_at = $1, enabled = false, status = 'disabled', updated_at = $1 \
                 WHERE id IN (SELECT id FROM providers WHERE tenant_id = $2 AND deleted_at IS NULL LIMIT $3)",
            )
            .bind(now)
            .bind(tenant.as_str())
            .bind(batch)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
            if progress.providers_retired > 0 {
                return Ok(progress);
            }
            // 2. Wait for the subscriptions to be gone at the providers.
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM subscriptions WHERE tenant_id = $1 AND state = 'active'",
            )
            .bind(tenant.as_str())
            .fetch_one(pool)
            .await
            .map_err(db)?;
            progress.subscriptions_pending = u64::try_from(pending).unwrap_or(0);
            if pending > 0 {
                return Ok(progress);
            }
            // 3. Remove the rows, dependents first, one bounded batch per table
            // and statement (short transactions, no long locks).
            for (table, key) in TENANT_TABLES {
                let sql = format!(
                    "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE tenant_id = $1 LIMIT $2)"
                );
                let removed = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(batch)
                    .execute(pool)
                    .await
                    .map_err(db)?
                    .rows_affected();
                if removed > 0 {
                    progress.rows_removed = removed;
                    return Ok(progress);
                }
            }
            progress.rows_removed = sqlx::query(
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE tenant_id = $1 AND action <> $2 LIMIT $3)",
            )
            .bind(tenant.as_str())
            .bind(OFFBOARD_ACTION)
            .bind(batch)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
            if progress.rows_removed > 0 {
                return Ok(progress);
            }
            // 4. Done: the one record says so.
            let mut tx = pool.begin_write().await.map_err(db)?;
            sqlx::query("UPDATE tenant_offboardings SET finished_at = $1 WHERE tenant_id = $2")
                .bind(now)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(
                "UPDATE audit_log SET outcome = 'ok' WHERE tenant_id = $1 AND action = $2 AND outcome = 'in_progress'",
            )
            .bind(tenant.as_str())
            .bind(OFFBOARD_ACTION)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            progress.finished = true;
        });
        Ok(progress)
    }

    async fn purge_before(
        &self,
        table: RetainedTable,
        before: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        // (table, its time column, its key)
        let (table, at, key) = match table {
            RetainedTable::Attempts => ("renewal_attempts", "attempted_at", "id"),
            RetainedTable::Audit => ("audit_log", "at", "id"),
            RetainedTable::Deliveries => ("deliveries", "received_at", "id"),
            RetainedTable::Sessions => ("page_sessions", "expires_at", "id_hash"),
        };
        // The oldest first, by the (time, key) index, a bounded batch per
        // statement: each delete is its own short transaction.
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {at} < $1 ORDER BY {at}, {key} LIMIT $2)"
        );
        on_db!(&self.db, pool => {
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(before)
                .bind(i64::from(batch.max(1)))
                .execute(pool)
                .await
                .map_err(db)?
                .rows_affected())
        })
    }
}
