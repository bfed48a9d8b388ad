//! Google notifications: Calendar channel messages (the `X-Goog-*` headers, no
//! body) and Gmail Pub/Sub pushes. Route and authenticate each, publish the
//! accepted ones (JetStream, or the outbox when JetStream does not acknowledge in
//! time). Nothing here touches the lifecycle.

use super::{
    Dropped, EncodeError, IntakeError, IntakePorts, WebhookEnvelope, encode, secrets_match,
    store_durably,
};
use crate::providers::google::PendingChannels;
use crate::telemetry::events::{WebhookValidated, WebhooksAccepted, WebhooksDropped};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{DeliveryKind, DeliveryOutcome, ProviderKind};
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{DurableMessage, Route};

/// Longest header value taken from a Calendar notification, in bytes (channel ids
/// are at most 64 characters, tokens 256; resource URIs are longer).
const MAX_HEADER: usize = 2048;

/// The `X-Goog-*` headers of one Calendar channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    /// `X-Goog-Channel-ID`: our channel id.
    pub channel_id: String,
    /// `X-Goog-Channel-Token`: the channel's secret (empty if absent).
    pub token: String,
    /// `X-Goog-Resource-ID`: Google's id of the watched resource.
    pub resource_id: String,
    /// `X-Goog-Resource-State`: `sync`, `exists` or `not_exists`.
    pub resource_state: String,
    /// `X-Goog-Message-Number`: increases per message on a channel (1 for sync).
    pub message_number: u64,
    /// `X-Goog-Resource-URI`, if sent.
    pub resource_uri: Option<String>,
    /// `X-Goog-Channel-Expiration`, if sent (human-readable date).
    pub channel_expiration: Option<String>,
}

impl ChannelMessage {
    /// Reads the headers through `get` (case-insensitive lookup); the error names
    /// what is missing or wrong.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, IntakeError> {
        let value = |name: &str| -> Result<Option<String>, IntakeError> {
            match get(name) {
                None => Ok(None),
                Some(v) if v.len() > MAX_HEADER => {
                    Err(IntakeError::Malformed(format!("{name} is too long")))
                }
                Some(v) => Ok(Some(v.trim().to_owned()).filter(|v| !v.is_empty())),
            }
        };
        let required = |name: &str| {
            value(name)?.ok_or_else(|| IntakeError::Malformed(format!("missing {name} header")))
        };
        let message_number = required("X-Goog-Message-Number")?;
        let message_number = message_number.parse().map_err(|_| {
            IntakeError::Malformed("X-Goog-Message-Number is not a number".to_owned())
        })?;
        let resource_state = required("X-Goog-Resource-State")?;
        if !matches!(resource_state.as_str(), "sync" | "exists" | "not_exists") {
            return Err(IntakeError::Malformed(format!(
                "X-Goog-Resource-State '{resource_state}' is not sync, exists or not_exists"
            )));
        }
        Ok(Self {
            channel_id: required("X-Goog-Channel-ID")?,
            token: value("X-Goog-Channel-Token")?.unwrap_or_default(),
            resource_id: required("X-Goog-Resource-ID")?,
            resource_state,
            message_number,
            resource_uri: value("X-Goog-Resource-URI")?,
            channel_expiration: value("X-Goog-Channel-Expiration")?,
        })
    }

    /// `Nats-Msg-Id`: channel id and message number, so a message Google sends
    /// again is stored once.
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.channel_id, self.message_number)
    }

    /// The notification as published in the envelope.
    fn to_json(&self) -> Value {
        json!({
            "channelId": self.channel_id,
            "resourceId": self.resource_id,
            "resourceState": self.resource_state,
            "messageNumber": self.message_number,
            "resourceUri": self.resource_uri,
            "channelExpiration": self.channel_expiration,
        })
    }
}

/// What became of a Calendar channel message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOutcome {
    /// `sync`: the channel is confirmed; nothing published.
    Synced,
    /// Published to JetStream.
    Published,
    /// Stored in the outbox for the relay.
    Deferred,
    /// Dropped, with why.
    Dropped(Dropped),
}

/// Why a Gmail push was refused before its body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAuth {
    /// No `token` (answered 401).
    Missing,
    /// A token that is not the configured secret, or no secret configured
    /// (answered 403).
    Wrong,
}

/// What a Gmail push did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// Providers it was published for.
    pub published: usize,
    /// Providers it went to the outbox for.
    pub deferred: usize,
    /// True when no Gmail provider watches the mailbox.
    pub unrouted: bool,
}

/// A Pub/Sub push request body.
#[derive(Deserialize)]
struct PushBody {
    message: PushMessage,
    #[serde(default)]
    subscription: Option<String>,
}

/// The message inside a push.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushMessage {
    /// Base64 of Gmail's JSON.
    data: String,
    /// Pub/Sub's id of the message; a redelivery carries the same one.
    message_id: String,
    #[serde(default)]
    publish_time: Option<String>,
}

/// What Gmail publishes: which mailbox changed, up to which history id.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailChange {
    email_address: String,
    history_id: Value,
}

/// Gmail's historyId as a number: Gmail sends an unsigned integer, as a JSON
/// number or a string of decimal digits. Anything else is not one (downstream
/// calls `history.list` from it).
fn history_id(raw: &Value) -> Option<u64> {
    match raw {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Google Calendar and Gmail intake.
#[derive(Clone)]
pub struct GoogleIntake {
    ports: IntakePorts,
    clock: SharedClock,
    /// How long to wait for JetStream's ack before falling back to the outbox.
    publish_timeout: Duration,
    /// The secret Pub/Sub pushes must carry; `None` refuses every push.
    push_secret: Option<Arc<str>>,
    /// Channels being opened, for messages that arrive before their row.
    pending: Arc<PendingChannels>,
}

impl GoogleIntake {
    /// Intake over the given adapters.
    pub fn new(
        ports: IntakePorts,
        clock: SharedClock,
        publish_timeout: Duration,
        push_secret: Option<String>,
        pending: Arc<PendingChannels>,
    ) -> Self {
        Self {
            ports,
            clock,
            publish_timeout,
            push_secret: push_secret.map(Arc::from),
            pending,
        }
    }

    /// Where a channel's messages go: its row, or, before the row is written,
    /// the channel the Calendar adapter is opening (Google sends `sync` before
    /// `events.watch` answers).
    async fn channel_route(&self, channel_id: &str) -> Result<Option<Route>, IntakeError> {
        let route = self
            .ports
            .routes
            .routes(&[channel_id])
            .await
            .map(|mut found| found.remove(channel_id))
            .map_err(|e| {
                tracing::error!(error = %e, "cannot route Google notification: store unavailable");
                IntakeError::Unavailable
            })?;
        Ok(route.or_else(|| {
            self.pending.get(channel_id).map(|p| {
                Route::in_creation(p.provider, p.tenant, ProviderKind::GoogleCalendar, p.token)
            })
        }))
    }

    /// Takes in one Calendar channel message.
    ///
    /// Routing reads the store on every message rather than a cache: a rotated-out
    /// channel must stop being accepted the moment it is stopped, and Calendar
    /// messages are few. A channel the store does not know yet is routed by the
    /// adapter's pending open.
    pub async fn channel_message(
        &self,
        message: &ChannelMessage,
    ) -> Result<ChannelOutcome, IntakeError> {
        let route = self.channel_route(&message.channel_id).await?;
        let verdict = match &route {
            Some(r) if r.kind != ProviderKind::GoogleCalendar => Err(Dropped::UnknownSubscription),
            None => Err(Dropped::UnknownSubscription),
            Some(r) if !secrets_match(&message.token, &r.client_state) => {
                Err(Dropped::BadClientState)
            }
            Some(r) if r.is_retired() => Err(Dropped::Retired),
            Some(route) => Ok(route.clone()),
        };
        let route = match verdict {
            Ok(route) => route,
            Err(why) => {
                WebhooksDropped {
                    kind: "google",
                    reason: why,
                    items: 1,
                    ids: std::slice::from_ref(&message.channel_id),
                }
                .emit();
                // Ours but refused: the provider's log says so.
                if let (Some(recorder), Some(route)) = (&self.ports.deliveries, &route)
                    && why != Dropped::UnknownSubscription
                {
                    recorder.refused(vec![recorder.record(
                        route,
                        DeliveryKind::GoogleMessage,
                        DeliveryOutcome::Rejected,
                        super::log::reason_of(why),
                        Some(message.message_id()),
                        &message.to_json(),
                    )]);
                }
                return Ok(ChannelOutcome::Dropped(why));
            }
        };
        if message.resource_state == "sync" {
            // Google's handshake: the channel works. Counted with Graph's.
            WebhookValidated { kind: "google" }.emit();
            tracing::info!(tenant = %route.tenant, provider = %route.provider, channel = %message.channel_id, "Google channel confirmed (sync)");
            return Ok(ChannelOutcome::Synced);
        }
        let envelope = WebhookEnvelope {
            tenant: route.tenant.clone(),
            provider_id: route.provider,
            kind: route.kind,
            subscription_id: message.channel_id.clone(),
            received_at: self.clock.now(),
            notification: message.to_json(),
        };
        let subject =
            self.ports
                .publisher
                .webhook_subject(route.kind, &route.tenant, route.provider);
        let stored = store_durably(
            &self.ports,
            vec![DurableMessage {
                subject,
                msg_id: message.message_id(),
                payload: encode("webhook_envelope", &envelope)?,
            }],
            self.publish_timeout,
        )
        .await?;
        WebhooksAccepted {
            kind: "google",
            items: 1,
        }
        .emit();
        Ok(if stored.published == 1 {
            ChannelOutcome::Published
        } else {
            ChannelOutcome::Deferred
        })
    }

    /// Checks a push's `token` against the configured secret in constant time.
    pub fn authenticate_push(&self, token: Option<&str>) -> Result<(), PushAuth> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(PushAuth::Missing);
        };
        match &self.push_secret {
            Some(secret) if secrets_match(token, secret) => Ok(()),
            _ => Err(PushAuth::Wrong),
        }
    }

    /// Takes in one (already authenticated) Pub/Sub push from Gmail and publishes
    /// it for every Gmail provider watching the mailbox.
    pub async fn gmail_push(&self, body: &[u8]) -> Result<PushOutcome, IntakeError> {
        let push: PushBody = serde_json::from_slice(body).map_err(|e| {
            IntakeError::Malformed(format!("body is not a Pub/Sub push message: {e}"))
        })?;
        if push.message.message_id.is_empty() {
            return Err(IntakeError::Malformed("message.messageId is empty".into()));
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(push.message.data.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(push.message.data.trim()))
            .map_err(|_| IntakeError::Malformed("message.data is not base64".into()))?;
        let change: GmailChange = serde_json::from_slice(&data).map_err(|_| {
            IntakeError::Malformed("message.data is not Gmail's {emailAddress, historyId}".into())
        })?;
        if change.email_address.trim().is_empty() {
            return Err(IntakeError::Malformed("emailAddress is empty".into()));
        }
        // No mailbox address holds a NUL (nor can Postgres compare one).
        if change.email_address.contains('\0') {
            return Err(IntakeError::Malformed(
                "emailAddress must not contain NUL characters".into(),
            ));
        }
        if history_id(&change.history_id).is_none() {
            return Err(IntakeError::Malformed(
                "historyId must be a whole number (a JSON number or a string of digits)".into(),
            ));
        }
        let routes = self
            .ports
            .routes
            .mailbox_routes(change.email_address.trim())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot route Gmail push: store unavailable");
                IntakeError::Unavailable
            })?;
        if routes.is_empty() {
            WebhooksDropped {
                kind: "gmail",
                reason: Dropped::UnknownSubscription,
                items: 1,
                ids: std::slice::from_ref(&push.message.message_id),
            }
            .emit();
            return Ok(PushOutcome {
                unrouted: true,
                ..PushOutcome::default()
            });
        }
        let received_at = self.clock.now();
        let notification = json!({
            "emailAddress": change.email_address,
            "historyId": change.history_id,
            "messageId": push.message.message_id,
            "publishTime": push.message.publish_time,
            "subscription": push.subscription,
        });
        let messages = routes
            .into_iter()
            .map(|r| {
                let subject = self.ports.publisher.webhook_subject(
                    ProviderKind::Gmail,
                    &r.tenant,
                    r.provider,
                );
                // Deduplication is per stream, not per subject: a mailbox two
                // tenants watch gets one message each.
                let msg_id = format!("{}:{}", push.message.message_id, r.provider);
                let envelope = WebhookEnvelope {
                    tenant: r.tenant,
                    provider_id: r.provider,
                    kind: ProviderKind::Gmail,
                    subscription_id: r.subscription_id,
                    received_at,
                    notification: notification.clone(),
                };
                Ok(DurableMessage {
                    subject,
                    msg_id,
                    payload: encode("webhook_envelope", &envelope)?,
                })
            })
            .collect::<Result<Vec<_>, EncodeError>>()?;
        let stored = store_durably(&self.ports, messages, self.publish_timeout).await?;
        WebhooksAccepted {
            kind: "gmail",
            items: 1,
        }
        .emit();
        Ok(PushOutcome {
            published: stored.published,
            deferred: stored.deferred,
            unrouted: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(headers: &[(&str, &str)]) -> Result<ChannelMessage, IntakeError> {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_lowercase(), (*v).to_owned()))
            .collect();
        ChannelMessage::from_headers(|name| map.get(&name.to_lowercase()).map(String::as_str))
    }

    #[test]
    fn channel_headers_are_required_and_checked() {
        let full = [
            ("X-Goog-Channel-ID", "c1"),
            ("X-Goog-Channel-Token", "t"),
            ("X-Goog-Resource-ID", "r1"),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Message-Number", "7"),
        ];
        let message = parse(&full).unwrap();
        assert_eq!(message.message_id(), "c1:7");
        for missing in 0..full.len() {
            if full[missing].0 == "X-Goog-Channel-Token" {
                continue;
            }
            let partial: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, h)| *h)
                .collect();
            assert!(parse(&partial).is_err(), "without {}", full[missing].0);
        }
        let mut bad_state = full;
        bad_state[3].1 = "changed";
        assert!(parse(&bad_state).is_err());
        let mut bad_number = full;
        bad_number[4].1 = "seven";
        assert!(parse(&bad_number).is_err());
    }

    #[test]
    fn a_history_id_is_a_whole_number_or_a_string_of_digits() {
        for (raw, want) in [
            (json!(12345), Some(12345)),
            (json!("12345"), Some(12345)),
            (json!("0"), Some(0)),
            (json!(u64::MAX), Some(u64::MAX)),
        ] {
            assert_eq!(history_id(&raw), want, "{raw}");
        }
        for raw in [
            json!("abc"),
            json!(""),
            json!("-5"),
            json!("+5"),
            json!(" 5"),
            json!(-5),
            json!(1.5),
            json!("1.5"),
            json!("99999999999999999999999"),
            json!({"id": 1}),
            json!([1]),
            json!(null),
            json!(true),
        ] {
            assert_eq!(history_id(&raw), None, "{raw}");
        }
    }
}
