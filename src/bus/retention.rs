//! How long each stream keeps its messages and remembers their ids, whichever bus
//! carries them: the JetStream streams are declared with these values and the
//! in-process bus trims its store-backed streams by them.

use std::time::Duration;

/// How long the webhook stream remembers a message id (`Nats-Msg-Id` on JetStream) to drop a republish of it,
/// in seconds (24 h). Duplicates come from two places: Microsoft Graph redelivers a
/// notification for up to 4 hours when it got no timely 2xx (our answer was slow or
/// lost after JetStream had stored the item); and the outbox relay republishes items
/// whose publish timed out although JetStream stored them, which can be as late as
/// the end of a NATS outage. 24 h covers Graph's window with room for an outage of
/// most of a day. The server keeps every id of the window in memory: roughly 100
/// bytes per notification, ~100 MB at a million notifications a day.
pub const WEBHOOK_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long an accepted notification stays in the webhook stream, in seconds (7
/// days): long enough for a downstream consumer to be down over a long weekend and
/// catch up. Must be at least the duplicate window.
pub const WEBHOOK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the renewal stream remembers a message id (`Nats-Msg-Id` on JetStream), in seconds (2 min). A
/// renewal result is published once, right after its attempt; a duplicate can only
/// come from a client resend after a lost ack or a reconnect, which is seconds.
pub const RENEWAL_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a renewal result stays in the renewal stream, in seconds (14 days).
/// Every result is also a `renewal_attempts` row in Postgres, which is the record;
/// the stream is the feed for consumers that react to results.
pub const RENEWAL_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// How long the alert stream remembers an alert's id, in seconds (24 h). An alert's
/// id is derived from its cause, so a redelivered renewal result, a retried publish,
/// another instance, or a restart that re-checks escalations all republish the same
/// id: within the window it is stored once. Alerts are rare, so the ids cost little
/// server memory. Matches `subkeeper_actors::alerting::MISSED_ESCALATION_GRACE`.
pub const ALERT_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long an alert event stays in the alert stream, in seconds (30 days): the
/// history of who was paged about what, for a consumer that was down, or an audit.
pub const ALERT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long the in-process bus keeps domain events (which NATS does not store at
/// all: they go out on core NATS), in seconds (24 h): long enough for `subkeeper
/// tail` or a test to read what was emitted, short enough to stay small.
pub const EVENT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

// JetStream refuses a duplicate window longer than the max age. Checked at compile
// time.
const _: () = assert!(WEBHOOK_DUPLICATE_WINDOW.as_secs() <= WEBHOOK_MAX_AGE.as_secs());
const _: () = assert!(RENEWAL_DUPLICATE_WINDOW.as_secs() <= RENEWAL_MAX_AGE.as_secs());
const _: () = assert!(ALERT_DUPLICATE_WINDOW.as_secs() <= ALERT_MAX_AGE.as_secs());
// Graph redelivers for up to 4 hours: the webhook window must cover it.
const _: () = assert!(WEBHOOK_DUPLICATE_WINDOW.as_secs() >= 4 * 3600);
