//! Questions a test asks the journal to prove a client kept within the limits:
//! which requests were for this tenant, app or user; did any come before the
//! `Retry-After` it was given had elapsed; how many fell in the busiest
//! window of N seconds.
//!
//! Owns only queries over [`RecordedRequest`]s; it never changes the journal
//! or decides an answer.

use super::LimitKind;
use crate::journal::{Operation, RecordedRequest};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Which journaled requests to look at; every `Some` must match. The same
/// fields are the query string of `GET /_sim/requests`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFilter {
    /// Tenant (Graph: the token's or the token endpoint's; Google: the OAuth
    /// client id), exact.
    #[serde(default)]
    pub tenant: Option<String>,
    /// App (OAuth client id) of the access token, exact.
    #[serde(default)]
    pub app: Option<String>,
    /// User (Graph: the mailbox a resource names; Google: the account behind
    /// the token), case-insensitive.
    #[serde(default)]
    pub user: Option<String>,
    /// Only this operation.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// Only writes (`true`: POST, PATCH, PUT, DELETE to the API, token requests
    /// excluded) or only reads (`false`).
    #[serde(default)]
    pub writes: Option<bool>,
    /// Only answers with this status.
    #[serde(default)]
    pub status: Option<u16>,
}

impl RequestFilter {
    /// Whether `request` is one to look at.
    pub fn matches(&self, request: &RecordedRequest) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        same(&self.tenant, &request.tenant)
            && same(&self.app, &request.app)
            && self.user.as_ref().is_none_or(|w| {
                request
                    .user
                    .as_ref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(w))
            })
            && self.operation.is_none_or(|o| o == request.operation)
            && self.writes.is_none_or(|w| w == is_write(request))
            && self.status.is_none_or(|s| s == request.status)
    }
}

/// A request to the provider API that changes something.
fn is_write(request: &RecordedRequest) -> bool {
    request.operation != Operation::Token && !request.method.eq_ignore_ascii_case("GET")
}

/// A request that came before an earlier answer's `Retry-After` had elapsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyRetry {
    /// The answer that carried `Retry-After`.
    pub throttled: RecordedRequest,
    /// Provider time before which the client was told not to come back.
    pub not_before: DateTime<Utc>,
    /// The request that came anyway.
    pub early: RecordedRequest,
}

/// Every request that arrived before the `Retry-After` of an earlier answer
/// had elapsed, for the budget that answer was about:
///
/// - a forced tenant throttle, or a 429 the simulator did not attribute to a
///   limit (an injected fault): any request for the same tenant;
/// - a forced throttle of a Google account: any request as that account;
/// - mailbox concurrency: the same tenant, app and mailbox;
/// - subscription writes (requests) per app: writes (requests) of the same
///   tenant and app; per tenant: of the same tenant.
///
/// `requests` in journal order. Token requests never count as early: they are
/// not the throttled API.
pub fn early_retries(requests: &[RecordedRequest]) -> Vec<EarlyRetry> {
    let mut early = Vec::new();
    for (i, throttled) in requests.iter().enumerate() {
        let Some(seconds) = throttled.retry_after_seconds else {
            continue;
        };
        let Some(wait) = i64::try_from(seconds).ok().and_then(TimeDelta::try_seconds) else {
            continue;
        };
        let not_before = throttled.at + wait;
        for later in &requests[i + 1..] {
            if later.at < not_before
                && later.operation != Operation::Token
                && same_budget(throttled, later)
            {
                early.push(EarlyRetry {
                    throttled: throttled.clone(),
                    not_before,
                    early: later.clone(),
                });
            }
        }
    }
    early
}

/// Whether `later` draws on the budget `throttled` was refused for.
fn same_budget(throttled: &RecordedRequest, later: &RecordedRequest) -> bool {
    let tenant = throttled.tenant.is_some() && throttled.tenant == later.tenant;
    let app = throttled.app.is_some() && throttled.app == later.app;
    let user = match (&throttled.user, &later.user) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    match throttled.throttled_by {
        None | Some(LimitKind::ForcedTenant) => tenant,
        Some(LimitKind::ForcedUser) => user,
        Some(LimitKind::MailboxConcurrency) => tenant && app && user,
        Some(LimitKind::SubscriptionWritesPerApp) => tenant && app && is_write(later),
        Some(LimitKind::SubscriptionWritesPerTenant) => tenant && is_write(later),
        Some(LimitKind::SubscriptionRequestsPerApp) => tenant && app,
        Some(LimitKind::SubscriptionRequestsPerTenant) => tenant,
        Some(LimitKind::CalendarPerUser | LimitKind::GmailPerUser) => app && user,
        Some(LimitKind::CalendarPerProject | LimitKind::GmailPerProject) => app,
    }
}

/// The most requests that fall in any window `window` long (a window starting
/// at each request's arrival), e.g. "never more than 1,000 writes in 20 s"
/// over `requests` a [`RequestFilter`] picked. `requests` in journal order.
pub fn busiest_window(requests: &[RecordedRequest], window: TimeDelta) -> usize {
    let mut arrivals: Vec<DateTime<Utc>> = requests.iter().map(|r| r.at).collect();
    arrivals.sort_unstable();
    let mut busiest = 0;
    let mut start = 0;
    for (end, at) in arrivals.iter().enumerate() {
        while start < end && *at - arrivals[start] >= window {
            start += 1;
        }
        busiest = busiest.max(end + 1 - start);
    }
    busiest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seconds: i64, tenant: &str, method: &str) -> RecordedRequest {
        RecordedRequest {
            method: method.into(),
            path: "/v1.0/subscriptions".into(),
            operation: Operation::Create,
            tenant: Some(tenant.into()),
            app: Some("app".into()),
            user: None,
            resource: None,
            subscription_id: None,
            status: 201,
            retry_after_seconds: None,
            throttled_by: None,
            at: DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(seconds),
            body: None,
        }
    }

    #[test]
    fn early_retries_are_within_the_throttled_budget_only() {
        let mut throttled = request(0, "t1", "POST");
        throttled.status = 429;
        throttled.retry_after_seconds = Some(10);
        throttled.throttled_by = Some(LimitKind::SubscriptionWritesPerApp);
        let journal = [
            throttled,
            request(5, "t2", "POST"),  // another tenant
            request(6, "t1", "GET"),   // a read: not the writes budget
            request(9, "t1", "PATCH"), // early
            request(10, "t1", "POST"), // on time
        ];
        let early = early_retries(&journal);
        assert_eq!(early.len(), 1);
        assert_eq!(early[0].early.method, "PATCH");
        assert_eq!(busiest_window(&journal, TimeDelta::seconds(10)), 4);
        assert_eq!(busiest_window(&journal, TimeDelta::seconds(1)), 1);
        let writes = RequestFilter {
            tenant: Some("t1".into()),
            writes: Some(true),
            ..RequestFilter::default()
        };
        assert_eq!(journal.iter().filter(|r| writes.matches(r)).count(), 3);
    }
}
