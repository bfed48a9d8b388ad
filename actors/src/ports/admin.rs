//! The admin port: the tenant-scoped reads and writes behind the admin API and
//! the operator CLI, and the shapes they exchange. Every method takes the tenant
//! the caller speaks for and never returns or changes another tenant's rows;
//! secrets are written, never read back. Validation of what an operator submits
//! lives here too, so every store answers the same refusals.

use crate::domain::{ProviderHealth, ProviderId, ProviderKind, ProviderStatus, TenantId};
use crate::ports::StoreError;
use crate::ports::page::{Page, PageRequest};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// OAuth credentials as submitted by an operator.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// When it was created (the list's order and cursor).
    pub created_at: DateTime<Utc>,
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// The attempt's sequence id (its place in the provider's history).
    pub id: i64,
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

/// Who acted and what they asked, for the audit row a change leaves: the actor
/// is named by a token id (`token:<id>`), `admin` or `cli` — never by a token —
/// and the request by the SHA-256 of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// `admin`, `token:<uuid>`, `cli`, `session:<token uuid>`.
    pub actor: String,
    /// SHA-256 (hex) of the canonical request.
    pub request_hash: String,
}

/// An audit record written on its own (forced renewals, sync requests, token
/// changes, sign-ins, offboarding): what [`AdminStore::record_audit`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The tenant the action concerned.
    pub tenant: TenantId,
    /// Who acted (see [`AuditContext::actor`]).
    pub actor: String,
    /// What was done, `noun.verb`: `provider.renew`, `token.create`, `session.sign_in`…
    pub action: String,
    /// What it was done to (a provider id, a token id, the tenant).
    pub target: String,
    /// `ok`, or a short word for how it failed (`failed`, `refused`…).
    pub outcome: String,
    /// SHA-256 (hex) of the canonical request.
    pub request_hash: String,
}

/// One audit row as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    /// Sequence id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The tenant.
    pub tenant: String,
    /// Who (a token id, never a token).
    pub actor: String,
    /// What, `noun.verb`.
    pub action: String,
    /// To what.
    pub target: String,
    /// `ok` or how it failed.
    pub outcome: String,
    /// SHA-256 (hex) of the request.
    pub request_hash: String,
}

/// An API token as listed (its secret is shown once, at creation, and never kept).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    /// Token id (what the audit trail names).
    pub id: Uuid,
    /// The one tenant it may act for.
    pub tenant: TenantId,
    /// What the operator called it.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; revoked tokens authenticate nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a valid tenant token grants: acting for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// Token id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant: TenantId,
}

/// How far a tenant's offboarding got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OffboardingProgress {
    /// Providers retired by this step (soft-deleted: the fleet deletes their
    /// subscriptions at the providers).
    pub providers_retired: u64,
    /// Subscriptions still alive at a provider; rows wait until they are gone.
    pub subscriptions_pending: u64,
    /// Rows removed by this step, all tables.
    pub rows_removed: u64,
    /// True once nothing of the tenant is left but the offboarding's audit row.
    pub finished: bool,
}

/// The tables retention trims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedTable {
    /// `renewal_attempts`.
    Attempts,
    /// `audit_log`.
    Audit,
    /// `deliveries` (the delivery log), by `received_at`.
    Deliveries,
    /// `page_sessions` (status page sign-ins), by `expires_at`: a session goes
    /// once it has expired, whatever its age.
    Sessions,
}

impl RetainedTable {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attempts => "renewal_attempts",
            Self::Audit => "audit",
            Self::Deliveries => "deliveries",
            Self::Sessions => "page_sessions",
        }
    }
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
        audit: &AuditContext,
    ) -> Result<ProviderView, StoreError>;

    /// A page of a tenant's providers (not deleted), oldest first, ordered by
    /// `(created_at, id)`.
    async fn list_providers(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<ProviderView>, StoreError>;

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
        audit: &AuditContext,
    ) -> Result<Option<ProviderView>, StoreError>;

    /// Soft-deletes a provider (the fleet deletes its subscription at the
    /// provider). Returns false if the tenant has no such provider.
    async fn delete_provider(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        audit: &AuditContext,
    ) -> Result<bool, StoreError>;

    /// Replaces a provider's credentials and bumps its credentials version, which
    /// takes it out of needs_reauth. Returns false if the tenant has no such
    /// provider.
    async fn replace_credentials(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        credentials: &NewCredentials,
        audit: &AuditContext,
    ) -> Result<bool, StoreError>;

    /// A page of one of the tenant's providers' attempts, newest first, ordered
    /// by `(attempted_at, id)` descending.
    async fn attempts(
        &self,
        tenant: &TenantId,
        id: ProviderId,
        page: &PageRequest,
    ) -> Result<Page<AttemptView>, StoreError>;

    /// Provider counts by status, across tenants (operator CLI only).
    async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Every provider in error or needs_reauth, across tenants (operator CLI only).
    async fn needing_attention(&self) -> Result<Vec<Attention>, StoreError>;

    /// Appends one audit row (actions that change no row of their own: forced
    /// renewals, sync requests, sign-ins).
    async fn record_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;

    /// A page of the tenant's audit trail, newest first, ordered by `(at, id)`
    /// descending.
    async fn audit_log(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<AuditView>, StoreError>;

    /// Stores a new token of `tenant` by its hash (the token itself is never
    /// stored) and audits it.
    async fn create_token(
        &self,
        tenant: &TenantId,
        name: &str,
        token_hash: &str,
        audit: &AuditContext,
    ) -> Result<TokenView, StoreError>;

    /// A page of tokens (of one tenant, or all), oldest first, revoked ones
    /// included.
    async fn tokens(
        &self,
        tenant: Option<&TenantId>,
        page: &PageRequest,
    ) -> Result<Page<TokenView>, StoreError>;

    /// Revokes a token (idempotent) and audits it; `None` if there is no such
    /// token.
    async fn revoke_token(
        &self,
        id: Uuid,
        audit: &AuditContext,
    ) -> Result<Option<TokenView>, StoreError>;

    /// The grant of the live (not revoked) token with this hash, if any.
    async fn token_grant(&self, token_hash: &str) -> Result<Option<TokenGrant>, StoreError>;

    /// Starts (or restarts) offboarding `tenant`: records it, revokes its tokens
    /// and audits the request once. Idempotent; the work is done by
    /// [`AdminStore::offboard_step`].
    async fn begin_offboarding(
        &self,
        tenant: &TenantId,
        audit: &AuditContext,
    ) -> Result<(), StoreError>;

    /// Tenants whose offboarding has not finished (to resume after a restart).
    async fn pending_offboardings(&self) -> Result<Vec<TenantId>, StoreError>;

    /// One bounded step of offboarding `tenant`: retires up to `batch` of its
    /// providers, and once none of its subscriptions is left alive at a provider,
    /// removes up to `batch` rows per table, dependents first. Call until
    /// `finished`.
    async fn offboard_step(
        &self,
        tenant: &TenantId,
        batch: u32,
    ) -> Result<OffboardingProgress, StoreError>;

    /// Deletes up to `batch` rows of `table` older than `before`; the number
    /// removed (fewer than `batch`: nothing older is left).
    async fn purge_before(
        &self,
        table: RetainedTable,
        before: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError>;
}
