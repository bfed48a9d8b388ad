//! `DeadlinePermits`: the fleet-wide cap on provider calls in flight, handed
//! out by deadline rather than by arrival. A renewal whose subscription expires
//! soonest goes first; new registrations (whose deadline is a whole lifetime
//! away) wait behind every renewal that is due, and among equals the earlier
//! arrival goes first. A FIFO queue let a burst of registrations starve a
//! renewal that was about to lapse.
//!
//! It owns only the queue: what a deadline is, is the caller's business (the
//! supervisor passes its subscription's expiry). `close()` at shutdown answers
//! every waiter and every later `acquire` with [`Closed`].

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::oneshot;

/// The permits are closed (shutdown): no more provider calls start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the fleet's call permits are closed")]
pub struct Closed;

/// Waiters in deadline order; the sequence number keeps arrival order among
/// equal deadlines.
type Queue = BTreeMap<(DateTime<Utc>, u64), oneshot::Sender<DeadlinePermit>>;

#[derive(Debug)]
struct State {
    /// Permits nobody holds and nobody waits for.
    available: usize,
    /// Who waits, soonest deadline first.
    waiting: Queue,
    /// Arrivals so far (tie-breaker).
    arrivals: u64,
    /// Shut: acquire answers `Closed`.
    closed: bool,
}

/// A fixed number of permits handed out soonest deadline first. Cheap to clone
/// (clones share the permits).
#[derive(Debug, Clone)]
pub struct DeadlinePermits(Arc<Mutex<State>>);

/// One permit; it goes back (to the waiter with the soonest deadline) when
/// dropped.
#[derive(Debug)]
pub struct DeadlinePermit(Arc<Mutex<State>>);

impl DeadlinePermits {
    /// `permits` permits (at least one is always available to hand out).
    pub fn new(permits: usize) -> Self {
        Self(Arc::new(Mutex::new(State {
            available: permits.max(1),
            waiting: BTreeMap::new(),
            arrivals: 0,
            closed: false,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for a call that must be done by `deadline`: at once if one is
    /// free and nobody waits, else once every waiter with an earlier deadline
    /// has had one. Dropping the future gives up its place.
    pub async fn acquire(&self, deadline: DateTime<Utc>) -> Result<DeadlinePermit, Closed> {
        let rx = {
            let mut state = self.lock();
            if state.closed {
                return Err(Closed);
            }
            if state.available > 0 && state.waiting.is_empty() {
                state.available -= 1;
                return Ok(DeadlinePermit(Arc::clone(&self.0)));
            }
            let (tx, rx) = oneshot::channel();
            let seq = state.arrivals;
            state.arrivals += 1;
            state.waiting.insert((deadline, seq), tx);
            rx
        };
        rx.await.map_err(|_| Closed)
    }

    /// Calls waiting for a permit.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Shuts the permits: every waiter and every later `acquire` gets
    /// [`Closed`]; permits held stay valid until dropped.
    pub fn close(&self) {
        let waiting = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.waiting)
        };
        // Dropping the senders answers the waiters, outside the lock.
        drop(waiting);
    }
}

impl Drop for DeadlinePermit {
    fn drop(&mut self) {
        loop {
            let next = {
                let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                match state.waiting.pop_first() {
                    Some((_, tx)) => tx,
                    None => {
                        state.available += 1;
                        return;
                    }
                }
            };
            // Handed over whole: a waiter that gave up meanwhile gets nothing, and
            // the permit goes to the next one (never dropped here, which would
            // come back to this loop).
            match next.send(DeadlinePermit(Arc::clone(&self.0))) {
                Ok(()) => return,
                Err(unsent) => std::mem::forget(unsent),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[tokio::test]
    async fn the_soonest_deadline_goes_first_whatever_the_arrival_order() {
        let permits = DeadlinePermits::new(1);
        let now = Utc::now();
        let held = permits.acquire(now).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, hours) in [
            ("later", 48),
            ("soonest", 1),
            ("registration", 168),
            ("sooner", 2),
        ] {
            let (permits, order) = (permits.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = permits
                    .acquire(now + TimeDelta::hours(hours))
                    .await
                    .unwrap();
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        while permits.waiting() < 4 {
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["soonest", "sooner", "later", "registration"]
        );
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_passes_its_turn_on_and_close_answers_the_rest() {
        let permits = DeadlinePermits::new(1);
        let now = Utc::now();
        let held = permits.acquire(now).await.unwrap();
        let gave_up = {
            let permits = permits.clone();
            tokio::spawn(async move { permits.acquire(now).await.map(drop) })
        };
        let waits = {
            let permits = permits.clone();
            tokio::spawn(async move { permits.acquire(now + TimeDelta::hours(1)).await })
        };
        while permits.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        let permit = waits.await.unwrap().unwrap();
        drop(permit);
        // Back to one free permit: taken at once.
        let again = permits.acquire(now).await.unwrap();
        let blocked = {
            let permits = permits.clone();
            tokio::spawn(async move { permits.acquire(now).await.map(drop) })
        };
        while permits.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        permits.close();
        assert_eq!(blocked.await.unwrap(), Err(Closed));
        assert_eq!(permits.acquire(now).await.map(drop), Err(Closed));
        drop(again);
    }
}
