//! What the provider adapters read from Postgres: OAuth credentials (the
//! `CredentialSource` tokens' inputs come from, and where rotated refresh tokens
//! are kept) and, for Gmail, who else watches a mailbox (`MailboxWatchers`).

use super::{PgStore, db};
use crate::providers::google::MailboxWatchers;
use crate::providers::oauth::{CredentialSource, OAuthCredentials, OAuthFlow};
use async_trait::async_trait;
use sqlx::Row;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::StoreError;
use uuid::Uuid;

#[async_trait]
impl CredentialSource for PgStore {
    async fn credentials(&self, id: Uuid) -> Result<Option<OAuthCredentials>, StoreError> {
        let row = sqlx::query(
            "SELECT id, flow, authority_tenant, client_id, client_secret, refresh_token, scope \
             FROM oauth_credentials WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let flow: String = row.try_get("flow").map_err(db)?;
        Ok(Some(OAuthCredentials {
            id: row.try_get("id").map_err(db)?,
            flow: match flow.as_str() {
                "refresh_token" => OAuthFlow::RefreshToken,
                "client_credentials" => OAuthFlow::ClientCredentials,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "corrupt credentials row: unknown flow '{other}'"
                    )));
                }
            },
            authority_tenant: row.try_get("authority_tenant").map_err(db)?,
            client_id: row.try_get("client_id").map_err(db)?,
            client_secret: row.try_get("client_secret").map_err(db)?,
            refresh_token: row.try_get("refresh_token").map_err(db)?,
            scope: row.try_get("scope").map_err(db)?,
        }))
    }

    async fn store_refresh_token(&self, id: Uuid, refresh_token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE oauth_credentials SET refresh_token = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(refresh_token)
        .bind(self.clock.now())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl MailboxWatchers for PgStore {
    async fn watched_by_others(
        &self,
        mailbox: &str,
        except: ProviderId,
    ) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM providers p \
               WHERE p.kind = 'gmail' AND lower(p.resource) = lower($1) \
                 AND p.enabled AND p.deleted_at IS NULL AND p.id <> $2)",
        )
        .bind(mailbox)
        .bind(except.0)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }
}
