//! The providers' request limits, kept client-side so that subkeeper slows
//! itself down before Microsoft or Google answer 429 — and, when they answer it
//! anyway, sends nothing more for that tenant (or Google account) until their
//! `Retry-After` has elapsed.
//!
//! What is kept, per scope the provider counts in (defaults: the published
//! limits less a safety margin, see [`LimitSettings`]):
//!
//! | budget | scope | published |
//! |---|---|---|
//! | Graph `/subscriptions` writes | app × tenant | 1,000 per 20 s |
//! | Graph requests in flight on one mailbox | app × tenant × mailbox | 4 |
//! | Calendar requests | OAuth client × Google account | 600 per minute |
//! | Gmail quota units (`users.watch` 100, `users.stop` 50) | OAuth client × Google account | 15,000 per minute |
//!
//! and, after a rate-limit answer, a block: a Graph 429 stops every request for
//! the tenant (all apps), a Google 429 or `userRateLimitExceeded` every request
//! as that account, a Google per-project 403 every request through that OAuth
//! client — until `Retry-After`. When a block lifts, one request goes first (the
//! probe) and the rest wait for its answer, so a throttle that is still on costs
//! one refused request, not one per provider.
//!
//! Two entry points:
//! - [`Limits::admit`], awaited by the supervisor (through the port's `admit`)
//!   *before* it takes a fleet-wide permit: it books the request's place in the
//!   budget and waits for it, and waits out short blocks, so a tenant that is
//!   out of budget never holds permits other tenants need.
//! - [`Limits::before_send`], in the authenticated call before every HTTP
//!   request: the backstop. It checks blocks (a blocked request is not sent: it
//!   fails as [`Held`], which the adapters classify as `throttled` with the
//!   remaining wait, so the lifecycle comes back exactly then), takes the
//!   mailbox slot, and records the send against what really went out.
//!
//! Everything runs on the service's [`SharedClock`] (domain time), so a scaled
//! or paused clock in tests and the demo paces requests as the simulator sharing
//! it counts them. This is a small window of our own rather than a rate-limit
//! crate such as `governor`. Bookings are evenly spaced (what governor's GCRA
//! does with no burst), but the check before a request leaves is an exact
//! sliding window over what was really sent, as the providers state their
//! limits ("no 20 s span holds a 1,001st"), which a token bucket cannot
//! express (with a full burst it lets up to 2× into one span); governor's
//! waiting runs on its own wall-clock timer, not on a scaled clock, so its
//! clock would have to be wrapped and its waits rewritten; and the budget a
//! [`Share`] gives this instance changes at run time while a governor quota is
//! fixed.
//!
//! Owns the budgets, blocks and probes. It must not decide what an attempt
//! does next (the lifecycle does, from the class of the error) nor know a
//! family's wire protocol: the adapters say what a request is charged
//! ([`Charge`]) and whether an answer was a rate limit ([`RateLimited`]).

mod window;

#[cfg(test)]
mod tests;

use crate::providers::oauth::AppIdentity;
use crate::telemetry::events::{BudgetWaited, ProviderRateLimited, RequestHeld};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use subkeeper_actors::domain::{Provider, ProviderId, ProviderKind};
use subkeeper_actors::ports::clock::SharedClock;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use window::Window;

/// Span of Graph's subscription-service budgets.
pub const GRAPH_WINDOW: TimeDelta = TimeDelta::seconds(20);

/// Span of Google's per-user quotas.
pub const GOOGLE_WINDOW: TimeDelta = TimeDelta::seconds(60);

/// A block that ends within this much domain time is waited out in `admit`
/// (before the fleet permit); a longer one fails the attempt at once as
/// throttled with the remaining wait, so the provider's lifecycle records it and
/// comes back when it ends rather than sitting "renewing" for hours.
pub const ADMIT_BLOCK_WAIT_MAX: TimeDelta = TimeDelta::seconds(60);

/// How long a Graph tenant waits after a 429 without `Retry-After`: one span of
/// the subscription budget, after which everything charged before has left it.
pub const GRAPH_DEFAULT_RETRY_AFTER: TimeDelta = TimeDelta::seconds(20);

/// How long a Google account (or OAuth client) waits after a rate-limit answer
/// without `Retry-After` (Google sends none for its per-minute quotas): one
/// minute, the span of those quotas.
pub const GOOGLE_DEFAULT_RETRY_AFTER: TimeDelta = TimeDelta::seconds(60);

/// Longest real time a waiter sleeps between looks at a probe in flight (its
/// answer wakes waiters at once; this only bounds a missed wake-up).
const PROBE_POLL: Duration = Duration::from_millis(200);

/// Shortest real sleep between two looks at a budget, so a fast clock cannot
/// turn a wait into a busy loop.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// How often, in domain time, empty windows and long-lifted blocks are let go.
const SWEEP_EVERY: TimeDelta = TimeDelta::minutes(1);

/// A block lifted this long ago with nobody probing is forgotten.
const BLOCK_FORGET_AFTER: TimeDelta = TimeDelta::hours(1);

/// Which provider API a request goes to; also the `family` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Microsoft Graph `/subscriptions` (mail and calendar).
    Graph,
    /// Google Calendar v3.
    GoogleCalendar,
    /// Gmail v1.
    Gmail,
}

impl Family {
    /// The family of a provider kind.
    pub fn of(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::GraphMail | ProviderKind::GraphCalendar => Self::Graph,
            ProviderKind::GoogleCalendar => Self::GoogleCalendar,
            ProviderKind::Gmail => Self::Gmail,
        }
    }

    /// The `family` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Graph => "graph",
            Self::GoogleCalendar => "google_calendar",
            Self::Gmail => "gmail",
        }
    }
}

/// The budgets one instance keeps before it divides them by its [`Share`]; a
/// zero switches that budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Graph `/subscriptions` writes (create, renew, delete) per app per tenant
    /// per [`GRAPH_WINDOW`].
    pub graph_writes_per_window: u32,
    /// Graph requests one app may have in flight on one mailbox.
    pub graph_mailbox_concurrency: u32,
    /// Calendar requests per Google account per OAuth client per
    /// [`GOOGLE_WINDOW`].
    pub calendar_requests_per_minute: u32,
    /// Gmail quota units per Google account per OAuth client per
    /// [`GOOGLE_WINDOW`].
    pub gmail_units_per_minute: u32,
    /// Real time after which a probe whose answer never came is given up and
    /// another request may probe (the longest one attempt can take).
    pub probe_timeout: Duration,
}

impl Default for LimitSettings {
    /// The published limits less a margin: 80 % of each rate (others — the
    /// customer's own apps on the same tenant or account — draw on the same
    /// budgets, and arrival times at the provider jitter), and 2 of Outlook's 4
    /// concurrent requests per mailbox (the product this feeds reads the same
    /// mailbox through the same app).
    fn default() -> Self {
        Self {
            graph_writes_per_window: 800,
            graph_mailbox_concurrency: 2,
            calendar_requests_per_minute: 480,
            gmail_units_per_minute: 12_000,
            probe_timeout: Duration::from_secs(60),
        }
    }
}

impl LimitSettings {
    /// No budgets at all; `Retry-After` blocks still apply.
    pub fn unlimited() -> Self {
        Self {
            graph_writes_per_window: 0,
            graph_mailbox_concurrency: 0,
            calendar_requests_per_minute: 0,
            gmail_units_per_minute: 0,
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// This instance's share of budgets that every instance on the same providers
/// draws on: with N instances each keeps 1/N of every rate and of every
/// mailbox's concurrency (at least one), so N instances together stay within
/// what one may do. One instance until told otherwise; whoever learns how many
/// instances share the fleet (the leases) updates it, and the limiter reads it
/// on every booking.
#[derive(Debug, Clone)]
pub struct Share {
    /// Instances sharing the budgets; at least 1.
    instances: Arc<AtomicU32>,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            instances: Arc::new(AtomicU32::new(1)),
        }
    }
}

impl Share {
    /// Sets how many instances share the budgets (0 counts as 1).
    pub fn set_instances(&self, instances: u32) {
        self.instances.store(instances.max(1), Ordering::Relaxed);
    }

    /// How many instances share the budgets.
    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    /// This instance's part of `budget` (at least 1 of a budget that is on).
    pub fn of(&self, budget: u32) -> u32 {
        if budget == 0 {
            0
        } else {
            (budget / self.instances()).max(1)
        }
    }
}

/// What one request draws on, as the adapter making it knows it.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// The API.
    pub family: Family,
    /// Whose request it is (its resource names the mailbox or account).
    pub provider: &'a Provider,
    /// The credentials row it authenticates with.
    pub credentials: Uuid,
    /// Units of the budget it costs: 1, or Gmail's per-method quota units.
    pub units: u32,
}

/// How far a rate-limit answer reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// The caller's own budget: the Graph tenant, the Google account.
    Caller {
        /// The answer's `Retry-After`, if it sent one.
        retry_after: Option<TimeDelta>,
    },
    /// Google's per-project quota: every account of the OAuth client.
    Project {
        /// The answer's `Retry-After`, if it sent one.
        retry_after: Option<TimeDelta>,
    },
}

/// A request not sent because its scope must not be called yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Domain time until which the provider asked for quiet.
    pub until: DateTime<Utc>,
    /// How long from when it was held.
    pub retry_after: TimeDelta,
    /// Who is blocked, for the message (`the tenant`, `this Google account`, …).
    pub scope: &'static str,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not sent: the provider rate-limited {} and asked for no requests until {} ({} s from now); it is retried then",
            self.scope,
            self.until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.retry_after.num_seconds().max(1)
        )
    }
}

/// A scope the providers count in (ids lowercased where the provider ignores
/// case). Google accounts are named by the credentials row and, where the
/// resource is an address, by that address too: a refresh token is one
/// account's grant, and one account may be connected through several rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    /// A Graph tenant, all apps (429 blocks).
    GraphTenant(String),
    /// One app in one Graph tenant (the writes budget).
    GraphApp { tenant: String, app: String },
    /// A Google account through one OAuth client, named by credentials row.
    GoogleGrant { app: String, credentials: Uuid },
    /// A Google account through one OAuth client, named by its address.
    GoogleAccount { app: String, account: String },
    /// Every account of one OAuth client (Google's per-project quotas).
    GoogleProject { app: String },
}

impl Scope {
    /// Who is blocked, as a message names it.
    fn describe(&self) -> &'static str {
        match self {
            Self::GraphTenant(_) | Self::GraphApp { .. } => "this Microsoft 365 tenant",
            Self::GoogleGrant { .. } | Self::GoogleAccount { .. } => "this Google account",
            Self::GoogleProject { .. } => "this Google OAuth client",
        }
    }
}

/// A budget: whose, and of which API (Calendar and Gmail quotas of one account
/// are separate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    scope: Scope,
    family: Family,
}

/// One app's requests on one mailbox (tenant, app, mailbox).
type MailboxKey = (String, String, String);

/// Everything one request is checked against.
#[derive(Debug, Clone)]
struct Keys {
    /// Scopes whose blocks stop it.
    blocks: Vec<Scope>,
    /// Scopes a caller-level rate limit blocks.
    caller: Vec<Scope>,
    /// The scope a project-level rate limit blocks.
    project: Option<Scope>,
    /// Budgets it draws on, with this instance's maximum and the span.
    windows: Vec<(WindowKey, u32, TimeDelta)>,
    /// The mailbox whose concurrency it takes, with this instance's cap.
    mailbox: Option<(MailboxKey, u32)>,
}

/// After a rate-limit answer: quiet until `until`, then one probe.
#[derive(Debug, Clone)]
struct Block {
    /// Domain time before which nothing is sent.
    until: DateTime<Utc>,
    /// Once lifted: the provider whose request is finding out whether the
    /// limit is over, and since when (real time: the request's own timeouts
    /// are real).
    probe: Option<(ProviderId, tokio::time::Instant)>,
}

/// What the blocks say about one request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Go (probes of lifted blocks taken).
    Open,
    /// Not before this instant; `scope` is the blocked scope's description.
    Blocked(DateTime<Utc>, &'static str),
    /// Another request is probing a lifted block: wait for its answer.
    Probing,
}

/// Blocks and budgets behind one lock (never held across an await).
#[derive(Debug, Default)]
struct State {
    blocks: HashMap<Scope, Block>,
    windows: HashMap<WindowKey, Window>,
    /// Domain time of the last sweep.
    swept_at: Option<DateTime<Utc>>,
}

/// The client-side limits shared by every provider adapter of one instance.
pub struct Limits {
    /// The budgets before sharing.
    settings: LimitSettings,
    /// This instance's part of them.
    share: Share,
    /// Domain time.
    clock: SharedClock,
    state: Mutex<State>,
    /// Mailbox slots; an entry nobody holds or awaits is let go at a sweep.
    mailboxes: Mutex<HashMap<MailboxKey, Arc<Semaphore>>>,
    /// Woken whenever a block is set, lifted or its probe answered.
    changed: Notify,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .field("instances", &self.share.instances())
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limits with `settings`, divided by `share`, on `clock`.
    pub fn new(settings: LimitSettings, share: Share, clock: SharedClock) -> Self {
        Self {
            settings,
            share,
            clock,
            state: Mutex::new(State::default()),
            mailboxes: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    /// No budgets, only `Retry-After` blocks (adapters built without limits).
    pub fn unlimited(clock: SharedClock) -> Self {
        Self::new(LimitSettings::unlimited(), Share::default(), clock)
    }

    /// This instance's share handle, for whoever learns the instance count.
    pub fn share(&self) -> &Share {
        &self.share
    }

    /// Waits, before the caller takes a fleet permit, until `charge` may be
    /// sent: books its place in each budget and sleeps until then, and waits out
    /// a block that ends within [`ADMIT_BLOCK_WAIT_MAX`]. Returns at once under
    /// a longer block: the send is then held and the attempt fails as throttled
    /// until the block ends. Never fails; [`Limits::before_send`] is the check.
    pub async fn admit(&self, charge: &Charge<'_>, app: &AppIdentity) {
        let keys = self.keys(charge, app);
        let provider = charge.provider.id;
        let begun = self.clock.now();
        let mut reason = None;
        loop {
            let notified = self.changed.notified();
            let now = self.clock.now();
            let booked = {
                let mut state = self.lock();
                state.sweep(now);
                match state.gate(&keys.blocks, provider, now, self.settings.probe_timeout) {
                    Gate::Open => Ok(state.book(&keys, now, charge.units)),
                    other => Err(other),
                }
            };
            match booked {
                Ok(at) => {
                    if at > now {
                        reason.get_or_insert("rate");
                        self.sleep(at - now).await;
                    }
                    break;
                }
                Err(Gate::Blocked(until, _)) if until - now > ADMIT_BLOCK_WAIT_MAX => return,
                Err(Gate::Blocked(until, _)) => {
                    reason = Some("retry_after");
                    self.sleep(until - now).await;
                }
                Err(_) => {
                    reason = Some("probe");
                    let _ = tokio::time::timeout(PROBE_POLL, notified).await;
                }
            }
        }
        if let Some(reason) = reason {
            BudgetWaited {
                family: charge.family.label(),
                reason,
                seconds: seconds(self.clock.now() - begun),
            }
            .emit();
        }
    }

    /// The check before a request leaves: `Err(Held)` if its scope is blocked
    /// (it must not be sent); otherwise waits for a mailbox slot and for room in
    /// the budgets as really sent (normally none: `admit` booked it), records
    /// the send and returns the ticket to report the answer on.
    pub async fn before_send(
        self: &Arc<Self>,
        charge: &Charge<'_>,
        app: &AppIdentity,
    ) -> Result<Ticket, Held> {
        let keys = self.keys(charge, app);
        let begun = self.clock.now();
        let mut reason = None;
        let slot = match &keys.mailbox {
            Some((key, cap)) => {
                let semaphore = self.mailbox(key, *cap);
                match Arc::clone(&semaphore).try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        reason = Some("concurrency");
                        // The semaphores are never closed.
                        semaphore.acquire_owned().await.ok()
                    }
                }
            }
            None => None,
        };
        self.sent(keys, charge, slot, reason, begun).await
    }

    /// The rest of [`Limits::before_send`], once the mailbox slot is held.
    async fn sent(
        self: &Arc<Self>,
        keys: Keys,
        charge: &Charge<'_>,
        slot: Option<OwnedSemaphorePermit>,
        mut reason: Option<&'static str>,
        begun: DateTime<Utc>,
    ) -> Result<Ticket, Held> {
        let provider = charge.provider.id;
        let family = charge.family;
        loop {
            let notified = self.changed.notified();
            let now = self.clock.now();
            let wait = {
                let mut state = self.lock();
                match state.gate(&keys.blocks, provider, now, self.settings.probe_timeout) {
                    Gate::Blocked(until, scope) => {
                        RequestHeld {
                            family: family.label(),
                        }
                        .emit();
                        return Err(Held {
                            until,
                            retry_after: until - now,
                            scope,
                        });
                    }
                    Gate::Probing => None,
                    Gate::Open => {
                        let wait = state.send_wait(&keys, now, charge.units);
                        if wait <= TimeDelta::zero() {
                            state.record_send(&keys, now, charge.units);
                            break;
                        }
                        Some(wait)
                    }
                }
            };
            match wait {
                Some(wait) => {
                    reason.get_or_insert("rate");
                    self.sleep(wait).await;
                }
                None => {
                    reason.get_or_insert("probe");
                    let _ = tokio::time::timeout(PROBE_POLL, notified).await;
                }
            }
        }
        if let Some(reason) = reason {
            BudgetWaited {
                family: family.label(),
                reason,
                seconds: seconds(self.clock.now() - begun),
            }
            .emit();
        }
        Ok(Ticket {
            limits: Arc::clone(self),
            family,
            keys,
            provider,
            _slot: slot,
            settled: false,
        })
    }

    /// When `scope`'s requests may be sent again, if they are blocked (tests).
    #[cfg(test)]
    fn blocked_until(&self, charge: &Charge<'_>, app: &AppIdentity) -> Option<DateTime<Utc>> {
        let keys = self.keys(charge, app);
        let now = self.clock.now();
        let state = self.lock();
        keys.blocks
            .iter()
            .filter_map(|s| state.blocks.get(s))
            .map(|b| b.until)
            .filter(|until| *until > now)
            .max()
    }

    /// What `charge` is checked against.
    fn keys(&self, charge: &Charge<'_>, app: &AppIdentity) -> Keys {
        let client = app.client_id.clone();
        match charge.family {
            Family::Graph => {
                let tenant = app.authority_tenant.to_lowercase();
                let blocks = vec![Scope::GraphTenant(tenant.clone())];
                let writes = self.share.of(self.settings.graph_writes_per_window);
                let cap = self.share.of(self.settings.graph_mailbox_concurrency);
                let mailbox = outlook_mailbox(&charge.provider.resource)
                    .filter(|_| cap > 0)
                    .map(|m| ((tenant.clone(), client.clone(), m), cap));
                let windows = if writes > 0 {
                    vec![(
                        WindowKey {
                            scope: Scope::GraphApp {
                                tenant,
                                app: client,
                            },
                            family: Family::Graph,
                        },
                        writes,
                        GRAPH_WINDOW,
                    )]
                } else {
                    Vec::new()
                };
                Keys {
                    caller: blocks.clone(),
                    blocks,
                    project: None,
                    windows,
                    mailbox,
                }
            }
            Family::GoogleCalendar | Family::Gmail => {
                let mut users = vec![Scope::GoogleGrant {
                    app: client.clone(),
                    credentials: charge.credentials,
                }];
                if let Some(account) = google_account(&charge.provider.resource) {
                    users.push(Scope::GoogleAccount {
                        app: client.clone(),
                        account,
                    });
                }
                let project = Scope::GoogleProject { app: client };
                let budget = self.share.of(match charge.family {
                    Family::Gmail => self.settings.gmail_units_per_minute,
                    _ => self.settings.calendar_requests_per_minute,
                });
                let windows = if budget > 0 {
                    users
                        .iter()
                        .map(|scope| {
                            (
                                WindowKey {
                                    scope: scope.clone(),
                                    family: charge.family,
                                },
                                budget,
                                GOOGLE_WINDOW,
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let mut blocks = users.clone();
                blocks.push(project.clone());
                Keys {
                    blocks,
                    caller: users,
                    project: Some(project),
                    windows,
                    mailbox: None,
                }
            }
        }
    }

    /// The slot semaphore of one mailbox.
    fn mailbox(&self, key: &MailboxKey, cap: u32) -> Arc<Semaphore> {
        let mut mailboxes = self
            .mailboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if mailboxes.len() > 1024 {
            // Let go of mailboxes nobody holds or waits for (their only
            // reference is the map's).
            mailboxes.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(
            mailboxes
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(cap as usize))),
        )
    }

    /// Sleeps for `span` of domain time (at least [`MIN_SLEEP`] of real time).
    async fn sleep(&self, span: TimeDelta) {
        tokio::time::sleep(self.clock.timer_delay(span).max(MIN_SLEEP)).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Settles a request's ticket: blocks what a rate-limit answer names,
    /// opens what a probe found open, and frees an unanswered probe.
    fn settle(&self, ticket: &Ticket, answer: Option<Option<RateLimited>>) {
        let now = self.clock.now();
        {
            let mut state = self.lock();
            // Probes this request held: answered → the scope is open (or
            // blocked again just below); unanswered → someone else may probe.
            for scope in &ticket.keys.blocks {
                let Some(block) = state.blocks.get_mut(scope) else {
                    continue;
                };
                let mine = block.probe.is_some_and(|(p, _)| p == ticket.provider);
                if !mine {
                    continue;
                }
                if answer.is_some() && block.until <= now {
                    state.blocks.remove(scope);
                } else {
                    block.probe = None;
                }
            }
            if let Some(Some(limited)) = answer {
                let (scopes, retry_after) = match limited {
                    RateLimited::Caller { retry_after } => {
                        (ticket.keys.caller.clone(), retry_after)
                    }
                    RateLimited::Project { retry_after } => {
                        (ticket.keys.project.iter().cloned().collect(), retry_after)
                    }
                };
                let wait =
                    retry_after
                        .filter(|w| *w > TimeDelta::zero())
                        .unwrap_or(match ticket.family {
                            Family::Graph => GRAPH_DEFAULT_RETRY_AFTER,
                            _ => GOOGLE_DEFAULT_RETRY_AFTER,
                        });
                let until = now + wait;
                for scope in scopes {
                    let block = state
                        .blocks
                        .entry(scope)
                        .or_insert(Block { until, probe: None });
                    block.until = block.until.max(until);
                    block.probe = None;
                }
                ProviderRateLimited {
                    family: ticket.family.label(),
                    retry_after_seconds: seconds(wait),
                }
                .emit();
            }
        }
        self.changed.notify_waiters();
    }
}

/// One request on its way: holds its mailbox slot until dropped; report its
/// answer with [`Ticket::answered`]. Dropped unanswered (a timeout, a lost
/// connection, a cancelled attempt), it gives up any probe it held.
pub struct Ticket {
    limits: Arc<Limits>,
    family: Family,
    keys: Keys,
    provider: ProviderId,
    /// The mailbox slot, released on drop.
    _slot: Option<OwnedSemaphorePermit>,
    /// Answered already.
    settled: bool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("family", &self.family)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// The provider answered: `Some` when the answer was a rate limit.
    pub fn answered(mut self, limited: Option<RateLimited>) {
        self.settled = true;
        let limits = Arc::clone(&self.limits);
        limits.settle(&self, Some(limited));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            let limits = Arc::clone(&self.limits);
            limits.settle(self, None);
        }
    }
}

impl State {
    /// Lets go of empty windows and blocks long lifted, once a minute.
    fn sweep(&mut self, now: DateTime<Utc>) {
        let due = self
            .swept_at
            .is_none_or(|at| now < at || now - at >= SWEEP_EVERY);
        if due {
            self.windows.retain(|_, w| !w.is_idle(now));
            self.blocks
                .retain(|_, b| b.probe.is_some() || now - b.until < BLOCK_FORGET_AFTER);
            self.swept_at = Some(now);
        }
    }

    /// What the blocks of `scopes` say for `provider`'s request at `now`;
    /// `Open` takes the probe of every lifted block.
    fn gate(
        &mut self,
        scopes: &[Scope],
        provider: ProviderId,
        now: DateTime<Utc>,
        probe_timeout: Duration,
    ) -> Gate {
        let mut blocked: Option<(DateTime<Utc>, &'static str)> = None;
        let mut probing = false;
        let real_now = tokio::time::Instant::now();
        for scope in scopes {
            let Some(block) = self.blocks.get(scope) else {
                continue;
            };
            if block.until > now {
                if blocked.is_none_or(|(until, _)| block.until > until) {
                    blocked = Some((block.until, scope.describe()));
                }
            } else if let Some((holder, since)) = block.probe
                && holder != provider
                && real_now.saturating_duration_since(since) < probe_timeout
            {
                probing = true;
            }
        }
        if let Some((until, scope)) = blocked {
            return Gate::Blocked(until, scope);
        }
        if probing {
            return Gate::Probing;
        }
        for scope in scopes {
            if let Some(block) = self.blocks.get_mut(scope)
                && block.until <= now
            {
                block.probe = Some((provider, real_now));
            }
        }
        Gate::Open
    }

    /// Books `units` in every budget of `keys`: the instant all of them have room.
    fn book(&mut self, keys: &Keys, now: DateTime<Utc>, units: u32) -> DateTime<Utc> {
        let mut at = now;
        for (key, max, span) in &keys.windows {
            let window = self
                .windows
                .entry(key.clone())
                .or_insert_with(|| Window::new(*span));
            at = at.max(window.book(now, *max, units));
        }
        at
    }

    /// How long until `units` fit in every budget of `keys` as really sent.
    fn send_wait(&mut self, keys: &Keys, now: DateTime<Utc>, units: u32) -> TimeDelta {
        keys.windows
            .iter()
            .map(|(key, max, span)| {
                self.windows
                    .entry(key.clone())
                    .or_insert_with(|| Window::new(*span))
                    .send_wait(now, *max, units)
            })
            .max()
            .unwrap_or(TimeDelta::zero())
    }

    /// Records `units` sent in every budget of `keys`.
    fn record_send(&mut self, keys: &Keys, now: DateTime<Utc>, units: u32) {
        for (key, _, span) in &keys.windows {
            self.windows
                .entry(key.clone())
                .or_insert_with(|| Window::new(*span))
                .record_send(now, units);
        }
    }
}

/// The mailbox an Outlook resource names, as Graph counts concurrency:
/// `users/{id or UPN}/…`, `users('{id}')/…`, `groups/{id}/…`, `me/…`
/// (lowercased); `None` for anything else.
pub fn outlook_mailbox(resource: &str) -> Option<String> {
    let path = resource.trim().trim_start_matches('/');
    let lower = path.to_lowercase();
    let (head, rest) = lower.split_once('/').unwrap_or((lower.as_str(), ""));
    if head == "me" {
        return Some("me".to_owned());
    }
    if let Some(inner) = head
        .strip_prefix("users('")
        .and_then(|s| s.strip_suffix("')"))
    {
        return (!inner.is_empty()).then(|| inner.to_owned());
    }
    if head == "users" || head == "groups" {
        let id = rest.split('/').next().unwrap_or("");
        return (!id.is_empty()).then(|| id.to_owned());
    }
    None
}

/// The Google account a resource names, when it is an address (a Gmail
/// mailbox, a user's own calendar id); `None` for `me`, `primary` and calendar
/// ids that are not addresses.
fn google_account(resource: &str) -> Option<String> {
    let resource = resource.trim();
    resource.contains('@').then(|| resource.to_lowercase())
}

/// A span in (fractional) seconds, for metrics.
fn seconds(span: TimeDelta) -> f64 {
    span.num_milliseconds().max(0) as f64 / 1000.0
}
