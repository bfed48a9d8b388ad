//! The `SubscriptionApi` port for every provider family at once: each call goes to
//! the adapter of the provider's kind (Graph for mail and calendar, Google's
//! Calendar and Gmail adapters). The fleet holds this one port.

use super::google::GoogleApis;
use super::graph::GraphApi;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use subkeeper_actors::domain::{AttemptKind, Provider, ProviderKind, Subscription};
use subkeeper_actors::ports::{
    ApiError, ChangePage, ChangesError, ChangesFrom, CreateRequest, ProviderSubscription,
    SubscriptionApi,
};

/// Dispatches the `SubscriptionApi` port to the adapter of the provider's family.
pub struct ByFamily {
    /// Microsoft Graph (mail and calendar).
    graph: Arc<GraphApi>,
    /// Google Calendar and Gmail.
    google: Arc<GoogleApis>,
}

impl ByFamily {
    /// One port over both families' adapters.
    pub fn new(graph: Arc<GraphApi>, google: Arc<GoogleApis>) -> Self {
        Self { graph, google }
    }

    fn family(&self, provider: &Provider) -> &dyn SubscriptionApi {
        match provider.kind {
            ProviderKind::GraphMail | ProviderKind::GraphCalendar => self.graph.as_ref(),
            ProviderKind::GoogleCalendar => &self.google.calendar,
            ProviderKind::Gmail => &self.google.gmail,
        }
    }
}

#[async_trait]
impl SubscriptionApi for ByFamily {
    fn max_lifetime(&self, provider: &Provider) -> TimeDelta {
        self.family(provider).max_lifetime(provider)
    }

    async fn admit(&self, provider: &Provider, attempt: AttemptKind) {
        self.family(provider).admit(provider, attempt).await
    }

    async fn create(
        &self,
        provider: &Provider,
        request: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        self.family(provider).create(provider, request).await
    }

    async fn renew(
        &self,
        provider: &Provider,
        subscription: &Subscription,
        expires_at: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        self.family(provider)
            .renew(provider, subscription, expires_at)
            .await
    }

    async fn delete(
        &self,
        provider: &Provider,
        subscription: &Subscription,
    ) -> Result<(), ApiError> {
        self.family(provider).delete(provider, subscription).await
    }

    async fn changes_since(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        self.family(provider)
            .changes_since(provider, from, page_size)
            .await
    }
}
