//! The limits of the access layer (`[limits]` in quiver.toml): how many
//! clients, how large a message, how long a login may take. Each has a
//! default, a setting, an error and a test (tests/hostile.rs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// PostgreSQL's cap on one message after login (1 GB): the highest
/// `max_message_size` may be.
pub const MESSAGE_SIZE_CEILING: usize = (1 << 30) - 1;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Clients served at once; one more is refused with 53300 after its
    /// startup message, as PostgreSQL does.
    pub max_connections: usize,
    /// The largest message a logged-in client may send (a query, a Bind,
    /// a row of COPY data), in bytes.
    pub max_message_size: usize,
    /// The largest message before login completes (startup, password,
    /// SASL), in bytes: PostgreSQL caps the startup packet at 10,000.
    pub max_startup_message_size: usize,
    /// How long a client has to log in.
    pub authentication_timeout: Duration,
    /// The default of the session setting `statement_timeout` (zero: off).
    pub statement_timeout: Duration,
    /// The default of `idle_in_transaction_session_timeout` (zero: off).
    pub idle_in_transaction_session_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 100,
            max_message_size: 256 << 20,
            max_startup_message_size: 10_000,
            authentication_timeout: Duration::from_secs(60),
            statement_timeout: Duration::ZERO,
            idle_in_transaction_session_timeout: Duration::ZERO,
        }
    }
}

/// Counts the connections being served; a [`Slot`] holds one.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Take a slot; the count includes it until it is dropped.
    pub fn take(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Ordering::SeqCst);
        Slot(self.clone())
    }
}

/// One connection counted in [`Connections`].
#[derive(Debug)]
pub struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}
