//! What the provider adapters read from the store: OAuth credentials (the
//! `CredentialSource` tokens' inputs come from, and where rotated refresh tokens
//! are kept) and, for Gmail, who else watches a mailbox (`MailboxWatchers`).
//! Secrets are sealed on the way in and opened on the way out (`crate::secrets`);
//! `reseal_secrets` is what `subkeeper rotate-key` runs.

use super::{Store, db, on_db, parse};
use async_trait::async_trait;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::{CredentialSource, MailboxWatchers, OAuthCredentials, StoreError};
use uuid::Uuid;

/// A row of `oauth_credentials`, its secrets as stored (sealed, or in clear when
/// their key column is NULL).
#[derive(sqlx::FromRow)]
struct CredentialsRow {
    id: Uuid,
    flow: String,
    authority_tenant: String,
    client_id: String,
    client_secret: Option<String>,
    client_secret_key: Option<String>,
    refresh_token: Option<String>,
    refresh_token_key: Option<String>,
    scope: String,
}

/// The secrets of one row, for re-sealing.
#[derive(sqlx::FromRow)]
struct SecretsRow {
    id: Uuid,
    client_secret: Option<String>,
    client_secret_key: Option<String>,
    refresh_token: Option<String>,
    refresh_token_key: Option<String>,
}

/// Rows re-sealed per transaction by [`Store::reseal_secrets`].
const RESEAL_BATCH: i64 = 200;

impl Store {
    /// Re-seals every secret not sealed with the current key (the first of
    /// `SUBKEEPER_SECRET_KEYS`) — values from before sealing included — in
    /// batches of short transactions; returns how many rows changed. A row
    /// changed meanwhile (a refresh token rotated) is left to its writer, who
    /// sealed it with the current key anyway.
    pub async fn reseal_secrets(&self) -> Result<u64, StoreError> {
        let current = self
            .secrets
            .as_ref()
            .map(|k| k.current_id().to_owned())
            .ok_or_else(|| StoreError::Rejected("no SUBKEEPER_SECRET_KEYS configured".into()))?;
        let mut changed = 0;
        loop {
            let rows: Vec<SecretsRow> = on_db!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT id, client_secret, client_secret_key, refresh_token, refresh_token_key FROM oauth_credentials \
                     WHERE (client_secret IS NOT NULL AND (client_secret_key IS NULL OR client_secret_key <> $1)) \
                        OR (refresh_token IS NOT NULL AND (refresh_token_key IS NULL OR refresh_token_key <> $1)) \
                     ORDER BY id LIMIT $2",
                )
                .bind(&current)
                .bind(RESEAL_BATCH)
                .fetch_all(pool)
                .await
                .map_err(db)?
            });
            if rows.is_empty() {
                return Ok(changed);
            }
            let mut progressed = false;
            for row in rows {
                let client_secret = self.open_secret(
                    row.client_secret.clone(),
                    row.client_secret_key.as_deref(),
                    row.id,
                    "client_secret",
                )?;
                let refresh_token = self.open_secret(
                    row.refresh_token.clone(),
                    row.refresh_token_key.as_deref(),
                    row.id,
                    "refresh_token",
                )?;
                let (client_secret, client_secret_key) =
                    self.seal(client_secret.as_deref(), row.id, "client_secret")?;
                let (refresh_token, refresh_token_key) =
                    self.seal(refresh_token.as_deref(), row.id, "refresh_token")?;
                let updated = on_db!(&self.db, pool => {
                    sqlx::query(
                        "UPDATE oauth_credentials SET client_secret = $1, client_secret_key = $2, \
                           refresh_token = $3, refresh_token_key = $4 \
                         WHERE id = $5 AND client_secret IS NOT DISTINCT FROM $6 AND refresh_token IS NOT DISTINCT FROM $7",
                    )
                    .bind(client_secret)
                    .bind(client_secret_key)
                    .bind(refresh_token)
                    .bind(refresh_token_key)
                    .bind(row.id)
                    .bind(&row.client_secret)
                    .bind(&row.refresh_token)
                    .execute(pool)
                    .await
                    .map_err(db)?
                    .rows_affected()
                });
                changed += updated;
                progressed |= updated > 0;
            }
            if !progressed {
                return Ok(changed);
            }
        }
    }
}

#[async_trait]
impl CredentialSource for Store {
    async fn credentials(&self, id: Uuid) -> Result<Option<OAuthCredentials>, StoreError> {
        let row: Option<CredentialsRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, flow, authority_tenant, client_id, client_secret, client_secret_key, \
                        refresh_token, refresh_token_key, scope \
                 FROM oauth_credentials WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db)?
        });
        row.map(|row| {
            Ok(OAuthCredentials {
                id: row.id,
                flow: parse(&row.flow)?,
                client_secret: self.open_secret(
                    row.client_secret,
                    row.client_secret_key.as_deref(),
                    row.id,
                    "client_secret",
                )?,
                refresh_token: self.open_secret(
                    row.refresh_token,
                    row.refresh_token_key.as_deref(),
                    row.id,
                    "refresh_token",
                )?,
                authority_tenant: row.authority_tenant,
                client_id: row.client_id,
                scope: row.scope,
            })
        })
        .transpose()
    }

    async fn store_refresh_token(&self, id: Uuid, refresh_token: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (sealed, key) = self.seal(Some(refresh_token), id, "refresh_token")?;
        on_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE oauth_credentials SET refresh_token = $1, refresh_token_key = $2, updated_at = $3 WHERE id = $4",
            )
                .bind(sealed)
                .bind(key)
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map_err(db)?;
        });
        Ok(())
    }
}

#[async_trait]
impl MailboxWatchers for Store {
    async fn watched_by_others(
        &self,
        mailbox: &str,
        except: ProviderId,
    ) -> Result<bool, StoreError> {
        on_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM providers p \
                   WHERE p.kind = 'gmail' AND lower(p.resource) = lower($1) \
                     AND p.enabled AND p.deleted_at IS NULL AND p.id <> $2)",
            )
            .bind(mailbox)
            .bind(except.0)
            .fetch_one(pool)
            .await
            .map_err(db)
        })
    }
}
