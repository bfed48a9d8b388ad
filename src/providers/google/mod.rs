//! The Google adapters: the core's `SubscriptionApi` port over Google Calendar v3
//! watch channels (`google_calendar`) and Gmail v1 mailbox watches (`gmail`).
//!
//! Owns the watch and stop requests, the lifetimes Google grants, bearer tokens via
//! the OAuth [`TokenCache`](crate::providers::oauth::TokenCache) (refresh-token
//! grant against Google's token endpoint) and the classification of every Google
//! failure (`error`). It must not schedule,
//! retry beyond one token refresh after a 401, or touch the store or the bus: the
//! lifecycle decides from the returned `ApiError`, and the supervisor stops a
//! rotated-out channel through [`SubscriptionApi::delete`].
//!
//! - `client`: wire shapes, and what the shared authenticated call
//!   (`providers::call`) needs to know of this API.
//! - `error`: [`GoogleError`] and the classification table.
//! - `pending`: channels asked for and not yet recorded, so intake can route
//!   the `sync` message Google sends before `events.watch` answers.
//! - `unconfirmed`: channels whose `events.watch` answer was lost; stopped once
//!   the next channel of the same calendar tells us its resourceId (no pile-up).
//!
//! A Calendar channel can never be extended: `renew` creates a new channel (new id,
//! new token) and returns it; the supervisor records it and then stops the old one.
//! A Gmail watch is extended by calling `users.watch` again; its id stays.

mod client;
mod error;
mod pending;
mod sync;
#[cfg(test)]
mod tests;
mod unconfirmed;

pub use client::{GmailWatchBody, StopChannelBody, WEB_HOOK, WatchChannelBody, parse_millis};
pub use error::{Call, GoogleError, GoogleErrorBody, required_scope};
pub use pending::{PENDING_TTL, PendingChannel, PendingChannels};
pub use sync::{GET_PROFILE_UNITS, HISTORY_LIST_UNITS};
pub use unconfirmed::UnconfirmedChannels;

use crate::providers::call::{self, Endpoints, TokenEndpoint, credentials_id};
use crate::providers::limits::{Charge, Family, Limits};
use crate::providers::oauth::CredentialSource;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use client::{
    ChannelAnswer, GmailWatchAnswer, GoogleClient, USERS_STOP_UNITS, USERS_WATCH_UNITS,
    parse_answer,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{AttemptKind, Provider, ProviderId, ProviderKind, Subscription};
pub use subkeeper_actors::ports::MailboxWatchers;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{
    ApiError, ChangePage, ChangesError, ChangesFrom, CreateRequest, ProviderSubscription,
    StoreError, SubscriptionApi,
};
use tracing::Instrument;

/// Longest lifetime asked of a Calendar watch channel, in seconds: Google
/// documents no fixed maximum for Calendar and grants at most about a week in
/// practice (its `expiration` answer is what is stored, never this).
pub const CALENDAR_MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Lifetime of a Gmail watch: fixed by Google at 7 days from the last
/// `users.watch`, which Google recommends calling daily.
pub const GMAIL_WATCH_LIFETIME: TimeDelta = TimeDelta::days(7);

/// Subtracted from the maximum so our clock running ahead of Google's never asks
/// for more than it grants.
pub const CLOCK_SKEW_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// Labels a Gmail watch pushes changes for: new and changed inbox mail.
pub const GMAIL_LABEL_IDS: [&str; 1] = ["INBOX"];

/// Prefix of a Gmail watch's `external_id` (`gmail:<mailbox>:<uuid>`): Gmail has
/// no id for a watch, one exists per mailbox and Pub/Sub topic.
pub const GMAIL_ID_PREFIX: &str = "gmail:";

/// Where Google is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleConfig {
    /// Base of the Google APIs, no trailing slash (`https://www.googleapis.com`;
    /// the simulator's base). Calendar is `{base}/calendar/v3`, Gmail
    /// `{base}/gmail/v1`.
    pub base_url: String,
    /// Google's OAuth token endpoint (`https://oauth2.googleapis.com/token`).
    pub token_url: String,
    /// Pub/Sub topic Gmail publishes mailbox changes to
    /// (`projects/{project}/topics/{topic}`); empty: Gmail watches are refused.
    pub gmail_topic: String,
    /// Where Calendar channels deliver: the service's `{public_url}/webhooks/google`.
    pub calendar_address: String,
    /// Upper bound on one HTTP call, token requests included. Default 10 s.
    pub request_timeout: Duration,
    /// Upper bound on establishing a connection. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        Self {
            base_url: "https://www.googleapis.com".to_owned(),
            token_url: "https://oauth2.googleapis.com/token".to_owned(),
            gmail_topic: String::new(),
            calendar_address: "http://127.0.0.1:8080/webhooks/google".to_owned(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Both Google adapters over one HTTP client and one token cache.
pub struct GoogleApis {
    /// Calendar watch channels.
    pub calendar: GoogleCalendarApi,
    /// Gmail mailbox watches.
    pub gmail: GmailApi,
}

impl GoogleApis {
    /// Adapters calling `config`'s endpoints, reading credentials from
    /// `credentials`. Fails only on an unusable configuration.
    pub fn new(
        config: GoogleConfig,
        credentials: Arc<dyn CredentialSource>,
        watchers: Arc<dyn MailboxWatchers>,
        clock: SharedClock,
    ) -> Result<Self, GoogleError> {
        let limits = Arc::new(Limits::unlimited(Arc::clone(&clock)));
        Self::limited(config, credentials, watchers, clock, limits)
    }

    /// [`GoogleApis::new`] within `limits`: every request is checked against
    /// them before it is sent, and [`SubscriptionApi::admit`] waits for them.
    pub fn limited(
        config: GoogleConfig,
        credentials: Arc<dyn CredentialSource>,
        watchers: Arc<dyn MailboxWatchers>,
        clock: SharedClock,
        limits: Arc<Limits>,
    ) -> Result<Self, GoogleError> {
        let client = Arc::new(GoogleClient::connect(
            &client::GOOGLE,
            Endpoints {
                base_url: &config.base_url,
                token: TokenEndpoint::Fixed(&config.token_url),
                request_timeout: config.request_timeout,
                connect_timeout: config.connect_timeout,
            },
            credentials,
            Arc::clone(&clock),
            Arc::clone(&limits),
        )?);
        Ok(Self {
            calendar: GoogleCalendarApi {
                client: Arc::clone(&client),
                clock: Arc::clone(&clock),
                address: config.calendar_address,
                pending: Arc::new(PendingChannels::default()),
                unconfirmed: UnconfirmedChannels::default(),
                limits: Arc::clone(&limits),
            },
            gmail: GmailApi {
                client,
                topic: config.gmail_topic,
                watchers,
                limits,
            },
        })
    }
}

/// Google Calendar watch channels behind the `SubscriptionApi` port.
pub struct GoogleCalendarApi {
    /// Authenticated HTTP calls.
    client: Arc<GoogleClient>,
    /// Domain time: the requested ttl counts from now.
    clock: SharedClock,
    /// Where a rotated channel delivers (the port hands `create` the URL, not
    /// `renew`).
    address: String,
    /// Channels asked for and not yet recorded (read by intake).
    pending: Arc<PendingChannels>,
    /// Channels that may exist without our knowing (lost answers).
    unconfirmed: UnconfirmedChannels,
    /// The providers' request limits (shared with the other adapters).
    limits: Arc<Limits>,
}

impl std::fmt::Debug for GoogleCalendarApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleCalendarApi").finish_non_exhaustive()
    }
}

impl GoogleCalendarApi {
    /// The channels this adapter is opening, for intake to route their first
    /// messages.
    pub fn pending_channels(&self) -> Arc<PendingChannels> {
        Arc::clone(&self.pending)
    }

    /// Opens a channel on the provider's calendar.
    async fn watch(
        &self,
        provider: &Provider,
        token: &str,
        address: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, GoogleError> {
        let charge = charge_of(provider, ProviderKind::GoogleCalendar, 1)?;
        let channel_id = uuid::Uuid::new_v4().to_string();
        let ttl = (expires_at - self.clock.now())
            .num_seconds()
            .clamp(1, CALENDAR_MAX_TTL_SECONDS);
        let body = self.client.json(&WatchChannelBody {
            id: &channel_id,
            kind: WEB_HOOK,
            address,
            token,
            params: BTreeMap::from([("ttl", ttl.to_string())]),
        })?;
        let url = self.client.url(&[
            "calendar",
            "v3",
            "calendars",
            &provider.resource,
            "events",
            "watch",
        ])?;
        // Google may deliver the sync message before it answers.
        self.pending.open(
            &channel_id,
            PendingChannel {
                provider: provider.id,
                tenant: provider.tenant.clone(),
                token: token.to_owned(),
            },
        );
        // Routed only if the call returns the channel: an error, or the caller
        // dropping this future on its own timeout, forgets it.
        let mut routed = pending::ForgetUnlessKept::new(&self.pending, &channel_id);
        // Listed until the outcome is known: a cancelled call stays listed.
        self.unconfirmed
            .add(provider.id, &channel_id, self.clock.now());
        let opened = self
            .call_watch(&charge, url, &body, &channel_id, expires_at)
            .await
            .map(|mut channel| {
                channel.client_state = Some(token.to_owned());
                channel
            });
        match &opened {
            Ok(channel) => {
                routed.keep();
                self.unconfirmed.settle(provider.id, &channel_id);
                if let Some(resource_id) = channel.resource_id.as_deref() {
                    self.stop_unconfirmed(&charge, resource_id).await;
                }
            }
            Err(e) => {
                // Not routed (the guard forgets it): a channel we may never
                // record is not one to deliver for.
                if !e.may_have_opened() {
                    self.unconfirmed.settle(provider.id, &channel_id);
                }
            }
        }
        opened
    }

    /// Stops the provider's channels whose watch answer was lost, now that a
    /// channel on the same calendar named its resourceId. A failed stop is
    /// kept for the next successful watch; it never fails this one.
    async fn stop_unconfirmed(&self, charge: &Charge<'_>, resource_id: &str) {
        let provider = charge.provider;
        let lifetime = TimeDelta::seconds(CALENDAR_MAX_TTL_SECONDS);
        let listed = self
            .unconfirmed
            .take(provider.id, self.clock.now(), lifetime);
        let mut keep = Vec::new();
        for (channel_id, asked_at) in listed {
            match self.stop_channel(charge, &channel_id, resource_id).await {
                Ok(()) => {
                    tracing::info!(channel = %channel_id, "channel whose watch answer was lost is stopped (or never existed)")
                }
                Err(e) => {
                    tracing::warn!(channel = %channel_id, error = %e, "could not stop a channel whose watch answer was lost; retrying after the next watch");
                    keep.push((channel_id, asked_at));
                }
            }
        }
        self.unconfirmed.put_back(provider.id, keep);
    }

    /// The channels listed as possibly open without our knowing, for `provider`.
    pub fn unconfirmed_channels(&self, provider: ProviderId) -> Vec<String> {
        self.unconfirmed.listed(provider)
    }

    /// `events.watch` and the checks on its answer.
    async fn call_watch(
        &self,
        charge: &Charge<'_>,
        url: reqwest::Url,
        body: &serde_json::Value,
        channel_id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, GoogleError> {
        let answer = self
            .client
            .post(charge, Call::EventsWatch, url, Some(body), &[])
            .await?;
        let channel: ChannelAnswer = parse_answer(Call::EventsWatch, &answer)?;
        let invalid = |reason: String| GoogleError::InvalidResponse {
            call: Call::EventsWatch,
            status: answer.status,
            reason,
        };
        if channel.id != channel_id {
            return Err(invalid(format!(
                "the channel id '{}' is not the one requested",
                channel.id
            )));
        }
        let expires_at = match channel.expiration.as_deref() {
            Some(raw) => parse_millis(raw)
                .ok_or_else(|| invalid(format!("expiration '{raw}' is not Unix milliseconds")))?,
            // No expiration in the answer: Google's default applies; assume what
            // was asked so the lifecycle renews in time.
            None => expires_at,
        };
        tracing::info!(channel = %channel.id, expires_at = %expires_at, "Google Calendar channel opened");
        Ok(ProviderSubscription {
            external_id: channel.id,
            resource_id: Some(channel.resource_id),
            expires_at,
            // The token the caller chose (set by `watch`).
            client_state: None,
            history_id: None,
        })
    }

    async fn stop(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), GoogleError> {
        let charge = charge_of(provider, ProviderKind::GoogleCalendar, 1)?;
        let Some(resource_id) = subscription.resource_id.as_deref() else {
            // Never stored a resourceId: the channel cannot be named to Google; it
            // lapses at its own expiry.
            tracing::warn!(channel = %subscription.external_id, "channel has no resourceId; it lapses at its expiry");
            return Ok(());
        };
        self.stop_channel(&charge, &subscription.external_id, resource_id)
            .await
    }

    /// `channels.stop`; a channel Google does not know (404/410) counts as stopped.
    async fn stop_channel(
        &self,
        charge: &Charge<'_>,
        channel_id: &str,
        resource_id: &str,
    ) -> Result<(), GoogleError> {
        let body = self.client.json(&StopChannelBody {
            id: channel_id,
            resource_id,
        })?;
        let url = self.client.url(&["calendar", "v3", "channels", "stop"])?;
        let answer = self
            .client
            .post(charge, Call::ChannelsStop, url, Some(&body), &[404, 410])
            .await?;
        if answer.status == 404 || answer.status == 410 {
            tracing::info!(
                status = answer.status,
                "Google Calendar channel was already gone"
            );
        } else {
            tracing::info!("Google Calendar channel stopped");
        }
        Ok(())
    }
}

#[async_trait]
impl SubscriptionApi for GoogleCalendarApi {
    fn max_lifetime(&self, _provider: &Provider) -> TimeDelta {
        TimeDelta::seconds(CALENDAR_MAX_TTL_SECONDS) - CLOCK_SKEW_MARGIN
    }

    /// Books the attempt's `events.watch` in the account's Calendar budget.
    async fn admit(&self, provider: &Provider, _attempt: AttemptKind) {
        let charge = charge_of(provider, ProviderKind::GoogleCalendar, 1);
        admit(&self.client, &self.limits, charge).await;
    }

    async fn create(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        let span = call_span(provider, Call::EventsWatch, None);
        self.watch(
            provider,
            &request.client_state,
            &request.notification_url,
            request.expires_at,
        )
        .instrument(span)
        .await
        .map_err(|e| failed(provider, &e))
    }

    async fn renew(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        let span = call_span(provider, Call::EventsWatch, Some(&subscription.external_id));
        async {
            // A channel cannot be extended: open its successor with a fresh token.
            // The supervisor records it, then stops this one via `delete`.
            self.watch(provider, &new_channel_token(), &self.address, expires_at)
                .await
        }
        .instrument(span)
        .await
        .map_err(|e| failed(provider, &e))
    }

    async fn delete(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), ApiError> {
        let span = call_span(
            provider,
            Call::ChannelsStop,
            Some(&subscription.external_id),
        );
        self.stop(provider, subscription)
            .instrument(span)
            .await
            .map_err(|e| failed(provider, &e))
    }

    async fn changes_since(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        self.changes(provider, from, page_size).await
    }
}

/// Gmail mailbox watches behind the `SubscriptionApi` port.
pub struct GmailApi {
    /// Authenticated HTTP calls.
    client: Arc<GoogleClient>,
    /// Pub/Sub topic Gmail publishes to.
    topic: String,
    /// Other providers on the same mailbox (their watch is ours too).
    watchers: Arc<dyn MailboxWatchers>,
    /// The providers' request limits (shared with the other adapters).
    limits: Arc<Limits>,
}

impl std::fmt::Debug for GmailApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmailApi")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl GmailApi {
    /// Starts or extends the watch on the provider's mailbox, known to us as
    /// `external_id`; Google answers the new expiry (7 days out).
    async fn watch(
        &self,
        provider: &Provider,
        external_id: String,
    ) -> Result<ProviderSubscription, GoogleError> {
        let charge = charge_of(provider, ProviderKind::Gmail, USERS_WATCH_UNITS)?;
        if self.topic.trim().is_empty() {
            return Err(GoogleError::Config(
                "no Pub/Sub topic for Gmail watches: set SUBKEEPER_GMAIL_PUBSUB_TOPIC to projects/{project}/topics/{topic}".to_owned(),
            ));
        }
        let body = self.client.json(&GmailWatchBody {
            topic_name: &self.topic,
            label_ids: GMAIL_LABEL_IDS.to_vec(),
            label_filter_behavior: "include",
        })?;
        let url = self
            .client
            .url(&["gmail", "v1", "users", &provider.resource, "watch"])?;
        let answer = self
            .client
            .post(&charge, Call::UsersWatch, url, Some(&body), &[])
            .await?;
        let watch: GmailWatchAnswer = parse_answer(Call::UsersWatch, &answer)?;
        let expires_at =
            parse_millis(&watch.expiration).ok_or_else(|| GoogleError::InvalidResponse {
                call: Call::UsersWatch,
                status: answer.status,
                reason: format!("expiration '{}' is not Unix milliseconds", watch.expiration),
            })?;
        tracing::info!(expires_at = %expires_at, history_id = watch.history_id.as_deref().unwrap_or(""), "Gmail watch set");
        Ok(ProviderSubscription {
            external_id,
            resource_id: None,
            expires_at,
            client_state: None,
            history_id: watch.history_id,
        })
    }
}

#[async_trait]
impl SubscriptionApi for GmailApi {
    fn max_lifetime(&self, _provider: &Provider) -> TimeDelta {
        GMAIL_WATCH_LIFETIME - CLOCK_SKEW_MARGIN
    }

    /// Books the attempt's `users.watch` units in the account's Gmail quota.
    async fn admit(&self, provider: &Provider, _attempt: AttemptKind) {
        let charge = charge_of(provider, ProviderKind::Gmail, USERS_WATCH_UNITS);
        admit(&self.client, &self.limits, charge).await;
    }

    async fn create(
        &self,
        provider: &Provider,
        _request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        let span = call_span(provider, Call::UsersWatch, None);
        let external_id = format!(
            "{GMAIL_ID_PREFIX}{}:{}",
            provider.resource,
            uuid::Uuid::new_v4().simple()
        );
        self.watch(provider, external_id)
            .instrument(span)
            .await
            .map_err(|e| failed(provider, &e))
    }

    async fn renew(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        _expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        let span = call_span(provider, Call::UsersWatch, Some(&subscription.external_id));
        // Calling users.watch again extends the mailbox's one watch: its id stays.
        self.watch(provider, subscription.external_id.clone())
            .instrument(span)
            .await
            .map_err(|e| failed(provider, &e))
    }

    async fn delete(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), ApiError> {
        let span = call_span(provider, Call::UsersStop, Some(&subscription.external_id));
        async {
            let charge = charge_of(provider, ProviderKind::Gmail, USERS_STOP_UNITS)?;
            let shared = self
                .watchers
                .watched_by_others(&provider.resource, provider.id)
                .await
                .map_err(|e: StoreError| GoogleError::Store(e.to_string()))?;
            if shared {
                // Stopping it would stop it for them too; it lapses within 7
                // days once nobody renews it.
                tracing::info!("Gmail watch kept: another provider watches this mailbox");
                return Ok(());
            }
            let url = self
                .client
                .url(&["gmail", "v1", "users", &provider.resource, "stop"])?;
            let answer = self
                .client
                .post(&charge, Call::UsersStop, url, None, &[404, 410])
                .await?;
            tracing::info!(status = answer.status, "Gmail watch stopped");
            Ok(())
        }
        .instrument(span)
        .await
        .map_err(|e: GoogleError| failed(provider, &e))
    }

    async fn changes_since(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        self.changes(provider, from, page_size).await
    }
}

/// A fresh channel token: 32 random bytes, hex (64 characters; Google allows 256).
fn new_channel_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a request of a provider of `kind` is charged: `units` of its account's
/// budget for that API, through its credentials row.
fn charge_of(
    provider: &Provider,
    kind: ProviderKind,
    units: u32,
) -> Result<Charge<'_>, GoogleError> {
    if provider.kind != kind {
        return Err(GoogleError::WrongKind(provider.kind));
    }
    Ok(Charge {
        family: Family::of(kind),
        provider,
        credentials: credentials_id(provider)?,
        units,
    })
}

/// Books `charge` in its account's budget and waits for it (see
/// [`Limits::admit`]); unknown credentials are checked when sent instead.
async fn admit(client: &GoogleClient, limits: &Limits, charge: Result<Charge<'_>, GoogleError>) {
    let Ok(charge) = charge else { return };
    if let Some(app) = client.tokens().app(charge.credentials).await {
        limits.admit(&charge, &app).await;
    }
}

/// Span for one Google call.
fn call_span(provider: &Provider, call: Call, subscription: Option<&str>) -> tracing::Span {
    call::call_span(&client::GOOGLE, call.as_str(), provider, subscription)
}

/// Logs a classified Google failure and returns it.
fn failed(provider: &Provider, error: &GoogleError) -> ApiError {
    call::failed(&client::GOOGLE, provider, error)
}
