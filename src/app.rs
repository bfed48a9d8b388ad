//! Wiring: `run(config, listener, shutdown)` builds the adapters, starts the fleet,
//! the notification and alerting actors and the consumers that feed them, answers
//! forced renewals over NATS and serves HTTP until `shutdown` resolves.
//! `main` and the tests both start the service through here, so what is tested is
//! what runs.

use crate::bus::{Bus, BusError, StreamLimits, Topology};
use crate::config::Config;
use crate::http::{AppState, routes};
use crate::intake::{
    GoogleIntake, GraphIntake, Publisher, ResyncOnReplacement, spawn_google_resync,
    spawn_outbox_relay,
};
use crate::providers::google::{GoogleApis, GoogleConfig};
use crate::providers::graph::{GraphApi, GraphConfig};
use crate::store::{IfMissing, OpenError, PgStore};
use crate::telemetry::MetricsRenderer;
use actix::Actor as _;
use actix_web::{App, HttpServer};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::alerting::{AlertingActor, AlertingConfig, AlertingPorts};
use subkeeper_actors::board::HealthBoard;
use subkeeper_actors::clock::{SharedClock, SystemClock};
use subkeeper_actors::delivery::Stop;
use subkeeper_actors::domain::{Provider, ProviderKind, Subscription};
use subkeeper_actors::fleet::{Fleet, FleetConfig, FleetHandle};
use subkeeper_actors::notification::{NotificationActor, NotificationConfig};
use subkeeper_actors::ports::{
    ApiError, CallbackUrls, CreateRequest, EventSink, Ports, ProviderSubscription, SubscriptionApi,
};
use subkeeper_actors::supervisor::SupervisorContext;
use tokio::sync::Semaphore;

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Postgres could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// NATS could not be reached, or its streams or subscriptions set up.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// An adapter could not be built.
    #[error("cannot build the provider client: {0}")]
    Client(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// Seams for the demo and tests; production uses the defaults.
#[derive(Default)]
pub struct RunOptions {
    /// Where "now" comes from (the demo shares the simulator's fast clock).
    pub clock: Option<SharedClock>,
    /// Where renewal results go (default: the JetStream renewal stream).
    pub events: Option<Arc<dyn EventSink>>,
    /// Receives the fleet handle once it is running.
    pub on_started: Option<tokio::sync::oneshot::Sender<FleetHandle>>,
}

/// Runs subkeeper until `shutdown` resolves. Must be called inside an actix System.
pub async fn run(
    config: Arc<Config>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(config, listener, shutdown, RunOptions::default()).await
}

/// [`run`] with seams.
pub async fn run_with(
    config: Arc<Config>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<(), RunError> {
    crate::install_crypto();
    let clock: SharedClock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    // First: whatever is recorded before the recorder exists is lost for good (the
    // actors' running gauges are set once, when they start).
    let metrics = MetricsRenderer::install(clock.clone());
    let store = PgStore::open(
        &config.database_url,
        config.database_max_connections,
        clock.clone(),
        IfMissing::Create,
    )
    .await?;
    store.migrate().await?;
    // Without NATS nothing downstream hears of renewals and no one can force one:
    // refuse to start rather than run half-deaf.
    let bus = Bus::connect(&config.nats_url, Topology::from_config(&config)).await?;
    bus.ensure_streams(StreamLimits::from_config(&config))
        .await?;

    let graph = GraphApi::new(
        GraphConfig {
            graph_base_url: config.graph_base_url.clone(),
            login_base_url: config.login_base_url.clone(),
            request_timeout: config.provider_timeout(),
            ..GraphConfig::default()
        },
        Arc::new(store.clone()),
        clock.clone(),
    )
    .map_err(|e| RunError::Client(e.to_string()))?;
    let graph = Arc::new(graph);
    // Subscriptions left behind by creates whose answer was lost are deleted
    // when intake recognises them.
    let graph_orphans = graph.start_orphan_cleanup();
    let callbacks = CallbackUrls {
        public_url: config.public_base(),
    };
    let google = GoogleApis::new(
        GoogleConfig {
            base_url: config.google_base_url.clone(),
            token_url: config.google_token_url.clone(),
            gmail_topic: config.gmail_pubsub_topic.clone(),
            calendar_address: callbacks.notification_url(ProviderKind::GoogleCalendar),
            request_timeout: config.provider_timeout(),
            ..GoogleConfig::default()
        },
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        clock.clone(),
    )
    .map_err(|e| RunError::Client(e.to_string()))?;
    let pending_channels = google.calendar.pending_channels();
    let api: Arc<dyn SubscriptionApi> = Arc::new(ByKind {
        graph,
        google: Arc::new(google),
    });
    let events: Arc<dyn EventSink> = options
        .events
        .unwrap_or_else(|| Arc::new(bus.renewal_sink()));
    // Google replacements also tell downstream to resync.
    let events: Arc<dyn EventSink> = Arc::new(ResyncOnReplacement::new(
        events,
        Arc::new(bus.clone()),
        clock.clone(),
    ));
    let board = HealthBoard::default();
    let alerting = AlertingActor::new(
        AlertingConfig {
            escalate_after: TimeDelta::minutes(config.alert_escalation_minutes),
            retry_every: ALERT_RETRY,
            callbacks: callbacks.clone(),
        },
        AlertingPorts {
            sink: Arc::new(bus.alert_sink()),
            store: Arc::new(store.clone()),
            clock: clock.clone(),
        },
    )
    .start();
    let notification = NotificationActor::new(
        NotificationConfig {
            silence: config.silence_thresholds(),
            sweep_every: Duration::from_secs(config.silence_check_interval_seconds),
        },
        Arc::new(store.clone()),
        Arc::new(bus.domain_events()),
        board.clone(),
        clock.clone(),
        Some(alerting.clone().recipient()),
    )
    .start();
    let webhook_consumer = bus
        .consume_webhooks(notification.clone().recipient())
        .await?;
    let renewal_consumer = bus.consume_renewals(alerting.clone().recipient()).await?;
    let supervisor_ctx = SupervisorContext {
        ports: Ports {
            api,
            store: Arc::new(store.clone()),
            events,
            clock: clock.clone(),
        },
        callbacks,
        permits: Arc::new(Semaphore::new(config.renewal_concurrency as usize)),
        board: board.clone(),
        attempt_timeout: Duration::from_secs(config.attempt_timeout_seconds),
        retired: None,
    };
    let fleet = Fleet::new(
        FleetConfig {
            policies: config.policies(),
            reconcile_every: Duration::from_secs(config.reconcile_interval_seconds),
        },
        supervisor_ctx,
    )
    .start_fleet();
    let control = bus.serve_control(fleet.clone()).await?;
    if let Some(tx) = options.on_started {
        let _ = tx.send(fleet.clone());
    }

    let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
    let publish_timeout = Duration::from_millis(config.webhook_publish_timeout_ms);
    let graph_intake = GraphIntake::new(
        store.clone(),
        publisher.clone(),
        fleet.clone(),
        clock.clone(),
        publish_timeout,
        Some(graph_orphans),
    );
    let google_intake = GoogleIntake::new(
        store.clone(),
        publisher.clone(),
        clock.clone(),
        publish_timeout,
        config.gmail_push_secret.clone(),
        pending_channels,
    );
    let resync = spawn_google_resync(
        store.clone(),
        publisher.clone(),
        clock.clone(),
        Duration::from_secs(config.google_resync_minutes.saturating_mul(60)),
    );
    let relay = spawn_outbox_relay(
        store.clone(),
        publisher,
        clock.clone(),
        Duration::from_millis(config.outbox_relay_interval_ms),
        publish_timeout,
    );
    let state = AppState {
        config: config.clone(),
        store,
        fleet,
        board,
        metrics,
        bus: bus.clone(),
        graph_intake,
        google_intake,
    };
    let server = HttpServer::new(move || {
        App::new()
            .wrap(tracing_actix_web::TracingLogger::<
                crate::http::span::RedactedSpan,
            >::new())
            .configure(routes(state.clone()))
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(10)
    .run();
    let handle = server.handle();
    let served = tokio::select! {
        result = server => result,
        () = shutdown => {
            tracing::info!("shutting down");
            handle.stop(true).await;
            Ok(())
        }
    };
    // Leave the queue group first so other instances take the requests, then send
    // what is still buffered.
    relay.abort();
    if let Some(resync) = resync {
        resync.abort();
    }
    control.stop();
    // Settle the batches in hand, then stop the actors they feed; anything not
    // acknowledged goes to another instance after the consumers' ack wait.
    webhook_consumer.stop().await;
    renewal_consumer.stop().await;
    notification.do_send(Stop);
    alerting.do_send(Stop);
    bus.flush(Duration::from_secs(2)).await;
    Ok(served?)
}

/// How soon the alerting actor retries an alert the stream did not acknowledge.
const ALERT_RETRY: Duration = Duration::from_secs(5);

/// Dispatches the `SubscriptionApi` port to the adapter of the provider's family.
struct ByKind {
    graph: Arc<GraphApi>,
    google: Arc<GoogleApis>,
}

impl ByKind {
    fn family(&self, provider: &Provider) -> Result<&dyn SubscriptionApi, ApiError> {
        Ok(match provider.kind {
            ProviderKind::GraphMail | ProviderKind::GraphCalendar => self.graph.as_ref(),
            ProviderKind::GoogleCalendar => &self.google.calendar,
            ProviderKind::Gmail => &self.google.gmail,
        })
    }
}

#[async_trait]
impl SubscriptionApi for ByKind {
    fn max_lifetime(&self, provider: &Provider) -> TimeDelta {
        self.family(provider)
            .map_or(TimeDelta::hours(1), |api| api.max_lifetime(provider))
    }

    async fn create(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        self.family(provider)?.create(provider, request).await
    }

    async fn renew(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        self.family(provider)?
            .renew(provider, subscription, expires_at)
            .await
    }

    async fn delete(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), ApiError> {
        self.family(provider)?.delete(provider, subscription).await
    }
}
