//! Configuration: one `Config`, layered built-in defaults → optional TOML file →
//! `SUBKEEPER_*` environment variables (figment), validated at load and shared as
//! `Arc<Config>`. Every field is documented here and in `docs/configuration.md`.

use chrono::TimeDelta;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use subkeeper_actors::domain::ProviderKind;
use subkeeper_actors::lifecycle::Policy;

/// Longest subscription lifetime Graph grants Outlook resources, in minutes.
pub const GRAPH_MAX_LIFETIME_MINUTES: i64 = 10_080;

/// Lifetime of a Google Calendar channel and of a Gmail watch, in minutes (7 days).
pub const GOOGLE_MAX_LIFETIME_MINUTES: i64 = 7 * 24 * 60;

/// Graph's own limit on `/subscriptions` writes per app per tenant per 20 s.
pub const GRAPH_SUBSCRIPTION_WRITES_PER_20S: u32 = 1_000;

/// Outlook's own limit on concurrent requests per app per mailbox.
pub const GRAPH_MAILBOX_CONCURRENCY: u32 = 4;

/// subkeeper's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where state is kept (`SUBKEEPER_DATABASE_URL`): a PostgreSQL URL
    /// (`postgres://user@host:5432/subkeeper`; required for several instances),
    /// or `sqlite:PATH` for an embedded file. Empty (the default): the embedded
    /// file `subkeeper.db` in `data_dir`.
    pub database_url: String,
    /// Postgres pool size (connections). The embedded store uses one.
    pub database_max_connections: u32,
    /// How long a store call waits for a free Postgres connection before it
    /// fails as a timeout, in seconds (`SUBKEEPER_DATABASE_ACQUIRE_TIMEOUT_SECONDS`).
    pub database_acquire_timeout_seconds: u64,
    /// Directory of the embedded store and of the admin token generated for it
    /// (`SUBKEEPER_DATA_DIR`; default `$XDG_DATA_HOME/subkeeper`, else
    /// `~/.local/share/subkeeper`). Created when missing.
    pub data_dir: PathBuf,
    /// NATS URL (`SUBKEEPER_NATS_URL`), e.g. `nats://127.0.0.1:4222`; the server
    /// must run JetStream (`-js`), and subkeeper refuses to start when it cannot
    /// reach it. Empty (the default): the in-process bus, whose streams are kept
    /// in the store — one instance only; several instances need NATS.
    pub nats_url: String,
    /// First token(s) of every NATS subject subkeeper publishes or serves
    /// (`SUBKEEPER_NATS_SUBJECT_PREFIX`): `{prefix}.renewal.…`, `{prefix}.control.renew`.
    /// The default `subkeeper` is the public contract; another prefix isolates a
    /// deployment (or a test) sharing one NATS server.
    pub nats_subject_prefix: String,
    /// Prefix of the JetStream stream names (`SUBKEEPER_NATS_STREAM_PREFIX`):
    /// `{prefix}_WEBHOOKS`, `{prefix}_RENEWALS`. Change it together with
    /// `nats_subject_prefix`, or two deployments fight over one stream's subjects.
    pub nats_stream_prefix: String,
    /// Size limit of the webhook stream, in bytes
    /// (`SUBKEEPER_NATS_WEBHOOK_STREAM_MAX_BYTES`; default 4 GiB, about 2 million
    /// Graph notifications). NATS reserves it from JetStream storage when the
    /// stream is created; when full, publishes are refused rather than unread
    /// notifications evicted.
    pub nats_webhook_stream_max_bytes: u64,
    /// Size limit of the renewal stream, in bytes
    /// (`SUBKEEPER_NATS_RENEWAL_STREAM_MAX_BYTES`; default 256 MiB, about 250,000
    /// results); when full, the oldest results go (Postgres keeps every attempt).
    pub nats_renewal_stream_max_bytes: u64,
    /// Size limit of the alert stream, in bytes
    /// (`SUBKEEPER_NATS_ALERT_STREAM_MAX_BYTES`; default 64 MiB, tens of thousands
    /// of alerts); when full, the oldest alerts go.
    pub nats_alert_stream_max_bytes: u64,
    /// Address the HTTP server listens on (`SUBKEEPER_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Base URL the providers call back (`SUBKEEPER_PUBLIC_URL`): webhooks are
    /// `{public_url}/webhooks/...`. Must be reachable from Microsoft / Google.
    pub public_url: String,
    /// Microsoft Graph base URL including the version (`SUBKEEPER_GRAPH_BASE_URL`).
    pub graph_base_url: String,
    /// Microsoft identity platform base URL (`SUBKEEPER_LOGIN_BASE_URL`).
    pub login_base_url: String,
    /// Google APIs base URL (`SUBKEEPER_GOOGLE_BASE_URL`): Calendar is
    /// `{base}/calendar/v3`, Gmail `{base}/gmail/v1`.
    pub google_base_url: String,
    /// Google's OAuth token endpoint (`SUBKEEPER_GOOGLE_TOKEN_URL`), where Google
    /// refresh tokens are exchanged for access tokens.
    pub google_token_url: String,
    /// Pub/Sub topic Gmail publishes mailbox changes to
    /// (`SUBKEEPER_GMAIL_PUBSUB_TOPIC`, `projects/{project}/topics/{topic}`); Gmail
    /// needs publish rights on it. Empty: Gmail providers fail with a permanent
    /// error naming this variable.
    pub gmail_pubsub_topic: String,
    /// Call Gmail's `users.watch` again this many hours after the last one
    /// (`SUBKEEPER_GMAIL_RENEW_EVERY_HOURS`; default 24, as Google recommends; 1-167):
    /// a watch lapses 7 days after the last call.
    pub gmail_renew_every_hours: i64,
    /// Shared secret the Pub/Sub push subscription carries as `?token=` in its
    /// endpoint URL (`SUBKEEPER_GMAIL_PUSH_SECRET`, at least 16 characters); pushes
    /// without it are refused. Unset: `/webhooks/gmail` refuses everything.
    pub gmail_push_secret: Option<String>,
    /// Every Google provider emits a `resync_required` event this often, in
    /// minutes (`SUBKEEPER_GOOGLE_RESYNC_MINUTES`; default 360; 0 turns it off):
    /// Google does not promise every change is pushed.
    pub google_resync_minutes: u64,
    /// Renew Graph subscriptions this many minutes before expiry
    /// (`SUBKEEPER_RENEWAL_LOOKAHEAD_MINUTES`); must be below Graph's 10,080-minute
    /// maximum lifetime.
    pub renewal_lookahead_minutes: i64,
    /// Replace Google Calendar channels this many minutes before expiry
    /// (`SUBKEEPER_GOOGLE_RENEWAL_LOOKAHEAD_MINUTES`; default 12 h; below the 7-day
    /// channel lifetime). Gmail follows `gmail_renew_every_hours` instead.
    pub google_renewal_lookahead_minutes: i64,
    /// Up to this many seconds of random extra lead per renewal, so providers
    /// created together do not all renew in the same second.
    pub renewal_jitter_seconds: i64,
    /// Extra lead per provider, a fixed share of this percentage of its
    /// renewal period (granted lifetime − lookahead), derived from its id
    /// (`SUBKEEPER_RENEWAL_SPREAD_PERCENT`; default 10; 0–50): a fleet
    /// registered in one minute does not renew in one minute forever.
    pub renewal_spread_percent: u32,
    /// Consecutive failures before a provider enters `error`
    /// (`SUBKEEPER_FAILURE_THRESHOLD`).
    pub failure_threshold: u32,
    /// Provider calls in flight across the whole fleet (`SUBKEEPER_RENEWAL_CONCURRENCY`).
    pub renewal_concurrency: u32,
    /// Threads the providers' supervisors run on, each provider always on the
    /// same one (`SUBKEEPER_SUPERVISOR_THREADS`; default 1: every supervisor on
    /// the fleet's own thread; 0: one per core). 1 because on the 2-core
    /// machine two threads registered faster but renewed later (BENCHMARKS.md).
    pub supervisor_threads: u32,
    /// First retry delay after a failure, in seconds; doubles per failure.
    pub retry_base_seconds: i64,
    /// Longest retry delay under the threshold, in seconds.
    pub retry_max_seconds: i64,
    /// Retry cadence once a provider is in `error`, in seconds.
    pub error_retry_seconds: i64,
    /// Timeout of one HTTP request to a provider, in seconds.
    pub provider_timeout_seconds: u64,
    /// Longest one attempt may take (token refresh and retry included), in seconds.
    pub attempt_timeout_seconds: u64,
    /// How often the fleet reads the providers changed since it last looked
    /// (the change feed), in seconds.
    pub reconcile_interval_seconds: u64,
    /// How often the fleet instead re-reads every provider it owns, as a safety
    /// net under the change feed, in seconds
    /// (`SUBKEEPER_RECONCILE_FULL_INTERVAL_SECONDS`; default 3600; at least
    /// `reconcile_interval_seconds`).
    pub reconcile_full_interval_seconds: u64,
    /// With PostgreSQL, how long an instance's lease lasts without a heartbeat,
    /// in seconds (`SUBKEEPER_LEASE_TTL_SECONDS`): a dead instance's providers are
    /// adopted by the others within about this long.
    pub lease_ttl_seconds: u64,
    /// How often the lease is renewed, in seconds; at most a third of the TTL
    /// (`SUBKEEPER_LEASE_HEARTBEAT_SECONDS`).
    pub lease_heartbeat_seconds: u64,
    /// Most providers claimed per statement, and handed over per heartbeat when
    /// instances rebalance (`SUBKEEPER_LEASE_BATCH`).
    pub lease_batch: u32,
    /// Longest a graceful shutdown (SIGTERM) may take before the process exits
    /// anyway, in seconds (`SUBKEEPER_SHUTDOWN_TIMEOUT_SECONDS`).
    pub shutdown_timeout_seconds: u64,
    /// On SIGTERM, `/readyz` fails at once but webhooks are still taken for this
    /// many seconds, so a load balancer can notice first
    /// (`SUBKEEPER_SHUTDOWN_DRAIN_SECONDS`; default 0).
    pub shutdown_drain_seconds: u64,
    /// Bearer token of the admin API; the admin API answers 401 to everything when unset.
    pub admin_token: Option<String>,
    /// Keys that seal client secrets and refresh tokens at rest
    /// (`SUBKEEPER_SECRET_KEYS`): `id:base64key[,id:base64key…]`, 32-byte AES-256
    /// keys; the first seals, every listed one opens (keep an old key listed until
    /// `subkeeper rotate-key` has re-sealed everything). Required with PostgreSQL;
    /// on the embedded store, unset means the `secret-keys` file beside it,
    /// generated on first run.
    pub secret_keys: Option<String>,
    /// Largest accepted webhook body, in bytes.
    pub webhook_max_body_bytes: usize,
    /// How long a webhook request waits for JetStream's acknowledgement before the
    /// notifications go to the Postgres outbox instead, in milliseconds. Graph gives
    /// the whole request 3 s.
    pub webhook_publish_timeout_ms: u64,
    /// How often the outbox relay looks for parked notifications, in milliseconds.
    pub outbox_relay_interval_ms: u64,
    /// Keep the delivery log (`SUBKEEPER_DELIVERY_LOG`; default true): one row
    /// per delivery a provider sent, hashes only. False writes none (the bench's
    /// "off" side; nothing else changes).
    pub delivery_log: bool,
    /// Refused deliveries logged per provider per minute at most
    /// (`SUBKEEPER_DELIVERY_LOG_REJECTED_PER_MINUTE`); past it they are only
    /// counted, so a flood of forged traffic cannot flood the table.
    pub delivery_log_rejected_per_minute: u32,
    /// Renewal attempts older than this many days are deleted; 0 keeps them
    /// forever (`SUBKEEPER_RETENTION_ATTEMPTS_DAYS`).
    pub retention_attempts_days: u32,
    /// Audit rows older than this many days are deleted; 0 keeps them forever
    /// (`SUBKEEPER_RETENTION_AUDIT_DAYS`).
    pub retention_audit_days: u32,
    /// Delivery-log rows older than this many days are deleted; 0 keeps them
    /// forever (`SUBKEEPER_RETENTION_DELIVERIES_DAYS`). The log grows with every
    /// notification, so it gets the shortest age.
    pub retention_deliveries_days: u32,
    /// How long the status page serves its counts by status from memory before
    /// counting every provider again, in seconds; 0 counts on every view
    /// (`SUBKEEPER_STATUS_PAGE_COUNTS_SECONDS`).
    pub status_page_counts_seconds: u64,
    /// How often the housekeeping job runs (retention, and resuming tenant
    /// offboardings), in seconds (`SUBKEEPER_HOUSEKEEPING_INTERVAL_SECONDS`).
    pub housekeeping_interval_seconds: u64,
    /// Most rows one delete statement of retention or offboarding removes: each
    /// batch is its own short transaction, so no lock is held for long
    /// (`SUBKEEPER_HOUSEKEEPING_BATCH`).
    pub housekeeping_batch: u32,
    /// `text` or `json` logs.
    pub log_format: String,
    /// A provider in `error` or `needs_reauth` for longer than this many minutes
    /// gets one `escalated` alert event (`SUBKEEPER_ALERT_ESCALATION_MINUTES`).
    pub alert_escalation_minutes: i64,
    /// Seconds without a webhook after which a mail provider (`graph_mail`,
    /// `gmail`) whose subscription is alive is marked silent
    /// (`SUBKEEPER_MAIL_SILENCE_SECONDS`; default 24 h; 0 turns it off).
    pub mail_silence_seconds: i64,
    /// The same for calendar providers (`graph_calendar`, `google_calendar`)
    /// (`SUBKEEPER_CALENDAR_SILENCE_SECONDS`; default 7 days: calendars are quiet
    /// for days; 0 turns it off).
    pub calendar_silence_seconds: i64,
    /// How often to look for silent providers, in seconds
    /// (`SUBKEEPER_SILENCE_CHECK_INTERVAL_SECONDS`).
    pub silence_check_interval_seconds: u64,
    /// Log filter in tracing's EnvFilter syntax (`SUBKEEPER_LOG_FILTER`), e.g.
    /// `info,subkeeper=debug`.
    pub log_filter: String,
    /// Graph `/subscriptions` writes (create, renew, delete) one app may send
    /// to one tenant in any 20 s (`SUBKEEPER_GRAPH_SUBSCRIPTION_WRITES_PER_20S`;
    /// default 800 of Graph's 1,000; at most 1,000; 0 turns the budget off).
    /// With several instances each keeps its share.
    pub graph_subscription_writes_per_20s: u32,
    /// Graph requests one app may have in flight on one mailbox
    /// (`SUBKEEPER_GRAPH_MAILBOX_CONCURRENCY`; default 2 of Outlook's 4, the
    /// rest left to the product reading the mailbox through the same app; at
    /// most 4; 0 turns the cap off).
    pub graph_mailbox_concurrency: u32,
    /// Google Calendar requests per Google account per OAuth client in any
    /// minute (`SUBKEEPER_GOOGLE_CALENDAR_REQUESTS_PER_MINUTE`; default 480 of
    /// Google's 600; raise it with a raised quota; 0 turns it off).
    pub google_calendar_requests_per_minute: u32,
    /// Gmail quota units per Google account per OAuth client in any minute
    /// (`SUBKEEPER_GMAIL_QUOTA_UNITS_PER_MINUTE`; `users.watch` costs 100,
    /// `users.stop` 50; default 12,000 of Gmail's 15,000; 0 turns it off).
    pub gmail_quota_units_per_minute: u32,
    /// Items asked for per page when a catch-up reads a provider's changes
    /// (`SUBKEEPER_CATCH_UP_PAGE_SIZE`; 1-1000, default 100).
    pub catch_up_page_size: u32,
    /// Pages one catch-up reads before it stores its place and lets others go
    /// first (`SUBKEEPER_CATCH_UP_MAX_PAGES`; default 50).
    pub catch_up_max_pages: u32,
    /// At start-up, providers whose last proof of life (webhook or check) is
    /// older than this many seconds are caught up
    /// (`SUBKEEPER_CATCH_UP_STARTUP_GAP_SECONDS`; default 300).
    pub catch_up_startup_gap_seconds: i64,
    /// Catch-ups started per second at most, so a restart with many providers
    /// spreads its reads (`SUBKEEPER_CATCH_UP_STARTS_PER_SECOND`; default 20).
    pub catch_up_starts_per_second: u32,
    /// Catch-ups in flight at most; each also takes a `renewal_concurrency`
    /// permit while it reads (`SUBKEEPER_CATCH_UP_CONCURRENCY`; default 8).
    pub catch_up_concurrency: u32,
    /// A failed catch-up is tried again after this many seconds
    /// (`SUBKEEPER_CATCH_UP_RETRY_SECONDS`; default 300).
    pub catch_up_retry_seconds: u64,
    /// How often to look for providers due a silence check and export
    /// freshness, in seconds (`SUBKEEPER_CATCH_UP_SWEEP_SECONDS`; default 60).
    pub catch_up_sweep_seconds: u64,
    /// A mail provider (`graph_mail`, `gmail`) with no proof of life for this
    /// many seconds gets a cheap check of its changes: changes no webhook
    /// announced → push broken; none → quiet and healthy
    /// (`SUBKEEPER_MAIL_POLL_AFTER_SILENCE_SECONDS`; default 6 h; 0 turns it off).
    pub mail_poll_after_silence_seconds: i64,
    /// The same for calendar providers (`graph_calendar`, `google_calendar`)
    /// (`SUBKEEPER_CALENDAR_POLL_AFTER_SILENCE_SECONDS`; default 12 h; 0 off).
    pub calendar_poll_after_silence_seconds: i64,
    /// Days before the cursor is taken that a Graph calendar's
    /// `calendarView/delta` window starts (`SUBKEEPER_GRAPH_CALENDAR_WINDOW_PAST_DAYS`;
    /// default 30).
    pub graph_calendar_window_past_days: i64,
    /// Days after the cursor is taken that the window ends
    /// (`SUBKEEPER_GRAPH_CALENDAR_WINDOW_FUTURE_DAYS`; default 365).
    pub graph_calendar_window_future_days: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            database_max_connections: 10,
            database_acquire_timeout_seconds: 30,
            data_dir: default_data_dir(),
            nats_url: String::new(),
            nats_subject_prefix: "subkeeper".into(),
            nats_stream_prefix: "SUBKEEPER".into(),
            nats_webhook_stream_max_bytes: 4 << 30,
            nats_renewal_stream_max_bytes: 256 << 20,
            nats_alert_stream_max_bytes: 64 << 20,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            graph_base_url: "https://graph.microsoft.com/v1.0".into(),
            login_base_url: "https://login.microsoftonline.com".into(),
            google_base_url: "https://www.googleapis.com".into(),
            google_token_url: "https://oauth2.googleapis.com/token".into(),
            gmail_pubsub_topic: String::new(),
            gmail_renew_every_hours: 24,
            gmail_push_secret: None,
            google_resync_minutes: 360,
            renewal_lookahead_minutes: 24 * 60,
            google_renewal_lookahead_minutes: 12 * 60,
            renewal_jitter_seconds: 300,
            renewal_spread_percent: 10,
            failure_threshold: 3,
            renewal_concurrency: 32,
            supervisor_threads: 1,
            retry_base_seconds: 30,
            retry_max_seconds: 30 * 60,
            error_retry_seconds: 15 * 60,
            provider_timeout_seconds: 10,
            attempt_timeout_seconds: 60,
            reconcile_interval_seconds: 60,
            reconcile_full_interval_seconds: 3600,
            lease_ttl_seconds: 15,
            lease_heartbeat_seconds: 5,
            lease_batch: 1000,
            shutdown_timeout_seconds: 30,
            shutdown_drain_seconds: 0,
            admin_token: None,
            secret_keys: None,
            webhook_max_body_bytes: 1024 * 1024,
            webhook_publish_timeout_ms: 1000,
            outbox_relay_interval_ms: 1000,
            delivery_log: true,
            delivery_log_rejected_per_minute: 60,
            retention_attempts_days: 90,
            retention_audit_days: 365,
            retention_deliveries_days: 30,
            status_page_counts_seconds: 10,
            housekeeping_interval_seconds: 3600,
            housekeeping_batch: 1000,
            alert_escalation_minutes: 60,
            mail_silence_seconds: 24 * 3600,
            calendar_silence_seconds: 7 * 24 * 3600,
            silence_check_interval_seconds: 60,
            log_format: "text".into(),
            log_filter: "info,sqlx=warn,actix_server=warn".into(),
            graph_subscription_writes_per_20s: 800,
            graph_mailbox_concurrency: 2,
            google_calendar_requests_per_minute: 480,
            gmail_quota_units_per_minute: 12_000,
            catch_up_page_size: 100,
            catch_up_max_pages: 50,
            catch_up_startup_gap_seconds: 300,
            catch_up_starts_per_second: 20,
            catch_up_concurrency: 8,
            catch_up_retry_seconds: 300,
            catch_up_sweep_seconds: 60,
            mail_poll_after_silence_seconds: 6 * 3600,
            calendar_poll_after_silence_seconds: 12 * 3600,
            graph_calendar_window_past_days: 30,
            graph_calendar_window_future_days: 365,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer did not parse or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range; the message names the variable.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `file` if given, then `SUBKEEPER_*` variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            // Inputs of commands, not settings of the service: the config file,
            // and what `subkeeper providers` reads (the caller's token, a new
            // provider's secrets).
            .merge(Env::prefixed("SUBKEEPER_").ignore(&[
                "config",
                "token",
                "provider_client_secret",
                "provider_refresh_token",
            ]))
            .extract()
            .map_err(|e| unknown_setting(&e).unwrap_or_else(|| ConfigError::Load(Box::new(e))))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(1..GRAPH_MAX_LIFETIME_MINUTES).contains(&self.renewal_lookahead_minutes) {
            return bad(format!(
                "SUBKEEPER_RENEWAL_LOOKAHEAD_MINUTES={} must be between 1 and {} (below Graph's maximum lifetime)",
                self.renewal_lookahead_minutes,
                GRAPH_MAX_LIFETIME_MINUTES - 1
            ));
        }
        if !(1..GOOGLE_MAX_LIFETIME_MINUTES).contains(&self.google_renewal_lookahead_minutes) {
            return bad(format!(
                "SUBKEEPER_GOOGLE_RENEWAL_LOOKAHEAD_MINUTES={} must be between 1 and {} (below a channel's 7-day lifetime)",
                self.google_renewal_lookahead_minutes,
                GOOGLE_MAX_LIFETIME_MINUTES - 1
            ));
        }
        if !(1..GOOGLE_MAX_LIFETIME_MINUTES / 60).contains(&self.gmail_renew_every_hours) {
            return bad(format!(
                "SUBKEEPER_GMAIL_RENEW_EVERY_HOURS={} must be between 1 and {} (a Gmail watch lapses after 7 days)",
                self.gmail_renew_every_hours,
                GOOGLE_MAX_LIFETIME_MINUTES / 60 - 1
            ));
        }
        if !self.gmail_pubsub_topic.is_empty() && !is_pubsub_topic(&self.gmail_pubsub_topic) {
            return bad(format!(
                "SUBKEEPER_GMAIL_PUBSUB_TOPIC={} must be projects/{{project}}/topics/{{topic}}",
                self.gmail_pubsub_topic
            ));
        }
        if self
            .gmail_push_secret
            .as_deref()
            .is_some_and(|t| t.len() < 16)
        {
            return bad("SUBKEEPER_GMAIL_PUSH_SECRET must be at least 16 characters".into());
        }
        if self.renewal_spread_percent > 50 {
            return bad("SUBKEEPER_RENEWAL_SPREAD_PERCENT must be between 0 and 50".into());
        }
        if self.failure_threshold == 0 {
            return bad("SUBKEEPER_FAILURE_THRESHOLD must be at least 1".into());
        }
        if self.database_acquire_timeout_seconds == 0 {
            return bad("SUBKEEPER_DATABASE_ACQUIRE_TIMEOUT_SECONDS must be at least 1".into());
        }
        if self.renewal_concurrency == 0 {
            return bad("SUBKEEPER_RENEWAL_CONCURRENCY must be at least 1".into());
        }
        if self.supervisor_threads > MAX_SUPERVISOR_THREADS {
            return bad(format!(
                "SUBKEEPER_SUPERVISOR_THREADS must be between 0 (one per core) and {MAX_SUPERVISOR_THREADS}"
            ));
        }
        if self.retry_base_seconds < 1
            || self.retry_max_seconds < self.retry_base_seconds
            || self.error_retry_seconds < 1
        {
            return bad("retry delays must be positive and SUBKEEPER_RETRY_MAX_SECONDS ≥ SUBKEEPER_RETRY_BASE_SECONDS".into());
        }
        if self.renewal_jitter_seconds < 0
            || self.renewal_jitter_seconds > self.renewal_lookahead_minutes * 60
        {
            return bad(
                "SUBKEEPER_RENEWAL_JITTER_SECONDS must be between 0 and the lookahead".into(),
            );
        }
        if self.provider_timeout_seconds == 0
            || self.attempt_timeout_seconds < self.provider_timeout_seconds
        {
            return bad("SUBKEEPER_ATTEMPT_TIMEOUT_SECONDS must be ≥ SUBKEEPER_PROVIDER_TIMEOUT_SECONDS > 0".into());
        }
        if self.reconcile_interval_seconds == 0 {
            return bad("SUBKEEPER_RECONCILE_INTERVAL_SECONDS must be at least 1".into());
        }
        if self.reconcile_full_interval_seconds < self.reconcile_interval_seconds {
            return bad("SUBKEEPER_RECONCILE_FULL_INTERVAL_SECONDS must be at least SUBKEEPER_RECONCILE_INTERVAL_SECONDS".into());
        }
        if self.lease_heartbeat_seconds == 0
            || self.lease_heartbeat_seconds.saturating_mul(3) > self.lease_ttl_seconds
        {
            return bad("SUBKEEPER_LEASE_HEARTBEAT_SECONDS must be at least 1 and at most a third of SUBKEEPER_LEASE_TTL_SECONDS".into());
        }
        if self.lease_batch == 0 {
            return bad("SUBKEEPER_LEASE_BATCH must be at least 1".into());
        }
        if self.shutdown_timeout_seconds == 0
            || self.shutdown_drain_seconds >= self.shutdown_timeout_seconds
        {
            return bad("SUBKEEPER_SHUTDOWN_TIMEOUT_SECONDS must be at least 1 and longer than SUBKEEPER_SHUTDOWN_DRAIN_SECONDS".into());
        }
        match url::Url::parse(&self.database_url) {
            _ if self.database_url.is_empty() => {}
            _ if self.database_url.starts_with("sqlite:") => {}
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {}
            // Never echo the URL: it may carry a password.
            _ => {
                return bad(
                    "SUBKEEPER_DATABASE_URL is neither a postgres:// URL (e.g. postgres://user@host:5432/subkeeper) nor sqlite:PATH; leave it unset for the embedded store"
                        .into(),
                );
            }
        }
        for (name, value) in [
            ("SUBKEEPER_PUBLIC_URL", &self.public_url),
            ("SUBKEEPER_GRAPH_BASE_URL", &self.graph_base_url),
            ("SUBKEEPER_LOGIN_BASE_URL", &self.login_base_url),
            ("SUBKEEPER_GOOGLE_BASE_URL", &self.google_base_url),
            ("SUBKEEPER_GOOGLE_TOKEN_URL", &self.google_token_url),
        ] {
            match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return bad(format!("{name}={value} is not an http(s) URL")),
            }
        }
        if let Some(keys) = &self.secret_keys
            && let Err(e) = crate::secrets::Keyring::parse(keys)
        {
            return bad(e.to_string());
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return bad("SUBKEEPER_ADMIN_TOKEN must be at least 16 characters".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("SUBKEEPER_LOG_FORMAT must be text or json".into());
        }
        if !is_subject_prefix(&self.nats_subject_prefix) {
            return bad(format!(
                "SUBKEEPER_NATS_SUBJECT_PREFIX={} must be 1-{MAX_PREFIX_LEN} characters: dot-separated tokens of A-Z, a-z, 0-9, '_' or '-'",
                self.nats_subject_prefix
            ));
        }
        if !is_stream_prefix(&self.nats_stream_prefix) {
            return bad(format!(
                "SUBKEEPER_NATS_STREAM_PREFIX={} must be 1-{MAX_PREFIX_LEN} characters of A-Z, a-z, 0-9, '_' or '-'",
                self.nats_stream_prefix
            ));
        }
        if self.nats_webhook_stream_max_bytes < MIN_STREAM_BYTES
            || self.nats_renewal_stream_max_bytes < MIN_STREAM_BYTES
            || self.nats_alert_stream_max_bytes < MIN_STREAM_BYTES
        {
            return bad(format!(
                "SUBKEEPER_NATS_WEBHOOK_STREAM_MAX_BYTES, SUBKEEPER_NATS_RENEWAL_STREAM_MAX_BYTES and SUBKEEPER_NATS_ALERT_STREAM_MAX_BYTES must be at least {MIN_STREAM_BYTES} (1 MiB)"
            ));
        }
        if self.alert_escalation_minutes < 1 {
            return bad("SUBKEEPER_ALERT_ESCALATION_MINUTES must be at least 1".into());
        }
        if self.mail_silence_seconds < 0 || self.calendar_silence_seconds < 0 {
            return bad("SUBKEEPER_MAIL_SILENCE_SECONDS and SUBKEEPER_CALENDAR_SILENCE_SECONDS must be 0 (off) or positive".into());
        }
        if !(1..=1000).contains(&self.catch_up_page_size) {
            return bad("SUBKEEPER_CATCH_UP_PAGE_SIZE must be 1-1000".into());
        }
        if self.catch_up_max_pages == 0
            || self.catch_up_starts_per_second == 0
            || self.catch_up_concurrency == 0
            || self.catch_up_retry_seconds == 0
            || self.catch_up_sweep_seconds == 0
        {
            return bad("SUBKEEPER_CATCH_UP_MAX_PAGES, SUBKEEPER_CATCH_UP_STARTS_PER_SECOND, SUBKEEPER_CATCH_UP_CONCURRENCY, SUBKEEPER_CATCH_UP_RETRY_SECONDS and SUBKEEPER_CATCH_UP_SWEEP_SECONDS must be at least 1".into());
        }
        if self.catch_up_startup_gap_seconds < 0
            || self.mail_poll_after_silence_seconds < 0
            || self.calendar_poll_after_silence_seconds < 0
        {
            return bad("SUBKEEPER_CATCH_UP_STARTUP_GAP_SECONDS, SUBKEEPER_MAIL_POLL_AFTER_SILENCE_SECONDS and SUBKEEPER_CALENDAR_POLL_AFTER_SILENCE_SECONDS must be 0 or positive".into());
        }
        if self.graph_calendar_window_past_days < 0 || self.graph_calendar_window_future_days < 1 {
            return bad("SUBKEEPER_GRAPH_CALENDAR_WINDOW_PAST_DAYS must be 0 or positive and SUBKEEPER_GRAPH_CALENDAR_WINDOW_FUTURE_DAYS at least 1".into());
        }
        if self.silence_check_interval_seconds == 0 {
            return bad("SUBKEEPER_SILENCE_CHECK_INTERVAL_SECONDS must be at least 1".into());
        }
        if !(10..=2500).contains(&self.webhook_publish_timeout_ms) {
            return bad("SUBKEEPER_WEBHOOK_PUBLISH_TIMEOUT_MS must be 10-2500 (Graph allows 3 s per request)".into());
        }
        if self.housekeeping_interval_seconds == 0 {
            return bad("SUBKEEPER_HOUSEKEEPING_INTERVAL_SECONDS must be at least 1".into());
        }
        if !(1..=100_000).contains(&self.housekeeping_batch) {
            return bad("SUBKEEPER_HOUSEKEEPING_BATCH must be 1-100000".into());
        }
        if self.outbox_relay_interval_ms < 10 {
            return bad("SUBKEEPER_OUTBOX_RELAY_INTERVAL_MS must be at least 10".into());
        }
        if self.webhook_max_body_bytes < 1024 {
            return bad("SUBKEEPER_WEBHOOK_MAX_BODY_BYTES must be at least 1024".into());
        }
        if self.graph_subscription_writes_per_20s > GRAPH_SUBSCRIPTION_WRITES_PER_20S {
            return bad(format!(
                "SUBKEEPER_GRAPH_SUBSCRIPTION_WRITES_PER_20S={} is above Graph's own limit of {GRAPH_SUBSCRIPTION_WRITES_PER_20S} per app per tenant",
                self.graph_subscription_writes_per_20s
            ));
        }
        if self.graph_mailbox_concurrency > GRAPH_MAILBOX_CONCURRENCY {
            return bad(format!(
                "SUBKEEPER_GRAPH_MAILBOX_CONCURRENCY={} is above Outlook's own limit of {GRAPH_MAILBOX_CONCURRENCY} requests per app per mailbox",
                self.graph_mailbox_concurrency
            ));
        }
        Ok(())
    }

    /// Where the store is: Postgres, or the embedded file.
    pub fn store_location(&self) -> crate::store::Location {
        crate::store::Location::from_url(&self.database_url, &self.data_dir)
    }

    /// True when a NATS URL is configured; otherwise the bus is in process.
    pub fn uses_nats(&self) -> bool {
        !self.nats_url.trim().is_empty()
    }

    /// The public URL without a trailing slash.
    pub fn public_base(&self) -> String {
        self.public_url.trim_end_matches('/').to_owned()
    }

    /// The providers' request limits this instance keeps (before its share is
    /// taken); a probe after a rate limit is given up after one attempt's
    /// timeout.
    pub fn limit_settings(&self) -> crate::providers::limits::LimitSettings {
        crate::providers::limits::LimitSettings {
            graph_writes_per_window: self.graph_subscription_writes_per_20s,
            graph_mailbox_concurrency: self.graph_mailbox_concurrency,
            calendar_requests_per_minute: self.google_calendar_requests_per_minute,
            gmail_units_per_minute: self.gmail_quota_units_per_minute,
            probe_timeout: Duration::from_secs(self.attempt_timeout_seconds),
        }
    }

    /// The lifecycle policy for each provider kind.
    pub fn policies(&self) -> HashMap<ProviderKind, Policy> {
        ProviderKind::ALL
            .iter()
            .map(|&kind| {
                let lookahead = match kind {
                    ProviderKind::GraphMail | ProviderKind::GraphCalendar => {
                        self.renewal_lookahead_minutes
                    }
                    ProviderKind::GoogleCalendar => self.google_renewal_lookahead_minutes,
                    // Renewing `every` hours after a watch that lasts the full
                    // lifetime means renewing `lifetime − every` before expiry.
                    ProviderKind::Gmail => {
                        GOOGLE_MAX_LIFETIME_MINUTES - self.gmail_renew_every_hours * 60
                    }
                };
                let policy = Policy {
                    spread: f64::from(self.renewal_spread_percent) / 100.0,
                    spread_share: 0.0,
                    lookahead: TimeDelta::minutes(lookahead),
                    jitter_max: TimeDelta::seconds(self.renewal_jitter_seconds),
                    failure_threshold: self.failure_threshold,
                    backoff_base: TimeDelta::seconds(self.retry_base_seconds),
                    backoff_cap: TimeDelta::seconds(self.retry_max_seconds),
                    cooloff: TimeDelta::seconds(self.error_retry_seconds),
                    min_delay: TimeDelta::seconds(1),
                };
                (kind, policy)
            })
            .collect()
    }

    /// How long without a webhook marks a provider of each kind silent; kinds whose
    /// threshold is 0 are never silent.
    pub fn silence_thresholds(&self) -> HashMap<ProviderKind, TimeDelta> {
        ProviderKind::ALL
            .iter()
            .filter_map(|&kind| {
                let seconds = match kind {
                    ProviderKind::GraphMail | ProviderKind::Gmail => self.mail_silence_seconds,
                    ProviderKind::GraphCalendar | ProviderKind::GoogleCalendar => {
                        self.calendar_silence_seconds
                    }
                };
                (seconds > 0).then(|| (kind, TimeDelta::seconds(seconds)))
            })
            .collect()
    }

    /// How long without proof of life gets a provider of each kind a silence
    /// check; kinds whose setting is 0 are never checked.
    pub fn poll_after_silence(&self) -> HashMap<ProviderKind, TimeDelta> {
        ProviderKind::ALL
            .iter()
            .filter_map(|&kind| {
                let seconds = match kind {
                    ProviderKind::GraphMail | ProviderKind::Gmail => {
                        self.mail_poll_after_silence_seconds
                    }
                    ProviderKind::GraphCalendar | ProviderKind::GoogleCalendar => {
                        self.calendar_poll_after_silence_seconds
                    }
                };
                (seconds > 0).then(|| (kind, TimeDelta::seconds(seconds)))
            })
            .collect()
    }

    /// The catch-up actor's settings.
    pub fn catch_up(&self) -> subkeeper_actors::catchup::CatchUpConfig {
        subkeeper_actors::catchup::CatchUpConfig {
            page_size: self.catch_up_page_size,
            max_pages: self.catch_up_max_pages,
            startup_gap: TimeDelta::seconds(self.catch_up_startup_gap_seconds),
            poll_after_silence: self.poll_after_silence(),
            sweep_every: Duration::from_secs(self.catch_up_sweep_seconds),
            starts_per_second: self.catch_up_starts_per_second,
            concurrency: self.catch_up_concurrency as usize,
            retry_after: Duration::from_secs(self.catch_up_retry_seconds),
        }
    }

    /// Threads the supervisors run on: `supervisor_threads`, 0 read as one per
    /// core.
    pub fn supervisor_threads(&self) -> usize {
        match self.supervisor_threads {
            0 => cores().min(MAX_SUPERVISOR_THREADS as usize),
            n => n as usize,
        }
    }

    /// Timeout of one provider request.
    pub fn provider_timeout(&self) -> Duration {
        Duration::from_secs(self.provider_timeout_seconds)
    }
}

/// Most threads supervisors may run on: far more than cores only adds
/// switching (each thread is an OS thread with its own runtime).
const MAX_SUPERVISOR_THREADS: u32 = 256;

/// One thread per core this process may use (container quota included; 1 if
/// that cannot be read).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// `$XDG_DATA_HOME/subkeeper`, else `$HOME/.local/share/subkeeper`, else
/// `./subkeeper-data`.
fn default_data_dir() -> PathBuf {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_DATA_HOME")
        .map(|d| d.join("subkeeper"))
        .or_else(|| from("HOME").map(|h| h.join(".local/share/subkeeper")))
        .unwrap_or_else(|| PathBuf::from("subkeeper-data"))
}

/// Longest accepted NATS subject or stream prefix, in characters. Subjects also
/// carry a 64-character tenant id and a provider UUID; NATS stream names should stay
/// short (they name files on the server).
const MAX_PREFIX_LEN: usize = 32;

/// Smallest accepted stream size limit, in bytes: one Graph notification batch must
/// fit with room to spare.
const MIN_STREAM_BYTES: u64 = 1 << 20;

/// A NATS token safe in subjects and stream names alike: no wildcard, dot or space.
fn is_token(raw: &str) -> bool {
    !raw.is_empty()
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A misspelt setting, named as the operator wrote it, with the closest real one —
/// rather than figment's list of every key.
fn unknown_setting(e: &figment::Error) -> Option<ConfigError> {
    let figment::error::Kind::UnknownField(found, expected) = &e.kind else {
        return None;
    };
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let spell = |key: &str| {
        if from_env {
            format!("SUBKEEPER_{}", key.to_uppercase())
        } else {
            format!("`{key}`")
        }
    };
    let closest = expected
        .iter()
        .map(|k| (strsim::jaro_winkler(found, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("; did you mean {}?", spell(k)))
        .unwrap_or_else(|| "; docs/configuration.md lists every setting".into());
    let source = e
        .metadata
        .as_ref()
        .and_then(|m| m.source.as_ref())
        .map(|s| format!(" (in {s})"))
        .unwrap_or_default();
    Some(ConfigError::Invalid(format!(
        "{} is not a setting{source}{closest}",
        spell(found)
    )))
}

/// One or more tokens joined by dots, e.g. `subkeeper` or `eu1.subkeeper`.
fn is_subject_prefix(raw: &str) -> bool {
    raw.len() <= MAX_PREFIX_LEN && raw.split('.').all(is_token)
}

/// `projects/{project}/topics/{topic}`, as Gmail's `users.watch` wants it.
fn is_pubsub_topic(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('/').collect();
    parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == "topics"
        && !parts[1].is_empty()
        && !parts[3].is_empty()
}

/// One token: a stream name may not contain a dot.
fn is_stream_prefix(raw: &str) -> bool {
    raw.len() <= MAX_PREFIX_LEN && is_token(raw)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_env_overrides_file() {
        assert!(Config::default().validate().is_ok());
        figment::Jail::expect_with(|jail| {
            // Only what the test sets: not the caller's SUBKEEPER_* (the test
            // kit's own SUBKEEPER_TEST_DATABASE_URL would be an unknown setting).
            jail.clear_env();
            jail.create_file(
                "subkeeper.toml",
                "failure_threshold = 5\nrenewal_concurrency = 4\n",
            )?;
            jail.set_env("SUBKEEPER_FAILURE_THRESHOLD", "7");
            let config =
                Config::load(Some(Path::new("subkeeper.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.failure_threshold, 7);
            assert_eq!(config.renewal_concurrency, 4);
            Ok(())
        });
    }

    #[test]
    fn silence_thresholds_follow_the_kind_and_zero_turns_them_off() {
        let config = Config {
            mail_silence_seconds: 90,
            calendar_silence_seconds: 0,
            ..Config::default()
        };
        let t = config.silence_thresholds();
        assert_eq!(
            t.get(&ProviderKind::GraphMail),
            Some(&TimeDelta::seconds(90))
        );
        assert_eq!(t.get(&ProviderKind::Gmail), Some(&TimeDelta::seconds(90)));
        assert_eq!(t.get(&ProviderKind::GraphCalendar), None);
        let defaults = Config::default().silence_thresholds();
        assert_eq!(
            defaults.get(&ProviderKind::GraphCalendar),
            Some(&TimeDelta::days(7))
        );
        assert!(
            Config {
                silence_check_interval_seconds: 0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn gmail_renews_daily_and_google_settings_are_checked() {
        let policies = Config::default().policies();
        assert_eq!(
            policies[&ProviderKind::Gmail].lookahead,
            TimeDelta::days(6),
            "a 7-day watch renewed every 24 h is renewed 6 days before expiry"
        );
        assert_eq!(
            policies[&ProviderKind::GoogleCalendar].lookahead,
            TimeDelta::hours(12)
        );
        for bad in [
            Config {
                gmail_renew_every_hours: 168,
                ..Config::default()
            },
            Config {
                gmail_pubsub_topic: "my-topic".into(),
                ..Config::default()
            },
            Config {
                gmail_push_secret: Some("short".into()),
                ..Config::default()
            },
            Config {
                google_renewal_lookahead_minutes: GOOGLE_MAX_LIFETIME_MINUTES,
                ..Config::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(
            Config {
                gmail_pubsub_topic: "projects/p/topics/gmail".into(),
                ..Config::default()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn supervisor_threads_default_to_one_zero_means_one_per_core() {
        assert_eq!(Config::default().supervisor_threads(), 1);
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("SUBKEEPER_SUPERVISOR_THREADS", "0");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.supervisor_threads(), cores().min(256));
            jail.set_env("SUBKEEPER_SUPERVISOR_THREADS", "257");
            let err = Config::load(None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("SUBKEEPER_SUPERVISOR_THREADS"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn refuses_a_lookahead_beyond_the_lifetime() {
        figment::Jail::expect_with(|jail| {
            // Only what the test sets: not the caller's SUBKEEPER_* (the test
            // kit's own SUBKEEPER_TEST_DATABASE_URL would be an unknown setting).
            jail.clear_env();
            jail.set_env("SUBKEEPER_RENEWAL_LOOKAHEAD_MINUTES", "20000");
            let err = Config::load(None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("SUBKEEPER_RENEWAL_LOOKAHEAD_MINUTES"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn refuses_nats_prefixes_that_would_break_subjects_or_stream_names() {
        for (subject, stream, ok) in [
            ("subkeeper", "SUBKEEPER", true),
            ("eu1.subkeeper", "SUBKEEPER_EU1", true),
            ("sub keeper", "SUBKEEPER", false),
            ("subkeeper.>", "SUBKEEPER", false),
            ("subkeeper.", "SUBKEEPER", false),
            ("", "SUBKEEPER", false),
            ("subkeeper", "SUB.KEEPER", false),
            ("subkeeper", "SUB*", false),
            ("subkeeper", &"S".repeat(33), false),
        ] {
            let config = Config {
                nats_subject_prefix: subject.into(),
                nats_stream_prefix: stream.into(),
                ..Config::default()
            };
            assert_eq!(config.validate().is_ok(), ok, "{subject:?} / {stream:?}");
        }
    }

    #[test]
    fn a_misspelt_variable_names_itself_and_the_closest_setting() {
        figment::Jail::expect_with(|jail| {
            // Only what the test sets: not the caller's SUBKEEPER_* (the test
            // kit's own SUBKEEPER_TEST_DATABASE_URL would be an unknown setting).
            jail.clear_env();
            jail.set_env("SUBKEEPER_RENEWAL_LOOKAHED_MINUTES", "60");
            let err = Config::load(None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("SUBKEEPER_RENEWAL_LOOKAHED_MINUTES is not a setting")
                    && err.contains("did you mean SUBKEEPER_RENEWAL_LOOKAHEAD_MINUTES?"),
                "{err}"
            );
            assert!(!err.contains("database_url"), "lists every key: {err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            // Only what the test sets: not the caller's SUBKEEPER_* (the test
            // kit's own SUBKEEPER_TEST_DATABASE_URL would be an unknown setting).
            jail.clear_env();
            jail.create_file("subkeeper.toml", "failure_treshold = 3")?;
            let err = Config::load(Some(Path::new("subkeeper.toml")))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("`failure_treshold` is not a setting")
                    && err.contains("did you mean `failure_threshold`?"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_database_url_that_is_not_one_names_the_variable_but_not_its_value() {
        for url in ["notaurl", "mysql://u:pw@h/db", "postgres//x"] {
            let config = Config {
                database_url: url.into(),
                ..Config::default()
            };
            let err = config
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("SUBKEEPER_DATABASE_URL"), "{url}: {err}");
            assert!(!err.contains(url), "echoes the URL (and a password): {err}");
        }
    }
}
