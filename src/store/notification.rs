//! What the notification and alerting actors need from Postgres: batched "last
//! webhook received" writes that end silences, the silence sweep, and who is
//! unhealthy since when.
//!
//! Each write is one statement whose row locks make "this call changed it" exact,
//! so a silence that begins or ends is reported by exactly one caller, however many
//! instances run.

use super::{PgStore, db, parse};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;
use std::collections::HashMap;
use subkeeper_actors::alerting::Unhealthy;
use subkeeper_actors::domain::{ProviderId, ProviderKind, TenantId};
use subkeeper_actors::notification::Silence;
use subkeeper_actors::ports::StoreError;
use subkeeper_actors::ports::{AlertStore, NotificationStore};

fn tenant(raw: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl NotificationStore for PgStore {
    async fn record_webhooks(
        &self,
        seen: &[(ProviderId, DateTime<Utc>)],
    ) -> Result<Vec<Silence>, StoreError> {
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        // One row per provider: UPDATE … FROM applies only one of several matches.
        let mut latest: HashMap<ProviderId, DateTime<Utc>> = HashMap::new();
        for (provider, at) in seen {
            let slot = latest.entry(*provider).or_insert(*at);
            *slot = (*slot).max(*at);
        }
        let (ids, times): (Vec<uuid::Uuid>, Vec<DateTime<Utc>>) =
            latest.into_iter().map(|(p, t)| (p.0, t)).unzip();
        // `o` locks the rows (in id order, so concurrent batches cannot deadlock)
        // and reads `silent_since` as it was before this write: only the caller that
        // clears a silence sees it.
        let rows = sqlx::query(
            "WITH v AS (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS t(provider_id, at)), \
                  o AS (SELECT h.provider_id, h.silent_since AS was_silent FROM provider_health h \
                        WHERE h.provider_id = ANY($1) ORDER BY h.provider_id FOR UPDATE) \
             UPDATE provider_health h SET \
               last_webhook_received_at = GREATEST(h.last_webhook_received_at, v.at), silent_since = NULL \
             FROM v JOIN o ON o.provider_id = v.provider_id JOIN providers p ON p.id = v.provider_id \
             WHERE h.provider_id = v.provider_id \
             RETURNING h.provider_id, h.tenant_id, p.kind, o.was_silent, v.at",
        )
        .bind(&ids)
        .bind(&times)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut ended = Vec::new();
        for row in &rows {
            let Some(since) = row
                .try_get::<Option<DateTime<Utc>>, _>("was_silent")
                .map_err(db)?
            else {
                continue;
            };
            let kind: String = row.try_get("kind").map_err(db)?;
            ended.push(Silence {
                provider_id: ProviderId(row.try_get("provider_id").map_err(db)?),
                tenant: tenant(&row.try_get::<String, _>("tenant_id").map_err(db)?)?,
                kind: parse(&kind)?,
                since,
                ended_at: Some(row.try_get("at").map_err(db)?),
            });
        }
        Ok(ended)
    }

    async fn mark_silent(
        &self,
        now: DateTime<Utc>,
        thresholds: &[(ProviderKind, TimeDelta)],
    ) -> Result<Vec<Silence>, StoreError> {
        if thresholds.is_empty() {
            return Ok(Vec::new());
        }
        let (kinds, cutoffs): (Vec<&str>, Vec<DateTime<Utc>>) = thresholds
            .iter()
            .map(|(kind, silence)| (kind.as_str(), now - *silence))
            .unzip();
        // A silence begins at the last webhook, or at the subscription's creation if
        // none came since (GREATEST ignores NULL): a fresh subscription gets the
        // whole threshold. Rows a webhook batch holds are skipped, not waited for:
        // the next sweep sees them.
        let rows = sqlx::query(
            "WITH t AS (SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS t(kind, cutoff)), \
                  due AS ( \
                    SELECT h.provider_id, p.kind, GREATEST(h.last_webhook_received_at, s.created_at) AS since \
                    FROM provider_health h \
                    JOIN providers p ON p.id = h.provider_id AND p.enabled AND p.deleted_at IS NULL \
                    JOIN subscriptions s ON s.provider_id = h.provider_id AND s.state = 'active' AND s.expires_at > $3 \
                    JOIN t ON t.kind = p.kind \
                    WHERE h.silent_since IS NULL AND GREATEST(h.last_webhook_received_at, s.created_at) < t.cutoff \
                    ORDER BY h.provider_id FOR UPDATE OF h SKIP LOCKED) \
             UPDATE provider_health h SET silent_since = due.since, updated_at = $3 FROM due \
             WHERE h.provider_id = due.provider_id AND h.silent_since IS NULL \
             RETURNING h.provider_id, h.tenant_id, due.kind, due.since",
        )
        .bind(&kinds)
        .bind(&cutoffs)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(db)?;
                Ok(Silence {
                    provider_id: ProviderId(row.try_get("provider_id").map_err(db)?),
                    tenant: tenant(&row.try_get::<String, _>("tenant_id").map_err(db)?)?,
                    kind: parse(&kind)?,
                    since: row.try_get("since").map_err(db)?,
                    ended_at: None,
                })
            })
            .collect()
    }

    async fn silent_providers(&self) -> Result<Vec<(ProviderId, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider_id, silent_since FROM provider_health WHERE silent_since IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok((
                    ProviderId(row.try_get("provider_id").map_err(db)?),
                    row.try_get("silent_since").map_err(db)?,
                ))
            })
            .collect()
    }
}

#[async_trait]
impl AlertStore for PgStore {
    async fn unhealthy(&self, provider: Option<ProviderId>) -> Result<Vec<Unhealthy>, StoreError> {
        // Unhealthy since the first attempt after the last one that left it healthy
        // (or failing); every attempt since then left it in error or needs_reauth.
        let rows = sqlx::query(
            "SELECT p.id, p.tenant_id, p.kind, p.status, p.error_message, \
                    COALESCE(h.consecutive_failure_count, 0) AS failures, \
                    COALESCE(( \
                      SELECT min(a.attempted_at) FROM renewal_attempts a \
                      WHERE a.provider_id = p.id AND a.attempted_at > COALESCE(( \
                        SELECT max(b.attempted_at) FROM renewal_attempts b \
                        WHERE b.provider_id = p.id AND b.status_after NOT IN ('error', 'needs_reauth')), \
                        '-infinity'::timestamptz)), p.updated_at) AS since \
             FROM providers p LEFT JOIN provider_health h ON h.provider_id = p.id \
             WHERE p.deleted_at IS NULL AND p.enabled AND p.status IN ('error', 'needs_reauth') \
               AND ($1::uuid IS NULL OR p.id = $1)",
        )
        .bind(provider.map(|p| p.0))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(db)?;
                let status: String = row.try_get("status").map_err(db)?;
                let failures: i32 = row.try_get("failures").map_err(db)?;
                Ok(Unhealthy {
                    provider_id: ProviderId(row.try_get("id").map_err(db)?),
                    tenant: tenant(&row.try_get::<String, _>("tenant_id").map_err(db)?)?,
                    kind: parse(&kind)?,
                    state: parse(&status)?,
                    since: row.try_get("since").map_err(db)?,
                    reason: row.try_get("error_message").map_err(db)?,
                    consecutive_failures: u32::try_from(failures).unwrap_or(0),
                })
            })
            .collect()
    }
}
