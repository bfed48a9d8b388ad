//! Google's side of the request limits: what a Calendar or Gmail request is
//! charged (the OAuth client as the project, the account behind the token as
//! the user, Gmail's quota units per method) and how Google words a refusal.
//!
//! Owns the per-method costs and the refusal bodies; the counting is `limits/`.
//! Wordings are the Calendar and Gmail error guides': over a per-user quota is
//! `403` `usageLimits`/`userRateLimitExceeded` "User Rate Limit Exceeded", over a
//! per-project quota `403` `rateLimitExceeded` "Rate Limit Exceeded", neither
//! with `Retry-After` (Google documents exponential backoff instead). A forced
//! throttle answers `429` `rateLimitExceeded` with the `Retry-After` it was set
//! with.

use crate::google::model::{GoogleCaller, GoogleError};
use crate::journal::Operation;
use crate::limits::{Api, Charge, GMAIL_STOP_UNITS, GMAIL_WATCH_UNITS, LimitKind, Throttle};

/// What a Google request is charged: Calendar requests count one each, Gmail
/// requests their method's quota units; all for the caller's OAuth client
/// (project) and account (user). Both methods of each API write.
pub(crate) fn charge(caller: &GoogleCaller, operation: Operation, path: &str) -> Charge {
    let gmail = path.starts_with("/gmail/");
    let units = match (gmail, operation) {
        (true, Operation::Create) => GMAIL_WATCH_UNITS,
        (true, Operation::Delete) => GMAIL_STOP_UNITS,
        _ => 1,
    };
    Charge {
        api: if gmail { Api::Gmail } else { Api::Calendar },
        tenant: caller.client_id.clone(),
        app: caller.client_id.clone(),
        user: Some(caller.account.clone()),
        write: true,
        units,
    }
}

/// Google's answer to a request a limit refused.
pub(crate) fn throttle_error(throttle: Throttle) -> GoogleError {
    let (status, reason, message) = match throttle.limit {
        LimitKind::CalendarPerUser | LimitKind::GmailPerUser => {
            (403, "userRateLimitExceeded", "User Rate Limit Exceeded")
        }
        LimitKind::CalendarPerProject | LimitKind::GmailPerProject => {
            (403, "rateLimitExceeded", "Rate Limit Exceeded")
        }
        _ => (429, "rateLimitExceeded", "Rate Limit Exceeded"),
    };
    GoogleError {
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        retry_after_seconds: throttle.retry_after_seconds,
    }
}
