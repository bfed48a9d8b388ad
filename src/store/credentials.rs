//! What the provider adapters read from the store: OAuth credentials (the
//! `CredentialSource` tokens' inputs come from, and where rotated refresh tokens
//! are kept) and, for Gmail, who else watches a mailbox (`MailboxWatchers`).

use super::{Store, db, on_db, parse};
use async_trait::async_trait;
use subkeeper_actors::domain::ProviderId;
use subkeeper_actors::ports::{CredentialSource, MailboxWatchers, OAuthCredentials, StoreError};
use uuid::Uuid;

/// A row of `oauth_credentials`.
#[derive(sqlx::FromRow)]
struct CredentialsRow {
    id: Uuid,
    flow: String,
    authority_tenant: String,
    client_id: String,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    scope: String,
}

#[async_trait]
impl CredentialSource for Store {
    async fn credentials(&self, id: Uuid) -> Result<Option<OAuthCredentials>, StoreError> {
        let row: Option<CredentialsRow> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, flow, authority_tenant, client_id, client_secret, refresh_token, scope \
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
                authority_tenant: row.authority_tenant,
                client_id: row.client_id,
                client_secret: row.client_secret,
                refresh_token: row.refresh_token,
                scope: row.scope,
            })
        })
        .transpose()
    }

    async fn store_refresh_token(&self, id: Uuid, refresh_token: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        on_db!(&self.db, pool => {
            sqlx::query("UPDATE oauth_credentials SET refresh_token = $1, updated_at = $2 WHERE id = $3")
                .bind(refresh_token)
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
