//! Forced throttling: windows of provider time during which a whole Graph tenant,
//! or a set of Google accounts, is answered 429 with `Retry-After` whatever it
//! asks — "Graph throttles this tenant for the next three hours".
//!
//! Owns the windows and the decision "is this request inside one". Windows are
//! on the simulated clock: a window of three hours passes in one
//! [`crate::Simulator::advance`] call, or in 3 h / speed of wall time under a
//! scaled clock. What a throttled answer looks like is the family's business.

use crate::journal::lock;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Who a forced throttle hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// Every Graph API request whose access token was issued in this tenant,
    /// whatever the app. The token endpoint is not Graph and keeps answering.
    GraphTenant(String),
    /// Every Calendar and Gmail API request made as one of these Google
    /// accounts (the user behind the access token; case-insensitive).
    GoogleUsers(Vec<String>),
}

/// A request to throttle a scope from now on (the body of `POST /_sim/throttles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForcedThrottle {
    /// Who is throttled.
    pub scope: ThrottleScope,
    /// How long the window lasts from the moment it is set, in provider seconds.
    pub duration_seconds: u64,
    /// The `Retry-After` every throttled answer carries, in provider seconds;
    /// when absent, the seconds left in the window (rounded up), which is what
    /// a client that honours it needs to get through on its next try.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
}

impl ForcedThrottle {
    /// Throttles Graph tenant `tenant` for `duration` of provider time.
    pub fn graph_tenant(tenant: impl Into<String>, duration: TimeDelta) -> Self {
        Self {
            scope: ThrottleScope::GraphTenant(tenant.into()),
            duration_seconds: whole_seconds(duration),
            retry_after_seconds: None,
        }
    }

    /// Throttles the Google accounts `accounts` for `duration` of provider time.
    pub fn google_users<I, S>(accounts: I, duration: TimeDelta) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            scope: ThrottleScope::GoogleUsers(accounts.into_iter().map(Into::into).collect()),
            duration_seconds: whole_seconds(duration),
            retry_after_seconds: None,
        }
    }

    /// Sends `Retry-After: seconds` instead of the time left in the window.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// Rejects throttles the simulator could not act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration_seconds == 0 {
            return Err("duration_seconds must be positive".into());
        }
        if i64::try_from(self.duration_seconds).is_err() {
            return Err("duration_seconds out of range".into());
        }
        if self.retry_after_seconds == Some(0) {
            return Err("retry_after_seconds must be positive when given".into());
        }
        match &self.scope {
            ThrottleScope::GraphTenant(tenant) if tenant.is_empty() => {
                Err("graph_tenant must not be empty".into())
            }
            ThrottleScope::GoogleUsers(accounts)
                if accounts.is_empty() || accounts.iter().any(String::is_empty) =>
            {
                Err("google_users must name at least one account, none empty".into())
            }
            _ => Ok(()),
        }
    }
}

/// A forced throttle as set: its scope and the provider time it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleWindow {
    /// Who is throttled.
    pub scope: ThrottleScope,
    /// Provider time it was set (inclusive).
    pub from: DateTime<Utc>,
    /// Provider time it ends (exclusive): a request arriving then is served.
    pub until: DateTime<Utc>,
    /// The fixed `Retry-After`, if one was asked for.
    pub retry_after_seconds: Option<u64>,
}

impl ThrottleWindow {
    /// Whether a request arriving at `now` falls inside.
    fn covers(&self, now: DateTime<Utc>) -> bool {
        self.from <= now && now < self.until
    }
}

/// Who a request is, for matching forced throttles.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Requester<'a> {
    /// A Graph call with a token of this tenant.
    Graph {
        /// The token's tenant.
        tenant: &'a str,
    },
    /// A Google call made as this account.
    Google {
        /// The account behind the token.
        account: &'a str,
    },
}

/// The windows set, in the order they were set.
#[derive(Debug, Default)]
pub(crate) struct ForcedBook {
    /// Set windows; ended ones are let go when the book is read.
    windows: Mutex<Vec<ThrottleWindow>>,
}

impl ForcedBook {
    /// Sets a window starting at `now`.
    pub(crate) fn add(&self, throttle: ForcedThrottle, now: DateTime<Utc>) -> ThrottleWindow {
        let duration =
            TimeDelta::try_seconds(i64::try_from(throttle.duration_seconds).unwrap_or(i64::MAX))
                .unwrap_or(TimeDelta::MAX);
        let window = ThrottleWindow {
            scope: throttle.scope,
            from: now,
            until: now
                .checked_add_signed(duration)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            retry_after_seconds: throttle.retry_after_seconds,
        };
        lock(&self.windows).push(window.clone());
        window
    }

    /// Windows that have not ended by `now`.
    pub(crate) fn active(&self, now: DateTime<Utc>) -> Vec<ThrottleWindow> {
        let mut windows = lock(&self.windows);
        windows.retain(|w| w.until > now);
        windows.clone()
    }

    /// Removes every window.
    pub(crate) fn clear(&self) {
        lock(&self.windows).clear();
    }

    /// The `Retry-After` (seconds) for a request by `who` arriving at `now`, if
    /// a window covers it; with several, the one that ends last decides.
    pub(crate) fn retry_after(&self, who: Requester<'_>, now: DateTime<Utc>) -> Option<u64> {
        let windows = lock(&self.windows);
        windows
            .iter()
            .filter(|w| w.covers(now) && hits(&w.scope, who))
            .max_by_key(|w| w.until)
            .map(|w| {
                w.retry_after_seconds
                    .unwrap_or_else(|| super::window::retry_after_seconds(w.until - now))
            })
    }
}

/// Whether `scope` names `who`.
fn hits(scope: &ThrottleScope, who: Requester<'_>) -> bool {
    match (scope, who) {
        (ThrottleScope::GraphTenant(tenant), Requester::Graph { tenant: t }) => {
            tenant.eq_ignore_ascii_case(t)
        }
        (ThrottleScope::GoogleUsers(accounts), Requester::Google { account }) => {
            accounts.iter().any(|a| a.eq_ignore_ascii_case(account))
        }
        _ => false,
    }
}

/// `span` in whole seconds, negative spans as zero.
fn whole_seconds(span: TimeDelta) -> u64 {
    u64::try_from(span.num_seconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_covers_its_scope_for_its_span_only() {
        let book = ForcedBook::default();
        let now = Utc::now();
        book.add(ForcedThrottle::graph_tenant("T1", TimeDelta::hours(3)), now);
        book.add(
            ForcedThrottle::google_users(["a@example.com"], TimeDelta::hours(1)).retry_after(60),
            now,
        );
        let graph = |tenant| Requester::Graph { tenant };
        assert_eq!(book.retry_after(graph("t1"), now), Some(3 * 3600));
        assert_eq!(
            book.retry_after(graph("t1"), now + TimeDelta::hours(2)),
            Some(3600)
        );
        assert_eq!(book.retry_after(graph("t2"), now), None);
        assert_eq!(
            book.retry_after(graph("t1"), now + TimeDelta::hours(3)),
            None
        );
        let google = Requester::Google {
            account: "A@example.com",
        };
        assert_eq!(book.retry_after(google, now), Some(60));
        assert_eq!(book.active(now + TimeDelta::hours(2)).len(), 1);
        assert!(
            ForcedThrottle::graph_tenant("t", TimeDelta::zero())
                .validate()
                .is_err()
        );
        assert!(
            ForcedThrottle::google_users(Vec::<String>::new(), TimeDelta::hours(1))
                .validate()
                .is_err()
        );
    }
}
