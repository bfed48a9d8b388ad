//! The housekeeping job: deletes renewal attempts, audit rows and delivery-log
//! rows older than their configured ages and status-page sessions that have
//! expired, and drives tenant offboardings to the end — both in
//! bounded batches, each its own short statement, so nothing holds a lock for
//! long. It runs every `housekeeping_interval_seconds`, at once when woken (an
//! offboarding was asked for), and every few seconds while an offboarding
//! waits for its subscriptions to be deleted at the providers. An offboarding
//! is resumed from the store after a restart. Works through the admin port; the
//! fleet does the provider calls, as for a single delete.

use crate::telemetry::events::{RetentionPurged, TenantOffboarding};
use chrono::TimeDelta;
use std::sync::Arc;
use std::time::Duration;
use subkeeper_actors::domain::TenantId;
use subkeeper_actors::fleet::FleetHandle;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{AdminStore, RetainedTable, StoreError};
use tokio::sync::Notify;

/// How often an offboarding waiting for its subscriptions is looked at again.
const OFFBOARDING_POLL: Duration = Duration::from_secs(1);

/// What the job is told.
#[derive(Debug, Clone, Copy)]
pub struct HousekeepingSettings {
    /// Attempts older than this go; `None` keeps them.
    pub attempts_age: Option<TimeDelta>,
    /// Audit rows older than this go; `None` keeps them.
    pub audit_age: Option<TimeDelta>,
    /// Delivery-log rows older than this go; `None` keeps them.
    pub deliveries_age: Option<TimeDelta>,
    /// Time between runs.
    pub interval: Duration,
    /// Rows per delete statement.
    pub batch: u32,
}

impl HousekeepingSettings {
    /// From the configuration (0 days: keep forever).
    pub fn from_config(config: &crate::Config) -> Self {
        let age = |days: u32| (days > 0).then(|| TimeDelta::days(i64::from(days)));
        Self {
            attempts_age: age(config.retention_attempts_days),
            audit_age: age(config.retention_audit_days),
            deliveries_age: age(config.retention_deliveries_days),
            interval: Duration::from_secs(config.housekeeping_interval_seconds),
            batch: config.housekeeping_batch,
        }
    }
}

/// Wakes the job (after an offboarding was asked for).
#[derive(Clone, Default)]
pub struct HousekeepingHandle {
    wake: Arc<Notify>,
}

impl HousekeepingHandle {
    /// Run now rather than at the next interval.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The job's state.
pub struct Housekeeping {
    admin: Arc<dyn AdminStore>,
    fleet: FleetHandle,
    clock: SharedClock,
    settings: HousekeepingSettings,
}

impl Housekeeping {
    /// A job over these ports.
    pub fn new(
        admin: Arc<dyn AdminStore>,
        fleet: FleetHandle,
        clock: SharedClock,
        settings: HousekeepingSettings,
    ) -> Self {
        Self {
            admin,
            fleet,
            clock,
            settings,
        }
    }

    /// Runs the job on the actix runtime (the fleet's handle talks to actors)
    /// until the task is aborted.
    pub fn spawn(self, handle: &HousekeepingHandle) -> tokio::task::JoinHandle<()> {
        let wake = handle.wake.clone();
        actix_rt::spawn(async move {
            loop {
                let waiting = match self.run_once().await {
                    Ok(waiting) => waiting,
                    Err(e) => {
                        tracing::warn!(error = %e, "housekeeping could not finish; it tries again at the next run");
                        false
                    }
                };
                let next = if waiting {
                    OFFBOARDING_POLL
                } else {
                    self.settings.interval
                };
                tokio::select! {
                    () = tokio::time::sleep(next) => {}
                    () = wake.notified() => {}
                }
            }
        })
    }

    /// One run: retention, then every pending offboarding as far as it can go.
    /// True while an offboarding waits for subscriptions to be deleted.
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        for (table, age) in [
            (RetainedTable::Attempts, self.settings.attempts_age),
            (RetainedTable::Audit, self.settings.audit_age),
            (RetainedTable::Deliveries, self.settings.deliveries_age),
            // Expired sessions are of no use to anyone: no age to configure.
            (RetainedTable::Sessions, Some(TimeDelta::zero())),
        ] {
            if let Some(age) = age {
                self.purge(table, now - age).await?;
            }
        }
        let mut waiting = false;
        for tenant in self.admin.pending_offboardings().await? {
            waiting |= !self.offboard(&tenant).await?;
        }
        Ok(waiting)
    }

    /// Deletes `table`'s rows from before `before`, a batch at a time; the
    /// number removed.
    pub async fn purge(
        &self,
        table: RetainedTable,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let removed = self
                .admin
                .purge_before(table, before, self.settings.batch)
                .await?;
            total += removed;
            if removed < u64::from(self.settings.batch) {
                break;
            }
            // Let the writers in between batches.
            tokio::task::yield_now().await;
        }
        RetentionPurged {
            table: table.as_str(),
            rows: total,
        }
        .emit();
        Ok(total)
    }

    /// Takes one tenant's offboarding as far as it goes now; true once finished.
    async fn offboard(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        loop {
            let progress = self
                .admin
                .offboard_step(tenant, self.settings.batch)
                .await?;
            if progress.providers_retired > 0 {
                // The fleet deletes their subscriptions at the providers.
                self.fleet.reconcile();
            }
            if progress.finished {
                TenantOffboarding {
                    tenant: tenant.as_str(),
                    step: "finished",
                }
                .emit();
                return Ok(true);
            }
            if progress.subscriptions_pending > 0 {
                tracing::debug!(tenant = %tenant, pending = progress.subscriptions_pending, "offboarding waits for subscriptions to be deleted at the providers");
                return Ok(false);
            }
            tokio::task::yield_now().await;
        }
    }
}
