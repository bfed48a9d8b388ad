//! The JetStream streams subkeeper owns and why each setting is what it is. Every
//! instance creates them or brings them up to date at start-up, so these values win
//! over hand edits (`nats stream edit`); change them here.
//!
//! All streams use file storage (a NATS restart must not lose what was
//! acknowledged) and limits retention (consumers come and go; the stream keeps
//! messages until age or size removes them, never forever).

use super::super::retention::*;
use super::Topology;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

/// Size limits of the streams, in bytes. The server reserves each stream's limit
/// from its JetStream storage when the stream is created, so they are configurable
/// (`nats_webhook_stream_max_bytes`, `nats_renewal_stream_max_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Largest size of the webhook stream. At the limit new publishes are refused
    /// (discard `new`) rather than unread notifications evicted: a refused publish
    /// goes to the outbox or gets a 5xx that Graph retries, and
    /// `SubkeeperJetStreamPublishFailing` pages.
    pub webhook_max_bytes: u64,
    /// Largest size of the renewal stream. At the limit the oldest results go
    /// (discard `old`): newer results supersede them and Postgres keeps them all.
    pub renewal_max_bytes: u64,
    /// Largest size of the alert stream. At the limit the oldest alerts go (discard
    /// `old`): a new alert must never be refused for an old one.
    pub alert_max_bytes: u64,
}

impl StreamLimits {
    /// The limits the configuration names.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            webhook_max_bytes: config.nats_webhook_stream_max_bytes,
            renewal_max_bytes: config.nats_renewal_stream_max_bytes,
            alert_max_bytes: config.nats_alert_stream_max_bytes,
        }
    }
}

/// `{prefix}_WEBHOOKS` on `{prefix}.webhook.>`: accepted provider notifications.
pub fn webhooks(topology: &Topology, limits: StreamLimits) -> Config {
    Config {
        name: topology.webhook_stream(),
        description: Some("subkeeper: accepted webhook notifications".into()),
        subjects: vec![topology.webhook_subjects()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::New,
        duplicate_window: WEBHOOK_DUPLICATE_WINDOW,
        max_age: WEBHOOK_MAX_AGE,
        max_bytes: i64::try_from(limits.webhook_max_bytes).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// `{prefix}_RENEWALS` on `{prefix}.renewal.>`: every RenewalResult.
pub fn renewals(topology: &Topology, limits: StreamLimits) -> Config {
    Config {
        name: topology.renewal_stream(),
        description: Some("subkeeper: every renewal attempt's RenewalResult".into()),
        subjects: vec![topology.renewal_subjects()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        duplicate_window: RENEWAL_DUPLICATE_WINDOW,
        max_age: RENEWAL_MAX_AGE,
        max_bytes: i64::try_from(limits.renewal_max_bytes).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// `{prefix}_ALERTS` on `{prefix}.alert.>`: alert events. A stream, not plain core
/// NATS, because an alert nobody was subscribed to when it was sent must not be
/// lost: a pager bridge or a later consumer reads it from here, and its id makes
/// every republish of the same alert a no-op.
pub fn alerts(topology: &Topology, limits: StreamLimits) -> Config {
    Config {
        name: topology.alert_stream(),
        description: Some("subkeeper: alert events (firing, resolved, escalated, silent)".into()),
        subjects: vec![topology.alert_subjects()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        duplicate_window: ALERT_DUPLICATE_WINDOW,
        max_age: ALERT_MAX_AGE,
        max_bytes: i64::try_from(limits.alert_max_bytes).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_take_their_names_and_subjects_from_the_topology() {
        let t = Topology::new("eu1.sk", "SK_EU1");
        let limits = StreamLimits {
            webhook_max_bytes: 2 << 20,
            renewal_max_bytes: 1 << 20,
            alert_max_bytes: 3 << 20,
        };
        let (w, r) = (webhooks(&t, limits), renewals(&t, limits));
        assert_eq!((w.max_bytes, r.max_bytes), (2 << 20, 1 << 20));
        assert_eq!(
            (w.name.as_str(), w.subjects),
            ("SK_EU1_WEBHOOKS", vec!["eu1.sk.webhook.>".to_owned()])
        );
        assert_eq!(
            (r.name.as_str(), r.subjects),
            ("SK_EU1_RENEWALS", vec!["eu1.sk.renewal.>".to_owned()])
        );
        // An escalation re-sent at start-up is dropped within the same window.
        assert_eq!(
            ALERT_DUPLICATE_WINDOW.as_secs(),
            subkeeper_actors::alerting::MISSED_ESCALATION_GRACE
                .num_seconds()
                .unsigned_abs()
        );
        let a = alerts(&t, limits);
        assert_eq!(a.max_bytes, 3 << 20);
        assert_eq!(
            (a.name.as_str(), a.subjects),
            ("SK_EU1_ALERTS", vec!["eu1.sk.alert.>".to_owned()])
        );
    }
}
