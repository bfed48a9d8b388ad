//! `StreamLog`: the in-process bus's durable streams in the store. A message and
//! the claims of the consumers that must settle it are written in one
//! transaction; a consumer's claim ends when it acks or rejects, and a retry makes
//! the message due again later. Trimming forgets message ids past the duplicate
//! window and deletes messages past the stream's age that nobody owes.

use super::{Dialect as _, Store, db, on_db};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use subkeeper_actors::delivery::Settlement;
use subkeeper_actors::ports::{Append, Appended, StoreError, StreamLog, StreamMessage};

/// A message as read from `bus_messages` (and `bus_pending` for a consumer).
#[derive(sqlx::FromRow)]
struct MessageRow {
    seq: i64,
    stream: String,
    subject: String,
    msg_id: Option<String>,
    payload: Vec<u8>,
    published_at: DateTime<Utc>,
    delivered: i32,
}

impl From<MessageRow> for StreamMessage {
    fn from(r: MessageRow) -> Self {
        Self {
            seq: r.seq,
            stream: r.stream,
            subject: r.subject,
            msg_id: r.msg_id,
            payload: r.payload,
            published_at: r.published_at,
            delivered: u64::try_from(r.delivered).unwrap_or(0),
        }
    }
}

#[async_trait]
impl StreamLog for Store {
    async fn append(&self, m: Append<'_>) -> Result<Appended, StoreError> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO bus_messages (stream, subject, msg_id, payload, published_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream, msg_id) DO NOTHING RETURNING seq",
            )
            .bind(m.stream)
            .bind(m.subject)
            .bind(m.msg_id)
            .bind(m.payload)
            .bind(m.now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            let Some(seq) = seq else {
                return Ok(Appended::Duplicate);
            };
            for consumer in m.consumers {
                sqlx::query(
                    "INSERT INTO bus_pending (consumer, seq, deliver_after) VALUES ($1, $2, $3)",
                )
                .bind(*consumer)
                .bind(seq)
                .bind(m.now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(Appended::Stored(seq))
        })
    }

    async fn due(
        &self,
        consumer: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StreamMessage>, StoreError> {
        let rows: Vec<MessageRow> = on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            let rows: Vec<MessageRow> = sqlx::query_as(
                "SELECT m.seq, m.stream, m.subject, m.msg_id, m.payload, m.published_at, p.delivered + 1 AS delivered \
                 FROM bus_pending p JOIN bus_messages m ON m.seq = p.seq \
                 WHERE p.consumer = $1 AND p.deliver_after <= $2 ORDER BY p.seq LIMIT $3",
            )
            .bind(consumer)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            if !rows.is_empty() {
                let sql = format!(
                    "UPDATE bus_pending SET delivered = delivered + 1 WHERE consumer = $1 AND seq IN ({})",
                    super::placeholders(2, rows.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(consumer);
                for row in &rows {
                    query = query.bind(row.seq);
                }
                query.execute(&mut *tx).await.map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            rows
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn settle(
        &self,
        consumer: &str,
        settlements: &[(i64, Settlement)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(db)?;
            for (seq, settlement) in settlements {
                match settlement {
                    Settlement::Ack | Settlement::Reject => {
                        sqlx::query("DELETE FROM bus_pending WHERE consumer = $1 AND seq = $2")
                            .bind(consumer)
                            .bind(*seq)
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                    }
                    Settlement::Retry(after) => {
                        let at = now + TimeDelta::from_std(*after).unwrap_or(TimeDelta::MAX);
                        sqlx::query(
                            "UPDATE bus_pending SET deliver_after = $3 WHERE consumer = $1 AND seq = $2",
                        )
                        .bind(consumer)
                        .bind(*seq)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    }
                }
            }
            tx.commit().await.map_err(db)
        })
    }

    async fn read(
        &self,
        stream: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StreamMessage>, StoreError> {
        let rows: Vec<MessageRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT seq, stream, subject, msg_id, payload, published_at, 0 AS delivered FROM bus_messages \
                 WHERE seq > $1 AND ($2 IS NULL OR stream = $2) ORDER BY seq LIMIT $3",
            )
            .bind(after)
            .bind(stream)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn trim(
        &self,
        stream: &str,
        dedup_before: DateTime<Utc>,
        delete_before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE bus_messages SET msg_id = NULL \
                 WHERE stream = $1 AND published_at < $2 AND msg_id IS NOT NULL",
            )
            .bind(stream)
            .bind(dedup_before)
            .execute(pool)
            .await
            .map_err(db)?;
            let deleted = sqlx::query(
                "DELETE FROM bus_messages WHERE stream = $1 AND published_at < $2 \
                   AND NOT EXISTS (SELECT 1 FROM bus_pending p WHERE p.seq = bus_messages.seq)",
            )
            .bind(stream)
            .bind(delete_before)
            .execute(pool)
            .await
            .map_err(db)?;
            Ok(deleted.rows_affected())
        })
    }

    async fn pending(&self, consumer: &str) -> Result<i64, StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT count(*) FROM bus_pending WHERE consumer = $1")
                .bind(consumer)
                .fetch_one(pool)
                .await
                .map_err(db)
        })
    }
}
