//! The Microsoft Graph adapter: the core's `SubscriptionApi` port over Graph v1.0
//! `/subscriptions`, for Outlook mail (`graph_mail`) and calendar (`graph_calendar`)
//! providers.
//!
//! Owns the subscription requests (create, renew, delete), the maximum lifetimes
//! Graph grants, bearer tokens via the OAuth [`TokenCache`] and the classification
//! of every Graph failure (`error`). It must not schedule, retry beyond one token
//! refresh after a 401, or touch the store: the lifecycle decides from the returned
//! `ApiError`.
//!
//! - `client`: wire shapes, and what the shared authenticated call
//!   (`providers::call`) needs to know of this API.
//! - `error`: [`GraphError`] and the classification table.
//! - `orphans`: creates in flight or whose answer was lost, so intake can
//!   recognise their subscriptions by clientState: route the first, have the
//!   second deleted.

mod client;
mod delta;
mod error;
mod orphans;
#[cfg(test)]
mod tests;

pub use client::{
    CHANGE_TYPES, CreateBody, LATEST_SUPPORTED_TLS_VERSION, RenewBody, graph_datetime,
    parse_graph_datetime,
};
pub use delta::{CalendarWindow, delta_segments};
pub use error::{GraphError, GraphErrorBody, Operation, required_permission};
pub use orphans::{Claim, OrphanCleanup, UnconfirmedCreates};

use crate::providers::call::{self, Endpoints, TokenEndpoint, credentials_id};
use crate::providers::limits::{Charge, Family, Limits};
use crate::providers::oauth::{CredentialSource, TokenCache};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use client::GraphClient;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{AttemptKind, Provider, Subscription};
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{
    ApiError, ChangePage, ChangesError, ChangesFrom, CreateRequest, ProviderSubscription,
    SubscriptionApi,
};
use tracing::Instrument;

/// Longest lifetime Graph grants an Outlook message, event or contact
/// subscription without resource data, in minutes. The docs say 10,080 ("under 7
/// days"), but the live service refuses anything past 10,070 with "Subscription
/// expiration can only be 10070 minutes in the future." (as it enforced 4,230 when
/// the docs said 4,320).
pub const OUTLOOK_MAX_MINUTES: i64 = 10_070;

/// Longest lifetime with `includeResourceData: true` (rich notifications), in
/// minutes. Unused today: subkeeper does not ask for resource data.
pub const RICH_NOTIFICATIONS_MAX_MINUTES: i64 = 1_440;

/// Subtracted from Graph's maximum so that our clock running a little ahead of
/// Microsoft's never turns a maximal request into a refused one. Costs nothing:
/// renewal happens a day before expiry anyway.
pub const CLOCK_SKEW_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// Where Graph and the identity platform are, and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphConfig {
    /// Graph's base with the version segment, no trailing slash
    /// (`https://graph.microsoft.com/v1.0`; the simulator's `{base}/v1.0`).
    pub graph_base_url: String,
    /// The identity platform's base; the token endpoint is
    /// `{login_base_url}/{tenant}/oauth2/v2.0/token`
    /// (`https://login.microsoftonline.com`; the simulator's `{base}`).
    pub login_base_url: String,
    /// Upper bound on one HTTP call (connect, send, read the answer), token
    /// requests included. Default 10 s.
    pub request_timeout: Duration,
    /// Upper bound on establishing a connection (TCP + TLS). Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            graph_base_url: "https://graph.microsoft.com/v1.0".to_owned(),
            login_base_url: "https://login.microsoftonline.com".to_owned(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Microsoft Graph subscriptions behind the `SubscriptionApi` port.
pub struct GraphApi {
    /// Authenticated HTTP calls, with the bearer tokens per credentials row.
    client: GraphClient,
    /// Domain time (when a create was asked).
    clock: SharedClock,
    /// Creates whose answer was lost, by clientState.
    unconfirmed: Arc<UnconfirmedCreates>,
    /// The providers' request limits (shared with the Google adapters).
    limits: Arc<Limits>,
    /// The calendar view a calendar's delta cursor covers.
    calendar_window: CalendarWindow,
}

impl std::fmt::Debug for GraphApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphApi")
            .field("tokens", self.client.tokens())
            .finish_non_exhaustive()
    }
}

impl GraphApi {
    /// An adapter calling `config`'s endpoints, reading credentials from
    /// `credentials`, judging token expiry on `clock`. Fails only on an unusable
    /// configuration (bad URL, TLS setup).
    pub fn new(
        config: GraphConfig,
        credentials: Arc<dyn CredentialSource>,
        clock: SharedClock,
    ) -> Result<Self, GraphError> {
        let limits = Arc::new(Limits::unlimited(Arc::clone(&clock)));
        Self::limited(config, credentials, clock, limits)
    }

    /// [`GraphApi::new`] within `limits`: every request is checked against
    /// them before it is sent, and [`SubscriptionApi::admit`] waits for them.
    pub fn limited(
        config: GraphConfig,
        credentials: Arc<dyn CredentialSource>,
        clock: SharedClock,
        limits: Arc<Limits>,
    ) -> Result<Self, GraphError> {
        let client = GraphClient::connect(
            &client::GRAPH,
            Endpoints {
                base_url: &config.graph_base_url,
                token: TokenEndpoint::Authority(&config.login_base_url),
                request_timeout: config.request_timeout,
                connect_timeout: config.connect_timeout,
            },
            credentials,
            Arc::clone(&clock),
            Arc::clone(&limits),
        )?;
        Ok(Self {
            client,
            unconfirmed: Arc::new(UnconfirmedCreates::on_clock(Arc::clone(&clock))),
            clock,
            limits,
            calendar_window: CalendarWindow::default(),
        })
    }

    /// The same adapter, its calendars' delta cursors covering `window`.
    pub fn with_calendar_window(mut self, window: CalendarWindow) -> Self {
        self.calendar_window = window;
        self
    }

    /// Starts the task that deletes the subscriptions lost creates left behind
    /// (on the current runtime) and returns what intake reports them with.
    pub fn start_orphan_cleanup(self: &Arc<Self>) -> OrphanCleanup {
        let (queue, mut found) = orphans::queue();
        let api = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(orphan) = found.recv().await {
                let (provider, id) = (&orphan.provider, &orphan.subscription_id);
                let span = call_span(provider, Operation::Delete, Some(id));
                if let Err(e) = api.delete_id(provider, id).instrument(span).await {
                    failed(provider, &e);
                    // Its next notification tries again.
                    api.unconfirmed
                        .relist(&orphan, api.clock.now(), Self::lifetime_for(provider));
                }
            }
        });
        OrphanCleanup::new(Arc::clone(&self.unconfirmed), queue)
    }

    /// The token cache, e.g. to drop a connection's token when its credentials
    /// change.
    pub fn tokens(&self) -> &Arc<TokenCache> {
        self.client.tokens()
    }

    /// The longest lifetime Graph grants `provider`'s resource, less
    /// [`CLOCK_SKEW_MARGIN`].
    pub fn lifetime_for(provider: &Provider) -> TimeDelta {
        // Both Graph kinds watch Outlook resources (messages, events) without
        // resource data. Rich notifications would cap it at
        // RICH_NOTIFICATIONS_MAX_MINUTES.
        let _ = provider;
        TimeDelta::minutes(OUTLOOK_MAX_MINUTES) - CLOCK_SKEW_MARGIN
    }

    async fn create_inner(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, GraphError> {
        let charge = charge_of(provider)?;
        let body = CreateBody {
            change_type: CHANGE_TYPES,
            notification_url: &request.notification_url,
            lifecycle_notification_url: &request.lifecycle_url,
            resource: &provider.resource,
            expiration_date_time: graph_datetime(request.expires_at),
            client_state: &request.client_state,
            latest_supported_tls_version: LATEST_SUPPORTED_TLS_VERSION,
        };
        let url = client::subscriptions_url(&self.client, None)?;
        // Listed while in flight; lost unless the outcome is known (an
        // uncertain error, or the caller dropping this future, leaves it lost).
        self.unconfirmed.add(
            &request.client_state,
            provider,
            self.clock.now(),
            Self::lifetime_for(provider),
        );
        let mut outcome = orphans::SettleOrLose::new(&self.unconfirmed, &request.client_state);
        let created = self
            .grant(
                &charge,
                Operation::Create,
                reqwest::Method::POST,
                url,
                &body,
            )
            .await;
        match &created {
            Ok(granted) => outcome.created(&granted.external_id),
            Err(e) if e.may_have_created() => drop(outcome),
            Err(_) => outcome.refused(),
        }
        let created = created?;
        tracing::info!(subscription = %created.external_id, expires_at = %created.expires_at, "Graph subscription created");
        Ok(created)
    }

    async fn renew_inner(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, GraphError> {
        let charge = charge_of(provider)?;
        let body = RenewBody {
            expiration_date_time: graph_datetime(expires_at),
        };
        let url = client::subscriptions_url(&self.client, Some(&subscription.external_id))?;
        let renewed = self
            .grant(
                &charge,
                Operation::Renew,
                reqwest::Method::PATCH,
                url,
                &body,
            )
            .await?;
        tracing::info!(expires_at = %renewed.expires_at, "Graph subscription renewed");
        Ok(renewed)
    }

    /// Sends a subscription body (POST to create, PATCH to renew) and reads back
    /// the subscription Graph granted.
    async fn grant(
        &self,
        charge: &Charge<'_>,
        operation: Operation,
        method: reqwest::Method,
        url: reqwest::Url,
        body: &impl serde::Serialize,
    ) -> Result<ProviderSubscription, GraphError> {
        let body = self.client.json(body)?;
        let answer = self
            .client
            .call(charge, operation, method, url, Some(&body), &[])
            .await?;
        let granted = client::granted(operation, &answer)?;
        Ok(ProviderSubscription {
            // Graph keeps the id on PATCH; trust what it says if it ever differs.
            external_id: granted.id,
            resource_id: None,
            expires_at: granted.expires_at,
            client_state: None,
            history_id: None,
        })
    }

    async fn delete_id(&self, provider: &Provider, id: &str) -> Result<(), GraphError> {
        let charge = charge_of(provider)?;
        let url = client::subscriptions_url(&self.client, Some(id))?;
        let answer = self
            .client
            .call(
                &charge,
                Operation::Delete,
                reqwest::Method::DELETE,
                url,
                None,
                &[404, 410],
            )
            .await?;
        if answer.status == 404 || answer.status == 410 {
            tracing::info!(
                status = answer.status,
                "Graph subscription was already gone"
            );
        } else {
            tracing::info!("Graph subscription deleted");
        }
        Ok(())
    }
}

/// What a Graph provider's `/subscriptions` request is charged: one write of
/// its app in its tenant, on its mailbox.
fn charge_of(provider: &Provider) -> Result<Charge<'_>, GraphError> {
    if !provider.kind.is_graph() {
        return Err(GraphError::WrongKind(provider.kind));
    }
    Ok(Charge {
        family: Family::Graph,
        provider,
        credentials: credentials_id(provider)?,
        units: 1,
    })
}

/// Span for one Graph call.
fn call_span(
    provider: &Provider,
    operation: Operation,
    subscription: Option<&str>,
) -> tracing::Span {
    call::call_span(&client::GRAPH, operation.as_str(), provider, subscription)
}

/// Logs a classified Graph failure and returns it.
fn failed(provider: &Provider, error: &GraphError) -> ApiError {
    call::failed(&client::GRAPH, provider, error)
}

#[async_trait]
impl SubscriptionApi for GraphApi {
    fn max_lifetime(&self, provider: &Provider) -> TimeDelta {
        Self::lifetime_for(provider)
    }

    /// Books the attempt's one write in its app's budget in the tenant and
    /// waits for it (see [`Limits::admit`]).
    async fn admit(&self, provider: &Provider, _attempt: AttemptKind) {
        let Ok(charge) = charge_of(provider) else {
            return;
        };
        if let Some(app) = self.client.tokens().app(charge.credentials).await {
            self.limits.admit(&charge, &app).await;
        }
    }

    async fn create(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        let span = call_span(provider, Operation::Create, None);
        async {
            self.create_inner(provider, request)
                .await
                .map_err(|e| failed(provider, &e))
        }
        .instrument(span)
        .await
    }

    async fn renew(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        let span = call_span(provider, Operation::Renew, Some(&subscription.external_id));
        async {
            self.renew_inner(provider, subscription, expires_at)
                .await
                .map_err(|e| failed(provider, &e))
        }
        .instrument(span)
        .await
    }

    async fn delete(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), ApiError> {
        let span = call_span(provider, Operation::Delete, Some(&subscription.external_id));
        async {
            self.delete_id(provider, &subscription.external_id)
                .await
                .map_err(|e| failed(provider, &e))
        }
        .instrument(span)
        .await
    }

    async fn changes_since(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        let span = call_span(provider, Operation::Delta, None);
        self.delta_page(provider, from, page_size)
            .instrument(span)
            .await
    }
}
