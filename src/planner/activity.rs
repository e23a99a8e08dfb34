//! Who is connected and what each connection runs: the registry behind
//! `pg_stat_activity`, cancel requests, `pg_cancel_backend` and
//! `pg_terminate_backend`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use quiver_common::interrupt::{Canceled, Interrupt};

/// One connection.
#[derive(Debug)]
pub struct Backend {
    pub pid: i32,
    /// The cancel key the client was given.
    secret: Vec<u8>,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client_addr: String,
    pub backend_start: SystemTime,
    pub interrupt: Arc<Interrupt>,
    now: Mutex<Running>,
    copy: Mutex<Option<CopyProgress>>,
}

/// A COPY FROM STDIN in progress (`pg_stat_progress_copy`).
#[derive(Debug, Clone, Default)]
pub struct CopyProgress {
    /// The collection copied into.
    pub relname: String,
    pub bytes_processed: u64,
    pub tuples_processed: u64,
}

/// What a connection is doing.
#[derive(Debug, Clone)]
pub struct Running {
    /// `active`, `idle` or `idle in transaction`, as PostgreSQL says.
    pub state: &'static str,
    /// The statement running, or the last one.
    pub query: String,
    pub query_start: Option<SystemTime>,
}

impl Backend {
    pub fn running(&self) -> Running {
        self.now.lock().clone()
    }

    /// A statement starts.
    pub fn active(&self, query: &str) {
        // A statement as long as a bulk INSERT is shown by its start.
        const SHOWN: usize = 1024;
        let mut shown: String = query.chars().take(SHOWN).collect();
        if shown.len() < query.len() {
            shown.push_str("...");
        }
        *self.now.lock() = Running {
            state: "active",
            query: shown,
            query_start: Some(SystemTime::now()),
        };
    }

    /// The COPY in progress, if one is.
    pub fn copy_progress(&self) -> Option<CopyProgress> {
        self.copy.lock().clone()
    }

    /// A COPY into `relname` starts, goes on or (`None`) ends.
    pub fn set_copy_progress(&self, progress: Option<CopyProgress>) {
        *self.copy.lock() = progress;
    }

    /// The statement ended; `in_transaction`: within BEGIN ... COMMIT.
    pub fn idle(&self, in_transaction: bool) {
        self.now.lock().state = if in_transaction {
            "idle in transaction"
        } else {
            "idle"
        };
    }
}

/// Every connection, by process id.
#[derive(Debug, Default)]
pub struct Activity {
    backends: RwLock<BTreeMap<i32, Arc<Backend>>>,
}

/// Removes its connection from the registry when dropped.
#[derive(Debug)]
pub struct Registered {
    activity: Arc<Activity>,
    pub backend: Arc<Backend>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.activity.backends.write().remove(&self.backend.pid);
    }
}

/// Who a new connection is.
#[derive(Debug, Clone)]
pub struct Connecting {
    pub pid: i32,
    pub secret: Vec<u8>,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client_addr: String,
}

impl Activity {
    pub fn register(self: &Arc<Self>, who: Connecting, interrupt: Arc<Interrupt>) -> Registered {
        let backend = Arc::new(Backend {
            pid: who.pid,
            secret: who.secret,
            user: who.user,
            database: who.database,
            application_name: who.application_name,
            client_addr: who.client_addr,
            backend_start: SystemTime::now(),
            interrupt,
            now: Mutex::new(Running {
                state: "idle",
                query: String::new(),
                query_start: None,
            }),
            copy: Mutex::new(None),
        });
        self.backends.write().insert(backend.pid, backend.clone());
        Registered {
            activity: self.clone(),
            backend,
        }
    }

    /// A client's cancel request: the key must match, as in PostgreSQL
    /// (a wrong one is ignored, silently).
    pub fn cancel_request(&self, pid: i32, secret: &[u8]) -> bool {
        match self.backends.read().get(&pid) {
            Some(b) if b.secret == secret => {
                b.interrupt.request(Canceled::UserRequest);
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, pid: i32) -> Option<Arc<Backend>> {
        self.backends.read().get(&pid).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Backend>> {
        self.backends.read().values().cloned().collect()
    }
}
