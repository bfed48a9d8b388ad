//! What to tell an operator about an unhealthy provider, per condition and error
//! class: pure text, most likely fix first. Knows the admin API, the CLI and the
//! callback URLs by name; must not look at actor state or do I/O.

use super::alert::AlertCondition;
use crate::domain::{ErrorClass, ProviderId, ProviderKind, TenantId};
use crate::ports::CallbackUrls;

/// What to do about a provider, most likely fix first.
pub fn remediation(
    callbacks: &CallbackUrls,
    tenant: &TenantId,
    provider: ProviderId,
    kind: ProviderKind,
    condition: AlertCondition,
    class: Option<ErrorClass>,
) -> Vec<String> {
    let reauth = format!(
        "re-authorize the OAuth connection: PUT /api/v1/tenants/{tenant}/providers/{provider}/credentials with a fresh credentials document"
    );
    let url = callbacks.notification_url(kind);
    let webhook = if kind.is_graph() {
        format!(
            "check that {url} is reachable from Microsoft over HTTPS and answers the validationToken handshake (POST {url}?validationToken=abc must answer 200 text/plain 'abc')"
        )
    } else {
        format!("check that {url} is reachable from the provider over HTTPS")
    };
    let renew = format!(
        "force a renewal once fixed: subkeeper renew --tenant {tenant} --provider {provider}"
    );
    match condition {
        AlertCondition::NeedsReauth => vec![reauth, renew, webhook],
        AlertCondition::Error
            if matches!(class, Some(ErrorClass::Auth | ErrorClass::ReauthRequired)) =>
        {
            vec![reauth, webhook, renew]
        }
        AlertCondition::Error => vec![webhook, reauth, renew],
        AlertCondition::Silent => vec![
            webhook,
            format!(
                "force a renewal, which recreates a subscription the provider dropped without notice: subkeeper renew --tenant {tenant} --provider {provider}"
            ),
            "if webhooks arrive but are refused, look for bad_client_state or unknown_subscription in subkeeper_webhooks_received_total".to_owned(),
            "if the mailbox or calendar is simply quiet, this is expected: raise the kind's silence threshold (mail_silence_seconds, calendar_silence_seconds)".to_owned(),
        ],
        AlertCondition::PushBroken => vec![
            "nothing is lost: the changes were replayed on the webhook subject as source: replay and the subscription is being recreated".to_owned(),
            webhook,
            "if it happens again after the recreate, the provider is not delivering to this endpoint: look for refused webhooks in subkeeper_webhooks_received_total and at the provider's subscription status".to_owned(),
        ],
    }
}
