//! `SupervisorPool`: the threads provider supervisors run on. With one thread
//! every supervisor runs on the fleet's own arbiter (today's behaviour, and what
//! the paused-time tests need: their one runtime is the only clock). With more,
//! on that many actix arbiters — each an OS thread with its own current-thread
//! tokio runtime — a provider always on the same one, chosen by its id.
//!
//! It owns the arbiters and nothing else: created once at start-up, stopped once
//! at the very end of shutdown, after the fleet's supervisors have been drained
//! and everything else that shares their connections has stopped.
//!
//! Why "at the very end": the adapters' clients are shared by every thread, and a
//! socket is driven by the runtime of the thread that opened it (a Postgres
//! connection opened by a supervisor on arbiter 2 is read by arbiter 2's reactor,
//! whoever uses it next; an HTTP connection's task runs there). That works while
//! the thread runs; once its runtime is gone such a connection fails. The store's
//! pool tests a connection before handing it out and replaces a dead one, but a
//! query in flight on it would fail — so nothing may still be using the pool when
//! the arbiters stop.

use crate::domain::ProviderId;
use crate::supervisor::ProviderSupervisor;
use actix::prelude::*;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Threads that run supervisors; cheap to clone (clones share the threads).
#[derive(Clone, Default)]
pub struct SupervisorPool {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Where supervisors are started, one per thread; empty: on the caller's
    /// arbiter.
    handles: Vec<ArbiterHandle>,
    /// The threads themselves, taken (and joined) by [`SupervisorPool::stop`].
    arbiters: Mutex<Vec<Arbiter>>,
}

impl SupervisorPool {
    /// No threads of its own: supervisors run on the arbiter that starts them
    /// (the fleet's).
    pub fn current() -> Self {
        Self::default()
    }

    /// `threads` arbiters for supervisors; 1 (or 0) is [`SupervisorPool::current`].
    /// Must be called inside an actix System. An arbiter that cannot be created
    /// (no thread or runtime to be had) is logged and left out: the fleet runs
    /// on fewer threads rather than not at all.
    pub fn new(threads: usize) -> Self {
        if threads <= 1 {
            return Self::current();
        }
        let mut arbiters = Vec::with_capacity(threads);
        for _ in 0..threads {
            match Arbiter::try_new() {
                Ok(arbiter) => arbiters.push(arbiter),
                Err(e) => {
                    tracing::warn!(error = %e, threads, started = arbiters.len(), "cannot start a supervisor thread; running on fewer");
                    break;
                }
            }
        }
        let handles = arbiters.iter().map(Arbiter::handle).collect();
        Self {
            inner: Arc::new(Inner {
                handles,
                arbiters: Mutex::new(arbiters),
            }),
        }
    }

    /// Threads supervisors run on (1: the fleet's own).
    pub fn threads(&self) -> usize {
        self.inner.handles.len().max(1)
    }

    /// Starts `supervisor` on the thread its provider belongs to (the caller's
    /// arbiter without threads of its own).
    pub fn start(
        &self,
        id: ProviderId,
        supervisor: ProviderSupervisor,
    ) -> Addr<ProviderSupervisor> {
        let handles = &self.inner.handles;
        if handles.is_empty() {
            return supervisor.start();
        }
        // Ids are random: their low bits spread providers evenly, and a
        // provider lands on the same thread whenever it is started again.
        let index = (id.0.as_u128() % handles.len() as u128) as usize;
        ProviderSupervisor::start_in_arbiter(&handles[index], move |_| supervisor)
    }

    /// Stops every thread and waits (at most `timeout` in all) until they have
    /// ended, so that their runtimes — and whatever connections they drive — are
    /// gone before the caller goes on. Call once the supervisors have been
    /// drained and nothing uses the shared clients any more; later calls do
    /// nothing.
    pub async fn stop(&self, timeout: Duration) -> Result<(), PoolStopError> {
        let arbiters = std::mem::take(
            &mut *self
                .inner
                .arbiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if arbiters.is_empty() {
            return Ok(());
        }
        for arbiter in &arbiters {
            arbiter.stop();
        }
        // Joining blocks: off the async thread.
        let joined = tokio::task::spawn_blocking(move || {
            arbiters
                .into_iter()
                .map(Arbiter::join)
                .filter(Result::is_err)
                .count()
        });
        match tokio::time::timeout(timeout, joined).await {
            Ok(Ok(0)) => Ok(()),
            Ok(Ok(panicked)) => Err(PoolStopError::Panicked(panicked)),
            Ok(Err(_)) | Err(_) => Err(PoolStopError::StillRunning(timeout)),
        }
    }
}

/// The supervisor threads did not end cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolStopError {
    /// This many threads had panicked (their supervisors' work may be lost).
    #[error("{0} supervisor thread(s) panicked")]
    Panicked(usize),
    /// Some were still running this long after they were told to stop.
    #[error("supervisor threads still running {0:?} after they were told to stop")]
    StillRunning(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread each of the pool's arbiters runs on.
    async fn thread_ids(pool: &SupervisorPool) -> Vec<Option<std::thread::ThreadId>> {
        let mut ids = Vec::new();
        for handle in &pool.inner.handles {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = handle.spawn_fn(move || {
                let _ = tx.send(std::thread::current().id());
            });
            ids.push(if sent { rx.await.ok() } else { None });
        }
        ids
    }

    #[test]
    fn threads_of_its_own_until_stopped_and_none_for_one() {
        actix::System::new().block_on(async {
            let one = SupervisorPool::new(1);
            assert_eq!(one.threads(), 1);
            assert!(one.inner.handles.is_empty());
            assert_eq!(one.stop(Duration::from_secs(5)).await, Ok(()));

            let pool = SupervisorPool::new(2);
            assert_eq!(pool.threads(), 2);
            let ids = thread_ids(&pool).await;
            let here = std::thread::current().id();
            assert!(
                ids.iter().all(|id| id.is_some_and(|id| id != here)),
                "{ids:?}"
            );
            assert_ne!(ids[0], ids[1]);

            assert_eq!(pool.stop(Duration::from_secs(5)).await, Ok(()));
            // Ended: nothing runs there any more; a second stop does nothing.
            assert_eq!(thread_ids(&pool).await, [None, None]);
            assert_eq!(pool.stop(Duration::from_secs(5)).await, Ok(()));
        });
    }
}
