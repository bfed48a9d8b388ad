//! The health board: an in-memory view of every supervised provider's state,
//! written by the supervisors after each attempt and read by the metrics exporter,
//! the admin API and readiness checks.
//!
//! It owns nothing durable (Postgres does); it exists so that fleet gauges and the
//! per-provider "unhealthy" series are computed at scrape time from the same state
//! the actors act on, and vanish the moment a provider heals or is retired.

use crate::domain::{HealthState, ProviderId, ProviderKind, TenantId};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One provider's line on the board.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardEntry {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Provider kind.
    pub kind: ProviderKind,
    /// Current health.
    pub status: HealthState,
    /// Consecutive failures.
    pub failures: u32,
    /// Expiry of the live subscription, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Next scheduled attempt, if a timer is armed.
    pub next_at: Option<DateTime<Utc>>,
    /// Set while no webhook has arrived for longer than the silence threshold.
    pub silent_since: Option<DateTime<Utc>>,
}

/// Shared, cheaply cloned handle to the board.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard(Arc<RwLock<HashMap<ProviderId, BoardEntry>>>);

impl HealthBoard {
    /// Writes a provider's line.
    pub fn upsert(&self, provider: ProviderId, entry: BoardEntry) {
        if let Ok(mut map) = self.0.write() {
            map.insert(provider, entry);
        }
    }

    /// Updates a provider's line in place, if present.
    pub fn update(&self, provider: ProviderId, f: impl FnOnce(&mut BoardEntry)) {
        if let Ok(mut map) = self.0.write()
            && let Some(entry) = map.get_mut(&provider)
        {
            f(entry);
        }
    }

    /// Removes a retired provider.
    pub fn remove(&self, provider: ProviderId) {
        if let Ok(mut map) = self.0.write() {
            map.remove(&provider);
        }
    }

    /// A copy of one line.
    pub fn get(&self, provider: ProviderId) -> Option<BoardEntry> {
        self.0
            .read()
            .ok()
            .and_then(|map| map.get(&provider).cloned())
    }

    /// A copy of every line.
    pub fn snapshot(&self) -> Vec<(ProviderId, BoardEntry)> {
        self.0
            .read()
            .map(|map| map.iter().map(|(id, e)| (*id, e.clone())).collect())
            .unwrap_or_default()
    }

    /// Number of providers on the board.
    pub fn len(&self) -> usize {
        self.0.read().map(|map| map.len()).unwrap_or(0)
    }

    /// True when no provider is on the board.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
