//! One authenticated call to a provider API, as the Graph and Google adapters both
//! make it: bearer token from the [`TokenCache`], send, on 401 forget the token and
//! send once more with a new one, read the whole body under the request timeout,
//! and turn what went wrong into the family's error enum.
//!
//! Owns the token-on-the-wire, the single 401 retry, the base URL and the
//! transport outcomes. It must not know a family's URLs, body shapes or error
//! classification: those stay in `graph/` and `google/`, which tell it how to
//! build their errors through [`CallFailure`] and what sets their wire apart
//! through [`Api`].

use crate::providers::limits::{Charge, Held, Limits, RateLimited};
use crate::providers::oauth::{AccessToken, CredentialSource, TokenCache, TokenError};
use crate::providers::{http_client, retry_after_of};
use chrono::TimeDelta;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::Provider;
use subkeeper_actors::ports::ApiError;
use subkeeper_actors::ports::clock::SharedClock;
use url::Url;
use uuid::Uuid;

/// A family's error enum, classified for the lifecycle at the port boundary.
pub(crate) trait Classify {
    /// The class, status and operator-facing message of this failure.
    fn classify(&self, provider: &Provider) -> ApiError;
}

/// The span of one provider call: API, operation, tenant, provider and
/// subscription — never a secret.
pub(crate) fn call_span(
    api: &Api,
    operation: &'static str,
    provider: &Provider,
    subscription: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        "provider_call",
        api = api.name,
        op = operation,
        tenant = %provider.tenant,
        provider = %provider.id,
        kind = %provider.kind,
        subscription = subscription.unwrap_or(""),
    )
}

/// Logs a classified failure (WARN: the lifecycle decides whether a human must
/// act) and returns it.
pub(crate) fn failed(api: &Api, provider: &Provider, error: &impl Classify) -> ApiError {
    let classified = error.classify(provider);
    tracing::warn!(
        class = %classified.class, status = ?classified.http_status,
        retry_after = ?classified.retry_after, message = %classified.message,
        "{} call failed", api.name
    );
    classified
}

/// What sets one provider API's calls apart on the wire and in logs.
#[derive(Debug)]
pub(crate) struct Api {
    /// The API's name in log messages (`Graph`, `Google`).
    pub name: &'static str,
    /// The setting that holds the base URL, named in configuration errors.
    pub base_setting: &'static str,
    /// The setting that holds the token endpoint, named in configuration errors.
    pub token_setting: &'static str,
    /// Header sent with a fresh UUID on every request, which the provider echoes
    /// and logs so its support can find one call (Graph's `client-request-id`);
    /// `None` where the API has no such header.
    pub request_id_header: Option<&'static str>,
}

/// Where a family's token endpoint is.
pub(crate) enum TokenEndpoint<'a> {
    /// The identity platform's base; each credentials row's tenant names its own
    /// token endpoint under it (Microsoft).
    Authority(&'a str),
    /// One token URL for every credentials row (Google).
    Fixed(&'a str),
}

/// Where a family's API is and how long to wait for it, as configured.
pub(crate) struct Endpoints<'a> {
    /// The API's base URL.
    pub base_url: &'a str,
    /// Where access tokens come from.
    pub token: TokenEndpoint<'a>,
    /// Upper bound on one HTTP call, token requests included.
    pub request_timeout: Duration,
    /// Upper bound on establishing a connection.
    pub connect_timeout: Duration,
}

/// How a family's error enum is built from the outcome of a call.
pub(crate) trait CallFailure: From<TokenError> + Send + 'static {
    /// What was attempted (Graph's `Operation`, Google's `Call`).
    type Op: Copy + fmt::Display + Send + Sync + 'static;
    /// The API's error body, reduced to what messages and classification need.
    type Body: fmt::Display;

    /// Parses an error body; anything unreadable gives an empty one.
    fn parse_body(body: &[u8]) -> Self::Body;
    /// The call did not complete within `timeout`.
    fn timeout(op: Self::Op, timeout: Duration) -> Self;
    /// Connection, TLS or protocol failure before an answer arrived; `sent` is
    /// false when no connection was made (nothing can have taken effect).
    fn unreachable(op: Self::Op, reason: String, sent: bool) -> Self;
    /// A 401 to a freshly acquired token as well.
    fn unauthorized(op: Self::Op, body: Self::Body) -> Self;
    /// An error status the caller does not accept.
    fn refused(op: Self::Op, status: u16, body: Self::Body, retry_after: Option<TimeDelta>)
    -> Self;
    /// The configuration (a base URL) is unusable.
    fn config(reason: String) -> Self;
    /// Not sent: the provider asked for no requests in this scope yet.
    fn held(op: Self::Op, held: Held) -> Self;
    /// Whether an answer refused the request for a rate limit, and how far that
    /// reaches (`None`: not a rate limit).
    fn rate_limit(
        status: u16,
        body: &Self::Body,
        retry_after: Option<TimeDelta>,
    ) -> Option<RateLimited>;
}

/// The credentials row `provider` authenticates with; none means the mailbox
/// was never connected.
pub(crate) fn credentials_id(provider: &Provider) -> Result<Uuid, TokenError> {
    provider
        .credentials_id
        .ok_or(TokenError::CredentialsMissing { id: None })
}

/// A successful answer: status and body.
pub(crate) struct Answer {
    /// HTTP status (2xx, or 404/410 where the caller accepts it).
    pub status: u16,
    /// Raw body.
    pub body: Vec<u8>,
}

/// Bearer-authenticated calls to one provider API, failing as `E`.
pub(crate) struct BearerClient<E> {
    /// What sets this API apart.
    api: &'static Api,
    /// Shared HTTP client (timeouts configured on it).
    http: reqwest::Client,
    /// The API's base, e.g. `https://graph.microsoft.com/v1.0`.
    base: Url,
    /// Bearer tokens.
    tokens: Arc<TokenCache>,
    /// Domain time, for HTTP-date `Retry-After`s.
    clock: SharedClock,
    /// The request timeout the client was built with, for messages.
    request_timeout: Duration,
    /// The providers' limits, checked before every request leaves.
    limits: Arc<Limits>,
    /// The error type; `fn() -> E` keeps the client `Send + Sync` whatever `E` is.
    failure: PhantomData<fn() -> E>,
}

impl<E: CallFailure> BearerClient<E> {
    /// A client for `api` at `endpoints`: one HTTP client (see [`http_client`])
    /// shared with a [`TokenCache`] reading `credentials`, judging token expiry on
    /// `clock`. Fails only on an unusable configuration (bad URL, TLS setup).
    pub fn connect(
        api: &'static Api,
        endpoints: Endpoints<'_>,
        credentials: Arc<dyn CredentialSource>,
        clock: SharedClock,
        limits: Arc<Limits>,
    ) -> Result<Self, E> {
        let http = http_client(endpoints.request_timeout, endpoints.connect_timeout)
            .map_err(|e| E::config(format!("HTTP client: {e}")))?;
        let (tokens, url) = match endpoints.token {
            TokenEndpoint::Authority(base) => (
                TokenCache::new(http.clone(), base, credentials, Arc::clone(&clock)),
                base,
            ),
            TokenEndpoint::Fixed(url) => (
                TokenCache::with_token_url(http.clone(), url, credentials, Arc::clone(&clock)),
                url,
            ),
        };
        let tokens =
            tokens.map_err(|e| E::config(format!("{} '{url}': {e}", api.token_setting)))?;
        Ok(Self::new(
            api,
            http,
            endpoints.base_url,
            Arc::new(tokens),
            clock,
            endpoints.request_timeout,
        )?
        .with_limits(limits))
    }

    fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = limits;
        self
    }

    /// A client for `api` at `base`, which must be able to take path segments.
    fn new(
        api: &'static Api,
        http: reqwest::Client,
        base: &str,
        tokens: Arc<TokenCache>,
        clock: SharedClock,
        request_timeout: Duration,
    ) -> Result<Self, E> {
        let setting = api.base_setting;
        let base = Url::parse(base).map_err(|e| E::config(format!("{setting} '{base}': {e}")))?;
        if base.cannot_be_a_base() {
            return Err(E::config(format!("{setting} '{base}' cannot take a path")));
        }
        Ok(Self {
            api,
            http,
            base,
            tokens,
            limits: Arc::new(Limits::unlimited(Arc::clone(&clock))),
            clock,
            request_timeout,
            failure: PhantomData,
        })
    }

    /// A request body as JSON. Serializing our own body types cannot fail in
    /// practice; if it did, the code (not the provider) would be wrong.
    pub fn json(&self, body: &impl serde::Serialize) -> Result<serde_json::Value, E> {
        serde_json::to_value(body).map_err(|e| E::config(format!("request body: {e}")))
    }

    /// The token cache, e.g. to drop a connection's token when its credentials
    /// change.
    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    /// `link` (a provider-given next/delta link) if it lies under this API's
    /// base URL: a link elsewhere would be sent our bearer token.
    pub fn link(&self, link: &str) -> Result<Url, E> {
        let url = Url::parse(link).map_err(|e| E::config(format!("link '{link}': {e}")))?;
        let base = self.base.as_str().trim_end_matches('/');
        if url.origin() != self.base.origin()
            || !url
                .path()
                .starts_with(self.base.path().trim_end_matches('/'))
        {
            return Err(E::config(format!("link '{link}' is not under {base}")));
        }
        Ok(url)
    }

    /// `{base}/` plus `segments`, each escaped as one path segment (ids, calendar
    /// ids and mailbox addresses come from the database; they must not add
    /// segments).
    pub fn url(&self, segments: &[&str]) -> Result<Url, E> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| E::config(format!("{} cannot take a path", self.api.base_setting)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends one request with a bearer token for `charge.credentials`, within
    /// the providers' limits (see [`Limits::before_send`]: a request whose scope
    /// is blocked is not sent and fails as [`CallFailure::held`]). On 401 the
    /// token is dropped, a new one fetched and the request sent once more; a
    /// second 401 is [`CallFailure::unauthorized`]. Statuses in `accept` besides
    /// 2xx are answers, everything else is [`CallFailure::refused`].
    pub async fn call(
        &self,
        charge: &Charge<'_>,
        op: E::Op,
        method: reqwest::Method,
        url: Url,
        body: Option<&serde_json::Value>,
        accept: &[u16],
    ) -> Result<Answer, E> {
        self.call_with_headers(charge, op, method, url, body, accept, &[])
            .await
    }

    /// [`call`](Self::call) with extra request headers (Graph's `Prefer:
    /// odata.maxpagesize`).
    #[allow(clippy::too_many_arguments)]
    pub async fn call_with_headers(
        &self,
        charge: &Charge<'_>,
        op: E::Op,
        method: reqwest::Method,
        url: Url,
        body: Option<&serde_json::Value>,
        accept: &[u16],
        extra: &[(&'static str, String)],
    ) -> Result<Answer, E> {
        let credentials = charge.credentials;
        let token = self.tokens.token(credentials).await?;
        let (status, headers, bytes) = self
            .send_limited(charge, &token, op, method.clone(), url.clone(), body, extra)
            .await?;
        let (status, headers, bytes) = if status == 401 {
            tracing::info!(operation = %op, body = %E::parse_body(&bytes), "{} refused the access token; refreshing it once", self.api.name);
            self.tokens.reject(credentials, &token).await;
            let token = self.tokens.token(credentials).await?;
            let retried = self
                .send_limited(charge, &token, op, method, url, body, extra)
                .await?;
            if retried.0 == 401 {
                return Err(E::unauthorized(op, E::parse_body(&retried.2)));
            }
            retried
        } else {
            (status, headers, bytes)
        };
        if (200..300).contains(&status) || accept.contains(&status) {
            return Ok(Answer {
                status,
                body: bytes,
            });
        }
        Err(E::refused(
            op,
            status,
            E::parse_body(&bytes),
            retry_after_of(&headers, self.clock.now()),
        ))
    }

    /// [`call`](Self::call) with POST, the only method the Google APIs are called
    /// with.
    pub async fn post(
        &self,
        charge: &Charge<'_>,
        op: E::Op,
        url: Url,
        body: Option<&serde_json::Value>,
        accept: &[u16],
    ) -> Result<Answer, E> {
        self.call(charge, op, reqwest::Method::POST, url, body, accept)
            .await
    }

    /// [`send`](Self::send) within the limits: checked (and counted) before it
    /// leaves, its answer reported back. The token has been fetched, so the
    /// credentials' app is known; were it not, the request goes unchecked.
    #[allow(clippy::too_many_arguments)]
    async fn send_limited(
        &self,
        charge: &Charge<'_>,
        token: &AccessToken,
        op: E::Op,
        method: reqwest::Method,
        url: Url,
        body: Option<&serde_json::Value>,
        extra: &[(&'static str, String)],
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), E> {
        let ticket = match self.tokens.known_app(charge.credentials) {
            Some(app) => Some(
                self.limits
                    .before_send(charge, &app)
                    .await
                    .map_err(|held| E::held(op, held))?,
            ),
            None => None,
        };
        let sent = self.send(token, op, method, url, body, extra).await;
        // An error (no answer) drops the ticket unanswered: any probe it held
        // is given up for another request to make.
        if let (Some(ticket), Ok((status, headers, bytes))) = (ticket, &sent) {
            let limited = if (200..300).contains(status) {
                None
            } else {
                E::rate_limit(
                    *status,
                    &E::parse_body(bytes),
                    retry_after_of(headers, self.clock.now()),
                )
            };
            ticket.answered(limited);
        }
        sent
    }

    /// One HTTP exchange; the body is read in full under the request timeout.
    async fn send(
        &self,
        token: &AccessToken,
        op: E::Op,
        method: reqwest::Method,
        url: Url,
        body: Option<&serde_json::Value>,
        extra: &[(&'static str, String)],
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), E> {
        let bodiless_post = body.is_none() && method == reqwest::Method::POST;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json");
        let request_id = self
            .api
            .request_id_header
            .map(|name| (name, Uuid::new_v4().to_string()));
        if let Some((name, id)) = &request_id {
            request = request.header(*name, id);
        }
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        request = match body {
            Some(body) => request.json(body),
            // Google wants a Content-Length on bodiless POSTs; Graph's only bodiless
            // call is a DELETE, which goes without.
            None if bodiless_post => request.header(reqwest::header::CONTENT_LENGTH, "0"),
            None => request,
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                E::timeout(op, self.request_timeout)
            } else {
                E::unreachable(op, e.to_string(), !e.is_connect())
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        tracing::debug!(operation = %op, status, client_request_id = request_id.as_ref().map(|(_, id)| id.as_str()), "{} answered", self.api.name);
        Ok((status, headers, bytes.to_vec()))
    }
}
