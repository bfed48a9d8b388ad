//! Fault injection: rules that make the simulated provider fail on purpose, the
//! way the real one does on a bad day (throttling, outages, hung requests, expired
//! tokens, revoked consent).
//!
//! Owns the rules and their countdowns. It decides *whether* a request fails and
//! how; the provider handlers turn the chosen [`Fault`] into the provider's own
//! wire format. Faults are consulted before normal handling.

use crate::journal::{Operation, lock};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Which requests a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultOperation {
    /// The token endpoint.
    Token,
    /// Subscription create.
    Create,
    /// Subscription renew (PATCH).
    Renew,
    /// Subscription delete.
    Delete,
    /// Subscription read by id.
    Get,
    /// Subscription list.
    List,
    /// Subscription reauthorize action.
    Reauthorize,
    /// Change feed reads: Graph delta, Calendar `events.list`, Gmail
    /// `users.history.list`.
    ChangeFeed,
    /// Every operation the fault kind makes sense for.
    #[default]
    Any,
}

impl FaultOperation {
    fn matches(self, operation: Operation) -> bool {
        match self {
            Self::Any => true,
            Self::Token => operation == Operation::Token,
            Self::Create => operation == Operation::Create,
            Self::Renew => operation == Operation::Renew,
            Self::Delete => operation == Operation::Delete,
            Self::Get => operation == Operation::Get,
            Self::List => operation == Operation::List,
            Self::Reauthorize => operation == Operation::Reauthorize,
            Self::ChangeFeed => operation == Operation::ChangeFeed,
        }
    }
}

/// How a matching request fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `status` with the provider's error body carrying `code` (Graph:
    /// `error.code`; token endpoint: `error`), plus `Retry-After` when given.
    Status {
        /// HTTP status, 400..=599.
        status: u16,
        /// Provider error code, e.g. `TooManyRequests`, `ServiceUnavailable`.
        code: String,
        /// Seconds for the `Retry-After` header; no header when absent.
        #[serde(default)]
        retry_after_seconds: Option<u64>,
    },
    /// Hold the request for `seconds` of wall-clock time, then answer 504. A
    /// client with a shorter timeout sees its own timeout instead.
    Timeout {
        /// How long to hold the request, in real seconds (client timeouts are
        /// real time, whatever the simulated clock says).
        seconds: u64,
    },
    /// The request is carried out, then its answer is held for `seconds` of wall
    /// time and is a 504: the provider created what was asked, the client never
    /// learns it (the lost-answer case that leaves orphans behind). Creates only:
    /// Graph `POST /subscriptions` and Calendar `events.watch` commit first;
    /// Gmail `users.watch` acts like `Timeout`. The rule is used up by the
    /// request it matches even when that request fails validation (then the
    /// client gets the real error, not a held 504).
    LostAnswer {
        /// How long to hold the answer, in real seconds.
        seconds: u64,
    },
    /// Graph calls answer 401 `InvalidAuthenticationToken` as if the access token
    /// had expired. Does not apply to the token endpoint.
    ExpiredToken,
    /// The token endpoint answers 400 `invalid_grant` (consent revoked / refresh
    /// token no longer valid). Applies to the token endpoint only.
    InvalidGrant,
}

impl Fault {
    /// Whether this kind of fault can happen on `operation` at all.
    fn applies_to(&self, operation: Operation) -> bool {
        match self {
            Self::Status { .. } | Self::Timeout { .. } => true,
            Self::LostAnswer { .. } => operation == Operation::Create,
            Self::ExpiredToken => operation != Operation::Token,
            Self::InvalidGrant => operation == Operation::Token,
        }
    }
}

/// A fault and the requests it hits. Every `Some` filter must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Only requests for this tenant (token endpoint: path tenant; Graph: the
    /// access token's tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only requests whose subscription resource contains this text
    /// (case-insensitive, as Graph resource paths are).
    #[serde(default)]
    pub resource_contains: Option<String>,
    /// Only requests for this subscription id.
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// Only this operation; `any` by default.
    #[serde(default)]
    pub operation: FaultOperation,
    /// What happens to a matching request.
    pub fault: Fault,
    /// How many matching requests fail before the rule disappears; `None` keeps
    /// it until the faults are cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule hitting every request of `operation`, until cleared.
    pub fn new(operation: FaultOperation, fault: Fault) -> Self {
        Self {
            tenant: None,
            resource_contains: None,
            subscription_id: None,
            operation,
            fault,
            times: None,
        }
    }

    /// Limits the rule to `times` matching requests.
    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    /// Limits the rule to one tenant.
    pub fn for_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Limits the rule to resources containing `text`.
    pub fn for_resource(mut self, text: impl Into<String>) -> Self {
        self.resource_contains = Some(text.into());
        self
    }

    /// Limits the rule to one subscription.
    pub fn for_subscription(mut self, id: impl Into<String>) -> Self {
        self.subscription_id = Some(id.into());
        self
    }

    /// Rejects rules the simulator could not act on.
    pub fn validate(&self) -> Result<(), String> {
        if let Fault::Status { status, .. } = &self.fault
            && !(400..=599).contains(status)
        {
            return Err(format!(
                "fault status must be an error status (400..=599), got {status}"
            ));
        }
        Ok(())
    }

    fn matches(&self, target: &FaultTarget<'_>) -> bool {
        if !self.operation.matches(target.operation) || !self.fault.applies_to(target.operation) {
            return false;
        }
        if let Some(tenant) = &self.tenant
            && target.tenant != Some(tenant.as_str())
        {
            return false;
        }
        if let Some(text) = &self.resource_contains {
            let hit = target
                .resource
                .is_some_and(|r| r.to_lowercase().contains(&text.to_lowercase()));
            if !hit {
                return false;
            }
        }
        if let Some(id) = &self.subscription_id
            && target.subscription_id != Some(id.as_str())
        {
            return false;
        }
        true
    }
}

/// What a request is about, for matching rules.
#[derive(Debug, Clone, Copy)]
pub struct FaultTarget<'a> {
    /// The operation requested.
    pub operation: Operation,
    /// The tenant, when known.
    pub tenant: Option<&'a str>,
    /// The subscription resource, when known.
    pub resource: Option<&'a str>,
    /// The subscription id, when there is one.
    pub subscription_id: Option<&'a str>,
}

/// The active rules, oldest first.
#[derive(Debug, Default)]
pub struct FaultBook {
    /// The first matching rule wins, so an older rule shadows a newer one.
    rules: Mutex<Vec<FaultRule>>,
}

impl FaultBook {
    /// Adds a rule (a rule with `times: Some(0)` would never fire and is dropped).
    pub fn add(&self, rule: FaultRule) {
        if rule.times == Some(0) {
            return;
        }
        lock(&self.rules).push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// The active rules, `times` showing what is left of each countdown.
    pub fn rules(&self) -> Vec<FaultRule> {
        lock(&self.rules).clone()
    }

    /// The fault for this request, if any rule matches; counts the rule down and
    /// retires it when its countdown reaches zero.
    pub fn take(&self, target: &FaultTarget<'_>) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let index = rules.iter().position(|rule| rule.matches(target))?;
        let fault = rules[index].fault.clone();
        if let Some(left) = rules[index].times.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(operation: Operation) -> FaultTarget<'static> {
        FaultTarget {
            operation,
            tenant: Some("t1"),
            resource: Some("users/u1/mailFolders('Inbox')/messages"),
            subscription_id: Some("s1"),
        }
    }

    #[test]
    fn countdown_retires_the_rule() {
        let book = FaultBook::default();
        book.add(
            FaultRule::new(
                FaultOperation::Renew,
                Fault::Status {
                    status: 503,
                    code: "ServiceUnavailable".into(),
                    retry_after_seconds: Some(7),
                },
            )
            .times(2),
        );
        assert!(book.take(&target(Operation::Create)).is_none());
        assert!(book.take(&target(Operation::Renew)).is_some());
        assert_eq!(book.rules()[0].times, Some(1));
        assert!(book.take(&target(Operation::Renew)).is_some());
        assert!(book.take(&target(Operation::Renew)).is_none());
        assert!(book.rules().is_empty());
    }

    #[test]
    fn filters_and_kinds_must_all_match() {
        let book = FaultBook::default();
        book.add(FaultRule::new(FaultOperation::Any, Fault::InvalidGrant).for_tenant("t1"));
        book.add(FaultRule::new(FaultOperation::Any, Fault::ExpiredToken).for_resource("INBOX"));
        book.add(FaultRule::new(FaultOperation::Any, Fault::ExpiredToken).for_tenant("other"));
        // InvalidGrant only hits the token endpoint; ExpiredToken only Graph calls.
        assert_eq!(
            book.take(&target(Operation::Token)),
            Some(Fault::InvalidGrant)
        );
        assert_eq!(
            book.take(&target(Operation::Renew)),
            Some(Fault::ExpiredToken)
        );
        let elsewhere = FaultTarget {
            resource: Some("users/u1/events"),
            ..target(Operation::Renew)
        };
        assert_eq!(book.take(&elsewhere), None);
    }

    #[test]
    fn rule_json_shape() {
        let rule: FaultRule = serde_json::from_value(serde_json::json!({
            "operation": "renew",
            "fault": {"kind": "status", "status": 429, "code": "TooManyRequests", "retry_after_seconds": 3},
            "times": 1
        }))
        .unwrap();
        assert_eq!(rule.operation, FaultOperation::Renew);
        assert_eq!(rule.times, Some(1));
        assert!(rule.validate().is_ok());
        let bad = FaultRule::new(
            FaultOperation::Any,
            Fault::Status {
                status: 200,
                code: "Ok".into(),
                retry_after_seconds: None,
            },
        );
        assert!(bad.validate().is_err());
    }
}
