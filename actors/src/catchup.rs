//! `CatchUpActor`: after every gap a provider's webhooks may have left, reads
//! what changed since the provider's stored cursor (Graph delta, Calendar
//! `syncToken`, Gmail `historyId`) and replays it on the provider's webhook
//! subject as notifications marked `source: replay`, then announces `caught_up`
//! with the window covered. An expired cursor becomes `resync_required` and a
//! fresh cursor. A provider silent for its kind's `poll_after_silence` gets the
//! same read as a cheap check: changes no webhook announced mean its push is
//! broken (alert, replay, recreate); none mean it is quiet, which is healthy.
//!
//! Supervisors tell it of gaps ([`CatchUpDue`]: start-up, registration,
//! recreate, `missed`, a replaced channel, a lapsed Gmail watch, recovery); it
//! queues them, one per provider, and starts them spread out (at most
//! `starts_per_second`, at most `concurrency` at once, each under a fleet
//! permit and after the provider's rate-limit budget admits it), so a restart
//! with 100 000 providers does not fire 100 000 reads at once. Reads are paged
//! (`page_size` items, `max_pages` per turn); the page reached is stored after
//! each page, so a read interrupted by a crash resumes where it stopped.
//!
//! Owns no I/O: provider reads go through [`SubscriptionApi::changes_since`],
//! state through [`CatchUpStore`], replays through [`WebhookPublisher`],
//! events through [`DomainEventSink`]. Must not renew or recreate itself: it
//! asks the provider's supervisor ([`SubscriptionRemoved`]).

use crate::alerting::PushBrokenFound;
use crate::delivery::Stop;
use crate::domain::{
    AttemptKind, CatchUpWindow, DomainEvent, DomainEventType, Provider, ProviderId, ProviderKind,
    WebhookEnvelope,
};
use crate::permits::DeadlinePermits;
use crate::ports::clock::SharedClock;
use crate::ports::{
    CatchUpState, CatchUpStore, ChangeKind, ChangesError, ChangesFrom, ChangesNext,
    DomainEventSink, DurableMessage, ItemChange, SubscriptionApi, WebhookPublisher,
};
use crate::supervisor::SubscriptionRemoved;
use crate::telemetry::{ActorRunning, names};
use actix::prelude::*;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How long a replay may wait for the stream to store it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Pages a fresh cursor may take (the initial round of a large mailbox): past
/// this the read fails and is retried later.
const MAX_INITIAL_PAGES: u32 = 10_000;

/// Catch-up settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CatchUpConfig {
    /// Items asked for per page.
    pub page_size: u32,
    /// Pages read per turn; a longer read stores its page and queues again, so
    /// one huge mailbox cannot hold a permit for long.
    pub max_pages: u32,
    /// At start-up, a provider whose last proof of life is older than this is
    /// caught up (younger: nothing can have been missed).
    pub startup_gap: TimeDelta,
    /// A provider of the kind with no proof of life for this long gets a
    /// silence check; a kind that is absent is never checked.
    pub poll_after_silence: HashMap<ProviderKind, TimeDelta>,
    /// How often to look for silent providers and export freshness.
    pub sweep_every: Duration,
    /// Catch-ups started per second at most (spreads a restart's burst).
    pub starts_per_second: u32,
    /// Catch-ups in flight at most (each also holds a fleet permit while it
    /// reads).
    pub concurrency: usize,
    /// A failed catch-up is tried again after this long.
    pub retry_after: Duration,
}

/// The ports the catch-up runner uses.
#[derive(Clone)]
pub struct CatchUpPorts {
    /// Provider reads (and rate-limit admission).
    pub api: Arc<dyn SubscriptionApi>,
    /// Cursors and proof of life.
    pub store: Arc<dyn CatchUpStore>,
    /// The webhook stream replays are published to.
    pub replays: Arc<dyn WebhookPublisher>,
    /// `caught_up`, `resync_required`, `push_broken` events.
    pub events: Arc<dyn DomainEventSink>,
    /// Time.
    pub clock: SharedClock,
    /// The fleet-wide cap on concurrent provider calls, shared with renewals
    /// and ordered by deadline: a catch-up asks for its permit with
    /// [`CATCH_UP_DEADLINE`], so a renewal whose subscription would lapse
    /// sooner still goes first.
    pub permits: DeadlinePermits,
    /// Told when a silence check finds push broken.
    pub alerts: Option<Recipient<PushBrokenFound>>,
}

/// Why a catch-up runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The supervisor started (service start, takeover): caught up if the
    /// provider's last proof of life is older than `startup_gap`.
    Startup,
    /// A first subscription was registered: take the cursor.
    Registered,
    /// The subscription was recreated (404, `subscriptionRemoved`).
    Recreated,
    /// Graph sent a `missed` lifecycle notification.
    Missed,
    /// A Google Calendar channel was replaced by its successor.
    ChannelReplaced,
    /// A Gmail watch was renewed after it had lapsed.
    WatchLapsed,
    /// The provider left `error` or `needs_reauth`.
    Recovered,
    /// No proof of life for `poll_after_silence`.
    SilenceCheck,
}

impl Trigger {
    /// The wire and metric-label name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Registered => "registered",
            Self::Recreated => "recreated",
            Self::Missed => "missed",
            Self::ChannelReplaced => "channel_replaced",
            Self::WatchLapsed => "watch_lapsed",
            Self::Recovered => "recovered",
            Self::SilenceCheck => "silence_check",
        }
    }
}

/// A provider may have missed webhooks: catch it up (and keep it in view for
/// silence checks).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CatchUpDue {
    /// The provider.
    pub provider: Provider,
    /// Why.
    pub trigger: Trigger,
    /// Its supervisor, asked to recreate the subscription when push is broken.
    pub supervisor: Option<Recipient<SubscriptionRemoved>>,
}

/// The provider is no longer supervised here: forget it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Forget(pub ProviderId);

/// Look for silent providers now (also on a timer).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SweepNow;

/// How one catch-up ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CatchUpOutcome {
    /// Read to the end: `changes` replayed, of which `unannounced` no webhook
    /// announced (counted for silence checks only).
    CaughtUp {
        /// Changes replayed.
        changes: u64,
        /// Changes no webhook announced.
        unannounced: u64,
    },
    /// Nothing to do (start-up with a fresh proof of life).
    Skipped,
    /// No cursor was stored: one was taken.
    CursorTaken,
    /// The cursor had expired: `resync_required` published, a fresh one taken.
    ResyncRequired {
        /// The provider's reason.
        reason: String,
    },
    /// `max_pages` read; the rest in a later turn.
    Continues {
        /// Changes replayed this turn.
        changes: u64,
    },
    /// Failed; tried again after `retry_after`.
    Failed {
        /// What went wrong (no secrets).
        error: String,
    },
}

impl CatchUpOutcome {
    /// The metric-label name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CaughtUp { unannounced, .. } if *unannounced > 0 => "push_broken",
            Self::CaughtUp { changes: 0, .. } => "quiet",
            Self::CaughtUp { .. } => "caught_up",
            Self::Skipped => "skipped",
            Self::CursorTaken => "cursor_taken",
            Self::ResyncRequired { .. } => "resync_required",
            Self::Continues { .. } => "continues",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A provider in view.
struct Tracked {
    provider: Provider,
    supervisor: Option<Recipient<SubscriptionRemoved>>,
}

/// A finished run, carried back into the actor.
struct Finished {
    provider: ProviderId,
    trigger: Trigger,
    outcome: CatchUpOutcome,
}

/// Queues, spreads and runs catch-ups; sweeps for silent providers.
pub struct CatchUpActor {
    config: CatchUpConfig,
    ports: CatchUpPorts,
    tracked: HashMap<ProviderId, Tracked>,
    queue: VecDeque<ProviderId>,
    /// Queued providers and why (one entry per provider).
    queued: HashMap<ProviderId, Trigger>,
    running: HashSet<ProviderId>,
    /// Earliest time the next catch-up may start.
    next_start: tokio::time::Instant,
    /// A pump is scheduled.
    pump_armed: bool,
    /// A sweep is in flight.
    sweeping: bool,
}

impl CatchUpActor {
    /// An actor over `ports`.
    pub fn new(config: CatchUpConfig, ports: CatchUpPorts) -> Self {
        Self {
            config,
            ports,
            tracked: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashMap::new(),
            running: HashSet::new(),
            next_start: tokio::time::Instant::now(),
            pump_armed: false,
            sweeping: false,
        }
    }

    fn enqueue(&mut self, provider: ProviderId, trigger: Trigger, ctx: &mut Context<Self>) {
        if self.running.contains(&provider) {
            // The run in flight reads up to now; a gap noticed meanwhile is
            // covered by queueing once more after it.
            self.queued.entry(provider).or_insert(trigger);
            return;
        }
        if let Some(existing) = self.queued.get_mut(&provider) {
            // A gap outranks a silence check (a check may find push broken,
            // which a gap explains).
            if *existing == Trigger::SilenceCheck {
                *existing = trigger;
            }
            return;
        }
        self.queued.insert(provider, trigger);
        self.queue.push_back(provider);
        self.pump(ctx);
    }

    fn spacing(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.config.starts_per_second.max(1)))
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!(names::CATCH_UP_QUEUED).set(self.queue.len() as f64);
        while self.running.len() < self.config.concurrency.max(1) {
            let now = tokio::time::Instant::now();
            if now < self.next_start {
                if !self.pump_armed && !self.queue.is_empty() {
                    self.pump_armed = true;
                    ctx.run_later(self.next_start - now, |act, ctx| {
                        act.pump_armed = false;
                        act.pump(ctx);
                    });
                }
                return;
            }
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            if self.running.contains(&id) {
                // Queued again while running: after it finishes.
                continue;
            }
            let Some(trigger) = self.queued.remove(&id) else {
                continue;
            };
            let Some(tracked) = self.tracked.get(&id) else {
                continue;
            };
            self.next_start = now.max(self.next_start) + self.spacing();
            self.running.insert(id);
            let run = run(
                self.ports.clone(),
                self.config.clone(),
                tracked.provider.clone(),
                trigger,
            );
            ctx.spawn(run.into_actor(self).map(move |outcome, act, ctx| {
                act.finished(
                    Finished {
                        provider: id,
                        trigger,
                        outcome,
                    },
                    ctx,
                );
            }));
        }
    }

    fn finished(&mut self, done: Finished, ctx: &mut Context<Self>) {
        self.running.remove(&done.provider);
        let kind = self
            .tracked
            .get(&done.provider)
            .map_or("unknown", |t| t.provider.kind.as_str());
        metrics::counter!(names::CATCH_UPS, "kind" => kind, "trigger" => done.trigger.as_str(), "outcome" => done.outcome.as_str()).increment(1);
        match &done.outcome {
            CatchUpOutcome::CaughtUp { unannounced, .. } if *unannounced > 0 => {
                if let Some(supervisor) = self
                    .tracked
                    .get(&done.provider)
                    .and_then(|t| t.supervisor.as_ref())
                {
                    // Recreating restores push; the recreate's own catch-up
                    // covers the moments in between.
                    supervisor.do_send(SubscriptionRemoved);
                }
            }
            CatchUpOutcome::Continues { .. } => {
                self.enqueue(done.provider, done.trigger, ctx);
            }
            CatchUpOutcome::Failed { error } => {
                tracing::warn!(provider = %done.provider, trigger = done.trigger.as_str(), error = %error, retry_in_s = self.config.retry_after.as_secs(), "catch-up failed; retrying later");
                let (id, trigger) = (done.provider, done.trigger);
                ctx.run_later(self.config.retry_after, move |act, ctx| {
                    if act.tracked.contains_key(&id) {
                        act.enqueue(id, trigger, ctx);
                    }
                });
            }
            _ => {}
        }
        // A gap noticed while this one ran.
        if self.queued.contains_key(&done.provider) && !self.queue.contains(&done.provider) {
            self.queue.push_back(done.provider);
        }
        self.pump(ctx);
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.tracked.is_empty() {
            return;
        }
        // A provider whose supervisor stopped (retired, handed over) is no
        // longer ours to check.
        self.tracked
            .retain(|_, t| t.supervisor.as_ref().is_none_or(|s| s.connected()));
        self.sweeping = true;
        let ids: Vec<ProviderId> = self.tracked.keys().copied().collect();
        let store = self.ports.store.clone();
        let now = self.ports.clock.now();
        let poll_after: Vec<(ProviderKind, TimeDelta)> = self
            .config
            .poll_after_silence
            .iter()
            .map(|(kind, limit)| (*kind, *limit))
            .collect();
        ctx.spawn(
            async move { store.silence_sweep(&ids, now, &poll_after).await }
                .into_actor(self)
                .map(move |sweep, act, ctx| {
                    act.sweeping = false;
                    let sweep = match sweep {
                        Ok(sweep) => sweep,
                        Err(e) => {
                            tracing::warn!(error = %e, "silence check sweep: store unavailable; next sweep retries");
                            return;
                        }
                    };
                    let age = |at: DateTime<Utc>| (now - at).max(TimeDelta::zero());
                    let oldest: HashMap<ProviderKind, f64> = sweep
                        .oldest
                        .into_iter()
                        .map(|(kind, at)| (kind, age(at).num_milliseconds() as f64 / 1000.0))
                        .collect();
                    let mut due = Vec::new();
                    for proof in sweep.due {
                        if let Some(latest) = proof.latest()
                            && let Some(limit) = act.config.poll_after_silence.get(&proof.kind)
                            && age(latest) >= *limit
                        {
                            due.push(proof.provider);
                        }
                    }
                    for kind in ProviderKind::ALL {
                        metrics::gauge!(names::PROVIDER_FRESHNESS_OLDEST, "kind" => kind.as_str())
                            .set(oldest.get(kind).copied().unwrap_or(0.0));
                    }
                    for id in due {
                        if !act.running.contains(&id) && !act.queued.contains_key(&id) {
                            act.enqueue(id, Trigger::SilenceCheck, ctx);
                        }
                    }
                }),
        );
    }
}

impl Actor for CatchUpActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ActorRunning {
            actor: "catch_up",
            running: true,
            many: false,
        }
        .emit();
        ctx.run_interval(self.config.sweep_every, |act, ctx| act.sweep(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        ActorRunning {
            actor: "catch_up",
            running: false,
            many: false,
        }
        .emit();
    }
}

impl Handler<CatchUpDue> for CatchUpActor {
    type Result = ();
    fn handle(&mut self, due: CatchUpDue, ctx: &mut Self::Context) {
        let id = due.provider.id;
        self.tracked.insert(
            id,
            Tracked {
                provider: due.provider,
                supervisor: due.supervisor,
            },
        );
        self.enqueue(id, due.trigger, ctx);
    }
}

impl Handler<Forget> for CatchUpActor {
    type Result = ();
    fn handle(&mut self, Forget(id): Forget, _: &mut Self::Context) {
        self.tracked.remove(&id);
        self.queued.remove(&id);
        self.queue.retain(|p| *p != id);
    }
}

impl Handler<Stop> for CatchUpActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SweepNow> for CatchUpActor {
    type Result = ();
    fn handle(&mut self, _: SweepNow, ctx: &mut Self::Context) {
        self.sweep(ctx);
    }
}

/// How soon a catch-up wants its fleet permit: changes a gap held back are late
/// for consumers already, but a renewal whose subscription would lapse within
/// this goes first.
pub const CATCH_UP_DEADLINE: TimeDelta = TimeDelta::hours(1);

/// One catch-up of `provider`: admitted by its budget, under a fleet permit.
pub async fn run(
    ports: CatchUpPorts,
    config: CatchUpConfig,
    provider: Provider,
    trigger: Trigger,
) -> CatchUpOutcome {
    ports.api.admit(&provider, AttemptKind::Renew).await;
    // Closed permits only happen at shutdown: nothing new starts then.
    let deadline = ports.clock.now() + CATCH_UP_DEADLINE;
    let Ok(_permit) = ports.permits.acquire(deadline).await else {
        return CatchUpOutcome::Failed {
            error: "shutting down".to_owned(),
        };
    };
    match catch_up(&ports, &config, &provider, trigger).await {
        Ok(outcome) => outcome,
        Err(error) => CatchUpOutcome::Failed { error },
    }
}

async fn catch_up(
    ports: &CatchUpPorts,
    config: &CatchUpConfig,
    provider: &Provider,
    trigger: Trigger,
) -> Result<CatchUpOutcome, String> {
    let store = &ports.store;
    let now = ports.clock.now();
    let (mut state, last_webhook) = store
        .catch_up_state(provider.id)
        .await
        .map_err(|e| e.to_string())?;
    let Some(cursor) = state.cursor.clone() else {
        take_fresh_cursor(ports, config, provider, &mut state, now).await?;
        return Ok(CatchUpOutcome::CursorTaken);
    };
    let alive = [last_webhook, state.checked_at].into_iter().flatten().max();
    if trigger == Trigger::Startup
        && state.page.is_none()
        && alive.is_some_and(|at| now - at < config.startup_gap)
    {
        return Ok(CatchUpOutcome::Skipped);
    }
    let from = state.cursor_at.unwrap_or(now);
    // Webhooks since the cursor was taken: changes without a time cannot be
    // told apart from announced ones then.
    let webhook_since_cursor = last_webhook.is_some_and(|w| w >= from);
    let (mut changes, mut unannounced) = (0_u64, 0_u64);
    for _ in 0..config.max_pages.max(1) {
        let position = match state.page.as_deref() {
            Some(page) => ChangesFrom::Page(page),
            None => ChangesFrom::Cursor(&cursor),
        };
        metrics::counter!(names::CATCH_UP_CALLS, "kind" => provider.kind.as_str()).increment(1);
        let page = match ports
            .api
            .changes_since(provider, position, config.page_size)
            .await
        {
            Ok(page) => page,
            Err(ChangesError::CursorExpired { reason }) => {
                return resync(ports, config, provider, &mut state, now, reason).await;
            }
            Err(ChangesError::Api(e)) => return Err(e.to_string()),
        };
        for change in &page.changes {
            let mut change = change.clone();
            if change.kind == ChangeKind::Updated && change.created_at.is_some_and(|c| c >= from) {
                change.kind = ChangeKind::Created;
            }
            publish_replay(ports, provider, &change, trigger, now).await?;
            changes += 1;
            let announced = match change.changed_at {
                Some(at) => last_webhook.is_some_and(|w| at <= w),
                None => webhook_since_cursor,
            };
            if !announced {
                unannounced += 1;
            }
        }
        metrics::counter!(names::CATCH_UP_REPLAYED, "kind" => provider.kind.as_str())
            .increment(page.changes.len() as u64);
        match page.next {
            ChangesNext::Page(next) => {
                state.page = Some(next);
                save(ports, provider.id, &state, now).await?;
            }
            ChangesNext::Done(next) => {
                state.cursor = Some(next);
                state.page = None;
                state.cursor_at = Some(now);
                state.checked_at = Some(now);
                let push_broken = trigger == Trigger::SilenceCheck && unannounced > 0;
                if trigger == Trigger::SilenceCheck {
                    state.push_broken = if push_broken {
                        u32::try_from(unannounced).unwrap_or(u32::MAX)
                    } else {
                        0
                    };
                    if push_broken {
                        state.push_broken_at = Some(now);
                    }
                }
                save(ports, provider.id, &state, now).await?;
                let window = CatchUpWindow {
                    from,
                    to: now,
                    changes,
                    trigger: trigger.as_str().to_owned(),
                };
                publish_event(ports, provider, DomainEventType::CaughtUp, &window, now).await;
                if push_broken {
                    push_is_broken(ports, provider, &window, unannounced, last_webhook, now).await;
                } else if trigger == Trigger::SilenceCheck {
                    tracing::info!(tenant = %provider.tenant, provider = %provider.id, kind = %provider.kind, changes, "silence check: the provider is quiet, not broken");
                }
                return Ok(CatchUpOutcome::CaughtUp {
                    changes,
                    unannounced: if push_broken { unannounced } else { 0 },
                });
            }
        }
    }
    Ok(CatchUpOutcome::Continues { changes })
}

async fn save(
    ports: &CatchUpPorts,
    provider: ProviderId,
    state: &CatchUpState,
    now: DateTime<Utc>,
) -> Result<(), String> {
    ports
        .store
        .save_catch_up_state(provider, state, now)
        .await
        .map_err(|e| e.to_string())
}

/// Reads the initial round to its end, keeping only the cursor it ends with.
async fn take_fresh_cursor(
    ports: &CatchUpPorts,
    config: &CatchUpConfig,
    provider: &Provider,
    state: &mut CatchUpState,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let mut page: Option<String> = None;
    for _ in 0..MAX_INITIAL_PAGES {
        let from = match page.as_deref() {
            Some(p) => ChangesFrom::Page(p),
            None => ChangesFrom::Start,
        };
        metrics::counter!(names::CATCH_UP_CALLS, "kind" => provider.kind.as_str()).increment(1);
        let read = ports
            .api
            .changes_since(provider, from, config.page_size)
            .await
            .map_err(|e| e.to_string())?;
        match read.next {
            ChangesNext::Page(next) => page = Some(next),
            ChangesNext::Done(cursor) => {
                state.cursor = Some(cursor);
                state.page = None;
                state.cursor_at = Some(now);
                state.checked_at = Some(now);
                save(ports, provider.id, state, now).await?;
                tracing::info!(tenant = %provider.tenant, provider = %provider.id, kind = %provider.kind, "change cursor taken");
                return Ok(());
            }
        }
    }
    Err(format!(
        "the initial read did not end within {MAX_INITIAL_PAGES} pages"
    ))
}

/// The cursor expired: tell downstream to resynchronise, take a fresh one.
async fn resync(
    ports: &CatchUpPorts,
    config: &CatchUpConfig,
    provider: &Provider,
    state: &mut CatchUpState,
    now: DateTime<Utc>,
    reason: String,
) -> Result<CatchUpOutcome, String> {
    tracing::warn!(tenant = %provider.tenant, provider = %provider.id, kind = %provider.kind, reason = %reason, "change cursor expired: resync_required, taking a fresh cursor");
    let event = DomainEvent::resync_required(
        provider.tenant.clone(),
        provider.id,
        provider.kind,
        &format!("cursor_expired: {reason}; a full resync is the consumer's job"),
        now,
        None,
    );
    ports
        .events
        .publish(&event)
        .await
        .map_err(|e| e.to_string())?;
    state.cursor = None;
    state.page = None;
    take_fresh_cursor(ports, config, provider, state, now).await?;
    Ok(CatchUpOutcome::ResyncRequired { reason })
}

/// The replay's de-duplication key: the same item version is stored once.
pub fn replay_id(provider: ProviderId, change: &ItemChange) -> String {
    format!(
        "replay:{provider}:{}:{}",
        change.item_id,
        change.version.as_deref().unwrap_or(change.kind.as_str())
    )
}

async fn publish_replay(
    ports: &CatchUpPorts,
    provider: &Provider,
    change: &ItemChange,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let envelope = WebhookEnvelope {
        tenant: provider.tenant.clone(),
        provider_id: provider.id,
        kind: provider.kind,
        subscription_id: "replay".to_owned(),
        received_at: now,
        notification: serde_json::json!({
            "source": "replay",
            "changeType": change.kind.as_str(),
            "itemId": change.item_id,
            "version": change.version,
            "resource": format!("{}/{}", provider.resource, change.item_id),
            "changedAt": change.changed_at,
            "trigger": trigger.as_str(),
        }),
    };
    let payload = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
    let message = DurableMessage {
        subject: ports
            .replays
            .webhook_subject(provider.kind, &provider.tenant, provider.id),
        msg_id: replay_id(provider.id, change),
        payload,
    };
    ports
        .replays
        .publish_durable(&message, PUBLISH_TIMEOUT)
        .await
        .map(|_duplicate| ())
        .map_err(|e| format!("replay not published: {e}"))
}

async fn publish_event(
    ports: &CatchUpPorts,
    provider: &Provider,
    event_type: DomainEventType,
    window: &CatchUpWindow,
    now: DateTime<Utc>,
) {
    let mut event = DomainEvent::resync_required(
        provider.tenant.clone(),
        provider.id,
        provider.kind,
        window.trigger.as_str(),
        now,
        None,
    );
    event.event_type = event_type;
    event.window = Some(window.clone());
    if let Err(e) = ports.events.publish(&event).await {
        tracing::warn!(provider = %provider.id, event = event_type.as_str(), error = %e, "catch-up event not published");
    }
}

async fn push_is_broken(
    ports: &CatchUpPorts,
    provider: &Provider,
    window: &CatchUpWindow,
    unannounced: u64,
    last_webhook: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    tracing::error!(
        tenant = %provider.tenant, provider = %provider.id, kind = %provider.kind, changes = unannounced,
        last_webhook = ?last_webhook,
        "push broken: changes no webhook announced; replayed, recreating the subscription"
    );
    let mut window = window.clone();
    window.changes = unannounced;
    publish_event(ports, provider, DomainEventType::PushBroken, &window, now).await;
    if let Some(alerts) = &ports.alerts {
        alerts.do_send(PushBrokenFound {
            provider_id: provider.id,
            tenant: provider.tenant.clone(),
            kind: provider.kind,
            changes: unannounced,
            last_webhook,
            at: now,
        });
    }
}
