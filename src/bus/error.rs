//! The bus adapter's errors. Each message names what to check; async-nats' own
//! error types stay inside this module (only their text crosses).

/// A failure talking to NATS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The server could not be reached or refused the connection.
    #[error(
        "cannot connect to NATS at {url} (SUBKEEPER_NATS_URL): {reason}; is nats-server running and reachable from here?"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What the client reported.
        reason: String,
    },
    /// A stream could not be created or updated.
    #[error("JetStream stream {stream}: {reason}")]
    Stream {
        /// The stream's name.
        stream: String,
        /// What the server or client reported, with a hint when there is one.
        reason: String,
    },
    /// A durable consumer could not be created or bound.
    #[error("JetStream consumer {consumer} on stream {stream}: {reason}")]
    Consumer {
        /// The stream.
        stream: String,
        /// The consumer's durable name.
        consumer: String,
        /// What the server or client reported.
        reason: String,
    },
    /// The control subject could not be subscribed to.
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What the client reported.
        reason: String,
    },
    /// Nobody serves the control subject.
    #[error(
        "no subkeeper instance answers on {subject}: is `subkeeper run` up, on this NATS server, with the same SUBKEEPER_NATS_SUBJECT_PREFIX?"
    )]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// A request got no reply in time.
    #[error(
        "no reply on {subject} within {seconds} s; the renewal may still complete (check `subkeeper status` or the provider's attempts)"
    )]
    TimedOut {
        /// The subject.
        subject: String,
        /// How long we waited.
        seconds: u64,
    },
    /// A request failed otherwise, or its reply was not JSON.
    #[error("request on {subject}: {reason}")]
    Request {
        /// The subject.
        subject: String,
        /// What went wrong.
        reason: String,
    },
}

impl BusError {
    /// A stream error; adds the usual cause when JetStream does not answer at all.
    pub(super) fn stream<K>(stream: &str, e: &async_nats::error::Error<K>) -> Self
    where
        K: Clone + PartialEq + std::fmt::Debug + std::fmt::Display,
    {
        let text = e.to_string();
        let hint = if text.contains("insufficient storage") {
            " (the server reserves each stream's max bytes up front: give JetStream more storage, or lower SUBKEEPER_NATS_WEBHOOK_STREAM_MAX_BYTES / SUBKEEPER_NATS_RENEWAL_STREAM_MAX_BYTES)"
        } else if text.contains("unavailable")
            || text.contains("timed out")
            || text.contains("no responders")
        {
            " (is JetStream enabled on the server? nats-server needs -js)"
        } else {
            ""
        };
        Self::Stream {
            stream: stream.to_owned(),
            reason: format!("{text}{hint}"),
        }
    }
}
