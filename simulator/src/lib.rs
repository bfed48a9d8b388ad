//! The provider simulator: a faithful stand-in for Microsoft Graph's
//! subscription API and the Microsoft identity platform's token endpoint, and for
//! Google Calendar watch channels, Gmail watches (Pub/Sub push) and Google's
//! OAuth token endpoint, served over real HTTP so the service, its tests and the
//! demo run without Microsoft or Google.
//!
//! Owns simulated provider state (tokens, subscriptions, a movable clock), fault
//! injection, the request journal, and the calls the provider makes back to the
//! subscriber (validation handshakes, change and lifecycle notifications). It
//! must not import the service's adapters — the crate boundary enforces that: it
//! depends on `subkeeper-actors` only for the clock port, never on `subkeeper` —
//! and it only speaks the providers' wire protocols, so a client that works
//! against it works against the real thing.
//!
//! Layout: `graph/` holds the Microsoft part (pure model, wire shapes, HTTP
//! handlers, outgoing deliveries, token endpoint); `control.rs` is the `/_sim/`
//! API that mirrors [`Simulator`]'s methods over HTTP; `google/` holds the Google
//! part (Calendar, Gmail, token endpoint) in the same server. `exchange.rs` is
//! the request plumbing both families' API handlers share (authenticate, fault
//! rules, journaling, held answers); `faults.rs` and `journal.rs` hold the rules
//! and the record it consults. `limits/` enforces the providers' request limits
//! (and forced throttling) that the plumbing consults before the fault rules.
//! and the record it consults. `changes/` holds the changes made per watched
//! resource — announced, dropped or held — which Graph's delta queries,
//! Calendar's `events.list` and Gmail's `history.list` read back.

pub mod apps;
mod changes;
pub mod clock;
mod control;
mod exchange;
pub mod faults;
pub mod google;
pub mod graph;
pub mod journal;
pub mod limits;

#[cfg(test)]
mod tests;

pub use apps::{IdentityProvider, RegisteredApp};
pub use changes::{
    ChangeDelivery, ChangeError, ChangeReport, ChangeRequest, Delivery, FeedProvider, FeedRef,
    ReleaseSelector, SimChange, TOKEN_CACHE_CAPACITY,
};
pub use clock::SimClock;
pub use faults::{Fault, FaultOperation, FaultRule};
pub use graph::delivery::DeliveryAttempt;
pub use graph::wire::{ChangeType, LifecycleEvent};
pub use journal::{Operation, RecordedRequest};
pub use limits::{
    EarlyRetry, ForcedThrottle, LimitKind, ProviderLimits, RateLimit, RequestFilter, ThrottleScope,
    ThrottleWindow, busiest_window, early_retries,
};

use actix_web::{App, HttpServer, web};
use apps::AppRegistry;
use chrono::{DateTime, TimeDelta, Utc};
use faults::FaultBook;
use google::model::{GoogleState, StoredChannel, StoredWatch};
use graph::model::{GraphState, StoredSubscription};
use journal::{Journal, lock};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subkeeper_actors::ports::clock::{Clock, ScaledClock, SharedClock, SystemClock};

/// How strict the simulated provider is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Accept `http://` notification URLs (Graph's `notificationUrl` and
    /// `lifecycleNotificationUrl`, Calendar's channel `address`) whose host is
    /// loopback (`127.0.0.0/8`, `::1`, `localhost`), for tests and the demo
    /// that receive on plain 127.0.0.1. Off: every `http://` URL is refused, as
    /// Graph and Google refuse them.
    pub allow_http_loopback: bool,
    /// Further hosts whose `http://` notification URLs are accepted (a compose
    /// network's service name). Empty by default.
    pub allow_http_hosts: Vec<String>,
    /// Accept any client id and secret at both token endpoints, and
    /// `/common` or `/consumers` with client credentials (the demo and a
    /// local stack whose credentials are made up). Off: only apps registered
    /// ([`Simulator::register_app`], `config.apps`) get tokens, and the
    /// endpoints refuse the rest as the real ones do.
    pub accept_any_credentials: bool,
    /// Apps registered at start; more through [`Simulator::register_app`] or
    /// `POST /_sim/apps`.
    pub apps: Vec<RegisteredApp>,
    /// How long the subscriber has to answer a validation handshake (Graph: 10 s).
    pub validation_timeout: Duration,
    /// Run the validation handshake on create (and on a PATCH that moves the
    /// notification URL). Off only for tests that have no receiver.
    pub validate_endpoints: bool,
    /// How long a notification POST may take before it counts as not delivered
    /// (Graph expects an answer within 3 s).
    pub notification_timeout: Duration,
    /// Where [`Simulator::gmail_push`] POSTs Pub/Sub push messages (the push
    /// subscription's endpoint); `None` until set here or through
    /// `POST /_sim/google/push-endpoint`.
    pub gmail_push_endpoint: Option<String>,
    /// Deliver a new Calendar channel's `sync` message, and wait for its answer
    /// (up to `notification_timeout`), before answering `events.watch` — the
    /// order a subscriber sees when Google's sync outruns its own answer, pinned
    /// so tests can rely on it. Off: the sync is sent right after the answer.
    pub google_sync_before_answer: bool,
    /// Requests the journal keeps (the latest); older ones are let go and
    /// counted ([`Simulator::requests_dropped`]).
    pub journal_capacity: usize,
    /// The providers' request limits, enforced (the published numbers by
    /// default; see [`ProviderLimits`]).
    pub limits: ProviderLimits,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            allow_http_loopback: false,
            allow_http_hosts: Vec::new(),
            accept_any_credentials: false,
            apps: Vec::new(),
            validation_timeout: Duration::from_secs(10),
            validate_endpoints: true,
            notification_timeout: Duration::from_secs(3),
            gmail_push_endpoint: None,
            google_sync_before_answer: false,
            journal_capacity: journal::DEFAULT_JOURNAL_CAPACITY,
            limits: ProviderLimits::default(),
        }
    }
}

/// What can go wrong when the simulator is asked to act as the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No live subscription with that id.
    #[error("no live subscription {subscription_id}")]
    SubscriptionNotFound {
        /// The id asked for.
        subscription_id: String,
    },
    /// A `reauthorizationRequired` challenge is pending: Graph sends no change
    /// notifications until the subscription is renewed or reauthorized.
    #[error("subscription {subscription_id} is waiting for reauthorization")]
    ReauthorizationPending {
        /// The id asked for.
        subscription_id: String,
    },
    /// No live (unexpired, unstopped) Calendar channel with that id.
    #[error("no live Google channel {channel_id}")]
    ChannelNotFound {
        /// The id asked for.
        channel_id: String,
    },
    /// No live Gmail watch on that mailbox.
    #[error("no live Gmail watch for {email}")]
    WatchNotFound {
        /// The address asked for.
        email: String,
    },
    /// [`Simulator::gmail_push`] was called with no push endpoint configured.
    #[error("no Gmail push endpoint configured")]
    NoPushEndpoint,
}

/// A live subscription as the simulator holds it, for assertions and the demo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimSubscription {
    /// Graph's id.
    pub id: String,
    /// Tenant it belongs to.
    pub tenant: String,
    /// App (client id) that created it.
    pub application_id: String,
    /// Resource path.
    pub resource: String,
    /// Change types, comma-separated.
    pub change_type: String,
    /// Shared secret echoed in notifications.
    pub client_state: Option<String>,
    /// Change notification endpoint.
    pub notification_url: String,
    /// Lifecycle notification endpoint.
    pub lifecycle_notification_url: Option<String>,
    /// Provider time it expires.
    pub expiration_date_time: DateTime<Utc>,
    /// Rich notifications requested.
    pub include_resource_data: bool,
    /// Provider time it was created.
    pub created_at: DateTime<Utc>,
    /// A reauthorization challenge is pending.
    pub reauthorization_required: bool,
}

impl From<&StoredSubscription> for SimSubscription {
    fn from(s: &StoredSubscription) -> Self {
        Self {
            id: s.id.clone(),
            tenant: s.tenant.clone(),
            application_id: s.application_id.clone(),
            resource: s.resource.clone(),
            change_type: s.change_type.clone(),
            client_state: s.client_state.clone(),
            notification_url: s.notification_url.clone(),
            lifecycle_notification_url: s.lifecycle_notification_url.clone(),
            expiration_date_time: s.expiration,
            include_resource_data: s.include_resource_data,
            created_at: s.created_at,
            reauthorization_required: s.reauthorization_required,
        }
    }
}

/// A Calendar watch channel as the simulator holds it, for assertions and the
/// demo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimChannel {
    /// Client-chosen channel id.
    pub id: String,
    /// Google's opaque id of the watched calendar (stable per calendar).
    pub resource_id: String,
    /// Calendar watched.
    pub calendar_id: String,
    /// Echoed in `X-Goog-Channel-Token`.
    pub token: Option<String>,
    /// Where messages go.
    pub address: String,
    /// OAuth client that created it.
    pub client_id: String,
    /// Provider time it expires (ms precision).
    pub expiration: DateTime<Utc>,
    /// Provider time it was created.
    pub created_at: DateTime<Utc>,
    /// `channels.stop` was called.
    pub stopped: bool,
    /// Last message number sent (1 = the sync message).
    pub message_number: u64,
}

impl From<&StoredChannel> for SimChannel {
    fn from(c: &StoredChannel) -> Self {
        Self {
            id: c.id.clone(),
            resource_id: c.resource_id.clone(),
            calendar_id: c.calendar_id.clone(),
            token: c.token.clone(),
            address: c.address.clone(),
            client_id: c.client_id.clone(),
            expiration: c.expiration,
            created_at: c.created_at,
            stopped: c.stopped,
            message_number: c.message_number,
        }
    }
}

/// A Gmail watch as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimGmailWatch {
    /// Mailbox address.
    pub email: String,
    /// `userId` as the watch call named it (`me` or the address).
    pub user_id: String,
    /// Pub/Sub topic.
    pub topic_name: String,
    /// Label filter.
    pub label_ids: Vec<String>,
    /// `include` / `exclude`, when given.
    pub label_filter_behavior: Option<String>,
    /// OAuth client that watched.
    pub client_id: String,
    /// Provider time it lapses (ms precision).
    pub expiration: DateTime<Utc>,
    /// Provider time of the latest watch call.
    pub created_at: DateTime<Utc>,
    /// `users.stop` was called.
    pub stopped: bool,
}

impl From<&StoredWatch> for SimGmailWatch {
    fn from(w: &StoredWatch) -> Self {
        Self {
            email: w.email.clone(),
            user_id: w.user_id.clone(),
            topic_name: w.topic_name.clone(),
            label_ids: w.label_ids.clone(),
            label_filter_behavior: w.label_filter_behavior.clone(),
            client_id: w.client_id.clone(),
            expiration: w.expiration,
            created_at: w.created_at,
            stopped: w.stopped,
        }
    }
}

/// What happened when the simulator sent notifications for a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// The subscription notified about.
    pub subscription_id: String,
    /// Where the notifications went; `None` when there was nowhere to send them
    /// (a lifecycle event for a subscription without `lifecycleNotificationUrl`).
    pub url: Option<String>,
    /// The exact body POSTed on every attempt.
    pub body: serde_json::Value,
    /// One entry per POST, in order.
    pub attempts: Vec<DeliveryAttempt>,
    /// Headers that carry the message (Google Calendar's `X-Goog-*`; its body
    /// is empty and `body` is `null`). Empty for Graph and Pub/Sub.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl DeliveryReport {
    /// Every attempt was answered with a 2xx in time (false when none was made).
    pub fn all_accepted(&self) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(DeliveryAttempt::accepted)
    }
}

/// State shared by the handle, the HTTP handlers and the deliveries.
pub(crate) struct Shared {
    /// Strictness knobs.
    pub(crate) config: SimulatorConfig,
    /// Provider time.
    pub(crate) clock: Arc<SimClock>,
    /// Graph's tokens and subscriptions; never held across an await.
    pub(crate) graph: Mutex<GraphState>,
    /// Google's tokens, channels and watches; never held across an await.
    pub(crate) google: Mutex<GoogleState>,
    /// Registered OAuth clients of both identity providers (starts as the
    /// config's); never held across an await.
    pub(crate) apps: Mutex<AppRegistry>,
    /// Where Gmail's Pub/Sub pushes go (starts as the config's).
    pub(crate) gmail_push_endpoint: Mutex<Option<String>>,
    /// Changes made per watched resource, and the catch-up cursors over
    /// them; never held across an await.
    pub(crate) changes: Mutex<changes::model::ChangeLog>,
    /// Active fault rules.
    pub(crate) faults: FaultBook,
    /// Every request received.
    pub(crate) journal: Journal,
    /// Request-limit counters and forced throttles.
    pub(crate) limits: limits::LimitBook,
    /// Client for handshakes and notifications (no pooling: the simulator runs
    /// on several runtimes, and a pooled connection dies with the runtime that
    /// opened it).
    pub(crate) http: reqwest::Client,
}

/// Handle to one simulated provider; cheap to clone, all clones share state.
#[derive(Clone)]
pub struct Simulator {
    /// Everything, behind one `Arc`.
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.shared.config)
            .field("clock", &self.shared.clock)
            .finish_non_exhaustive()
    }
}

/// A running simulator server.
#[derive(Debug)]
pub struct SimServer {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// Stops the server.
    handle: actix_web::dev::ServerHandle,
    /// The spawned server future; ends when the server has stopped.
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimServer {
    /// Graph's base URL on this server (`{base}/v1.0`).
    pub fn graph_base_url(&self) -> String {
        Simulator::graph_base_url(&self.base_url)
    }

    /// The identity platform's base URL on this server.
    pub fn login_base_url(&self) -> String {
        Simulator::login_base_url(&self.base_url)
    }

    /// Google's base URL on this server (Calendar at `{base}/calendar/v3/`, Gmail
    /// at `{base}/gmail/v1/`, the token endpoint at `{base}/token`).
    pub fn google_base_url(&self) -> String {
        Simulator::google_base_url(&self.base_url)
    }

    /// Stops accepting requests, lets in-flight ones finish (at most 1 s) and
    /// waits for the server to end.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Waits until the server ends (it only ends when stopped).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

impl Simulator {
    /// A simulator with no tokens, subscriptions or faults, whose provider time is
    /// `base_clock` until advanced.
    pub fn new(config: SimulatorConfig, base_clock: SharedClock) -> Self {
        let journal = Journal::with_capacity(config.journal_capacity);
        // reqwest is built without a default crypto provider; the first caller
        // installs ring, later calls find it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("subkeeper-simulator (Microsoft Graph change notifications)")
            .build()
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "simulator HTTP client misconfigured; using defaults");
                reqwest::Client::new()
            });
        let gmail_push_endpoint = config.gmail_push_endpoint.clone();
        let mut apps = AppRegistry::default();
        for app in &config.apps {
            apps.register(app.clone());
        }
        Self {
            shared: Arc::new(Shared {
                config,
                clock: Arc::new(SimClock::new(base_clock)),
                gmail_push_endpoint: Mutex::new(gmail_push_endpoint),
                apps: Mutex::new(apps),
                graph: Mutex::new(GraphState::default()),
                google: Mutex::new(GoogleState::default()),
                changes: Mutex::new(changes::model::ChangeLog::default()),
                faults: FaultBook::default(),
                journal,
                limits: limits::LimitBook::default(),
                http,
            }),
        }
    }

    /// Provider time, shareable with the service under test.
    pub fn clock(&self) -> Arc<SimClock> {
        Arc::clone(&self.shared.clock)
    }

    /// Provider time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// Moves provider time forward (tokens and subscriptions expire by it).
    pub fn advance(&self, by: TimeDelta) {
        self.shared.clock.advance(by);
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    /// Serves Graph (`/v1.0/...`), the token endpoint (`/{tenant}/oauth2/v2.0/token`)
    /// and the control API (`/_sim/...`) on `listener`, on a spawned task of the
    /// current tokio runtime (an actix `System` is one). OS signals are left to
    /// the embedding program.
    pub fn start(&self, listener: TcpListener) -> std::io::Result<SimServer> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let sim = self.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(sim.clone()))
                .configure(control::routes)
                .configure(graph::routes)
                .configure(google::routes)
        })
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = runtime.spawn(server);
        Ok(SimServer {
            base_url: format!("http://{addr}"),
            handle,
            task,
        })
    }

    /// Graph's base URL for a server at `server_base`: `{server_base}/v1.0`.
    pub fn graph_base_url(server_base: &str) -> String {
        format!("{}/v1.0", server_base.trim_end_matches('/'))
    }

    /// The identity platform's base URL for a server at `server_base`; the token
    /// endpoint is `{login_base}/{tenant}/oauth2/v2.0/token`.
    pub fn login_base_url(server_base: &str) -> String {
        server_base.trim_end_matches('/').to_owned()
    }

    /// Registers an app with its identity provider (replacing the secret of
    /// one already registered): its client id and secret now get tokens.
    pub fn register_app(&self, app: RegisteredApp) {
        lock(&self.shared.apps).register(app);
    }

    /// The client ids registered with `provider`, sorted.
    pub fn registered_client_ids(&self, provider: IdentityProvider) -> Vec<String> {
        lock(&self.shared.apps).client_ids(provider)
    }

    /// Whether `url` may be `http://` under this configuration: only with a
    /// loopback host and `allow_http_loopback`, or a host in `allow_http_hosts`.
    pub(crate) fn http_allowed(&self, url: &url::Url) -> bool {
        let config = &self.shared.config;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        (loopback && config.allow_http_loopback)
            || url.host_str().is_some_and(|host| {
                config
                    .allow_http_hosts
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(host))
            })
    }

    /// Adds a fault rule; rules are checked oldest first.
    pub fn inject_fault(&self, rule: FaultRule) {
        self.shared.faults.add(rule);
    }

    /// The active fault rules with their remaining counts.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.shared.faults.rules()
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The requests the provider endpoints received, in order (the latest
    /// `journal_capacity` of them).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.journal.entries()
    }

    /// Requests the journal let go to stay within its capacity.
    pub fn requests_dropped(&self) -> u64 {
        self.shared.journal.dropped()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.journal.clear();
    }

    /// Live (unexpired, undeleted) subscriptions, oldest first.
    pub fn subscriptions(&self) -> Vec<SimSubscription> {
        let now = self.now();
        lock(&self.shared.graph)
            .all_live(now)
            .iter()
            .map(SimSubscription::from)
            .collect()
    }

    /// Issues an app-only access token (as the client-credentials grant would)
    /// without going through the token endpoint, for tests that exercise Graph
    /// calls only. Not journaled.
    pub fn issue_access_token(&self, tenant: &str, client_id: &str) -> String {
        let now = self.now();
        lock(&self.shared.graph).issue_token(tenant, client_id, true, now)
    }

    /// POSTs one change notification collection about a new item to the
    /// subscription's `notificationUrl`, `times` times (redeliveries of the same
    /// body), and reports each answer.
    pub async fn notify(
        &self,
        subscription_id: &str,
        change_type: ChangeType,
        times: u32,
    ) -> Result<DeliveryReport, SimError> {
        let subscription = self.live_subscription(subscription_id)?;
        if subscription.reauthorization_required {
            return Err(SimError::ReauthorizationPending {
                subscription_id: subscription_id.to_owned(),
            });
        }
        let item_id = format!("AAMkAG{}AAA=", graph::model::random_token(120));
        let body = graph::wire::change_notification_json(&subscription, change_type, &item_id);
        let attempts = graph::delivery::post_notifications(
            &self.shared.http,
            &subscription.notification_url,
            &body,
            times,
            self.shared.config.notification_timeout,
        )
        .await;
        Ok(DeliveryReport {
            subscription_id: subscription.id,
            url: Some(subscription.notification_url),
            body,
            attempts,
            headers: Vec::new(),
        })
    }

    /// Sends a lifecycle event to the subscription's `lifecycleNotificationUrl`
    /// (none is sent without one, as in Graph) and applies its effect:
    /// `subscriptionRemoved` deletes the subscription, `reauthorizationRequired`
    /// holds change notifications until a renew or reauthorize, `missed` only
    /// informs.
    pub async fn lifecycle(
        &self,
        subscription_id: &str,
        event: LifecycleEvent,
    ) -> Result<DeliveryReport, SimError> {
        let subscription = {
            let now = self.now();
            let mut graph = lock(&self.shared.graph);
            let subscription =
                graph
                    .live(subscription_id, now)
                    .ok_or_else(|| SimError::SubscriptionNotFound {
                        subscription_id: subscription_id.to_owned(),
                    })?;
            match event {
                LifecycleEvent::SubscriptionRemoved => {
                    graph.remove(subscription_id);
                }
                LifecycleEvent::ReauthorizationRequired => {
                    graph.require_reauthorization(subscription_id);
                }
                LifecycleEvent::Missed => {}
            }
            subscription
        };
        let body = graph::wire::lifecycle_notification_json(&subscription, event);
        let attempts = match &subscription.lifecycle_notification_url {
            Some(url) => {
                graph::delivery::post_notifications(
                    &self.shared.http,
                    url,
                    &body,
                    1,
                    self.shared.config.notification_timeout,
                )
                .await
            }
            None => Vec::new(),
        };
        Ok(DeliveryReport {
            subscription_id: subscription.id,
            url: subscription.lifecycle_notification_url,
            body,
            attempts,
            headers: Vec::new(),
        })
    }

    /// Google's API base URL for a server at `server_base` (what the service's
    /// `SUBKEEPER_GOOGLE_BASE_URL` points at): Calendar is under
    /// `{base}/calendar/v3/`, Gmail under `{base}/gmail/v1/`, the token endpoint
    /// at `{base}/token`.
    pub fn google_base_url(server_base: &str) -> String {
        server_base.trim_end_matches('/').to_owned()
    }

    /// Issues a Google access token for `client_id` acting as `account` without
    /// going through `/token`, for tests that exercise Calendar/Gmail only. Not
    /// journaled.
    pub fn issue_google_access_token(&self, client_id: &str, account: &str) -> String {
        let now = self.now();
        let mut google = lock(&self.shared.google);
        let refresh = format!("sim-issued:{account}");
        google.register_account(&refresh, account);
        google.issue_token(client_id, Some(&refresh), now)
    }

    /// Makes `/token` resolve `refresh_token` to the Gmail address `email`
    /// (what `users/me` means); unregistered refresh tokens belong to
    /// [`google::model::DEFAULT_GOOGLE_ACCOUNT`].
    pub fn register_google_account(&self, refresh_token: &str, email: &str) {
        lock(&self.shared.google).register_account(refresh_token, email);
    }

    /// Revokes a refresh token: `/token` answers `invalid_grant` for it from now
    /// on (the user withdrew consent). Access tokens already issued keep working
    /// until they expire, as at Google.
    pub fn revoke_google_refresh_token(&self, refresh_token: &str) {
        lock(&self.shared.google).revoke(refresh_token);
    }

    /// Live (unexpired, unstopped) Calendar channels, oldest first.
    pub fn google_channels(&self) -> Vec<SimChannel> {
        let now = self.now();
        lock(&self.shared.google)
            .all_channels()
            .iter()
            .filter(|c| c.is_live(now))
            .map(SimChannel::from)
            .collect()
    }

    /// Every Calendar channel ever created, stopped and expired ones included,
    /// oldest first (for "no pile-up" and ordering assertions).
    pub fn google_channel_history(&self) -> Vec<SimChannel> {
        lock(&self.shared.google)
            .all_channels()
            .iter()
            .map(SimChannel::from)
            .collect()
    }

    /// Live Gmail watches, by mailbox address.
    pub fn gmail_watches(&self) -> Vec<SimGmailWatch> {
        let now = self.now();
        lock(&self.shared.google)
            .all_watches()
            .iter()
            .filter(|w| w.is_live(now))
            .map(SimGmailWatch::from)
            .collect()
    }

    /// The current historyId of `email`'s mailbox (what the next `users.watch`
    /// answers), once a watch or change gave it one.
    pub fn gmail_history_id(&self, email: &str) -> Option<u64> {
        lock(&self.shared.google).current_history_id(email)
    }

    /// Sets (or clears) where [`Simulator::gmail_push`] delivers.
    pub fn set_gmail_push_endpoint(&self, endpoint: Option<String>) {
        *lock(&self.shared.gmail_push_endpoint) = endpoint;
    }

    /// Where [`Simulator::gmail_push`] delivers, if anywhere.
    pub fn gmail_push_endpoint(&self) -> Option<String> {
        lock(&self.shared.gmail_push_endpoint).clone()
    }

    /// A change on a watched calendar: POSTs an `exists` message to the
    /// channel's address with the next message number, `times` times (the same
    /// number every time: redeliveries), and reports each answer.
    pub async fn google_notify(
        &self,
        channel_id: &str,
        times: u32,
    ) -> Result<DeliveryReport, SimError> {
        let now = self.now();
        let channel = lock(&self.shared.google)
            .next_message_number(channel_id, now)
            .ok_or_else(|| SimError::ChannelNotFound {
                channel_id: channel_id.to_owned(),
            })?;
        let headers = google::wire::channel_headers(&channel, "exists", channel.message_number);
        let attempts = google::delivery::post_times(
            &self.shared.http,
            &channel.address,
            &headers,
            None,
            times,
            self.shared.config.notification_timeout,
        )
        .await;
        Ok(DeliveryReport {
            subscription_id: channel.id,
            url: Some(channel.address),
            body: serde_json::Value::Null,
            attempts,
            headers,
        })
    }

    /// A new message in `email`'s mailbox: bumps its historyId and POSTs the
    /// Pub/Sub push message Gmail publishes to the configured push endpoint.
    /// The mailbox needs a live watch.
    pub async fn gmail_push(&self, email: &str) -> Result<DeliveryReport, SimError> {
        let endpoint = self.gmail_push_endpoint().ok_or(SimError::NoPushEndpoint)?;
        let now = self.now();
        let (watch, history_id, message_id) = lock(&self.shared.google)
            .mailbox_changed(email, now)
            .ok_or_else(|| SimError::WatchNotFound {
                email: email.to_owned(),
            })?;
        let body = google::wire::pubsub_push_json(&watch.email, history_id, message_id, now);
        let attempts = google::delivery::post_times(
            &self.shared.http,
            &endpoint,
            &[],
            Some(&body),
            1,
            self.shared.config.notification_timeout,
        )
        .await;
        Ok(DeliveryReport {
            subscription_id: watch.email,
            url: Some(endpoint),
            body,
            attempts,
            headers: Vec::new(),
        })
    }

    fn live_subscription(&self, id: &str) -> Result<StoredSubscription, SimError> {
        let now = self.now();
        lock(&self.shared.graph)
            .live(id, now)
            .ok_or_else(|| SimError::SubscriptionNotFound {
                subscription_id: id.to_owned(),
            })
    }
}

/// Runs a simulator with `config` on `addr` until Ctrl-C, for `subkeeper
/// simulate`. With `speed > 1` provider time runs that many times faster than
/// wall time.
pub async fn serve_forever(
    addr: SocketAddr,
    speed: u32,
    config: SimulatorConfig,
) -> std::io::Result<()> {
    let base: SharedClock = if speed > 1 {
        Arc::new(ScaledClock::new(Utc::now(), speed))
    } else {
        Arc::new(SystemClock)
    };
    let allow_http_loopback = config.allow_http_loopback;
    let accept_any_credentials = config.accept_any_credentials;
    let sim = Simulator::new(config, base);
    let server = sim.start(TcpListener::bind(addr)?)?;
    tracing::info!(
        graph_base_url = %server.graph_base_url(),
        login_base_url = %server.login_base_url(),
        google_base_url = %server.google_base_url(),
        control_url = %format!("{}/_sim", server.base_url),
        speed,
        allow_http_loopback,
        accept_any_credentials,
        "provider simulator listening"
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("provider simulator stopping");
    server.stop().await;
    Ok(())
}
