//! Graph's JSON on the wire: subscription resources, error bodies, change and
//! lifecycle notification collections, and Graph's date-time format.
//!
//! Shapes only, checked by the tests against the vendor JSON Schemas in
//! the repository's `tests/schemas/`. No state and no I/O.

use crate::graph::model::{GraphError, StoredSubscription};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `@odata.context` of a single subscription. Real Graph names its own host here;
/// clients must not depend on it, so the simulator answers the same string.
pub const SUBSCRIPTION_ENTITY_CONTEXT: &str =
    "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity";

/// `@odata.context` of the subscription list.
pub const SUBSCRIPTION_LIST_CONTEXT: &str =
    "https://graph.microsoft.com/v1.0/$metadata#subscriptions";

/// Content type Graph answers JSON with.
pub const GRAPH_JSON_CONTENT_TYPE: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// The kind of change a change notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeType {
    /// An item was created.
    Created,
    /// An item was updated.
    Updated,
    /// An item was deleted.
    Deleted,
}

impl ChangeType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

/// A lifecycle event Graph sends to `lifecycleNotificationUrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleEvent {
    /// The app must renew or reauthorize or notifications stop.
    ReauthorizationRequired,
    /// Graph dropped the subscription; the app must create a new one.
    SubscriptionRemoved,
    /// Some notifications could not be delivered; the app must resync.
    Missed,
}

impl LifecycleEvent {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReauthorizationRequired => "reauthorizationRequired",
            Self::SubscriptionRemoved => "subscriptionRemoved",
            Self::Missed => "missed",
        }
    }
}

/// Graph's date-time format: UTC with seven fractional digits, e.g.
/// `2026-11-28T07:00:00.0000000Z`.
pub fn graph_datetime(at: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        at.format("%Y-%m-%dT%H:%M:%S"),
        at.timestamp_subsec_nanos() / 100
    )
}

/// The subscription resource as Graph returns it (GET, POST, PATCH).
pub fn subscription_json(subscription: &StoredSubscription, with_context: bool) -> Value {
    let mut body = json!({
        "id": subscription.id,
        "resource": subscription.resource,
        "applicationId": subscription.application_id,
        "changeType": subscription.change_type,
        "clientState": subscription.client_state,
        "notificationUrl": subscription.notification_url,
        "notificationQueryOptions": subscription.notification_query_options,
        "lifecycleNotificationUrl": subscription.lifecycle_notification_url,
        "expirationDateTime": graph_datetime(subscription.expiration),
        "creatorId": subscription.creator_id,
        "includeResourceData": subscription.include_resource_data,
        "latestSupportedTlsVersion": subscription.latest_supported_tls_version,
        "encryptionCertificate": subscription.encryption_certificate,
        "encryptionCertificateId": subscription.encryption_certificate_id,
        "notificationUrlAppId": subscription.notification_url_app_id,
        "notificationContentType": Value::Null,
    });
    if with_context && let Some(object) = body.as_object_mut() {
        object.insert(
            "@odata.context".to_owned(),
            Value::String(SUBSCRIPTION_ENTITY_CONTEXT.to_owned()),
        );
    }
    body
}

/// The list response.
pub fn subscription_list_json(subscriptions: &[StoredSubscription]) -> Value {
    json!({
        "@odata.context": SUBSCRIPTION_LIST_CONTEXT,
        "value": subscriptions
            .iter()
            .map(|s| subscription_json(s, false))
            .collect::<Vec<_>>(),
    })
}

/// Graph's error body. `date` is the provider time without fraction or zone, as
/// Graph writes it in `innerError`.
pub fn graph_error_json(
    error: &GraphError,
    request_id: &str,
    client_request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "error": {
            "code": error.code,
            "message": error.message,
            "innerError": {
                "date": now.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }
        }
    })
}

/// A change notification collection with one item about a new random message,
/// event or contact in the subscription's mailbox.
///
/// `item_id` is fixed by the caller so redeliveries carry the same item.
pub fn change_notification_json(
    subscription: &StoredSubscription,
    change_type: ChangeType,
    item_id: &str,
) -> Value {
    let (odata_type, collection) = item_kind(&subscription.resource);
    let resource = format!(
        "Users/{}/{collection}/{item_id}",
        subscription.mailbox_user_id
    );
    json!({
        "value": [{
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": graph_datetime(subscription.expiration),
            "changeType": change_type.as_str(),
            "resource": resource,
            "resourceData": {
                "@odata.type": odata_type,
                "@odata.id": resource,
                "@odata.etag": format!("W/\"{}\"", item_id.get(..16).unwrap_or(item_id)),
                "id": item_id,
            },
            "clientState": subscription.client_state,
            "tenantId": subscription.tenant,
        }]
    })
}

/// A lifecycle notification collection.
pub fn lifecycle_notification_json(
    subscription: &StoredSubscription,
    event: LifecycleEvent,
) -> Value {
    json!({
        "value": [{
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": graph_datetime(subscription.expiration),
            "tenantId": subscription.tenant,
            "clientState": subscription.client_state,
            "lifecycleEvent": event.as_str(),
        }]
    })
}

/// `@odata.type` and resource collection name for items of `resource`.
fn item_kind(resource: &str) -> (&'static str, &'static str) {
    let lowered = resource.to_lowercase();
    let path = lowered.split('?').next().unwrap_or_default();
    if path.ends_with("events") {
        ("#Microsoft.Graph.Event", "Events")
    } else if path.ends_with("contacts") {
        ("#Microsoft.Graph.Contact", "Contacts")
    } else {
        ("#Microsoft.Graph.Message", "Messages")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_has_seven_fraction_digits() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T07:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(graph_datetime(at), "2026-11-28T07:00:00.0000000Z");
        let at = DateTime::parse_from_rfc3339("2016-11-20T18:23:45.9356913Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(graph_datetime(at), "2016-11-20T18:23:45.9356913Z");
    }
}
