//! Messages pulled from a durable stream, as the core sees them: a payload to work
//! on and a verdict to return. The bus adapter pulls a batch, hands it to an actor
//! as [`Deliveries`], and settles each message with the [`Settlement`] the actor
//! answered — ack, retry later, or reject for good.
//!
//! Owns no I/O and knows nothing of JetStream: acknowledging is the adapter's job,
//! deciding is the actor's. An actor answers only once the message's effects are
//! committed, so an acknowledged message is never lost.

use actix::prelude::*;
use std::time::Duration;

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// Its body, as published.
    pub payload: Vec<u8>,
    /// How many times it has been delivered, this time included (1 the first time).
    pub delivered: u64,
    /// The de-duplication key it was published with (`Nats-Msg-Id`), if any.
    pub msg_id: Option<String>,
}

/// What the adapter does with one message once the actor is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Its effects are committed: acknowledge it.
    Ack,
    /// Its effects could not be committed (store or bus unavailable): have it
    /// redelivered after this long.
    Retry(Duration),
    /// It can never be processed (not what the stream should carry): stop
    /// redelivering it. Logged and counted by the actor.
    Reject,
}

/// A batch for an actor; the answer has one settlement per delivery, in order.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Settlement>")]
pub struct Deliveries(pub Vec<Delivery>);

/// The service is shutting down and the stream feeds no more: stop the actor.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Stop;

/// Shortest delay before a failed message is redelivered.
pub const RETRY_BASE: Duration = Duration::from_secs(1);

/// Longest delay before a failed message is redelivered: an outage of the store
/// is retried at least this often.
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// The redelivery delay of a message that failed on its `delivered`-th delivery:
/// doubles per delivery from [`RETRY_BASE`] up to [`RETRY_CAP`], so an outage is not
/// hammered and a blip costs a second.
pub fn retry_delay(delivered: u64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).min(16)).unwrap_or(16);
    RETRY_BASE.saturating_mul(1u32 << doublings).min(RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_backs_off_to_a_cap() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(7), Duration::from_secs(60));
        assert_eq!(retry_delay(u64::MAX), Duration::from_secs(60));
    }
}
