//! OAuth 2.0 against the Microsoft identity platform (v2 token endpoint) and
//! Google's token endpoint: the credentials model, the port the store implements
//! to hand them over, and the access-token cache every Graph and Google call draws
//! its bearer token from.
//!
//! Owns token acquisition (client credentials for app-only access, refresh token for
//! delegated access), caching until shortly before expiry on the [`Clock`](subkeeper_actors::ports::clock::Clock),
//! single-flight per credentials row, storing rotated refresh tokens, and classifying
//! token-endpoint failures into the core's [`ErrorClass`]. It must not persist
//! anything itself (the [`CredentialSource`] does) and must never log, format or
//! return a secret: client secrets, refresh tokens and access tokens stay out of
//! every message, span and `Debug` output.

use crate::providers::{retry_after_of, truncate};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use subkeeper_actors::domain::ErrorClass;
use subkeeper_actors::ports::ApiError;
use subkeeper_actors::ports::clock::SharedClock;
pub use subkeeper_actors::ports::{
    CredentialSource, GRAPH_DEFAULT_SCOPE, GRAPH_DELEGATED_SCOPE, OAuthCredentials, OAuthFlow,
    UnknownFlow,
};
use url::Url;
use uuid::Uuid;

/// How long before an access token's expiry the cache stops handing it out and
/// fetches a new one: long enough that a token never expires mid-call or through
/// modest clock skew, short compared to the one-hour tokens Microsoft issues.
pub const DEFAULT_REFRESH_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// Longest lifetime believed from `expires_in` (Entra issues at most 24 h).
const MAX_TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(24);

/// Longest slice of a token endpoint `error_description` kept in messages, in
/// characters (the AADSTS line; trace and correlation ids follow on later lines).
const DESCRIPTION_MAX_CHARS: usize = 300;

/// A bearer token and when to stop using it. `Debug` redacts the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token. Secret.
    secret: String,
    /// Domain time the identity platform said it expires (`expires_in` after the
    /// request was sent).
    expires_at: DateTime<Utc>,
    /// Domain time after which the cache fetches a replacement instead.
    refresh_at: DateTime<Utc>,
}

impl AccessToken {
    /// The bearer token, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// When the identity platform says it expires.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// When the cache stops handing it out.
    pub fn refresh_at(&self) -> DateTime<Utc> {
        self.refresh_at
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Who a credentials row's tokens are issued to: the app and the tenant the
/// providers count its requests against (their rate limits are per app and
/// tenant). No secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppIdentity {
    /// The OAuth client (application) id.
    pub client_id: String,
    /// The Azure AD tenant the token is requested from (`google` for Google
    /// rows: Google's budgets are per client and account).
    pub authority_tenant: String,
}

impl AppIdentity {
    /// The identity of `credentials`.
    pub fn of(credentials: &OAuthCredentials) -> Self {
        Self {
            client_id: credentials.client_id.clone(),
            authority_tenant: credentials.authority_tenant.clone(),
        }
    }
}

/// Credentials rows whose identity `TokenCache::app` reads from the store at
/// once; more wait their turn rather than crowd the connection pool.
const APP_READS: usize = 4;

/// Why no access token could be obtained. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// The provider references no credentials row, or the row is gone.
    #[error("{}: connect the mailbox (store its app credentials or a refresh token)", missing_credentials(.id))]
    CredentialsMissing {
        /// The id looked up, if the provider named one.
        id: Option<Uuid>,
    },
    /// The row lacks what its flow needs.
    #[error(
        "OAuth credentials {id} ({flow}) have no {missing}: store it or re-authorize the connection"
    )]
    CredentialsIncomplete {
        /// The credentials row.
        id: Uuid,
        /// Its flow.
        flow: OAuthFlow,
        /// The missing field, e.g. `client_secret`.
        missing: &'static str,
    },
    /// The credential store could not be read.
    #[error("could not read OAuth credentials: {0}")]
    Store(String),
    /// `login_base_url` plus the tenant do not form a URL.
    #[error("invalid token endpoint URL for tenant '{tenant}': {reason}")]
    InvalidEndpoint {
        /// The authority tenant.
        tenant: String,
        /// What the URL parser said.
        reason: String,
    },
    /// The token endpoint answered with an OAuth error body.
    #[error(
        "token endpoint refused the {flow} grant for tenant '{tenant}' ({error}): {description}"
    )]
    Refused {
        /// The grant that was attempted.
        flow: OAuthFlow,
        /// The authority tenant.
        tenant: String,
        /// HTTP status.
        status: u16,
        /// OAuth `error`, e.g. `invalid_grant`, `invalid_client`.
        error: String,
        /// First line of `error_description` (the AADSTS code and text).
        description: String,
        /// `Retry-After`, if sent.
        retry_after: Option<TimeDelta>,
    },
    /// The token endpoint answered an error status without an OAuth error body.
    #[error("token endpoint for tenant '{tenant}' answered HTTP {status}")]
    Status {
        /// The authority tenant.
        tenant: String,
        /// HTTP status.
        status: u16,
        /// `Retry-After`, if sent.
        retry_after: Option<TimeDelta>,
    },
    /// The call did not complete within the request timeout.
    #[error("token endpoint for tenant '{tenant}' did not answer in time")]
    Timeout {
        /// The authority tenant.
        tenant: String,
    },
    /// Connection or protocol failure before an answer arrived.
    #[error("could not reach the token endpoint for tenant '{tenant}': {reason}")]
    Unreachable {
        /// The authority tenant.
        tenant: String,
        /// The transport error (no secrets: reqwest never prints request bodies).
        reason: String,
    },
    /// A 2xx whose body is not a token response.
    #[error(
        "token endpoint for tenant '{tenant}' answered HTTP {status} with a body that is not a token response"
    )]
    InvalidResponse {
        /// The authority tenant.
        tenant: String,
        /// HTTP status.
        status: u16,
    },
}

impl TokenError {
    /// How the lifecycle should treat this failure.
    ///
    /// - `invalid_grant`, `interaction_required`, `consent_required`,
    ///   `login_required`: the grant itself is gone (refresh token expired or
    ///   revoked — AADSTS700082, AADSTS50173 —, consent withdrawn — AADSTS65001 —, MFA
    ///   or conditional access demands a sign-in). Only a human can fix it →
    ///   `ReauthRequired`. Same for `unauthorized_client` (AADSTS700016: the app is
    ///   not, or no longer, provisioned/consented in that tenant).
    /// - `invalid_client` (AADSTS7000215 wrong secret, AADSTS7000222 expired
    ///   secret): `Auth`, not `Permanent` and not `ReauthRequired`. The user's
    ///   grant is intact; the app's own credential is wrong. The core's remediation
    ///   for `Auth` ("check the app registration's client secret") is exactly the
    ///   fix, it keeps retrying on backoff (credentials are re-read on every
    ///   acquisition, so a rotated secret heals it without a restart) and reaches
    ///   `error` and pages at the failure threshold.
    /// - `temporarily_unavailable`, `server_error`, 5xx, timeouts, connection
    ///   errors → `Transient`; 429, or 503 with `Retry-After` → `Throttled`.
    /// - Everything else (`invalid_request`, `invalid_scope`, unknown tenant, …)
    ///   is a configuration error that retrying cannot fix → `Permanent`.
    /// - Missing or incomplete credentials → `ReauthRequired`: a human must
    ///   connect the mailbox; the supervisor resumes when credentials change.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::CredentialsMissing { .. } | Self::CredentialsIncomplete { .. } => {
                ErrorClass::ReauthRequired
            }
            Self::Store(_) | Self::Timeout { .. } | Self::Unreachable { .. } => {
                ErrorClass::Transient
            }
            Self::InvalidEndpoint { .. } => ErrorClass::Permanent,
            Self::InvalidResponse { .. } => ErrorClass::Transient,
            Self::Refused {
                status,
                error,
                retry_after,
                ..
            } => match error.as_str() {
                "invalid_grant"
                | "interaction_required"
                | "consent_required"
                | "login_required"
                | "unauthorized_client" => ErrorClass::ReauthRequired,
                "invalid_client" => ErrorClass::Auth,
                "temporarily_unavailable" | "server_error" => {
                    status_class(*status, *retry_after).unwrap_or(ErrorClass::Transient)
                }
                _ => status_class(*status, *retry_after).unwrap_or(ErrorClass::Permanent),
            },
            Self::Status {
                status,
                retry_after,
                ..
            } => status_class(*status, *retry_after).unwrap_or(ErrorClass::Permanent),
        }
    }

    /// HTTP status the token endpoint answered, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. }
            | Self::Status { status, .. }
            | Self::InvalidResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `Retry-After` the token endpoint sent, if any.
    pub fn retry_after(&self) -> Option<TimeDelta> {
        match self {
            Self::Refused { retry_after, .. } | Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The classified error the port returns.
    pub fn to_api_error(&self) -> ApiError {
        let mut error = ApiError::new(self.class(), self.to_string());
        error.http_status = self.http_status();
        error.with_retry_after(self.retry_after())
    }
}

/// How a missing credentials row reads in a message.
fn missing_credentials(id: &Option<Uuid>) -> String {
    match id {
        Some(id) => format!("no OAuth credentials row {id}"),
        None => "no OAuth credentials configured for this provider".to_owned(),
    }
}

/// The class implied by a status alone where it is unambiguous: throttling and
/// server-side failures.
fn status_class(status: u16, retry_after: Option<TimeDelta>) -> Option<ErrorClass> {
    match status {
        429 => Some(ErrorClass::Throttled),
        503 if retry_after.is_some() => Some(ErrorClass::Throttled),
        500..=599 => Some(ErrorClass::Transient),
        _ => None,
    }
}

/// Access tokens per credentials row, fetched on demand from
/// `{login_base_url}/{authority_tenant}/oauth2/v2.0/token`.
///
/// A token is handed out until `expires_in − refresh margin` (domain time on the
/// [`Clock`](subkeeper_actors::ports::clock::Clock)) and then replaced. Concurrent callers for the same credentials wait
/// for one token request and share its outcome (single flight); different
/// credentials never wait for each other.
pub struct TokenCache {
    /// Shared HTTP client (its timeouts bound every token request).
    http: reqwest::Client,
    /// Where tokens are requested: per Azure AD tenant, or one fixed URL (Google).
    endpoint: TokenEndpoint,
    /// Where credentials are read and rotated refresh tokens written.
    source: Arc<dyn CredentialSource>,
    /// Domain time: token expiry is judged on it.
    clock: SharedClock,
    /// How long before expiry a token is replaced.
    refresh_margin: TimeDelta,
    /// One slot per credentials id; the outer lock is never held across an await.
    slots: Mutex<HashMap<Uuid, Arc<Slot>>>,
    /// Who each credentials row's tokens are issued to, as last read.
    apps: Mutex<HashMap<Uuid, AppIdentity>>,
    /// Bounds the store reads of [`TokenCache::app`].
    app_reads: tokio::sync::Semaphore,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("endpoint", &self.endpoint)
            .field("refresh_margin", &self.refresh_margin)
            .finish_non_exhaustive()
    }
}

/// Where a [`TokenCache`] requests tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenEndpoint {
    /// Microsoft: `{base}/{authority_tenant}/oauth2/v2.0/token`.
    Authority(Url),
    /// One endpoint for every credentials row (Google's
    /// `https://oauth2.googleapis.com/token`); `authority_tenant` only labels
    /// messages.
    Fixed(Url),
}

/// The cache entry of one credentials row.
#[derive(Default)]
struct Slot {
    /// Token requests completed for this row; a caller that saw it change while
    /// it waited knows another caller just fetched, and shares that outcome.
    fetches: AtomicU64,
    /// Held across the token request: this lock is the single flight.
    state: tokio::sync::Mutex<SlotState>,
}

/// What a slot remembers.
#[derive(Default)]
struct SlotState {
    /// The current token, if any.
    token: Option<AccessToken>,
    /// The outcome of the last token request when it failed, for the callers that
    /// were waiting on it.
    last_failure: Option<TokenError>,
    /// The credentials as last read (with any refresh token rotated since): used
    /// when the store cannot be read, so a database hiccup is not counted as a
    /// provider failure.
    credentials: Option<OAuthCredentials>,
}

impl TokenCache {
    /// A cache fetching from `login_base_url` (the identity platform's base, without
    /// the tenant), replacing tokens [`DEFAULT_REFRESH_MARGIN`] before expiry.
    pub fn new(
        http: reqwest::Client,
        login_base_url: &str,
        source: Arc<dyn CredentialSource>,
        clock: SharedClock,
    ) -> Result<Self, url::ParseError> {
        let login_base_url = Url::parse(login_base_url)?;
        // A base like `mailto:x` cannot take path segments; refuse it up front.
        if login_base_url.cannot_be_a_base() {
            return Err(url::ParseError::RelativeUrlWithCannotBeABaseBase);
        }
        Ok(Self {
            http,
            endpoint: TokenEndpoint::Authority(login_base_url),
            source,
            clock,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            slots: Mutex::new(HashMap::new()),
            apps: Mutex::new(HashMap::new()),
            app_reads: tokio::sync::Semaphore::new(APP_READS),
        })
    }

    /// A cache fetching every token from one `token_url` (Google's token endpoint),
    /// whatever the credentials' `authority_tenant`.
    pub fn with_token_url(
        http: reqwest::Client,
        token_url: &str,
        source: Arc<dyn CredentialSource>,
        clock: SharedClock,
    ) -> Result<Self, url::ParseError> {
        let token_url = Url::parse(token_url)?;
        Ok(Self {
            http,
            endpoint: TokenEndpoint::Fixed(token_url),
            source,
            clock,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            slots: Mutex::new(HashMap::new()),
            apps: Mutex::new(HashMap::new()),
            app_reads: tokio::sync::Semaphore::new(APP_READS),
        })
    }

    /// Replaces the refresh margin (how long before expiry a token is replaced).
    pub fn with_refresh_margin(mut self, margin: TimeDelta) -> Self {
        self.refresh_margin = margin.max(TimeDelta::zero());
        self
    }

    /// A valid access token for the credentials `id`: the cached one if it is not
    /// yet due for refresh, otherwise a fresh one from the token endpoint.
    #[tracing::instrument(name = "oauth_token", skip_all, fields(credentials = %id))]
    pub async fn token(&self, id: Uuid) -> Result<AccessToken, TokenError> {
        let slot = self.slot(id);
        let seen = slot.fetches.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        let now = self.clock.now();
        if let Some(token) = &state.token
            && now < token.refresh_at
        {
            return Ok(token.clone());
        }
        if slot.fetches.load(Ordering::Acquire) != seen
            && let Some(failure) = state.last_failure.clone()
        {
            // Another caller's request failed while we waited: share its outcome
            // rather than hammering an endpoint that just refused.
            return still_usable(&state, now, &failure).ok_or(failure);
        }
        let result = self.fetch(id, &mut state.credentials).await;
        slot.fetches.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                state.token = Some(token.clone());
                state.last_failure = None;
                Ok(token)
            }
            Err(error) => {
                state.last_failure = Some(error.clone());
                if let Some(token) = still_usable(&state, self.clock.now(), &error) {
                    tracing::warn!(error = %error, expires_at = %token.expires_at, "token refresh failed; using the current token until it expires");
                    return Ok(token);
                }
                state.token = None;
                Err(error)
            }
        }
    }

    /// Who the tokens of credentials `id` are issued to, as last read (every
    /// token request reads the row); `None` before the first read.
    pub fn known_app(&self, id: Uuid) -> Option<AppIdentity> {
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// [`known_app`](Self::known_app), or else the row read from the store (no
    /// token request; at most [`APP_READS`] reads at once). `None` when the row
    /// is missing or the store cannot answer.
    pub async fn app(&self, id: Uuid) -> Option<AppIdentity> {
        if let Some(app) = self.known_app(id) {
            return Some(app);
        }
        let _turn = self.app_reads.acquire().await.ok()?;
        if let Some(app) = self.known_app(id) {
            return Some(app);
        }
        match self.source.credentials(id).await {
            Ok(Some(credentials)) => Some(self.remember_app(id, &credentials)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "credentials not readable for the rate limits; checked when sent");
                None
            }
        }
    }

    fn remember_app(&self, id: Uuid, credentials: &OAuthCredentials) -> AppIdentity {
        let app = AppIdentity::of(credentials);
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, app.clone());
        app
    }

    /// Forgets the cached token for `id`, so the next call fetches a new one.
    pub async fn invalidate(&self, id: Uuid) {
        let slot = self.slot(id);
        slot.state.lock().await.token = None;
    }

    /// Forgets `rejected` if it is still the cached token for `id` (a 401 answered
    /// it). When several calls are refused with the same token at once, only the
    /// first forgets it; the rest find the replacement already cached, so one 401
    /// storm costs one token request.
    pub async fn reject(&self, id: Uuid, rejected: &AccessToken) {
        let slot = self.slot(id);
        let mut state = slot.state.lock().await;
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.secret == rejected.secret)
        {
            state.token = None;
        }
    }

    fn slot(&self, id: Uuid) -> Arc<Slot> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slots.entry(id).or_default())
    }

    /// One token request, with the credentials as stored right now — or, when the
    /// store cannot be read, as `known` last saw them (updated here).
    async fn fetch(
        &self,
        id: Uuid,
        known: &mut Option<OAuthCredentials>,
    ) -> Result<AccessToken, TokenError> {
        let mut remembered = None;
        let credentials = match self.source.credentials(id).await {
            Ok(Some(credentials)) => {
                *known = Some(credentials.clone());
                self.remember_app(id, &credentials);
                credentials
            }
            Ok(None) => {
                *known = None;
                return Err(TokenError::CredentialsMissing { id: Some(id) });
            }
            Err(e) => match known.clone() {
                Some(credentials) => {
                    let reason = e.to_string();
                    tracing::warn!(
                        reason,
                        "credential store unavailable; using the credentials last read"
                    );
                    remembered = Some(reason);
                    credentials
                }
                None => return Err(TokenError::Store(e.to_string())),
            },
        };
        let tenant = credentials.authority_tenant.clone();
        let url = self.endpoint(&tenant)?;

        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", credentials.flow.grant_type()),
            ("client_id", &credentials.client_id),
        ];
        // Google's refresh grant takes no scope (the grant fixes it); an empty
        // scope is left out rather than sent empty.
        if !credentials.scope.trim().is_empty() {
            form.push(("scope", &credentials.scope));
        }
        let missing = |missing| TokenError::CredentialsIncomplete {
            id,
            flow: credentials.flow,
            missing,
        };
        match credentials.flow {
            OAuthFlow::ClientCredentials => {
                let secret = credentials
                    .client_secret
                    .as_deref()
                    .ok_or_else(|| missing("client_secret"))?;
                form.push(("client_secret", secret));
            }
            OAuthFlow::RefreshToken => {
                let refresh = credentials
                    .refresh_token
                    .as_deref()
                    .ok_or_else(|| missing("refresh_token"))?;
                form.push(("refresh_token", refresh));
                if let Some(secret) = credentials.client_secret.as_deref() {
                    form.push(("client_secret", secret));
                }
            }
        }

        // Expiry counts from before the request left: never later than the
        // identity platform's own reckoning.
        let requested_at = self.clock.now();
        let response = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&tenant, &e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after_of(response.headers(), self.clock.now());
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&tenant, &e))?;

        if !(200..300).contains(&status) {
            let error = match serde_json::from_slice::<TokenErrorBody>(&body) {
                Ok(parsed) => TokenError::Refused {
                    flow: credentials.flow,
                    tenant,
                    status,
                    error: parsed.error,
                    description: first_line(parsed.error_description.as_deref().unwrap_or("")),
                    retry_after,
                },
                Err(_) => TokenError::Status {
                    tenant,
                    status,
                    retry_after,
                },
            };
            tracing::warn!(status, class = %error.class(), error = %error, "token request refused");
            // The remembered copy may be the one a human has just replaced: its
            // refusal says nothing about the stored credentials, so it is the
            // store's (transient) failure, not a reason to stop and page.
            if let Some(reason) = remembered
                && matches!(error.class(), ErrorClass::ReauthRequired | ErrorClass::Auth)
            {
                return Err(TokenError::Store(format!(
                    "{reason}; the credentials last read were refused ({error})"
                )));
            }
            return Err(error);
        }

        // Decode errors are not propagated: serde would quote the offending value,
        // which may be part of a token.
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| TokenError::InvalidResponse {
                tenant: tenant.clone(),
                status,
            })?;
        // Entra tokens live 60-90 minutes; the clamp only keeps a nonsense
        // `expires_in` from overflowing the date arithmetic below.
        let lifetime = i64::try_from(parsed.expires_in.0)
            .ok()
            .and_then(TimeDelta::try_seconds)
            .unwrap_or(MAX_TOKEN_LIFETIME)
            .min(MAX_TOKEN_LIFETIME);
        // Tokens shorter-lived than twice the margin are replaced at half-life
        // instead, so they are still used at all.
        let usable = (lifetime - self.refresh_margin).max(lifetime / 2);
        let token = AccessToken {
            secret: parsed.access_token,
            expires_at: requested_at + lifetime,
            refresh_at: requested_at + usable,
        };

        if let Some(rotated) = parsed.refresh_token.as_deref()
            && credentials.flow == OAuthFlow::RefreshToken
            && credentials.refresh_token.as_deref() != Some(rotated)
        {
            if let Some(known) = known.as_mut() {
                known.refresh_token = Some(rotated.to_owned());
            }
            // Losing a rotated token is survivable (Microsoft keeps the previous one
            // valid until its own expiry), so a store failure is logged, not fatal.
            if let Err(e) = self.source.store_refresh_token(id, rotated).await {
                tracing::warn!(
                    reason = %e,
                    "could not store the rotated refresh token; the previous one stays in use"
                );
            } else {
                tracing::debug!("stored rotated refresh token");
            }
        }
        tracing::debug!(expires_at = %token.expires_at, refresh_at = %token.refresh_at, flow = %credentials.flow, "access token acquired");
        Ok(token)
    }

    /// `{login_base}/{tenant}/oauth2/v2.0/token`, with the tenant as one escaped
    /// path segment (it comes from the database; it must not add segments).
    fn endpoint(&self, tenant: &str) -> Result<Url, TokenError> {
        let invalid = |reason: &str| TokenError::InvalidEndpoint {
            tenant: tenant.to_owned(),
            reason: reason.to_owned(),
        };
        if tenant.is_empty() || tenant == "." || tenant == ".." {
            return Err(invalid("the authority tenant is empty or not a name"));
        }
        let base = match &self.endpoint {
            TokenEndpoint::Fixed(url) => return Ok(url.clone()),
            TokenEndpoint::Authority(base) => base,
        };
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| invalid("the login base URL cannot take a path"))?
            .pop_if_empty()
            .extend([tenant, "oauth2", "v2.0", "token"]);
        Ok(url)
    }
}

/// The cached token, if a refresh that failed for a passing reason (outage,
/// throttling) leaves it in use: it has not expired yet, and the refresh margin
/// exists for exactly this. A refused grant never leaves a token in use.
fn still_usable(state: &SlotState, now: DateTime<Utc>, error: &TokenError) -> Option<AccessToken> {
    if !matches!(error.class(), ErrorClass::Transient | ErrorClass::Throttled) {
        return None;
    }
    state.token.clone().filter(|t| now < t.expires_at)
}

/// A transport failure, classified by kind.
fn transport_error(tenant: &str, error: &reqwest::Error) -> TokenError {
    if error.is_timeout() {
        TokenError::Timeout {
            tenant: tenant.to_owned(),
        }
    } else {
        TokenError::Unreachable {
            tenant: tenant.to_owned(),
            reason: error.to_string(),
        }
    }
}

/// The first line of an `error_description`, trimmed and bounded: the AADSTS code
/// and sentence; trace id, correlation id and timestamp follow on later lines.
fn first_line(description: &str) -> String {
    let mut out = truncate(
        description.lines().next().unwrap_or(""),
        DESCRIPTION_MAX_CHARS,
    );
    if out.is_empty() {
        out.push_str("(no description)");
    }
    out
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenResponse {
    /// The bearer token.
    access_token: String,
    /// Lifetime in seconds.
    expires_in: Seconds,
    /// A new refresh token (delegated flow with `offline_access`).
    #[serde(default)]
    refresh_token: Option<String>,
}

/// An error response (RFC 6749 §5.2; Microsoft adds `error_codes`, trace ids).
#[derive(Deserialize)]
struct TokenErrorBody {
    /// OAuth error code.
    error: String,
    /// `AADSTS…: text` plus trace lines.
    #[serde(default)]
    error_description: Option<String>,
}

/// Seconds as a JSON number or, as the v1 endpoint and some proxies send it, a
/// numeric string.
struct Seconds(u64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(s) => s
                .trim()
                .parse()
                .map(Self)
                .map_err(|_| serde::de::Error::custom("expires_in is not a number of seconds")),
        }
    }
}
