//! What the service published, read back the same way on either bus: on NATS
//! through JetStream (an ephemeral replay consumer, the durable consumers' info),
//! on the in-process bus through the store's `StreamLog` (the `bus_messages` and
//! `bus_pending` tables it keeps its streams in). Tests and benches observe
//! streams and consumers only through here, so one scenario holds on both.

use async_nats::jetstream;
use futures_util::StreamExt as _;
use std::time::Duration;
use subkeeper::bus::subject_matches;
use subkeeper::store::Store;
use subkeeper_actors::ports::clock::Clock as _;
use subkeeper_actors::ports::{Append, StreamLog as _};

/// One stored message, as a reader of the stream sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Where it was published.
    pub subject: String,
    /// The publisher's de-duplication key (`Nats-Msg-Id`), if it gave one.
    pub message_id: Option<String>,
    /// Its body.
    pub payload: Vec<u8>,
}

/// Messages read from the in-process bus's streams per query.
const PAGE: i64 = 500;

/// The streams of one run's bus. Cheap to clone.
#[derive(Clone)]
pub enum Streams {
    /// JetStream on the shared NATS server.
    Nats(jetstream::Context),
    /// The in-process bus's streams, in the run's store.
    Local(Store),
}

impl Streams {
    /// Every message of `stream` whose subject matches `filter` (NATS wildcards),
    /// oldest first — what a downstream reader of the stream would see, without
    /// disturbing the service's own consumers.
    pub async fn read(&self, stream: &str, filter: &str) -> anyhow::Result<Vec<StoredMessage>> {
        match self {
            Self::Nats(js) => {
                let consumer = crate::bus::replay(js, stream, Some(filter)).await?;
                let mut out = Vec::new();
                loop {
                    let mut batch = consumer
                        .fetch()
                        .max_messages(500)
                        .messages()
                        .await
                        .map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?;
                    let before = out.len();
                    while let Some(message) = batch.next().await {
                        let message =
                            message.map_err(|e| anyhow::anyhow!("reading {stream}: {e}"))?;
                        out.push(StoredMessage {
                            subject: message.subject.to_string(),
                            message_id: message
                                .headers
                                .as_ref()
                                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                                .map(|v| v.to_string()),
                            payload: message.payload.to_vec(),
                        });
                    }
                    if out.len() == before {
                        return Ok(out);
                    }
                }
            }
            Self::Local(store) => {
                let mut out = Vec::new();
                let mut after = 0;
                loop {
                    let page = store.read(Some(stream), after, PAGE).await?;
                    let Some(last) = page.last() else {
                        return Ok(out);
                    };
                    after = last.seq;
                    out.extend(
                        page.into_iter()
                            .filter(|m| subject_matches(filter, &m.subject))
                            .map(|m| StoredMessage {
                                subject: m.subject,
                                message_id: m.msg_id,
                                payload: m.payload,
                            }),
                    );
                }
            }
        }
    }

    /// Messages the durable consumer `durable` of `stream` has yet to deliver or
    /// to have settled: 0 once the actor it feeds has caught up.
    pub async fn backlog(&self, stream: &str, durable: &str) -> anyhow::Result<u64> {
        match self {
            Self::Nats(js) => crate::bus::consumer_backlog(js, stream, durable).await,
            Self::Local(store) => Ok(u64::try_from(store.pending(durable).await?).unwrap_or(0)),
        }
    }

    /// Waits (polling every 50 ms, at most `timeout`) until the durable consumer
    /// `durable` of `stream` has been delivered, and has settled, everything in
    /// the stream.
    pub async fn wait_idle(
        &self,
        stream: &str,
        durable: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let backlog = self.backlog(stream, durable).await?;
            if backlog == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "consumer {durable} of {stream} did not catch up within {timeout:?}: {backlog} messages unsettled"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes `payload` on `subject` straight into `stream`, as a foreign
    /// publisher would, owed to the durable consumers named in `consumers` (on
    /// JetStream every consumer of the stream owes it anyway). The in-process
    /// bus's consumer is not woken by it: it finds the message at its next poll.
    pub async fn publish(
        &self,
        stream: &str,
        subject: &str,
        payload: &[u8],
        consumers: &[&str],
    ) -> anyhow::Result<()> {
        match self {
            Self::Nats(js) => {
                js.publish(subject.to_owned(), payload.to_vec().into())
                    .await?
                    .await?;
            }
            Self::Local(store) => {
                store
                    .append(Append {
                        stream,
                        subject,
                        msg_id: None,
                        payload,
                        consumers,
                        now: subkeeper_actors::ports::clock::SystemClock.now(),
                    })
                    .await?;
            }
        }
        Ok(())
    }
}
