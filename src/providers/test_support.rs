//! Test doubles the adapters' tests share.

use crate::providers::oauth::{CredentialSource, OAuthCredentials};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use subkeeper_actors::ports::StoreError;
use uuid::Uuid;

/// Credentials in memory, recording every refresh token stored; can play a
/// store that cannot be read.
#[derive(Default)]
pub(crate) struct MemoryCredentials {
    pub(crate) rows: Mutex<HashMap<Uuid, OAuthCredentials>>,
    stored: Mutex<Vec<String>>,
    unavailable: AtomicBool,
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

    /// From now on reads fail as a database outage would (or work again).
    pub(crate) fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }
}

#[async_trait]
impl CredentialSource for MemoryCredentials {
    async fn credentials(&self, id: Uuid) -> Result<Option<OAuthCredentials>, StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Timeout(
                "pool timed out while waiting for an open connection".into(),
            ));
        }
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

/// A mailbox nobody else watches.
pub(crate) struct NoOtherWatchers;

#[async_trait]
impl crate::providers::google::MailboxWatchers for NoOtherWatchers {
    async fn watched_by_others(
        &self,
        _: &str,
        _: subkeeper_actors::domain::ProviderId,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }
}
