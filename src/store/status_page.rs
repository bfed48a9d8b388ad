//! `StatusPageStore`: the status page's provider list — the providers that need
//! a human first, each part in `(created_at, id)` order over the
//! `providers_page_*` indexes, so the first page and a filtered page stay fast at
//! 100,000 providers — its counts by status and tenants (a skip scan that
//! costs the tenants listed), and its sessions, kept by the SHA-256 of the
//! cookie.

use super::rows::tenant;
use super::{Store, db, on_db, parse};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use subkeeper_actors::domain::{ProviderId, ProviderStatus, TenantId};
use subkeeper_actors::ports::{
    BoardCursor, BoardFilter, BoardRow, SessionGrant, StatusPageStore, StoreError,
};
use uuid::Uuid;

/// The statuses of each part of the list: a human must act, then the rest.
const PARTS: [&[ProviderStatus]; 2] = [
    &[ProviderStatus::Error, ProviderStatus::NeedsReauth],
    &[ProviderStatus::Connected, ProviderStatus::Disabled],
];

/// One row of the list.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: String,
    kind: String,
    display_name: String,
    status: String,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    sub_id: Option<String>,
    sub_expires_at: Option<DateTime<Utc>>,
    subscription_status: Option<String>,
    last_renewal_attempt_at: Option<DateTime<Utc>>,
    last_renewal_result: Option<String>,
    failure_reason: Option<String>,
    last_webhook_received_at: Option<DateTime<Utc>>,
    silent_since: Option<DateTime<Utc>>,
    next_renewal_at: Option<DateTime<Utc>>,
    consecutive_failure_count: Option<i32>,
}

impl Row {
    fn board(self) -> Result<BoardRow, StoreError> {
        Ok(BoardRow {
            id: ProviderId(self.id),
            tenant: tenant(&self.tenant_id)?,
            kind: parse(&self.kind)?,
            display_name: self.display_name,
            status: parse(&self.status)?,
            error_message: self.error_message,
            subscription: self.sub_id.zip(self.sub_expires_at),
            subscription_status: self.subscription_status,
            last_renewal: self.last_renewal_attempt_at.zip(self.last_renewal_result),
            failure_reason: self.failure_reason,
            last_webhook_at: self.last_webhook_received_at,
            silent_since: self.silent_since,
            next_renewal_at: self.next_renewal_at,
            failures: self.consecutive_failure_count.unwrap_or(0),
            created_at: self.created_at,
        })
    }
}

/// The SELECT of the list, up to its WHERE.
const SELECT: &str = "SELECT p.id, p.tenant_id, p.kind, p.display_name, p.status, p.error_message, p.created_at, \
       s.external_id AS sub_id, s.expires_at AS sub_expires_at, h.subscription_status, \
       h.last_renewal_attempt_at, h.last_renewal_result, h.failure_reason, h.last_webhook_received_at, \
       h.silent_since, h.next_renewal_at, h.consecutive_failure_count \
     FROM providers p \
     LEFT JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
     LEFT JOIN provider_health h ON h.provider_id = p.id \
     WHERE p.deleted_at IS NULL AND p.status IN (";

/// A session's row.
#[derive(sqlx::FromRow)]
struct SessionRow {
    token_id: Option<Uuid>,
    tenant_id: Option<String>,
}

impl Store {
    /// Up to `limit` rows of one part of the list.
    async fn board_part(
        &self,
        statuses: &[ProviderStatus],
        tenant: Option<&TenantId>,
        after: Option<(DateTime<Utc>, ProviderId)>,
        limit: i64,
    ) -> Result<Vec<BoardRow>, StoreError> {
        let rows: Vec<Row> = on_db!(&self.db, pool => {
            let mut q = sqlx::QueryBuilder::new(SELECT);
            let mut list = q.separated(", ");
            for s in statuses {
                list.push_bind(s.as_str());
            }
            q.push(")");
            if let Some(tenant) = tenant {
                q.push(" AND p.tenant_id = ").push_bind(tenant.as_str());
            }
            if let Some((at, id)) = after {
                q.push(" AND (p.created_at > ")
                    .push_bind(at)
                    .push(" OR (p.created_at = ")
                    .push_bind(at)
                    .push(" AND p.id > ")
                    .push_bind(id.0)
                    .push("))");
            }
            q.push(" ORDER BY p.created_at, p.id LIMIT ").push_bind(limit);
            q.build_query_as().fetch_all(pool).await.map_err(db)?
        });
        rows.into_iter().map(Row::board).collect()
    }
}

#[async_trait]
impl StatusPageStore for Store {
    async fn board(
        &self,
        filter: &BoardFilter,
        after: Option<BoardCursor>,
        limit: u32,
    ) -> Result<(Vec<BoardRow>, bool), StoreError> {
        let limit = i64::from(limit.clamp(1, 500));
        let mut rows: Vec<BoardRow> = Vec::new();
        let first_part = after.map_or(0, |c| usize::from(c.part.min(1)));
        for (part, statuses) in PARTS.iter().enumerate().skip(first_part) {
            let statuses: Vec<ProviderStatus> = statuses
                .iter()
                .copied()
                .filter(|s| filter.status.is_none_or(|want| want == *s))
                .collect();
            if statuses.is_empty() {
                continue;
            }
            let from = after
                .filter(|c| usize::from(c.part) == part)
                .map(|c| (c.created_at, c.id));
            // One more than wanted: it says whether a next page exists.
            let want = limit + 1 - i64::try_from(rows.len()).unwrap_or(0);
            let found = self
                .board_part(&statuses, filter.tenant.as_ref(), from, want)
                .await?;
            rows.extend(found);
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit {
                break;
            }
        }
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(500));
        Ok((rows, more))
    }

    async fn board_counts(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<(ProviderStatus, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = on_db!(&self.db, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT status, count(*) AS n FROM providers WHERE deleted_at IS NULL",
            );
            if let Some(tenant) = tenant {
                q.push(" AND tenant_id = ").push_bind(tenant.as_str());
            }
            q.push(" GROUP BY status ORDER BY status");
            q.build_query_as().fetch_all(pool).await.map_err(db)?
        });
        rows.into_iter().map(|(s, n)| Ok((parse(&s)?, n))).collect()
    }

    async fn board_tenants(&self, limit: u32) -> Result<Vec<TenantId>, StoreError> {
        // A skip scan: each step jumps to the next tenant in the
        // `providers_page_tenant_status` index (one index probe per tenant)
        // and the recursion stops at `limit`, so this costs the tenants shown,
        // not the providers (a DISTINCT read all 100,000 rows at 100,000).
        let rows: Vec<String> = on_db!(&self.db, pool => {
            sqlx::query_scalar(
                "WITH RECURSIVE t(tenant_id) AS ( \
                   SELECT (SELECT min(tenant_id) FROM providers WHERE deleted_at IS NULL) \
                   UNION ALL \
                   SELECT (SELECT min(p.tenant_id) FROM providers p \
                           WHERE p.deleted_at IS NULL AND p.tenant_id > t.tenant_id) \
                   FROM t WHERE t.tenant_id IS NOT NULL \
                 ) \
                 SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db)?
        });
        rows.iter().map(|t| tenant(t)).collect()
    }

    async fn create_session(
        &self,
        id_hash: &str,
        grant: &SessionGrant,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (token_id, tenant_id) = match grant {
            SessionGrant::Admin => (None, None),
            SessionGrant::Tenant { token_id, tenant } => (Some(*token_id), Some(tenant.as_str())),
        };
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO page_sessions (id_hash, token_id, tenant_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_hash)
            .bind(token_id)
            .bind(tenant_id)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await
            .map_err(db)?;
        });
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SessionGrant>, StoreError> {
        let now = self.clock.now();
        let row: Option<SessionRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT s.token_id, s.tenant_id FROM page_sessions s \
                 LEFT JOIN api_tokens t ON t.id = s.token_id \
                 WHERE s.id_hash = $1 AND s.expires_at > $2 \
                   AND (s.token_id IS NULL OR (t.id IS NOT NULL AND t.revoked_at IS NULL))",
            )
            .bind(id_hash)
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(db)?
        });
        Ok(match row {
            None => None,
            Some(SessionRow { token_id: None, .. }) => Some(SessionGrant::Admin),
            Some(SessionRow {
                token_id: Some(token_id),
                tenant_id,
            }) => Some(SessionGrant::Tenant {
                token_id,
                tenant: tenant(tenant_id.as_deref().unwrap_or_default())?,
            }),
        })
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM page_sessions WHERE id_hash = $1 OR expires_at <= $2")
                .bind(id_hash)
                .bind(now)
                .execute(pool)
                .await
                .map_err(db)?;
        });
        Ok(())
    }
}
