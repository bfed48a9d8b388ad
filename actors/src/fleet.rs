//! The `Fleet` actor: starts one [`ProviderSupervisor`] per owned provider (on
//! the [`SupervisorPool`]'s threads, the fleet's own by default), keeps the
//! set in step with the store (the reconciler), retires disabled or deleted
//! providers (their subscriptions are deleted at the provider — no orphans), and
//! routes "renew now" and lifecycle signals to the right supervisor.
//!
//! It is the only holder of supervisor addresses: others get a [`FleetHandle`].
//! Which providers this instance owns is decided by the store alone
//! (`owned_providers`, `load_owned`, and the change feed's `owned_here`).
//!
//! **Reconciling reads what changed, not the fleet.** At start-up the owned
//! providers are read in pages (`load_owned`); from then on each reconcile
//! (every `reconcile_every`, after an admin change, a claim, a retirement) reads
//! only the providers changed since the last mark of the store's change feed
//! (`changed_since`): an enabled provider owned here is adopted (told of the
//! change, or restarted under a new claim), a disabled or deleted one is retired
//! (its subscription deleted at the provider, or an orphan cleaned up), and one
//! another instance now owns is stood down. The mark is taken *before* each full
//! read, so nothing changed during the read falls between the two; which
//! changes a mark covers — including ones from transactions that commit out of
//! order — is the store's promise (see `src/store/lifecycle.rs`). A full
//! reconcile (`owned_providers`, `retired_with_subscription`) still runs every
//! `reconcile_full_every` as a safety net (and as the first reconcile after the
//! start-up load), and whenever the feed's mark cannot be read.
//!
//! With several instances (leases, see [`crate::ownership`]) the fleet also
//! heartbeats its lease, claims providers up to its fair share, hands over what
//! lies above it, and stands down — never retires — a supervisor whose provider
//! another instance now owns.

use crate::domain::Provider;
use crate::domain::{ProviderId, ProviderKind, RenewalResult, TenantId};
use crate::lifecycle::Policy;
use crate::ownership::{LeaseConfig, Rebalance, rebalance};
use crate::pool::SupervisorPool;
use crate::ports::{Fence, LoadedProvider, OwnedProvider, ProviderChange, ProviderState, Revision};
use crate::supervisor::{
    ForceRenew, Handover, NotificationsMissed, ProviderChanged, ProviderSupervisor, Retire,
    Retired, StandDown, SubscriptionRemoved, SupervisorContext, retry_delay,
};
use crate::telemetry::names;
use actix::prelude::*;
use futures_util::future::join_all;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Providers read per page when the fleet loads its state in bulk (start-up,
/// or a large claim): each page is a handful of queries, and its supervisors
/// start and arm their timers before the next page is read.
pub const LOAD_PAGE: u32 = 1000;

/// More new providers than this in one reconcile (a claim of a dead
/// instance's share, a bulk import) are started through the paged load rather
/// than each supervisor loading its own state.
const BULK_START: usize = 256;

/// Why a renew request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// Unknown provider, or one that belongs to another tenant (indistinguishable on
    /// purpose).
    #[error("no provider {provider} for tenant {tenant}")]
    UnknownProvider {
        /// The tenant asked for.
        tenant: String,
        /// The provider asked for.
        provider: String,
    },
    /// The tenant has no supervised provider.
    #[error("tenant {0} has no active provider")]
    NoProviders(String),
    /// The supervisor stopped mid-request (provider retired, shutdown).
    #[error("the provider's supervisor stopped before the renewal finished")]
    SupervisorGone,
    /// The fleet actor is not running.
    #[error("the fleet is not running")]
    FleetGone,
}

/// Fleet settings.
#[derive(Clone)]
pub struct FleetConfig {
    /// Lifecycle policy per provider kind.
    pub policies: HashMap<ProviderKind, Policy>,
    /// How often the reconciler reads the providers changed since it last looked.
    pub reconcile_every: Duration,
    /// How often the reconciler instead compares every running supervisor with
    /// every owned provider (a safety net under the change feed).
    pub reconcile_full_every: Duration,
    /// Leases, when several instances may share the fleet (Postgres).
    pub leases: Option<LeaseConfig>,
    /// The threads supervisors run on ([`SupervisorPool::current`]: the
    /// fleet's own). Its owner stops it once the fleet has shut down.
    pub pool: SupervisorPool,
}

struct Supervised {
    addr: Addr<ProviderSupervisor>,
    provider: Provider,
    fence: Fence,
}

/// Owns the supervisors.
pub struct Fleet {
    config: FleetConfig,
    ctx: SupervisorContext,
    supervisors: HashMap<ProviderId, Supervised>,
    /// Supervisors deleting their subscription before stopping.
    retiring: HashSet<ProviderId>,
    /// Orphans (retired with no supervisor) whose deletion is in flight.
    cleaning: HashSet<ProviderId>,
    reconciling: bool,
    reconciled_once: bool,
    /// Providers whose supervisors are stopping to be released to other instances.
    handing_over: HashSet<ProviderId>,
    /// A heartbeat is in flight.
    heartbeating: bool,
    /// The first heartbeat and claim have happened (always, without leases).
    leased_once: bool,
    /// Shutting down: nothing new is claimed or started.
    stopping: bool,
    /// When the paged load under way began, and the providers it has read.
    loading: Option<(std::time::Instant, usize)>,
    /// The change feed's mark the next reconcile reads from; `None`: the next
    /// reconcile is a full one.
    revision: Option<Revision>,
    /// When the last full reconcile read every owned provider; `None` until
    /// the first (right after the start-up load).
    full_at: Option<std::time::Instant>,
    /// A reconcile was asked for while one was under way: run another after it
    /// (the one under way may have read the feed before the change).
    again: bool,
    /// Enabled providers (re-enabled, re-claimed) whose change arrived while
    /// their supervisor was still retiring or being handed over: adopted once
    /// it has stopped, as the feed will not list them again.
    deferred: HashMap<ProviderId, OwnedProvider>,
    /// Orphans whose deletion failed: tried again at the next reconcile.
    orphans_failed: Vec<(OwnedProvider, crate::domain::Subscription)>,
}

impl Fleet {
    /// A fleet that will start supervisors with `ctx` and `config`.
    pub fn new(config: FleetConfig, ctx: SupervisorContext) -> Self {
        Self {
            config,
            ctx,
            supervisors: HashMap::new(),
            retiring: HashSet::new(),
            cleaning: HashSet::new(),
            reconciling: false,
            reconciled_once: false,
            handing_over: HashSet::new(),
            heartbeating: false,
            leased_once: false,
            stopping: false,
            loading: None,
            revision: None,
            full_at: None,
            again: false,
            deferred: HashMap::new(),
            orphans_failed: Vec::new(),
        }
    }

    /// Starts the fleet on the current arbiter and returns its handle.
    pub fn start_fleet(self) -> FleetHandle {
        FleetHandle {
            addr: self.start(),
            peers: None,
        }
    }

    fn policy_for(&self, kind: ProviderKind) -> Policy {
        self.config.policies.get(&kind).cloned().unwrap_or_default()
    }

    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        // With leases, nothing is ours until the first claim.
        let leased = self.config.leases.is_none() || self.leased_once;
        if self.stopping || !leased {
            return;
        }
        if self.reconciling {
            self.again = true;
            return;
        }
        self.again = false;
        if !self.reconciled_once {
            // The first time, every owned provider's state is read in pages and
            // handed to its supervisor: no per-provider queries at start-up.
            // The feed's mark first: what changes during the load is read after.
            self.reconciling = true;
            let store = self.ctx.ports.store.clone();
            ctx.spawn(async move { store.change_mark().await }.into_actor(self).map(
                |mark, act, ctx| {
                    // `full_at` stays unset: the reconcile after the load is a
                    // full one, which also finds orphans left while stopped.
                    act.revision = mark
                        .inspect_err(|e| tracing::warn!(error = %e, "cannot read the change feed's mark; the next reconcile reads every provider"))
                        .ok();
                    act.load_page(None, 0, ctx);
                },
            ));
            return;
        }
        let retry = std::mem::take(&mut self.orphans_failed);
        self.clean_orphans(retry, ctx);
        let full_due = self
            .full_at
            .is_none_or(|at| at.elapsed() >= self.config.reconcile_full_every);
        match self.revision {
            Some(since) if !full_due => self.reconcile_changes(since, ctx),
            _ => self.reconcile_full(ctx),
        }
    }

    /// Reads the providers changed since `since` and applies them.
    fn reconcile_changes(&mut self, since: Revision, ctx: &mut Context<Self>) {
        self.reconciling = true;
        let store = self.ctx.ports.store.clone();
        ctx.spawn(
            async move { store.changed_since(since).await }
                .into_actor(self)
                .map(|feed, act, ctx| {
                    act.reconciling = false;
                    match feed {
                        Ok(feed) => {
                            act.apply_changes(feed.changes, ctx);
                            act.revision = Some(feed.upto);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reconcile: cannot read the providers' change feed; retrying at the next reconcile")
                        }
                    }
                    if act.again {
                        act.reconcile(ctx);
                    }
                }),
        );
    }

    /// Compares every supervisor with every owned provider (the safety net).
    fn reconcile_full(&mut self, ctx: &mut Context<Self>) {
        self.reconciling = true;
        let store = self.ctx.ports.store.clone();
        let leases = self.config.leases.as_ref().map(|l| l.store.clone());
        // Supervised now; those the store no longer lists are either retired
        // (disabled, deleted) or, with leases, another instance's.
        let supervised: Vec<ProviderId> = match leases {
            Some(_) => self.supervisors.keys().copied().collect(),
            None => Vec::new(),
        };
        ctx.spawn(
            async move {
                // The mark before the read: changes after it are read next time.
                let mark = store.change_mark().await;
                let owned = store.owned_providers().await;
                let disowned = match (&owned, leases) {
                    (Ok(owned), Some(leases)) => {
                        let listed: HashSet<ProviderId> =
                            owned.iter().map(|o| o.provider.id).collect();
                        let missing: Vec<ProviderId> = supervised
                            .into_iter()
                            .filter(|id| !listed.contains(id))
                            .collect();
                        leases.disowned(&missing).await.map(HashSet::from_iter)
                    }
                    _ => Ok(HashSet::new()),
                };
                (mark, owned, disowned, store.retired_with_subscription().await)
            }
            .into_actor(self)
            .map(|(mark, owned, disowned, retired), act, ctx| {
                act.reconciling = false;
                match (owned, disowned) {
                    (Ok(owned), Ok(disowned)) => {
                        act.apply_owned(owned, &disowned, ctx);
                        act.reconciled_once = true;
                        act.revision = mark
                            .inspect_err(|e| tracing::warn!(error = %e, "cannot read the change feed's mark; the next reconcile reads every provider again"))
                            .ok();
                        act.full_at = Some(std::time::Instant::now());
                    }
                    (Ok(_), Err(e)) => {
                        tracing::warn!(error = %e, "reconcile: cannot tell which providers other instances own")
                    }
                    (Err(e), _) => tracing::warn!(error = %e, "reconcile: cannot list providers"),
                }
                match retired {
                    Ok(retired) => act.clean_orphans(retired, ctx),
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile: cannot list retired providers")
                    }
                }
                if act.again {
                    act.reconcile(ctx);
                }
            }),
        );
    }

    /// Applies what the change feed says about each changed provider.
    fn apply_changes(&mut self, changes: Vec<ProviderChange>, ctx: &mut Context<Self>) {
        if self.stopping || changes.is_empty() {
            return;
        }
        let mut adopted = Vec::new();
        let mut orphans = Vec::new();
        for change in changes {
            let id = change.owned.provider.id;
            if change.retired {
                self.deferred.remove(&id);
                if let Some(s) = self.supervisors.remove(&id) {
                    if change.owned_here {
                        // The supervisor deletes the subscription, then stops.
                        s.addr.do_send(Retire);
                        self.retiring.insert(id);
                        tracing::info!(tenant = %s.provider.tenant, provider = %id, "retiring provider");
                    } else {
                        s.addr.do_send(StandDown);
                    }
                }
                if change.owned_here
                    && let Some(sub) = change.subscription
                {
                    orphans.push((change.owned, sub));
                }
            } else if change.owned_here {
                if self.retiring.contains(&id) || self.handing_over.contains(&id) {
                    self.deferred.insert(id, change.owned);
                } else {
                    adopted.push(change.owned);
                }
            } else {
                // Another instance's now (or nobody's until claimed): its
                // subscription is the new owner's to keep, not ours to delete.
                self.deferred.remove(&id);
                if let Some(s) = self.supervisors.remove(&id) {
                    s.addr.do_send(StandDown);
                }
            }
        }
        // After the retirements: their supervisors delete what they hold.
        self.clean_orphans(orphans, ctx);
        let new = adopted
            .iter()
            .filter(|o| self.is_new(&o.provider.id))
            .count();
        if new > BULK_START {
            // Many at once (a dead instance's share, a bulk import): read their
            // state in pages rather than one query set per supervisor; the
            // others are adopted by the same pass.
            tracing::info!(
                new,
                "starting many new providers: loading their state in pages"
            );
            self.reconciling = true;
            self.load_page(None, 0, ctx);
        } else {
            let sctx = self.supervisor_context(ctx);
            for owned in adopted {
                self.adopt(owned, None, &sctx);
            }
        }
        self.report_progress();
    }

    fn apply_owned(
        &mut self,
        owned: Vec<OwnedProvider>,
        disowned: &HashSet<ProviderId>,
        ctx: &mut Context<Self>,
    ) {
        if self.stopping {
            return;
        }
        let wanted: HashSet<ProviderId> = owned.iter().map(|o| o.provider.id).collect();
        let gone: Vec<ProviderId> = self
            .supervisors
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in gone {
            if disowned.contains(&id) {
                if let Some(s) = self.supervisors.remove(&id) {
                    s.addr.do_send(StandDown);
                }
                continue;
            }
            if let Some(s) = self.supervisors.remove(&id) {
                s.addr.do_send(Retire);
                self.retiring.insert(id);
                tracing::info!(tenant = %s.provider.tenant, provider = %id, "retiring provider");
            }
        }
        let sctx = self.supervisor_context(ctx);
        let new = owned.iter().filter(|o| self.is_new(&o.provider.id)).count();
        let bulk = new > BULK_START;
        for owned in owned {
            if bulk && self.is_new(&owned.provider.id) {
                continue;
            }
            self.adopt(owned, None, &sctx);
        }
        if bulk {
            // Many at once (a dead instance's share, a bulk import): read their
            // state in pages rather than one query set per supervisor.
            tracing::info!(
                new,
                "starting many new providers: loading their state in pages"
            );
            self.reconciling = true;
            self.load_page(None, 0, ctx);
        }
        self.report_progress();
    }

    /// The context new supervisors get: the fleet's, told to report retirement here.
    /// Shared by the supervisors started with it.
    fn supervisor_context(&self, ctx: &mut Context<Self>) -> Arc<SupervisorContext> {
        let mut sctx = self.ctx.clone();
        sctx.retired = Some(ctx.address().recipient());
        Arc::new(sctx)
    }

    /// No supervisor runs (or is stopping) for this provider.
    fn is_new(&self, id: &ProviderId) -> bool {
        !self.supervisors.contains_key(id)
            && !self.retiring.contains(id)
            && !self.handing_over.contains(id)
    }

    /// Supervises `owned` under its claim: a running supervisor under the same
    /// claim is told of changes, one under an older claim stands down and a new
    /// one starts — from `state` when the caller read it, else loading its own.
    fn adopt(
        &mut self,
        OwnedProvider { provider, fence }: OwnedProvider,
        state: Option<ProviderState>,
        sctx: &Arc<SupervisorContext>,
    ) {
        // A new claim means the provider was someone else's in between: the
        // supervisor under the old claim stands down and a fresh one reloads.
        if self
            .supervisors
            .get(&provider.id)
            .is_some_and(|s| s.fence != fence)
            && let Some(s) = self.supervisors.remove(&provider.id)
        {
            s.addr.do_send(StandDown);
        }
        match self.supervisors.get_mut(&provider.id) {
            Some(s) if s.provider != provider => {
                s.addr.do_send(ProviderChanged(provider.clone()));
                s.provider = provider;
            }
            Some(_) => {}
            None if self.retiring.contains(&provider.id)
                || self.handing_over.contains(&provider.id) => {}
            None => {
                let policy = self.policy_for(provider.kind);
                // Not under actix's `Supervisor`: it restarts an actor that stops
                // while any `Addr` is alive (a tenant-wide renew holds some), and a
                // supervisor stops only when it retires — it must stay stopped.
                let supervisor =
                    ProviderSupervisor::new(provider.clone(), fence, policy, Arc::clone(sctx));
                let supervisor = match state {
                    Some(state) => supervisor.with_state(state),
                    None => supervisor,
                };
                let addr = self.config.pool.start(provider.id, supervisor);
                self.supervisors.insert(
                    provider.id,
                    Supervised {
                        addr,
                        provider,
                        fence,
                    },
                );
            }
        }
    }

    /// Reads the page of owned providers after `after` with their state and
    /// starts their supervisors (which arm their timers at once), then the next
    /// page; after the last, the fleet is ready and reconciles once. A store that
    /// cannot answer is waited for: retried with backoff, logged once.
    fn load_page(&mut self, after: Option<ProviderId>, failures: u32, ctx: &mut Context<Self>) {
        if self.stopping {
            self.reconciling = false;
            self.loading = None;
            return;
        }
        if after.is_none() && failures == 0 {
            self.loading = Some((std::time::Instant::now(), 0));
        }
        let store = self.ctx.ports.store.clone();
        ctx.spawn(
            async move { store.load_owned(after, LOAD_PAGE).await }
                .into_actor(self)
                .map(move |page, act, ctx| {
                    let page = match page {
                        Ok(page) => page,
                        Err(e) => {
                            if failures == 0 {
                                tracing::warn!(error = %e, "cannot load the fleet's providers; waiting for the store and retrying with backoff (logged once until it answers)");
                            }
                            let delay = retry_delay(failures);
                            ctx.run_later(delay, move |act, ctx| {
                                act.load_page(after, failures.saturating_add(1), ctx)
                            });
                            return;
                        }
                    };
                    if failures > 0 {
                        tracing::info!("the store answers again: loading the fleet resumes");
                    }
                    act.start_page(page, after, ctx);
                }),
        );
    }

    fn start_page(
        &mut self,
        page: Vec<LoadedProvider>,
        after: Option<ProviderId>,
        ctx: &mut Context<Self>,
    ) {
        if self.stopping {
            self.reconciling = false;
            self.loading = None;
            return;
        }
        let full = page.len() >= LOAD_PAGE as usize;
        let last = page.last().map(|l| l.owned.provider.id).or(after);
        let sctx = self.supervisor_context(ctx);
        if let Some((_, read)) = &mut self.loading {
            *read += page.len();
        }
        for LoadedProvider { owned, state } in page {
            self.adopt(owned, Some(state), &sctx);
        }
        self.report_progress();
        if full {
            self.load_page(last, 0, ctx);
            return;
        }
        if let Some((began, read)) = self.loading.take() {
            tracing::info!(
                providers = read,
                seconds = began.elapsed().as_secs_f64(),
                "fleet loaded: every owned provider's supervisor started with its state"
            );
        }
        self.reconciling = false;
        let first = !self.reconciled_once;
        self.reconciled_once = true;
        if first || self.again {
            // Catches what changed while loading, and retired providers' orphans.
            self.reconcile(ctx);
        }
    }

    /// Sets `subkeeper_fleet_providers` by stage.
    fn report_progress(&self) {
        let progress = &self.ctx.progress;
        for (stage, n) in [
            ("started", self.supervisors.len()),
            ("loaded", progress.loaded()),
            ("scheduled", progress.scheduled()),
        ] {
            metrics::gauge!(names::FLEET_PROVIDERS, "stage" => stage).set(n as f64);
        }
    }

    fn clean_orphans(
        &mut self,
        retired: Vec<(OwnedProvider, crate::domain::Subscription)>,
        ctx: &mut Context<Self>,
    ) {
        for (OwnedProvider { provider, fence }, sub) in retired {
            let id = provider.id;
            if self.supervisors.contains_key(&id)
                || self.retiring.contains(&id)
                || !self.cleaning.insert(id)
            {
                continue;
            }
            let api = self.ctx.ports.api.clone();
            let store = self.ctx.ports.store.clone();
            let permits = self.ctx.permits.clone();
            ctx.spawn(
                async move {
                    // Nothing lapses if it waits: behind every renewal.
                    let _permit = permits.acquire(chrono::DateTime::<chrono::Utc>::MAX_UTC).await.ok();
                    match api.delete(&provider, &sub).await {
                        Ok(()) => match store.subscription_deleted(fence, provider.id, &sub.external_id).await {
                            Ok(()) => tracing::info!(tenant = %provider.tenant, provider = %provider.id, "orphaned subscription deleted"),
                            Err(e) => tracing::warn!(provider = %provider.id, error = %e, "orphan deleted but not recorded"),
                        },
                        Err(e) => {
                            tracing::warn!(provider = %provider.id, error = %e, "deleting orphaned subscription failed; will retry");
                            return Some((OwnedProvider { provider, fence }, sub));
                        }
                    }
                    None
                }
                .into_actor(self)
                .map(move |failed, act, _| {
                    act.cleaning.remove(&id);
                    // The feed will not list it again: the next reconcile retries.
                    act.orphans_failed.extend(failed);
                }),
            );
        }
    }

    /// Renews the lease, then claims up to the fair share or hands over what lies
    /// above it. The first one claims before the first reconcile.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let Some(lease) = self.config.leases.clone() else {
            return;
        };
        if self.heartbeating || self.stopping {
            return;
        }
        self.heartbeating = true;
        let guard = self.ctx.lease.clone();
        let batch = lease.batch.max(1);
        ctx.spawn(
            async move {
                let sent = std::time::Instant::now();
                let membership = lease.store.heartbeat().await?;
                guard.renewed(sent, lease.store.ttl());
                if let Some(hook) = &lease.on_membership {
                    hook(&membership);
                }
                let mut claimed = 0u64;
                if let Rebalance::Claim(wanted) = rebalance(&membership, batch) {
                    while claimed < wanted {
                        let limit = u32::try_from((wanted - claimed).min(u64::from(batch)))
                            .unwrap_or(batch);
                        let got = lease.store.claim(limit).await?;
                        claimed += u64::from(got);
                        if got < limit {
                            break;
                        }
                    }
                }
                Ok::<_, crate::ports::StoreError>((membership, claimed))
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.heartbeating = false;
                let (membership, claimed) = match result {
                    Ok(done) => done,
                    Err(e) => {
                        tracing::warn!(error = %e, "lease heartbeat failed; retrying at the next one");
                        return;
                    }
                };
                metrics::gauge!(names::FLEET_INSTANCES).set(f64::from(membership.live_instances));
                if claimed > 0 {
                    metrics::counter!(names::LEASE_CHANGES, "change" => "claimed").increment(claimed);
                    tracing::info!(claimed, instances = membership.live_instances, "claimed providers");
                }
                if membership.lapsed && act.leased_once {
                    metrics::counter!(names::LEASE_CHANGES, "change" => "lapsed").increment(1);
                    tracing::warn!(
                        "this instance's lease had run out (was it paused?): providers other instances adopted are stood down"
                    );
                }
                let first = !act.leased_once;
                act.leased_once = true;
                if first || claimed > 0 || membership.lapsed {
                    act.reconcile(ctx);
                }
                if let Rebalance::HandOver(n) = rebalance(&membership, act.config.leases.as_ref().map_or(1, |l| l.batch))
                    && act.handing_over.is_empty()
                {
                    act.hand_over(usize::try_from(n).unwrap_or(usize::MAX), ctx);
                }
            }),
        );
    }

    /// Stops `n` supervisors (each after its attempt in flight is recorded) and
    /// releases their providers for other instances to claim.
    fn hand_over(&mut self, n: usize, ctx: &mut Context<Self>) {
        let Some(lease) = self.config.leases.clone() else {
            return;
        };
        let chosen: Vec<ProviderId> = self.supervisors.keys().take(n).copied().collect();
        let mut stopping = Vec::with_capacity(chosen.len());
        let mut providers = Vec::with_capacity(chosen.len());
        for id in chosen {
            if let Some(s) = self.supervisors.remove(&id) {
                self.handing_over.insert(id);
                stopping.push((id, s.fence, s.addr));
                providers.push(OwnedProvider {
                    provider: s.provider,
                    fence: s.fence,
                });
            }
        }
        if stopping.is_empty() {
            return;
        }
        ctx.spawn(
            async move {
                let released: Vec<(ProviderId, Fence)> =
                    join_all(stopping.into_iter().map(|(id, fence, addr)| async move {
                        let _ = addr.send(Handover).await;
                        (id, fence)
                    }))
                    .await;
                let result = lease.store.release(&released).await;
                (released, result)
            }
            .into_actor(self)
            .map(move |(released, result), act, ctx| {
                for (id, _) in &released {
                    act.handing_over.remove(id);
                }
                match result {
                    Ok(n) => {
                        metrics::counter!(names::LEASE_CHANGES, "change" => "released")
                            .increment(u64::from(n));
                        tracing::info!(released = n, "handed providers over to other instances");
                        // Released: the feed lists them as nobody's (or the
                        // claimant's); what was deferred for them is stale.
                        for (id, _) in &released {
                            act.deferred.remove(id);
                        }
                    }
                    // Still ours in the store, and unchanged there, so the feed
                    // will not list them: start them again now.
                    Err(e) => {
                        tracing::warn!(error = %e, "handing providers over failed; keeping them");
                        if !act.stopping {
                            let sctx = act.supervisor_context(ctx);
                            for owned in providers {
                                let owned =
                                    act.deferred.remove(&owned.provider.id).unwrap_or(owned);
                                act.adopt(owned, None, &sctx);
                            }
                        }
                    }
                }
            }),
        );
    }

    fn supervisor_for(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> Result<Addr<ProviderSupervisor>, FleetError> {
        match self.supervisors.get(&provider) {
            Some(s) if &s.provider.tenant == tenant => Ok(s.addr.clone()),
            _ => Err(FleetError::UnknownProvider {
                tenant: tenant.to_string(),
                provider: provider.to_string(),
            }),
        }
    }
}

impl Actor for Fleet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!(crate::telemetry::names::ACTORS_RUNNING, "actor" => "fleet").set(1.0);
        match self.config.leases.as_ref().map(|l| l.heartbeat_every) {
            Some(every) => {
                self.heartbeat(ctx);
                ctx.run_interval(every, |act, ctx| act.heartbeat(ctx));
            }
            None => {
                metrics::gauge!(names::FLEET_INSTANCES).set(1.0);
                self.reconcile(ctx);
            }
        }
        ctx.run_interval(self.config.reconcile_every, |act, ctx| act.reconcile(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        metrics::gauge!(crate::telemetry::names::ACTORS_RUNNING, "actor" => "fleet").set(0.0);
    }
}

/// Compare the supervisors with the store now (after an admin change).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile;

impl Handler<Reconcile> for Fleet {
    type Result = ();
    fn handle(&mut self, _: Reconcile, ctx: &mut Self::Context) {
        self.reconcile(ctx);
    }
}

impl Handler<Retired> for Fleet {
    type Result = ();
    fn handle(&mut self, Retired(id): Retired, ctx: &mut Self::Context) {
        self.retiring.remove(&id);
        // A provider re-enabled while it was retiring gets its supervisor back now.
        if let Some(owned) = self.deferred.remove(&id)
            && !self.stopping
        {
            let sctx = self.supervisor_context(ctx);
            self.adopt(owned, None, &sctx);
        }
        self.reconcile(ctx);
    }
}

/// Stop supervising, for shutdown: every supervisor stops once its attempt in
/// flight is recorded (none is started after), and with leases the instance
/// then leaves the fleet, releasing its providers for the others. Answers how
/// many supervisors were stopped.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

impl Handler<Shutdown> for Fleet {
    type Result = ResponseActFuture<Self, usize>;
    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let supervisors: Vec<_> = self.supervisors.drain().map(|(_, s)| s.addr).collect();
        let count = supervisors.len();
        let leases = self.config.leases.clone();
        let guard = self.ctx.lease.clone();
        let permits = self.ctx.permits.clone();
        Box::pin(
            async move {
                join_all(supervisors.iter().map(|a| a.send(Handover))).await;
                // Every supervisor has stopped: nothing more is called.
                permits.close();
                if let Some(lease) = leases {
                    guard.ended();
                    match lease.store.leave().await {
                        Ok(n) => metrics::counter!(names::LEASE_CHANGES, "change" => "released")
                            .increment(u64::from(n)),
                        Err(e) => tracing::warn!(error = %e, "cannot release this instance's leases; others adopt its providers once they lapse"),
                    }
                }
                count
            }
            .into_actor(self)
            .map(|count, _, ctx| {
                ctx.stop();
                count
            }),
        )
    }
}

/// Renew one provider, or every provider of a tenant, now.
#[derive(Message)]
#[rtype(result = "Result<Vec<RenewalResult>, FleetError>")]
pub struct RenewNow {
    /// The tenant the caller speaks for.
    pub tenant: TenantId,
    /// One provider, or all of the tenant's when `None`.
    pub provider: Option<ProviderId>,
}

impl Handler<RenewNow> for Fleet {
    type Result = ResponseFuture<Result<Vec<RenewalResult>, FleetError>>;
    fn handle(&mut self, msg: RenewNow, _: &mut Self::Context) -> Self::Result {
        let targets: Result<Vec<_>, FleetError> = match msg.provider {
            Some(id) => self.supervisor_for(&msg.tenant, id).map(|a| vec![a]),
            None => {
                let all: Vec<_> = self
                    .supervisors
                    .values()
                    .filter(|s| s.provider.tenant == msg.tenant)
                    .map(|s| s.addr.clone())
                    .collect();
                if all.is_empty() {
                    Err(FleetError::NoProviders(msg.tenant.to_string()))
                } else {
                    Ok(all)
                }
            }
        };
        Box::pin(async move {
            let targets = targets?;
            let answers = join_all(targets.iter().map(|a| a.send(ForceRenew))).await;
            answers
                .into_iter()
                .map(|a| match a {
                    Ok(Ok(result)) => Ok(result),
                    _ => Err(FleetError::SupervisorGone),
                })
                .collect()
        })
    }
}

/// A lifecycle notification for one provider (Graph).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "bool")]
pub enum LifecycleSignal {
    /// `reauthorizationRequired`: renew now.
    ReauthorizationRequired(ProviderId),
    /// `subscriptionRemoved`: recreate now.
    SubscriptionRemoved(ProviderId),
    /// `missed`: notifications were dropped; catch up.
    Missed(ProviderId),
}

impl Handler<LifecycleSignal> for Fleet {
    type Result = bool;
    fn handle(&mut self, signal: LifecycleSignal, _: &mut Self::Context) -> bool {
        match signal {
            LifecycleSignal::ReauthorizationRequired(id) => self.supervisors.get(&id).map(|s| {
                // Nobody waits for the answer; the result is published like any other.
                let addr = s.addr.clone();
                actix::spawn(async move {
                    let _ = addr.send(ForceRenew).await;
                });
            }),
            LifecycleSignal::SubscriptionRemoved(id) => self
                .supervisors
                .get(&id)
                .map(|s| s.addr.do_send(SubscriptionRemoved)),
            LifecycleSignal::Missed(id) => self
                .supervisors
                .get(&id)
                .map(|s| s.addr.do_send(NotificationsMissed)),
        }
        .is_some()
    }
}

/// Has the fleet loaded its providers (readiness), and how far have they got?
#[derive(Message)]
#[rtype(result = "FleetStatus")]
pub struct GetStatus;

/// A summary of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct FleetStatus {
    /// Every owned provider's supervisor has been started with its state (the
    /// first paged load is complete).
    pub ready: bool,
    /// Supervisors running.
    pub supervised: usize,
    /// Supervisors retiring.
    pub retiring: usize,
    /// Supervisors running with their state loaded.
    pub loaded: usize,
    /// Supervisors running whose next step is decided (a timer armed, an
    /// attempt under way, or parked until an operator acts).
    pub scheduled: usize,
}

impl Handler<GetStatus> for Fleet {
    type Result = FleetStatus;
    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> FleetStatus {
        self.report_progress();
        FleetStatus {
            ready: self.reconciled_once,
            supervised: self.supervisors.len(),
            retiring: self.retiring.len(),
            loaded: self.ctx.progress.loaded(),
            scheduled: self.ctx.progress.scheduled(),
        }
    }
}

/// The other instances sharing the fleet, as this one reaches them (over NATS):
/// what is asked of a provider this instance does not own goes to its owner.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + 'static {
    /// Renews `provider` on the instance that owns it; `None` if no other live
    /// instance does.
    async fn renew(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> Option<Result<RenewalResult, FleetError>>;

    /// Renews every provider of `tenant` that other instances own; their results.
    async fn renew_tenant(&self, tenant: &TenantId) -> Vec<RenewalResult>;

    /// Passes a lifecycle signal to the provider's owner; false if none took it.
    async fn signal(&self, signal: LifecycleSignal) -> bool;

    /// Asks every other instance to reconcile now (after an admin change).
    fn reconcile(&self);
}

/// The small handle the HTTP layer, the NATS control service and tests use.
/// With [`Peers`], what concerns a provider another instance owns is passed on
/// to that instance.
#[derive(Clone)]
pub struct FleetHandle {
    addr: Addr<Fleet>,
    peers: Option<std::sync::Arc<dyn Peers>>,
}

impl FleetHandle {
    /// The same fleet, passing on to `peers` what another instance owns.
    pub fn with_peers(&self, peers: std::sync::Arc<dyn Peers>) -> Self {
        Self {
            addr: self.addr.clone(),
            peers: Some(peers),
        }
    }

    /// The same fleet, this instance's providers only (what a peer asks of it).
    pub fn local(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            peers: None,
        }
    }

    /// Renews one provider of `tenant` now and returns its result.
    pub async fn renew(
        &self,
        tenant: TenantId,
        provider: ProviderId,
    ) -> Result<RenewalResult, FleetError> {
        let mut results = self.renew_all(tenant, Some(provider)).await?;
        results.pop().ok_or(FleetError::SupervisorGone)
    }

    /// Renews one provider, or all of a tenant's, now — wherever they are owned.
    pub async fn renew_all(
        &self,
        tenant: TenantId,
        provider: Option<ProviderId>,
    ) -> Result<Vec<RenewalResult>, FleetError> {
        let local = self
            .addr
            .send(RenewNow {
                tenant: tenant.clone(),
                provider,
            })
            .await
            .map_err(|_| FleetError::FleetGone)?;
        let Some(peers) = &self.peers else {
            return local;
        };
        match (local, provider) {
            (Err(FleetError::UnknownProvider { .. }), Some(id)) => {
                match peers.renew(&tenant, id).await {
                    Some(result) => result.map(|r| vec![r]),
                    None => Err(FleetError::UnknownProvider {
                        tenant: tenant.to_string(),
                        provider: id.to_string(),
                    }),
                }
            }
            (local, None) => {
                let mut results = match local {
                    Ok(results) => results,
                    Err(FleetError::NoProviders(_)) => Vec::new(),
                    Err(e) => return Err(e),
                };
                results.extend(peers.renew_tenant(&tenant).await);
                if results.is_empty() {
                    Err(FleetError::NoProviders(tenant.to_string()))
                } else {
                    Ok(results)
                }
            }
            (local, Some(_)) => local,
        }
    }

    /// Asks for a reconcile now (after an admin change), on every instance.
    pub fn reconcile(&self) {
        self.addr.do_send(Reconcile);
        if let Some(peers) = &self.peers {
            peers.reconcile();
        }
    }

    /// Routes a lifecycle signal to the provider's supervisor, wherever it runs;
    /// false if none runs for that provider.
    pub async fn signal(&self, signal: LifecycleSignal) -> bool {
        if self.addr.send(signal).await.unwrap_or(false) {
            return true;
        }
        match &self.peers {
            Some(peers) => peers.signal(signal).await,
            None => false,
        }
    }

    /// Stops every supervisor (after its attempt in flight is recorded) and, with
    /// leases, releases this instance's providers; then the fleet stops. Returns
    /// how many supervisors were stopped (0 if the fleet was not running).
    pub async fn shutdown(&self) -> usize {
        self.addr.send(Shutdown).await.unwrap_or(0)
    }

    /// The fleet's summary, or `None` if it is not running.
    pub async fn status(&self) -> Option<FleetStatus> {
        self.addr.send(GetStatus).await.ok()
    }
}
