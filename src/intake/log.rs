//! What intake itself writes to the delivery log: refused deliveries (bad
//! clientState, retired, publish failed), duplicates and Graph lifecycle
//! notifications. Accepted change notifications are logged by the notification
//! consumer, once per stream batch, not here.
//!
//! Nothing here waits on the store: a write is spawned after the request's
//! verdict, refused deliveries are rate-limited per provider, and while too many
//! writes are in flight (the store is slow or down) further ones are only
//! counted. The webhook request is never slowed by the log.

use crate::intake::Dropped;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use subkeeper_actors::domain::{
    DeliveryKind, DeliveryOutcome, DeliveryReason, ProviderId, WebhookEnvelope,
};
use subkeeper_actors::notification::sha256_hex;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{DeliveryLog, DeliveryRecord, Route};
use subkeeper_actors::telemetry::{DeliveriesLogged, DeliveriesNotLogged};

/// Writes in flight past which further ones are dropped (and counted).
const MAX_IN_FLIGHT: usize = 32;

/// Providers remembered by the rate limiter before it starts over (bounded memory).
const MAX_TRACKED: usize = 100_000;

/// The reason code of a drop.
pub fn reason_of(why: Dropped) -> DeliveryReason {
    match why {
        Dropped::UnknownSubscription => DeliveryReason::UnknownSubscription,
        Dropped::BadClientState => DeliveryReason::BadClientState,
        Dropped::Retired => DeliveryReason::Retired,
    }
}

/// Intake's side of the delivery log.
pub struct DeliveryRecorder {
    log: Arc<dyn DeliveryLog>,
    clock: SharedClock,
    /// Refused deliveries logged per provider per minute at most.
    per_minute: u32,
    /// Provider → (minute, refused deliveries logged in it).
    window: Mutex<HashMap<ProviderId, (i64, u32)>>,
    /// Writes spawned and not finished.
    in_flight: Arc<AtomicUsize>,
}

impl DeliveryRecorder {
    /// A recorder writing to `log`, at most `per_minute` refused deliveries per
    /// provider and minute.
    pub fn new(log: Arc<dyn DeliveryLog>, clock: SharedClock, per_minute: u32) -> Self {
        Self {
            log,
            clock,
            per_minute,
            window: Mutex::new(HashMap::new()),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A record of `item` (hashed, never kept) delivered on `route`.
    pub fn record(
        &self,
        route: &Route,
        kind: DeliveryKind,
        outcome: DeliveryOutcome,
        reason: DeliveryReason,
        message_id: Option<String>,
        item: &serde_json::Value,
    ) -> DeliveryRecord {
        DeliveryRecord {
            provider_id: route.provider,
            tenant: route.tenant.clone(),
            received_at: self.clock.now(),
            kind,
            outcome,
            reason,
            message_id,
            payload_sha256: sha256_hex(item.to_string().as_bytes()),
        }
    }

    /// The record of a published envelope that was not accepted (`outcome`,
    /// `reason`), with its stream message id.
    pub fn envelope_record(
        envelope: &WebhookEnvelope,
        outcome: DeliveryOutcome,
        reason: DeliveryReason,
        message_id: &str,
    ) -> DeliveryRecord {
        DeliveryRecord {
            provider_id: envelope.provider_id,
            tenant: envelope.tenant.clone(),
            received_at: envelope.received_at,
            kind: DeliveryKind::of(envelope.kind),
            outcome,
            reason,
            message_id: Some(message_id.to_owned()),
            payload_sha256: sha256_hex(envelope.notification.to_string().as_bytes()),
        }
    }

    /// Logs refused deliveries, at most `per_minute` per provider and minute;
    /// the rest are counted only.
    pub fn refused(&self, records: Vec<DeliveryRecord>) {
        if records.is_empty() {
            return;
        }
        let minute = self.clock.now().timestamp().div_euclid(60);
        let mut kept = Vec::with_capacity(records.len());
        let mut over: HashMap<DeliveryReason, u64> = HashMap::new();
        match self.window.lock() {
            Ok(mut window) => {
                if window.len() > MAX_TRACKED {
                    window.clear();
                }
                for record in records {
                    let slot = window.entry(record.provider_id).or_insert((minute, 0));
                    if slot.0 != minute {
                        *slot = (minute, 0);
                    }
                    if slot.1 < self.per_minute {
                        slot.1 += 1;
                        kept.push(record);
                    } else {
                        *over.entry(record.reason).or_default() += 1;
                    }
                }
            }
            // A poisoned lock only loses the limit, not the records.
            Err(_) => kept = records,
        }
        for (reason, count) in over {
            DeliveriesNotLogged {
                reason,
                why: "rate_limited",
                count,
            }
            .emit();
        }
        self.write(kept);
    }

    /// Logs deliveries that are not refusals (lifecycle notifications, resends
    /// the stream already held), unlimited.
    pub fn handled(&self, records: Vec<DeliveryRecord>) {
        self.write(records);
    }

    /// Spawns one write of `records`, unless too many are in flight.
    fn write(&self, records: Vec<DeliveryRecord>) {
        if records.is_empty() {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            not_logged(&records, "backlog");
            return;
        }
        let (log, in_flight) = (self.log.clone(), self.in_flight.clone());
        tokio::spawn(async move {
            match log.record_deliveries(&records).await {
                Ok(()) => DeliveriesLogged { records: &records }.emit(),
                Err(e) => {
                    tracing::warn!(error = %e, deliveries = records.len(), "cannot write refused deliveries to the delivery log; counted only");
                    not_logged(&records, "write_failed");
                }
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Counts `records` as left out of the log, by reason.
fn not_logged(records: &[DeliveryRecord], why: &'static str) {
    let mut by_reason: HashMap<DeliveryReason, u64> = HashMap::new();
    for r in records {
        *by_reason.entry(r.reason).or_default() += 1;
    }
    for (reason, count) in by_reason {
        DeliveriesNotLogged { reason, why, count }.emit();
    }
}
