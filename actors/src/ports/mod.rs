//! The ports: the traits through which the core reaches provider APIs (`api`), the
//! store (`store`) and the event bus (`events`), one file per family. Adapters in
//! the `subkeeper` crate implement them (reqwest, sqlx, async-nats); `memory` has
//! in-process implementations for tests and the demo.
//!
//! Errors crossing a port are already classified: the core never sees an HTTP
//! status or a SQL error, only an [`ErrorClass`] or a [`StoreError`].

mod api;
mod events;
mod store;

pub use api::{ApiError, CallbackUrls, CreateRequest, ProviderSubscription, SubscriptionApi};
pub use events::{AlertSink, DomainEventSink, EventSink, PublishError};
pub use store::{
    AlertStore, AttemptRecord, LifecycleStore, NotificationStore, ProviderState, StoreError,
};

use crate::domain::{ProviderId, TenantId};
use std::sync::Arc;

/// Shared handles to the ports.
#[derive(Clone)]
pub struct Ports {
    /// Provider APIs, dispatched by provider kind.
    pub api: Arc<dyn SubscriptionApi>,
    /// Persistence.
    pub store: Arc<dyn LifecycleStore>,
    /// Renewal result sink.
    pub events: Arc<dyn EventSink>,
    /// Time.
    pub clock: crate::clock::SharedClock,
}

/// A tenant-scoped provider lookup key, so no outside request can name another
/// tenant's provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderKey {
    /// The tenant the caller speaks for.
    pub tenant: TenantId,
    /// The provider.
    pub provider: ProviderId,
}
