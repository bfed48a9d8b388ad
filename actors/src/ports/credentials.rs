//! The credentials port: where the provider adapters get the OAuth connection a
//! provider uses (client secrets, refresh tokens) and where a rotated refresh token
//! is kept, and — for Gmail — who else watches a mailbox. The store implements
//! both; nothing here may log, format or return a secret (`Debug` redacts them).

use crate::domain::ProviderId;
use crate::ports::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Scope asking for every Graph application permission the app was granted.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Scope for delegated credentials: Graph's granted permissions plus
/// `offline_access`, without which the token endpoint stops returning refresh
/// tokens and the connection dies when the current one expires.
pub const GRAPH_DELEGATED_SCOPE: &str = "https://graph.microsoft.com/.default offline_access";

/// How an OAuth connection obtains access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthFlow {
    /// App-only access in one Azure AD tenant: `client_id` + `client_secret`,
    /// application permissions granted by a tenant admin.
    ClientCredentials,
    /// Delegated access on behalf of a signed-in user: a refresh token obtained by
    /// an interactive sign-in elsewhere, exchanged here for access tokens.
    RefreshToken,
}

impl OAuthFlow {
    /// The `grant_type` form value, which is also the stored and serde name.
    pub fn grant_type(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
        }
    }
}

impl std::str::FromStr for OAuthFlow {
    type Err = UnknownFlow;

    /// Parses the wire name (`client_credentials`, `refresh_token`), as stored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "client_credentials" => Ok(Self::ClientCredentials),
            "refresh_token" => Ok(Self::RefreshToken),
            other => Err(UnknownFlow(other.to_owned())),
        }
    }
}

/// A string that names no [`OAuthFlow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown OAuth flow '{0}' (expected client_credentials or refresh_token)")]
pub struct UnknownFlow(pub String);

impl fmt::Display for OAuthFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.grant_type())
    }
}

/// One OAuth connection (a row of `oauth_credentials`). `Debug` redacts the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthCredentials {
    /// Stable id; providers reference it as `credentials_id`, the cache keys on it.
    pub id: Uuid,
    /// Which grant obtains the access tokens.
    pub flow: OAuthFlow,
    /// Azure AD tenant the token is requested from: a tenant id (GUID) or a
    /// verified domain such as `contoso.onmicrosoft.com`.
    pub authority_tenant: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    /// The app's client secret; required for client credentials, optional for a
    /// public client's refresh-token flow. Secret.
    pub client_secret: Option<String>,
    /// The current refresh token (delegated flow only); Microsoft rotates it and
    /// the cache stores each new one through [`CredentialSource::store_refresh_token`].
    /// Secret.
    pub refresh_token: Option<String>,
    /// Space-separated scopes requested; see [`GRAPH_DEFAULT_SCOPE`] and
    /// [`GRAPH_DELEGATED_SCOPE`].
    pub scope: String,
}

impl OAuthCredentials {
    /// App-only credentials for `authority_tenant` with the default Graph scope.
    pub fn client_credentials(
        id: Uuid,
        authority_tenant: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            id,
            flow: OAuthFlow::ClientCredentials,
            authority_tenant: authority_tenant.into(),
            client_id: client_id.into(),
            client_secret: Some(client_secret.into()),
            refresh_token: None,
            scope: GRAPH_DEFAULT_SCOPE.to_owned(),
        }
    }

    /// Delegated credentials with the default Graph scope plus `offline_access`.
    pub fn refresh_token(
        id: Uuid,
        authority_tenant: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        Self {
            id,
            flow: OAuthFlow::RefreshToken,
            authority_tenant: authority_tenant.into(),
            client_id: client_id.into(),
            client_secret,
            refresh_token: Some(refresh_token.into()),
            scope: GRAPH_DELEGATED_SCOPE.to_owned(),
        }
    }
}

impl fmt::Debug for OAuthCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("OAuthCredentials")
            .field("id", &self.id)
            .field("flow", &self.flow)
            .field("authority_tenant", &self.authority_tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("scope", &self.scope)
            .finish()
    }
}

/// Where OAuth credentials live (Postgres in production). Read on every token
/// acquisition, so an operator's new secret or refresh token is used at once.
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The credentials with this id; `None` if there is no such row.
    async fn credentials(&self, id: Uuid) -> Result<Option<OAuthCredentials>, StoreError>;

    /// Replaces the stored refresh token: Microsoft may return a new one with each
    /// refresh, and the newest is the one that stays valid longest.
    async fn store_refresh_token(&self, id: Uuid, refresh_token: &str) -> Result<(), StoreError>;
}

/// Who else watches a Gmail mailbox. Gmail keeps one watch per mailbox (and
/// Google Cloud project), so `users.stop` for one provider would silence every
/// other provider on that mailbox — for example the one an operator created to
/// replace it — until its next daily renewal. The store implements it.
#[async_trait]
pub trait MailboxWatchers: Send + Sync + 'static {
    /// True when an enabled provider other than `except` watches `mailbox`
    /// (case-insensitive) — set up already or about to be: its first
    /// `users.watch` may be in flight or retrying.
    async fn watched_by_others(
        &self,
        mailbox: &str,
        except: ProviderId,
    ) -> Result<bool, StoreError>;
}
