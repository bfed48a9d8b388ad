//! The providers' request limits, enforced the way the providers enforce them:
//! Outlook's concurrent requests per app per mailbox, Graph's subscription
//! service rates per app and per tenant, Calendar's requests and Gmail's quota
//! units per user and per project — plus forced throttling, which a test sets
//! to make a whole tenant (or a set of Google accounts) answer 429 for hours.
//!
//! Owns the counters, the decision "does this request go through", and the
//! `Retry-After` it would need. It is consulted by the shared request plumbing
//! (`exchange.rs`) after authentication and before fault rules; what a refusal
//! looks like on the wire is each family's business (`graph/throttling.rs`,
//! `google/quota.rs`). Windows run on the simulated clock (see `window.rs`).
//! The journal records the outcome; `audit.rs` queries it.
//!
//! Sources (checked when this was written):
//! - Graph throttling limits, "Outlook service limits": 4 concurrent requests per
//!   app ID and mailbox combination (answered `429 ApplicationThrottled`,
//!   "Application is over its MailboxConcurrency limit.").
//! - Graph throttling limits, "Subscription service limits": POST, PUT, DELETE,
//!   PATCH 1,000 per 20 s per app per tenant and 2,000 per 20 s per tenant; any
//!   request 5,000 per 20 s per app per tenant and 10,000 per 20 s per tenant.
//! - Graph throttling guidance: requests made while throttled still count
//!   ("Microsoft Graph continues to log resource usage while a client is being
//!   throttled"), so refused Graph requests are charged too.
//! - Calendar API usage limits: 600 requests per minute per user per project and
//!   10,000 per minute per project, on a sliding window; over quota is `403` (or
//!   `429`) in `usageLimits`, and Google documents no `Retry-After` for it.
//! - Gmail API usage limits: 15,000 quota units per user per minute
//!   (`userRateLimitExceeded`), 1,200,000 per project per minute
//!   (`rateLimitExceeded`).

mod audit;
mod concurrency;
mod control;
mod forced;
mod window;

pub use audit::{EarlyRetry, RequestFilter, busiest_window, early_retries};
pub use forced::{ForcedThrottle, ThrottleScope, ThrottleWindow};

pub(crate) use concurrency::MailboxPermit;
pub(crate) use control::routes;

use crate::journal::lock;
use crate::{RecordedRequest, Simulator};
use chrono::{DateTime, TimeDelta, Utc};
use concurrency::MailboxGate;
use forced::{ForcedBook, Requester};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use window::SlidingWindow;

/// "At most `max` units in any `window_seconds`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Units allowed in any window (requests, or Gmail quota units).
    pub max: u64,
    /// Length of the sliding window, in provider seconds.
    pub window_seconds: u64,
}

impl RateLimit {
    /// `max` units per `window_seconds`.
    pub const fn new(max: u64, window_seconds: u64) -> Self {
        Self {
            max,
            window_seconds,
        }
    }

    /// The window as a span of provider time.
    fn window(self) -> TimeDelta {
        TimeDelta::try_seconds(i64::try_from(self.window_seconds).unwrap_or(i64::MAX))
            .unwrap_or(TimeDelta::MAX)
    }
}

/// Outlook's concurrent requests per app per mailbox.
pub const GRAPH_MAILBOX_CONCURRENCY: u32 = 4;
/// `Retry-After` sent with `ApplicationThrottled`, in seconds. Microsoft documents
/// no value for it; a slot frees as soon as one of the four requests ends, so a
/// short one.
pub const GRAPH_MAILBOX_RETRY_AFTER_SECONDS: u64 = 1;
/// Graph `/subscriptions` POST/PATCH/DELETE per app per tenant.
pub const GRAPH_SUBSCRIPTION_WRITES_PER_APP: RateLimit = RateLimit::new(1_000, 20);
/// Graph `/subscriptions` POST/PATCH/DELETE per tenant, all apps.
pub const GRAPH_SUBSCRIPTION_WRITES_PER_TENANT: RateLimit = RateLimit::new(2_000, 20);
/// Any Graph `/subscriptions` request per app per tenant.
pub const GRAPH_SUBSCRIPTION_REQUESTS_PER_APP: RateLimit = RateLimit::new(5_000, 20);
/// Any Graph `/subscriptions` request per tenant, all apps.
pub const GRAPH_SUBSCRIPTION_REQUESTS_PER_TENANT: RateLimit = RateLimit::new(10_000, 20);
/// Calendar API requests per user per project (OAuth client).
pub const CALENDAR_REQUESTS_PER_USER: RateLimit = RateLimit::new(600, 60);
/// Calendar API requests per project (OAuth client), all users.
pub const CALENDAR_REQUESTS_PER_PROJECT: RateLimit = RateLimit::new(10_000, 60);
/// Gmail API quota units per user per project.
pub const GMAIL_UNITS_PER_USER: RateLimit = RateLimit::new(15_000, 60);
/// Gmail API quota units per project, all users.
pub const GMAIL_UNITS_PER_PROJECT: RateLimit = RateLimit::new(1_200_000, 60);

/// The limits the simulator enforces; each `None` switches one off. The default
/// is the providers' published numbers: faithful unless a test says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderLimits {
    /// Graph requests one app may have in flight on one mailbox (requests on
    /// Outlook resources: `users/{id}/…`, `me/…`, group mailboxes).
    pub graph_mailbox_concurrency: Option<u32>,
    /// `Retry-After` for a request over the mailbox concurrency, in seconds.
    pub graph_mailbox_retry_after_seconds: u64,
    /// Graph subscription writes (create, renew, delete, reauthorize) per app
    /// per tenant.
    pub graph_subscription_writes_per_app: Option<RateLimit>,
    /// Graph subscription writes per tenant, all apps.
    pub graph_subscription_writes_per_tenant: Option<RateLimit>,
    /// Any Graph subscription request per app per tenant.
    pub graph_subscription_requests_per_app: Option<RateLimit>,
    /// Any Graph subscription request per tenant, all apps.
    pub graph_subscription_requests_per_tenant: Option<RateLimit>,
    /// Calendar requests per user per OAuth client.
    pub calendar_requests_per_user: Option<RateLimit>,
    /// Calendar requests per OAuth client.
    pub calendar_requests_per_project: Option<RateLimit>,
    /// Gmail quota units per user per OAuth client (`users.watch` costs
    /// [`GMAIL_WATCH_UNITS`], `users.stop` [`GMAIL_STOP_UNITS`]).
    pub gmail_units_per_user: Option<RateLimit>,
    /// Gmail quota units per OAuth client.
    pub gmail_units_per_project: Option<RateLimit>,
}

/// Quota units Gmail charges for `users.watch`.
pub const GMAIL_WATCH_UNITS: u64 = 100;
/// Quota units Gmail charges for `users.stop`.
pub const GMAIL_STOP_UNITS: u64 = 50;

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            graph_mailbox_concurrency: Some(GRAPH_MAILBOX_CONCURRENCY),
            graph_mailbox_retry_after_seconds: GRAPH_MAILBOX_RETRY_AFTER_SECONDS,
            graph_subscription_writes_per_app: Some(GRAPH_SUBSCRIPTION_WRITES_PER_APP),
            graph_subscription_writes_per_tenant: Some(GRAPH_SUBSCRIPTION_WRITES_PER_TENANT),
            graph_subscription_requests_per_app: Some(GRAPH_SUBSCRIPTION_REQUESTS_PER_APP),
            graph_subscription_requests_per_tenant: Some(GRAPH_SUBSCRIPTION_REQUESTS_PER_TENANT),
            calendar_requests_per_user: Some(CALENDAR_REQUESTS_PER_USER),
            calendar_requests_per_project: Some(CALENDAR_REQUESTS_PER_PROJECT),
            gmail_units_per_user: Some(GMAIL_UNITS_PER_USER),
            gmail_units_per_project: Some(GMAIL_UNITS_PER_PROJECT),
        }
    }
}

impl ProviderLimits {
    /// No limits at all (forced throttles still apply): for a load test of the
    /// service itself, never for a test of how it behaves at the provider.
    pub fn unlimited() -> Self {
        Self {
            graph_mailbox_concurrency: None,
            graph_mailbox_retry_after_seconds: GRAPH_MAILBOX_RETRY_AFTER_SECONDS,
            graph_subscription_writes_per_app: None,
            graph_subscription_writes_per_tenant: None,
            graph_subscription_requests_per_app: None,
            graph_subscription_requests_per_tenant: None,
            calendar_requests_per_user: None,
            calendar_requests_per_project: None,
            gmail_units_per_user: None,
            gmail_units_per_project: None,
        }
    }
}

/// Which limit refused a request (recorded in the journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// A forced throttle on the Graph tenant ([`ThrottleScope::GraphTenant`]).
    ForcedTenant,
    /// A forced throttle on the Google account ([`ThrottleScope::GoogleUsers`]).
    ForcedUser,
    /// Outlook's concurrent requests per app per mailbox.
    MailboxConcurrency,
    /// Graph subscription writes per app per tenant.
    SubscriptionWritesPerApp,
    /// Graph subscription writes per tenant.
    SubscriptionWritesPerTenant,
    /// Graph subscription requests per app per tenant.
    SubscriptionRequestsPerApp,
    /// Graph subscription requests per tenant.
    SubscriptionRequestsPerTenant,
    /// Calendar requests per user per project.
    CalendarPerUser,
    /// Calendar requests per project.
    CalendarPerProject,
    /// Gmail quota units per user per project.
    GmailPerUser,
    /// Gmail quota units per project.
    GmailPerProject,
}

/// A refusal: which limit, and the `Retry-After` the answer carries (none
/// where the provider sends none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    /// The limit that refused.
    pub(crate) limit: LimitKind,
    /// Seconds for the `Retry-After` header.
    pub(crate) retry_after_seconds: Option<u64>,
}

/// Which provider API a request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Graph `/subscriptions` (the subscription service).
    GraphSubscriptions,
    /// Any other Graph path on an Outlook resource (`users/{id}/messages/delta`
    /// and the like): Outlook's limits only.
    GraphOutlook,
    /// Google Calendar v3.
    Calendar,
    /// Gmail v1.
    Gmail,
}

/// What one admitted-so-far request draws on, as its family sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    /// The API charged.
    pub(crate) api: Api,
    /// Graph: the token's tenant. Google: the OAuth client (the project).
    pub(crate) tenant: String,
    /// The app (OAuth client id) the token was issued to.
    pub(crate) app: String,
    /// Graph: the mailbox of an Outlook resource (lowercased; `me` for the
    /// signed-in user), none for other resources. Google: the account behind
    /// the token.
    pub(crate) user: Option<String>,
    /// POST, PATCH, PUT or DELETE.
    pub(crate) write: bool,
    /// Quota units (Gmail's per-method cost; 1 elsewhere).
    pub(crate) units: u64,
}

/// Whose window a count belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    /// The limit counted.
    limit: LimitKind,
    /// Tenant (Graph) or OAuth client (Google).
    tenant: String,
    /// App, for per-app limits; empty otherwise.
    app: String,
    /// User, for per-user limits; empty otherwise.
    user: String,
}

/// How often, in provider time, windows that emptied are let go.
const SWEEP_EVERY: TimeDelta = TimeDelta::minutes(1);

/// The sliding windows by owner.
#[derive(Debug, Default)]
struct Windows {
    /// Each owner's window, created on its first charge.
    by_key: HashMap<WindowKey, SlidingWindow>,
    /// Provider time of the last sweep of empty windows.
    swept_at: Option<DateTime<Utc>>,
}

impl Windows {
    /// The window of `key`, `rule.window_seconds` long.
    fn of(&mut self, key: WindowKey, rule: RateLimit) -> &mut SlidingWindow {
        self.by_key
            .entry(key)
            .or_insert_with(|| SlidingWindow::new(rule.window()))
    }

    /// Lets go of windows with nothing left in them, at most once a minute of
    /// provider time (a long `simulate` run meets many tenants and users).
    fn sweep(&mut self, now: DateTime<Utc>) {
        let due = self
            .swept_at
            .is_none_or(|at| now < at || now - at >= SWEEP_EVERY);
        if due {
            self.by_key.retain(|_, w| !w.is_empty_at(now));
            self.swept_at = Some(now);
        }
    }
}

/// Every counter the limits keep, and the forced throttles.
#[derive(Debug, Default)]
pub(crate) struct LimitBook {
    /// Sliding windows by owner.
    windows: Mutex<Windows>,
    /// Requests in flight per app per mailbox.
    mailboxes: MailboxGate,
    /// Forced throttles.
    forced: ForcedBook,
}

impl LimitBook {
    /// Lets a request through or refuses it. Through: the mailbox slot it holds
    /// until dropped, if it takes one.
    pub(crate) fn admit(
        &self,
        limits: &ProviderLimits,
        charge: &Charge,
        now: DateTime<Utc>,
    ) -> Result<Option<MailboxPermit>, Throttle> {
        let requester = match (charge.api, &charge.user) {
            (Api::GraphSubscriptions | Api::GraphOutlook, _) => Some(Requester::Graph {
                tenant: &charge.tenant,
            }),
            (Api::Calendar | Api::Gmail, Some(account)) => Some(Requester::Google { account }),
            (Api::Calendar | Api::Gmail, None) => None,
        };
        if let Some(requester) = requester
            && let Some(seconds) = self.forced.retry_after(requester, now)
        {
            let limit = match requester {
                Requester::Graph { .. } => LimitKind::ForcedTenant,
                Requester::Google { .. } => LimitKind::ForcedUser,
            };
            return Err(Throttle {
                limit,
                retry_after_seconds: Some(seconds),
            });
        }
        match charge.api {
            Api::GraphSubscriptions => {
                self.charge_graph(limits, charge, now)?;
                self.take_mailbox_slot(limits, charge)
            }
            Api::GraphOutlook => self.take_mailbox_slot(limits, charge),
            Api::Calendar => {
                let rules = [
                    (
                        LimitKind::CalendarPerUser,
                        limits.calendar_requests_per_user,
                    ),
                    (
                        LimitKind::CalendarPerProject,
                        limits.calendar_requests_per_project,
                    ),
                ];
                self.charge_google(&rules, charge, now).map(|()| None)
            }
            Api::Gmail => {
                let rules = [
                    (LimitKind::GmailPerUser, limits.gmail_units_per_user),
                    (LimitKind::GmailPerProject, limits.gmail_units_per_project),
                ];
                self.charge_google(&rules, charge, now).map(|()| None)
            }
        }
    }

    /// Graph's subscription service: every request is counted in every window
    /// it belongs to, refused or not (Graph keeps counting while it throttles);
    /// a window over its limit refuses, with the wait until one more request
    /// fits (the longest, when several are over).
    fn charge_graph(
        &self,
        limits: &ProviderLimits,
        charge: &Charge,
        now: DateTime<Utc>,
    ) -> Result<(), Throttle> {
        let mut rules = vec![
            (
                LimitKind::SubscriptionRequestsPerApp,
                limits.graph_subscription_requests_per_app,
            ),
            (
                LimitKind::SubscriptionRequestsPerTenant,
                limits.graph_subscription_requests_per_tenant,
            ),
        ];
        if charge.write {
            rules.push((
                LimitKind::SubscriptionWritesPerApp,
                limits.graph_subscription_writes_per_app,
            ));
            rules.push((
                LimitKind::SubscriptionWritesPerTenant,
                limits.graph_subscription_writes_per_tenant,
            ));
        }
        let mut windows = lock(&self.windows);
        windows.sweep(now);
        let mut refusal: Option<(LimitKind, TimeDelta)> = None;
        for (limit, rule) in rules {
            let Some(rule) = rule else { continue };
            let window = windows.of(key(limit, charge), rule);
            window.charge(now, charge.units);
            if window.used(now) > rule.max {
                let wait = window.wait_for(now, rule.max, 1);
                if refusal.is_none_or(|(_, longest)| wait > longest) {
                    refusal = Some((limit, wait));
                }
            }
        }
        match refusal {
            Some((limit, wait)) => Err(Throttle {
                limit,
                retry_after_seconds: Some(window::retry_after_seconds(wait)),
            }),
            None => Ok(()),
        }
    }

    /// Outlook's mailbox concurrency, for a Graph request on a mailbox.
    fn take_mailbox_slot(
        &self,
        limits: &ProviderLimits,
        charge: &Charge,
    ) -> Result<Option<MailboxPermit>, Throttle> {
        let (Some(max), Some(mailbox)) = (limits.graph_mailbox_concurrency, &charge.user) else {
            return Ok(None);
        };
        let slot = (charge.tenant.clone(), charge.app.clone(), mailbox.clone());
        self.mailboxes
            .try_acquire(slot, max)
            .map(Some)
            .ok_or(Throttle {
                limit: LimitKind::MailboxConcurrency,
                retry_after_seconds: Some(limits.graph_mailbox_retry_after_seconds),
            })
    }

    /// Google's quotas: a request is charged only when every window has room
    /// for it; over quota is refused without `Retry-After`, as Google answers.
    fn charge_google(
        &self,
        rules: &[(LimitKind, Option<RateLimit>)],
        charge: &Charge,
        now: DateTime<Utc>,
    ) -> Result<(), Throttle> {
        let mut windows = lock(&self.windows);
        windows.sweep(now);
        for &(limit, rule) in rules {
            let Some(rule) = rule else { continue };
            let used = windows.of(key(limit, charge), rule).used(now);
            if used.saturating_add(charge.units) > rule.max {
                return Err(Throttle {
                    limit,
                    retry_after_seconds: None,
                });
            }
        }
        for &(limit, rule) in rules {
            let Some(rule) = rule else { continue };
            windows
                .of(key(limit, charge), rule)
                .charge(now, charge.units);
        }
        Ok(())
    }
}

/// The window `limit` counts `charge` in.
fn key(limit: LimitKind, charge: &Charge) -> WindowKey {
    let per_app = matches!(
        limit,
        LimitKind::SubscriptionRequestsPerApp | LimitKind::SubscriptionWritesPerApp
    );
    let per_user = matches!(limit, LimitKind::CalendarPerUser | LimitKind::GmailPerUser);
    WindowKey {
        limit,
        tenant: charge.tenant.to_lowercase(),
        app: if per_app {
            charge.app.clone()
        } else {
            String::new()
        },
        user: if per_user {
            charge.user.clone().unwrap_or_default().to_lowercase()
        } else {
            String::new()
        },
    }
}

/// Forced throttling and journal queries on the handle (the rest of
/// [`Simulator`] is in `lib.rs`).
impl Simulator {
    /// Throttles a Graph tenant or a set of Google accounts from now for
    /// `throttle.duration_seconds` of provider time: every API request they make
    /// in the window is answered 429 with `Retry-After`; after it, they are served.
    pub fn force_throttle(&self, throttle: ForcedThrottle) -> ThrottleWindow {
        self.shared.limits.forced.add(throttle, self.now())
    }

    /// Forced throttles that have not ended yet, in the order they were set.
    pub fn throttle_windows(&self) -> Vec<ThrottleWindow> {
        self.shared.limits.forced.active(self.now())
    }

    /// Ends every forced throttle now.
    pub fn clear_throttle_windows(&self) {
        self.shared.limits.forced.clear();
    }

    /// Graph requests app `app` of `tenant` has in flight on `mailbox` now
    /// (the mailbox as the resource names it: a user id, a UPN, or `me`).
    pub fn mailbox_requests_in_flight(&self, tenant: &str, app: &str, mailbox: &str) -> u32 {
        self.shared.limits.mailboxes.in_flight(&(
            tenant.to_owned(),
            app.to_owned(),
            mailbox.to_lowercase(),
        ))
    }

    /// The journaled requests `filter` matches, oldest first.
    pub fn requests_where(&self, filter: &RequestFilter) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect()
    }

    /// The journaled requests for `tenant` (Graph: the token's or the token
    /// endpoint's tenant; Google: the OAuth client id), oldest first.
    pub fn requests_for_tenant(&self, tenant: &str) -> Vec<RecordedRequest> {
        self.requests_where(&RequestFilter {
            tenant: Some(tenant.to_owned()),
            ..RequestFilter::default()
        })
    }

    /// Every journaled request that came before the `Retry-After` of an earlier
    /// answer had elapsed, for the budget that answer was about (see
    /// [`early_retries`]). Empty for a client that honours `Retry-After`.
    pub fn early_retries(&self) -> Vec<EarlyRetry> {
        early_retries(&self.requests())
    }
}
