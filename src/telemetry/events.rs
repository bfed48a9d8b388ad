//! The adapters' telemetry as named events, like the core's
//! (`subkeeper_actors::telemetry`): one struct per outcome of webhook intake,
//! JetStream publishing and the outbox, whose `emit()` logs and records metrics
//! together. This is the only place in this crate that records these metrics;
//! names come from `subkeeper_actors::telemetry::names`, label values from the
//! fixed sets in docs/metrics.md. Must not decide anything: callers report what
//! happened.

use crate::intake::{Dropped, IntakeError, PushAuth};
use metrics::{counter, gauge, histogram};
use subkeeper_actors::telemetry::names;

/// Webhook items were taken in: published, or parked in the outbox.
pub struct WebhooksAccepted {
    /// The endpoint (`kind` label): `microsoft`, `microsoft_lifecycle`, `google`,
    /// `gmail`.
    pub kind: &'static str,
    /// Items (or requests, for one-message endpoints) accepted; may be 0.
    pub items: u64,
}

impl WebhooksAccepted {
    /// Counts them as `result="accepted"`.
    pub fn emit(&self) {
        counter!(names::WEBHOOKS_RECEIVED, "kind" => self.kind, "result" => "accepted")
            .increment(self.items);
        tracing::debug!(
            kind = self.kind,
            items = self.items,
            "webhook items accepted"
        );
    }
}

/// Webhook items were dropped for good (acknowledged to the provider, not
/// published).
pub struct WebhooksDropped<'a> {
    /// The endpoint (`kind` label).
    pub kind: &'static str,
    /// Why; its label is the `result` label.
    pub reason: Dropped,
    /// How many items.
    pub items: u64,
    /// A few of the subscription / channel / message ids concerned, for the log.
    pub ids: &'a [String],
}

impl WebhooksDropped<'_> {
    /// Counts them under the reason's label and logs which ids.
    pub fn emit(&self) {
        counter!(names::WEBHOOKS_RECEIVED, "kind" => self.kind, "result" => self.reason.label())
            .increment(self.items);
        tracing::warn!(
            kind = self.kind, reason = self.reason.label(), items = self.items,
            ids = %self.ids.join(","),
            "webhook notifications dropped"
        );
    }
}

/// A provider's handshake: Graph's `validationToken`, Google's `sync` message.
pub struct WebhookValidated {
    /// The endpoint (`kind` label).
    pub kind: &'static str,
}

impl WebhookValidated {
    /// Counts it as `result="validation"`.
    pub fn emit(&self) {
        counter!(names::WEBHOOKS_RECEIVED, "kind" => self.kind, "result" => "validation")
            .increment(1);
        tracing::debug!(kind = self.kind, "webhook validation handshake");
    }
}

/// A webhook request was refused: malformed (400) or nothing could store it (503).
pub struct WebhookRefused<'a> {
    /// The endpoint (`kind` label).
    pub kind: &'static str,
    /// Why.
    pub error: &'a IntakeError,
}

impl WebhookRefused<'_> {
    /// Counts it as `result="rejected"`.
    pub fn emit(&self) {
        counter!(names::WEBHOOKS_RECEIVED, "kind" => self.kind, "result" => "rejected")
            .increment(1);
        tracing::debug!(kind = self.kind, error = %self.error, "webhook request refused");
    }
}

/// A Gmail push came without the deployment's push token, or with a wrong one.
pub struct GmailPushUnauthorized {
    /// Missing or wrong.
    pub why: PushAuth,
}

impl GmailPushUnauthorized {
    /// Counts it as `kind="gmail", result="rejected"`.
    pub fn emit(&self) {
        counter!(names::WEBHOOKS_RECEIVED, "kind" => "gmail", "result" => "rejected").increment(1);
        tracing::warn!(reason = ?self.why, "Gmail push refused: bad or missing token");
    }
}

/// A webhook endpoint answered.
pub struct WebhookAnswered {
    /// The endpoint (`kind` label).
    pub kind: &'static str,
    /// From request to response, in seconds.
    pub seconds: f64,
}

impl WebhookAnswered {
    /// Records the response time (the request itself is logged by the HTTP layer).
    pub fn emit(&self) {
        histogram!(names::WEBHOOK_RESPONSE, "kind" => self.kind).record(self.seconds);
    }
}

/// JetStream acknowledged a publish.
pub struct JetStreamPublished<'a> {
    /// The stream (`stream` label).
    pub stream: &'a str,
    /// The subject published on.
    pub subject: &'a str,
    /// From send to ack, in seconds.
    pub seconds: f64,
    /// The stream already held a message with this id.
    pub duplicate: bool,
}

impl JetStreamPublished<'_> {
    /// Records the ack time.
    pub fn emit(&self) {
        histogram!(names::JETSTREAM_PUBLISH, "stream" => self.stream.to_owned())
            .record(self.seconds);
        tracing::debug!(
            stream = self.stream,
            subject = self.subject,
            duplicate = self.duplicate,
            seconds = self.seconds,
            "published to JetStream"
        );
    }
}

/// A JetStream publish failed (not connected, no stream, no ack in time, refused).
pub struct JetStreamPublishFailed<'a> {
    /// The stream (`stream` label).
    pub stream: &'a str,
    /// The subject published on.
    pub subject: &'a str,
    /// Why.
    pub error: &'a str,
    /// What becomes of the message, for the log; `None` when the caller retries
    /// it (the outbox, the alerting actor) and logs that itself, so the failure
    /// is logged at debug only.
    pub lost: Option<&'static str>,
}

impl JetStreamPublishFailed<'_> {
    /// Counts the failure.
    pub fn emit(&self) {
        counter!(names::JETSTREAM_PUBLISH_FAILURES, "stream" => self.stream.to_owned())
            .increment(1);
        match self.lost {
            Some(then) => tracing::warn!(
                stream = self.stream,
                subject = self.subject,
                error = self.error,
                "JetStream publish failed; {then}"
            ),
            None => tracing::debug!(
                stream = self.stream,
                subject = self.subject,
                error = self.error,
                "JetStream publish failed; retried"
            ),
        }
    }
}

/// A JetStream stream was created or updated at start-up.
pub struct JetStreamStreamReady<'a> {
    /// The stream (`stream` label).
    pub stream: &'a str,
}

impl JetStreamStreamReady<'_> {
    /// Exports the stream's failure counter at 0, so the dashboard shows "0
    /// failures" rather than "No data" and the first failure is an increase that
    /// `rate()`/`increase()` can see.
    pub fn emit(&self) {
        counter!(names::JETSTREAM_PUBLISH_FAILURES, "stream" => self.stream.to_owned())
            .increment(0);
        tracing::debug!(stream = %self.stream, "JetStream stream ready");
    }
}

/// The outbox was measured (once per relay round).
pub struct OutboxMeasured {
    /// Entries not yet acknowledged by JetStream.
    pub depth: i64,
    /// Age of the oldest entry, in seconds; 0 when empty.
    pub oldest_age_seconds: f64,
}

impl OutboxMeasured {
    /// Sets the outbox gauges.
    pub fn emit(&self) {
        gauge!(names::OUTBOX_DEPTH).set(self.depth as f64);
        gauge!(names::OUTBOX_OLDEST_AGE).set(self.oldest_age_seconds);
    }
}

/// A request waited for the providers' limits before it was sent.
pub struct BudgetWaited {
    /// The provider family (`graph`, `google_calendar`, `gmail`).
    pub family: &'static str,
    /// What it waited for: `rate` (its place in a budget), `concurrency` (a
    /// mailbox slot), `retry_after` (a short block), `probe` (the first request
    /// after a block to find out whether it is over).
    pub reason: &'static str,
    /// Domain seconds waited.
    pub seconds: f64,
}

impl BudgetWaited {
    /// Counts the wait and its seconds.
    pub fn emit(&self) {
        counter!(names::PROVIDER_LIMIT_WAITS, "family" => self.family, "reason" => self.reason)
            .increment(1);
        counter!(names::PROVIDER_LIMIT_WAIT_SECONDS, "family" => self.family)
            .increment(self.seconds.max(0.0).round() as u64);
        tracing::debug!(
            family = self.family,
            reason = self.reason,
            seconds = self.seconds,
            "request waited for the provider's limits"
        );
    }
}

/// A provider refused a request for a rate limit: its scope now waits.
pub struct ProviderRateLimited {
    /// The provider family.
    pub family: &'static str,
    /// How long the scope waits, in domain seconds.
    pub retry_after_seconds: f64,
}

impl ProviderRateLimited {
    /// Counts it and logs how long the scope waits.
    pub fn emit(&self) {
        counter!(names::PROVIDER_RATE_LIMITED, "family" => self.family).increment(1);
        tracing::info!(
            family = self.family,
            retry_after_seconds = self.retry_after_seconds,
            "provider rate-limited a request; nothing more is sent for its scope until the wait is over"
        );
    }
}

/// A request was not sent: its scope's wait after a rate limit had not elapsed.
pub struct RequestHeld {
    /// The provider family.
    pub family: &'static str,
}

impl RequestHeld {
    /// Counts it (the attempt's failure is logged by the adapter).
    pub fn emit(&self) {
        counter!(names::PROVIDER_REQUESTS_HELD, "family" => self.family).increment(1);
    }
}

/// The retention job deleted rows of one table for age.
pub struct RetentionPurged {
    /// The table (`table` label): `renewal_attempts`, `audit`, `deliveries`,
    /// `page_sessions`.
    pub table: &'static str,
    /// Rows deleted in this run.
    pub rows: u64,
}

impl RetentionPurged {
    /// Counts them; logs a run that removed anything.
    pub fn emit(&self) {
        counter!(names::RETENTION_ROWS_REMOVED, "table" => self.table).increment(self.rows);
        if self.rows > 0 {
            tracing::info!(
                table = self.table,
                rows = self.rows,
                "old rows deleted by retention"
            );
        }
    }
}

/// A tenant's offboarding started or finished.
pub struct TenantOffboarding<'a> {
    /// The tenant (logged, never a label).
    pub tenant: &'a str,
    /// `started` or `finished` (the `step` label).
    pub step: &'static str,
}

impl TenantOffboarding<'_> {
    /// Counts and logs it.
    pub fn emit(&self) {
        counter!(names::TENANT_OFFBOARDINGS, "step" => self.step).increment(1);
        tracing::info!(tenant = self.tenant, step = self.step, "tenant offboarding");
    }
}
