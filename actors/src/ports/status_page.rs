//! The status page's port: its provider list (every tenant for the admin, one
//! for a tenant token; the providers that need a human first; filtered and paged
//! server-side) and its sign-in sessions, stored by hash.

use crate::domain::{ProviderId, ProviderKind, ProviderStatus, TenantId};
use crate::ports::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where the status page's list continues: the part (0: needs a human, 1: the
/// rest) and the last row's `(created_at, id)` in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardCursor {
    /// 0 for the providers in error or needs_reauth, 1 for the others.
    pub part: u8,
    /// The last row's creation time.
    pub created_at: DateTime<Utc>,
    /// The last row's id.
    pub id: ProviderId,
}

/// What the list shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoardFilter {
    /// One tenant (a tenant session is always limited to its own).
    pub tenant: Option<TenantId>,
    /// One provider status.
    pub status: Option<ProviderStatus>,
}

/// One provider as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardRow {
    /// Provider id.
    pub id: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
    /// Human name.
    pub display_name: String,
    /// connected / error / needs_reauth / disabled (the words of `subkeeper status`).
    pub status: ProviderStatus,
    /// The actionable message while in error or needs_reauth.
    pub error_message: Option<String>,
    /// The live subscription's id and expiry.
    pub subscription: Option<(String, DateTime<Utc>)>,
    /// healthy / renewing / failing / error / needs_reauth, once an attempt ran.
    pub subscription_status: Option<String>,
    /// The last renewal attempt and its result.
    pub last_renewal: Option<(DateTime<Utc>, String)>,
    /// Why the last attempt failed.
    pub failure_reason: Option<String>,
    /// When the last webhook arrived.
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// Silent since (alive subscription, no webhook for too long).
    pub silent_since: Option<DateTime<Utc>>,
    /// When the next renewal is due.
    pub next_renewal_at: Option<DateTime<Utc>>,
    /// Consecutive failed attempts.
    pub failures: i32,
    /// Created (the list's order within its part).
    pub created_at: DateTime<Utc>,
}

impl BoardRow {
    /// 0 when a human must act (error, needs_reauth), else 1.
    pub fn part(&self) -> u8 {
        u8::from(!matches!(
            self.status,
            ProviderStatus::Error | ProviderStatus::NeedsReauth
        ))
    }
}

/// Who a session acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionGrant {
    /// Signed in with the admin token: every tenant.
    Admin,
    /// Signed in with a tenant token: its tenant.
    Tenant {
        /// The token (revoking it ends the session).
        token_id: Uuid,
        /// Its tenant.
        tenant: TenantId,
    },
}

/// The status page's reads and its sessions.
#[async_trait]
pub trait StatusPageStore: Send + Sync + 'static {
    /// Up to `limit` providers matching `filter` after `after`: those in error
    /// or needs_reauth first, then the rest, each part oldest first; and whether
    /// more follow.
    async fn board(
        &self,
        filter: &BoardFilter,
        after: Option<BoardCursor>,
        limit: u32,
    ) -> Result<(Vec<BoardRow>, bool), StoreError>;

    /// Provider counts by status within `tenant` (or every tenant).
    async fn board_counts(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<(ProviderStatus, i64)>, StoreError>;

    /// The tenants that have providers (for the admin's tenant filter), sorted,
    /// at most `limit`.
    async fn board_tenants(&self, limit: u32) -> Result<Vec<TenantId>, StoreError>;

    /// Stores a session by the SHA-256 of its cookie value.
    async fn create_session(
        &self,
        id_hash: &str,
        grant: &SessionGrant,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The grant of a live session (not expired, its token not revoked).
    async fn session(&self, id_hash: &str) -> Result<Option<SessionGrant>, StoreError>;

    /// Ends a session (and any expired ones).
    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError>;
}
