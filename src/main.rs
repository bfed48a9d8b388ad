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
    /// Watch subkeeper work: the service and a simulated Microsoft Graph and Google
    /// in one process, with nothing installed or running but this binary.
    ///
    /// Six providers across three tenants are connected through the admin API, and
    /// the story is printed as it happens, one line per event read off the bus,
    /// each starting with the simulated time: registration; renewal; a subscription
    /// Graph lost (404) recreated; three strikes → error → an alert firing, then
    /// resolved; invalid_grant → needs_reauth → re-authorized; a Graph change
    /// notification accepted onto the bus and its mail_received event; a forced
    /// renewal sent as the bus's retry message (control.renew) and its reply; a
    /// Google Calendar channel rotated (new channel, old one stopped) and a Gmail
    /// watch renewed. It ends by itself once all of that has been seen (exit 0) and
    /// says where the state it left is and how to look at it.
    ///
    /// By default the state is an embedded SQLite store in a new directory under
    /// the temp directory (or --data-dir) and the bus is in process. The service's
    /// own log goes to subkeeper.log in that directory. With --postgres / --nats
    /// (or SUBKEEPER_DATABASE_URL / SUBKEEPER_NATS_URL) the same story runs on
    /// those servers, in the demo's own database `subkeeper_demo` and its own
    /// subjects `{prefix}_demo.>` and streams `{PREFIX}_DEMO_*`, all recreated at
    /// start. A server it cannot reach is named with the flag or variable that
    /// pointed at it.
    Demo {
        /// Simulated seconds per real second (the story takes about 90 simulated
        /// minutes: some 9 s at the default).
        #[arg(long, default_value_t = 600)]
        speed: u32,
        /// Give up after this many real seconds if the story is not told by then
        /// (exit 1, naming what was not seen).
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Keep the demo's state in this directory (new or empty) instead of a new
        /// one under the temp directory.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Run on this PostgreSQL server instead of the embedded store: the demo
        /// drops and recreates its own database `subkeeper_demo` there (the URL's
        /// database is not used). Default: SUBKEEPER_DATABASE_URL, when it is a
        /// postgres:// URL.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// Run on this NATS server (JetStream enabled) instead of the in-process
        /// bus, on the demo's own subjects and streams. Default: SUBKEEPER_NATS_URL.
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
    /// Print provider counts by status and every provider that needs attention.
    Status,
    /// List, add, remove and import providers through the running service's
    /// admin API (so the fleet acts at once and the audit trail records it).
    ///
    /// The token is SUBKEEPER_TOKEN (a tenant token acts for its tenant only),
    /// else SUBKEEPER_ADMIN_TOKEN, else the embedded service's admin-token file;
    /// the service is at SUBKEEPER_HTTP_ADDR unless --url says otherwise.
    Providers {
        /// The service's base URL, e.g. https://subkeeper.example.com.
        #[arg(long, global = true, value_name = "URL")]
        url: Option<String>,
        #[command(subcommand)]
        command: ProvidersCommand,
    },
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
    /// Tenant API tokens: create (shown once), list, revoke. A tenant token acts
    /// for its one tenant only (another tenant's URL answers 403); the store
    /// keeps only its SHA-256. Works on the store directly: the service need
    /// not run, and a change holds at once on every instance.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
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

#[derive(Subcommand)]
enum ProvidersCommand {
    /// One line per provider of the tenant: id, kind, status, subscription
    /// state, expiry, name and failure reason — the words of `subkeeper status`
    /// and the status page.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Print the admin API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Add one provider (idempotent: a provider with the same tenant, kind and
    /// resource is left as it is, or its name and enabled flag updated).
    /// Secrets come from the environment, never the command line:
    /// SUBKEEPER_PROVIDER_CLIENT_SECRET, SUBKEEPER_PROVIDER_REFRESH_TOKEN.
    Add {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// graph_mail, graph_calendar, google_calendar or gmail.
        #[arg(long)]
        kind: String,
        /// Human name.
        #[arg(long)]
        name: String,
        /// Graph resource path, Google calendar id or Gmail mailbox.
        #[arg(long)]
        resource: String,
        /// client_credentials (Microsoft app-only) or refresh_token.
        #[arg(long)]
        flow: String,
        /// Azure AD tenant id or domain (Microsoft).
        #[arg(long)]
        authority_tenant: Option<String>,
        /// The app registration's client id.
        #[arg(long)]
        client_id: String,
        /// OAuth scope (defaults per flow).
        #[arg(long)]
        scope: Option<String>,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a provider; the service deletes its subscription at the provider.
    Remove {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The provider id.
        id: String,
    },
    /// Import providers from a CSV file (header: tenant, kind, display_name,
    /// resource, enabled, flow, authority_tenant, client_id, client_secret,
    /// refresh_token, scope) or a JSON file (an array of such objects, or one per
    /// line).
    ///
    /// Idempotent: the same file twice changes nothing. Each bad row is reported
    /// on stderr as `line N: why` and the good ones are applied; progress goes to
    /// stderr on long imports. Exit status 0 when every row applied, 2 when some
    /// were refused.
    Import {
        /// The file (`.csv` is read as CSV, anything else as JSON).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make a token for one tenant and print it; it is never shown again.
    Create {
        /// The tenant the token acts for.
        #[arg(long)]
        tenant: String,
        /// What to call it (who or what uses it), 1-100 characters.
        #[arg(long)]
        name: String,
    },
    /// List tokens (id, tenant, name, created, active or revoked); never the
    /// tokens themselves.
    List {
        /// Only this tenant's tokens.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token: it authenticates nothing from now on.
    Revoke {
        /// The token's id, as `tokens list` shows it.
        id: String,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    // The demo prints one line per event itself; the service's log (which would
    // repeat each one) goes to a file in the demo's data directory.
    let demo = match &cli.command {
        Command::Demo {
            speed,
            seconds,
            data_dir,
            postgres,
            nats,
        } => {
            let demo = subkeeper::demo::Demo::prepare(
                config.clone(),
                subkeeper::demo::DemoArgs {
                    speed: *speed,
                    seconds: *seconds,
                    data_dir: data_dir.clone(),
                    postgres: postgres.clone(),
                    nats: nats.clone(),
                },
            )?;
            let log = demo.log_path();
            subkeeper::telemetry::init_logging_to_file(
                &config.log_format,
                &config.log_filter,
                &log,
            )
            .with_context(|| format!("cannot write the demo's log to {}", log.display()))?;
            Some(demo)
        }
        _ => {
            subkeeper::telemetry::init_logging(&config.log_format, &config.log_filter);
            None
        }
    };
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
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
            Command::Demo { .. } => match demo {
                Some(demo) => demo.run().await,
                None => anyhow::bail!("the demo was not prepared"),
            },
            Command::Status => subkeeper::cli::status(&config)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Providers { url, command } => providers(&config, url, command).await,
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
            Command::Tokens { command } => {
                let command = match command {
                    TokensCommand::Create { tenant, name } => {
                        subkeeper::cli::TokensCommand::Create { tenant, name }
                    }
                    TokensCommand::List { tenant } => subkeeper::cli::TokensCommand::List { tenant },
                    TokensCommand::Revoke { id } => subkeeper::cli::TokensCommand::Revoke { id },
                };
                subkeeper::cli::tokens(&config, command)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
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
    });
    // `run_with` has stopped the fleet and closed the store's pool before it
    // returned: dropping the runtime cancels nothing that holds a connection.
    drop(system);
    result
}

/// `subkeeper providers …`.
async fn providers(
    config: &Config,
    url: Option<String>,
    command: ProvidersCommand,
) -> anyhow::Result<ExitCode> {
    use subkeeper::provider_cli as cli;
    let client = cli::AdminClient::new(config, url.as_deref())?;
    match command {
        ProvidersCommand::List { tenant, json } => cli::list(&client, &tenant, json).await?,
        ProvidersCommand::Add {
            tenant,
            kind,
            name,
            resource,
            flow,
            authority_tenant,
            client_id,
            scope,
            disabled,
        } => {
            let secret = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
            let row = cli::ImportRow {
                tenant,
                kind,
                display_name: name,
                resource,
                enabled: Some(!disabled),
                flow,
                authority_tenant,
                client_id,
                client_secret: secret("SUBKEEPER_PROVIDER_CLIENT_SECRET"),
                refresh_token: secret("SUBKEEPER_PROVIDER_REFRESH_TOKEN"),
                scope,
            };
            cli::add(&client, row).await?;
        }
        ProvidersCommand::Remove { tenant, id } => cli::remove(&client, &tenant, &id).await?,
        ProvidersCommand::Import { file } => return cli::import(&client, &file).await,
    }
    Ok(ExitCode::SUCCESS)
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
