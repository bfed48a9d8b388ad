//! Forced renewal, the bus's retry message, on `{prefix}.control.renew`.
//!
//! `{"tenant": "T", "provider_id": "P"}` renews that provider now and replies with its
//! RenewalResult; `{"tenant": "T"}` renews every provider of the tenant and replies
//! with the list. Anything else gets `{"error": {"code", "message"}}` and changes
//! nothing. On NATS, instances share the subject through a queue group, so each
//! request is answered once; at most [`MAX_IN_FLIGHT`] requests are worked on at a
//! time, and past that a request is refused at once with `unavailable` rather than
//! queued without bound. The in-process bus answers the same requests directly.
//!
//! This module turns requests into `FleetHandle` calls and nothing more: what a
//! renewal does is the supervisor's business.

use serde::{Deserialize, Serialize};
use subkeeper_actors::domain::{ProviderId, RenewalResult, TenantId};
use subkeeper_actors::fleet::{FleetError, FleetHandle};

/// Forced renewals worked on at once by one instance. Each holds a supervisor (or a
/// whole tenant's) for one provider call; the fleet-wide renewal concurrency still
/// bounds the provider calls themselves.
pub const MAX_IN_FLIGHT: usize = 16;

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
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
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
pub(crate) async fn answer(fleet: &FleetHandle, body: &[u8]) -> RenewReply {
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
    tracing::info!(tenant = %target.tenant, provider = %provider, "forced renewal requested over the bus");
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

/// Stops answering forced renewals when stopped or dropped; on NATS, requests
/// then go to the other instances of the queue group.
pub struct ControlHandle {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ControlHandle {
    /// A handle over the task that answers requests (`None`: answered in
    /// process, nothing to stop).
    pub(crate) fn new(task: Option<tokio::task::JoinHandle<()>>) -> Self {
        Self { task }
    }

    /// Stops answering.
    pub fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop();
    }
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
