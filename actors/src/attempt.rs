//! What one provider call amounts to, as pure functions of its outcome: the
//! subscription it leaves the provider with (and the one it replaced), the
//! [`RenewalResult`] recorded and published for it, and the health row written with
//! it.
//!
//! The supervisor calls these once the lifecycle has judged the call; they take no
//! actor context, read no clock and do no I/O, so every rule here is unit-tested
//! without an actor. Telemetry and persistence stay with the supervisor.

use crate::domain::{
    AttemptKind, ErrorClass, Provider, ProviderHealth, ProviderId, RenewalResult, Subscription,
};
use crate::lifecycle::{Completion, Next};
use crate::ports::{ApiError, ProviderSubscription};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// One provider call as the supervisor saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// What the provider answered.
    pub result: Result<ProviderSubscription, ApiError>,
    /// clientState generated for a create; `None` for a renew.
    pub client_state: Option<String>,
    /// Domain time the call started (after waiting for a permit).
    pub started_at: DateTime<Utc>,
    /// When a timer-driven attempt was due; `None` for a forced one.
    pub scheduled: Option<DateTime<Utc>>,
    /// Wall time the call took.
    pub elapsed: Duration,
}

/// The provider's subscriptions after a call.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionChange {
    /// The live subscription, if any.
    pub current: Option<Subscription>,
    /// The one the call superseded (a new id, or gone at the provider), which stays
    /// routable for late notifications.
    pub replaced: Option<Subscription>,
}

/// The subscriptions `provider` has after `call`, which set out to do `attempt`,
/// given the one it had (`old`).
///
/// - A success with the same id is a renewal: `created_at` and (unless the provider
///   sent a new one) `history_id` are kept, `renewed_at` is the call's start.
/// - A success with another id is a replacement: a new subscription created at the
///   call's start; `old` is returned as `replaced`.
/// - A renew answered `not_found` leaves none: `old` is `replaced` (gone).
/// - Any other failure changes nothing.
pub fn subscription_after(
    provider: ProviderId,
    old: Option<Subscription>,
    call: &Call,
    attempt: AttemptKind,
) -> SubscriptionChange {
    match &call.result {
        Ok(granted) => {
            let same = old
                .as_ref()
                .is_some_and(|o| o.external_id == granted.external_id);
            let current = merge_granted(
                provider,
                old.as_ref(),
                granted,
                call.client_state.as_deref(),
                call.started_at,
            );
            SubscriptionChange {
                current: Some(current),
                replaced: if same { None } else { old },
            }
        }
        Err(e) if e.class == ErrorClass::NotFound && attempt == AttemptKind::Renew => {
            SubscriptionChange {
                current: None,
                replaced: old,
            }
        }
        Err(_) => SubscriptionChange {
            current: old,
            replaced: None,
        },
    }
}

/// The subscription the provider `granted`, merged with the one it had (`old`).
///
/// Its clientState is, in order: the one the provider's answer carries (a Google
/// channel rotated by a renew gets a fresh token), the one this call generated (a
/// create), the one already known.
pub fn merge_granted(
    provider: ProviderId,
    old: Option<&Subscription>,
    granted: &ProviderSubscription,
    requested_client_state: Option<&str>,
    started_at: DateTime<Utc>,
) -> Subscription {
    let same = old.filter(|o| o.external_id == granted.external_id);
    let client_state = granted
        .client_state
        .clone()
        .or_else(|| requested_client_state.map(str::to_owned))
        .or_else(|| old.map(|o| o.client_state.clone()))
        .unwrap_or_default();
    Subscription {
        provider_id: provider,
        external_id: granted.external_id.clone(),
        resource_id: granted.resource_id.clone(),
        client_state,
        expires_at: granted.expires_at,
        created_at: same.map_or(started_at, |o| o.created_at),
        renewed_at: same.map(|_| started_at),
        history_id: granted
            .history_id
            .clone()
            .or_else(|| same.and_then(|o| o.history_id.clone())),
    }
}

/// The result recorded and published for `call`, as the lifecycle judged it
/// (`done`, with `consecutive_failures` after it), naming the live subscription
/// the call left (`current`).
pub fn renewal_result(
    provider: &Provider,
    call: &Call,
    done: &Completion,
    current: Option<&Subscription>,
    consecutive_failures: u32,
) -> RenewalResult {
    let (error_class, error_message, http_status) = match &call.result {
        Ok(_) => (None, None, None),
        Err(e) => (
            Some(e.class),
            Some(actionable_reason(e, provider.kind.is_graph())),
            e.http_status,
        ),
    };
    let granted = call.result.as_ref().ok();
    RenewalResult {
        provider_id: provider.id,
        tenant: provider.tenant.clone(),
        kind: provider.kind,
        success: granted.is_some(),
        attempt: done.attempt,
        action: done.action,
        new_expiration: granted.map(|s| s.expires_at),
        subscription_id: current.map(|s| s.external_id.clone()),
        history_id: granted.and_then(|s| s.history_id.clone()),
        error_class,
        error_message,
        http_status,
        consecutive_failures,
        status: done.status,
        previous_status: done.previous,
        attempted_at: call.started_at,
        scheduled_at: call.scheduled,
        duration_ms: u64::try_from(call.elapsed.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The health row written with `result`: its status, attempt and failure, the live
/// subscription's expiry, and when the lifecycle will try next (`next`; none while
/// parked or about to retry at once).
pub fn health_row(
    result: &RenewalResult,
    current: Option<&Subscription>,
    last_webhook_at: Option<DateTime<Utc>>,
    next: Next,
) -> ProviderHealth {
    ProviderHealth {
        provider_id: result.provider_id,
        subscription_status: result.status,
        subscription_expires_at: current.map(|s| s.expires_at),
        last_renewal_attempt_at: Some(result.attempted_at),
        last_renewal_result: Some(result.action),
        failure_reason: result.error_message.clone(),
        last_webhook_received_at: last_webhook_at,
        consecutive_failure_count: result.consecutive_failures,
        next_renewal_at: match next {
            Next::At(at) => Some(at),
            Next::AttemptNow(_) | Next::Parked | Next::Busy => None,
        },
        // Not written by attempts: the notification actor owns it.
        silent_since: None,
    }
}

/// Turns a classified error into a message that tells an operator what to do.
pub fn actionable_reason(e: &ApiError, graph: bool) -> String {
    let what_to_do = match e.class {
        ErrorClass::ReauthRequired => {
            "re-authorize the OAuth connection (PUT /api/v1/tenants/{tenant}/providers/{id}/credentials)"
        }
        ErrorClass::Auth => "check the app registration's client secret and API permissions",
        ErrorClass::Permanent if graph => {
            "check that SUBKEEPER_PUBLIC_URL is reachable from Microsoft and answers the validationToken handshake, and that the resource exists"
        }
        ErrorClass::Permanent => {
            "check the resource exists and the public webhook URL is reachable"
        }
        ErrorClass::Throttled => "the provider is throttling; subkeeper waits for Retry-After",
        ErrorClass::Transient => {
            "the provider or network failed; subkeeper retries with backoff (force a renewal with POST /api/v1/tenants/{tenant}/providers/{id}/renew once it recovers)"
        }
        ErrorClass::NotFound => "the subscription was gone at the provider; subkeeper recreates it",
    };
    let status = e
        .http_status
        .map(|s| format!(" (HTTP {s})"))
        .unwrap_or_default();
    format!("{}{}: {} — {}", e.class, status, e.message, what_to_do)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::{HealthState, ProviderKind, RenewalAction, TenantId};
    use chrono::TimeDelta;

    fn t(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + TimeDelta::hours(hours)
    }

    fn provider() -> Provider {
        Provider {
            id: ProviderId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            kind: ProviderKind::GraphMail,
            display_name: "Support".into(),
            resource: "users/support/messages".into(),
            credentials_id: None,
            enabled: true,
            credentials_version: 1,
        }
    }

    fn old(provider: ProviderId) -> Subscription {
        Subscription {
            provider_id: provider,
            external_id: "sub-1".into(),
            resource_id: None,
            client_state: "old-secret".into(),
            expires_at: t(24),
            created_at: t(-100),
            renewed_at: Some(t(-50)),
            history_id: Some("41".into()),
        }
    }

    fn granted(id: &str) -> ProviderSubscription {
        ProviderSubscription {
            external_id: id.into(),
            resource_id: None,
            expires_at: t(48),
            client_state: None,
            history_id: None,
        }
    }

    fn call(result: Result<ProviderSubscription, ApiError>) -> Call {
        Call {
            result,
            client_state: None,
            started_at: t(0),
            scheduled: Some(t(-1)),
            elapsed: Duration::from_millis(250),
        }
    }

    fn done(attempt: AttemptKind, action: RenewalAction, status: HealthState) -> Completion {
        Completion {
            attempt,
            action,
            previous: HealthState::Healthy,
            status,
            next: Next::At(t(36)),
        }
    }

    #[test]
    fn a_renewal_of_the_same_id_keeps_its_creation_and_history_id() {
        let p = ProviderId::new();
        let change = subscription_after(
            p,
            Some(old(p)),
            &call(Ok(granted("sub-1"))),
            AttemptKind::Renew,
        );
        assert_eq!(change.replaced, None);
        let sub = change.current.unwrap();
        assert_eq!(sub.external_id, "sub-1");
        assert_eq!(sub.expires_at, t(48), "the granted expiry, not the old one");
        assert_eq!(sub.created_at, t(-100));
        assert_eq!(sub.renewed_at, Some(t(0)));
        assert_eq!(sub.history_id.as_deref(), Some("41"));
        assert_eq!(sub.client_state, "old-secret");

        // A history id in the answer wins over the kept one.
        let mut answer = granted("sub-1");
        answer.history_id = Some("99".into());
        let sub = subscription_after(p, Some(old(p)), &call(Ok(answer)), AttemptKind::Renew)
            .current
            .unwrap();
        assert_eq!(sub.history_id.as_deref(), Some("99"));
    }

    #[test]
    fn a_new_id_is_a_replacement_that_starts_afresh() {
        let p = ProviderId::new();
        let change = subscription_after(
            p,
            Some(old(p)),
            &call(Ok(granted("sub-2"))),
            AttemptKind::Renew,
        );
        assert_eq!(change.replaced, Some(old(p)), "the old id stays routable");
        let sub = change.current.unwrap();
        assert_eq!(sub.external_id, "sub-2");
        assert_eq!(sub.created_at, t(0));
        assert_eq!(sub.renewed_at, None);
        assert_eq!(
            sub.history_id, None,
            "another watch's cursor is not carried"
        );

        let first = subscription_after(p, None, &call(Ok(granted("sub-1"))), AttemptKind::Register);
        assert_eq!(first.replaced, None);
        assert_eq!(first.current.unwrap().created_at, t(0));
    }

    #[test]
    fn client_state_comes_from_the_answer_then_the_request_then_the_old_subscription() {
        let p = ProviderId::new();
        let o = old(p);
        let mut rotated = granted("sub-2");
        rotated.client_state = Some("from-answer".into());
        let state = |g: &ProviderSubscription, requested: Option<&str>| {
            merge_granted(p, Some(&o), g, requested, t(0)).client_state
        };
        assert_eq!(state(&rotated, Some("requested")), "from-answer");
        assert_eq!(state(&granted("sub-2"), Some("requested")), "requested");
        assert_eq!(state(&granted("sub-1"), None), "old-secret");
    }

    #[test]
    fn a_renew_answered_not_found_leaves_no_subscription_and_other_failures_change_nothing() {
        let p = ProviderId::new();
        let gone = call(Err(ApiError::new(ErrorClass::NotFound, "gone")));
        let change = subscription_after(p, Some(old(p)), &gone, AttemptKind::Renew);
        assert_eq!(change.current, None);
        assert_eq!(change.replaced, Some(old(p)));

        let change = subscription_after(p, Some(old(p)), &gone, AttemptKind::Recreate);
        assert_eq!((change.current, change.replaced), (Some(old(p)), None));

        let outage = call(Err(ApiError::new(ErrorClass::Transient, "timeout")));
        let change = subscription_after(p, Some(old(p)), &outage, AttemptKind::Renew);
        assert_eq!((change.current, change.replaced), (Some(old(p)), None));
    }

    #[test]
    fn the_result_of_a_success_names_the_new_expiry_and_subscription() {
        let pr = provider();
        let mut answer = granted("sub-1");
        answer.history_id = Some("7".into());
        let c = call(Ok(answer));
        let current = subscription_after(pr.id, Some(old(pr.id)), &c, AttemptKind::Renew).current;
        let d = done(
            AttemptKind::Renew,
            RenewalAction::Renewed,
            HealthState::Healthy,
        );
        let r = renewal_result(&pr, &c, &d, current.as_ref(), 0);
        assert!(r.success);
        assert_eq!((r.provider_id, r.kind), (pr.id, pr.kind));
        assert_eq!(r.tenant.as_str(), "acme");
        assert_eq!(
            (r.attempt, r.action),
            (AttemptKind::Renew, RenewalAction::Renewed)
        );
        assert_eq!(r.new_expiration, Some(t(48)));
        assert_eq!(r.subscription_id.as_deref(), Some("sub-1"));
        assert_eq!(r.history_id.as_deref(), Some("7"));
        assert_eq!(
            (r.error_class, r.error_message, r.http_status),
            (None, None, None)
        );
        assert_eq!((r.attempted_at, r.scheduled_at), (t(0), Some(t(-1))));
        assert_eq!(r.duration_ms, 250);
    }

    #[test]
    fn the_result_of_a_failure_carries_an_actionable_reason() {
        let pr = provider();
        let mut e = ApiError::new(ErrorClass::Permanent, "notificationUrl validation failed");
        e.http_status = Some(400);
        let c = call(Err(e));
        let d = Completion {
            previous: HealthState::Failing,
            ..done(
                AttemptKind::Renew,
                RenewalAction::Failed,
                HealthState::Error,
            )
        };
        let kept = old(pr.id);
        let r = renewal_result(&pr, &c, &d, Some(&kept), 3);
        assert!(!r.success);
        assert_eq!(r.new_expiration, None);
        assert_eq!(
            r.subscription_id.as_deref(),
            Some("sub-1"),
            "still the live one"
        );
        assert_eq!(r.error_class, Some(ErrorClass::Permanent));
        assert_eq!(r.http_status, Some(400));
        let message = r.error_message.as_deref().unwrap();
        assert!(
            message.starts_with("permanent (HTTP 400): notificationUrl validation failed"),
            "{message}"
        );
        assert!(
            message.contains("validationToken"),
            "Graph: says what to check: {message}"
        );
        assert_eq!(
            (r.previous_status, r.status),
            (HealthState::Failing, HealthState::Error)
        );
        assert_eq!(r.consecutive_failures, 3);
    }

    #[test]
    fn the_health_row_repeats_the_result_and_the_next_attempt_time() {
        let pr = provider();
        let c = call(Err(ApiError::new(ErrorClass::Transient, "HTTP 503")));
        let d = done(
            AttemptKind::Renew,
            RenewalAction::Failed,
            HealthState::Failing,
        );
        let kept = old(pr.id);
        let r = renewal_result(&pr, &c, &d, Some(&kept), 1);
        let h = health_row(&r, Some(&kept), Some(t(-2)), Next::At(t(1)));
        assert_eq!(h.provider_id, pr.id);
        assert_eq!(h.subscription_status, HealthState::Failing);
        assert_eq!(h.subscription_expires_at, Some(t(24)));
        assert_eq!(h.last_renewal_attempt_at, Some(t(0)));
        assert_eq!(h.last_renewal_result, Some(RenewalAction::Failed));
        assert_eq!(h.failure_reason, r.error_message);
        assert_eq!(h.last_webhook_received_at, Some(t(-2)));
        assert_eq!(h.consecutive_failure_count, 1);
        assert_eq!(h.next_renewal_at, Some(t(1)));
        assert_eq!(h.silent_since, None, "the notification actor's to write");

        for next in [
            Next::Parked,
            Next::AttemptNow(AttemptKind::Recreate),
            Next::Busy,
        ] {
            assert_eq!(health_row(&r, None, None, next).next_renewal_at, None);
        }
        assert_eq!(
            health_row(&r, None, None, Next::Parked).subscription_expires_at,
            None
        );
    }
}
