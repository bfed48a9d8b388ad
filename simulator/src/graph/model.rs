//! Graph's state as pure data: access tokens, subscriptions, and the rules Graph
//! applies to them (required fields, URL schemes, clientState length, maximum
//! lifetime per resource, expiry).
//!
//! No I/O and no locking here: every function takes "now" and returns either new
//! state or the [`GraphError`] Graph would answer. The HTTP layer renders errors
//! and performs the validation handshake between [`GraphState::validate_create`]
//! and [`GraphState::insert`].

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value};
use std::collections::HashMap;
use url::Url;

/// Seconds an access token lives; what the identity platform's v2 endpoint
/// answers as `expires_in` (one hour minus one second).
pub const ACCESS_TOKEN_LIFETIME_SECONDS: i64 = 3599;

/// Longest `clientState` Graph accepts, in characters.
pub const CLIENT_STATE_MAX_CHARS: usize = 128;

/// Outlook message/event/contact subscriptions without resource data, in
/// minutes. The docs say 10,080 (7 days), but the live service rejects anything
/// past 10,070 with "Subscription expiration can only be 10070 minutes in the
/// future." A client that passes here must pass there, so the stricter number.
pub const OUTLOOK_MAX_MINUTES: i64 = 10_070;

/// Any resource with `includeResourceData: true` (rich notifications), minutes.
pub const RICH_NOTIFICATIONS_MAX_MINUTES: i64 = 1_440;

/// Properties of `microsoft.graph.subscription`; anything else in a create or
/// update body is rejected the way Graph's OData layer rejects it.
const SUBSCRIPTION_PROPERTIES: &[&str] = &[
    "applicationId",
    "changeType",
    "clientState",
    "creatorId",
    "encryptionCertificate",
    "encryptionCertificateId",
    "expirationDateTime",
    "id",
    "includeResourceData",
    "latestSupportedTlsVersion",
    "lifecycleNotificationUrl",
    "notificationQueryOptions",
    "notificationUrl",
    "notificationUrlAppId",
    "resource",
    "notificationContentType",
];

/// An error as Graph reports it: HTTP status plus `error.code` / `error.message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// HTTP status.
    pub status: u16,
    /// `error.code`, e.g. `InvalidRequest`, `ResourceNotFound`.
    pub code: String,
    /// `error.message`, worded like Graph's where known.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after_seconds: Option<u64>,
}

impl GraphError {
    /// An error without `Retry-After`.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after_seconds: None,
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// 401 as Graph answers a missing, unknown or expired bearer token.
    pub fn unauthenticated(message: &str) -> Self {
        Self::new(401, "InvalidAuthenticationToken", message)
    }

    /// 400 as Graph answers an app-only (client-credentials) token on a `me/...`
    /// path or subscription resource: there is no signed-in user to resolve.
    pub fn me_requires_delegated() -> Self {
        Self::bad_request(
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )
    }

    /// 404 for a subscription that does not exist (any more) for this caller.
    pub fn subscription_not_found() -> Self {
        Self::new(404, "ResourceNotFound", "The object was not found.")
    }

    /// 400 for a body Graph cannot map onto a subscription.
    fn unprocessable_payload() -> Self {
        Self::bad_request(
            "InvalidRequest",
            "Could not process subscription creation payload. Are all property names spelled and camelCased properly?",
        )
    }
}

/// An access token the simulated identity platform issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Tenant the token was issued in.
    pub tenant: String,
    /// The app (client id) it was issued to.
    pub client_id: String,
    /// Provider time after which Graph rejects it.
    pub expires_at: DateTime<Utc>,
    /// Issued by the client-credentials grant: the app acts as itself, with no
    /// signed-in user, so `me/...` means nothing to Graph.
    pub app_only: bool,
}

/// Who is calling Graph, from a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Tenant of the token.
    pub tenant: String,
    /// App id (`applicationId` on subscriptions).
    pub application_id: String,
    /// Object id of the app's service principal in the tenant (`creatorId`).
    pub creator_id: String,
    /// The token is app-only (client credentials), not delegated.
    pub app_only: bool,
}

/// A subscription as Graph stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// GUID Graph assigned.
    pub id: String,
    /// Tenant it lives in (`tenantId` in notifications).
    pub tenant: String,
    /// App that created it; only that app sees it.
    pub application_id: String,
    /// Service principal that created it.
    pub creator_id: String,
    /// Resource path as the client sent it.
    pub resource: String,
    /// Comma-separated change types as the client sent them.
    pub change_type: String,
    /// Echoed in every notification so the receiver can authenticate them.
    pub client_state: Option<String>,
    /// Where change notifications go.
    pub notification_url: String,
    /// Where lifecycle notifications go; none are sent without it.
    pub lifecycle_notification_url: Option<String>,
    /// When Graph stops delivering and forgets it (100 ns precision, like Graph).
    pub expiration: DateTime<Utc>,
    /// Rich notifications requested.
    pub include_resource_data: bool,
    /// Public key for rich notifications, stored and echoed only.
    pub encryption_certificate: Option<String>,
    /// Client's id for that key, stored and echoed only.
    pub encryption_certificate_id: Option<String>,
    /// Echoed; Graph defaults it to `v1_2`.
    pub latest_supported_tls_version: String,
    /// Echoed only.
    pub notification_query_options: Option<String>,
    /// Echoed only.
    pub notification_url_app_id: Option<String>,
    /// Provider time of creation.
    pub created_at: DateTime<Utc>,
    /// A `reauthorizationRequired` lifecycle event was sent and neither a renew
    /// nor a reauthorize has answered it: Graph holds change notifications back.
    pub reauthorization_required: bool,
    /// User id the notifications' resource paths name (from `users/{id}/...`,
    /// invented for `me/...`).
    pub mailbox_user_id: String,
}

impl StoredSubscription {
    /// Still alive at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expiration
    }

    fn visible_to(&self, caller: &Caller) -> bool {
        self.tenant == caller.tenant && self.application_id == caller.application_id
    }
}

/// A validated create request, waiting for its validation handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// Resource path.
    pub resource: String,
    /// Change types.
    pub change_type: String,
    /// Shared secret echoed in notifications.
    pub client_state: Option<String>,
    /// Must pass the handshake.
    pub notification_url: String,
    /// Must pass the handshake too, when present.
    pub lifecycle_notification_url: Option<String>,
    /// Requested expiry, already truncated to Graph's precision.
    pub expiration: DateTime<Utc>,
    /// Rich notifications.
    pub include_resource_data: bool,
    /// Echoed.
    pub encryption_certificate: Option<String>,
    /// Echoed.
    pub encryption_certificate_id: Option<String>,
    /// Echoed (default `v1_2`).
    pub latest_supported_tls_version: String,
    /// Echoed.
    pub notification_query_options: Option<String>,
    /// Echoed.
    pub notification_url_app_id: Option<String>,
}

/// A validated PATCH, waiting for a handshake when it moves the notification URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    /// New expiry, when given.
    pub expiration: Option<DateTime<Utc>>,
    /// New notification URL, when given (must pass the handshake first).
    pub notification_url: Option<String>,
}

/// Policy knobs from the simulator config that change validation.
#[derive(Clone, Copy)]
pub struct CreatePolicy<'a> {
    /// Whether an `http://` notification URL is accepted (Graph accepts only
    /// `https://`; the simulator's config may allow loopback or named hosts).
    pub http_allowed: &'a dyn Fn(&Url) -> bool,
}

/// All of Graph's state in the simulator.
#[derive(Debug, Default)]
pub struct GraphState {
    /// Access token string → what it grants.
    tokens: HashMap<String, AccessToken>,
    /// (tenant, client id) → service principal object id, stable per app.
    service_principals: HashMap<(String, String), String>,
    /// Subscription id → subscription, including expired ones until purged.
    subscriptions: HashMap<String, StoredSubscription>,
}

impl GraphState {
    /// Issues an access token for `client_id` in `tenant`, valid from `now` for
    /// [`ACCESS_TOKEN_LIFETIME_SECONDS`]; `app_only` for the client-credentials
    /// grant, delegated otherwise.
    pub fn issue_token(
        &mut self,
        tenant: &str,
        client_id: &str,
        app_only: bool,
        now: DateTime<Utc>,
    ) -> String {
        let token = random_token(96);
        self.tokens.insert(
            token.clone(),
            AccessToken {
                tenant: tenant.to_owned(),
                client_id: client_id.to_owned(),
                expires_at: now + TimeDelta::seconds(ACCESS_TOKEN_LIFETIME_SECONDS),
                app_only,
            },
        );
        self.service_principals
            .entry((tenant.to_owned(), client_id.to_owned()))
            .or_insert_with(|| uuid::Uuid::new_v4().to_string());
        token
    }

    /// Resolves the `Authorization` header's bearer token into a caller.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Caller, GraphError> {
        let Some(bearer) = bearer.filter(|b| !b.is_empty()) else {
            return Err(GraphError::unauthenticated("Access token is empty."));
        };
        let Some(token) = self.tokens.get(bearer) else {
            return Err(GraphError::unauthenticated(
                "CompactToken parsing failed with error code: 80049217",
            ));
        };
        if now >= token.expires_at {
            return Err(GraphError::unauthenticated(
                "Access token has expired or is not yet valid.",
            ));
        }
        let creator_id = self
            .service_principals
            .get(&(token.tenant.clone(), token.client_id.clone()))
            .cloned()
            .unwrap_or_default();
        Ok(Caller {
            tenant: token.tenant.clone(),
            application_id: token.client_id.clone(),
            creator_id,
            app_only: token.app_only,
        })
    }

    /// Checks a create body the way Graph does before it calls the endpoint.
    pub fn validate_create(
        &self,
        body: &Value,
        now: DateTime<Utc>,
        policy: CreatePolicy,
    ) -> Result<NewSubscription, GraphError> {
        let Some(object) = body.as_object() else {
            return Err(GraphError::unprocessable_payload());
        };
        reject_unknown_properties(object)?;
        for required in [
            "changeType",
            "notificationUrl",
            "resource",
            "expirationDateTime",
        ] {
            if object.get(required).is_none_or(Value::is_null) {
                return Err(GraphError::bad_request(
                    "InvalidRequest",
                    format!("{required} is a required property for subscription creation."),
                ));
            }
        }
        let change_type = string_field(object, "changeType")?.unwrap_or_default();
        let notification_url = string_field(object, "notificationUrl")?.unwrap_or_default();
        let resource = string_field(object, "resource")?.unwrap_or_default();
        let expiration = parse_expiration(object)?.ok_or_else(GraphError::unprocessable_payload)?;
        let lifecycle_notification_url = string_field(object, "lifecycleNotificationUrl")?;
        let client_state = string_field(object, "clientState")?;
        let include_resource_data = match object.get("includeResourceData") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(GraphError::unprocessable_payload()),
        };
        let encryption_certificate = string_field(object, "encryptionCertificate")?;
        let encryption_certificate_id = string_field(object, "encryptionCertificateId")?;

        check_notification_url("NotificationUrl", &notification_url, policy)?;
        if let Some(url) = &lifecycle_notification_url {
            check_notification_url("LifecycleNotificationUrl", url, policy)?;
        }
        check_change_type(&change_type)?;
        check_client_state(client_state.as_deref())?;
        let max_minutes =
            max_lifetime_minutes(&resource, include_resource_data).ok_or_else(|| {
                GraphError::bad_request(
                    "InvalidRequest",
                    format!("Change notifications are not supported for resource '{resource}'."),
                )
            })?;
        if include_resource_data
            && (encryption_certificate.is_none() || encryption_certificate_id.is_none())
        {
            return Err(GraphError::bad_request(
                "InvalidRequest",
                "An encryptionCertificate and an encryptionCertificateId are required when includeResourceData is true.",
            ));
        }
        check_expiration(expiration, now, max_minutes)?;

        Ok(NewSubscription {
            resource,
            change_type,
            client_state,
            notification_url,
            lifecycle_notification_url,
            expiration,
            include_resource_data,
            encryption_certificate,
            encryption_certificate_id,
            latest_supported_tls_version: string_field(object, "latestSupportedTlsVersion")?
                .unwrap_or_else(|| "v1_2".to_owned()),
            notification_query_options: string_field(object, "notificationQueryOptions")?,
            notification_url_app_id: string_field(object, "notificationUrlAppId")?,
        })
    }

    /// Stores a subscription whose handshake passed; returns it with its new id.
    pub fn insert(
        &mut self,
        caller: &Caller,
        new: NewSubscription,
        now: DateTime<Utc>,
    ) -> StoredSubscription {
        let subscription = StoredSubscription {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: caller.tenant.clone(),
            application_id: caller.application_id.clone(),
            creator_id: caller.creator_id.clone(),
            mailbox_user_id: mailbox_user_id(&new.resource),
            resource: new.resource,
            change_type: new.change_type,
            client_state: new.client_state,
            notification_url: new.notification_url,
            lifecycle_notification_url: new.lifecycle_notification_url,
            expiration: new.expiration,
            include_resource_data: new.include_resource_data,
            encryption_certificate: new.encryption_certificate,
            encryption_certificate_id: new.encryption_certificate_id,
            latest_supported_tls_version: new.latest_supported_tls_version,
            notification_query_options: new.notification_query_options,
            notification_url_app_id: new.notification_url_app_id,
            created_at: now,
            reauthorization_required: false,
        };
        self.subscriptions
            .insert(subscription.id.clone(), subscription.clone());
        subscription
    }

    /// The resource of any stored subscription, alive or not, for fault matching.
    pub fn resource_of(&self, id: &str) -> Option<String> {
        self.subscriptions.get(id).map(|s| s.resource.clone())
    }

    /// A live subscription the caller may see.
    pub fn get(
        &self,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<&StoredSubscription, GraphError> {
        self.subscriptions
            .get(id)
            .filter(|s| s.visible_to(caller) && s.is_live(now))
            .ok_or_else(GraphError::subscription_not_found)
    }

    /// The caller's live subscriptions, oldest first.
    pub fn list(&self, caller: &Caller, now: DateTime<Utc>) -> Vec<StoredSubscription> {
        let mut mine: Vec<_> = self
            .subscriptions
            .values()
            .filter(|s| s.visible_to(caller) && s.is_live(now))
            .cloned()
            .collect();
        mine.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        mine
    }

    /// Checks a PATCH body against a live subscription.
    pub fn validate_update(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
        now: DateTime<Utc>,
        policy: CreatePolicy,
    ) -> Result<SubscriptionUpdate, GraphError> {
        let subscription = self.get(caller, id, now)?;
        let Some(object) = body.as_object() else {
            return Err(GraphError::unprocessable_payload());
        };
        reject_unknown_properties(object)?;
        let expiration = parse_expiration(object)?;
        if let Some(expiration) = expiration {
            let max_minutes =
                max_lifetime_minutes(&subscription.resource, subscription.include_resource_data)
                    .unwrap_or(OUTLOOK_MAX_MINUTES);
            check_expiration(expiration, now, max_minutes)?;
        }
        let notification_url = string_field(object, "notificationUrl")?;
        if let Some(url) = &notification_url {
            check_notification_url("NotificationUrl", url, policy)?;
        }
        Ok(SubscriptionUpdate {
            expiration,
            notification_url,
        })
    }

    /// Applies a validated update. A PATCH also answers a pending
    /// reauthorization challenge, as Graph documents.
    pub fn apply_update(
        &mut self,
        caller: &Caller,
        id: &str,
        update: SubscriptionUpdate,
        now: DateTime<Utc>,
    ) -> Result<StoredSubscription, GraphError> {
        let subscription = self
            .subscriptions
            .get_mut(id)
            .filter(|s| s.visible_to(caller) && s.is_live(now))
            .ok_or_else(GraphError::subscription_not_found)?;
        if let Some(expiration) = update.expiration {
            subscription.expiration = expiration;
        }
        if let Some(url) = update.notification_url {
            subscription.notification_url = url;
        }
        subscription.reauthorization_required = false;
        Ok(subscription.clone())
    }

    /// `POST /subscriptions/{id}/reauthorize`: clears a pending challenge without
    /// moving the expiry.
    pub fn reauthorize(
        &mut self,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), GraphError> {
        let subscription = self
            .subscriptions
            .get_mut(id)
            .filter(|s| s.visible_to(caller) && s.is_live(now))
            .ok_or_else(GraphError::subscription_not_found)?;
        subscription.reauthorization_required = false;
        Ok(())
    }

    /// Deletes a live subscription the caller owns.
    pub fn delete(
        &mut self,
        caller: &Caller,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), GraphError> {
        self.get(caller, id, now)?;
        self.subscriptions.remove(id);
        Ok(())
    }

    /// A live subscription by id, whoever owns it (for the simulator's own use).
    pub fn live(&self, id: &str, now: DateTime<Utc>) -> Option<StoredSubscription> {
        self.subscriptions
            .get(id)
            .filter(|s| s.is_live(now))
            .cloned()
    }

    /// Every live subscription, oldest first.
    pub fn all_live(&self, now: DateTime<Utc>) -> Vec<StoredSubscription> {
        let mut live: Vec<_> = self
            .subscriptions
            .values()
            .filter(|s| s.is_live(now))
            .cloned()
            .collect();
        live.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        live
    }

    /// Marks a subscription as waiting for reauthorization.
    pub fn require_reauthorization(&mut self, id: &str) {
        if let Some(subscription) = self.subscriptions.get_mut(id) {
            subscription.reauthorization_required = true;
        }
    }

    /// Removes a subscription on Graph's own initiative (`subscriptionRemoved`).
    pub fn remove(&mut self, id: &str) -> Option<StoredSubscription> {
        self.subscriptions.remove(id)
    }

    /// Forgets expired subscriptions and tokens so a long demo stays small.
    pub fn purge_expired(&mut self, now: DateTime<Utc>) {
        self.subscriptions.retain(|_, s| s.is_live(now));
        self.tokens.retain(|_, t| now < t.expires_at);
    }
}

/// Maximum lifetime Graph allows for `resource`, in minutes; `None` for a
/// resource Graph has no change notifications for.
///
/// From "Maximum length of subscription per resource type" in the subscription
/// resource docs; Outlook uses the live service's limit (see
/// [`OUTLOOK_MAX_MINUTES`]).
pub fn max_lifetime_minutes(resource: &str, include_resource_data: bool) -> Option<i64> {
    let path = resource
        .trim()
        .trim_start_matches('/')
        .split('?')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let first = segments.first().map(|s| entity_set(s)).unwrap_or_default();
    let last = segments.last().map(|s| entity_set(s)).unwrap_or_default();
    let has = |name: &str| segments.iter().any(|s| entity_set(s) == name);

    let documented = if matches!(first, "me" | "users" | "groups")
        && matches!(last, "messages" | "events" | "contacts")
        && !has("conversations")
        && !has("threads")
    {
        OUTLOOK_MAX_MINUTES
    } else if first == "groups" && (has("conversations") || has("threads")) {
        4_230
    } else if first == "security" {
        43_200
    } else if first == "communications" && has("callrecords") {
        4_230
    } else if has("presences") {
        60
    } else if matches!(first, "teams" | "chats" | "appcatalogs")
        || has("chats")
        || has("onlinemeetings")
        || has("chatmessages")
    {
        4_320
    } else if first == "drives" || has("drive") || (first == "sites" && has("lists")) {
        42_300
    } else if has("todo") {
        4_230
    } else if matches!(first, "users" | "groups" | "directory") && segments.len() <= 2 {
        41_760
    } else {
        return None;
    };
    Some(if include_resource_data {
        documented.min(RICH_NOTIFICATIONS_MAX_MINUTES)
    } else {
        documented
    })
}

/// `mailFolders('Inbox')` → `mailfolders`: the entity set a path segment names.
fn entity_set(segment: &str) -> &str {
    segment.split('(').next().unwrap_or(segment)
}

/// Graph keeps expiries with .NET's 100 ns tick precision.
pub fn truncate_to_ticks(at: DateTime<Utc>) -> DateTime<Utc> {
    let extra = at.timestamp_subsec_nanos() % 100;
    at - TimeDelta::nanoseconds(i64::from(extra))
}

fn reject_unknown_properties(object: &Map<String, Value>) -> Result<(), GraphError> {
    for key in object.keys() {
        if !key.starts_with("@odata.") && !SUBSCRIPTION_PROPERTIES.contains(&key.as_str()) {
            return Err(GraphError::bad_request(
                "BadRequest",
                format!(
                    "The property '{key}' does not exist on type 'microsoft.graph.subscription'. Make sure to only use property names that are defined by the type."
                ),
            ));
        }
    }
    Ok(())
}

fn string_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, GraphError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(GraphError::unprocessable_payload()),
    }
}

/// Graph requires an explicit offset; a bare local time fails to bind, and
/// Graph then blames the payload as a whole.
fn parse_expiration(object: &Map<String, Value>) -> Result<Option<DateTime<Utc>>, GraphError> {
    let Some(raw) = string_field(object, "expirationDateTime")? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(&raw)
        .map(|at| Some(truncate_to_ticks(at.with_timezone(&Utc))))
        .map_err(|_| GraphError::unprocessable_payload())
}

fn check_notification_url(
    property: &str,
    raw: &str,
    policy: CreatePolicy,
) -> Result<(), GraphError> {
    let invalid = || {
        GraphError::bad_request(
            "InvalidRequest",
            format!("Invalid {}='{raw}'.", property_phrase(property)),
        )
    };
    let url = Url::parse(raw).map_err(|_| invalid())?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if (policy.http_allowed)(&url) => Ok(()),
        scheme => Err(GraphError::bad_request(
            "InvalidRequest",
            format!("{property} scheme='{scheme}' is not supported."),
        )),
    }
}

fn property_phrase(property: &str) -> &'static str {
    if property == "NotificationUrl" {
        "notification url"
    } else {
        "lifecycle notification url"
    }
}

fn check_change_type(change_type: &str) -> Result<(), GraphError> {
    let parts: Vec<&str> = change_type.split(',').map(str::trim).collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| !matches!(*p, "created" | "updated" | "deleted"))
    {
        return Err(GraphError::bad_request(
            "InvalidRequest",
            format!(
                "Invalid changeType '{change_type}'. Supported values are created, updated, deleted, combined with commas."
            ),
        ));
    }
    Ok(())
}

fn check_client_state(client_state: Option<&str>) -> Result<(), GraphError> {
    if client_state.is_some_and(|s| s.chars().count() > CLIENT_STATE_MAX_CHARS) {
        return Err(GraphError::bad_request(
            "InvalidRequest",
            format!(
                "clientState exceeds the maximum length of {CLIENT_STATE_MAX_CHARS} characters."
            ),
        ));
    }
    Ok(())
}

fn check_expiration(
    expiration: DateTime<Utc>,
    now: DateTime<Utc>,
    max_minutes: i64,
) -> Result<(), GraphError> {
    if expiration <= now {
        return Err(GraphError::bad_request(
            "InvalidRequest",
            "Subscription expiration must be in the future.",
        ));
    }
    if expiration > now + TimeDelta::minutes(max_minutes) {
        return Err(GraphError::bad_request(
            "ExtensionError",
            format!("Subscription expiration can only be {max_minutes} minutes in the future."),
        ));
    }
    Ok(())
}

/// Whether `resource` names the signed-in user (`me/...`, `/me`), which Graph
/// only resolves for a delegated token.
pub fn names_me(resource: &str) -> bool {
    resource
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .is_some_and(|first| first.eq_ignore_ascii_case("me"))
}

/// The user a mailbox resource belongs to; notifications name it in their
/// resource paths. `me/...` has no id in the path, so one is invented.
fn mailbox_user_id(resource: &str) -> String {
    let path = resource.trim_start_matches('/');
    let first = path.split('/').next().unwrap_or_default();
    let lowered = first.to_lowercase();
    if lowered == "users" {
        if let Some(id) = path.split('/').nth(1).filter(|s| !s.is_empty()) {
            return id.to_owned();
        }
    } else if let Some(rest) = lowered.strip_prefix("users(") {
        // users('id') form: keep the original casing of the key.
        let key = &first[first.len() - rest.len()..];
        return key.trim_end_matches(')').trim_matches('\'').to_owned();
    }
    uuid::Uuid::new_v4().to_string()
}

/// A random opaque string of `len` alphanumerics.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy() -> CreatePolicy<'static> {
        CreatePolicy {
            http_allowed: &|_| true,
        }
    }

    fn body(resource: &str, minutes: i64) -> Value {
        json!({
            "changeType": "created,updated",
            "notificationUrl": "https://hooks.example.com/webhooks/microsoft",
            "resource": resource,
            "expirationDateTime": (now() + TimeDelta::minutes(minutes)).to_rfc3339(),
            "clientState": "secret"
        })
    }

    #[test]
    fn outlook_lifetimes_cover_the_path_forms() {
        for resource in [
            "me/messages",
            "/users/5d3c/messages",
            "users('alice@contoso.com')/events",
            "me/mailFolders('Inbox')/messages",
            "users/abc/mailFolders/inbox/messages?$select=subject",
            "me/contacts",
            "groups/g1/calendar/events",
        ] {
            assert_eq!(
                max_lifetime_minutes(resource, false),
                Some(OUTLOOK_MAX_MINUTES),
                "{resource}"
            );
            assert_eq!(
                max_lifetime_minutes(resource, true),
                Some(1_440),
                "{resource}"
            );
        }
        assert_eq!(
            max_lifetime_minutes("groups/g1/conversations", false),
            Some(4_230)
        );
        assert_eq!(max_lifetime_minutes("me/drive/root", false), Some(42_300));
        assert_eq!(max_lifetime_minutes("users", false), Some(41_760));
        assert_eq!(
            max_lifetime_minutes("communications/presences/u1", false),
            Some(60)
        );
        assert_eq!(max_lifetime_minutes("me/mesages/oops/x", false), None);
    }

    #[test]
    fn create_enforces_the_maximum_lifetime() {
        let state = GraphState::default();
        assert!(
            state
                .validate_create(&body("me/messages", OUTLOOK_MAX_MINUTES), now(), policy())
                .is_ok()
        );
        let err = state
            .validate_create(&body("me/messages", 10_080), now(), policy())
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.code, "ExtensionError");
        assert_eq!(
            err.message,
            "Subscription expiration can only be 10070 minutes in the future."
        );
        let past = state
            .validate_create(&body("me/messages", -1), now(), policy())
            .unwrap_err();
        assert_eq!(past.status, 400);
    }

    #[test]
    fn create_rejects_what_graph_rejects() {
        let state = GraphState::default();
        let mut missing = body("me/messages", 60);
        missing
            .as_object_mut()
            .unwrap()
            .remove("expirationDateTime");
        assert_eq!(
            state
                .validate_create(&missing, now(), policy())
                .unwrap_err()
                .message,
            "expirationDateTime is a required property for subscription creation."
        );

        let mut typo = body("me/messages", 60);
        typo["notificationURL"] = json!("https://x");
        assert_eq!(
            state
                .validate_create(&typo, now(), policy())
                .unwrap_err()
                .code,
            "BadRequest"
        );

        let mut long_state = body("me/messages", 60);
        long_state["clientState"] = json!("x".repeat(129));
        assert_eq!(
            state
                .validate_create(&long_state, now(), policy())
                .unwrap_err()
                .status,
            400
        );

        let mut http = body("me/messages", 60);
        http["notificationUrl"] = json!("http://hooks.example.com/x");
        assert!(state.validate_create(&http, now(), policy()).is_ok());
        let strict = CreatePolicy {
            http_allowed: &|_| false,
        };
        assert_eq!(
            state
                .validate_create(&http, now(), strict)
                .unwrap_err()
                .message,
            "NotificationUrl scheme='http' is not supported."
        );

        let mut local_time = body("me/messages", 60);
        local_time["expirationDateTime"] = json!("2026-03-01T12:00:00");
        assert_eq!(
            state
                .validate_create(&local_time, now(), policy())
                .unwrap_err()
                .code,
            "InvalidRequest"
        );
    }

    #[test]
    fn tokens_expire_and_subscriptions_are_private_to_their_app() {
        let mut state = GraphState::default();
        let token = state.issue_token("t1", "app1", true, now());
        let caller = state.authenticate(Some(&token), now()).unwrap();
        let later = now() + TimeDelta::seconds(ACCESS_TOKEN_LIFETIME_SECONDS);
        assert_eq!(
            state.authenticate(Some(&token), later).unwrap_err().message,
            "Access token has expired or is not yet valid."
        );
        assert_eq!(state.authenticate(None, now()).unwrap_err().status, 401);

        let new = state
            .validate_create(&body("users/u-42/messages", 60), now(), policy())
            .unwrap();
        let sub = state.insert(&caller, new, now());
        assert_eq!(sub.mailbox_user_id, "u-42");
        assert!(state.get(&caller, &sub.id, now()).is_ok());

        let other_token = state.issue_token("t1", "app2", true, now());
        let other = state.authenticate(Some(&other_token), now()).unwrap();
        assert_eq!(state.get(&other, &sub.id, now()).unwrap_err().status, 404);
        assert!(state.list(&other, now()).is_empty());

        let after_expiry = sub.expiration;
        assert_eq!(
            state.get(&caller, &sub.id, after_expiry).unwrap_err().code,
            "ResourceNotFound"
        );
    }

    #[test]
    fn expiry_keeps_graph_precision() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(truncate_to_ticks(at).timestamp_subsec_nanos(), 123_456_700);
    }
}
