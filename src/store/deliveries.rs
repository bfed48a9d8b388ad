//! `DeliveryLog`: the delivery log's rows — appended in one statement per batch
//! (an accepted delivery the stream redelivers is skipped by the unique index),
//! read back tenant-scoped and newest first over a `(received_at, id)` cursor.

use super::{Store, db, on_db, parse};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use subkeeper_actors::domain::{ProviderId, TenantId};
use subkeeper_actors::ports::page::{Cursor, CursorKey, Page, PageRequest};
use subkeeper_actors::ports::{DeliveryLog, DeliveryRecord, DeliveryView, StoreError};

/// Rows per INSERT: 9 binds each stays far below either database's limit.
const CHUNK: usize = 500;

/// One row of `deliveries`.
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    received_at: DateTime<Utc>,
    kind: String,
    outcome: String,
    reason: String,
    message_id: Option<String>,
    payload_sha256: String,
}

impl DeliveryRow {
    fn view(self) -> Result<DeliveryView, StoreError> {
        Ok(DeliveryView {
            id: self.id,
            received_at: self.received_at,
            kind: parse(&self.kind)?,
            outcome: parse(&self.outcome)?,
            reason: parse(&self.reason)?,
            message_id: self.message_id,
            payload_sha256: self.payload_sha256,
        })
    }
}

#[async_trait]
impl DeliveryLog for Store {
    async fn record_deliveries(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        for chunk in records.chunks(CHUNK) {
            on_db!(&self.db, pool => {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO deliveries (tenant_id, provider_id, received_at, kind, outcome, reason, message_id, payload_sha256) ",
                );
                insert.push_values(chunk, |mut row, r| {
                    row.push_bind(r.tenant.as_str())
                        .push_bind(r.provider_id.0)
                        .push_bind(r.received_at)
                        .push_bind(r.kind.as_str())
                        .push_bind(r.outcome.as_str())
                        .push_bind(r.reason.as_str())
                        .push_bind(r.message_id.as_deref())
                        .push_bind(r.payload_sha256.as_str());
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(pool).await.map_err(db)?;
            });
        }
        Ok(())
    }

    async fn deliveries(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
        page: &PageRequest,
    ) -> Result<Page<DeliveryView>, StoreError> {
        let limit = page.fetch();
        let after = page.after_seq()?;
        let rows: Vec<DeliveryRow> = on_db!(&self.db, pool => {
            match after {
                None => sqlx::query_as(
                    "SELECT id, received_at, kind, outcome, reason, message_id, payload_sha256 FROM deliveries \
                     WHERE tenant_id = $1 AND provider_id = $2 \
                     ORDER BY received_at DESC, id DESC LIMIT $3",
                )
                .bind(tenant.as_str())
                .bind(provider.0)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db)?,
                Some((at, id)) => sqlx::query_as(
                    "SELECT id, received_at, kind, outcome, reason, message_id, payload_sha256 FROM deliveries \
                     WHERE tenant_id = $1 AND provider_id = $2 \
                       AND (received_at < $3 OR (received_at = $3 AND id < $4)) \
                     ORDER BY received_at DESC, id DESC LIMIT $5",
                )
                .bind(tenant.as_str())
                .bind(provider.0)
                .bind(at)
                .bind(id)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(db)?,
            }
        });
        let views = rows
            .into_iter()
            .map(DeliveryRow::view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(views, page, |v| Cursor {
            at: v.received_at,
            key: CursorKey::Seq(v.id),
        }))
    }
}
