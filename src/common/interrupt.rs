//! Stopping a running statement: a client's cancel request (or
//! `pg_cancel_backend`), `statement_timeout`, or `pg_terminate_backend`.
//!
//! Each session owns one [`Interrupt`]. A statement starts with
//! [`Interrupt::start`] (which clears an old request and sets the deadline);
//! long-running work checks [`Interrupt::check`] between batches, and the
//! connection races [`Interrupt::cancelled`] against what only reads. A
//! wait for a lock also ends after `lock_timeout` ([`Interrupt::lock_wait`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use thiserror::Error;

use crate::sqlstate::{self, SqlState, SqlStateError};

/// Why a statement stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Canceled {
    #[error("canceling statement due to user request")]
    UserRequest,
    #[error("canceling statement due to statement timeout")]
    Timeout,
    #[error("terminating connection due to administrator command")]
    Terminated,
    /// A lock was waited for longer than `lock_timeout` (55P03).
    #[error("canceling statement due to lock timeout")]
    LockTimeout,
}

impl SqlStateError for Canceled {
    fn sqlstate(&self) -> SqlState {
        match self {
            Canceled::UserRequest | Canceled::Timeout => sqlstate::QUERY_CANCELED,
            Canceled::Terminated => sqlstate::ADMIN_SHUTDOWN,
            Canceled::LockTimeout => sqlstate::LOCK_NOT_AVAILABLE,
        }
    }
}

const NONE: u8 = 0;

fn code(c: Canceled) -> u8 {
    match c {
        Canceled::UserRequest => 1,
        Canceled::Timeout => 2,
        Canceled::Terminated => 3,
        Canceled::LockTimeout => 4,
    }
}

fn of_code(c: u8) -> Option<Canceled> {
    match c {
        1 => Some(Canceled::UserRequest),
        2 => Some(Canceled::Timeout),
        3 => Some(Canceled::Terminated),
        4 => Some(Canceled::LockTimeout),
        _ => None,
    }
}

/// A session's stop signal.
#[derive(Debug, Default)]
pub struct Interrupt {
    requested: AtomicU8,
    deadline: Mutex<Option<Instant>>,
    /// The statement's `lock_timeout` (`None`: waits are not limited).
    lock_timeout: Mutex<Option<Duration>>,
    wake: tokio::sync::Notify,
}

impl Interrupt {
    /// A statement begins: forget an earlier cancel (not a termination)
    /// and stop it after `timeout` (none: no limit).
    pub fn start(&self, timeout: Option<Duration>) {
        let _ = self
            .requested
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c != code(Canceled::Terminated)).then_some(NONE)
            });
        *self.deadline.lock() = timeout.map(|t| Instant::now() + t);
    }

    /// The statement's `lock_timeout` (`None` or zero: off), set with
    /// [`Self::start`] by the connection.
    pub fn set_lock_timeout(&self, timeout: Option<Duration>) {
        *self.lock_timeout.lock() = timeout.filter(|t| !t.is_zero());
    }

    /// A wait for a lock that began at `since`: the statement's stop, or
    /// [`Canceled::LockTimeout`] once `lock_timeout` has passed.
    pub fn check_lock_wait(&self, since: Instant) -> Result<(), Canceled> {
        self.check()?;
        match *self.lock_timeout.lock() {
            Some(t) if since.elapsed() >= t => Err(Canceled::LockTimeout),
            _ => Ok(()),
        }
    }

    /// Resolves when a wait for a lock that began at `since` must end: the
    /// statement stops, or `lock_timeout` passes.
    pub async fn lock_wait(&self, since: Instant) -> Canceled {
        let limit = *self.lock_timeout.lock();
        match limit {
            Some(t) => tokio::select! {
                c = self.cancelled() => c,
                _ = tokio::time::sleep_until((since + t).into()) => Canceled::LockTimeout,
            },
            None => self.cancelled().await,
        }
    }

    /// Ask the running statement to stop.
    pub fn request(&self, why: Canceled) {
        self.requested.store(code(why), Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// `Err` once the statement must stop.
    pub fn check(&self) -> Result<(), Canceled> {
        if let Some(c) = of_code(self.requested.load(Ordering::SeqCst)) {
            return Err(c);
        }
        match *self.deadline.lock() {
            Some(d) if Instant::now() >= d => Err(Canceled::Timeout),
            _ => Ok(()),
        }
    }

    /// Whether the connection is to end.
    pub fn terminated(&self) -> bool {
        self.requested.load(Ordering::SeqCst) == code(Canceled::Terminated)
    }

    /// Resolves when the connection is to end (between statements).
    pub async fn until_terminated(&self) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.terminated() {
                return;
            }
            woken.await;
        }
    }

    /// Resolves when the statement must stop.
    pub async fn cancelled(&self) -> Canceled {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Err(c) = self.check() {
                return c;
            }
            let deadline = *self.deadline.lock();
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep_until(d.into()) => {}
                    }
                }
                None => woken.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timeouts_and_requests_stop_a_statement() {
        let i = Interrupt::default();
        i.start(None);
        assert_eq!(i.check(), Ok(()));
        i.start(Some(Duration::from_millis(20)));
        let started = Instant::now();
        assert_eq!(i.cancelled().await, Canceled::Timeout);
        assert!(started.elapsed() >= Duration::from_millis(20));
        // The next statement starts afresh.
        i.start(None);
        assert_eq!(i.check(), Ok(()));
        let waiter = async { i.cancelled().await };
        let (got, ()) = tokio::join!(waiter, async { i.request(Canceled::UserRequest) });
        assert_eq!(got, Canceled::UserRequest);
        // A termination outlives the statement.
        i.request(Canceled::Terminated);
        i.start(None);
        assert_eq!(i.check(), Err(Canceled::Terminated));
        assert!(i.terminated());
    }
}
