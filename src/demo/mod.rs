//! `subkeeper demo`: the service and the provider simulator in one process on a
//! fast shared clock, six providers across three tenants connected through the
//! admin API, and the whole story printed as it happens, one line per event read
//! off the bus: registration, renewal, 404 → recreate, three strikes → error → an
//! alert firing and resolving, invalid_grant → needs_reauth → re-authorized, a
//! Graph change notification reaching the bus as a webhook and a domain event, a
//! forced renewal sent as the bus's retry message and its reply, a Google Calendar
//! channel rotated (new channel, old one stopped) and a Gmail watch renewed. It
//! ends once the story is told and says where the state it left is.
//!
//! By default everything is embedded — a fresh SQLite store in the demo's own data
//! directory and the in-process bus — so nothing needs installing or running;
//! `--postgres` / `--nats` (or SUBKEEPER_DATABASE_URL / SUBKEEPER_NATS_URL) run the
//! same story on the real services, in a database and on subjects and streams of
//! the demo's own.
//!
//! - `backends`: data directory, fresh database, fresh streams; named failures.
//! - `cast`: the providers, their parts, the admin API calls.
//! - `story`: the steps seen so far and what to do next (pure).
//! - `lines`: how each event is worded (pure).
//!
//! The demo observes and drives the service only from the outside — the bus, the
//! admin API and the simulator — and never writes the store itself.

mod backends;
mod cast;
mod lines;
mod story;

use crate::bus::{Bus, BusError, BusMessage, RenewReply, RenewRequest, renewal_message_id};
use crate::config::Config;
use crate::store::Location;
use crate::{RunOptions, Running, run_with};
use anyhow::Context as _;
use backends::{DEMO_DATABASE, Source};
use cast::{AdminApi, CAST, Member};
use chrono::{TimeDelta, Utc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use story::{Act, Seen, Story};
use subkeeper_actors::alerting::Alert;
use subkeeper_actors::domain::{DomainEvent, ProviderId, RenewalResult, WebhookEnvelope};
use subkeeper_actors::ports::clock::{ScaledClock, SharedClock};
use subkeeper_simulator::{
    ChangeError, ChangeReport, ChangeRequest, ChangeType, Fault, FaultOperation, FaultRule,
    FeedRef, Simulator, SimulatorConfig,
};
use tokio::sync::mpsc;

/// What `subkeeper demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Simulated seconds per real second.
    pub speed: u32,
    /// Give up after this many real seconds if the story is not told by then.
    pub seconds: u64,
    /// Keep the state here (new or empty) instead of a new temp directory.
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL server to run on instead of the embedded store.
    pub postgres: Option<String>,
    /// A NATS server to run on instead of the in-process bus.
    pub nats: Option<String>,
}

/// A demo ready to run: its data directory exists and its log file is named, so
/// `main` can send the service's log there before anything is logged.
pub struct Demo {
    config: Config,
    args: DemoArgs,
    data_dir: PathBuf,
}

/// Name of the service's log file in the data directory.
const LOG_FILE: &str = "subkeeper.log";

/// How long the forced renewal may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the demo waits for the simulated Google to see the old channel stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often it looks.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How long the service may take to shut down at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Graph subscriptions are renewed this long before their 7-day expiry: about 80
/// simulated minutes after each create, so every provider renews once early on.
const GRAPH_LOOKAHEAD_MINUTES: i64 = 10_000;

/// Calendar channels are rotated 90 simulated minutes after they are opened.
const CALENDAR_LOOKAHEAD_MINUTES: i64 = crate::config::GOOGLE_MAX_LIFETIME_MINUTES - 90;

/// Gmail watches are renewed every simulated hour.
const GMAIL_RENEW_EVERY_HOURS: i64 = 1;

impl Demo {
    /// Creates the data directory (`--data-dir`, new or empty, else a new one
    /// under the temp directory).
    pub fn prepare(config: Config, args: DemoArgs) -> anyhow::Result<Self> {
        let data_dir = backends::data_dir(args.data_dir.as_deref())?;
        Ok(Self {
            config,
            args,
            data_dir,
        })
    }

    /// Where the service's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// Tells the story; exit 0 once told, 130 when interrupted, an error naming
    /// what is missing when `--seconds` runs out first or something it needs fails.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        crate::install_crypto();
        let log = self.log_path();
        let Self {
            mut config,
            args,
            data_dir,
        } = self;
        let (state, topology_note) = choose_backends(&mut config, &args, &data_dir).await?;
        tune(&mut config);

        let clock = ScaledClock::new(Utc::now(), args.speed.max(1));
        let sim = Simulator::new(
            // Made-up credentials and a plain-http 127.0.0.1 service: the
            // simulator is told to take both.
            SimulatorConfig {
                allow_http_loopback: true,
                accept_any_credentials: true,
                ..SimulatorConfig::default()
            },
            Arc::new(clock),
        );
        let sim_server = sim
            .start(bind("the simulator")?)
            .context("cannot start the simulator")?;
        let clock: SharedClock = sim.clock();
        let listener = bind("the service")?;
        config.public_url = format!("http://{}", listener.local_addr()?);
        config.graph_base_url = sim_server.graph_base_url();
        config.login_base_url = sim_server.login_base_url();
        config.google_base_url = sim_server.google_base_url();
        config.google_token_url = format!("{}/token", sim_server.google_base_url());
        let token = match &config.admin_token {
            Some(token) => token.clone(),
            None => {
                crate::embedded::admin_token(&config, true)
                    .with_context(|| {
                        format!("cannot write the admin token into {}", data_dir.display())
                    })?
                    .0
            }
        };
        config.admin_token = Some(token.clone());
        // Its secrets are made up, but they are sealed all the same: on
        // PostgreSQL with no key configured, with a key of the demo's own (the
        // embedded store makes its own beside the store file).
        if config.secret_keys.is_none()
            && matches!(config.store_location(), crate::store::Location::Postgres(_))
        {
            config.secret_keys = Some(crate::secrets::Keyring::generate_entry(
                Utc::now().date_naive(),
            )?);
        }
        config
            .validate()
            .context("the demo's configuration is invalid")?;
        let config = Arc::new(config);

        let prefix = config.nats_subject_prefix.clone();
        let patterns = Patterns::new(&prefix);
        println!(
            "subkeeper demo — the service and a simulated Microsoft Graph and Google in one process"
        );
        println!(
            "  time      simulated, {}× real time; every line starts with it",
            args.speed.max(1)
        );
        println!("  store     {}", state.store);
        println!(
            "  bus       {}; the demo listens on {}",
            state.bus,
            patterns.all().join(", ")
        );
        println!(
            "  service   {} (admin API token in {})",
            config.public_url,
            data_dir.join("admin-token").display()
        );
        println!("  simulator {}", sim_server.base_url);
        println!(
            "  log       {} (the service's own log; nothing here is repeated from it)",
            log.display()
        );
        if let Some(note) = topology_note {
            println!("  {note}");
        }
        println!();

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut service = actix_rt::spawn(run_with(
            config.clone(),
            listener,
            async move {
                let _ = stop_rx.await;
            },
            RunOptions {
                clock: Some(clock.clone()),
                events: None,
                on_started: Some(started_tx),
            },
        ));
        let Running { bus, .. } = match started_rx.await {
            Ok(running) => running,
            // The service ended before it ran: say why (which store or bus failed).
            Err(_) => {
                sim_server.stop().await;
                return Err(match (&mut service).await {
                    Ok(Err(e)) => anyhow::Error::new(e).context("the demo's service did not start"),
                    Ok(Ok(())) => anyhow::anyhow!("the demo's service stopped before it started"),
                    Err(e) => anyhow::Error::new(e).context("the demo's service panicked"),
                });
            }
        };

        let (tx, rx) = mpsc::channel(1024);
        for pattern in patterns.all() {
            let mut tap = bus
                .subscribe(&pattern)
                .await
                .with_context(|| format!("cannot listen on {pattern}"))?;
            let tx = tx.clone();
            actix_rt::spawn(async move {
                while let Some(message) = tap.recv().await {
                    if tx.send(Input::Bus(message)).await.is_err() {
                        break;
                    }
                }
            });
        }

        // The faults the story needs, before anyone asks for a token or a create.
        sim.inject_fault(
            FaultRule::new(FaultOperation::Token, Fault::InvalidGrant)
                .for_tenant(cast::REVOKED_AUTHORITY)
                .times(1),
        );
        sim.inject_fault(
            FaultRule::new(
                FaultOperation::Create,
                Fault::Status {
                    status: 500,
                    code: "InternalServerError".into(),
                    retry_after_seconds: None,
                },
            )
            .for_resource(cast::FAILING_RESOURCE)
            .times(cast::FAILING_CREATES),
        );
        for member in &CAST {
            if !member.kind.is_graph() {
                sim.register_google_account(member.authority, member.resource);
            }
        }

        let admin = AdminApi::new(&config.public_url, token)?;
        println!(
            "Connecting six providers through the admin API (POST /api/v1/tenants/{{tenant}}/providers):"
        );
        let mut members = HashMap::new();
        for member in &CAST {
            let id = admin
                .connect(member)
                .await
                .with_context(|| format!("cannot connect {}", member.who()))?;
            println!(
                "  {:<14} {:<16} {:<22} {}",
                member.who(),
                member.kind.as_str(),
                member.resource,
                member.part
            );
            members.insert(id, *member);
        }
        println!();

        let mut teller = Teller {
            story: Story::new(members.iter().map(|(id, m)| (*id, m.role)).collect()),
            members,
            clock: clock.clone(),
            patterns,
            bus: bus.clone(),
            sim: sim.clone(),
            admin,
            tx,
            forced: None,
        };
        let started = tokio::time::Instant::now();
        let sim_started = clock.now();
        let end = teller
            .tell(
                rx,
                &mut service,
                started + Duration::from_secs(args.seconds),
            )
            .await;
        let real = started.elapsed();
        let simulated = clock.now() - sim_started;

        let _ = stop_tx.send(());
        let stopped = tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut service).await;
        sim_server.stop().await;
        println!();
        match &end {
            End::Told => println!(
                "The story is told: {:.1} s of real time, {} of simulated time.",
                real.as_secs_f64(),
                span(simulated)
            ),
            End::TimedOut => println!(
                "Stopped after {} s (--seconds) before the story was told.",
                args.seconds
            ),
            End::Interrupted => println!("Interrupted."),
            End::ServiceEnded(why) => println!("The demo's service ended on its own: {why}"),
        }
        if !matches!(stopped, Ok(Ok(Ok(())))) && matches!(end, End::Told) {
            println!("(the service did not shut down cleanly; see the log)");
        }
        state.print_where(&data_dir, &log);
        match end {
            End::Told => Ok(ExitCode::SUCCESS),
            End::Interrupted => Ok(ExitCode::from(130)),
            End::TimedOut => Err(anyhow::anyhow!(
                "the story was not told within {} s (--seconds); not seen: {}",
                args.seconds,
                teller
                    .story
                    .untold()
                    .iter()
                    .map(|s| s.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            End::ServiceEnded(why) => Err(anyhow::anyhow!("the demo's service ended: {why}")),
        }
    }
}

/// Binds 127.0.0.1 on a free port for `what`.
fn bind(what: &str) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .with_context(|| format!("cannot listen on 127.0.0.1 for {what}"))
}

/// The demo's timings: every renewal of the story due within the first couple of
/// simulated hours.
fn tune(config: &mut Config) {
    config.renewal_lookahead_minutes = GRAPH_LOOKAHEAD_MINUTES;
    config.google_renewal_lookahead_minutes = CALENDAR_LOOKAHEAD_MINUTES;
    config.gmail_renew_every_hours = GMAIL_RENEW_EVERY_HOURS;
    config.gmail_pubsub_topic = "projects/subkeeper-demo/topics/gmail".into();
    config.reconcile_interval_seconds = 1;
    config.log_format = "text".into();
}

/// What the demo runs on, for the header and the closing lines.
struct State {
    /// The store, as the header names it.
    store: String,
    /// The bus, as the header names it.
    bus: String,
    /// The Postgres URL (password hidden), when not embedded.
    postgres: Option<String>,
    /// The NATS URL and the streams the demo left there, when not in process.
    nats: Option<(String, Vec<String>)>,
}

impl State {
    /// Where the state is and how to look at it.
    fn print_where(&self, data_dir: &Path, log: &Path) {
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "subkeeper".into());
        println!("The state it left:");
        match &self.postgres {
            None => {
                println!(
                    "  data directory  {} (embedded store subkeeper.db, admin-token, {LOG_FILE})",
                    data_dir.display()
                );
                println!(
                    "  look at it      SUBKEEPER_DATA_DIR={} {program} status",
                    data_dir.display()
                );
            }
            Some(url) => {
                println!("  database        {}", self.store);
                println!("  look at it      SUBKEEPER_DATABASE_URL={url} {program} status");
                println!(
                    "  service log     {} (and the admin token beside it)",
                    log.display()
                );
            }
        }
        if let Some((url, streams)) = &self.nats {
            println!("  NATS            {url}: streams {}", streams.join(", "));
        }
    }
}

/// Points `config` at the store and bus the demo runs on: fresh ones of its own.
async fn choose_backends(
    config: &mut Config,
    args: &DemoArgs,
    data_dir: &Path,
) -> anyhow::Result<(State, Option<String>)> {
    config.data_dir = data_dir.to_path_buf();
    let postgres = match (&args.postgres, config.store_location()) {
        (Some(url), _) => Some((url.clone(), Source::Flag("--postgres"))),
        (None, Location::Postgres(url)) => Some((
            url,
            Source::of(
                false,
                "--postgres",
                "SUBKEEPER_DATABASE_URL",
                "database_url",
            ),
        )),
        // An embedded store named elsewhere is not the demo's: use its own.
        (None, Location::Sqlite(_)) => None,
    };
    let (store, postgres) = match postgres {
        Some((url, source)) => {
            config.database_url = backends::fresh_database(&url, source).await?;
            let shown = crate::bus::redact(&config.database_url);
            (
                format!(
                    "{} (the demo's own database {DEMO_DATABASE}, recreated at start)",
                    config.store_location().describe()
                ),
                Some(shown),
            )
        }
        None => {
            config.database_url = String::new();
            (config.store_location().describe(), None)
        }
    };
    let nats = match &args.nats {
        Some(url) => Some((url.clone(), Source::Flag("--nats"))),
        None if config.uses_nats() => Some((
            config.nats_url.clone(),
            Source::of(false, "--nats", "SUBKEEPER_NATS_URL", "nats_url"),
        )),
        None => None,
    };
    let mut note = None;
    let (bus, nats) = match nats {
        Some((url, source)) => {
            // Its own subjects and streams, so a demo next to a real deployment on
            // the same server neither joins its control queue group nor touches its
            // streams.
            config.nats_subject_prefix = format!("{}_demo", config.nats_subject_prefix);
            config.nats_stream_prefix = format!("{}_DEMO", config.nats_stream_prefix);
            // NATS reserves a stream's size limit from its storage: a demo needs little.
            config.nats_webhook_stream_max_bytes = 64 << 20;
            config.nats_renewal_stream_max_bytes = 64 << 20;
            config.nats_alert_stream_max_bytes = 16 << 20;
            config.nats_url = url.clone();
            let topology = crate::bus::Topology::from_config(config);
            backends::fresh_streams(&url, source, &topology).await?;
            let streams = topology.streams().to_vec();
            note = Some(format!(
                "NATS      the demo's own subjects {}.> and streams {} (recreated at start)",
                config.nats_subject_prefix,
                streams.join(", ")
            ));
            (
                format!("NATS {}", crate::bus::redact(&url)),
                Some((crate::bus::redact(&url), streams)),
            )
        }
        None => {
            config.nats_url = String::new();
            (
                "in process (its streams kept in the store)".to_owned(),
                None,
            )
        }
    };
    Ok((
        State {
            store,
            bus,
            postgres,
            nats,
        },
        note,
    ))
}

/// The subject patterns the demo listens on.
struct Patterns {
    prefix: String,
}

impl Patterns {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn all(&self) -> Vec<String> {
        ["renewal", "alert", "webhook", "event"]
            .iter()
            .map(|family| format!("{}.{family}.>", self.prefix))
            .collect()
    }

    /// The family of a subject (`renewal`, `alert`, …), if it is one of ours.
    fn family<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .split('.')
            .next()
    }

    /// The subject with its last token (the provider id) as `*`: the pattern a
    /// consumer of this tenant's messages subscribes to, short enough to read.
    fn per_tenant(subject: &str) -> String {
        match subject.rsplit_once('.') {
            Some((head, _)) => format!("{head}.*"),
            None => subject.to_owned(),
        }
    }

    fn control(&self) -> String {
        format!("{}.control.renew", self.prefix)
    }
}

/// Something for the story loop.
enum Input {
    /// A message tapped off the bus.
    Bus(BusMessage),
    /// The forced renewal's reply.
    Reply(Result<serde_json::Value, BusError>),
    /// Whether the simulated Google stopped the channel in time.
    ChannelStopped {
        provider: ProviderId,
        channel_id: String,
        stopped: bool,
    },
    /// The re-authorization's answer.
    Reauthorized {
        provider: ProviderId,
        outcome: anyhow::Result<()>,
    },
    /// What the simulator did with the new message's webhook.
    MailAnnounced {
        provider: ProviderId,
        outcome: Result<ChangeReport, ChangeError>,
    },
}

/// How the story loop ended.
enum End {
    Told,
    TimedOut,
    Interrupted,
    ServiceEnded(String),
}

/// A forced renewal in flight: renewal results of its provider that are not on
/// schedule wait for the reply, so the attempt is printed once, as the reply.
struct Forced {
    provider: ProviderId,
    held: Vec<RenewalResult>,
}

/// Reads what happens, prints it, and does what the story needs next.
struct Teller {
    story: Story,
    members: HashMap<ProviderId, Member>,
    clock: SharedClock,
    patterns: Patterns,
    bus: Bus,
    sim: Simulator,
    admin: AdminApi,
    tx: mpsc::Sender<Input>,
    forced: Option<Forced>,
}

impl Teller {
    async fn tell(
        &mut self,
        mut rx: mpsc::Receiver<Input>,
        service: &mut tokio::task::JoinHandle<Result<(), crate::RunError>>,
        deadline: tokio::time::Instant,
    ) -> End {
        loop {
            if self.story.is_told() {
                return End::Told;
            }
            let input = tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => input,
                    None => return End::ServiceEnded("the bus closed".into()),
                },
                () = tokio::time::sleep_until(deadline) => return End::TimedOut,
                _ = tokio::signal::ctrl_c() => return End::Interrupted,
                ended = &mut *service => return End::ServiceEnded(match ended {
                    Ok(Ok(())) => "stopped".into(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                }),
            };
            self.take(input);
        }
    }

    fn who(&self, provider: ProviderId) -> String {
        self.members
            .get(&provider)
            .map(Member::who)
            .unwrap_or_else(|| provider.to_string())
    }

    fn print(&self, provider: ProviderId, word: &str, status: &str, detail: &str) {
        println!(
            "{}",
            lines::line(self.clock.now(), &self.who(provider), word, status, detail)
        );
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Bus(message) => self.bus_message(&message),
            Input::Reply(reply) => self.reply(reply),
            Input::ChannelStopped {
                provider,
                channel_id,
                stopped,
            } => {
                if stopped {
                    self.print(
                        provider,
                        "stopped",
                        "",
                        &format!(
                            "old channel {} stopped at Google (channels.stop)",
                            lines::short(&channel_id)
                        ),
                    );
                    self.see(Seen::ChannelStopped(&channel_id));
                } else {
                    self.print(
                        provider,
                        "stopped",
                        "",
                        &format!(
                            "old channel {} still live at Google after {} s",
                            lines::short(&channel_id),
                            STOP_TIMEOUT.as_secs()
                        ),
                    );
                }
            }
            Input::Reauthorized { provider, outcome } => {
                if let Err(e) = outcome {
                    self.print(
                        provider,
                        "operator",
                        "",
                        &format!("re-authorization failed: {e:#}"),
                    );
                }
            }
            Input::MailAnnounced { provider, outcome } => match outcome {
                Ok(report) => {
                    let answers: Vec<String> = report
                        .deliveries
                        .iter()
                        .flat_map(|d| &d.attempts)
                        .filter(|a| !a.accepted())
                        .map(|a| match (a.status, &a.error) {
                            (Some(status), _) => format!("HTTP {status}"),
                            (None, Some(e)) => e.clone(),
                            (None, None) => "no answer".into(),
                        })
                        .collect();
                    if report.deliveries.is_empty() {
                        self.print(provider, "simulator", "", "no live subscription to notify");
                    } else if !answers.is_empty() {
                        self.print(
                            provider,
                            "simulator",
                            "",
                            &format!(
                                "the change notification was refused: {}",
                                answers.join(", ")
                            ),
                        );
                    }
                }
                Err(e) => self.print(provider, "simulator", "", &format!("no change made: {e}")),
            },
        }
    }

    fn bus_message(&mut self, message: &BusMessage) {
        let subject = message.subject.as_str();
        match self.patterns.family(subject) {
            Some("renewal") => {
                if let Some(r) = parse::<RenewalResult>(message) {
                    if let Some(forced) = &mut self.forced
                        && forced.provider == r.provider_id
                        && r.scheduled_at.is_none()
                    {
                        forced.held.push(r);
                        return;
                    }
                    self.renewal(&r, "");
                }
            }
            Some("alert") => {
                if let Some(a) = parse::<Alert>(message) {
                    let (word, status, detail) = lines::alert(&a, &Patterns::per_tenant(subject));
                    self.print(a.provider_id, &word, &status, &detail);
                    self.see(Seen::Alert(&a));
                }
            }
            Some("webhook") => {
                if let Some(w) = parse::<WebhookEnvelope>(message) {
                    let (word, detail) = lines::webhook(&w, &Patterns::per_tenant(subject));
                    self.print(w.provider_id, &word, "", &detail);
                    self.see(Seen::Webhook(&w));
                }
            }
            Some("event") => {
                if let Some(e) = parse::<DomainEvent>(message) {
                    let (word, detail) = lines::event(&e, subject);
                    self.print(e.provider_id, &word, "", &detail);
                    self.see(Seen::Event(&e));
                }
            }
            _ => {}
        }
    }

    fn renewal(&mut self, r: &RenewalResult, via: &str) {
        let before = self.story.subscription(r.provider_id).map(str::to_owned);
        let (word, status, detail) = lines::renewal(r, before.as_deref(), via);
        self.print(r.provider_id, &word, &status, &detail);
        self.see(Seen::Renewal(r));
    }

    fn reply(&mut self, reply: Result<serde_json::Value, BusError>) {
        let Some(forced) = self.forced.take() else {
            return;
        };
        let via = format!("the reply on {}", self.patterns.control());
        let answered = match reply.map(serde_json::from_value::<RenewReply>) {
            Ok(Ok(RenewReply::One(result))) => Some(*result),
            Ok(Ok(RenewReply::Error { error })) => {
                self.print(
                    forced.provider,
                    "control",
                    "",
                    &format!("{via}: {} — {}", error.code, error.message),
                );
                None
            }
            Ok(Ok(RenewReply::Many(_))) => {
                self.print(
                    forced.provider,
                    "control",
                    "",
                    &format!("{via}: a list, not one result"),
                );
                None
            }
            Ok(Err(e)) => {
                self.print(
                    forced.provider,
                    "control",
                    "",
                    &format!("{via} is not a RenewalResult: {e}"),
                );
                None
            }
            Err(e) => {
                self.print(forced.provider, "control", "", &format!("no reply: {e}"));
                None
            }
        };
        let answered_id = answered.as_ref().map(renewal_message_id);
        if let Some(result) = &answered {
            self.renewal(result, &via);
            self.see(Seen::Reply(result));
        }
        for held in forced.held {
            if Some(renewal_message_id(&held)) != answered_id {
                self.renewal(&held, "");
            }
        }
    }

    fn see(&mut self, seen: Seen<'_>) {
        for act in self.story.see(seen) {
            self.act(act);
        }
    }

    fn act(&mut self, act: Act) {
        match act {
            Act::LoseSubscription {
                provider,
                subscription_id,
            } => {
                self.sim.inject_fault(
                    FaultRule::new(
                        FaultOperation::Renew,
                        Fault::Status {
                            status: 404,
                            code: "ResourceNotFound".into(),
                            retry_after_seconds: None,
                        },
                    )
                    .for_subscription(subscription_id.clone())
                    .times(1),
                );
                self.print(
                    provider,
                    "simulator",
                    "",
                    &format!(
                        "Graph loses subscription {}: its next renewal will be answered 404",
                        lines::short(&subscription_id)
                    ),
                );
            }
            Act::NewMail { provider } => {
                let Some(member) = self.members.get(&provider).copied() else {
                    return;
                };
                self.print(
                    provider,
                    "simulator",
                    "",
                    &format!(
                        "a new message arrives in {}; Graph sends a change notification",
                        member.resource
                    ),
                );
                let (sim, tx) = (self.sim.clone(), self.tx.clone());
                actix_rt::spawn(async move {
                    let outcome = sim
                        .make_change(
                            ChangeRequest::new(
                                FeedRef::graph(member.resource),
                                ChangeType::Created,
                            )
                            .subject("Invoice 4711 — please review"),
                        )
                        .await;
                    let _ = tx.send(Input::MailAnnounced { provider, outcome }).await;
                });
            }
            Act::Reauthorize { provider } => {
                let Some(member) = self.members.get(&provider).copied() else {
                    return;
                };
                self.print(
                    provider,
                    "operator",
                    "",
                    &format!(
                        "re-authorizes: PUT {} with fresh credentials",
                        AdminApi::credentials_path(member.tenant, provider)
                    ),
                );
                let (admin, tx) = (self.admin.clone(), self.tx.clone());
                actix_rt::spawn(async move {
                    let outcome = admin.reauthorize(&member, provider).await;
                    let _ = tx.send(Input::Reauthorized { provider, outcome }).await;
                });
            }
            Act::ForceRenewal { provider } => {
                let Some(member) = self.members.get(&provider).copied() else {
                    return;
                };
                let request = RenewRequest {
                    tenant: member.tenant.to_owned(),
                    provider_id: Some(provider.to_string()),
                };
                let body = serde_json::json!({
                    "tenant": request.tenant,
                    "provider_id": request.provider_id,
                });
                self.print(
                    provider,
                    "control",
                    "",
                    &format!("retry message sent on {}: {body}", self.patterns.control()),
                );
                self.forced = Some(Forced {
                    provider,
                    held: Vec::new(),
                });
                let (bus, tx) = (self.bus.clone(), self.tx.clone());
                actix_rt::spawn(async move {
                    let reply = bus.request_renewal(&request, REPLY_TIMEOUT).await;
                    let _ = tx.send(Input::Reply(reply)).await;
                });
            }
            Act::AwaitChannelStop {
                provider,
                channel_id,
            } => {
                let (sim, tx) = (self.sim.clone(), self.tx.clone());
                actix_rt::spawn(async move {
                    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
                    let stopped = loop {
                        let stopped = sim
                            .google_channel_history()
                            .iter()
                            .any(|c| c.id == channel_id && c.stopped);
                        if stopped || tokio::time::Instant::now() >= deadline {
                            break stopped;
                        }
                        tokio::time::sleep(STOP_POLL).await;
                    };
                    let _ = tx
                        .send(Input::ChannelStopped {
                            provider,
                            channel_id,
                            stopped,
                        })
                        .await;
                });
            }
        }
    }
}

/// A bus message's JSON body, or `None` (logged) when it is not what its subject
/// promises.
fn parse<T: serde::de::DeserializeOwned>(message: &BusMessage) -> Option<T> {
    match serde_json::from_slice(&message.payload) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(subject = %message.subject, error = %e, "demo: unreadable bus message");
            None
        }
    }
}

/// A simulated span as "3 h 05 min".
fn span(d: TimeDelta) -> String {
    let minutes = d.num_minutes().max(0);
    if minutes < 60 {
        format!("{minutes} min")
    } else {
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}
