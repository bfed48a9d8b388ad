//! The outbox relay: publishes notifications that were parked in the outbox while
//! the bus was unreachable, with their original message id (so one that did reach
//! the stream earlier is stored once), and deletes each only after the ack.

use super::IntakePorts;
use crate::telemetry::events::OutboxMeasured;
use std::time::Duration;
use subkeeper_actors::ports::clock::SharedClock;

/// Entries published per round.
const BATCH: i64 = 200;

/// Runs the relay until the returned handle is aborted: a round every `every`
/// (sooner while there is a backlog), and the outbox gauges refreshed each round.
pub fn spawn_outbox_relay(
    ports: IntakePorts,
    clock: SharedClock,
    every: Duration,
    publish_timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let drained = relay_once(&ports, publish_timeout).await;
            match ports.outbox.stats().await {
                Ok((depth, oldest)) => OutboxMeasured {
                    depth,
                    oldest_age_seconds: oldest.map_or(0.0, |t| {
                        (clock.now() - t).num_milliseconds().max(0) as f64 / 1000.0
                    }),
                }
                .emit(),
                Err(e) => tracing::warn!(error = %e, "cannot read outbox depth"),
            }
            // A full batch means more is waiting: go again at once.
            if drained < BATCH as usize {
                tokio::time::sleep(every).await;
            }
        }
    })
}

/// One round: returns how many entries were published.
async fn relay_once(ports: &IntakePorts, timeout: Duration) -> usize {
    let entries = match ports.outbox.peek(BATCH).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return 0;
        }
    };
    let mut done = Vec::with_capacity(entries.len());
    for entry in &entries {
        match ports
            .publisher
            .publish_durable(&entry.message, timeout)
            .await
        {
            Ok(_) => done.push(entry.id),
            Err(e) => {
                // The bus is still down: keep order, try again next round.
                let _ = ports.outbox.failed(entry.id, &e.to_string()).await;
                break;
            }
        }
    }
    if !done.is_empty() {
        if let Err(e) = ports.outbox.remove(&done).await {
            // They will be published again; the stream's dedup window absorbs it.
            tracing::warn!(error = %e, "published outbox entries not removed");
        } else {
            tracing::info!(count = done.len(), "outbox entries relayed to the bus");
        }
    }
    done.len()
}
