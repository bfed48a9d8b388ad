//! Test doubles the adapters' tests share.

use crate::providers::oauth::{CredentialSource, OAuthCredentials};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use subkeeper_actors::ports::StoreError;
use uuid::Uuid;

/// Credentials in memory, recording every refresh token stored.
#[derive(Default)]
pub(crate) struct MemoryCredentials {
    pub(crate) rows: Mutex<HashMap<Uuid, OAuthCredentials>>,
    stored: Mutex<Vec<String>>,
}

impl MemoryCredentials {
    pub(crate) fn insert(&self, credentials: OAuthCredentials) {
        self.rows
            .lock()
            .unwrap()
            .insert(credentials.id, credentials);
    }

    pub(crate) fn stored(&self) -> Vec<String> {
        self.stored.lock().unwrap().clone()
    }
}

#[async_trait]
impl CredentialSource for MemoryCredentials {
    async fn credentials(&self, id: Uuid) -> Result<Option<OAuthCredentials>, StoreError> {
        Ok(self.rows.lock().unwrap().get(&id).cloned())
    }

    async fn store_refresh_token(&self, id: Uuid, refresh_token: &str) -> Result<(), StoreError> {
        self.stored.lock().unwrap().push(refresh_token.to_owned());
        if let Some(row) = self.rows.lock().unwrap().get_mut(&id) {
            row.refresh_token = Some(refresh_token.to_owned());
        }
        Ok(())
    }
}
