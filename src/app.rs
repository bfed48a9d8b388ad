//! Wiring: `run(config, listener, shutdown)` builds the adapters, starts the fleet,
//! the notification and alerting actors and the consumers that feed them, answers
//! forced renewals over NATS and serves HTTP until `shutdown` resolves.
//! `main` and the tests both start the service through here, so what is tested is
//! what runs.

use crate::bus::{
    Bus, BusError, ConsumerHandle, ControlHandle, LocalBus, NatsBus, ResyncOnReplacement,
    StreamLimits, Topology,
};
use crate::config::Config;
use crate::housekeeping::{Housekeeping, HousekeepingHandle, HousekeepingSettings};
use crate::http::span::RedactedSpan;
use crate::http::{AppState, routes};
use crate::intake::{
    DeliveryRecorder, GoogleIntake, GraphIntake, IntakePorts, spawn_google_resync,
    spawn_outbox_relay,
};
use crate::providers::ByFamily;
use crate::providers::google::{GoogleApis, GoogleConfig, PendingChannels};
use crate::providers::graph::{CalendarWindow, GraphApi, GraphConfig, OrphanCleanup};
use crate::providers::limits::{Limits, Share};
use crate::store::{IfMissing, Leases, Location, OpenError, SingleInstance, Store};
use crate::telemetry::MetricsRenderer;
use actix::{Actor as _, Addr};
use actix_web::{App, HttpServer};
use chrono::TimeDelta;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use subkeeper_actors::alerting::{AlertingActor, AlertingConfig, AlertingPorts};
use subkeeper_actors::board::HealthBoard;
use subkeeper_actors::catchup::{CatchUpActor, CatchUpPorts};
use subkeeper_actors::delivery::Stop;
use subkeeper_actors::domain::ProviderKind;
use subkeeper_actors::fleet::{Fleet, FleetConfig, FleetHandle};
use subkeeper_actors::notification::{NotificationActor, NotificationConfig};
use subkeeper_actors::ownership::{LeaseConfig, LeaseGuard, MembershipHook};
use subkeeper_actors::permits::DeadlinePermits;
use subkeeper_actors::pool::{PoolStopError, SupervisorPool};
use subkeeper_actors::ports::clock::{SharedClock, SystemClock};
use subkeeper_actors::ports::{CallbackUrls, EventSink, Membership, Ports, SubscriptionApi};
use subkeeper_actors::supervisor::SupervisorContext;
use tracing_actix_web::TracingLogger;

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// NATS could not be reached, or its streams or subscriptions set up.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The admin token for an embedded store could not be read or written.
    #[error("admin token: {0}")]
    AdminToken(String),
    /// No usable keys to seal secrets at rest.
    #[error("{0}")]
    SecretKeys(String),
    /// This instance could not join the fleet's leases.
    #[error("cannot join the fleet (leases): {0}")]
    Leases(String),
    /// An adapter could not be built.
    #[error("cannot build the provider client: {0}")]
    Client(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    /// The supervisor threads did not end cleanly at shutdown.
    #[error(transparent)]
    SupervisorThreads(#[from] PoolStopError),
}

/// Seams for the demo and tests; production uses the defaults.
#[derive(Default)]
pub struct RunOptions {
    /// Where "now" comes from (the demo shares the simulator's fast clock).
    pub clock: Option<SharedClock>,
    /// Where renewal results go (default: the JetStream renewal stream).
    pub events: Option<Arc<dyn EventSink>>,
    /// Receives the running service's handles once the fleet runs (before HTTP is
    /// served: connections wait in the listener's backlog until then).
    pub on_started: Option<tokio::sync::oneshot::Sender<Running>>,
}

/// What a caller of [`run_with`] gets once the service runs: the handles the demo
/// and tests drive and observe it through.
#[derive(Clone)]
pub struct Running {
    /// Forces renewals and reconciliations.
    pub fleet: FleetHandle,
    /// The bus the service publishes on: taps ([`Bus::subscribe`]) and forced
    /// renewals as the bus's retry message ([`Bus::request_renewal`]).
    pub bus: Bus,
}

/// Runs subkeeper until `shutdown` resolves. Must be called inside an actix System.
pub async fn run(
    config: Arc<Config>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(config, listener, shutdown, RunOptions::default()).await
}

/// [`run`] with seams: build the adapters, start the core, serve, shut down.
pub async fn run_with(
    config: Arc<Config>,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<(), RunError> {
    crate::install_crypto();
    let config = with_embedded_admin_token(config)?;
    let clock: SharedClock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    // First: whatever is recorded before the recorder exists is lost for good (the
    // actors' running gauges are set once, when they start).
    let metrics = MetricsRenderer::install(clock.clone());
    let adapters = Adapters::build(&config, clock.clone()).await?;
    let core = Core::start(&config, &adapters, options.events, clock.clone()).await?;
    if let Some(tx) = options.on_started {
        let _ = tx.send(Running {
            fleet: core.fleet.clone(),
            bus: adapters.bus.clone(),
        });
    }
    let housekeeping = HousekeepingHandle::default();
    let housekeeping_task = Housekeeping::new(
        Arc::new(adapters.store.clone()),
        core.fleet.clone(),
        clock.clone(),
        HousekeepingSettings::from_config(&config),
    )
    .spawn(&housekeeping);
    let intake = Intake::start(&config, &adapters, &core, clock.clone());
    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        draining: draining.clone(),
        config: config.clone(),
        admin: Arc::new(adapters.store.clone()),
        deliveries: Arc::new(adapters.store.clone()),
        page: Arc::new(adapters.store.clone()),
        fleet: core.fleet.clone(),
        board: core.board.clone(),
        metrics,
        bus: adapters.bus.clone(),
        graph_intake: intake.graph.clone(),
        google_intake: intake.google.clone(),
        housekeeping,
        clock,
        board_counts: Arc::new(crate::http::board_counts::BoardCounts::new(
            Duration::from_secs(config.status_page_counts_seconds),
        )),
    };
    let deadline = Duration::from_secs(config.shutdown_timeout_seconds);
    let drain = Duration::from_secs(config.shutdown_drain_seconds);
    // The deadline runs from the signal, not from start-up: the drain, the HTTP
    // stop and the background work all fit in it.
    let signalled = std::sync::OnceLock::new();
    let shutdown = async {
        shutdown.await;
        let _ = signalled.set(tokio::time::Instant::now());
        // Out of rotation first, while still taking webhooks for `drain`.
        draining.store(true, Ordering::SeqCst);
        tracing::info!(
            drain_seconds = drain.as_secs(),
            deadline_seconds = deadline.as_secs(),
            "shutting down: /readyz fails from now on"
        );
        tokio::time::sleep(drain).await;
    };
    let served = serve(state, listener, shutdown, deadline).await;
    // Every step it takes is a complete statement; the next start resumes.
    // Awaited, so that a statement it had in flight is dropped here, on the
    // runtime, and its connection goes back to the pool.
    housekeeping_task.abort();
    let _ = housekeeping_task.await;
    // When the server stopped by itself (no signal), the whole deadline is left.
    let left = signalled
        .get()
        .map_or(deadline, |at| deadline.saturating_sub(at.elapsed()));
    let supervisor_threads = core.pool.clone();
    let stopped = tokio::time::timeout(left, async {
        shut_down(intake, core, &adapters.bus).await;
        // Every connection back and closed. Whoever calls `run` may drop
        // the runtime next, and a connection dropped without one makes sqlx
        // panic (it returns it to the pool on a task of its own).
        adapters.store.close().await;
    })
    .await;
    let threads = if stopped.is_err() {
        tracing::error!(
            deadline_seconds = deadline.as_secs(),
            "shutdown deadline passed with work in flight; exiting anyway (this instance's leases lapse and other instances adopt its providers)"
        );
        // Supervisors may still be recording an attempt: their threads are
        // left to the process's exit.
        Ok(())
    } else {
        // Last: the supervisors are drained and nothing else uses the
        // connections these threads drive.
        supervisor_threads.stop(POOL_STOP).await
    };
    served?;
    threads.map_err(RunError::from)
}

/// What speaks to the outside: the store, the bus, the providers' APIs.
struct Adapters {
    store: Store,
    /// Held while the service runs on an embedded store: one instance per file.
    _single_instance: Option<SingleInstance>,
    bus: Bus,
    /// Every provider family behind the one port.
    api: Arc<dyn SubscriptionApi>,
    /// Deletes the subscriptions lost Graph creates left behind, when intake
    /// recognises them.
    graph_orphans: OrphanCleanup,
    /// Calendar channels being opened, which intake routes before they are stored.
    pending_channels: Arc<PendingChannels>,
    /// Where providers call us back.
    callbacks: CallbackUrls,
    /// This instance's part of the providers' budgets, set from the leases.
    share: Share,
}

impl Adapters {
    /// Opens (and migrates) the store, connects the bus and builds the provider
    /// clients.
    async fn build(config: &Config, clock: SharedClock) -> Result<Self, RunError> {
        let location = config.store_location();
        let single_instance = match &location {
            Location::Sqlite(path) => Some(SingleInstance::claim(path)?),
            Location::Postgres(_) => None,
        };
        let keyring = crate::cli::keyring(config, true)
            .map_err(|e| RunError::SecretKeys(format!("{e:#}")))?;
        let store = Store::open_with(
            &location,
            config.database_max_connections,
            Duration::from_secs(config.database_acquire_timeout_seconds),
            clock.clone(),
            IfMissing::Create,
        )
        .await?
        .with_keyring(Arc::new(keyring));
        store.migrate().await?;
        // Without the bus nothing downstream hears of renewals and no one can force
        // one: refuse to start rather than run half-deaf.
        let topology = Topology::from_config(config);
        let bus = if config.uses_nats() {
            Bus::Nats(Box::new(
                NatsBus::connect(&config.nats_url, topology).await?,
            ))
        } else {
            Bus::Local(LocalBus::new(
                Arc::new(store.clone()),
                topology,
                clock.clone(),
            ))
        };
        bus.ensure_streams(StreamLimits::from_config(config))
            .await?;
        tracing::info!(store = %location.describe(), bus = %bus.describe(), "store and bus ready");
        if !store.is_shared() || !config.uses_nats() {
            tracing::warn!(
                "single-instance mode: run no other instance on this store; several instances need PostgreSQL (SUBKEEPER_DATABASE_URL) and NATS (SUBKEEPER_NATS_URL)"
            );
        }

        // One set of limits for every adapter: a tenant's or account's budget
        // is the same whichever provider of it calls.
        let share = Share::default();
        let limits = Arc::new(Limits::new(
            config.limit_settings(),
            share.clone(),
            clock.clone(),
        ));
        let graph = GraphApi::limited(
            GraphConfig {
                graph_base_url: config.graph_base_url.clone(),
                login_base_url: config.login_base_url.clone(),
                request_timeout: config.provider_timeout(),
                ..GraphConfig::default()
            },
            Arc::new(store.clone()),
            clock.clone(),
            Arc::clone(&limits),
        )
        .map_err(|e| RunError::Client(e.to_string()))?
        .with_calendar_window(CalendarWindow {
            past: TimeDelta::days(config.graph_calendar_window_past_days),
            future: TimeDelta::days(config.graph_calendar_window_future_days),
        });
        let graph = Arc::new(graph);
        let graph_orphans = graph.start_orphan_cleanup();
        let callbacks = CallbackUrls {
            public_url: config.public_base(),
        };
        let google = GoogleApis::limited(
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
            clock,
            limits,
        )
        .map_err(|e| RunError::Client(e.to_string()))?;
        let pending_channels = google.calendar.pending_channels();
        Ok(Self {
            api: Arc::new(ByFamily::new(graph, Arc::new(google))),
            store,
            _single_instance: single_instance,
            bus,
            graph_orphans,
            pending_channels,
            callbacks,
            share,
        })
    }
}

/// The actors and the bus consumers and services that feed them.
struct Core {
    fleet: FleetHandle,
    board: HealthBoard,
    notification: Addr<NotificationActor>,
    alerting: Addr<AlertingActor>,
    /// Catch-ups after gaps and silence checks.
    catch_up: Addr<CatchUpActor>,
    webhook_consumer: ConsumerHandle,
    renewal_consumer: ConsumerHandle,
    control: ControlHandle,
    /// Answers the other instances (several instances only).
    peers: Option<ControlHandle>,
    /// The threads the supervisors run on, stopped last.
    pool: SupervisorPool,
}

impl Core {
    /// Starts the alerting and notification actors and their consumers, the fleet,
    /// and the forced-renewal service. `events` replaces the JetStream renewal
    /// sink (the demo listens in).
    async fn start(
        config: &Config,
        adapters: &Adapters,
        events: Option<Arc<dyn EventSink>>,
        clock: SharedClock,
    ) -> Result<Self, RunError> {
        let (store, bus) = (&adapters.store, &adapters.bus);
        let events: Arc<dyn EventSink> = events.unwrap_or_else(|| bus.renewal_sink());
        // Google replacements also tell downstream to resync.
        let events: Arc<dyn EventSink> = Arc::new(ResyncOnReplacement::new(
            events,
            bus.domain_events(),
            clock.clone(),
        ));
        let board = HealthBoard::default();
        let alerting = AlertingActor::new(
            AlertingConfig {
                escalate_after: TimeDelta::minutes(config.alert_escalation_minutes),
                retry_every: ALERT_RETRY,
                callbacks: adapters.callbacks.clone(),
            },
            AlertingPorts {
                sink: bus.alert_sink(),
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
            bus.domain_events(),
            board.clone(),
            clock.clone(),
            Some(alerting.clone().recipient()),
        );
        let notification = if config.delivery_log {
            notification.with_delivery_log(Arc::new(store.clone()))
        } else {
            notification
        }
        .start();
        let webhook_consumer = bus
            .consume_webhooks(notification.clone().recipient())
            .await?;
        let renewal_consumer = bus.consume_renewals(alerting.clone().recipient()).await?;
        // With PostgreSQL this instance shares the fleet with any others: it owns
        // the providers it holds leases on.
        let leases = Leases::join(store, Duration::from_secs(config.lease_ttl_seconds))
            .await
            .map_err(|e| RunError::Leases(e.to_string()))?;
        let peer_leases = leases.clone();
        let (fleet_store, lease, guard) = match leases {
            Some(leases) => {
                let share = adapters.share.clone();
                let hook: MembershipHook =
                    Arc::new(move |m: &Membership| share.set_instances(m.live_instances));
                (
                    store.clone().owned_by(leases.instance()),
                    Some(LeaseConfig {
                        store: Arc::new(leases),
                        heartbeat_every: Duration::from_secs(config.lease_heartbeat_seconds),
                        batch: config.lease_batch,
                        on_membership: Some(hook),
                    }),
                    LeaseGuard::leased(),
                )
            }
            None => (store.clone(), None, LeaseGuard::default()),
        };
        let permits = DeadlinePermits::new(config.renewal_concurrency as usize);
        let catch_up = CatchUpActor::new(
            config.catch_up(),
            CatchUpPorts {
                api: adapters.api.clone(),
                // Scoped to this instance's providers, like the fleet's: its
                // silence sweep reads only what this instance supervises.
                store: Arc::new(fleet_store.clone()),
                replays: bus.publisher(),
                events: bus.domain_events(),
                clock: clock.clone(),
                permits: permits.clone(),
                alerts: Some(alerting.clone().recipient()),
            },
        )
        .start();
        let pool = SupervisorPool::new(config.supervisor_threads());
        tracing::info!(threads = pool.threads(), "supervisor threads");
        let fleet = Fleet::new(
            FleetConfig {
                policies: config.policies(),
                reconcile_every: Duration::from_secs(config.reconcile_interval_seconds),
                reconcile_full_every: Duration::from_secs(config.reconcile_full_interval_seconds),
                leases: lease,
                pool: pool.clone(),
            },
            SupervisorContext {
                ports: Ports {
                    api: adapters.api.clone(),
                    store: Arc::new(fleet_store),
                    events,
                    clock,
                },
                callbacks: adapters.callbacks.clone(),
                permits,
                board: board.clone(),
                attempt_timeout: Duration::from_secs(config.attempt_timeout_seconds),
                retired: None,
                lease: guard,
                catch_up: Some(catch_up.clone().recipient()),
                progress: Default::default(),
            },
        )
        .start_fleet();
        // Instances pass on to each other what concerns providers they do not own.
        let (fleet, peers) = match (bus, peer_leases) {
            (Bus::Nats(nats), Some(leases)) => {
                let (peers, handle) = nats.serve_peers(&leases, fleet.clone()).await?;
                (fleet.with_peers(Arc::new(peers)), Some(handle))
            }
            _ => (fleet, None),
        };
        let control = bus.serve_control(fleet.clone()).await?;
        Ok(Self {
            fleet,
            board,
            notification,
            alerting,
            catch_up,
            webhook_consumer,
            renewal_consumer,
            control,
            peers,
            pool,
        })
    }
}

/// Webhook intake and the tasks that publish on its behalf.
struct Intake {
    graph: GraphIntake,
    google: GoogleIntake,
    /// Periodic `resync_required` events for Google providers, if configured.
    resync: Option<tokio::task::JoinHandle<()>>,
    /// Sends what the outbox holds once NATS is back.
    relay: tokio::task::JoinHandle<()>,
}

impl Intake {
    fn start(config: &Config, adapters: &Adapters, core: &Core, clock: SharedClock) -> Self {
        let store = Arc::new(adapters.store.clone());
        let ports = IntakePorts {
            routes: store.clone(),
            publisher: adapters.bus.publisher(),
            outbox: store.clone(),
            deliveries: config.delivery_log.then(|| {
                Arc::new(DeliveryRecorder::new(
                    store.clone(),
                    clock.clone(),
                    config.delivery_log_rejected_per_minute,
                ))
            }),
        };
        let domain_events = adapters.bus.domain_events();
        let publish_timeout = Duration::from_millis(config.webhook_publish_timeout_ms);
        Self {
            graph: GraphIntake::new(
                ports.clone(),
                domain_events.clone(),
                core.fleet.clone(),
                clock.clone(),
                publish_timeout,
                Some(adapters.graph_orphans.clone()),
            ),
            google: GoogleIntake::new(
                ports.clone(),
                clock.clone(),
                publish_timeout,
                config.gmail_push_secret.clone(),
                adapters.pending_channels.clone(),
            ),
            resync: spawn_google_resync(
                store,
                domain_events,
                clock.clone(),
                Duration::from_secs(config.google_resync_minutes.saturating_mul(60)),
            ),
            relay: spawn_outbox_relay(
                ports,
                clock,
                Duration::from_millis(config.outbox_relay_interval_ms),
                publish_timeout,
            ),
        }
    }
}

/// Serves HTTP until `shutdown` resolves; in-flight requests finish first.
async fn serve(
    state: AppState,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    deadline: Duration,
) -> std::io::Result<()> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(TracingLogger::<RedactedSpan>::new())
            .configure(routes(state.clone()))
    })
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(deadline.as_secs())
    .run();
    let handle = server.handle();
    tokio::select! {
        result = server => result,
        () = shutdown => {
            // New connections are refused; webhooks in flight finish (each is
            // answered 202 only once it is durable).
            handle.stop(true).await;
            Ok(())
        }
    }
}

/// Stops what runs in the background, in the order that loses nothing.
async fn shut_down(intake: Intake, core: Core, bus: &Bus) {
    // Leave the queue group first so other instances take the requests, then send
    // what is still buffered.
    intake.relay.abort();
    let _ = intake.relay.await;
    if let Some(resync) = intake.resync {
        resync.abort();
        let _ = resync.await;
    }
    core.control.stop();
    if let Some(peers) = &core.peers {
        peers.stop();
    }
    // Provider calls in flight finish and are recorded; nothing new starts; with
    // leases, this instance's providers are released for the others at once.
    let stopped = core.fleet.shutdown().await;
    tracing::info!(supervisors = stopped, "fleet stopped");
    // A catch-up cut short resumes from its stored page at the next start.
    core.catch_up.do_send(Stop);
    // Settle the batches in hand, then stop the actors they feed; anything not
    // acknowledged goes to another instance after the consumers' ack wait.
    core.webhook_consumer.stop().await;
    core.renewal_consumer.stop().await;
    core.notification.do_send(Stop);
    core.alerting.do_send(Stop);
    bus.flush(Duration::from_secs(2)).await;
    if let Bus::Local(local) = bus {
        local.stop();
    }
}

/// An embedded store's service needs no setup: without `SUBKEEPER_ADMIN_TOKEN`,
/// the admin API's token is read from `admin-token` in the data directory, which
/// is created (random, readable by its owner only) the first time. Against
/// Postgres nothing is generated: a shared deployment configures its token.
fn with_embedded_admin_token(config: Arc<Config>) -> Result<Arc<Config>, RunError> {
    if config.admin_token.is_some() || matches!(config.store_location(), Location::Postgres(_)) {
        return Ok(config);
    }
    let (token, path) = crate::embedded::admin_token(&config, true)
        .map_err(|e| RunError::AdminToken(e.to_string()))?;
    tracing::info!(file = %path.display(), "no SUBKEEPER_ADMIN_TOKEN: the admin API's token is in this file");
    Ok(Arc::new(Config {
        admin_token: Some(token),
        ..(*config).clone()
    }))
}

/// Longest wait, at the end of shutdown, for the supervisor threads to end
/// (they are idle by then: a stop takes milliseconds).
const POOL_STOP: Duration = Duration::from_secs(5);

/// How soon the alerting actor retries an alert the stream did not acknowledge.
const ALERT_RETRY: Duration = Duration::from_secs(5);
