//! `AlertingActor` itself: reads renewal results and silence changes, publishes
//! the alerts [`super::alert`] derives from them, and tracks unhealthy providers
//! for escalation. Also owns the ports it publishes and reads through. Must not
//! build alert contents itself: ids and texts come from the pure modules.

use super::alert::{
    Alert, AlertCondition, PushBrokenFound, alert_for, escalation, push_broken_alert, silence_alert,
};
use crate::delivery::{Deliveries, Settlement, Stop, retry_delay};
use crate::domain::{ProviderId, RenewalResult};
use crate::notification::SilenceChanged;
use crate::ports::CallbackUrls;
use crate::ports::clock::SharedClock;
use crate::ports::{AlertSink, AlertStore};
use crate::telemetry::{ActorRunning, AlertPublished, DeliveriesSettled, MessageRejected};
use actix::prelude::*;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The `consumer` and `actor` label of this actor's metrics.
const CONSUMER: &str = "alerting";

/// Silence alerts waiting to be published, at most; past it the oldest is dropped
/// (and logged). Silences start and end a few at a time, so this is never reached
/// unless the alert stream is down for long.
const MAX_QUEUED: usize = 10_000;

/// Alert ids remembered as published, at most (the oldest are forgotten first).
/// A redelivery comes within seconds to minutes; this covers thousands of alerts.
const RECENT_IDS: usize = 4096;

/// At start-up, an escalation that fell due while no instance was running is still
/// sent if it fell due within this window; one due longer ago was sent then (the
/// alert stream's duplicate window is as long, so a resend is dropped there) or is
/// stale news.
pub const MISSED_ESCALATION_GRACE: TimeDelta = TimeDelta::hours(24);

/// Alerting settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    /// A provider unhealthy for longer than this gets an `escalated` event.
    pub escalate_after: TimeDelta,
    /// How soon a failed publish or store read is retried.
    pub retry_every: Duration,
    /// Where providers call us back (named in the remediation).
    pub callbacks: CallbackUrls,
}

/// The ports the alerting actor uses.
#[derive(Clone)]
pub struct AlertingPorts {
    /// Where alerts go.
    pub sink: Arc<dyn AlertSink>,
    /// Who is unhealthy since when.
    pub store: Arc<dyn AlertStore>,
    /// Time.
    pub clock: SharedClock,
}

/// One unhealthy provider as the actor tracks it, for escalation.
struct Tracked {
    /// When it became unhealthy.
    since: DateTime<Utc>,
    /// The escalation was published.
    escalated: bool,
    /// The armed escalation check.
    timer: Option<SpawnHandle>,
}

/// Ids of alerts published lately, so a redelivered cause is not sent again.
#[derive(Default)]
struct RecentIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            if self.order.len() > RECENT_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// Publishes alert events.
pub struct AlertingActor {
    config: AlertingConfig,
    ports: AlertingPorts,
    tracked: HashMap<ProviderId, Tracked>,
    /// Alerts published lately (by id).
    recent: RecentIds,
    /// Silence alerts not yet published, oldest first.
    queue: VecDeque<Alert>,
    /// A queue publish is in flight or scheduled.
    flushing: bool,
}

/// How an escalation check ended.
enum Escalation {
    /// The store no longer has the provider unhealthy.
    Recovered,
    /// Unhealthy, but not for long enough yet (since the returned time).
    NotYet(DateTime<Utc>),
    /// Published (`true`: the stream already had it).
    Published(Alert, bool),
    /// The store or the sink failed.
    RetryLater(String),
}

impl AlertingActor {
    /// An actor over `ports`.
    pub fn new(config: AlertingConfig, ports: AlertingPorts) -> Self {
        Self {
            config,
            ports,
            tracked: HashMap::new(),
            recent: RecentIds::default(),
            queue: VecDeque::new(),
            flushing: false,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    /// Follows a provider that is unhealthy since `since`, arming its escalation
    /// check unless it is known already.
    fn track(&mut self, provider: ProviderId, since: DateTime<Utc>, ctx: &mut Context<Self>) {
        if self.tracked.contains_key(&provider) {
            return;
        }
        self.tracked.insert(
            provider,
            Tracked {
                since,
                escalated: false,
                timer: None,
            },
        );
        self.arm(provider, since + self.config.escalate_after, ctx);
    }

    fn untrack(&mut self, provider: ProviderId, ctx: &mut Context<Self>) {
        if let Some(t) = self.tracked.remove(&provider)
            && let Some(timer) = t.timer
        {
            ctx.cancel_future(timer);
        }
    }

    fn arm(&mut self, provider: ProviderId, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        let delay = self.ports.clock.timer_delay(at - self.now());
        let Some(t) = self.tracked.get_mut(&provider) else {
            return;
        };
        if let Some(old) = t.timer.take() {
            ctx.cancel_future(old);
        }
        t.timer = Some(ctx.run_later(delay, move |act, ctx| act.escalation_due(provider, ctx)));
    }

    fn escalation_due(&mut self, provider: ProviderId, ctx: &mut Context<Self>) {
        match self.tracked.get_mut(&provider) {
            Some(t) if !t.escalated => t.timer = None,
            _ => return,
        }
        let AlertingPorts { sink, store, clock } = self.ports.clone();
        let escalate_after = self.config.escalate_after;
        let callbacks = self.config.callbacks.clone();
        let check = async move {
            let found = match store.unhealthy(Some(provider)).await {
                Ok(found) => found,
                Err(e) => return Escalation::RetryLater(e.to_string()),
            };
            let Some(u) = found.into_iter().find(|u| u.provider_id == provider) else {
                return Escalation::Recovered;
            };
            let now = clock.now();
            if u.since + escalate_after > now {
                return Escalation::NotYet(u.since);
            }
            let alert = escalation(&u, now, &callbacks);
            match sink.publish(&alert).await {
                Ok(duplicate) => Escalation::Published(alert, duplicate),
                Err(e) => Escalation::RetryLater(e.to_string()),
            }
        };
        ctx.spawn(check.into_actor(self).map(move |outcome, act, ctx| {
            if !act.tracked.contains_key(&provider) {
                return;
            }
            match outcome {
                Escalation::Recovered => act.untrack(provider, ctx),
                Escalation::NotYet(since) => {
                    if let Some(t) = act.tracked.get_mut(&provider) {
                        t.since = since;
                    }
                    act.arm(provider, since + act.config.escalate_after, ctx);
                }
                Escalation::Published(alert, duplicate) => {
                    AlertPublished {
                        alert: &alert,
                        duplicate,
                    }
                    .emit();
                    act.recent.insert(&alert.id);
                    if let Some(t) = act.tracked.get_mut(&provider) {
                        t.escalated = true;
                    }
                }
                Escalation::RetryLater(error) => {
                    AlertNotPublished {
                        what: "escalation",
                        provider,
                        error: &error,
                    }
                    .emit();
                    let at = act.now()
                        + TimeDelta::from_std(act.config.retry_every)
                            .unwrap_or(TimeDelta::seconds(5));
                    act.arm(provider, at, ctx);
                }
            }
        }));
    }

    /// Brings the escalation state back from the store (at start-up).
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        let store = self.ports.store.clone();
        ctx.spawn(
            async move { store.unhealthy(None).await }
                .into_actor(self)
                .map(|found, act, ctx| match found {
                    Ok(found) => {
                        let now = act.now();
                        for u in found {
                            let due = u.since + act.config.escalate_after;
                            if now - due > MISSED_ESCALATION_GRACE {
                                // Escalated long ago (or stale): follow it, quietly.
                                act.tracked.insert(
                                    u.provider_id,
                                    Tracked {
                                        since: u.since,
                                        escalated: true,
                                        timer: None,
                                    },
                                );
                            } else {
                                act.track(u.provider_id, u.since, ctx);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "alerting: cannot read unhealthy providers; retrying");
                        ctx.run_later(act.config.retry_every, |act, ctx| act.rebuild(ctx));
                    }
                }),
        );
    }

    /// Publishes queued silence alerts in order; a failure waits `retry_every`.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        let Some(alert) = self.queue.front().cloned() else {
            return;
        };
        self.flushing = true;
        let sink = self.ports.sink.clone();
        ctx.spawn(
            async move {
                let result = sink.publish(&alert).await;
                (alert, result)
            }
            .into_actor(self)
            .map(|(alert, result), act, ctx| {
                act.flushing = false;
                match result {
                    Ok(duplicate) => {
                        AlertPublished {
                            alert: &alert,
                            duplicate,
                        }
                        .emit();
                        act.recent.insert(&alert.id);
                        act.queue.pop_front();
                        act.flush(ctx);
                    }
                    Err(error) => {
                        AlertNotPublished {
                            what: alert.event.as_str(),
                            provider: alert.provider_id,
                            error: &error.to_string(),
                        }
                        .emit();
                        act.flushing = true;
                        ctx.run_later(act.config.retry_every, |act, ctx| {
                            act.flushing = false;
                            act.flush(ctx);
                        });
                    }
                }
            }),
        );
    }
}

impl Handler<Stop> for AlertingActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Actor for AlertingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ActorRunning {
            actor: CONSUMER,
            running: true,
            many: false,
        }
        .emit();
        self.rebuild(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        ActorRunning {
            actor: CONSUMER,
            running: false,
            many: false,
        }
        .emit();
        if !self.queue.is_empty() {
            tracing::error!(
                alerts = self.queue.len(),
                "alerting stopped with silence alerts unpublished; the health rows still show the silence"
            );
        }
    }
}

/// What processing a batch of renewal results produced.
struct Processed {
    settlements: Vec<Settlement>,
    /// Results handled (alert published or none needed), in order.
    handled: Vec<RenewalResult>,
    /// Alerts published, with whether the stream had them already.
    published: Vec<(Alert, bool)>,
    /// Why the rest of the batch was left for redelivery.
    failed: Option<(ProviderId, String)>,
}

impl Handler<Deliveries> for AlertingActor {
    type Result = ResponseActFuture<Self, Vec<Settlement>>;

    fn handle(&mut self, Deliveries(batch): Deliveries, _: &mut Self::Context) -> Self::Result {
        let mut settlements = vec![Settlement::Ack; batch.len()];
        let mut work = Vec::with_capacity(batch.len());
        for (i, delivery) in batch.iter().enumerate() {
            match serde_json::from_slice::<RenewalResult>(&delivery.payload) {
                Ok(result) => {
                    let since = self.tracked.get(&result.provider_id).map(|t| t.since);
                    let alert = alert_for(&result, since, &self.config.callbacks)
                        .filter(|a| !self.recent.contains(&a.id));
                    work.push((i, result, alert, delivery.delivered));
                }
                Err(e) => {
                    MessageRejected {
                        consumer: CONSUMER,
                        subject: &delivery.subject,
                        error: &e.to_string(),
                    }
                    .emit();
                    settlements[i] = Settlement::Reject;
                }
            }
        }
        let sink = self.ports.sink.clone();
        let process = async move {
            let mut out = Processed {
                settlements,
                handled: Vec::new(),
                published: Vec::new(),
                failed: None,
            };
            for (i, result, alert, delivered) in work {
                // After a failure, leave the rest too, so a provider's alerts keep
                // their order.
                if out.failed.is_some() {
                    out.settlements[i] = Settlement::Retry(retry_delay(delivered));
                    continue;
                }
                if let Some(alert) = alert {
                    match sink.publish(&alert).await {
                        Ok(duplicate) => out.published.push((alert, duplicate)),
                        Err(e) => {
                            out.failed = Some((result.provider_id, e.to_string()));
                            out.settlements[i] = Settlement::Retry(retry_delay(delivered));
                            continue;
                        }
                    }
                }
                out.handled.push(result);
            }
            out
        };
        Box::pin(process.into_actor(self).map(|out, act, ctx| {
            for (alert, duplicate) in &out.published {
                AlertPublished {
                    alert,
                    duplicate: *duplicate,
                }
                .emit();
                act.recent.insert(&alert.id);
            }
            if let Some((provider, error)) = &out.failed {
                AlertNotPublished {
                    what: "renewal alert",
                    provider: *provider,
                    error,
                }
                .emit();
            }
            for result in out.handled {
                if AlertCondition::of(result.status).is_some() {
                    act.track(result.provider_id, result.attempted_at, ctx);
                } else {
                    act.untrack(result.provider_id, ctx);
                }
            }
            DeliveriesSettled {
                consumer: CONSUMER,
                settlements: &out.settlements,
            }
            .emit();
            out.settlements
        }))
    }
}

impl Handler<SilenceChanged> for AlertingActor {
    type Result = ();

    fn handle(&mut self, change: SilenceChanged, ctx: &mut Self::Context) {
        let alert = silence_alert(&change, self.now(), &self.config.callbacks);
        if self.recent.contains(&alert.id) || self.queue.iter().any(|a| a.id == alert.id) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED
            && let Some(dropped) = self.queue.pop_front()
        {
            tracing::error!(
                provider = %dropped.provider_id, event = dropped.event.as_str(),
                "silence alert dropped: too many unpublished (is the alert stream reachable?)"
            );
        }
        self.queue.push_back(alert);
        self.flush(ctx);
    }
}

impl Handler<PushBrokenFound> for AlertingActor {
    type Result = ();

    fn handle(&mut self, found: PushBrokenFound, ctx: &mut Self::Context) {
        let alert = push_broken_alert(&found, &self.config.callbacks);
        if self.recent.contains(&alert.id) || self.queue.iter().any(|a| a.id == alert.id) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED
            && let Some(dropped) = self.queue.pop_front()
        {
            tracing::error!(
                provider = %dropped.provider_id, event = dropped.event.as_str(),
                "alert dropped: too many unpublished (is the alert stream reachable?)"
            );
        }
        self.queue.push_back(alert);
        self.flush(ctx);
    }
}

/// An alert could not be published; it is retried.
struct AlertNotPublished<'a> {
    what: &'a str,
    provider: ProviderId,
    error: &'a str,
}

impl AlertNotPublished<'_> {
    fn emit(&self) {
        tracing::warn!(
            provider = %self.provider, what = self.what, error = self.error,
            "alert not published; retrying"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::alerting::AlertEvent;
    use crate::alerting::Unhealthy;
    use crate::alerting::alert::tests::{callbacks, result};
    use crate::delivery::Delivery;
    use crate::domain::{HealthState, ProviderKind, TenantId};
    use crate::notification::Silence;
    use crate::ports::clock::{Clock, ScaledClock};
    use crate::ports::{PublishError, StoreError};
    use async_trait::async_trait;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeSink {
        seen: Mutex<Vec<Alert>>,
        down: Mutex<bool>,
    }

    impl FakeSink {
        /// Alerts stored, as the stream keeps them: one per id.
        fn stored(&self) -> Vec<Alert> {
            let mut ids = std::collections::HashSet::new();
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|a| ids.insert(a.id.clone()))
                .cloned()
                .collect()
        }

        fn events(&self) -> Vec<(AlertEvent, AlertCondition)> {
            self.stored()
                .iter()
                .map(|a| (a.event, a.condition))
                .collect()
        }
    }

    #[async_trait]
    impl AlertSink for FakeSink {
        async fn publish(&self, alert: &Alert) -> Result<bool, PublishError> {
            if *self.down.lock().unwrap() {
                return Err(PublishError::Timeout("no JetStream ack".into()));
            }
            let mut seen = self.seen.lock().unwrap();
            let duplicate = seen.iter().any(|a| a.id == alert.id);
            seen.push(alert.clone());
            Ok(duplicate)
        }
    }

    #[derive(Default)]
    struct FakeStore(Mutex<Vec<Unhealthy>>);

    #[async_trait]
    impl AlertStore for FakeStore {
        async fn unhealthy(
            &self,
            provider: Option<ProviderId>,
        ) -> Result<Vec<Unhealthy>, StoreError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|u| provider.is_none_or(|p| p == u.provider_id))
                .cloned()
                .collect())
        }
    }

    /// An alerting actor on fakes, escalating after an hour, on a 1× clock from
    /// now. `sink_down`: the sink refuses every publish from the start.
    struct Rig {
        clock: Arc<ScaledClock>,
        sink: Arc<FakeSink>,
        store: Arc<FakeStore>,
        actor: Addr<AlertingActor>,
    }

    fn rig(sink_down: bool) -> Rig {
        let clock = Arc::new(ScaledClock::new(Utc::now(), 1));
        let sink = Arc::new(FakeSink::default());
        *sink.down.lock().unwrap() = sink_down;
        let store = Arc::new(FakeStore::default());
        let actor = AlertingActor::new(
            AlertingConfig {
                escalate_after: TimeDelta::minutes(60),
                retry_every: Duration::from_secs(5),
                callbacks: callbacks(),
            },
            AlertingPorts {
                sink: sink.clone(),
                store: store.clone(),
                clock: clock.clone(),
            },
        )
        .start();
        Rig {
            clock,
            sink,
            store,
            actor,
        }
    }

    fn deliveries(results: &[RenewalResult]) -> Deliveries {
        Deliveries(
            results
                .iter()
                .map(|r| Delivery {
                    subject: "subkeeper.renewal.acme.x".into(),
                    payload: serde_json::to_vec(r).unwrap(),
                    delivered: 1,
                    msg_id: None,
                })
                .collect(),
        )
    }

    fn paused_system() -> actix::SystemRunner {
        actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
        })
    }

    /// Three strikes, an hour in error, recovery: one firing, one escalation, one
    /// resolved — also when every result is delivered twice.
    #[test]
    fn an_hour_in_error_escalates_once_and_recovery_cancels_nothing_twice() {
        paused_system().block_on(async {
            let Rig {
                clock,
                sink,
                store,
                actor,
            } = rig(false);
            let p = ProviderId::new();
            use HealthState::*;
            let t0 = clock.now();
            let strikes = [
                result(p, t0, Healthy, Failing),
                result(p, t0 + TimeDelta::seconds(30), Failing, Failing),
                result(p, t0 + TimeDelta::seconds(90), Failing, Error),
            ];
            let since = strikes[2].attempted_at;
            store.0.lock().unwrap().push(Unhealthy {
                provider_id: p,
                tenant: TenantId::parse("acme").unwrap(),
                kind: ProviderKind::GraphMail,
                state: Error,
                since,
                reason: Some("transient (HTTP 500): boom".into()),
                consecutive_failures: 3,
            });
            for _ in 0..2 {
                let verdicts = actor.send(deliveries(&strikes)).await.unwrap();
                assert_eq!(verdicts, [Settlement::Ack; 3]);
            }
            assert_eq!(sink.events(), [(AlertEvent::Firing, AlertCondition::Error)]);
            assert_eq!(
                sink.seen.lock().unwrap().len(),
                1,
                "a redelivered result was published again"
            );

            // 59 minutes in: not yet. 61: escalated, once.
            tokio::time::sleep(Duration::from_secs(59 * 60)).await;
            assert_eq!(sink.events().len(), 1);
            tokio::time::sleep(Duration::from_secs(3 * 60)).await;
            assert_eq!(
                sink.events(),
                [
                    (AlertEvent::Firing, AlertCondition::Error),
                    (AlertEvent::Escalated, AlertCondition::Error)
                ]
            );
            tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
            assert_eq!(sink.events().len(), 2, "escalated more than once");

            store.0.lock().unwrap().clear();
            let healed = result(p, clock.now(), Error, Healthy);
            for _ in 0..2 {
                actor
                    .send(deliveries(std::slice::from_ref(&healed)))
                    .await
                    .unwrap();
            }
            let stored = sink.stored();
            assert_eq!(stored.len(), 3);
            assert_eq!(sink.seen.lock().unwrap().len(), 3, "published twice");
            assert_eq!(
                (stored[2].event, stored[2].condition, stored[2].since),
                (AlertEvent::Resolved, AlertCondition::Error, Some(since))
            );
        });
    }

    #[test]
    fn recovery_before_the_escalation_time_cancels_it() {
        paused_system().block_on(async {
            let Rig {
                clock,
                sink,
                store,
                actor,
            } = rig(false);
            let p = ProviderId::new();
            use HealthState::*;
            store.0.lock().unwrap().push(Unhealthy {
                provider_id: p,
                tenant: TenantId::parse("acme").unwrap(),
                kind: ProviderKind::GraphMail,
                state: NeedsReauth,
                since: clock.now(),
                reason: None,
                consecutive_failures: 1,
            });
            actor
                .send(deliveries(&[result(p, clock.now(), Healthy, NeedsReauth)]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(30 * 60)).await;
            actor
                .send(deliveries(&[result(p, clock.now(), NeedsReauth, Healthy)]))
                .await
                .unwrap();
            // The store still (wrongly) says unhealthy: only the cancelled timer
            // keeps the escalation from going out.
            tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
            assert_eq!(
                sink.events(),
                [
                    (AlertEvent::Firing, AlertCondition::NeedsReauth),
                    (AlertEvent::Resolved, AlertCondition::NeedsReauth)
                ]
            );
        });
    }

    #[actix::test]
    async fn a_failed_publish_leaves_the_rest_of_the_batch_for_redelivery() {
        let Rig { sink, actor, .. } = rig(true);
        let (p, q, now) = (ProviderId::new(), ProviderId::new(), Utc::now());
        use HealthState::*;
        let mut batch = deliveries(&[
            result(q, now, Healthy, Healthy),
            result(p, now, Failing, Error),
            result(q, now, Healthy, Healthy),
        ]);
        batch.0.push(Delivery {
            subject: "subkeeper.renewal.acme.x".into(),
            payload: b"{\"provider_id\": 7}".to_vec(),
            delivered: 1,
            msg_id: None,
        });
        let verdicts = actor.send(batch).await.unwrap();
        assert_eq!(
            verdicts,
            [
                Settlement::Ack,
                Settlement::Retry(Duration::from_secs(1)),
                Settlement::Retry(Duration::from_secs(1)),
                Settlement::Reject
            ]
        );
        *sink.down.lock().unwrap() = false;
        let verdicts = actor
            .send(deliveries(&[result(p, now, Failing, Error)]))
            .await
            .unwrap();
        assert_eq!(verdicts, [Settlement::Ack]);
        assert_eq!(sink.events(), [(AlertEvent::Firing, AlertCondition::Error)]);
    }

    #[test]
    fn silence_alerts_are_published_in_order_and_retried_until_stored() {
        paused_system().block_on(async {
            let Rig {
                clock, sink, actor, ..
            } = rig(true);
            let silence = Silence {
                provider_id: ProviderId::new(),
                tenant: TenantId::parse("acme").unwrap(),
                kind: ProviderKind::GraphMail,
                since: clock.now() - TimeDelta::hours(25),
                ended_at: None,
            };
            actor
                .send(SilenceChanged::Started(silence.clone()))
                .await
                .unwrap();
            actor
                .send(SilenceChanged::Ended(Silence {
                    ended_at: Some(clock.now()),
                    ..silence
                }))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(sink.stored().is_empty());
            *sink.down.lock().unwrap() = false;
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(
                sink.events(),
                [
                    (AlertEvent::Silent, AlertCondition::Silent),
                    (AlertEvent::Resolved, AlertCondition::Silent)
                ]
            );
            let silent = &sink.stored()[0];
            assert!(silent.remediation.join(" ").contains("subkeeper renew"));
        });
    }
}
