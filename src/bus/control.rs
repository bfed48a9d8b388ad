//! Forced renewal over NATS request/reply on `{prefix}.control.renew`.
//!
//! `{"tenant": "T", "provider_id": "P"}` renews that provider now and replies with its
//! RenewalResult; `{"tenant": "T"}` renews every provider of the tenant and replies
//! with the list. Anything else gets `{"error": {"code", "message"}}` and changes
//! nothing. Instances share the subject through a queue group, so each request is
//! answered once. At most [`MAX_IN_FLIGHT`] requests are worked on at a time; past
//! that a request is refused at once with `unavailable` rather than queued without
//! bound.
//!
//! This module turns NATS messages into `FleetHandle` calls and nothing more: what a
//! renewal does is the supervisor's business.

use super::{BusError, Topology};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::{ProviderId, RenewalResult, TenantId};
use subkeeper_actors::fleet::{FleetError, FleetHandle};
use tokio::sync::Semaphore;

/// Forced renewals worked on at once by one instance. Each holds a supervisor (or a
/// whole tenant's) for one provider call; the fleet-wide renewal concurrency still
/// bounds the provider calls themselves.
pub const MAX_IN_FLIGHT: usize = 16;

/// Queue group shared by every instance on the control subject.
const QUEUE_GROUP: &str = "subkeeper";

/// Largest accepted request body, in bytes; a real request is under 200.
const MAX_REQUEST_BYTES: usize = 4096;

/// A forced-renewal request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The tenant the caller speaks for.
    pub tenant: String,
    /// One provider of that tenant; every provider of the tenant when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
}

/// A reply as a caller reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RenewReply {
    /// The request was refused; nothing changed.
    Error {
        /// Why.
        error: ReplyError,
    },
    /// The result of renewing one provider.
    One(Box<RenewalResult>),
    /// The results of renewing every provider of a tenant.
    Many(Vec<RenewalResult>),
}

impl RenewReply {
    /// The renewal results in the reply (none for an error).
    pub fn results(&self) -> Vec<&RenewalResult> {
        match self {
            Self::Error { .. } => Vec::new(),
            Self::One(result) => vec![result.as_ref()],
            Self::Many(results) => results.iter().collect(),
        }
    }
}

/// The body of an error reply: the same shape as the admin API's errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// `bad_request`, `not_found` or `unavailable`.
    pub code: String,
    /// What was wrong, for a human.
    pub message: String,
}

impl ReplyError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }
}

impl From<FleetError> for ReplyError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::UnknownProvider { .. } | FleetError::NoProviders(_) => {
                Self::new("not_found", e.to_string())
            }
            FleetError::SupervisorGone | FleetError::FleetGone => {
                Self::new("unavailable", e.to_string())
            }
        }
    }
}

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tenant: TenantId,
    provider: Option<ProviderId>,
}

/// Parses a request body, with a message that says what is wrong.
fn parse(body: &[u8]) -> Result<Target, ReplyError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ReplyError::bad_request(format!(
            "request is {} bytes; the limit is {MAX_REQUEST_BYTES}",
            body.len()
        )));
    }
    let request: RenewRequest = serde_json::from_slice(body).map_err(|e| {
        ReplyError::bad_request(format!(
            "expected {{\"tenant\": \"...\", \"provider_id\"?: \"...\"}}: {e}"
        ))
    })?;
    let tenant = TenantId::parse(&request.tenant)
        .map_err(|e| ReplyError::bad_request(format!("tenant {:?}: {e}", request.tenant)))?;
    let provider = match request.provider_id {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|_| {
            ReplyError::bad_request(format!("provider_id {raw:?} is not a provider id (a UUID)"))
        })?),
    };
    Ok(Target { tenant, provider })
}

/// Answers one request body.
async fn answer(fleet: &FleetHandle, body: &[u8]) -> RenewReply {
    let target = match parse(body) {
        Ok(target) => target,
        Err(error) => {
            tracing::info!(reason = %error.message, "forced renewal request refused");
            return RenewReply::Error { error };
        }
    };
    let provider = target
        .provider
        .map_or_else(|| "all".to_owned(), |p| p.to_string());
    tracing::info!(tenant = %target.tenant, provider = %provider, "forced renewal requested over NATS");
    let reply = match target.provider {
        Some(provider) => fleet
            .renew(target.tenant.clone(), provider)
            .await
            .map(|r| RenewReply::One(Box::new(r))),
        None => fleet
            .renew_all(target.tenant.clone(), None)
            .await
            .map(RenewReply::Many),
    };
    reply.unwrap_or_else(|e| {
        tracing::info!(tenant = %target.tenant, error = %e, "forced renewal refused");
        RenewReply::Error { error: e.into() }
    })
}

/// Sends `reply` to `to`; a reply that cannot be sent is logged (the requester times
/// out and may ask again).
async fn respond(client: &async_nats::Client, to: async_nats::Subject, reply: &RenewReply) {
    let body = match serde_json::to_vec(reply) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a control reply");
            return;
        }
    };
    if let Err(e) = client.publish(to, body.into()).await {
        tracing::warn!(error = %e, "cannot send a control reply");
    }
}

/// Stops the control subscription when stopped or dropped; requests then go to the
/// other instances of the queue group.
pub struct ControlHandle {
    task: tokio::task::JoinHandle<()>,
}

impl ControlHandle {
    /// Stops answering.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to the control subject and answers requests until stopped.
pub(super) async fn serve(
    client: async_nats::Client,
    topology: &Topology,
    fleet: FleetHandle,
) -> Result<ControlHandle, BusError> {
    let subject = topology.control_renew_subject();
    let failed = |e: &dyn std::fmt::Display| BusError::Subscribe {
        subject: subject.clone(),
        reason: e.to_string(),
    };
    let mut requests = client
        .queue_subscribe(subject.clone(), QUEUE_GROUP.to_owned())
        .await
        .map_err(|e| failed(&e))?;
    // The server has the subscription once it answered a PING sent after it: from
    // here on a request finds a responder.
    client.flush().await.map_err(|e| failed(&e))?;
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let task = actix_rt::spawn(async move {
        while let Some(message) = requests.next().await {
            let Some(reply_to) = message.reply.clone() else {
                tracing::warn!(
                    subject = %message.subject,
                    "control message without a reply subject ignored; send it as a request"
                );
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(
                    limit = MAX_IN_FLIGHT,
                    "forced renewal refused: too many in flight"
                );
                let error = ReplyError::new(
                    "unavailable",
                    format!(
                        "{MAX_IN_FLIGHT} forced renewals are already in flight on this instance; retry shortly"
                    ),
                );
                respond(&client, reply_to, &RenewReply::Error { error }).await;
                continue;
            };
            let (client, fleet) = (client.clone(), fleet.clone());
            actix_rt::spawn(async move {
                let reply = answer(&fleet, &message.payload).await;
                respond(&client, reply_to, &reply).await;
                drop(permit);
            });
        }
    });
    tracing::info!(subject = %subject, queue_group = QUEUE_GROUP, "answering forced renewals");
    Ok(ControlHandle { task })
}

/// Sends `request` on the control subject and returns the reply, parsed as JSON.
pub(super) async fn request(
    client: &async_nats::Client,
    topology: &Topology,
    request: &RenewRequest,
    timeout: Duration,
) -> Result<serde_json::Value, BusError> {
    let subject = topology.control_renew_subject();
    let body = serde_json::to_vec(request).map_err(|e| BusError::Request {
        subject: subject.clone(),
        reason: e.to_string(),
    })?;
    let reply = client
        .send_request(
            subject.clone(),
            async_nats::Request::new()
                .payload(body.into())
                .timeout(Some(timeout)),
        )
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => BusError::NoResponders {
                subject: subject.clone(),
            },
            async_nats::RequestErrorKind::TimedOut => BusError::TimedOut {
                subject: subject.clone(),
                seconds: timeout.as_secs(),
            },
            _ => BusError::Request {
                subject: subject.clone(),
                reason: e.to_string(),
            },
        })?;
    serde_json::from_slice(&reply.payload).map_err(|e| BusError::Request {
        subject,
        reason: format!("the reply is not JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> ReplyError {
        parse(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn a_request_names_a_tenant_and_maybe_one_provider() {
        let p = ProviderId::new();
        assert_eq!(
            parse(format!(r#"{{"tenant": "acme", "provider_id": "{p}"}}"#).as_bytes()).unwrap(),
            Target {
                tenant: TenantId::parse("acme").unwrap(),
                provider: Some(p)
            }
        );
        assert_eq!(parse(br#"{"tenant": "acme"}"#).unwrap().provider, None);
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        for (body, says) in [
            ("renew acme please", "expected"),
            ("{}", "missing field `tenant`"),
            (r#"{"tenant": "a.b"}"#, "tenant id must be"),
            (
                r#"{"tenant": "acme", "provider_id": "p1"}"#,
                "not a provider id",
            ),
            (r#"{"tenant": 7}"#, "invalid type"),
        ] {
            let e = refused(body);
            assert_eq!(e.code, "bad_request", "{body}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
        // A misspelt field must not silently widen the request to the whole tenant.
        let e = refused(r#"{"tenant": "acme", "provider": "x"}"#);
        assert!(
            e.message.contains("unknown field `provider`"),
            "{}",
            e.message
        );
        assert_eq!(refused(&" ".repeat(5000)).code, "bad_request");
    }

    #[test]
    fn error_replies_have_the_admin_api_shape() {
        let reply = RenewReply::Error {
            error: ReplyError::from(FleetError::NoProviders("acme".into())),
        };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            serde_json::json!({"error": {"code": "not_found", "message": "tenant acme has no active provider"}})
        );
        let back: RenewReply =
            serde_json::from_value(serde_json::to_value(&reply).unwrap()).unwrap();
        assert_eq!(back, reply);
    }
}
