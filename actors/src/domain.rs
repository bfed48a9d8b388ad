//! Domain types shared by every part of subkeeper: tenants, providers, their
//! subscriptions and health, and the result of each renewal attempt.
//!
//! Plain data with serde; no behaviour beyond parsing and naming. The lifecycle rules
//! live in `lifecycle`, persistence behind `ports`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A tenant of the SaaS that connects mailboxes and calendars. The id is used as a
/// NATS subject token, so it is restricted to `[A-Za-z0-9_-]{1,64}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
pub struct TenantId(String);

/// Why a tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
pub struct InvalidTenantId;

impl TenantId {
    /// The longest accepted tenant id, in characters.
    pub const MAX_LEN: usize = 64;

    /// Parses a tenant id, refusing anything that is not a safe NATS token.
    pub fn parse(raw: &str) -> Result<Self, InvalidTenantId> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidTenantId)
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connected mailbox or calendar: one provider owns exactly one subscription.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, format = Uuid)]
pub struct ProviderId(pub Uuid);

impl ProviderId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for ProviderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ProviderId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Declares a string-backed enum with its wire names, `as_str`, `FromStr` and serde.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire / database / metric-label name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A string of the wire names (the derive cannot see serde's renames
        /// through this macro).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(UnknownValue { kind: stringify!($name), value: other.to_owned() }),
                }
            }
        }
    };
}

/// A string that names no value of the expected enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{value}'")]
pub struct UnknownValue {
    /// The enum that was expected.
    pub kind: &'static str,
    /// What was given.
    pub value: String,
}

wire_enum! {
    /// Which provider API and resource family a provider watches.
    ProviderKind {
        /// Microsoft Graph change notifications on Outlook messages.
        GraphMail => "graph_mail",
        /// Microsoft Graph change notifications on Outlook events.
        GraphCalendar => "graph_calendar",
        /// A Google Calendar events.watch channel.
        GoogleCalendar => "google_calendar",
        /// A Gmail users.watch through Pub/Sub.
        Gmail => "gmail",
    }
}

impl ProviderKind {
    /// True for the Microsoft Graph family.
    pub fn is_graph(self) -> bool {
        matches!(self, Self::GraphMail | Self::GraphCalendar)
    }
}

wire_enum! {
    /// The provider's standing as an operator sees it in the admin API.
    ProviderStatus {
        /// The subscription is being kept alive (possibly retrying under the threshold).
        Connected => "connected",
        /// Failed `failure_threshold` times in a row; still retried on a cool-off cadence.
        Error => "error",
        /// The OAuth grant is gone; nothing is retried until credentials change or a
        /// renewal is forced.
        NeedsReauth => "needs_reauth",
        /// Switched off by an operator; its subscription is deleted at the provider.
        Disabled => "disabled",
    }
}

wire_enum! {
    /// The subscription's health (`provider_health.subscription_status`).
    HealthState {
        /// Alive and scheduled for renewal.
        Healthy => "healthy",
        /// A provider call is in flight.
        Renewing => "renewing",
        /// Failed at least once, still under the threshold.
        Failing => "failing",
        /// Failed `failure_threshold` times in a row.
        Error => "error",
        /// Parked until re-authorized.
        NeedsReauth => "needs_reauth",
    }
}

impl HealthState {
    /// The provider status this health state implies.
    pub fn provider_status(self) -> ProviderStatus {
        match self {
            Self::Error => ProviderStatus::Error,
            Self::NeedsReauth => ProviderStatus::NeedsReauth,
            Self::Healthy | Self::Renewing | Self::Failing => ProviderStatus::Connected,
        }
    }
}

wire_enum! {
    /// How a failed provider call is handled (see the lifecycle rules).
    ErrorClass {
        /// 404/410: the subscription is gone; recreate it now.
        NotFound => "not_found",
        /// 429/503: wait for Retry-After.
        Throttled => "throttled",
        /// 5xx, timeouts, connection errors: back off exponentially, retry before expiry.
        Transient => "transient",
        /// The access token was refused even after one refresh.
        Auth => "auth",
        /// invalid_grant / consent revoked: a human must re-authorize.
        ReauthRequired => "reauth_required",
        /// Any other 4xx, including a failed notificationUrl validation.
        Permanent => "permanent",
    }
}

wire_enum! {
    /// What an attempt set out to do.
    AttemptKind {
        /// No subscription yet: create one.
        Register => "register",
        /// Extend the live subscription.
        Renew => "renew",
        /// The subscription is gone: create a replacement.
        Recreate => "recreate",
    }
}

wire_enum! {
    /// What an attempt achieved (`RenewalResult.action`).
    RenewalAction {
        /// A first subscription was created.
        Registered => "registered",
        /// The live subscription was extended.
        Renewed => "renewed",
        /// A replacement subscription was created.
        Recreated => "recreated",
        /// The attempt failed.
        Failed => "failed",
    }
}

impl AttemptKind {
    /// The action reported when an attempt of this kind succeeds.
    pub fn success_action(self) -> RenewalAction {
        match self {
            Self::Register => RenewalAction::Registered,
            Self::Renew => RenewalAction::Renewed,
            Self::Recreate => RenewalAction::Recreated,
        }
    }
}

/// A provider as the core sees it: who it belongs to and what it watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// Stable id, used in NATS subjects and the admin API.
    pub id: ProviderId,
    /// Owning tenant; every outside lookup is scoped by it.
    pub tenant: TenantId,
    /// Which API and resource family.
    pub kind: ProviderKind,
    /// Human name for dashboards and alerts.
    pub display_name: String,
    /// The provider-side resource watched, e.g. `users/{id}/messages`.
    pub resource: String,
    /// Reference to the OAuth credentials the adapter uses (a row of `oauth_credentials`).
    pub credentials_id: Option<Uuid>,
    /// Disabled providers are retired: subscription deleted, supervisor stopped.
    pub enabled: bool,
    /// Bumped whenever credentials change; a supervisor in needs_reauth resumes when
    /// it sees a new version.
    pub credentials_version: i64,
}

/// The live subscription of a provider, as returned by the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Owning provider.
    pub provider_id: ProviderId,
    /// The provider's id for it (Graph subscription id, Google channel id).
    pub external_id: String,
    /// Google's resourceId (needed to stop a channel); `None` for Graph.
    pub resource_id: Option<String>,
    /// The secret the provider echoes back (Graph clientState, Google channel token).
    pub client_state: String,
    /// The expiry the provider returned (never the one requested).
    pub expires_at: DateTime<Utc>,
    /// When this subscription was created at the provider.
    pub created_at: DateTime<Utc>,
    /// When it was last renewed, if ever.
    pub renewed_at: Option<DateTime<Utc>>,
    /// Gmail's `historyId` as of the last `users.watch`: the mailbox's position
    /// when the watch was (re)set — pushes cover changes after it. Not a sync
    /// cursor: a consumer keeps its own last-processed historyId. `None` for
    /// other families.
    pub history_id: Option<String>,
}

/// The health row of a provider (`provider_health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderHealth {
    /// Owning provider.
    pub provider_id: ProviderId,
    /// Current health state.
    pub subscription_status: HealthState,
    /// Expiry of the live subscription, if any.
    pub subscription_expires_at: Option<DateTime<Utc>>,
    /// When the last attempt started.
    pub last_renewal_attempt_at: Option<DateTime<Utc>>,
    /// What the last attempt achieved.
    pub last_renewal_result: Option<RenewalAction>,
    /// Actionable reason of the last failure; cleared by a success.
    pub failure_reason: Option<String>,
    /// When a webhook last arrived for this provider.
    pub last_webhook_received_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row; reset by one success.
    pub consecutive_failure_count: u32,
    /// When the next attempt is scheduled; `None` while parked or in flight.
    pub next_renewal_at: Option<DateTime<Utc>>,
    /// Set while the provider is silent: its subscription is alive but no webhook
    /// has arrived for longer than the kind's silence threshold. The value is when
    /// the silence began (the last webhook, or the subscription's creation if none
    /// came since). Written by the notification actor only; attempts leave it alone.
    #[serde(default)]
    pub silent_since: Option<DateTime<Utc>>,
}

/// The outcome of one attempt, recorded and published for every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewalResult {
    /// The provider.
    pub provider_id: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
    /// True when the subscription is alive after the attempt.
    pub success: bool,
    /// What the attempt set out to do.
    pub attempt: AttemptKind,
    /// What it achieved.
    pub action: RenewalAction,
    /// The expiry the provider returned, on success.
    pub new_expiration: Option<DateTime<Utc>>,
    /// The live subscription's provider-side id after the attempt.
    pub subscription_id: Option<String>,
    /// Gmail's `historyId` the watch answered, on success (changes after it are
    /// pushed); absent for other families.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<String>,
    /// Classification of the failure, if any.
    pub error_class: Option<ErrorClass>,
    /// Human-readable, actionable failure message, if any.
    pub error_message: Option<String>,
    /// HTTP status the provider answered, if it answered.
    pub http_status: Option<u16>,
    /// Failed attempts in a row after this one.
    pub consecutive_failures: u32,
    /// Health after the attempt.
    pub status: HealthState,
    /// Health before the attempt started (to detect transitions).
    pub previous_status: HealthState,
    /// When the attempt started.
    pub attempted_at: DateTime<Utc>,
    /// When a timer-driven attempt was scheduled to start (`None` when forced,
    /// first-time or a same-turn recreate): `attempted_at − scheduled_at` is the lag.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// How long the provider call took, in milliseconds.
    pub duration_ms: u64,
}

wire_enum! {
    /// What a provider delivered, as the delivery log names it.
    DeliveryKind {
        /// A Microsoft Graph change notification.
        Change => "change",
        /// A Microsoft Graph lifecycle notification (reauthorizationRequired,
        /// subscriptionRemoved, missed).
        Lifecycle => "lifecycle",
        /// A Google Calendar channel message.
        GoogleMessage => "google_message",
        /// A Gmail push through Pub/Sub.
        GmailPush => "gmail_push",
    }
}

impl DeliveryKind {
    /// What a notification to a provider of `kind` is (lifecycle notifications
    /// are named by their own intake).
    pub fn of(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::GraphMail | ProviderKind::GraphCalendar => Self::Change,
            ProviderKind::GoogleCalendar => Self::GoogleMessage,
            ProviderKind::Gmail => Self::GmailPush,
        }
    }
}

wire_enum! {
    /// What subkeeper did with a delivery.
    DeliveryOutcome {
        /// Stored on the webhook stream (and so turned into a domain event).
        Accepted => "accepted",
        /// The stream already held it (the provider sent it again).
        Duplicate => "duplicate",
        /// Refused: the reason says why.
        Rejected => "rejected",
    }
}

wire_enum! {
    /// Why a delivery had its outcome: the one taxonomy of the delivery log, its
    /// API and its metric labels. A variant is never renamed.
    DeliveryReason {
        /// Accepted: nothing to explain.
        Ok => "ok",
        /// Already on the stream within its de-duplication window.
        AlreadySeen => "already_seen",
        /// The clientState (Graph) or channel token (Google) did not match.
        BadClientState => "bad_client_state",
        /// The subscription or channel id is not one of ours.
        UnknownSubscription => "unknown_subscription",
        /// The provider was disabled or deleted, or the subscription replaced and
        /// stopped.
        Retired => "retired",
        /// Not a notification the provider's API sends.
        Malformed => "malformed",
        /// Larger than `SUBKEEPER_WEBHOOK_MAX_BODY_BYTES`.
        Oversized => "oversized",
        /// Neither the stream nor the outbox took it; the provider retries.
        PublishFailed => "publish_failed",
        /// The push's bearer token (Gmail via Pub/Sub) was refused.
        Unauthenticated => "unauthenticated",
    }
}

/// What is published on the webhook stream for each accepted notification
/// (`{prefix}.webhook.<kind>.<tenant>.<provider>`), and what the notification actor
/// reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    /// Owning tenant.
    pub tenant: TenantId,
    /// The provider it was routed to.
    pub provider_id: ProviderId,
    /// Provider kind.
    pub kind: ProviderKind,
    /// Provider-side subscription id it arrived on.
    pub subscription_id: String,
    /// When subkeeper received it.
    pub received_at: DateTime<Utc>,
    /// The provider's notification item, as received.
    pub notification: serde_json::Value,
}

/// What a downstream domain event announces. The snake_case name is its `type`
/// on the wire and its token in `{prefix}.event.<type>.<tenant>`: part of the
/// public contract, so a variant is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainEventType {
    /// A Graph mail message was created.
    MailReceived,
    /// Any other mail change (Graph update/delete, every Gmail push).
    MailChanged,
    /// A Graph or Google calendar changed.
    CalendarChanged,
    /// Notifications may have been missed: the consumer should resynchronise.
    ResyncRequired,
}

impl DomainEventType {
    /// Every type, in declaration order.
    pub const ALL: &'static [Self] = &[
        Self::MailReceived,
        Self::MailChanged,
        Self::CalendarChanged,
        Self::ResyncRequired,
    ];

    /// The wire name (also the subject token).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MailReceived => "mail_received",
            Self::MailChanged => "mail_changed",
            Self::CalendarChanged => "calendar_changed",
            Self::ResyncRequired => "resync_required",
        }
    }
}

impl fmt::Display for DomainEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A downstream domain event (`{prefix}.event.<type>.<tenant>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// What it announces; `type` on the wire.
    #[serde(rename = "type")]
    pub event_type: DomainEventType,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The provider.
    pub provider_id: ProviderId,
    /// Provider kind.
    pub kind: ProviderKind,
    /// Why (for resync: `missed`, `subscription_removed`, …).
    pub reason: Option<String>,
    /// When it happened (for a notification: when subkeeper received it, so a
    /// redelivered notification yields an identical event).
    pub at: DateTime<Utc>,
    /// The changed resource as the provider named it (Graph's `resource`, e.g.
    /// `Users/{id}/Messages/{id}`), for change events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The provider's change type (Graph: `created`, `updated`, `deleted`), for
    /// change events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    /// Gmail's `historyId`: on `mail_changed`, the one the push announced; on a
    /// `resync_required` after a recreate, the new watch's (pushes cover changes
    /// after it; read `history.list` from your own last-processed id up to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<String>,
}

impl DomainEvent {
    /// A `resync_required` event: downstream must re-read `provider` (for
    /// `reason`); `history_id` is a new Gmail watch's, where there is one.
    pub fn resync_required(
        tenant: TenantId,
        provider_id: ProviderId,
        kind: ProviderKind,
        reason: &str,
        at: DateTime<Utc>,
        history_id: Option<String>,
    ) -> Self {
        Self {
            event_type: DomainEventType::ResyncRequired,
            tenant,
            provider_id,
            kind,
            reason: Some(reason.into()),
            at,
            resource: None,
            change_type: None,
            history_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_nats_safe_tokens() {
        assert!(TenantId::parse("acme-corp_1").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn enums_round_trip_through_their_wire_names() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(*kind));
        }
        assert!("graph".parse::<ProviderKind>().is_err());
        assert_eq!(
            serde_json::to_string(&ErrorClass::ReauthRequired).ok(),
            Some("\"reauth_required\"".to_owned())
        );
    }

    /// Downstream services match on these strings (the event's `type` field and
    /// the subject token): every variant has exactly its historic wire name.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn domain_event_types_round_trip_through_their_wire_names() {
        let wire = [
            "mail_received",
            "mail_changed",
            "calendar_changed",
            "resync_required",
        ];
        assert_eq!(DomainEventType::ALL.len(), wire.len());
        for (t, name) in DomainEventType::ALL.iter().zip(wire) {
            assert_eq!(t.as_str(), name);
            assert_eq!(t.to_string(), name);
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<DomainEventType>(&json).unwrap(), *t);
        }
        assert!(serde_json::from_str::<DomainEventType>("\"mail\"").is_err());
    }
}
