//! The alert events and their ids: what a renewal result, an escalation or a
//! silence change announces, derived purely from the cause, so the same cause always
//! gives the same alert id. Owns no state and does no I/O; the words of the
//! remediation come from [`super::remediation`].

use super::remediation::remediation;
use crate::domain::{HealthState, ProviderId, ProviderKind, RenewalResult, TenantId};
use crate::notification::{Silence, SilenceChanged};
use crate::ports::CallbackUrls;
use actix::Message;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// What an alert event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// The provider entered `error` or `needs_reauth`.
    Firing,
    /// The condition is over.
    Resolved,
    /// The provider has stayed unhealthy longer than the escalation time.
    Escalated,
    /// The subscription is alive but no webhook arrives.
    Silent,
    /// A silence check found changes no webhook announced.
    PushBroken,
}

impl AlertEvent {
    /// The wire and metric-label name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Escalated => "escalated",
            Self::Silent => "silent",
            Self::PushBroken => "push_broken",
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCondition {
    /// Failed `failure_threshold` times in a row.
    Error,
    /// The OAuth grant is gone.
    NeedsReauth,
    /// No webhook for longer than the kind's silence threshold.
    Silent,
    /// Changes happened that no webhook announced.
    PushBroken,
}

impl AlertCondition {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::NeedsReauth => "needs_reauth",
            Self::Silent => "silent",
            Self::PushBroken => "push_broken",
        }
    }

    /// The condition a health state is an alert for, if any.
    pub fn of(state: HealthState) -> Option<Self> {
        match state {
            HealthState::Error => Some(Self::Error),
            HealthState::NeedsReauth => Some(Self::NeedsReauth),
            HealthState::Healthy | HealthState::Renewing | HealthState::Failing => None,
        }
    }
}

/// One alert event, as published on `{prefix}.alert.<tenant>.<provider>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id derived from the cause; also the `Nats-Msg-Id`, so the same alert
    /// is stored once. Consumers can de-duplicate on it.
    pub id: String,
    /// What happened.
    pub event: AlertEvent,
    /// What it is about; a `resolved` names the condition that ended.
    pub condition: AlertCondition,
    /// The provider's tenant.
    pub tenant: TenantId,
    /// The provider.
    pub provider_id: ProviderId,
    /// Its kind.
    pub kind: ProviderKind,
    /// The provider's health after the cause (absent for silence events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HealthState>,
    /// Why, in words an operator can act on (the attempt's error message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do, most likely fix first (empty for `resolved`).
    pub remediation: Vec<String>,
    /// When the condition began, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// When this event happened.
    pub at: DateTime<Utc>,
    /// Failed attempts in a row, for renewal-driven events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
}

/// A provider the store considers unhealthy (in `error` or `needs_reauth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The provider.
    pub provider_id: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
    /// `Error` or `NeedsReauth`.
    pub state: HealthState,
    /// When it became unhealthy: the start of its first attempt since it last was
    /// not.
    pub since: DateTime<Utc>,
    /// The actionable reason of its last failure.
    pub reason: Option<String>,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
}

/// Formats a timestamp for an alert id (microseconds: what Postgres keeps, so ids
/// built from stored and from in-memory times agree).
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The alert a renewal result calls for, if any: `firing` on entering `error` or
/// `needs_reauth` (or switching between them), `resolved` on leaving them.
/// `since` is when the condition began, if the caller knows (for `resolved`).
pub fn alert_for(
    result: &RenewalResult,
    since: Option<DateTime<Utc>>,
    callbacks: &CallbackUrls,
) -> Option<Alert> {
    let before = AlertCondition::of(result.previous_status);
    let after = AlertCondition::of(result.status);
    let (event, condition) = match (before, after) {
        (_, Some(now)) if before != Some(now) => (AlertEvent::Firing, now),
        (Some(ended), None) => (AlertEvent::Resolved, ended),
        _ => return None,
    };
    let firing = event == AlertEvent::Firing;
    Some(Alert {
        id: format!(
            "alert:{}:{}:{}:{}",
            result.provider_id,
            event.as_str(),
            condition.as_str(),
            stamp(result.attempted_at)
        ),
        event,
        condition,
        tenant: result.tenant.clone(),
        provider_id: result.provider_id,
        kind: result.kind,
        state: Some(result.status),
        reason: if firing {
            result.error_message.clone()
        } else {
            None
        },
        remediation: if firing {
            remediation(
                callbacks,
                &result.tenant,
                result.provider_id,
                result.kind,
                condition,
                result.error_class,
            )
        } else {
            Vec::new()
        },
        since: if firing {
            Some(result.attempted_at)
        } else {
            since
        },
        at: result.attempted_at,
        consecutive_failures: Some(result.consecutive_failures),
    })
}

/// The `escalated` alert of a provider unhealthy since `u.since`.
pub fn escalation(u: &Unhealthy, at: DateTime<Utc>, callbacks: &CallbackUrls) -> Alert {
    let condition = AlertCondition::of(u.state).unwrap_or(AlertCondition::Error);
    Alert {
        // One escalation per stretch of unhealthiness, whatever its condition.
        id: format!("alert:{}:escalated:{}", u.provider_id, stamp(u.since)),
        event: AlertEvent::Escalated,
        condition,
        tenant: u.tenant.clone(),
        provider_id: u.provider_id,
        kind: u.kind,
        state: Some(u.state),
        reason: u.reason.clone(),
        remediation: remediation(callbacks, &u.tenant, u.provider_id, u.kind, condition, None),
        since: Some(u.since),
        at,
        consecutive_failures: Some(u.consecutive_failures),
    }
}

/// The `silent` or silence-`resolved` alert of a silence change.
pub fn silence_alert(
    change: &SilenceChanged,
    at: DateTime<Utc>,
    callbacks: &CallbackUrls,
) -> Alert {
    let (event, s): (AlertEvent, &Silence) = match change {
        SilenceChanged::Started(s) => (AlertEvent::Silent, s),
        SilenceChanged::Ended(s) => (AlertEvent::Resolved, s),
    };
    let started = event == AlertEvent::Silent;
    Alert {
        id: if started {
            format!("alert:{}:silent:{}", s.provider_id, stamp(s.since))
        } else {
            format!("alert:{}:resolved:silent:{}", s.provider_id, stamp(s.since))
        },
        event,
        condition: AlertCondition::Silent,
        tenant: s.tenant.clone(),
        provider_id: s.provider_id,
        kind: s.kind,
        state: None,
        reason: started.then(|| {
            format!(
                "no webhook since {} although the subscription is alive",
                s.since.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        }),
        remediation: if started {
            remediation(
                callbacks,
                &s.tenant,
                s.provider_id,
                s.kind,
                AlertCondition::Silent,
                None,
            )
        } else {
            Vec::new()
        },
        since: Some(s.since),
        at: s.ended_at.unwrap_or(at),
        consecutive_failures: None,
    }
}

/// A silence check found `changes` that no webhook announced for a provider.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct PushBrokenFound {
    /// The provider.
    pub provider_id: ProviderId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its kind.
    pub kind: ProviderKind,
    /// Changes found that no webhook announced.
    pub changes: u64,
    /// The last webhook received, if any.
    pub last_webhook: Option<DateTime<Utc>>,
    /// When the check found it.
    pub at: DateTime<Utc>,
}

/// The `push_broken` alert: names tenant and provider, says how many changes
/// were missed (and replayed).
pub fn push_broken_alert(found: &PushBrokenFound, callbacks: &CallbackUrls) -> Alert {
    let since = found
        .last_webhook
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "the subscription was created".to_owned());
    Alert {
        id: format!(
            "alert:{}:push_broken:{}",
            found.provider_id,
            stamp(found.at)
        ),
        event: AlertEvent::PushBroken,
        condition: AlertCondition::PushBroken,
        tenant: found.tenant.clone(),
        provider_id: found.provider_id,
        kind: found.kind,
        state: None,
        reason: Some(format!(
            "push broken for tenant {} provider {}: {} change(s) no webhook announced (last webhook: {since})",
            found.tenant, found.provider_id, found.changes
        )),
        remediation: remediation(
            callbacks,
            &found.tenant,
            found.provider_id,
            found.kind,
            AlertCondition::PushBroken,
            None,
        ),
        since: found.last_webhook,
        at: found.at,
        consecutive_failures: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{AttemptKind, ErrorClass, RenewalAction};
    use chrono::TimeDelta;

    /// Callback URLs on an example host.
    pub(crate) fn callbacks() -> CallbackUrls {
        CallbackUrls {
            public_url: "https://hooks.example.com".into(),
        }
    }

    /// A result of `provider`'s attempt at `at` that moved it from `previous` to
    /// `status` (failed unless `status` is healthy).
    pub(crate) fn result(
        provider: ProviderId,
        at: DateTime<Utc>,
        previous: HealthState,
        status: HealthState,
    ) -> RenewalResult {
        let success = status == HealthState::Healthy;
        RenewalResult {
            provider_id: provider,
            tenant: TenantId::parse("acme").unwrap(),
            kind: ProviderKind::GraphMail,
            success,
            attempt: AttemptKind::Register,
            action: if success {
                RenewalAction::Registered
            } else {
                RenewalAction::Failed
            },
            new_expiration: None,
            subscription_id: None,
            history_id: None,
            error_class: (!success).then_some(ErrorClass::Transient),
            error_message: (!success).then(|| "transient (HTTP 500): boom".to_owned()),
            http_status: None,
            consecutive_failures: 0,
            status,
            previous_status: previous,
            attempted_at: at,
            scheduled_at: None,
            duration_ms: 5,
        }
    }

    #[test]
    fn only_entering_and_leaving_error_or_needs_reauth_alerts() {
        use HealthState::*;
        let (p, at) = (ProviderId::new(), Utc::now());
        let event = |prev, now| {
            alert_for(&result(p, at, prev, now), None, &callbacks()).map(|a| (a.event, a.condition))
        };
        assert_eq!(event(Healthy, Failing), None);
        assert_eq!(event(Failing, Failing), None);
        assert_eq!(
            event(Failing, Error),
            Some((AlertEvent::Firing, AlertCondition::Error))
        );
        assert_eq!(event(Error, Error), None);
        assert_eq!(
            event(Error, NeedsReauth),
            Some((AlertEvent::Firing, AlertCondition::NeedsReauth))
        );
        assert_eq!(
            event(Error, Healthy),
            Some((AlertEvent::Resolved, AlertCondition::Error))
        );
        assert_eq!(
            event(NeedsReauth, Healthy),
            Some((AlertEvent::Resolved, AlertCondition::NeedsReauth))
        );
        assert_eq!(event(Healthy, Renewing), None);

        let firing = alert_for(&result(p, at, Failing, Error), None, &callbacks()).unwrap();
        assert_eq!(firing.reason.as_deref(), Some("transient (HTTP 500): boom"));
        let all = firing.remediation.join("\n");
        for needle in [
            format!("PUT /api/v1/tenants/acme/providers/{p}/credentials"),
            "https://hooks.example.com/webhooks/microsoft".to_owned(),
            "validationToken".to_owned(),
            format!("subkeeper renew --tenant acme --provider {p}"),
        ] {
            assert!(all.contains(&needle), "{needle} missing from {all}");
        }
        // The same attempt always gives the same id; another attempt does not.
        let again = alert_for(&result(p, at, Failing, Error), None, &callbacks()).unwrap();
        assert_eq!(again.id, firing.id);
        let later = alert_for(
            &result(p, at + TimeDelta::seconds(1), Failing, Error),
            None,
            &callbacks(),
        )
        .unwrap();
        assert_ne!(later.id, firing.id);
    }
}
