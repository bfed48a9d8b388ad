//! Telemetry of the core as named events: each struct is one outcome whose `emit()`
//! logs and records metrics together. Metric names live in [`names`] and nowhere
//! else; dashboards and alert rules use only those names (a test checks it).
//!
//! Labels come from bounded sets only (kind, action, outcome, class). Gauges about
//! the fleet and the per-provider series (present only while a provider is
//! unhealthy) are rendered at scrape time from the health board, not recorded here.

use crate::alerting::Alert;
use crate::domain::{HealthState, RenewalResult};
use metrics::{counter, gauge, histogram};

/// Every metric subkeeper exports. Prefix `subkeeper_`, Prometheus naming.
pub mod names {
    /// Counter {kind, action, outcome}: provider calls that set out to register, renew
    /// or recreate, by success or failure.
    pub const RENEWAL_ATTEMPTS: &str = "subkeeper_renewal_attempts_total";
    /// Counter {kind, class}: failed attempts by error class.
    pub const RENEWAL_ERRORS: &str = "subkeeper_renewal_errors_total";
    /// Histogram {kind}: seconds one provider call took (token refresh included).
    pub const RENEWAL_DURATION: &str = "subkeeper_renewal_duration_seconds";
    /// Histogram {kind}: seconds between a renewal's scheduled time and its start.
    pub const RENEWAL_LAG: &str = "subkeeper_renewal_lag_seconds";
    /// Gauge {kind, state}: providers by state.
    pub const PROVIDERS: &str = "subkeeper_providers";
    /// Gauge {kind}: seconds until the soonest subscription expiry.
    pub const NEAREST_EXPIRY: &str = "subkeeper_subscription_nearest_expiry_seconds";
    /// Gauge {kind, within}: subscriptions expiring within 1h / 24h.
    pub const EXPIRING: &str = "subkeeper_subscriptions_expiring";
    /// Counter {kind, result}: webhook notifications received.
    pub const WEBHOOKS_RECEIVED: &str = "subkeeper_webhooks_received_total";
    /// Histogram {kind}: seconds to answer a webhook request.
    pub const WEBHOOK_RESPONSE: &str = "subkeeper_webhook_response_seconds";
    /// Histogram {stream}: seconds to get a JetStream publish acknowledged.
    pub const JETSTREAM_PUBLISH: &str = "subkeeper_jetstream_publish_seconds";
    /// Counter {stream}: JetStream publishes that failed.
    pub const JETSTREAM_PUBLISH_FAILURES: &str = "subkeeper_jetstream_publish_failures_total";
    /// Gauge: notifications waiting in the Postgres outbox.
    pub const OUTBOX_DEPTH: &str = "subkeeper_outbox_depth";
    /// Gauge: age in seconds of the oldest outbox entry (0 when empty).
    pub const OUTBOX_OLDEST_AGE: &str = "subkeeper_outbox_oldest_age_seconds";
    /// Gauge {actor}: actors running.
    pub const ACTORS_RUNNING: &str = "subkeeper_actors_running";
    /// Gauge {version}: always 1.
    pub const BUILD_INFO: &str = "subkeeper_build_info";
    /// Gauge {tenant, provider, kind}: consecutive failures, only while unhealthy.
    pub const PROVIDER_CONSECUTIVE_FAILURES: &str = "subkeeper_provider_consecutive_failures";
    /// Gauge {tenant, provider, kind, state}: 1 while the provider is unhealthy.
    pub const PROVIDER_UNHEALTHY: &str = "subkeeper_provider_unhealthy";
    /// Gauge {tenant, provider, kind}: seconds until expiry, only while unhealthy.
    pub const PROVIDER_EXPIRES_IN: &str = "subkeeper_provider_subscription_expires_in_seconds";
    /// Gauge {tenant, provider, kind}: seconds since the last webhook, only while silent.
    pub const PROVIDER_SILENT: &str = "subkeeper_provider_silent_seconds";
    /// Counter {consumer, outcome}: stream messages a consumer settled (`acked`,
    /// `retried`, `rejected`).
    pub const CONSUMER_MESSAGES: &str = "subkeeper_consumer_messages_total";
    /// Counter {event}: alert events published (`firing`, `resolved`, `escalated`,
    /// `silent`); a republish the stream deduplicated is not counted.
    pub const ALERTS_PUBLISHED: &str = "subkeeper_alerts_published_total";
    /// Counter {what}: values that could not be encoded as JSON and so were not
    /// published (`webhook_envelope`, `domain_event`, `notification`). Always a bug.
    pub const ENCODE_FAILURES: &str = "subkeeper_encode_failures_total";
    /// Counter {family}: provider answers that refused a request for a rate
    /// limit (Graph 429, Google 429 or rate-limit 403).
    pub const PROVIDER_RATE_LIMITED: &str = "subkeeper_provider_rate_limited_total";
    /// Counter {family, reason}: requests that waited for the providers'
    /// limits before they were sent (`rate`, `concurrency`, `retry_after`,
    /// `probe`).
    pub const PROVIDER_LIMIT_WAITS: &str = "subkeeper_provider_limit_waits_total";
    /// Counter {family}: domain seconds requests spent in those waits.
    pub const PROVIDER_LIMIT_WAIT_SECONDS: &str = "subkeeper_provider_limit_wait_seconds_total";
    /// Counter {family}: requests not sent because the provider's
    /// `Retry-After` for their scope had not elapsed.
    pub const PROVIDER_REQUESTS_HELD: &str = "subkeeper_provider_requests_held_total";
    /// Gauge: instances whose lease is current, as this instance last saw them
    /// (1 without leases).
    pub const FLEET_INSTANCES: &str = "subkeeper_fleet_instances";
    /// Gauge {stage}: this instance's providers whose supervisor is `started`,
    /// has its state `loaded`, and is `scheduled` (timer armed, attempt under
    /// way, or parked).
    pub const FLEET_PROVIDERS: &str = "subkeeper_fleet_providers";
    /// Counter {change}: providers this instance `claimed`, `released` (handed
    /// over, or left at shutdown), and heartbeats that found the lease had
    /// `lapsed`.
    pub const LEASE_CHANGES: &str = "subkeeper_lease_changes_total";
    /// Counter {kind, trigger, outcome}: catch-ups and silence checks run
    /// (`caught_up`, `quiet`, `push_broken`, `resync_required`, `cursor_taken`,
    /// `skipped`, `failed`).
    pub const CATCH_UPS: &str = "subkeeper_catch_ups_total";
    /// Counter {kind}: changes replayed by catch-ups (before de-duplication).
    pub const CATCH_UP_REPLAYED: &str = "subkeeper_catch_up_replayed_total";
    /// Counter {kind}: provider calls made reading changes (delta, events.list,
    /// history.list pages).
    pub const CATCH_UP_CALLS: &str = "subkeeper_catch_up_calls_total";
    /// Gauge: catch-ups waiting for their turn.
    pub const CATCH_UP_QUEUED: &str = "subkeeper_catch_up_queued";
    /// Gauge {kind}: seconds since the least recently alive provider of the kind
    /// showed it was alive (a webhook, or a catch-up or check that succeeded).
    pub const PROVIDER_FRESHNESS_OLDEST: &str = "subkeeper_provider_freshness_oldest_seconds";
    /// Counter {kind, outcome, reason}: provider deliveries written to the
    /// delivery log, by what became of them (reason from the one taxonomy).
    pub const DELIVERIES_LOGGED: &str = "subkeeper_deliveries_logged_total";
    /// Counter {reason, why}: refused deliveries not written to the log
    /// because their provider was over its rate (`rate_limited`) or the write
    /// failed (`write_failed`); still counted in the webhook metrics.
    pub const DELIVERIES_NOT_LOGGED: &str = "subkeeper_deliveries_not_logged_total";
    /// Counter {table}: rows the retention job deleted for age
    /// (`renewal_attempts`, `audit`).
    pub const RETENTION_ROWS_REMOVED: &str = "subkeeper_retention_rows_removed_total";
    /// Counter {step}: tenant offboardings `started` (asked for) and `finished`
    /// (every row of the tenant gone).
    pub const TENANT_OFFBOARDINGS: &str = "subkeeper_tenant_offboardings_total";
    /// Histogram: renewal attempts written per group commit (one transaction).
    pub const ATTEMPT_WRITE_BATCH: &str = "subkeeper_attempt_write_batch_size";

    /// All names, for the test that checks dashboards and rules use only these.
    pub const ALL: &[&str] = &[
        RENEWAL_ATTEMPTS,
        RENEWAL_ERRORS,
        RENEWAL_DURATION,
        RENEWAL_LAG,
        PROVIDERS,
        NEAREST_EXPIRY,
        EXPIRING,
        WEBHOOKS_RECEIVED,
        WEBHOOK_RESPONSE,
        JETSTREAM_PUBLISH,
        JETSTREAM_PUBLISH_FAILURES,
        OUTBOX_DEPTH,
        OUTBOX_OLDEST_AGE,
        ACTORS_RUNNING,
        BUILD_INFO,
        PROVIDER_CONSECUTIVE_FAILURES,
        PROVIDER_UNHEALTHY,
        PROVIDER_EXPIRES_IN,
        PROVIDER_SILENT,
        CONSUMER_MESSAGES,
        ALERTS_PUBLISHED,
        ENCODE_FAILURES,
        PROVIDER_RATE_LIMITED,
        PROVIDER_LIMIT_WAITS,
        PROVIDER_LIMIT_WAIT_SECONDS,
        PROVIDER_REQUESTS_HELD,
        FLEET_INSTANCES,
        FLEET_PROVIDERS,
        LEASE_CHANGES,
        CATCH_UPS,
        CATCH_UP_REPLAYED,
        CATCH_UP_CALLS,
        CATCH_UP_QUEUED,
        PROVIDER_FRESHNESS_OLDEST,
        DELIVERIES_LOGGED,
        DELIVERIES_NOT_LOGGED,
        RETENTION_ROWS_REMOVED,
        TENANT_OFFBOARDINGS,
        ATTEMPT_WRITE_BATCH,
    ];
}

/// Gives every metric the recorder exports its `# HELP` text (`promtool check
/// metrics` rejects a family without one). Call once, after the recorder is
/// installed. The gauges rendered from the health board at scrape time carry their
/// own help text.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::RENEWAL_ATTEMPTS,
        "Subscription lifecycle calls to a provider (register, renew, recreate) by outcome."
    );
    describe_gauge!(
        names::FLEET_INSTANCES,
        "Instances sharing the fleet whose lease is current, as this instance last saw them."
    );
    describe_gauge!(
        names::FLEET_PROVIDERS,
        "This instance's providers by stage: supervisor started, state loaded, next step scheduled."
    );
    describe_counter!(
        names::CATCH_UPS,
        "Catch-ups and silence checks run, by kind, trigger and outcome."
    );
    describe_counter!(
        names::CATCH_UP_REPLAYED,
        "Changes replayed as source: replay notifications by catch-ups, by kind."
    );
    describe_counter!(
        names::CATCH_UP_CALLS,
        "Provider calls made reading changes (one per page), by kind."
    );
    describe_gauge!(
        names::CATCH_UP_QUEUED,
        "Catch-ups and silence checks waiting for their turn."
    );
    describe_gauge!(
        names::PROVIDER_FRESHNESS_OLDEST,
        "Seconds since the least recently alive provider of the kind last showed it was alive (a webhook, or a successful catch-up or check)."
    );
    describe_counter!(
        names::LEASE_CHANGES,
        "Providers claimed and released by this instance, and heartbeats that found its lease lapsed."
    );
    describe_counter!(
        names::DELIVERIES_LOGGED,
        "Provider deliveries written to the delivery log, by kind, outcome and reason."
    );
    describe_counter!(
        names::DELIVERIES_NOT_LOGGED,
        "Refused deliveries left out of the delivery log, by reason and why (rate_limited, backlog, write_failed)."
    );
    describe_counter!(
        names::RETENTION_ROWS_REMOVED,
        "Rows the retention job deleted because they were older than their table's configured age."
    );
    describe_counter!(
        names::TENANT_OFFBOARDINGS,
        "Tenant offboardings started (asked for) and finished (every row of the tenant removed)."
    );
    describe_histogram!(
        names::ATTEMPT_WRITE_BATCH,
        "Renewal attempts written together in one database transaction (group commit)."
    );
    describe_counter!(
        names::RENEWAL_ERRORS,
        "Failed provider calls by error class."
    );
    describe_histogram!(
        names::RENEWAL_DURATION,
        "Seconds one provider call took, token refresh included."
    );
    describe_histogram!(
        names::RENEWAL_LAG,
        "Seconds between a renewal's scheduled time and its start."
    );
    describe_counter!(
        names::WEBHOOKS_RECEIVED,
        "Webhook requests by endpoint kind and what became of them."
    );
    describe_histogram!(
        names::WEBHOOK_RESPONSE,
        "Seconds from webhook request to response."
    );
    describe_histogram!(
        names::JETSTREAM_PUBLISH,
        "Seconds for a JetStream publish to be acknowledged."
    );
    describe_counter!(
        names::JETSTREAM_PUBLISH_FAILURES,
        "JetStream publishes that failed (not connected, no ack in time, refused)."
    );
    describe_gauge!(
        names::OUTBOX_DEPTH,
        "Notifications waiting in the Postgres outbox."
    );
    describe_gauge!(
        names::OUTBOX_OLDEST_AGE,
        "Age in seconds of the oldest outbox entry (0 when empty)."
    );
    describe_gauge!(names::ACTORS_RUNNING, "Running actors by type.");
    describe_gauge!(
        names::BUILD_INFO,
        "Always 1; the version label is the running build."
    );
    describe_counter!(
        names::CONSUMER_MESSAGES,
        "Stream messages a consumer settled, by outcome (acked, retried, rejected)."
    );
    describe_counter!(
        names::ALERTS_PUBLISHED,
        "Alert events published to the alert stream, by event."
    );
    describe_counter!(
        names::PROVIDER_RATE_LIMITED,
        "Provider answers that refused a request for a rate limit, by provider family."
    );
    describe_counter!(
        names::PROVIDER_LIMIT_WAITS,
        "Requests that waited for the providers' limits before being sent, by family and reason."
    );
    describe_counter!(
        names::PROVIDER_LIMIT_WAIT_SECONDS,
        "Seconds requests spent waiting for the providers' limits, by family."
    );
    describe_counter!(
        names::PROVIDER_REQUESTS_HELD,
        "Requests not sent because the provider's Retry-After for their scope had not elapsed, by family."
    );
    describe_counter!(
        names::ENCODE_FAILURES,
        "Values that could not be encoded as JSON and were not published, by what they were."
    );
}

/// One attempt finished (success or failure).
pub struct RenewalAttempted<'a> {
    /// The result as recorded.
    pub result: &'a RenewalResult,
    /// Seconds the attempt started after its scheduled time, for timer-driven attempts.
    pub lag_seconds: Option<f64>,
}

impl RenewalAttempted<'_> {
    /// Logs the attempt and records its metrics.
    pub fn emit(&self) {
        let r = self.result;
        let kind = r.kind.as_str();
        let outcome = if r.success { "success" } else { "failure" };
        counter!(names::RENEWAL_ATTEMPTS, "kind" => kind, "action" => r.attempt.as_str(), "outcome" => outcome)
            .increment(1);
        histogram!(names::RENEWAL_DURATION, "kind" => kind).record(r.duration_ms as f64 / 1000.0);
        if let Some(lag) = self.lag_seconds {
            histogram!(names::RENEWAL_LAG, "kind" => kind).record(lag.max(0.0));
        }
        if let Some(class) = r.error_class {
            counter!(names::RENEWAL_ERRORS, "kind" => kind, "class" => class.as_str()).increment(1);
        }
        if r.success {
            tracing::info!(
                tenant = %r.tenant, provider = %r.provider_id, kind, action = %r.action,
                expires_at = ?r.new_expiration, "subscription kept alive"
            );
        } else {
            tracing::warn!(
                tenant = %r.tenant, provider = %r.provider_id, kind, attempt = %r.attempt,
                class = ?r.error_class, failures = r.consecutive_failures,
                error = r.error_message.as_deref().unwrap_or(""), "renewal attempt failed"
            );
        }
    }
}

/// A provider's health state changed (entered or left error / needs_reauth / failing).
/// The per-provider series are rendered from the [`crate::board::HealthBoard`] at
/// scrape time, so they exist exactly while the provider is unhealthy.
pub struct ProviderHealthChanged<'a> {
    /// The attempt that changed it.
    pub result: &'a RenewalResult,
}

impl ProviderHealthChanged<'_> {
    /// Logs the transition; ERROR when a human must act.
    pub fn emit(&self) {
        let r = self.result;
        match r.status {
            HealthState::Error | HealthState::NeedsReauth => tracing::error!(
                tenant = %r.tenant, provider = %r.provider_id, kind = %r.kind,
                from = %r.previous_status, to = %r.status,
                reason = r.error_message.as_deref().unwrap_or(""), "provider needs attention"
            ),
            _ => tracing::info!(
                tenant = %r.tenant, provider = %r.provider_id, kind = %r.kind,
                from = %r.previous_status, to = %r.status, "provider health changed"
            ),
        }
    }
}

/// One actor of a kind started (`running: true`) or stopped.
pub struct ActorRunning {
    /// The `actor` label: `fleet`, `provider_supervisor`, `notification`,
    /// `alerting`.
    pub actor: &'static str,
    /// Started rather than stopped.
    pub running: bool,
    /// Several of this kind run at once (one supervisor per provider), so the gauge
    /// counts up and down; otherwise it is set to 1 or 0.
    pub many: bool,
}

impl ActorRunning {
    /// Updates `subkeeper_actors_running`.
    pub fn emit(&self) {
        let running = gauge!(names::ACTORS_RUNNING, "actor" => self.actor);
        match (self.many, self.running) {
            (true, true) => running.increment(1.0),
            (true, false) => running.decrement(1.0),
            (false, up) => running.set(if up { 1.0 } else { 0.0 }),
        }
        if !self.many {
            tracing::debug!(
                actor = self.actor,
                running = self.running,
                "actor running changed"
            );
        }
    }
}

/// An alert event was stored by the alert stream.
pub struct AlertPublished<'a> {
    /// The alert.
    pub alert: &'a Alert,
    /// The stream already had it (a redelivery or another instance): not counted.
    pub duplicate: bool,
}

impl AlertPublished<'_> {
    /// Counts a new alert by event and logs it.
    pub fn emit(&self) {
        let a = self.alert;
        if self.duplicate {
            tracing::debug!(id = %a.id, "alert already published");
            return;
        }
        counter!(names::ALERTS_PUBLISHED, "event" => a.event.as_str()).increment(1);
        tracing::info!(
            tenant = %a.tenant, provider = %a.provider_id, kind = %a.kind,
            event = a.event.as_str(), condition = a.condition.as_str(), id = %a.id,
            "alert published"
        );
    }
}

/// A consumer settled a batch of stream messages.
pub struct DeliveriesSettled<'a> {
    /// `notification` or `alerting`.
    pub consumer: &'static str,
    /// The verdicts, one per message.
    pub settlements: &'a [crate::delivery::Settlement],
}

impl DeliveriesSettled<'_> {
    /// Records the counters; logs a batch that is being retried.
    pub fn emit(&self) {
        use crate::delivery::Settlement;
        let (mut acked, mut retried, mut rejected) = (0u64, 0u64, 0u64);
        for s in self.settlements {
            match s {
                Settlement::Ack => acked += 1,
                Settlement::Retry(_) => retried += 1,
                Settlement::Reject => rejected += 1,
            }
        }
        for (outcome, n) in [
            ("acked", acked),
            ("retried", retried),
            ("rejected", rejected),
        ] {
            if n > 0 {
                counter!(names::CONSUMER_MESSAGES, "consumer" => self.consumer, "outcome" => outcome)
                    .increment(n);
            }
        }
        if retried > 0 {
            tracing::warn!(
                consumer = self.consumer,
                acked,
                retried,
                "messages left for redelivery; their effects are not committed yet"
            );
        }
    }
}

/// A stream message could not be read and was rejected for good.
pub struct MessageRejected<'a> {
    /// `notification` or `alerting`.
    pub consumer: &'static str,
    /// Its subject.
    pub subject: &'a str,
    /// Why it could not be read.
    pub error: &'a str,
}

impl MessageRejected<'_> {
    /// Logs it (the count is in [`DeliveriesSettled`]).
    pub fn emit(&self) {
        tracing::warn!(
            consumer = self.consumer,
            subject = self.subject,
            error = self.error,
            "malformed stream message rejected; it will not be redelivered"
        );
    }
}

/// Deliveries were written to the delivery log.
pub struct DeliveriesLogged<'a> {
    /// What was written.
    pub records: &'a [crate::ports::DeliveryRecord],
}

impl DeliveriesLogged<'_> {
    /// Counts them by kind, outcome and reason (bounded sets).
    pub fn emit(&self) {
        let mut counts: std::collections::HashMap<(&str, &str, &str), u64> =
            std::collections::HashMap::new();
        for r in self.records {
            *counts
                .entry((r.kind.as_str(), r.outcome.as_str(), r.reason.as_str()))
                .or_default() += 1;
        }
        for ((kind, outcome, reason), n) in counts {
            counter!(names::DELIVERIES_LOGGED, "kind" => kind, "outcome" => outcome, "reason" => reason)
                .increment(n);
        }
    }
}

/// Refused deliveries were left out of the delivery log.
pub struct DeliveriesNotLogged {
    /// The reason code of the deliveries.
    pub reason: crate::domain::DeliveryReason,
    /// `rate_limited` or `write_failed`.
    pub why: &'static str,
    /// How many.
    pub count: u64,
}

impl DeliveriesNotLogged {
    /// Counts them; a failed write is also logged.
    pub fn emit(&self) {
        counter!(names::DELIVERIES_NOT_LOGGED, "reason" => self.reason.as_str(), "why" => self.why)
            .increment(self.count);
    }
}
