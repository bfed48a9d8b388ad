//! `subkeeper demo`: the simulator and the service in one process on a fast shared
//! clock, a few providers across two tenants, and the lifecycle printed as it
//! happens — registered, renewed, 404 → recreated, three strikes → error,
//! recovery, invalid_grant → needs_reauth → re-authorized.
//!
//! Uses a throwaway database `subkeeper_demo` on the Postgres server named by
//! SUBKEEPER_DATABASE_URL (dropped and recreated at start).

use crate::config::Config;
use crate::store::{Location, Store};
use crate::{RunOptions, run_with};
use anyhow::Context as _;
use chrono::Utc;
use sqlx::{Connection, Executor, PgConnection};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{ProviderId, ProviderKind, RenewalResult, TenantId};
use subkeeper_actors::memory::BroadcastSink;
use subkeeper_actors::ports::clock::{Clock, ScaledClock, SharedClock};
use subkeeper_actors::ports::{AdminStore as _, NewCredentials, NewProvider};
use subkeeper_simulator::{Fault, FaultOperation, FaultRule, Simulator, SimulatorConfig};

const DEMO_DB: &str = "subkeeper_demo";

/// Runs the demo for `seconds` of real time at `speed`× simulated time.
pub async fn run(
    mut config: Config,
    speed: u32,
    seconds: u64,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    crate::install_crypto();
    let database_url = match config.store_location() {
        Location::Postgres(url) => fresh_database(&url).await?,
        Location::Sqlite(_) => {
            let dir = std::env::temp_dir().join(format!("subkeeper-demo-{}", std::process::id()));
            config.data_dir = dir.clone();
            format!("sqlite:{}", dir.join("subkeeper.db").display())
        }
    };
    // The demo's secrets are made up; a key of its own seals them all the same.
    let keys = match &config.secret_keys {
        Some(keys) => keys.clone(),
        None => crate::secrets::Keyring::generate_entry(Utc::now().date_naive())?,
    };
    config.secret_keys = Some(keys.clone());
    let keyring = Arc::new(crate::secrets::Keyring::parse(&keys)?);
    let clock = ScaledClock::new(Utc::now(), speed.max(1));
    let shared: SharedClock = Arc::new(clock.clone());

    // The demo's credentials are made up and its service listens on plain-http
    // 127.0.0.1: the simulator is told to take both.
    let sim = Simulator::new(
        SimulatorConfig {
            allow_http_loopback: true,
            accept_any_credentials: true,
            ..SimulatorConfig::default()
        },
        shared.clone(),
    );
    let sim_server = sim.start(std::net::TcpListener::bind("127.0.0.1:0")?)?;
    let sim_clock: SharedClock = sim.clock();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    config.database_url = database_url.clone();
    config.public_url = format!("http://{}", listener.local_addr()?);
    config.graph_base_url = sim_server.graph_base_url();
    config.login_base_url = sim_server.login_base_url();
    config.reconcile_interval_seconds = 1;
    // Renew about an hour (simulated) after each create instead of a day before
    // expiry, so the demo shows renewals every few real seconds.
    config.renewal_lookahead_minutes = 10_000;
    config.log_format = "text".into();
    // Its own subjects and streams, so a demo next to a real deployment on the same
    // NATS server neither joins its control queue group nor touches its streams.
    config.nats_subject_prefix = format!("{}_demo", config.nats_subject_prefix);
    config.nats_stream_prefix = format!("{}_DEMO", config.nats_stream_prefix);
    // NATS reserves a stream's size limit from its storage: a demo needs little.
    config.nats_webhook_stream_max_bytes = 64 << 20;
    config.nats_renewal_stream_max_bytes = 64 << 20;
    config.validate()?;

    println!("subkeeper demo — simulated time runs {speed}× faster than real time");
    println!(
        "  simulator: {}   service: {}   database: {DEMO_DB}   NATS subjects: {}.>",
        sim_server.base_url, config.public_url, config.nats_subject_prefix
    );
    println!(
        "  lookahead {} min, failure threshold {}   full log: {}\n",
        config.renewal_lookahead_minutes,
        config.failure_threshold,
        log.display()
    );

    let store = Store::open(
        &config.store_location(),
        2,
        sim_clock.clone(),
        crate::store::IfMissing::Create,
    )
    .await?
    .with_keyring(keyring);
    store.migrate().await?;
    let seeds = [
        (
            "acme",
            "acme-aad",
            "alice",
            ProviderKind::GraphMail,
            "renews on time; later Graph loses it (404) and it is recreated",
        ),
        (
            "acme",
            "acme-aad",
            "bob",
            ProviderKind::GraphCalendar,
            "Graph answers 500 four times: three strikes → error, then recovery",
        ),
        (
            "contoso",
            "contoso-aad",
            "carol",
            ProviderKind::GraphMail,
            "consent revoked (invalid_grant) → needs_reauth, then re-authorized",
        ),
        (
            "contoso",
            "contoso-calendar-aad",
            "dan",
            ProviderKind::GraphCalendar,
            "renews on time",
        ),
    ];
    sim.inject_fault(
        FaultRule::new(FaultOperation::Token, Fault::InvalidGrant)
            .for_tenant("contoso-aad")
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
        .for_resource("users/bob/")
        .times(4),
    );
    let mut names: HashMap<ProviderId, String> = HashMap::new();
    let mut carol = None;
    for (tenant, authority, mailbox, kind, story) in seeds {
        let tenant = TenantId::parse(tenant)?;
        let resource = match kind {
            ProviderKind::GraphCalendar => format!("users/{mailbox}/events"),
            _ => format!("users/{mailbox}/messages"),
        };
        let view = store
            .create_provider(
                &tenant,
                &demo_provider(kind, mailbox, &resource, authority),
                "demo",
            )
            .await?;
        println!("  seeded {tenant}/{mailbox} ({kind}): {story}");
        names.insert(view.id, format!("{tenant}/{mailbox}"));
        if mailbox == "carol" {
            carol = Some((tenant, view.id));
        }
    }
    println!();

    let events = BroadcastSink::new(1024);
    let mut results = events.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (fleet_tx, fleet_rx) = tokio::sync::oneshot::channel();
    let service = actix_rt::spawn(run_with(
        Arc::new(config),
        listener,
        async move {
            let _ = stop_rx.await;
        },
        RunOptions {
            clock: Some(sim_clock.clone()),
            events: Some(Arc::new(events)),
            on_started: Some(fleet_tx),
        },
    ));
    let fleet = match fleet_rx.await {
        Ok(fleet) => fleet,
        // The service ended before it was running: say why (which URL failed).
        Err(_) => {
            return Err(match service.await {
                Ok(Err(e)) => anyhow::Error::new(e).context("the demo's service did not start"),
                Ok(Ok(())) => anyhow::anyhow!("the demo's service stopped before it started"),
                Err(e) => anyhow::Error::new(e).context("the demo's service panicked"),
            });
        }
    };

    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut alice_lost = false;
    let mut carol_fixed = false;
    loop {
        let next = tokio::time::timeout_at(deadline, results.recv()).await;
        let Ok(Ok(result)) = next else { break };
        print_result(&result, &names, sim_clock.as_ref());
        let who = names
            .get(&result.provider_id)
            .map(String::as_str)
            .unwrap_or("");
        // After alice's first renewal, Graph "loses" her subscription: the next
        // renewal gets 404 and she is recreated in the same turn.
        if who == "acme/alice" && result.action.as_str() == "renewed" && !alice_lost {
            alice_lost = true;
            if let Some(id) = result.subscription_id.clone() {
                println!(
                    "            ↳ simulator: Graph loses alice's subscription {id}; forcing a renewal"
                );
                sim.inject_fault(
                    FaultRule::new(
                        FaultOperation::Renew,
                        Fault::Status {
                            status: 404,
                            code: "ResourceNotFound".into(),
                            retry_after_seconds: None,
                        },
                    )
                    .for_subscription(id)
                    .times(1),
                );
                let fleet = fleet.clone();
                let tenant = result.tenant.clone();
                let provider = result.provider_id;
                actix_rt::spawn(async move {
                    let _ = fleet.renew(tenant, provider).await;
                });
            }
        }
        if who == "contoso/carol" && result.status.as_str() == "needs_reauth" && !carol_fixed {
            carol_fixed = true;
            if let Some((tenant, id)) = &carol {
                println!("            ↳ operator re-authorizes carol (new credentials)");
                let creds = demo_credentials("contoso-aad");
                store
                    .replace_credentials(tenant, *id, &creds, "demo")
                    .await?;
                fleet.reconcile();
            }
        }
    }
    println!(
        "\n{} s of real time elapsed; stopping.",
        started.elapsed().as_secs()
    );
    let _ = stop_tx.send(());
    let _ = service.await;
    sim_server.stop().await;
    Ok(())
}

fn demo_credentials(authority: &str) -> NewCredentials {
    NewCredentials {
        flow: "client_credentials".into(),
        authority_tenant: authority.into(),
        client_id: "00000000-0000-0000-0000-00000000demo".into(),
        client_secret: Some("demo-secret".into()),
        refresh_token: None,
        scope: None,
    }
}

fn demo_provider(
    kind: ProviderKind,
    mailbox: &str,
    resource: &str,
    authority: &str,
) -> NewProvider {
    NewProvider {
        kind,
        display_name: format!("{mailbox} ({kind})"),
        resource: resource.into(),
        enabled: Some(true),
        credentials: demo_credentials(authority),
    }
}

fn print_result(r: &RenewalResult, names: &HashMap<ProviderId, String>, clock: &dyn Clock) {
    let who = names
        .get(&r.provider_id)
        .cloned()
        .unwrap_or_else(|| r.provider_id.to_string());
    let at = clock.now().format("%b %d %H:%M");
    if r.success {
        let until = r
            .new_expiration
            .map(|e| e.format("%b %d %H:%M").to_string())
            .unwrap_or_default();
        println!(
            "[{at}] {who:<14} {:<10} subscription alive until {until}   ({})",
            r.action, r.status
        );
    } else {
        let class = r.error_class.map(|c| c.as_str()).unwrap_or("");
        let transition = if r.previous_status != r.status {
            format!("  {} → {}", r.previous_status, r.status)
        } else {
            String::new()
        };
        println!(
            "[{at}] {who:<14} {:<10} {class} (failures: {}){transition}",
            r.attempt, r.consecutive_failures
        );
        if matches!(r.status.as_str(), "error" | "needs_reauth") && r.previous_status != r.status {
            println!("            ↳ {}", r.error_message.as_deref().unwrap_or(""));
        }
    }
}

/// Drops and recreates the demo database on the server of `url`; returns its URL.
async fn fresh_database(url: &str) -> anyhow::Result<String> {
    let mut server = url::Url::parse(url).context("SUBKEEPER_DATABASE_URL is not a URL")?;
    server.set_path("/postgres");
    let mut conn = PgConnection::connect(server.as_str())
        .await
        .with_context(|| {
            format!(
                "the demo needs PostgreSQL and NATS (JetStream): cannot reach PostgreSQL at {} — scripts/test-services installs and starts both on Debian",
                server.host_str().unwrap_or("")
            )
        })?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)"
    )))
    .await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DEMO_DB}")))
        .await?;
    server.set_path(&format!("/{DEMO_DB}"));
    Ok(server.to_string())
}
