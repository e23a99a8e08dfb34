//! Transactions: a session's uncommitted writes, kept apart from the
//! collections until COMMIT, and the collection locks that keep two writers
//! from acting on the same old rows.
//!
//! A [`Transaction`] holds, per collection it wrote, an *overlay*
//! (`collection/stage.rs`): the rows it inserted (with provisional row
//! ids), the committed rows it deleted, and whether it truncated. Nothing
//! of it reaches the WAL, the growing segment, a flush or another session
//! before COMMIT. Its own statements read [`Transaction::view`]: the
//! committed snapshot (the latest one under READ COMMITTED, the one taken
//! at its first statement under REPEATABLE READ) with the overlay laid on
//! top, so scans, searches, UPDATE and DELETE see its own writes.
//!
//! COMMIT writes one WAL record per collection. A transaction that wrote
//! one collection commits with that record alone, as an autocommit
//! statement does. One that wrote several marks its records as part of a
//! multi-collection commit and, once they are durable, appends its
//! timestamp to the commit log (`wal/commits`); recovery replays a marked
//! record only if the commit log names it, so after a crash such a
//! transaction is there whole or not at all.
//!
//! Locks: a statement that reads rows and writes from what it read
//! (UPDATE, DELETE, an upsert, TRUNCATE) holds its collection's lock from
//! the read to the write; inside a transaction the lock is held until the
//! transaction ends, so a second transaction's UPDATE waits for the first
//! to commit and then reads what it committed (no lost update). Plain
//! INSERTs take no lock: a primary key inserted by two open transactions is
//! refused (23505) to the one that commits second. A wait that would close
//! a cycle of waiting transactions fails with 40P01.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use quiver_common::interrupt::Interrupt;

use super::collection::{CollectionData, Mutation, Overlay};
use super::segment::Snapshot;
use super::{Result, Shared, StorageError};

/// Owners of locks: transactions and autocommit statements.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

fn new_owner() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

/// The collection locks of the server.
#[derive(Debug, Default)]
pub struct Locks {
    table: Mutex<LockTable>,
    released: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct LockTable {
    /// Collection id to the owner holding its lock.
    held: HashMap<u64, u64>,
    /// Owner to the collection whose lock it waits for.
    waiting: HashMap<u64, u64>,
}

/// Removes a waiter's entry when its wait ends or is abandoned (a cancel).
struct Waiting<'a> {
    locks: &'a Locks,
    owner: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.locks.table.lock().waiting.remove(&self.owner);
    }
}

impl Locks {
    /// Take the lock of `collection` for `owner`, waiting while another
    /// owner holds it; 40P01 if waiting would close a cycle; a cancel,
    /// statement_timeout or termination of `stop` ends the wait (57014).
    pub async fn acquire(
        &self,
        owner: u64,
        collection: u64,
        name: &str,
        stop: Option<&Interrupt>,
    ) -> Result<()> {
        let since = std::time::Instant::now();
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut t = self.table.lock();
                let holder = match t.held.get(&collection) {
                    None => {
                        t.held.insert(collection, owner);
                        return Ok(());
                    }
                    Some(&h) if h == owner => return Ok(()),
                    Some(&h) => h,
                };
                // Each owner waits for one lock at most: follow the chain.
                let mut at = holder;
                for _ in 0..=t.waiting.len() {
                    let Some(next) = t.waiting.get(&at).and_then(|c| t.held.get(c)) else {
                        break;
                    };
                    if *next == owner {
                        return Err(StorageError::Deadlock(name.to_string()));
                    }
                    at = *next;
                }
                t.waiting.insert(owner, collection);
            }
            let _waiting = Waiting { locks: self, owner };
            match stop {
                Some(stop) => tokio::select! {
                    _ = notified => {}
                    c = stop.lock_wait(since) => return Err(StorageError::Canceled(c)),
                },
                None => notified.await,
            }
        }
    }

    /// Release every lock `owner` holds.
    pub fn release_all(&self, owner: u64) {
        let mut t = self.table.lock();
        let before = t.held.len();
        t.held.retain(|_, o| *o != owner);
        if t.held.len() != before {
            self.released.notify_waiters();
        }
    }
}

/// A collection lock held by one autocommit statement until dropped.
pub struct StatementLock {
    locks: Arc<Locks>,
    owner: u64,
}

impl Drop for StatementLock {
    fn drop(&mut self) {
        self.locks.release_all(self.owner);
    }
}

impl StatementLock {
    pub(crate) async fn take(
        locks: &Arc<Locks>,
        collection: u64,
        name: &str,
        stop: Option<&Interrupt>,
    ) -> Result<Self> {
        let owner = new_owner();
        let lock = StatementLock {
            locks: locks.clone(),
            owner,
        };
        locks.acquire(owner, collection, name, stop).await?;
        Ok(lock)
    }
}

/// PostgreSQL's isolation levels quiver implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Each statement sees what was committed before it began, and the
    /// transaction's own writes.
    ReadCommitted,
    /// Every statement sees what was committed before the transaction's
    /// first statement, and its own writes; an UPDATE or DELETE of a row
    /// another transaction changed since gives 40001.
    RepeatableRead,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read committed",
            Isolation::RepeatableRead => "repeatable read",
        }
    }
}

/// One open transaction.
#[derive(Debug)]
pub struct Transaction {
    owner: u64,
    shared: Arc<Shared>,
    /// The session's stop signal: ends its waits for locks.
    stop: Option<Arc<Interrupt>>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    isolation: Option<Isolation>,
    /// REPEATABLE READ: the snapshots of its first statement.
    pinned: Option<HashMap<u64, Arc<Snapshot>>>,
    overlays: BTreeMap<u64, Overlay>,
    /// Savepoints, oldest first, with the overlays as they were.
    savepoints: Vec<(String, BTreeMap<u64, Overlay>)>,
    /// A statement ran in it (its isolation level is fixed).
    began: bool,
    ended: bool,
    /// Bytes of its overlays counted in [`Shared::uncommitted`].
    counted: usize,
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.shared.locks.release_all(self.owner);
        let counted = std::mem::take(&mut self.inner.get_mut().counted);
        self.shared.uncommitted.fetch_sub(counted, Ordering::SeqCst);
    }
}

impl Transaction {
    /// Count `held` bytes of uncommitted rows for this transaction in the
    /// server's total; past `[storage] transaction_memory_total` (when
    /// `check`, and only when it grows) 53200, and nothing changes.
    fn recount(&self, inner: &mut Inner, held: usize, check: bool) -> Result<()> {
        let uncommitted = &self.shared.uncommitted;
        if held > inner.counted {
            let add = held - inner.counted;
            let total = uncommitted.fetch_add(add, Ordering::SeqCst) + add;
            let limit = self.shared.config.transaction_memory_total;
            if check && total > limit {
                uncommitted.fetch_sub(add, Ordering::SeqCst);
                return Err(StorageError::TransactionsTooLarge { limit });
            }
        } else {
            uncommitted.fetch_sub(inner.counted - held, Ordering::SeqCst);
        }
        inner.counted = held;
        Ok(())
    }
}

/// How many bytes of uncommitted rows one transaction may hold.
pub const DEFAULT_TRANSACTION_MEMORY: usize = 1 << 30;

impl Transaction {
    pub(crate) fn new(
        shared: Arc<Shared>,
        isolation: Isolation,
        stop: Option<Arc<Interrupt>>,
    ) -> Transaction {
        Transaction {
            owner: new_owner(),
            shared,
            stop,
            inner: Mutex::new(Inner {
                isolation: Some(isolation),
                ..Inner::default()
            }),
        }
    }

    pub fn isolation(&self) -> Isolation {
        self.inner
            .lock()
            .isolation
            .unwrap_or(Isolation::ReadCommitted)
    }

    /// Whether a statement ran in it yet (its snapshot is taken).
    pub fn started(&self) -> bool {
        self.inner.lock().began
    }

    /// SET TRANSACTION ISOLATION LEVEL (before its first statement).
    pub fn set_isolation(&self, isolation: Isolation) {
        self.inner.lock().isolation = Some(isolation);
    }

    /// Pin the snapshots of a REPEATABLE READ transaction at its first
    /// statement: every open collection's at once.
    pub fn statement_starts(&self, all: &[Arc<CollectionData>]) {
        let mut inner = self.inner.lock();
        inner.began = true;
        if inner.isolation == Some(Isolation::RepeatableRead) && inner.pinned.is_none() {
            inner.pinned = Some(all.iter().map(|c| (c.id, c.snapshot())).collect());
        }
    }

    /// The committed rows this transaction reads of `data`.
    fn base(&self, data: &CollectionData) -> Arc<Snapshot> {
        let mut inner = self.inner.lock();
        match &mut inner.pinned {
            Some(pinned) => pinned
                .entry(data.id)
                .or_insert_with(|| data.snapshot())
                .clone(),
            None => data.snapshot(),
        }
    }

    /// What its statements read of `data`: the committed rows it sees
    /// with its own writes laid over them.
    pub fn view(&self, data: &CollectionData) -> Arc<Snapshot> {
        let base = self.base(data);
        let overlay = self.inner.lock().overlays.get(&data.id).cloned();
        match overlay {
            Some(o) => Arc::new(o.view(&base)),
            None => base,
        }
    }

    /// Hold `data`'s lock until the transaction ends.
    pub async fn lock(&self, data: &CollectionData) -> Result<()> {
        self.shared
            .locks
            .acquire(self.owner, data.id, &data.name(), self.stop.as_deref())
            .await
    }

    /// Apply one statement's change to the transaction's overlay of
    /// `data`; returns the rows changed and, with `returning`, the rows
    /// written or deleted (in [`CollectionData::schema`]).
    pub async fn mutate(
        &self,
        data: &Arc<CollectionData>,
        mutation: Mutation,
        returning: bool,
    ) -> Result<(usize, RecordBatch)> {
        data.check_writable()?;
        let locking = !matches!(
            mutation,
            Mutation::Insert {
                on_conflict: super::collection::Conflict::Error | super::collection::Conflict::Skip,
                ..
            }
        );
        if locking {
            self.lock(data).await?;
        }
        let base = self.base(data);
        let mut overlay = self
            .inner
            .lock()
            .overlays
            .get(&data.id)
            .cloned()
            .unwrap_or_else(|| Overlay::new(data.clone()));
        let repeatable = self.isolation() == Isolation::RepeatableRead;
        let out = overlay
            .stage(&base, mutation, returning, repeatable)
            .await?;
        let limit = self.shared.config.transaction_memory;
        let mut inner = self.inner.lock();
        let held: usize = inner
            .overlays
            .iter()
            .filter(|(id, _)| **id != data.id)
            .map(|(_, o)| o.bytes())
            .sum::<usize>()
            + overlay.bytes();
        if held > limit {
            return Err(StorageError::TransactionTooLarge { limit });
        }
        self.recount(&mut inner, held, true)?;
        inner.overlays.insert(data.id, overlay);
        Ok(out)
    }

    /// The live rows of `data` this transaction sees whose primary key is
    /// one of `keys`, in the full schema.
    pub async fn rows_by_key(
        &self,
        data: &CollectionData,
        keys: &arrow::array::ArrayRef,
    ) -> Result<RecordBatch> {
        data.rows_by_key_in(&self.view(data), keys).await
    }

    pub fn savepoint(&self, name: &str) {
        let mut inner = self.inner.lock();
        let overlays = inner.overlays.clone();
        inner.savepoints.push((name.to_string(), overlays));
    }

    /// ROLLBACK TO SAVEPOINT: the overlays as they were at `name`, which
    /// stays defined; later savepoints go.
    pub fn rollback_to(&self, name: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        let Some(at) = inner.savepoints.iter().rposition(|(n, _)| n == name) else {
            return Err(StorageError::NoSavepoint(name.to_string()));
        };
        inner.savepoints.truncate(at + 1);
        inner.overlays = inner.savepoints[at].1.clone();
        let held = inner.overlays.values().map(Overlay::bytes).sum();
        let _ = self.recount(&mut inner, held, false);
        Ok(())
    }

    /// RELEASE SAVEPOINT: `name` and the savepoints after it go; the
    /// writes stay.
    pub fn release(&self, name: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        let Some(at) = inner.savepoints.iter().rposition(|(n, _)| n == name) else {
            return Err(StorageError::NoSavepoint(name.to_string()));
        };
        inner.savepoints.truncate(at);
        Ok(())
    }

    /// Whether it changed any rows.
    pub fn wrote(&self) -> bool {
        self.inner.lock().overlays.values().any(|o| !o.is_empty())
    }

    /// ROLLBACK: its writes vanish and its locks go.
    pub fn rollback(&self) {
        let mut inner = self.inner.lock();
        inner.overlays.clear();
        inner.savepoints.clear();
        inner.ended = true;
        let _ = self.recount(&mut inner, 0, false);
        drop(inner);
        self.shared.locks.release_all(self.owner);
    }

    /// COMMIT: its writes become durable and visible together, or, on an
    /// error (a key another transaction committed first, a failed log),
    /// none of them does. The locks go either way.
    pub async fn commit(&self) -> Result<()> {
        let overlays: Vec<Overlay> = {
            let mut inner = self.inner.lock();
            inner.ended = true;
            inner.savepoints.clear();
            std::mem::take(&mut inner.overlays)
                .into_values()
                .filter(|o| !o.is_empty())
                .collect()
        };
        let result = match overlays.len() {
            0 => Ok(()),
            1 => overlays[0].commit_alone().await,
            _ => Overlay::commit_together(&self.shared, overlays).await,
        };
        self.shared.locks.release_all(self.owner);
        let _ = self.recount(&mut self.inner.lock(), 0, false);
        result
    }
}

/// The transaction a session is in, if any: a DataFusion session-config
/// extension, so that scans, searches and writes of the session's
/// statements reach it.
#[derive(Debug, Default)]
pub struct TxSlot(Mutex<Option<Arc<Transaction>>>);

impl TxSlot {
    pub fn get(&self) -> Option<Arc<Transaction>> {
        self.0.lock().clone()
    }

    pub fn set(&self, tx: Option<Arc<Transaction>>) {
        *self.0.lock() = tx;
    }
}
