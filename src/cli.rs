//! Operator commands that are not the service itself (`subkeeper status`,
//! `subkeeper renew`).

use crate::bus::{Bus, RenewReply, RenewRequest, Topology};
use crate::config::Config;
use crate::store::PgStore;
use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::clock::SystemClock;

/// Prints provider counts by status and every provider that needs a human.
pub async fn status(config: &Config) -> anyhow::Result<()> {
    let store = PgStore::connect(&config.database_url, 1, Arc::new(SystemClock)).await?;
    println!("providers by status:");
    for (status, n) in store.status_counts().await? {
        println!("  {status:<13} {n}");
    }
    let attention = store.needing_attention().await?;
    if attention.is_empty() {
        println!("no provider needs attention");
    }
    for a in attention {
        println!(
            "{} {} {} ({}): {}",
            a.status,
            a.tenant,
            a.provider,
            a.display_name,
            a.error_message.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// Exit code of `subkeeper renew` when the service renewed but an attempt failed (the
/// printed RenewalResult says why). 1 is an error reply, a timeout or NATS unreachable.
pub const RENEW_ATTEMPT_FAILED: u8 = 3;

/// Forces a renewal over NATS — one provider of `tenant`, or all of them — and
/// prints the reply as pretty JSON on stdout. Exits 0 when every attempt succeeded,
/// [`RENEW_ATTEMPT_FAILED`] when one failed, and with an error (1) on an error reply
/// or no reply within `timeout`.
pub async fn renew(
    config: &Config,
    tenant: String,
    provider_id: Option<String>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let bus = Bus::connect(&config.nats_url, Topology::from_config(config)).await?;
    let reply = bus
        .request_renewal(
            &RenewRequest {
                tenant,
                provider_id,
            },
            timeout,
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    let reply: RenewReply = serde_json::from_value(reply)
        .context("the reply is neither a RenewalResult, a list of them, nor an error")?;
    if let RenewReply::Error { error } = &reply {
        anyhow::bail!("renewal refused ({}): {}", error.code, error.message);
    }
    Ok(if reply.results().iter().all(|r| r.success) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(RENEW_ATTEMPT_FAILED)
    })
}
