//! Tenant-scoped queries behind the admin API. Every function takes the tenant the
//! caller speaks for and never returns or changes another tenant's rows; secrets
//! are written, never read back.

use super::lifecycle::{PROVIDER_COLUMNS, health_from, provider_from};
use super::{PgStore, db};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use subkeeper_actors::domain::{
    ProviderHealth, ProviderId, ProviderKind, ProviderStatus, TenantId,
};
use subkeeper_actors::ports::StoreError;
use uuid::Uuid;

/// OAuth credentials as submitted by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredentials {
    /// `client_credentials` (app-only) or `refresh_token` (delegated).
    pub flow: String,
    /// Azure AD tenant id or domain the token is requested from (Microsoft;
    /// Google ignores it and may leave it out).
    #[serde(default)]
    pub authority_tenant: String,
    /// App registration's client id.
    pub client_id: String,
    /// Client secret (required for client_credentials).
    pub client_secret: Option<String>,
    /// Refresh token (required for refresh_token).
    pub refresh_token: Option<String>,
    /// OAuth scope; defaults per flow.
    pub scope: Option<String>,
}

impl NewCredentials {
    /// Checks the fields a provider of `kind` and the flow need; the error says
    /// what is missing.
    pub fn validate_for(&self, kind: ProviderKind) -> Result<(), String> {
        storable("flow", &self.flow)?;
        storable("authority_tenant", &self.authority_tenant)?;
        storable("client_id", &self.client_id)?;
        for (field, value) in [
            ("client_secret", &self.client_secret),
            ("refresh_token", &self.refresh_token),
            ("scope", &self.scope),
        ] {
            storable(field, value.as_deref().unwrap_or(""))?;
        }
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|v| v.trim().is_empty());
        if self.client_id.trim().is_empty() {
            return Err("credentials need client_id".into());
        }
        if kind.is_graph() && self.authority_tenant.trim().is_empty() {
            return Err(
                "Microsoft credentials need authority_tenant (the Azure AD tenant id or domain)"
                    .into(),
            );
        }
        if !kind.is_graph() && self.flow != "refresh_token" {
            return Err(format!(
                "provider kind '{kind}' needs flow refresh_token (a Google user's consent; client_credentials is Microsoft-only)"
            ));
        }
        match self.flow.as_str() {
            "client_credentials" if blank(&self.client_secret) => {
                Err("flow client_credentials needs client_secret".into())
            }
            "refresh_token" if blank(&self.refresh_token) => {
                Err("flow refresh_token needs refresh_token".into())
            }
            "client_credentials" | "refresh_token" => Ok(()),
            other => Err(format!(
                "unknown flow '{other}': use client_credentials or refresh_token"
            )),
        }
    }

    /// The authority stored for a provider of `kind`: Google has one token
    /// endpoint, so its rows say `google` unless the operator wrote something.
    fn authority(&self, kind: ProviderKind) -> &str {
        match self.authority_tenant.trim() {
            "" if !kind.is_graph() => "google",
            _ => &self.authority_tenant,
        }
    }

    /// The scope stored for a provider of `kind`. Google's refresh grant takes no
    /// scope (the user's consent fixed it), so Google rows store an empty one
    /// unless the operator gave one.
    fn scope(&self, kind: ProviderKind) -> String {
        self.scope.clone().unwrap_or_else(|| {
            if !kind.is_graph() {
                return String::new();
            }
            match self.flow.as_str() {
                "refresh_token" => "offline_access https://graph.microsoft.com/.default".into(),
                _ => "https://graph.microsoft.com/.default".into(),
            }
        })
    }
}

/// A provider as submitted by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Which API and resource family.
    pub kind: ProviderKind,
    /// Human name.
    pub display_name: String,
    /// The resource to watch, e.g. `users/{id}/messages`.
    pub resource: String,
    /// Starts supervised unless false.
    pub enabled: Option<bool>,
    /// OAuth credentials the adapter uses.
    pub credentials: NewCredentials,
}

impl NewProvider {
    /// Checks the submission; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        display_name(&self.display_name)?;
        storable("resource", &self.resource)?;
        let resource = self.resource.trim();
        let bad_resource = resource.is_empty()
            || self.resource.len() > 1024
            || self.resource.contains("://")
            || resource != self.resource;
        match self.kind {
            ProviderKind::GraphMail | ProviderKind::GraphCalendar if bad_resource => {
                return Err(
                    "resource must be a Graph resource path such as users/{id}/messages".into(),
                );
            }
            ProviderKind::GoogleCalendar if bad_resource || resource.contains('/') => {
                return Err(
                    "resource must be a Google calendar id such as team@example.com or primary"
                        .into(),
                );
            }
            ProviderKind::Gmail if bad_resource || !is_mailbox(resource) => {
                return Err(
                    "resource must be the Gmail mailbox address, e.g. someone@example.com".into(),
                );
            }
            _ => {}
        }
        self.credentials.validate_for(self.kind)
    }
}

/// Longest display name, in characters.
const MAX_DISPLAY_NAME: usize = 200;

/// Refuses what no Postgres text column can hold (a NUL character): the caller's
/// mistake, answered as such and naming the field, before anything is written —
/// not a database failure.
fn storable(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("{field} must not contain NUL characters"));
    }
    Ok(())
}

/// A display name: storable, not blank, at most [`MAX_DISPLAY_NAME`] characters
/// (not bytes: "é" is one).
fn display_name(name: &str) -> Result<(), String> {
    storable("display_name", name)?;
    if name.trim().is_empty() || name.chars().count() > MAX_DISPLAY_NAME {
        return Err(format!(
            "display_name must be 1-{MAX_DISPLAY_NAME} characters"
        ));
    }
    Ok(())
}

/// A plausible mailbox address: one `@` with something on each side, no spaces or
/// path characters (Gmail pushes name the mailbox by it).
fn is_mailbox(raw: &str) -> bool {
    matches!(raw.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !raw.contains(['/', ' ', '?', '#'])
}

/// Fields an operator may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// Enable or disable (a disabled provider's subscription is deleted at the provider).
    pub enabled: Option<bool>,
}

impl ProviderPatch {
    /// Checks the patch; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.display_name.as_deref().map_or(Ok(()), display_name)
    }
}

/// The live subscription as shown to operators (no clientState).
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    /// Provider-side id.
    pub id: String,
    /// Expiry the provider granted.
    pub expires_at: DateTime<Utc>,
    /// Gmail's `historyId` as of the last watch (Gmail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_id: Option<String>,
}

/// A provider as shown by the admin API (never its secrets).
#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    /// Provider id.
    pub id: ProviderId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Kind.
    pub kind: ProviderKind,
    /// Human name.
    pub display_name: String,
    /// Watched resource.
    pub resource: String,
    /// Supervised or not.
    pub enabled: bool,
    /// connected / error / needs_reauth / disabled.
    pub status: ProviderStatus,
    /// Actionable message while in error or needs_reauth.
    pub error_message: Option<String>,
    /// The live subscription.
    pub subscription: Option<SubscriptionView>,
    /// The health row, once the first attempt ran.
    pub health: Option<ProviderHealth>,
}

/// One renewal attempt as shown by the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// register / renew / recreate.
    pub attempt: String,
    /// registered / renewed / recreated / failed.
    pub action: String,
    /// Error class, if it failed.
    pub error_class: Option<String>,
    /// Actionable message, if it failed.
    pub error_message: Option<String>,
    /// Provider's HTTP status, if it answered.
    pub http_status: Option<i32>,
    /// Milliseconds the call took.
    pub duration_ms: i64,
    /// Expiry granted, on success.
    pub new_expiration: Option<DateTime<Utc>>,
}

/// SHA-256 of a request body, hex: the audit trail proves what was asked without
/// keeping secrets.
pub fn request_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PgStore {
    async fn audit(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        tenant: &TenantId,
        action: &str,
        target: &str,
        hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (tenant_id, at, action, target, request_hash) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant.as_str())
            .bind(self.clock.now())
            .bind(action)
            .bind(target)
            .bind(hash)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_credentials(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        tenant: &TenantId,
        c: &NewCredentials,
        kind: ProviderKind,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO oauth_credentials (id, tenant_id, flow, authority_tenant, client_id, client_secret, refresh_token, scope, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(id)
        .bind(tenant.as_str())
        .bind(&c.flow)
        .bind(c.authority(kind))
        .bind(&c.client_id)
        .bind(&c.client_secret)
        .bind(&c.refresh_token)
        .bind(c.scope(kind))
        .bind(self.clock.now())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(id)
    }

    /// Creates a provider with its credentials; returns its view.
    pub async fn create_provider(
        &self,
        tenant: &TenantId,
        new: &NewProvider,
        hash: &str,
    ) -> Result<ProviderView, StoreError> {
        let id = ProviderId::new();
        let now = self.clock.now();
        let enabled = new.enabled.unwrap_or(true);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let credentials_id = self
            .insert_credentials(&mut tx, tenant, &new.credentials, new.kind)
            .await?;
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
        self.audit(&mut tx, tenant, "provider.create", &id.to_string(), hash)
            .await?;
        tx.commit().await.map_err(db)?;
        self.provider_view(tenant, id)
            .await?
            .ok_or_else(|| StoreError::Unavailable("provider vanished after insert".into()))
    }

    /// Lists a tenant's providers (not deleted), oldest first.
    pub async fn list_providers(&self, tenant: &TenantId) -> Result<Vec<ProviderView>, StoreError> {
        self.views("p.tenant_id = $1", tenant, None).await
    }

    /// One provider of the tenant, or `None` (also for another tenant's provider).
    pub async fn provider_view(
        &self,
        tenant: &TenantId,
        id: ProviderId,
    ) -> Result<Option<ProviderView>, StoreError> {
        Ok(self
            .views("p.tenant_id = $1 AND p.id = $2", tenant, Some(id))
            .await?
            .pop())
    }

    async fn views(
        &self,
        filter: &str,
        tenant: &TenantId,
        id: Option<ProviderId>,
    ) -> Result<Vec<ProviderView>, StoreError> {
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS}, p.status, p.error_message, s.external_id AS sub_id, s.expires_at AS sub_expires_at, s.history_id AS sub_history_id, \
               h.provider_id AS h_provider_id, h.subscription_status, h.subscription_expires_at, h.last_renewal_attempt_at, \
               h.last_renewal_result, h.failure_reason, h.last_webhook_received_at, h.consecutive_failure_count, h.next_renewal_at, h.silent_since \
             FROM providers p \
             LEFT JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
             LEFT JOIN provider_health h ON h.provider_id = p.id \
             WHERE p.deleted_at IS NULL AND {filter} ORDER BY p.created_at, p.id"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
        if let Some(id) = id {
            query = query.bind(id.0);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter()
            .map(|row| {
                let provider = provider_from(row)?;
                let status: String = row.try_get("status").map_err(db)?;
                let sub_id: Option<String> = row.try_get("sub_id").map_err(db)?;
                let sub_expires: Option<DateTime<Utc>> =
                    row.try_get("sub_expires_at").map_err(db)?;
                let sub_history_id: Option<String> = row.try_get("sub_history_id").map_err(db)?;
                let has_health: Option<Uuid> = row.try_get("h_provider_id").map_err(db)?;
                let health = has_health
                    .map(|_| health_from(row, provider.id))
                    .transpose()?;
                Ok(ProviderView {
                    id: provider.id,
                    tenant: provider.tenant,
                    kind: provider.kind,
                    display_name: provider.display_name,
                    resource: provider.resource,
                    enabled: provider.enabled,
                    status: super::parse(&status)?,
                    error_message: row.try_get("error_message").map_err(db)?,
                    subscription: sub_id.zip(sub_expires).map(|(id, expires_at)| {
                        SubscriptionView {
                            id,
                            expires_at,
                            history_id: sub_history_id,
                        }
                    }),
                    health,
                })
            })
            .collect()
    }

    /// Applies a patch; `None` if the tenant has no such provider.
    pub async fn patch_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        patch: &ProviderPatch,
        hash: &str,
    ) -> Result<Option<ProviderView>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        .bind(self.clock.now())
        .bind(tenant.as_str())
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        self.audit(&mut tx, tenant, "provider.update", &id.to_string(), hash)
            .await?;
        tx.commit().await.map_err(db)?;
        self.provider_view(tenant, id).await
    }

    /// Soft-deletes a provider (the fleet deletes its subscription at the provider).
    /// Returns false if the tenant has no such provider.
    pub async fn delete_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let deleted = sqlx::query(
            "UPDATE providers SET deleted_at = $1, enabled = false, status = 'disabled', updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(self.clock.now())
        .bind(tenant.as_str())
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        self.audit(&mut tx, tenant, "provider.delete", &id.to_string(), hash)
            .await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Replaces a provider's credentials and bumps its credentials version, which
    /// takes it out of needs_reauth. Returns false if the tenant has no such provider.
    pub async fn replace_credentials(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        credentials: &NewCredentials,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM providers WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE")
            .bind(tenant.as_str())
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(kind) = kind else {
            return Ok(false);
        };
        let kind: ProviderKind = kind
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("provider kind: {e}")))?;
        let credentials_id = self
            .insert_credentials(&mut tx, tenant, credentials, kind)
            .await?;
        sqlx::query(
            "UPDATE providers SET credentials_id = $1, credentials_version = credentials_version + 1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4",
        )
        .bind(credentials_id)
        .bind(self.clock.now())
        .bind(tenant.as_str())
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        self.audit(
            &mut tx,
            tenant,
            "provider.credentials",
            &id.to_string(),
            hash,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// The latest attempts of one of the tenant's providers, newest first.
    pub async fn attempts(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        limit: i64,
    ) -> Result<Vec<AttemptView>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempted_at, attempt, action, error_class, error_message, http_status, duration_ms, new_expiration \
             FROM renewal_attempts WHERE tenant_id = $1 AND provider_id = $2 ORDER BY attempted_at DESC, id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(id.0)
        .bind(limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(AttemptView {
                    attempted_at: r.try_get("attempted_at").map_err(db)?,
                    attempt: r.try_get("attempt").map_err(db)?,
                    action: r.try_get("action").map_err(db)?,
                    error_class: r.try_get("error_class").map_err(db)?,
                    error_message: r.try_get("error_message").map_err(db)?,
                    http_status: r.try_get("http_status").map_err(db)?,
                    duration_ms: r.try_get("duration_ms").map_err(db)?,
                    new_expiration: r.try_get("new_expiration").map_err(db)?,
                })
            })
            .collect()
    }
}
