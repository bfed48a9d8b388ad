//! The subscription lifecycle of one provider as a pure state machine.
//!
//! It decides what to attempt (register, renew, recreate), when the next attempt is
//! due, how failures count toward the error threshold, and which health state the
//! provider is in. It performs no I/O and reads no clock: callers pass `now` and a
//! jitter draw in `[0, 1)`, which is what makes it property-testable and lets the
//! supervisor actor stay a thin driver.
//!
//! Structural guarantees (checked by the model-based proptest below):
//! - at most one attempt is in flight: every method that answers "attempt now" has
//!   already marked that attempt in flight;
//! - a renew answered `not_found` is followed by a recreate attempt at once, before
//!   any timer can fire;
//! - status is `error` iff failures ≥ threshold, unless `needs_reauth`;
//! - one success resets the failure count and the status.

use crate::domain::{AttemptKind, ErrorClass, HealthState, RenewalAction};
use chrono::{DateTime, TimeDelta, Utc};

/// Timing and threshold rules for one provider kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Renew this long before expiry (must be shorter than the subscription lifetime).
    pub lookahead: TimeDelta,
    /// Up to this much extra lead time, drawn per schedule, so that thousands of
    /// providers created together do not all fire in the same second.
    pub jitter_max: TimeDelta,
    /// Consecutive failures that put the provider in `error`.
    pub failure_threshold: u32,
    /// First retry delay after a failure; doubles with each further failure.
    pub backoff_base: TimeDelta,
    /// Longest backoff delay under the threshold.
    pub backoff_cap: TimeDelta,
    /// Retry cadence once in `error`.
    pub cooloff: TimeDelta,
    /// Shortest delay ever scheduled, so a misbehaving provider cannot cause a hot loop.
    pub min_delay: TimeDelta,
    /// Up to this fraction (0–0.5) of the renewal period (from now until the
    /// renewal would otherwise be due) of extra lead time, a fixed share per
    /// provider ([`Policy::spread_share`]): a fleet registered in one minute
    /// renews spread over that span, and the spread grows with every renewal
    /// instead of the burst repeating each lifetime. Relative to the period as
    /// scheduled, so it never brings a renewal closer than half a period.
    pub spread: f64,
    /// This provider's share of [`Policy::spread`], in `[0, 1)`; the same at
    /// every schedule (see [`Policy::for_provider`]).
    pub spread_share: f64,
}

impl Policy {
    /// This policy for the provider with id `id`: its spread share is derived
    /// from the id (uniform over providers, the same on every instance and
    /// after every restart).
    pub fn for_provider(mut self, id: uuid::Uuid) -> Self {
        let bytes = id.as_u128().to_be_bytes();
        let mut high = [0u8; 8];
        high.copy_from_slice(&bytes[..8]);
        self.spread_share = (u64::from_be_bytes(high) >> 11) as f64 / (1u64 << 53) as f64;
        self
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            lookahead: TimeDelta::hours(24),
            jitter_max: TimeDelta::minutes(5),
            failure_threshold: 3,
            backoff_base: TimeDelta::seconds(30),
            backoff_cap: TimeDelta::minutes(30),
            cooloff: TimeDelta::minutes(15),
            min_delay: TimeDelta::seconds(1),
            spread: 0.0,
            spread_share: 0.0,
        }
    }
}

/// What a provider call came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The subscription is alive until `expires_at` (as returned by the provider).
    Succeeded {
        /// Expiry returned by the provider.
        expires_at: DateTime<Utc>,
    },
    /// The call failed.
    Failed {
        /// How to handle it.
        class: ErrorClass,
        /// The provider's Retry-After, if it sent one.
        retry_after: Option<TimeDelta>,
    },
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call the provider now; the attempt is already marked in flight.
    AttemptNow(AttemptKind),
    /// Arm a timer for this instant, then call [`Lifecycle::due`].
    At(DateTime<Utc>),
    /// Nothing until credentials change or a renewal is forced.
    Parked,
    /// An attempt is in flight; its completion decides.
    Busy,
}

/// The result of completing an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// What the attempt set out to do.
    pub attempt: AttemptKind,
    /// What it achieved.
    pub action: RenewalAction,
    /// Health before the attempt started.
    pub previous: HealthState,
    /// Health now.
    pub status: HealthState,
    /// What to do next.
    pub next: Next,
}

/// One provider's lifecycle state.
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    /// The rules.
    policy: Policy,
    /// Expiry of the live subscription; `None` when there is none (or it is gone).
    expires_at: Option<DateTime<Utc>>,
    /// True once a subscription existed, so a missing one is recreated, not registered.
    had_subscription: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// Parked until re-authorized.
    needs_reauth: bool,
    /// The attempt in flight and the health before it started.
    in_flight: Option<(AttemptKind, HealthState)>,
    /// When the next attempt is due, while a timer is armed.
    next_at: Option<DateTime<Utc>>,
}

impl Lifecycle {
    /// A provider with no subscription and no history.
    pub fn new(policy: Policy) -> Self {
        Self::restore(policy, None, false, 0, false)
    }

    /// Rebuilds the state from what the store remembers.
    pub fn restore(
        policy: Policy,
        expires_at: Option<DateTime<Utc>>,
        had_subscription: bool,
        failures: u32,
        needs_reauth: bool,
    ) -> Self {
        Self {
            policy,
            had_subscription: had_subscription || expires_at.is_some(),
            expires_at,
            failures,
            needs_reauth,
            in_flight: None,
            next_at: None,
        }
    }

    /// The rules in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Expiry of the live subscription, if any.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// When the armed timer is due, if one is armed.
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        self.next_at
    }

    /// The attempt in flight, if any.
    pub fn in_flight(&self) -> Option<AttemptKind> {
        self.in_flight.map(|(kind, _)| kind)
    }

    /// True while parked for re-authorization.
    pub fn needs_reauth(&self) -> bool {
        self.needs_reauth
    }

    /// The health state implied by the current state.
    pub fn status(&self) -> HealthState {
        if self.needs_reauth {
            HealthState::NeedsReauth
        } else if self.failures >= self.policy.failure_threshold {
            HealthState::Error
        } else if self.in_flight.is_some() {
            HealthState::Renewing
        } else if self.failures > 0 {
            HealthState::Failing
        } else {
            HealthState::Healthy
        }
    }

    /// Decides what to do when the driver starts (or restarts) with this state.
    pub fn start(&mut self, now: DateTime<Utc>, jitter: f64) -> Next {
        if self.in_flight.is_some() {
            return Next::Busy;
        }
        if self.needs_reauth {
            self.next_at = None;
            return Next::Parked;
        }
        match self.expires_at {
            Some(expires_at) if expires_at > now && self.failures == 0 => {
                let due = expires_at - self.lead_time(now, expires_at, jitter);
                if due > now {
                    self.arm(due)
                } else {
                    self.begin(now)
                }
            }
            // A failing provider resumes retrying at once after a restart: the
            // backoff it was in is not worth waiting out twice.
            _ => self.begin(now),
        }
    }

    /// The armed timer fired. Starts an attempt unless one is in flight or the
    /// provider is parked.
    pub fn due(&mut self, now: DateTime<Utc>) -> Next {
        if self.in_flight.is_some() {
            return Next::Busy;
        }
        if self.needs_reauth {
            self.next_at = None;
            return Next::Parked;
        }
        self.begin(now)
    }

    /// An operator (or a lifecycle notification) asks for an attempt now. Unlike a
    /// timer, this also takes a parked provider out of `needs_reauth` for one attempt:
    /// if that attempt fails, the provider stays parked.
    pub fn force(&mut self, now: DateTime<Utc>) -> Next {
        if self.in_flight.is_some() {
            return Next::Busy;
        }
        self.begin(now)
    }

    /// The provider told us the subscription is gone (Graph `subscriptionRemoved`):
    /// the next attempt recreates it.
    pub fn subscription_removed(&mut self) {
        self.expires_at = None;
        self.had_subscription = true;
    }

    /// Credentials changed: leave `needs_reauth` and try again now. The attempt
    /// starts from the health before the change (`needs_reauth`), so its result
    /// shows the provider leaving it — and its alert resolves.
    pub fn credentials_changed(&mut self, now: DateTime<Utc>) -> Next {
        let previous = self.status();
        self.needs_reauth = false;
        if self.in_flight.is_some() {
            return Next::Busy;
        }
        self.begin_from(now, previous)
    }

    /// The in-flight attempt came back with `outcome`.
    ///
    /// Returns `None` when no attempt is in flight (a stale completion), which
    /// changes nothing.
    pub fn complete(
        &mut self,
        now: DateTime<Utc>,
        outcome: &Outcome,
        jitter: f64,
    ) -> Option<Completion> {
        let (attempt, previous) = self.in_flight.take()?;
        let (action, next) = match *outcome {
            Outcome::Succeeded { expires_at } => {
                self.expires_at = Some(expires_at);
                self.had_subscription = true;
                self.failures = 0;
                self.needs_reauth = false;
                (
                    attempt.success_action(),
                    self.after_success(now, expires_at, jitter),
                )
            }
            Outcome::Failed {
                class: ErrorClass::NotFound,
                ..
            } if attempt == AttemptKind::Renew => {
                // The subscription is gone: recreate it in the same turn. This is a
                // handled condition, not a strike.
                self.expires_at = None;
                self.had_subscription = true;
                (RenewalAction::Failed, self.begin(now))
            }
            Outcome::Failed {
                class: ErrorClass::ReauthRequired,
                ..
            } => {
                self.failures = self.failures.saturating_add(1);
                self.needs_reauth = true;
                self.next_at = None;
                (RenewalAction::Failed, Next::Parked)
            }
            Outcome::Failed { .. } if self.needs_reauth => {
                // A forced attempt out of needs_reauth gets exactly one try.
                self.failures = self.failures.saturating_add(1);
                self.next_at = None;
                (RenewalAction::Failed, Next::Parked)
            }
            Outcome::Failed { class, retry_after } => {
                self.failures = self.failures.saturating_add(1);
                let delay = self.retry_delay(now, class, retry_after, jitter);
                (RenewalAction::Failed, self.arm(now + delay))
            }
        };
        Some(Completion {
            attempt,
            action,
            previous,
            status: self.status(),
            next,
        })
    }

    /// What an attempt started now would do.
    fn next_kind(&self, now: DateTime<Utc>) -> AttemptKind {
        match self.expires_at {
            Some(expires_at) if expires_at > now => AttemptKind::Renew,
            _ if self.had_subscription => AttemptKind::Recreate,
            _ => AttemptKind::Register,
        }
    }

    /// Marks an attempt in flight and answers "call the provider now".
    fn begin(&mut self, now: DateTime<Utc>) -> Next {
        let previous = self.status();
        self.begin_from(now, previous)
    }

    /// [`Self::begin`], for an attempt whose health before it was `previous`.
    fn begin_from(&mut self, now: DateTime<Utc>, previous: HealthState) -> Next {
        let kind = self.next_kind(now);
        self.in_flight = Some((kind, previous));
        self.next_at = None;
        Next::AttemptNow(kind)
    }

    fn arm(&mut self, at: DateTime<Utc>) -> Next {
        self.next_at = Some(at);
        Next::At(at)
    }

    /// How far ahead of expiry to renew for this jitter draw.
    fn lead_time(&self, now: DateTime<Utc>, expires_at: DateTime<Utc>, jitter: f64) -> TimeDelta {
        let period = (expires_at - now - self.policy.lookahead).max(TimeDelta::zero());
        let spread = self.policy.spread.clamp(0.0, 0.5) * self.policy.spread_share;
        self.policy.lookahead + scale(period, spread) + scale(self.policy.jitter_max, jitter)
    }

    /// Schedules the renewal after a success.
    fn after_success(
        &mut self,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        jitter: f64,
    ) -> Next {
        let due = expires_at - self.lead_time(now, expires_at, jitter);
        if due > now {
            return self.arm(due);
        }
        // The provider granted less than the lookahead: renew at half-life rather
        // than at once, which would loop.
        let half = (expires_at - now) / 2;
        self.arm(now + half.max(self.policy.min_delay))
    }

    /// Delay before retrying a failed attempt: Retry-After when given, else
    /// exponential backoff with equal jitter (cool-off once in error), capped so the
    /// retry lands before the live subscription expires.
    fn retry_delay(
        &self,
        now: DateTime<Utc>,
        class: ErrorClass,
        retry_after: Option<TimeDelta>,
        jitter: f64,
    ) -> TimeDelta {
        let p = &self.policy;
        if let (ErrorClass::Throttled, Some(wait)) = (class, retry_after) {
            return wait.max(p.min_delay);
        }
        let nominal = if self.failures >= p.failure_threshold {
            p.cooloff
        } else {
            let doublings = self.failures.saturating_sub(1).min(30);
            let exp = p
                .backoff_base
                .checked_mul(1 << doublings)
                .unwrap_or(p.backoff_cap);
            exp.min(p.backoff_cap)
        };
        let mut delay = nominal / 2 + scale(nominal / 2, jitter);
        if let Some(expires_at) = self.expires_at.filter(|e| *e > now) {
            delay = delay.min((expires_at - now) / 2);
        }
        delay.max(p.min_delay)
    }
}

/// `span × fraction` for a fraction in `[0, 1)`, at millisecond precision.
fn scale(span: TimeDelta, fraction: f64) -> TimeDelta {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    TimeDelta::milliseconds((span.num_milliseconds() as f64 * fraction) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_fleet_registered_together_renews_spread_over_the_spread_span() {
        let policy = Policy {
            jitter_max: TimeDelta::zero(),
            spread: 0.1,
            ..Policy::default()
        };
        let expires_at = t0() + TimeDelta::days(7);
        let mut dues: Vec<DateTime<Utc>> = (0..2000)
            .map(|_| {
                let id = uuid::Uuid::new_v4();
                let mut lc = Lifecycle::new(policy.clone().for_provider(id));
                assert_eq!(lc.start(t0(), 0.0), Next::AttemptNow(AttemptKind::Register));
                let done = lc
                    .complete(t0(), &Outcome::Succeeded { expires_at }, 0.0)
                    .unwrap();
                // The same provider always gets the same share.
                assert_eq!(
                    policy.clone().for_provider(id).spread_share,
                    lc.policy().spread_share
                );
                match done.next {
                    Next::At(due) => due,
                    other => panic!("no timer: {other:?}"),
                }
            })
            .collect();
        dues.sort();
        // A tenth of the 6-day renewal period: 14.4 h.
        let span = TimeDelta::minutes(864);
        let latest = expires_at - policy.lookahead;
        let earliest = latest - span;
        assert!(dues[0] >= earliest && dues[dues.len() - 1] <= latest);
        // Spread evenly: each tenth of the span holds about a tenth of the fleet.
        for tenth in 0..10 {
            let from = earliest + span * tenth / 10;
            let to = earliest + span * (tenth + 1) / 10;
            let n = dues.iter().filter(|d| **d >= from && **d < to).count();
            assert!(
                (120..=280).contains(&n),
                "{n} of 2000 renew in tenth {tenth}"
            );
        }
    }

    fn failed(class: ErrorClass) -> Outcome {
        Outcome::Failed {
            class,
            retry_after: None,
        }
    }

    #[test]
    fn registers_then_schedules_inside_the_lookahead_window() {
        let mut lc = Lifecycle::new(Policy::default());
        let now = t0();
        assert_eq!(lc.start(now, 0.5), Next::AttemptNow(AttemptKind::Register));
        let expires_at = now + TimeDelta::minutes(10_080);
        let done = lc
            .complete(now, &Outcome::Succeeded { expires_at }, 0.5)
            .unwrap();
        assert_eq!(done.action, RenewalAction::Registered);
        let Next::At(due) = done.next else {
            panic!("expected a timer, got {:?}", done.next)
        };
        assert!(due < expires_at - TimeDelta::hours(24));
        assert!(due >= expires_at - TimeDelta::hours(24) - TimeDelta::minutes(5));
    }

    #[test]
    fn not_found_on_renew_recreates_at_once_without_a_strike() {
        let now = t0();
        let mut lc = Lifecycle::restore(
            Policy::default(),
            Some(now + TimeDelta::hours(2)),
            true,
            0,
            false,
        );
        assert_eq!(lc.start(now, 0.0), Next::AttemptNow(AttemptKind::Renew));
        let done = lc
            .complete(now, &failed(ErrorClass::NotFound), 0.0)
            .unwrap();
        assert_eq!(done.next, Next::AttemptNow(AttemptKind::Recreate));
        assert_eq!(lc.failures(), 0);
        assert_eq!(lc.in_flight(), Some(AttemptKind::Recreate));
    }

    #[test]
    fn three_strikes_then_error_then_recovery() {
        let mut now = t0();
        let mut lc = Lifecycle::new(Policy::default());
        lc.start(now, 0.0);
        let mut transitions = 0;
        for _ in 0..5 {
            let done = lc
                .complete(now, &failed(ErrorClass::Transient), 0.3)
                .unwrap();
            if done.status == HealthState::Error && done.previous != HealthState::Error {
                transitions += 1;
            }
            let Next::At(at) = done.next else {
                panic!("no retry")
            };
            now = at;
            assert!(matches!(lc.due(now), Next::AttemptNow(_)));
        }
        assert_eq!(transitions, 1);
        assert_eq!(lc.status(), HealthState::Error);
        let expires_at = now + TimeDelta::days(3);
        let done = lc
            .complete(now, &Outcome::Succeeded { expires_at }, 0.3)
            .unwrap();
        assert_eq!(
            (done.previous, done.status),
            (HealthState::Error, HealthState::Healthy)
        );
        assert_eq!(lc.failures(), 0);
    }

    #[test]
    fn reauth_parks_until_credentials_change_or_force() {
        let now = t0();
        let mut lc = Lifecycle::new(Policy::default());
        lc.start(now, 0.0);
        let done = lc
            .complete(now, &failed(ErrorClass::ReauthRequired), 0.0)
            .unwrap();
        assert_eq!(done.next, Next::Parked);
        assert_eq!(lc.due(now), Next::Parked);
        assert_eq!(lc.start(now, 0.0), Next::Parked);
        assert_eq!(lc.force(now), Next::AttemptNow(AttemptKind::Register));
    }

    #[test]
    fn the_attempt_after_new_credentials_starts_from_needs_reauth() {
        let now = t0();
        let mut lc = Lifecycle::new(Policy::default());
        lc.start(now, 0.0);
        lc.complete(now, &failed(ErrorClass::ReauthRequired), 0.0)
            .unwrap();
        assert_eq!(
            lc.credentials_changed(now),
            Next::AttemptNow(AttemptKind::Register)
        );
        let done = lc
            .complete(
                now,
                &Outcome::Succeeded {
                    expires_at: now + TimeDelta::days(3),
                },
                0.0,
            )
            .unwrap();
        // What the alerting actor resolves the needs_reauth alert on.
        assert_eq!(
            (done.previous, done.status),
            (HealthState::NeedsReauth, HealthState::Healthy)
        );
    }

    #[test]
    fn throttling_honours_retry_after() {
        let now = t0();
        let mut lc = Lifecycle::new(Policy::default());
        lc.start(now, 0.0);
        let done = lc
            .complete(
                now,
                &Outcome::Failed {
                    class: ErrorClass::Throttled,
                    retry_after: Some(TimeDelta::seconds(120)),
                },
                0.9,
            )
            .unwrap();
        assert_eq!(done.next, Next::At(now + TimeDelta::seconds(120)));
    }

    #[test]
    fn backoff_lands_before_expiry() {
        let now = t0();
        let expires_at = now + TimeDelta::seconds(40);
        let mut lc = Lifecycle::restore(Policy::default(), Some(expires_at), true, 0, false);
        lc.start(now, 0.0);
        // Already well past the failure threshold: cool-off would be 15 minutes.
        for _ in 0..4 {
            let done = lc
                .complete(now, &failed(ErrorClass::Transient), 0.99)
                .unwrap();
            let Next::At(at) = done.next else { panic!() };
            assert!(at < expires_at, "retry at {at} after expiry {expires_at}");
            lc.due(now);
        }
    }

    // ---- model-based property test ---------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        /// Fire the armed timer (the clock jumps to it).
        Timer,
        Force,
        Removed,
        CredentialsChanged,
        Complete(OutcomeGen),
        Jump(i64),
    }

    #[derive(Debug, Clone)]
    enum OutcomeGen {
        Success {
            lifetime_min: i64,
        },
        Fail {
            class: ErrorClass,
            retry_after: Option<i64>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let class = prop::sample::select(ErrorClass::ALL.to_vec());
        prop_oneof![
            3 => Just(Op::Timer),
            1 => Just(Op::Force),
            1 => Just(Op::Removed),
            1 => Just(Op::CredentialsChanged),
            3 => (1i64..20_000).prop_map(|m| Op::Complete(OutcomeGen::Success { lifetime_min: m })),
            4 => (class, prop::option::of(1i64..7_200))
                .prop_map(|(class, retry_after)| Op::Complete(OutcomeGen::Fail { class, retry_after })),
            1 => (0i64..2_000_000).prop_map(Op::Jump),
        ]
    }

    /// The simple model the machine is checked against.
    #[derive(Debug, Default)]
    struct Model {
        failures: u32,
        needs_reauth: bool,
        in_flight: Option<AttemptKind>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn machine_matches_model(ops in prop::collection::vec(op(), 1..80), jitters in prop::collection::vec(0.0f64..1.0, 80)) {
            let policy = Policy::default();
            let threshold = policy.failure_threshold;
            let mut now = t0();
            let mut lc = Lifecycle::new(policy.clone());
            let mut model = Model::default();
            let started = lc.start(now, 0.5);
            prop_assert_eq!(started, Next::AttemptNow(AttemptKind::Register));
            model.in_flight = Some(AttemptKind::Register);

            for (i, op) in ops.into_iter().enumerate() {
                let jitter = jitters[i % jitters.len()];
                match op {
                    Op::Timer => {
                        let Some(at) = lc.next_at() else { continue };
                        // A timer fires at its instant, or late if the clock jumped past it.
                        now = now.max(at);
                        let next = lc.due(now);
                        match next {
                            Next::AttemptNow(kind) => {
                                prop_assert!(model.in_flight.is_none() && !model.needs_reauth);
                                model.in_flight = Some(kind);
                            }
                            other => prop_assert!(false, "armed timer fired into {:?}", other),
                        }
                    }
                    Op::Force => {
                        let next = lc.force(now);
                        if model.in_flight.is_some() {
                            prop_assert_eq!(next, Next::Busy);
                        } else {
                            let Next::AttemptNow(kind) = next else {
                                return Err(TestCaseError::fail(format!("force gave {next:?}")));
                            };
                            model.in_flight = Some(kind);
                        }
                    }
                    Op::Removed => lc.subscription_removed(),
                    Op::CredentialsChanged => {
                        let next = lc.credentials_changed(now);
                        model.needs_reauth = false;
                        if model.in_flight.is_some() {
                            prop_assert_eq!(next, Next::Busy);
                        } else if let Next::AttemptNow(kind) = next {
                            model.in_flight = Some(kind);
                        } else {
                            prop_assert!(false, "credentials change gave {:?}", next);
                        }
                    }
                    Op::Jump(secs) => now += TimeDelta::seconds(secs),
                    Op::Complete(spec) => {
                        let Some(kind) = model.in_flight else {
                            prop_assert!(lc.complete(now, &failed(ErrorClass::Transient), jitter).is_none());
                            continue;
                        };
                        let outcome = match spec {
                            OutcomeGen::Success { lifetime_min } => Outcome::Succeeded {
                                expires_at: now + TimeDelta::minutes(lifetime_min),
                            },
                            OutcomeGen::Fail { class, retry_after } => Outcome::Failed {
                                class,
                                retry_after: retry_after.map(TimeDelta::seconds),
                            },
                        };
                        let done = lc.complete(now, &outcome, jitter);
                        let Some(done) = done else {
                            return Err(TestCaseError::fail("in-flight attempt lost"));
                        };
                        prop_assert_eq!(done.attempt, kind);
                        model.in_flight = None;
                        match outcome {
                            Outcome::Succeeded { expires_at } => {
                                model.failures = 0;
                                model.needs_reauth = false;
                                prop_assert_eq!(done.status, HealthState::Healthy);
                                let Next::At(at) = done.next else {
                                    return Err(TestCaseError::fail("success without a timer"));
                                };
                                prop_assert!(at > now && at < expires_at);
                                if expires_at - now > policy.lookahead + policy.jitter_max {
                                    prop_assert!(at >= expires_at - policy.lookahead - policy.jitter_max);
                                    prop_assert!(at <= expires_at - policy.lookahead);
                                }
                            }
                            Outcome::Failed { class: ErrorClass::NotFound, .. } if kind == AttemptKind::Renew => {
                                prop_assert_eq!(done.next, Next::AttemptNow(AttemptKind::Recreate));
                                model.in_flight = Some(AttemptKind::Recreate);
                            }
                            Outcome::Failed { class: ErrorClass::ReauthRequired, .. } => {
                                model.failures += 1;
                                model.needs_reauth = true;
                                prop_assert_eq!(done.next, Next::Parked);
                            }
                            Outcome::Failed { .. } if model.needs_reauth => {
                                model.failures += 1;
                                prop_assert_eq!(done.next, Next::Parked);
                            }
                            Outcome::Failed { class, retry_after } => {
                                model.failures += 1;
                                let Next::At(at) = done.next else {
                                    return Err(TestCaseError::fail("failure without a retry"));
                                };
                                prop_assert!(at > now);
                                if let (ErrorClass::Throttled, Some(wait)) = (class, retry_after) {
                                    prop_assert_eq!(at, now + wait.max(TimeDelta::seconds(1)));
                                } else if let Some(e) = lc.expires_at().filter(|e| *e - now > TimeDelta::seconds(2)) {
                                    prop_assert!(at < e, "retry after expiry");
                                }
                            }
                        }
                    }
                }
                // Invariants after every step.
                prop_assert_eq!(lc.failures(), model.failures);
                prop_assert_eq!(lc.in_flight(), model.in_flight);
                prop_assert_eq!(lc.needs_reauth(), model.needs_reauth);
                let status = lc.status();
                prop_assert_eq!(status == HealthState::NeedsReauth, model.needs_reauth);
                if !model.needs_reauth {
                    prop_assert_eq!(status == HealthState::Error, model.failures >= threshold);
                }
                prop_assert!(lc.in_flight().is_none() || lc.next_at().is_none(), "timer armed while in flight");
                if model.needs_reauth && model.in_flight.is_none() {
                    prop_assert!(lc.next_at().is_none(), "parked provider has a timer");
                }
            }
        }
    }
}
