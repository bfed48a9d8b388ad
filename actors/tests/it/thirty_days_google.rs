//! Thirty simulated days of a Google Calendar channel and a Gmail watch under
//! paused tokio time, through the same Fleet and ProviderSupervisor as Graph.
//!
//! Calendar: a channel cannot be extended, so every renewal opens a new channel;
//! the new one must be opened before the old one is stopped, the old one must still
//! be live when replaced, and at the end exactly one channel is live (no pile-up).
//! Gmail: `users.watch` again before the 7-day expiry, daily, keeping the id.
//!
//! The ports are in-process stand-ins with Google's rules on the shared clock (see
//! `common.rs` for why not sockets); the wire side is covered against the
//! simulator in `tests/it/google.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use subkeeper_actors::domain::{Provider, ProviderKind, Subscription};
use subkeeper_actors::lifecycle::Policy;
use subkeeper_actors::memory::MemoryStore;
use subkeeper_actors::ports::clock::SharedClock;
use subkeeper_actors::ports::{ApiError, CreateRequest, ProviderSubscription, SubscriptionApi};

/// Lifetime Google grants a channel or a watch.
const LIFETIME: TimeDelta = TimeDelta::days(7);

#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// A channel (or watch) opened or extended, with the expiry of the one it
    /// replaces, if it replaces a live one.
    Opened {
        id: String,
        at: DateTime<Utc>,
        replacing: Option<(String, DateTime<Utc>)>,
    },
    Stopped {
        id: String,
        at: DateTime<Utc>,
    },
}

/// Google's rules on the shared clock: Calendar channels expire and cannot be
/// extended (`renew` opens a new one); Gmail watches are extended in place.
struct ClockedGoogle {
    clock: SharedClock,
    /// Channel or watch id → expiry; removed when stopped.
    live: Mutex<HashMap<String, DateTime<Utc>>>,
    events: Mutex<Vec<Event>>,
}

impl ClockedGoogle {
    fn open(
        &self,
        id: String,
        replacing: Option<&Subscription>,
        history_id: Option<String>,
    ) -> ProviderSubscription {
        let now = self.clock.now();
        let mut live = self.live.lock().unwrap();
        let replacing = replacing.and_then(|old| {
            live.get(&old.external_id)
                .filter(|e| **e > now)
                .map(|e| (old.external_id.clone(), *e))
        });
        live.insert(id.clone(), now + LIFETIME);
        self.events.lock().unwrap().push(Event::Opened {
            id: id.clone(),
            at: now,
            replacing,
        });
        ProviderSubscription {
            external_id: id,
            resource_id: Some("resource-1".into()),
            expires_at: now + LIFETIME,
            client_state: Some(uuid::Uuid::new_v4().simple().to_string()),
            history_id,
        }
    }

    fn live_now(&self) -> Vec<String> {
        let now = self.clock.now();
        self.live
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| **e > now)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[async_trait]
impl SubscriptionApi for ClockedGoogle {
    fn max_lifetime(&self, _: &Provider) -> TimeDelta {
        LIFETIME - TimeDelta::minutes(5)
    }

    async fn create(
        &self,
        provider: &Provider,
        _: &CreateRequest,
    ) -> Result<ProviderSubscription, ApiError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Gmail answers the mailbox's historyId; the renewals below answer none,
        // and the one known must be kept.
        let history = (provider.kind == ProviderKind::Gmail).then(|| "4711".to_owned());
        Ok(self.open(uuid::Uuid::new_v4().to_string(), None, history))
    }

    async fn renew(
        &self,
        provider: &Provider,
        sub: &Subscription,
        _: DateTime<Utc>,
    ) -> Result<ProviderSubscription, ApiError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let id = match provider.kind {
            // Gmail: users.watch again; the watch keeps its id.
            ProviderKind::Gmail => sub.external_id.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        Ok(self.open(id, Some(sub), None))
    }

    async fn delete(&self, _: &Provider, sub: &Subscription) -> Result<(), ApiError> {
        self.live.lock().unwrap().remove(&sub.external_id);
        self.events.lock().unwrap().push(Event::Stopped {
            id: sub.external_id.clone(),
            at: self.clock.now(),
        });
        Ok(())
    }
}

/// Runs one provider of `kind` for 30 simulated days with `lookahead`, then hands
/// the stand-in, the store and the provider to `check`.
fn thirty_days(
    kind: ProviderKind,
    lookahead: TimeDelta,
    check: impl FnOnce(&ClockedGoogle, &MemoryStore, &Provider),
) {
    let policy = Policy {
        lookahead,
        ..Policy::default()
    };
    common::run_for_days(
        30,
        common::provider(kind, "team", "team@example.com"),
        policy,
        |clock| ClockedGoogle {
            clock,
            live: Mutex::default(),
            events: Mutex::default(),
        },
        check,
    );
}

#[test]
fn thirty_days_of_calendar_rotation_never_lapse_and_never_pile_up() {
    thirty_days(
        ProviderKind::GoogleCalendar,
        TimeDelta::hours(12),
        |google, store, provider| {
            let events = google.events.lock().unwrap().clone();
            let opened: Vec<&Event> = events
                .iter()
                .filter(|e| matches!(e, Event::Opened { .. }))
                .collect();
            // One channel per ~6.5 days over 30 days, plus the first.
            assert!((5..=6).contains(&opened.len()), "{events:#?}");
            for (i, event) in events.iter().enumerate() {
                let Event::Opened {
                    id: new_id,
                    at,
                    replacing,
                } = event
                else {
                    continue;
                };
                if i == 0 {
                    assert!(replacing.is_none());
                    continue;
                }
                let (old, expiry) = replacing
                    .clone()
                    .expect("each rotation replaces a channel that is still live");
                assert!(*at < expiry, "rotated after the old channel lapsed");
                assert!(*at >= expiry - TimeDelta::hours(12) - Policy::default().jitter_max);
                // The old channel is stopped right after — never before — the
                // new one was opened.
                let stopped_at = events
                    .iter()
                    .position(|e| matches!(e, Event::Stopped { id, .. } if *id == old))
                    .expect("every replaced channel is stopped");
                assert_eq!(
                    stopped_at,
                    i + 1,
                    "old stopped right after new {new_id} opened"
                );
            }
            let live = google.live_now();
            assert_eq!(live.len(), 1, "exactly one live channel: {live:?}");
            let stored = store
                .subscription(provider.id)
                .expect("a live subscription");
            assert_eq!(stored.external_id, live[0]);
            assert!(store.attempts().iter().all(|a| a.success));
        },
    );
}

#[test]
fn thirty_days_of_gmail_watch_renewed_daily_in_place() {
    // Renewing every 24 h of a 7-day watch is a lookahead of 6 days.
    thirty_days(
        ProviderKind::Gmail,
        TimeDelta::days(6),
        |google, store, provider| {
            let events = google.events.lock().unwrap().clone();
            let renewals: Vec<&Event> = events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::Opened {
                            replacing: Some(_),
                            ..
                        }
                    )
                })
                .collect();
            assert!(
                (28..=31).contains(&renewals.len()),
                "{} renewals",
                renewals.len()
            );
            assert!(
                events.iter().all(|e| !matches!(e, Event::Stopped { .. })),
                "a watch renewed in place is never stopped"
            );
            for event in &renewals {
                let Event::Opened {
                    id,
                    at,
                    replacing: Some((old, expiry)),
                } = event
                else {
                    unreachable!()
                };
                assert_eq!(id, old, "the watch keeps its id");
                assert!(
                    *at < *expiry && *expiry - *at >= TimeDelta::days(5),
                    "renewed daily, far from expiry"
                );
            }
            assert_eq!(google.live_now().len(), 1);
            let watch = store.subscription(provider.id).expect("a live watch");
            assert_eq!(
                watch.history_id.as_deref(),
                Some("4711"),
                "renewals that answer no historyId keep the known one"
            );
            assert!(store.attempts().iter().all(|a| a.success));
        },
    );
}
