//! `ProviderSupervisor`: one actor per provider that drives the [`Lifecycle`] state
//! machine: arms the renewal timer, calls the provider through the
//! [`SubscriptionApi`] port (never two calls at once), records every attempt through
//! the store port, publishes every [`RenewalResult`], and retires the provider's
//! subscription when told to.
//!
//! It decides nothing itself — the state machine does — and it owns no I/O: all of
//! it goes through [`Ports`]. Handlers never panic; errors become state and events.

use crate::attempt::{self, Call, SubscriptionChange};
use crate::board::{BoardEntry, HealthBoard};
use crate::catchup::{CatchUpDue, Trigger};
use crate::domain::{AttemptKind, ErrorClass, HealthState, Provider, RenewalResult, Subscription};
use crate::lifecycle::{Lifecycle, Next, Outcome, Policy};
use crate::permits::{DeadlinePermit, DeadlinePermits};
use crate::ports::{
    ApiError, AttemptRecord, CallbackUrls, CreateRequest, Fence, Ports, ProviderState, StoreError,
};
use crate::telemetry::{ActorRunning, ProviderHealthChanged, RenewalAttempted};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// How soon a supervisor whose lease may have lapsed looks again.
const LEASE_RECHECK: Duration = Duration::from_secs(1);

/// First wait before a supervisor retries loading its state; doubles per
/// failure (with jitter) up to [`LOAD_RETRY_MAX`].
const LOAD_RETRY_FIRST: Duration = Duration::from_secs(1);

/// Longest wait between two attempts to load a supervisor's state.
const LOAD_RETRY_MAX: Duration = Duration::from_secs(60);

/// How many supervisors have got their state and made their first decision
/// (a timer armed, an attempt started, or parked), shared by every supervisor
/// of the fleet: readiness and `subkeeper_fleet_providers` report it.
#[derive(Debug, Clone, Default)]
pub struct StartProgress {
    loaded: Arc<AtomicUsize>,
    scheduled: Arc<AtomicUsize>,
    /// A store failure episode is under way (it was logged once).
    troubled: Arc<AtomicBool>,
}

impl StartProgress {
    /// Supervisors running with their state loaded.
    pub fn loaded(&self) -> usize {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Supervisors running whose next step is decided (timer, attempt, parked).
    pub fn scheduled(&self) -> usize {
        self.scheduled.load(Ordering::Relaxed)
    }

    /// True for the failure that begins an episode of store trouble (the one to
    /// log); false while it lasts.
    pub fn trouble_begins(&self) -> bool {
        !self.troubled.swap(true, Ordering::Relaxed)
    }

    /// True for the success that ends an episode of store trouble.
    pub fn trouble_ends(&self) -> bool {
        self.troubled.swap(false, Ordering::Relaxed)
    }
}

/// How long to wait before the `failures`-th retry: doubling from
/// [`LOAD_RETRY_FIRST`] up to [`LOAD_RETRY_MAX`], each stretched by up to half
/// again at random so that supervisors that failed together retry apart.
pub fn retry_delay(failures: u32) -> Duration {
    let base = LOAD_RETRY_FIRST
        .saturating_mul(1u32 << failures.min(16))
        .min(LOAD_RETRY_MAX);
    base.mul_f64(1.0 + rand::random::<f64>() / 2.0)
}

/// What every supervisor shares with the fleet.
#[derive(Clone)]
pub struct SupervisorContext {
    /// The ports.
    pub ports: Ports,
    /// Where providers call us back.
    pub callbacks: CallbackUrls,
    /// Caps concurrent provider calls across the whole fleet, soonest
    /// subscription expiry first.
    pub permits: DeadlinePermits,
    /// The health board the exporter reads.
    pub board: HealthBoard,
    /// Longest a single provider call may take before it counts as transient.
    pub attempt_timeout: Duration,
    /// Told when a retired supervisor has finished.
    pub retired: Option<Recipient<Retired>>,
    /// Whether this instance's lease certainly holds (always, without leases):
    /// no provider is called while it may not.
    pub lease: crate::ownership::LeaseGuard,
    /// Told of every gap the provider's webhooks may have left (start-up,
    /// registration, recreate, `missed`, replaced channel, lapsed watch,
    /// recovery); `None`: no catch-up.
    pub catch_up: Option<Recipient<CatchUpDue>>,
    /// How many supervisors are loaded and scheduled.
    pub progress: StartProgress,
}

/// The timer fired: the renewal is due.
#[derive(Message)]
#[rtype(result = "()")]
struct RenewDue;

/// Renew now and answer with the attempt's result (a `not_found` renew answers with
/// the recreate that follows it).
#[derive(Message)]
#[rtype(result = "Result<RenewalResult, SupervisorGone>")]
pub struct ForceRenew;

/// Graph said the subscription was removed: recreate it now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscriptionRemoved;

/// The provider row changed (display name, resource, credentials).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProviderChanged(pub Provider);

/// Graph said notifications were missed: catch up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotificationsMissed;

/// Stop supervising: delete the subscription at the provider, then stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Stop supervising without touching the provider: this instance no longer owns
/// it (another holds a newer claim), so its subscription and state are left to
/// the new owner.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StandDown;

/// Stop supervising once the attempt in flight (if any) is recorded, without
/// touching the provider: the fleet hands the provider to another instance.
/// Answers once the supervisor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Handover;

/// Sent to the fleet once a retired supervisor has cleaned up and stopped.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Retired(pub crate::domain::ProviderId);

/// The supervisor stopped before it could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the provider's supervisor stopped before the renewal finished")]
pub struct SupervisorGone;

/// What a provider call produced, carried back into the actor.
struct CallResult {
    /// The call and its answer.
    call: Call,
    /// Seconds after its scheduled time a timer-driven attempt started.
    lag_seconds: Option<f64>,
    /// The fleet-wide permit, held until the attempt is recorded, so that
    /// `renewal_concurrency` also caps the writes queueing for a store connection.
    permit: Option<DeadlinePermit>,
}

/// Supervises one provider's subscription.
pub struct ProviderSupervisor {
    provider: Provider,
    /// The claim this instance holds on the provider; every state write carries it.
    fence: Fence,
    /// Shared with every supervisor the fleet started (one allocation, not a
    /// copy per provider).
    ctx: Arc<SupervisorContext>,
    /// Its policy is the lifecycle's (`lifecycle.policy()`): kept once.
    lifecycle: Lifecycle,
    subscription: Option<Subscription>,
    /// Last webhook time as known from the store (kept in the health row).
    last_webhook_at: Option<DateTime<Utc>>,
    /// The armed renewal timer.
    timer: Option<SpawnHandle>,
    /// When the armed timer was due, for the lag metric.
    scheduled_for: Option<DateTime<Utc>>,
    /// Callers of `ForceRenew` waiting for the current attempt chain.
    waiters: Vec<oneshot::Sender<RenewalResult>>,
    /// State is loaded from the store.
    loaded: bool,
    /// State handed over by the fleet's paged load, restored at start (boxed:
    /// empty for the rest of the supervisor's life, and supervisors number
    /// in the hundred thousands).
    preloaded: Option<Box<ProviderState>>,
    /// Failed attempts in a row to load the state (for the backoff).
    load_failures: u32,
    /// Counted in [`StartProgress`] as scheduled.
    scheduled: bool,
    /// A force arrived before the state was loaded.
    force_pending: bool,
    /// Retirement requested: clean up after the in-flight attempt.
    retiring: bool,
    /// Handover requested: stop after the in-flight attempt is recorded, and
    /// answer these.
    handover: Vec<oneshot::Sender<()>>,
}

impl ProviderSupervisor {
    /// A supervisor for `provider`, not yet started.
    pub fn new(
        provider: Provider,
        fence: Fence,
        policy: Policy,
        ctx: impl Into<Arc<SupervisorContext>>,
    ) -> Self {
        let policy = policy.for_provider(provider.id.0);
        Self {
            fence,
            lifecycle: Lifecycle::new(policy),
            provider,
            ctx: ctx.into(),
            subscription: None,
            last_webhook_at: None,
            timer: None,
            scheduled_for: None,
            waiters: Vec::new(),
            loaded: false,
            preloaded: None,
            load_failures: 0,
            scheduled: false,
            force_pending: false,
            retiring: false,
            handover: Vec::new(),
        }
    }

    /// The same supervisor, starting from `state` (read by the fleet's paged
    /// load) instead of querying the store for it.
    pub fn with_state(mut self, state: ProviderState) -> Self {
        self.preloaded = Some(Box::new(state));
        self
    }

    fn now(&self) -> DateTime<Utc> {
        self.ctx.ports.clock.now()
    }

    /// Loads the state from the store. A failure waits its turn: backed off per
    /// supervisor, and logged once per episode for the whole fleet, not once per
    /// supervisor and retry.
    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.ctx.ports.store.clone();
        let id = self.provider.id;
        ctx.wait(
            async move { store.provider_state(id).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(state) => {
                        if act.ctx.progress.trouble_ends() {
                            tracing::info!("provider state loads again");
                        }
                        act.restore(state, ctx);
                    }
                    Err(e) => {
                        if act.ctx.progress.trouble_begins() {
                            tracing::warn!(provider = %act.provider.id, error = %e, "cannot load provider state; supervisors retry with backoff (logged once until it loads again)");
                        }
                        let delay = retry_delay(act.load_failures);
                        act.load_failures = act.load_failures.saturating_add(1);
                        ctx.run_later(delay, |act, ctx| act.load(ctx));
                    }
                }),
        );
    }

    fn restore(&mut self, state: ProviderState, ctx: &mut Context<Self>) {
        let (failures, needs_reauth) = state.health.as_ref().map_or((0, false), |h| {
            (
                h.consecutive_failure_count,
                h.subscription_status == HealthState::NeedsReauth,
            )
        });
        self.last_webhook_at = state
            .health
            .as_ref()
            .and_then(|h| h.last_webhook_received_at);
        self.lifecycle = Lifecycle::restore(
            self.lifecycle.policy().clone(),
            state.subscription.as_ref().map(|s| s.expires_at),
            state.had_subscription,
            failures,
            needs_reauth,
        );
        self.subscription = state.subscription;
        if !self.loaded {
            self.loaded = true;
            self.ctx.progress.loaded.fetch_add(1, Ordering::Relaxed);
        }
        // A start-up gap is only worth reading for a provider that had a
        // subscription and is not parked: a parked provider is not called (its
        // catch-up comes when it recovers), and a first registration takes its
        // cursor then.
        if state.had_subscription
            && !matches!(
                self.lifecycle.status(),
                HealthState::NeedsReauth | HealthState::Error
            )
        {
            self.catch_up(Trigger::Startup, ctx);
        }
        let now = self.now();
        let next = if std::mem::take(&mut self.force_pending) {
            self.lifecycle.force(now)
        } else {
            self.lifecycle.start(now, rand::random())
        };
        self.publish_board();
        self.apply(next, ctx);
        if !self.scheduled {
            self.scheduled = true;
            self.ctx.progress.scheduled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the catch-up actor of a gap (it decides whether anything was
    /// missed).
    fn catch_up(&self, trigger: Trigger, ctx: &mut Context<Self>) {
        // A provider parked for re-authorization cannot be read either; its
        // recovery is a gap of its own (`Recovered`).
        if self.lifecycle.needs_reauth() {
            return;
        }
        if let Some(catch_up) = &self.ctx.catch_up {
            catch_up.do_send(CatchUpDue {
                provider: self.provider.clone(),
                trigger,
                supervisor: Some(ctx.address().recipient()),
            });
        }
    }

    fn apply(&mut self, next: Next, ctx: &mut Context<Self>) {
        match next {
            Next::AttemptNow(kind) => self.call_provider(kind, ctx),
            Next::At(at) => self.arm(at, ctx),
            Next::Parked | Next::Busy => {}
        }
        self.publish_board();
    }

    fn arm(&mut self, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        if let Some(old) = self.timer.take() {
            ctx.cancel_future(old);
        }
        let delay = self.ctx.ports.clock.timer_delay(at - self.now());
        self.scheduled_for = Some(at);
        self.timer = Some(ctx.run_later(delay, |_, ctx| ctx.notify(RenewDue)));
    }

    fn call_provider(&mut self, kind: AttemptKind, ctx: &mut Context<Self>) {
        if let Some(old) = self.timer.take() {
            ctx.cancel_future(old);
        }
        let scheduled = self.scheduled_for.take();
        // One Arc for the fleet's shared parts: a registration burst has a
        // future like this waiting per provider.
        let shared = Arc::clone(&self.ctx);
        let provider = self.provider.clone();
        let subscription = self.subscription.clone();
        // Deadline first: a renewal queues by its subscription's expiry; a
        // registration (nothing expires) by a whole lifetime from now, behind
        // every renewal that is due.
        let deadline = self
            .subscription
            .as_ref()
            .map(|s| s.expires_at)
            .or(self.lifecycle.expires_at())
            .unwrap_or_else(|| self.now() + shared.ports.api.max_lifetime(&provider));
        let fut = async move {
            let api = Arc::clone(&shared.ports.api);
            let clock = &shared.ports.clock;
            let permits = &shared.permits;
            let callbacks = &shared.callbacks;
            let timeout = shared.attempt_timeout;
            // The provider's rate limits first, holding no permit: waiting for a
            // tenant's budget must not starve the others (not timed: see `admit`).
            api.admit(&provider, kind).await;
            // Closed permits only happen at shutdown; carry on without one.
            let permit = permits.acquire(deadline).await.ok();
            let started_at = clock.now();
            let lag_seconds =
                scheduled.map(|s| (started_at - s).num_milliseconds() as f64 / 1000.0);
            let expires_at = started_at + api.max_lifetime(&provider);
            let begun = tokio::time::Instant::now();
            let (call, client_state) = match (kind, subscription) {
                (AttemptKind::Renew, Some(sub)) => (
                    Box::pin(async move { api.renew(&provider, &sub, expires_at).await })
                        as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
                    None,
                ),
                _ => {
                    let client_state = new_client_state();
                    let request = CreateRequest {
                        notification_url: callbacks.notification_url(provider.kind),
                        lifecycle_url: callbacks.lifecycle_url(provider.kind),
                        client_state: client_state.clone(),
                        expires_at,
                    };
                    (
                        Box::pin(async move { api.create(&provider, &request).await }) as _,
                        Some(client_state),
                    )
                }
            };
            let result = match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(ApiError::new(
                    ErrorClass::Transient,
                    format!("provider did not answer within {} s", timeout.as_secs()),
                )),
            };
            CallResult {
                call: Call {
                    result,
                    client_state,
                    started_at,
                    scheduled,
                    elapsed: begun.elapsed(),
                },
                lag_seconds,
                permit,
            }
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(|call, act, ctx| act.finish(call, ctx)),
        );
    }

    fn finish(&mut self, done_call: CallResult, ctx: &mut Context<Self>) {
        let CallResult {
            call,
            lag_seconds,
            permit,
        } = done_call;
        let outcome = match &call.result {
            Ok(sub) => Outcome::Succeeded {
                expires_at: sub.expires_at,
            },
            Err(e) => Outcome::Failed {
                class: e.class,
                retry_after: e.retry_after,
            },
        };
        let Some(done) = self
            .lifecycle
            .complete(self.now(), &outcome, rand::random())
        else {
            return;
        };

        let lapsed = self
            .subscription
            .as_ref()
            .is_some_and(|s| s.expires_at <= call.started_at);
        let gap = gap_after(&self.provider, &call, done.attempt, done.previous, lapsed);
        let SubscriptionChange { current, replaced } = attempt::subscription_after(
            self.provider.id,
            self.subscription.take(),
            &call,
            done.attempt,
        );
        self.subscription = current;
        let result = attempt::renewal_result(
            &self.provider,
            &call,
            &done,
            self.subscription.as_ref(),
            self.lifecycle.failures(),
        );
        let health = attempt::health_row(
            &result,
            self.subscription.as_ref(),
            self.last_webhook_at,
            done.next,
        );
        let record = AttemptRecord {
            result: result.clone(),
            subscription: self.subscription.clone(),
            replaced,
            health,
        };

        RenewalAttempted {
            result: &result,
            lag_seconds,
        }
        .emit();
        if done.previous != done.status && done.status != HealthState::Renewing {
            ProviderHealthChanged { result: &result }.emit();
        }

        // A renew that rotated (Google channels) leaves the old subscription live at
        // the provider: stop it once the new one is recorded.
        let rotated_out = match (&call.result, done.attempt) {
            (Ok(_), AttemptKind::Renew) => record.replaced.clone(),
            _ => None,
        };
        let persist = persist(
            self.ctx.ports.clone(),
            self.fence,
            self.provider.clone(),
            record,
            rotated_out,
            permit,
        );
        ctx.wait(
            persist
                .into_actor(self)
                .map(move |(result, owned), act, ctx| {
                    if !matches!(done.next, Next::AttemptNow(_)) || !owned {
                        for waiter in act.waiters.drain(..) {
                            let _ = waiter.send(result.clone());
                        }
                    }
                    if !owned {
                        // Another instance claimed the provider while this attempt ran:
                        // its state is the new owner's now.
                        act.stand_down(ctx);
                        if let Some(fleet) = &act.ctx.retired {
                            fleet.do_send(Retired(act.provider.id));
                        }
                        return;
                    }
                    if !act.handover.is_empty() {
                        act.stand_down(ctx);
                        return;
                    }
                    // Retiring: whatever the lifecycle wants next (even the recreate a 404
                    // calls for) is not done; the subscription, if any, is deleted.
                    if act.retiring {
                        act.retire(ctx);
                    } else {
                        if let Some(trigger) = gap {
                            act.catch_up(trigger, ctx);
                        }
                        act.apply(done.next, ctx);
                    }
                }),
        );
    }

    fn publish_board(&self) {
        self.ctx.board.upsert(
            self.provider.id,
            BoardEntry {
                tenant: self.provider.tenant.clone(),
                kind: self.provider.kind,
                status: self.lifecycle.status(),
                failures: self.lifecycle.failures(),
                expires_at: self.lifecycle.expires_at(),
                next_at: self.lifecycle.next_at(),
                silent_since: self
                    .ctx
                    .board
                    .get(self.provider.id)
                    .and_then(|e| e.silent_since),
            },
        );
    }

    /// Stops without touching the provider (its state and subscription are left
    /// to whoever owns it next) and answers any handover waiting.
    fn stand_down(&mut self, ctx: &mut Context<Self>) {
        self.waiters.clear();
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.ctx.board.remove(self.provider.id);
        for done in self.handover.drain(..) {
            let _ = done.send(());
        }
        ctx.stop();
    }

    fn retire(&mut self, ctx: &mut Context<Self>) {
        if let Some(old) = self.timer.take() {
            ctx.cancel_future(old);
        }
        let api = self.ctx.ports.api.clone();
        let store = self.ctx.ports.store.clone();
        let provider = self.provider.clone();
        let subscription = self.subscription.take();
        let fence = self.fence;
        ctx.wait(
            async move {
                let Some(sub) = subscription else { return };
                match api.delete(&provider, &sub).await {
                    Ok(()) => {
                        if let Err(e) = store.subscription_deleted(fence, provider.id, &sub.external_id).await {
                            tracing::warn!(provider = %provider.id, error = %e, "subscription deleted at the provider but not recorded; the reconciler will retry");
                        } else {
                            tracing::info!(tenant = %provider.tenant, provider = %provider.id, "retired provider's subscription deleted");
                        }
                    }
                    Err(e) => tracing::warn!(provider = %provider.id, error = %e, "deleting the retired provider's subscription failed; the reconciler will retry"),
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.ctx.board.remove(act.provider.id);
                if let Some(fleet) = &act.ctx.retired {
                    fleet.do_send(Retired(act.provider.id));
                }
                ctx.stop();
            }),
        );
    }
}

/// Records `record` (a few quick retries), publishes its result, and stops the
/// subscription a rotating renew left live (`rotated_out`). Holds the fleet-wide
/// `permit` until done. Returns the result, for the callers waiting on it, and
/// false if the write was refused because another instance owns the provider now
/// (then nothing is published: the attempt's state is not this instance's to tell).
async fn persist(
    ports: Ports,
    fence: Fence,
    provider: Provider,
    record: AttemptRecord,
    rotated_out: Option<Subscription>,
    permit: Option<DeadlinePermit>,
) -> (RenewalResult, bool) {
    let (store, events, api) = (ports.store, ports.events, ports.api);
    let provider_id = provider.id;
    let _permit = permit;
    // The health row is rewritten whole by every attempt, so a lost write is
    // repaired by the next one; a few quick retries cover a brief blip.
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=3 {
        match store.record_attempt(fence, &record).await {
            Ok(()) => break,
            // Another instance holds the provider now: its state is not ours to
            // write, and retrying changes nothing.
            Err(e @ StoreError::Conflict(_)) => {
                tracing::warn!(provider = %provider_id, error = %e, "attempt not recorded: this instance no longer owns the provider; standing down");
                return (record.result, false);
            }
            Err(e) if attempt < 3 => {
                tracing::warn!(provider = %provider_id, error = %e, "recording attempt failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                tracing::error!(provider = %provider_id, error = %e, "attempt not recorded: the store is unavailable")
            }
        }
    }
    events.renewal(&record.result).await;
    if let Some(old) = rotated_out {
        match api.delete(&provider, &old).await {
            Ok(()) => {
                if let Err(e) = store
                    .subscription_deleted(fence, provider.id, &old.external_id)
                    .await
                {
                    tracing::warn!(provider = %provider.id, error = %e, "old subscription stopped but not recorded");
                }
            }
            Err(e) => tracing::warn!(
                provider = %provider.id, subscription = %old.external_id, error = %e,
                "old subscription not stopped; it lapses at its own expiry"
            ),
        }
    }
    (record.result, true)
}

/// The gap a successful attempt closes, if any: a first subscription (take
/// the cursor), a recreate, a replaced Calendar channel, a Gmail watch renewed
/// after it lapsed, or a provider leaving `error` / `needs_reauth`.
fn gap_after(
    provider: &Provider,
    call: &Call,
    attempt: AttemptKind,
    previous: HealthState,
    lapsed: bool,
) -> Option<Trigger> {
    use crate::domain::ProviderKind;
    if call.result.is_err() {
        return None;
    }
    if matches!(previous, HealthState::Error | HealthState::NeedsReauth) {
        return Some(Trigger::Recovered);
    }
    match (attempt, provider.kind) {
        (AttemptKind::Register, _) => Some(Trigger::Registered),
        (AttemptKind::Recreate, _) => Some(Trigger::Recreated),
        (AttemptKind::Renew, ProviderKind::GoogleCalendar) => Some(Trigger::ChannelReplaced),
        (AttemptKind::Renew, ProviderKind::Gmail) if lapsed => Some(Trigger::WatchLapsed),
        (AttemptKind::Renew, _) => None,
    }
}

/// A fresh clientState: 32 random bytes, hex-encoded (64 characters; Graph allows 128).
fn new_client_state() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Actor for ProviderSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ActorRunning {
            actor: "provider_supervisor",
            running: true,
            many: true,
        }
        .emit();
        match self.preloaded.take() {
            Some(state) => self.restore(*state, ctx),
            None => self.load(ctx),
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.loaded {
            self.ctx.progress.loaded.fetch_sub(1, Ordering::Relaxed);
        }
        if self.scheduled {
            self.ctx.progress.scheduled.fetch_sub(1, Ordering::Relaxed);
        }
        ActorRunning {
            actor: "provider_supervisor",
            running: false,
            many: true,
        }
        .emit();
    }
}

impl Handler<RenewDue> for ProviderSupervisor {
    type Result = ();
    fn handle(&mut self, _: RenewDue, ctx: &mut Self::Context) {
        self.timer = None;
        if !self.loaded || self.retiring || !self.handover.is_empty() {
            return;
        }
        if !self.ctx.lease.valid() {
            // This instance may have been paused past its lease: ask again once a
            // heartbeat has said whether the provider is still ours (if not, the
            // fleet stands this supervisor down first).
            self.timer = Some(ctx.run_later(LEASE_RECHECK, |_, ctx| ctx.notify(RenewDue)));
            return;
        }
        let next = self.lifecycle.due(self.now());
        self.apply(next, ctx);
    }
}

impl Handler<ForceRenew> for ProviderSupervisor {
    type Result = ResponseFuture<Result<RenewalResult, SupervisorGone>>;
    fn handle(&mut self, _: ForceRenew, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        if self.retiring || !self.handover.is_empty() {
            self.waiters.clear();
        } else if self.loaded {
            self.scheduled_for = None;
            let next = self.lifecycle.force(self.now());
            self.apply(next, ctx);
        } else {
            self.force_pending = true;
        }
        Box::pin(async move { rx.await.map_err(|_| SupervisorGone) })
    }
}

impl Handler<SubscriptionRemoved> for ProviderSupervisor {
    type Result = ();
    fn handle(&mut self, _: SubscriptionRemoved, ctx: &mut Self::Context) {
        if !self.loaded || self.retiring {
            return;
        }
        self.lifecycle.subscription_removed();
        let next = self.lifecycle.force(self.now());
        self.apply(next, ctx);
    }
}

impl Handler<NotificationsMissed> for ProviderSupervisor {
    type Result = ();
    fn handle(&mut self, _: NotificationsMissed, ctx: &mut Self::Context) {
        if self.loaded && !self.retiring {
            self.catch_up(Trigger::Missed, ctx);
        }
    }
}

impl Handler<ProviderChanged> for ProviderSupervisor {
    type Result = ();
    fn handle(&mut self, ProviderChanged(provider): ProviderChanged, ctx: &mut Self::Context) {
        let credentials_changed = provider.credentials_version != self.provider.credentials_version;
        self.provider = provider;
        if credentials_changed && self.loaded && self.lifecycle.needs_reauth() {
            let next = self.lifecycle.credentials_changed(self.now());
            self.apply(next, ctx);
        }
    }
}

impl Handler<Retire> for ProviderSupervisor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        if self.retiring {
            return;
        }
        self.retiring = true;
        self.waiters.clear();
        if self.lifecycle.in_flight().is_none() {
            self.retire(ctx);
        }
    }
}

impl Handler<StandDown> for ProviderSupervisor {
    type Result = ();
    fn handle(&mut self, _: StandDown, ctx: &mut Self::Context) {
        tracing::info!(tenant = %self.provider.tenant, provider = %self.provider.id, "standing down: the provider is owned under a newer claim");
        self.stand_down(ctx);
    }
}

impl Handler<Handover> for ProviderSupervisor {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Handover, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.handover.push(tx);
        if self.lifecycle.in_flight().is_none() && !self.retiring {
            self.stand_down(ctx);
        }
        // A retiring supervisor finishes retiring (it stops either way).
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
