//! The ports: the traits through which the core and the HTTP layer reach the
//! world, one file per family — provider APIs (`api`), the lifecycle,
//! notification and alert store (`store`), webhook routing and the outbox
//! (`intake`), ownership leases across instances (`leases`), OAuth credentials (`credentials`), the delivery log (`deliveries`), the admin reads and writes
//! (`admin`), the event bus (`events`), the durable streams of the in-process bus
//! (`stream`) and time (`clock`). Adapters in
//! the `subkeeper` crate implement them (reqwest, sqlx, async-nats); `memory` has
//! in-process implementations for tests and the demo.
//!
//! Errors crossing a port are already classified: the core never sees an HTTP
//! status or a SQL error, only an [`ErrorClass`] or a [`StoreError`].

mod admin;
mod api;
pub mod clock;
mod credentials;
mod deliveries;
mod events;
mod intake;
mod leases;
pub mod page;
mod status_page;
mod store;
mod stream;

pub use admin::{
    AdminStore, AttemptView, Attention, AuditContext, AuditRecord, AuditView, NewCredentials,
    NewProvider, OffboardingProgress, ProviderPatch, ProviderView, RetainedTable, SubscriptionView,
    TokenGrant, TokenView,
};
pub use api::{
    ApiError, CallbackUrls, ChangeKind, ChangePage, ChangesError, ChangesFrom, ChangesNext,
    CreateRequest, ItemChange, ProviderSubscription, SubscriptionApi,
};
pub use credentials::{
    CredentialSource, GRAPH_DEFAULT_SCOPE, GRAPH_DELEGATED_SCOPE, MailboxWatchers,
    OAuthCredentials, OAuthFlow, UnknownFlow,
};
pub use deliveries::{DeliveryLog, DeliveryRecord, DeliveryView};
pub use events::{
    AlertSink, DomainEventSink, DurableMessage, EventSink, PublishError, WebhookPublisher,
};
pub use intake::{IntakeStore, MailboxRoute, Outbox, OutboxEntry, ResyncTarget, Route, RouteState};
pub use leases::{LeaseStore, Membership};
pub use page::{Cursor, CursorKey, Page, PageRequest};
pub use status_page::{BoardCursor, BoardFilter, BoardRow, SessionGrant, StatusPageStore};
pub use store::{
    AlertStore, AttemptRecord, CatchUpState, CatchUpStore, ChangeFeed, Fence, LifecycleStore,
    LoadedProvider, NotificationStore, OwnedProvider, ProofOfLife, ProviderChange, ProviderState,
    Revision, SilenceSweep, StoreError,
};
pub use stream::{Append, Appended, StreamLog, StreamMessage};

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
    pub clock: crate::ports::clock::SharedClock,
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
