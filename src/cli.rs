//! Operator commands that are not the service itself (`subkeeper status`).

use crate::config::Config;
use crate::store::PgStore;
use std::sync::Arc;
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
