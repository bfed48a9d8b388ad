//! The `subkeeper` binary: parses the command line and calls into the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use subkeeper::Config;

/// Keeps webhook subscriptions alive for every tenant's mailboxes and calendars —
/// Microsoft Graph change notifications (mail, calendar events), Google Calendar
/// watch channels and Gmail watches — takes in their webhooks, and pages a human
/// before anything goes silent.
///
/// Configuration: built-in defaults, then the optional TOML file (--config), then
/// SUBKEEPER_* environment variables (see docs/configuration.md).
#[derive(Parser)]
#[command(name = "subkeeper", version, about)]
struct Cli {
    /// Optional TOML configuration file (layered under SUBKEEPER_* variables).
    #[arg(long, global = true, env = "SUBKEEPER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: migrate, supervise every enabled provider, serve HTTP on
    /// SUBKEEPER_HTTP_ADDR until SIGINT/SIGTERM.
    Run,
    /// Apply database migrations to SUBKEEPER_DATABASE_URL and exit (creating the
    /// database first if it does not exist and the role may).
    Migrate,
    /// Run the provider simulator (Microsoft Graph + identity platform, Google
    /// Calendar/Gmail/OAuth) for tests, the demo and docker-compose.
    ///
    /// It is as strict as the real services unless told otherwise: notification
    /// URLs must be https, and only apps registered through `POST /_sim/apps`
    /// (`{"provider": "microsoft"|"google", "client_id", "client_secret"}`) get
    /// tokens.
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// Run the simulator's clock this many times faster than real time.
        #[arg(long, default_value_t = 1)]
        speed: u32,
        /// Accept plain-http notification URLs whose host is loopback
        /// (127.0.0.0/8, ::1, localhost), for a subscriber on this machine.
        /// Graph and Google accept only https, and so does the simulator without
        /// this flag.
        #[arg(long)]
        allow_http_loopback: bool,
        /// Also accept plain-http notification URLs to this host (repeatable),
        /// e.g. a compose service name.
        #[arg(long = "allow-http-host", value_name = "HOST")]
        allow_http_hosts: Vec<String>,
        /// Accept any client id and secret at both token endpoints, and client
        /// credentials on /common or /consumers. Without it, unknown apps and
        /// wrong secrets fail as they do at Microsoft and Google.
        #[arg(long)]
        accept_any_credentials: bool,
    },
    /// Start the simulator and the service in one process, seed providers across two
    /// tenants, run the clock fast, and print the lifecycle as it happens (one line
    /// per event; the service's log goes to subkeeper-demo.log in the temp dir).
    Demo {
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1200)]
        speed: u32,
        /// Stop after this many real seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Print provider counts by status and every provider that needs attention.
    Status,
    /// Re-seal every stored client secret and refresh token under the first key
    /// of SUBKEEPER_SECRET_KEYS (on the embedded store: the secret-keys file
    /// beside it), including values stored before sealing existed.
    ///
    /// To rotate: put a new key first in the list (keep the old ones), restart
    /// the service, run this, then drop the old keys.
    RotateKey {
        /// Print a new key entry (`id:base64key`) to put first in the list, and
        /// exit without touching the store.
        #[arg(long)]
        print_new_key: bool,
    },
    /// Force a renewal now through the running service (NATS request on
    /// `{SUBKEEPER_NATS_SUBJECT_PREFIX}.control.renew`) and print the reply as JSON.
    ///
    /// Exit status: 0 when every renewal succeeded; 3 when the service renewed but an
    /// attempt failed (the RenewalResult says why); 1 on an error reply (unknown
    /// provider, another tenant's provider, bad tenant id), no reply in time, or NATS
    /// unreachable.
    Renew {
        /// The tenant the provider belongs to.
        #[arg(long)]
        tenant: String,
        /// The provider id; without it, every provider of the tenant is renewed.
        #[arg(long)]
        provider: Option<String>,
        /// How long to wait for the reply. A renewal waits for the provider's answer
        /// (up to SUBKEEPER_ATTEMPT_TIMEOUT_SECONDS).
        #[arg(long, default_value_t = 90)]
        timeout_seconds: u64,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    // The demo prints one line per event itself; its log (which would repeat
    // each one) goes to a file it names.
    let demo_log = std::env::temp_dir().join("subkeeper-demo.log");
    match cli.command {
        Command::Demo { .. } => subkeeper::telemetry::init_logging_to_file(
            &config.log_format,
            &config.log_filter,
            &demo_log,
        )
        .with_context(|| format!("cannot write the demo's log to {}", demo_log.display()))?,
        _ => subkeeper::telemetry::init_logging(&config.log_format, &config.log_filter),
    }
    let system = actix_rt::System::new();
    system.block_on(async move {
        match cli.command {
            Command::Run => {
                let listener = std::net::TcpListener::bind(config.http_addr)
                    .with_context(|| format!("cannot listen on {}", config.http_addr))?;
                tracing::info!(addr = %config.http_addr, public_url = %config.public_url, "subkeeper starting");
                subkeeper::run(Arc::new(config), listener, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate => {
                let location = config.store_location();
                let store = subkeeper::store::Store::open(
                    &location,
                    1,
                    Arc::new(subkeeper_actors::ports::clock::SystemClock),
                    subkeeper::store::IfMissing::Create,
                )
                .await?;
                store.migrate().await?;
                println!("migrations applied to the {}", location.describe());
                Ok(ExitCode::SUCCESS)
            }
            Command::Simulate {
                addr,
                speed,
                allow_http_loopback,
                allow_http_hosts,
                accept_any_credentials,
            } => {
                let config = subkeeper_simulator::SimulatorConfig {
                    allow_http_loopback,
                    allow_http_hosts,
                    accept_any_credentials,
                    ..subkeeper_simulator::SimulatorConfig::default()
                };
                subkeeper_simulator::serve_forever(addr, speed, config).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Demo { speed, seconds } => subkeeper::demo::run(config, speed, seconds, &demo_log)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Status => subkeeper::cli::status(&config)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::RotateKey { print_new_key: true } => {
                println!(
                    "{}",
                    subkeeper::secrets::Keyring::generate_entry(chrono::Utc::now().date_naive())?
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::RotateKey { print_new_key: false } => subkeeper::cli::rotate_key(&config)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Renew {
                tenant,
                provider,
                timeout_seconds,
            } => {
                subkeeper::cli::renew(
                    &config,
                    tenant,
                    provider,
                    Duration::from_secs(timeout_seconds),
                )
                .await
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
