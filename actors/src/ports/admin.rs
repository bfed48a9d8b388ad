//! The admin port: the tenant-scoped reads and writes behind the admin API and
//! the operator CLI, and the shapes they exchange. Every method takes the tenant
//! the caller speaks for and never returns or changes another tenant's rows;
//! secrets are written, never read back. Validation of what an operator submits
//! lives here too, so every store answers the same refusals.

use crate::domain::{ProviderHealth, ProviderId, ProviderKind, ProviderStatus, TenantId};
use crate::ports::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    pub fn authority(&self, kind: ProviderKind) -> &str {
        match self.authority_tenant.trim() {
            "" if !kind.is_graph() => "google",
            _ => &self.authority_tenant,
        }
    }

    /// The scope stored for a provider of `kind`. Google's refresh grant takes no
    /// scope (the user's consent fixed it), so Google rows store an empty one
    /// unless the operator gave one.
    pub fn scope(&self, kind: ProviderKind) -> String {
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

/// A provider that needs a human, for `subkeeper status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    /// Tenant.
    pub tenant: String,
    /// Provider id.
    pub provider: ProviderId,
    /// Display name.
    pub display_name: String,
    /// error or needs_reauth.
    pub status: String,
    /// The actionable message.
    pub error_message: Option<String>,
}

/// What the admin API and the operator CLI read and write. `hash` is the
/// SHA-256 of the request as received, kept in the audit trail instead of the
/// request (which may hold secrets).
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// True if the store answers a trivial query (readiness).
    async fn ping(&self) -> bool;

    /// Creates a provider with its credentials; returns its view.
    async fn create_provider(
        &self,
        tenant: &TenantId,
        new: &NewProvider,
        hash: &str,
    ) -> Result<ProviderView, StoreError>;

    /// Lists a tenant's providers (not deleted), oldest first.
    async fn list_providers(&self, tenant: &TenantId) -> Result<Vec<ProviderView>, StoreError>;

    /// One provider of the tenant, or `None` (also for another tenant's provider).
    async fn provider_view(
        &self,
        tenant: &TenantId,
        id: ProviderId,
    ) -> Result<Option<ProviderView>, StoreError>;

    /// Applies a patch; `None` if the tenant has no such provider.
    async fn patch_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        patch: &ProviderPatch,
        hash: &str,
    ) -> Result<Option<ProviderView>, StoreError>;

    /// Soft-deletes a provider (the fleet deletes its subscription at the
    /// provider). Returns false if the tenant has no such provider.
    async fn delete_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        hash: &str,
    ) -> Result<bool, StoreError>;

    /// Replaces a provider's credentials and bumps its credentials version, which
    /// takes it out of needs_reauth. Returns false if the tenant has no such
    /// provider.
    async fn replace_credentials(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        credentials: &NewCredentials,
        hash: &str,
    ) -> Result<bool, StoreError>;

    /// The latest `limit` attempts (1-500) of one of the tenant's providers,
    /// newest first.
    async fn attempts(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        limit: i64,
    ) -> Result<Vec<AttemptView>, StoreError>;

    /// Provider counts by status, across tenants (operator CLI only).
    async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Every provider in error or needs_reauth, across tenants (operator CLI only).
    async fn needing_attention(&self) -> Result<Vec<Attention>, StoreError>;
}
