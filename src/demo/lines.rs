//! How the demo words what it sees: one line per event,
//! `[simulated time] who  word  status  detail`, in the vocabulary of
//! `subkeeper status` and the API — statuses healthy / renewing / failing / error /
//! needs_reauth, actions registered / renewed / recreated / failed, alerts firing /
//! resolved. Pure formatting: no I/O, no state.

use chrono::{DateTime, Utc};
use subkeeper_actors::alerting::{Alert, AlertEvent};
use subkeeper_actors::domain::{
    DomainEvent, HealthState, NotificationSource, ProviderKind, RenewalAction, RenewalResult,
    WebhookEnvelope,
};

/// How the simulated time is shown at the start of every line.
const TIME: &str = "%b %d %H:%M";

/// Characters of a provider-side id shown (UUIDs are long; the start is enough
/// to tell two apart).
const SHORT_ID: usize = 8;

/// One line: `[time] who word status detail`, columns aligned.
pub fn line(at: DateTime<Utc>, who: &str, word: &str, status: &str, detail: &str) -> String {
    let line = format!(
        "[{}] {who:<14} {word:<10} {status:<24} {detail}",
        at.format(TIME)
    );
    line.trim_end().to_owned()
}

/// A simulated instant as the lines show it.
pub fn time(at: DateTime<Utc>) -> String {
    at.format(TIME).to_string()
}

/// The first characters of a provider-side id, marked as cut when cut.
pub fn short(id: &str) -> String {
    if id.chars().count() <= SHORT_ID {
        id.to_owned()
    } else {
        format!("{}…", id.chars().take(SHORT_ID).collect::<String>())
    }
}

/// The health column: the status after the attempt, with where it came from
/// when it changed.
fn status(r: &RenewalResult) -> String {
    if r.previous_status == r.status {
        r.status.to_string()
    } else {
        format!("{} → {}", r.previous_status, r.status)
    }
}

/// What a subscription is called for a kind.
fn noun(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::GraphMail | ProviderKind::GraphCalendar => "subscription",
        ProviderKind::GoogleCalendar => "channel",
        ProviderKind::Gmail => "watch",
    }
}

/// A renewal result's word, status and detail. `before` is the subscription the
/// provider had until this result; `via` is appended (e.g. where a reply came).
pub fn renewal(r: &RenewalResult, before: Option<&str>, via: &str) -> (String, String, String) {
    let word = r.action.to_string();
    let mut detail = if r.success {
        let until = r.new_expiration.map(time).unwrap_or_default();
        let id = r.subscription_id.as_deref().unwrap_or("");
        let noun = noun(r.kind);
        let replaced = before.filter(|old| *old != id);
        match (r.kind, r.action, replaced) {
            // Gmail has one watch per mailbox, renewed in place; its id is ours.
            (ProviderKind::Gmail, _, _) => {
                let history = r
                    .history_id
                    .as_deref()
                    .map(|h| format!(", historyId {h}"))
                    .unwrap_or_default();
                format!("watch alive until {until}{history}")
            }
            (ProviderKind::GoogleCalendar, RenewalAction::Renewed, Some(old)) => format!(
                "channel rotated: new channel {} alive until {until}, old channel {} to be stopped",
                short(id),
                short(old)
            ),
            (_, RenewalAction::Recreated, Some(old)) => format!(
                "new {noun} {} alive until {until} (replaces {})",
                short(id),
                short(old)
            ),
            _ => format!("{noun} {} alive until {until}", short(id)),
        }
    } else {
        let failures = match r.consecutive_failures {
            0 => String::new(),
            1 => " (1 failure in a row)".to_owned(),
            n => format!(" ({n} failures in a row)"),
        };
        match &r.error_message {
            // The actionable message once, when the provider starts needing a
            // human; it names its class and HTTP status itself.
            Some(message)
                if r.previous_status != r.status
                    && matches!(r.status, HealthState::Error | HealthState::NeedsReauth) =>
            {
                format!("{}{}{failures}", attempt_prefix(r), cause(message))
            }
            _ => {
                let class = r.error_class.map(|c| c.as_str()).unwrap_or("failed");
                let http = r
                    .http_status
                    .map(|s| format!(", HTTP {s}"))
                    .unwrap_or_default();
                format!("{}{class}{http}{failures}", attempt_prefix(r))
            }
        }
    };
    if !via.is_empty() {
        detail.push_str(" — ");
        detail.push_str(via);
    }
    (word, status(r), detail)
}

/// "renew: " for a failed renewal (a failed create needs no prefix: the provider
/// had nothing to renew).
fn attempt_prefix(r: &RenewalResult) -> String {
    match r.attempt.as_str() {
        "register" => String::new(),
        other => format!("{other}: "),
    }
}

/// The cause part of an actionable message (`cause — what to do`): the alert
/// line carries what to do.
fn cause(message: &str) -> &str {
    message.split(" — ").next().unwrap_or(message)
}

/// An alert event's word, status and detail; `pattern` is the subject pattern it
/// arrived on. (Its remediation is in the event; the failed line before it says
/// what went wrong.)
pub fn alert(a: &Alert, pattern: &str) -> (String, String, String) {
    let mut detail = format!("alert {} on {pattern}", a.condition.as_str());
    if let Some(n) = a
        .consecutive_failures
        .filter(|_| a.event != AlertEvent::Resolved)
    {
        let s = if n == 1 { "" } else { "s" };
        detail.push_str(&format!(" ({n} failure{s} in a row)"));
    }
    let status = a.state.map(|s| s.to_string()).unwrap_or_default();
    (a.event.as_str().to_owned(), status, detail)
}

/// An accepted notification's word and detail.
pub fn webhook(w: &WebhookEnvelope, pattern: &str) -> (String, String) {
    let change = w.notification["changeType"]
        .as_str()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    if subkeeper_actors::notification::is_replay(w) {
        // Found by a catch-up after a gap, not pushed: no subscription sent it.
        return (
            "replay".into(),
            format!(
                "{} change{change} found by a catch-up, published as a replay → {pattern}",
                w.kind
            ),
        );
    }
    (
        "webhook".into(),
        format!(
            "{} change notification{change} on subscription {} accepted → {pattern}",
            w.kind,
            short(&w.subscription_id)
        ),
    )
}

/// A domain event's word and detail.
pub fn event(e: &DomainEvent, subject: &str) -> (String, String) {
    let why = e
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let replay = if e.source == Some(NotificationSource::Replay) {
        " (replay)"
    } else {
        ""
    };
    (
        "event".into(),
        format!("{}{why}{replay} → {subject}", e.event_type),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkeeper_actors::domain::{AttemptKind, ErrorClass, ProviderId, TenantId};

    fn failed() -> RenewalResult {
        RenewalResult {
            provider_id: ProviderId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            kind: ProviderKind::GraphCalendar,
            success: false,
            attempt: AttemptKind::Register,
            action: RenewalAction::Failed,
            new_expiration: None,
            subscription_id: None,
            history_id: None,
            error_class: Some(ErrorClass::Transient),
            error_message: Some("Graph refused create with HTTP 500 — retry later".into()),
            http_status: Some(500),
            consecutive_failures: 3,
            status: HealthState::Error,
            previous_status: HealthState::Failing,
            attempted_at: Utc::now(),
            scheduled_at: None,
            duration_ms: 3,
        }
    }

    #[test]
    fn a_provider_entering_error_shows_the_transition_and_the_cause_once() {
        let (word, status, detail) = renewal(&failed(), None, "");
        assert_eq!(
            (word.as_str(), status.as_str()),
            ("failed", "failing → error")
        );
        assert_eq!(
            detail,
            "Graph refused create with HTTP 500 (3 failures in a row)"
        );
        let mut again = failed();
        again.previous_status = HealthState::Error;
        let (_, status, detail) = renewal(&again, None, "");
        assert_eq!(status, "error");
        assert_eq!(detail, "transient, HTTP 500 (3 failures in a row)");
    }

    #[test]
    fn a_rotated_channel_names_both_channels_and_a_recreate_the_one_it_replaces() {
        let mut r = failed();
        r.kind = ProviderKind::GoogleCalendar;
        r.success = true;
        r.action = RenewalAction::Renewed;
        r.attempt = AttemptKind::Renew;
        r.status = HealthState::Healthy;
        r.previous_status = HealthState::Healthy;
        r.subscription_id = Some("9b2f4c1e-0000".into());
        let (_, status, detail) = renewal(&r, Some("1c2d3e4f-1111"), "");
        assert_eq!(status, "healthy");
        assert!(
            detail.starts_with("channel rotated: new channel 9b2f4c1e… alive until")
                && detail.ends_with("old channel 1c2d3e4f… to be stopped"),
            "{detail}"
        );
        r.kind = ProviderKind::GraphMail;
        r.action = RenewalAction::Recreated;
        let (word, _, detail) = renewal(&r, Some("1c2d3e4f-1111"), "reply");
        assert_eq!(word, "recreated");
        assert!(detail.ends_with("(replaces 1c2d3e4f…) — reply"), "{detail}");
    }

    #[test]
    fn lines_align_and_carry_no_trailing_blanks() {
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            line(at, "acme/alice", "webhook", "", "x"),
            format!(
                "[Jan 02 03:04] {:<14} {:<10} {:<24} x",
                "acme/alice", "webhook", ""
            )
        );
        assert_eq!(
            line(at, "a", "b", "", ""),
            "[Jan 02 03:04] a              b"
        );
    }
}
