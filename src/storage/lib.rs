//! Collection data, the way Milvus stores it (design.md §5): a WAL on local
//! disk, growing segments in memory, sealed segments flushed to object
//! storage as Parquet with their delete logs, compaction, and a versioned
//! manifest that also persists the catalog. Recovery is the manifest plus
//! the WAL after each collection's checkpoint.
//!
//! Layout under the storage root (a local directory or `s3://bucket/prefix`),
//! made of ids only (see [`layout`]):
//! ```text
//! catalog/manifest-<version>.json
//! collections/<collection_id>/segments/<segment_id>/data-0.parquet
//! collections/<collection_id>/segments/<segment_id>/deltas/<ts>.parquet
//! collections/<collection_id>/segments/<segment_id>/index/<index_id>.faiss
//! ```
//! and in the local data directory: `wal/<collection_id>/<shard>/<first_ts>.log`
//! and the `LOCK` file that keeps a second server out.

pub mod collection;
mod layout;
pub mod manifest;
pub mod objects;
pub mod segment;
pub mod sqlstate_of;
pub mod stats;
pub mod stored;
pub mod txn;
pub mod wal;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use quiver_common::sqlstate::{self, SqlState, SqlStateError};
use thiserror::Error;
use tracing::{error, info, warn};

pub use collection::{BulkLoad, CollectionData, Conflict, Mutation, RowChange, RowFilter};
use manifest::ManifestStore;
pub use objects::{ObjectIo, S3Config, SCAN_URL};
use quiver_catalog::{CatalogError, CatalogSnapshot, CollectionDef, MetaStore};
pub use segment::{Chunk, FlushedSegment, ROWID, SegmentData, Snapshot};
pub use txn::{Isolation, Transaction, TxSlot};
pub use wal::WalSync;
use wal::{LocalWal, Wal, WalRecord};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error(
        "duplicate key value violates unique constraint \"{collection}_pkey\": Key ({field})=({value}) already exists"
    )]
    DuplicateKey {
        collection: String,
        field: String,
        value: String,
    },
    #[error(
        "null value in column \"{field}\" of collection \"{collection}\" violates not-null constraint"
    )]
    NotNull { collection: String, field: String },
    #[error("invalid input syntax for type json in column \"{field}\": {message}")]
    InvalidJson { field: String, message: String },
    #[error("invalid input syntax for type uuid: \"{0}\"")]
    InvalidUuid(String),
    #[error("invalid input syntax for type json: {0}")]
    InvalidJsonValue(String),
    #[error("bit string length does not match type bit({bits}) of field \"{field}\"")]
    BitLength { field: String, bits: usize },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("could not write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("object storage: {message}")]
    ObjectStore { message: String, disk_full: bool },
    #[error("the write-ahead log in {0} failed earlier; restart the server to recover")]
    WalFailed(String),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error(
        "data directory {0} is in use by another quiver server (LOCK is held); stop it or use another --data-dir"
    )]
    Locked(String),
    /// Evaluating a filter or an assignment failed.
    #[error(transparent)]
    Expression(Box<datafusion::error::DataFusionError>),
    #[error("collection \"{0}\" was dropped")]
    Dropped(String),
    #[error("collection \"{0}\" is released: LOAD COLLECTION {0} to query or search it")]
    Released(String),
    /// The insert buffer is full and flushing it fails: writers are told
    /// instead of waiting for ever.
    #[error("the insert buffer is full and cannot be flushed: {message}")]
    FlushFailing { message: String, disk_full: bool },
    #[error(transparent)]
    Index(#[from] quiver_vector::index::IndexError),
    /// A row's value does not fit its field (a vector of another dimension).
    #[error(transparent)]
    Vector(#[from] quiver_vector::VectorError),
    #[error(
        "deadlock detected: waiting for the lock of collection \"{0}\" would wait for ever; the transaction is aborted"
    )]
    Deadlock(String),
    #[error(
        "could not serialize access due to concurrent update of collection \"{0}\"; retry the transaction"
    )]
    SerializationFailure(String),
    /// A wait for a lock ended by a cancel, a timeout or a termination.
    #[error(transparent)]
    Canceled(#[from] quiver_common::interrupt::Canceled),
    #[error("savepoint \"{0}\" does not exist")]
    NoSavepoint(String),
    #[error("the transaction holds more than {} MiB of uncommitted rows (storage.transaction_memory); commit in smaller transactions", limit >> 20)]
    TransactionTooLarge { limit: usize },
    #[error("the open transactions together hold more than {} MiB of uncommitted rows (storage.transaction_memory_total); commit in smaller transactions, or later", limit >> 20)]
    TransactionsTooLarge { limit: usize },
}

impl StorageError {
    /// Whether the failure is the disk being full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => io_disk_full(source),
            StorageError::ObjectStore { disk_full, .. }
            | StorageError::FlushFailing { disk_full, .. } => *disk_full,
            _ => false,
        }
    }
}

/// ENOSPC, the same on every Unix quiver builds for.
const ENOSPC: i32 = 28;

/// Whether a file system error says the disk is full.
fn io_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(ENOSPC)
}

impl SqlStateError for StorageError {
    fn sqlstate(&self) -> SqlState {
        if self.is_disk_full() {
            return sqlstate::DISK_FULL;
        }
        match self {
            StorageError::DuplicateKey { .. } => sqlstate::UNIQUE_VIOLATION,
            StorageError::NotNull { .. } => sqlstate::NOT_NULL_VIOLATION,
            StorageError::BitLength { .. } => sqlstate::STRING_DATA_LENGTH_MISMATCH,
            StorageError::InvalidJson { .. }
            | StorageError::InvalidUuid(_)
            | StorageError::InvalidJsonValue(_) => sqlstate::INVALID_TEXT_REPRESENTATION,
            StorageError::Io { .. }
            | StorageError::ObjectStore { .. }
            | StorageError::FlushFailing { .. }
            | StorageError::WalFailed(_) => sqlstate::IO_ERROR,
            StorageError::Corrupt(_) => sqlstate::DATA_CORRUPTED,
            StorageError::Config(_) | StorageError::Locked(_) => {
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            StorageError::Dropped(_) => sqlstate::UNDEFINED_TABLE,
            StorageError::Released(_) => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            StorageError::Index(i) => i.sqlstate(),
            StorageError::Vector(v) => v.sqlstate(),
            StorageError::Deadlock(_) => sqlstate::DEADLOCK_DETECTED,
            StorageError::Canceled(c) => c.sqlstate(),
            StorageError::SerializationFailure(_) => sqlstate::SERIALIZATION_FAILURE,
            StorageError::NoSavepoint(_) => sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
            StorageError::TransactionTooLarge { .. }
            | StorageError::TransactionsTooLarge { .. } => sqlstate::OUT_OF_MEMORY,
            StorageError::Expression(d) => sqlstate_of::datafusion(d),
            StorageError::InvalidBatch(_) | StorageError::Arrow(_) | StorageError::Parquet(_) => {
                sqlstate::INTERNAL_ERROR
            }
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Storage settings (`[storage]` and `[wal]` in quiver.toml).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Local directory: WAL and lock file (and the objects, by default).
    pub data_dir: PathBuf,
    /// Object store root: a local path or `s3://bucket/prefix`.
    pub root: Option<String>,
    pub s3: S3Config,
    pub wal_sync: WalSync,
    /// Bytes of unflushed rows (all collections) before writers wait.
    pub insert_buffer_size: usize,
    /// Bytes of uncommitted rows one transaction may hold (53200 beyond).
    pub transaction_memory: usize,
    /// Bytes of uncommitted rows all transactions together may hold.
    pub transaction_memory_total: usize,
    pub segment_max_rows: usize,
    pub segment_max_bytes: usize,
    /// A growing segment with no writes for this long is sealed.
    pub seal_idle: Duration,
    /// Compaction merges segments up to about this size (bytes on disk).
    /// A search runs one index per segment, so larger segments search
    /// faster; 1 GiB as Milvus's `segment.maxSize`.
    pub segment_target_size: usize,
    /// Compact a collection in the background once it has this many small
    /// segments.
    pub compact_min_segments: usize,
    /// Threads one index build may use (faiss/OpenMP).
    pub index_build_threads: usize,
}

impl StorageConfig {
    pub fn new(data_dir: PathBuf) -> StorageConfig {
        StorageConfig {
            data_dir,
            root: None,
            s3: S3Config::default(),
            wal_sync: WalSync::Always,
            insert_buffer_size: 256 << 20,
            transaction_memory: txn::DEFAULT_TRANSACTION_MEMORY,
            transaction_memory_total: 4 * txn::DEFAULT_TRANSACTION_MEMORY,
            segment_max_rows: 1_000_000,
            segment_max_bytes: 64 << 20,
            seal_idle: Duration::from_secs(1),
            segment_target_size: 1 << 30,
            compact_min_segments: 8,
            index_build_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// Hybrid logical clock: milliseconds since the epoch in the high bits, a
/// counter in the low 18, always increasing.
#[derive(Debug, Default)]
pub struct Tso {
    last: AtomicU64,
}

impl Tso {
    fn physical() -> u64 {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        ms << 18
    }

    pub fn next(&self) -> u64 {
        let phys = Self::physical();
        let mut cur = self.last.load(Ordering::SeqCst);
        loop {
            let next = phys.max(cur + 1);
            match self
                .last
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// A timestamp not yet handed out.
    pub fn now(&self) -> u64 {
        Self::physical().max(self.last.load(Ordering::SeqCst) + 1)
    }

    /// Never hand out `ts` or anything before it again.
    pub fn observe(&self, ts: u64) {
        self.last.fetch_max(ts, Ordering::SeqCst);
    }
}

/// What every collection shares.
#[derive(Debug)]
pub struct Shared {
    pub config: StorageConfig,
    pub io: Arc<ObjectIo>,
    pub manifest: ManifestStore,
    pub tso: Tso,
    pub wal_dir: PathBuf,
    next_segment_id: AtomicU64,
    buffered: AtomicUsize,
    /// Bytes of uncommitted rows all open transactions hold (`txn.rs`).
    uncommitted: AtomicUsize,
    space: tokio::sync::Notify,
    wake_flusher: tokio::sync::Notify,
    /// Wakes the index builder (new segments, new indexes).
    pub wake_indexer: tokio::sync::Notify,
    /// Signalled after each index-builder pass (for waiters).
    pub index_progress: tokio::sync::Notify,
    /// The last background flush's failure, while flushes keep failing.
    flush_failure: Mutex<Option<FlushFailure>>,
    /// The collection locks (see `txn.rs`).
    pub locks: Arc<txn::Locks>,
    /// The commit log of multi-collection transactions (opened by
    /// [`Storage::recover`]) and the timestamps it holds at start-up.
    commits: Mutex<Option<Arc<LocalWal>>>,
    committed: Mutex<HashSet<u64>>,
    /// One WAL frame buffer kept between records, for whichever collection
    /// logs next (at most [`FRAME_KEEP`] of it): a large insert's frame,
    /// allocated afresh, was a fifth of a binary COPY's page faults.
    spare_frame: Mutex<Vec<u8>>,
}

/// Bytes of spare WAL frame buffer the server keeps.
const FRAME_KEEP: usize = 64 << 20;

#[derive(Debug, Clone)]
struct FlushFailure {
    message: String,
    disk_full: bool,
    at: std::time::Instant,
    /// When it was last logged (failures repeat every pass).
    logged: std::time::Instant,
}

/// How often a flush failure that keeps repeating is logged again.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Shared {
    /// A buffer to encode a WAL frame in: the spare one if no other
    /// collection is using it.
    pub(crate) fn take_frame(&self) -> Vec<u8> {
        self.spare_frame
            .try_lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default()
    }

    /// Give a frame buffer back; the larger of it and the spare is kept,
    /// up to [`FRAME_KEEP`].
    pub(crate) fn give_frame(&self, frame: Vec<u8>) {
        if frame.capacity() > FRAME_KEEP {
            return;
        }
        if let Some(mut spare) = self.spare_frame.try_lock()
            && spare.capacity() < frame.capacity()
        {
            *spare = frame;
        }
    }

    /// Record that the multi-collection transaction of timestamp `ts`
    /// committed, durably (its records are already).
    fn log_commit(&self, ts: u64) -> Result<()> {
        let Some(log) = self.commits.lock().clone() else {
            return Err(StorageError::WalFailed("the commit log is not open".into()));
        };
        let frame = WalRecord {
            ts,
            ..WalRecord::default()
        }
        .encode()?;
        let lsn = log.append(&frame)?;
        log.sync(lsn)
    }

    /// Whether a record of a multi-collection transaction is to be
    /// replayed: its commit is in the commit log.
    fn committed(&self, ts: u64) -> bool {
        self.committed.lock().contains(&ts)
    }

    fn new_segment_id(&self) -> u64 {
        self.next_segment_id.fetch_add(1, Ordering::SeqCst)
    }
    fn peek_segment_id(&self) -> u64 {
        self.next_segment_id.load(Ordering::SeqCst)
    }
    fn observe_segment_id(&self, id: u64) {
        self.next_segment_id.fetch_max(id + 1, Ordering::SeqCst);
    }
    fn reserve(&self, bytes: usize) {
        self.buffered.fetch_add(bytes, Ordering::SeqCst);
    }
    fn release(&self, bytes: usize) {
        let _ = self
            .buffered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                Some(b.saturating_sub(bytes))
            });
        self.space.notify_waiters();
    }
    fn over_limit(&self) -> bool {
        self.buffered.load(Ordering::SeqCst) >= self.config.insert_buffer_size
    }
    /// Back-pressure: wait while the insert buffer is full (the flusher
    /// makes room). A writer is refused only when a flush that began
    /// after it started waiting failed: then waiting would be for ever.
    async fn wait_for_space(&self) -> Result<()> {
        let since = std::time::Instant::now();
        while self.over_limit() {
            if let Some(f) = self.flush_failure.lock().as_ref()
                && f.at > since
            {
                return Err(StorageError::FlushFailing {
                    message: f.message.clone(),
                    disk_full: f.disk_full,
                });
            }
            self.wake_flusher.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(50), self.space.notified()).await;
        }
        Ok(())
    }

    /// Note how a background flush ended; a failure is logged when it is
    /// new, and again once a minute while it repeats.
    fn flush_ended(&self, collection: &str, result: &Result<()>) {
        let mut failure = self.flush_failure.lock();
        match result {
            Ok(()) => {
                if failure.take().is_some() {
                    info!(collection, "flushing works again");
                }
            }
            Err(e) => {
                let now = std::time::Instant::now();
                let message = e.to_string();
                let log = match failure.as_ref() {
                    Some(f) => f.message != message || now - f.logged >= FAILURE_LOG_INTERVAL,
                    None => true,
                };
                if log {
                    error!(collection, "flush failed: {message}");
                }
                let logged = match (log, failure.as_ref()) {
                    (false, Some(f)) => f.logged,
                    _ => now,
                };
                *failure = Some(FlushFailure {
                    message,
                    disk_full: e.is_disk_full(),
                    at: now,
                    logged,
                });
            }
        }
    }
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::SeqCst)
    }
}

/// All collections' data.
#[derive(Debug)]
pub struct Storage {
    shared: Arc<Shared>,
    collections: RwLock<HashMap<u64, Arc<CollectionData>>>,
    /// Held for the life of the server.
    _lock: std::fs::File,
    initial_catalog: Mutex<Option<CatalogSnapshot>>,
}

impl Storage {
    /// Open the data directory: take its lock, read the manifest. The
    /// collections are opened by [`Storage::recover`] once the catalog is.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::Io {
                path: lock_path.display().to_string(),
                source: e,
            })?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked(dir.display().to_string()));
        }
        let root = config
            .root
            .clone()
            .unwrap_or_else(|| dir.display().to_string());
        let io = Arc::new(ObjectIo::open(&root, &config.s3)?);
        let (manifest, current) = ManifestStore::open(io.clone()).await?;
        let current = layout::migrate(&io, &manifest, current).await?;
        let shared = Arc::new(Shared {
            wal_dir: dir.join("wal"),
            config,
            io,
            manifest,
            tso: Tso::default(),
            next_segment_id: AtomicU64::new(current.next_segment_id.max(1)),
            buffered: AtomicUsize::new(0),
            uncommitted: AtomicUsize::new(0),
            space: tokio::sync::Notify::new(),
            wake_flusher: tokio::sync::Notify::new(),
            wake_indexer: tokio::sync::Notify::new(),
            index_progress: tokio::sync::Notify::new(),
            flush_failure: Mutex::new(None),
            locks: Arc::new(txn::Locks::default()),
            commits: Mutex::new(None),
            committed: Mutex::new(HashSet::new()),
            spare_frame: Mutex::new(Vec::new()),
        });
        let initial = (current.version > 0).then(|| current.catalog.clone());
        info!(root = %root, manifest_version = current.version, "storage opened");
        Ok(Arc::new(Storage {
            shared,
            collections: RwLock::new(HashMap::new()),
            _lock: lock,
            initial_catalog: Mutex::new(initial),
        }))
    }

    /// The catalog's store: the manifest.
    pub fn meta_store(self: &Arc<Storage>) -> Arc<dyn MetaStore> {
        Arc::new(ManifestMetaStore {
            storage: Arc::downgrade(self),
            initial: self.initial_catalog.lock().take(),
        })
    }

    /// Open every collection of the catalog (segments + WAL replay), then
    /// start the background flusher.
    pub async fn recover(self: &Arc<Storage>, defs: Vec<Arc<CollectionDef>>) -> Result<()> {
        let manifest = self.shared.manifest.snapshot().await;
        let started = std::time::Instant::now();
        self.open_commit_log()?;
        let known: HashSet<u64> = defs.iter().map(|d| d.id).collect();
        for def in defs {
            let entry = manifest.collections.get(&def.id).cloned();
            let data = CollectionData::open(&def, self.shared.clone(), entry).await?;
            self.collections.write().insert(def.id, data);
        }
        self.trim_commit_log()?;
        self.remove_dropped(&known).await;
        info!(
            collections = self.collections.read().len(),
            ms = started.elapsed().as_millis() as u64,
            "recovery complete"
        );
        self.start_flusher();
        self.start_indexer();
        Ok(())
    }

    /// Remove the objects and logs of collections the catalog no longer
    /// has: a DROP removes them in the background, and a crash right after
    /// it left them behind. (Ids are never reused: a folder of an unknown
    /// id is a dropped collection's.)
    async fn remove_dropped(&self, known: &HashSet<u64>) {
        let unknown = |name: &str| name.parse::<u64>().is_ok_and(|id| !known.contains(&id));
        match self.shared.io.list_folders("collections").await {
            Ok(folders) => {
                for name in folders.iter().filter(|n| unknown(n)) {
                    info!(collection_id = %name, "removing the objects of a dropped collection");
                    self.shared
                        .io
                        .delete_prefix(&format!("collections/{name}"))
                        .await;
                }
            }
            Err(e) => warn!("cannot list collections to clean: {e}"),
        }
        let Ok(logs) = std::fs::read_dir(&self.shared.wal_dir) else {
            return;
        };
        for entry in logs.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(unknown) {
                info!(collection_id = ?name, "removing the log of a dropped collection");
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    warn!(collection_id = ?name, "cannot remove the log: {e}");
                }
            }
        }
    }

    /// Open the commit log of multi-collection transactions and read the
    /// commits it holds (before any collection replays its WAL).
    fn open_commit_log(&self) -> Result<()> {
        let dir = self.shared.wal_dir.join("commits");
        let (log, records) =
            LocalWal::open(&dir, self.shared.config.wal_sync, self.shared.tso.now())?;
        let mut committed = self.shared.committed.lock();
        for r in &records {
            self.shared.tso.observe(r.ts);
            committed.insert(r.ts);
        }
        *self.shared.commits.lock() = Some(log);
        Ok(())
    }

    /// After recovery, the commits older than every record still in a
    /// collection's WAL are needed no more: start a new commit-log file
    /// and remove the files wholly before that.
    fn trim_commit_log(&self) -> Result<()> {
        let Some(log) = self.shared.commits.lock().clone() else {
            return Ok(());
        };
        let mut oldest = self.shared.tso.now();
        for c in self.collections.read().values() {
            oldest = oldest.min(c.wal_oldest()?);
        }
        log.rotate(self.shared.tso.now())?;
        log.trim(oldest.saturating_sub(1))?;
        self.shared.committed.lock().clear();
        Ok(())
    }

    /// Start a transaction; `stop` (the session's) ends its lock waits.
    pub fn begin(
        &self,
        isolation: Isolation,
        stop: Option<Arc<quiver_common::interrupt::Interrupt>>,
    ) -> Arc<Transaction> {
        Arc::new(Transaction::new(self.shared.clone(), isolation, stop))
    }

    /// The index builder: builds (or loads) the indexes of sealed
    /// segments, one at a time, without blocking writes or searches.
    fn start_indexer(self: &Arc<Storage>) {
        let weak: Weak<Storage> = Arc::downgrade(self);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let busy = match weak.upgrade() {
                    Some(storage) => storage.index_pass().await,
                    None => return,
                };
                shared.index_progress.notify_waiters();
                if !busy {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        shared.wake_indexer.notified(),
                    )
                    .await;
                }
            }
        });
    }

    /// One step of index work; `true` if there was any.
    async fn index_pass(&self) -> bool {
        let collections: Vec<Arc<CollectionData>> =
            self.collections.read().values().cloned().collect();
        for c in collections {
            match c.index_step().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => error!(collection = %c.name(), "index build failed: {e}"),
            }
        }
        false
    }

    fn start_flusher(self: &Arc<Storage>) {
        let weak: Weak<Storage> = Arc::downgrade(self);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let _ =
                    tokio::time::timeout(collection::FLUSH_TICK, shared.wake_flusher.notified())
                        .await;
                let Some(storage) = weak.upgrade() else {
                    return;
                };
                storage.background_pass().await;
            }
        });
    }

    async fn background_pass(&self) {
        let collections: Vec<Arc<CollectionData>> =
            self.collections.read().values().cloned().collect();
        let pressure = self.shared.over_limit();
        for c in collections {
            if c.wants_flush(pressure) {
                let result = c.flush().await;
                self.shared.flush_ended(&c.name(), &result);
            }
            if c.small_segments() >= self.shared.config.compact_min_segments
                && let Err(e) = c.compact().await
            {
                error!(collection = %c.name(), "compaction failed: {e}");
            }
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn io(&self) -> &Arc<ObjectIo> {
        &self.shared.io
    }

    /// The data of a collection, created empty the first time it is asked for.
    pub fn open_collection(&self, def: &CollectionDef) -> Result<Arc<CollectionData>> {
        if let Some(data) = self.collections.read().get(&def.id) {
            return Ok(data.clone());
        }
        let data = block_on(CollectionData::open(def, self.shared.clone(), None))?;
        Ok(self
            .collections
            .write()
            .entry(def.id)
            .or_insert(data)
            .clone())
    }

    /// Every open collection.
    pub fn all_collections(&self) -> Vec<Arc<CollectionData>> {
        self.collections.read().values().cloned().collect()
    }

    pub fn collection(&self, id: u64) -> Option<Arc<CollectionData>> {
        self.collections.read().get(&id).cloned()
    }

    /// Forget a dropped collection and remove its log and objects in the
    /// background.
    pub fn drop_collection(&self, id: u64) {
        if let Some(data) = self.collections.write().remove(&id) {
            tokio::spawn(async move { data.destroy().await });
        }
    }

    /// Flush every collection (graceful shutdown).
    pub async fn flush_all(&self) {
        let collections: Vec<Arc<CollectionData>> =
            self.collections.read().values().cloned().collect();
        for c in collections {
            if let Err(e) = c.flush().await {
                warn!(collection = %c.name(), "flush at shutdown failed: {e}");
            }
        }
    }
}

/// Run a future to completion from synchronous code inside the runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(f)),
        Err(_) => futures::executor::block_on(f),
    }
}

/// The catalog persisted in the manifest.
#[derive(Debug)]
struct ManifestMetaStore {
    storage: Weak<Storage>,
    initial: Option<CatalogSnapshot>,
}

impl MetaStore for ManifestMetaStore {
    fn load(&self) -> Result<Option<CatalogSnapshot>, CatalogError> {
        Ok(self.initial.clone())
    }

    fn persist(&self, snapshot: &CatalogSnapshot) -> Result<(), CatalogError> {
        let Some(storage) = self.storage.upgrade() else {
            return Err(CatalogError::Store("storage is closed".into()));
        };
        let snapshot = snapshot.clone();
        let ids: std::collections::HashSet<u64> = snapshot
            .databases
            .values()
            .flat_map(|d| d.collections.values().map(|c| c.id))
            .collect();
        let next_segment_id = storage.shared.peek_segment_id();
        block_on(storage.shared.manifest.commit(move |m| {
            m.catalog = snapshot;
            m.collections.retain(|id, _| ids.contains(id));
            m.next_segment_id = m.next_segment_id.max(next_segment_id);
        }))
        .map_err(|e| CatalogError::Store(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_common::sqlstate;

    /// Every variant, with the code it must give; errors that travel inside
    /// DataFusion's and Arrow's answer with their own code.
    #[test]
    fn every_error_variant_has_its_sqlstate() {
        use datafusion::error::DataFusionError;
        let s = || "s".to_string();
        let io = |kind| std::io::Error::new(kind, "io");
        let cases = [
            (
                StorageError::DuplicateKey {
                    collection: s(),
                    field: s(),
                    value: s(),
                },
                sqlstate::UNIQUE_VIOLATION,
            ),
            (
                StorageError::NotNull {
                    collection: s(),
                    field: s(),
                },
                sqlstate::NOT_NULL_VIOLATION,
            ),
            (
                StorageError::BitLength {
                    field: s(),
                    bits: 3,
                },
                sqlstate::STRING_DATA_LENGTH_MISMATCH,
            ),
            (StorageError::InvalidBatch(s()), sqlstate::INTERNAL_ERROR),
            (
                StorageError::Arrow(arrow::error::ArrowError::ComputeError(s())),
                sqlstate::INTERNAL_ERROR,
            ),
            (
                StorageError::Parquet(datafusion::parquet::errors::ParquetError::General(s())),
                sqlstate::INTERNAL_ERROR,
            ),
            (
                StorageError::Io {
                    path: s(),
                    source: io(std::io::ErrorKind::PermissionDenied),
                },
                sqlstate::IO_ERROR,
            ),
            (
                StorageError::Io {
                    path: s(),
                    source: std::io::Error::from_raw_os_error(28),
                },
                sqlstate::DISK_FULL,
            ),
            (
                StorageError::ObjectStore {
                    message: s(),
                    disk_full: false,
                },
                sqlstate::IO_ERROR,
            ),
            (
                StorageError::ObjectStore {
                    message: s(),
                    disk_full: true,
                },
                sqlstate::DISK_FULL,
            ),
            (StorageError::WalFailed(s()), sqlstate::IO_ERROR),
            (
                StorageError::InvalidJson {
                    field: s(),
                    message: s(),
                },
                sqlstate::INVALID_TEXT_REPRESENTATION,
            ),
            (
                StorageError::InvalidUuid(s()),
                sqlstate::INVALID_TEXT_REPRESENTATION,
            ),
            (
                StorageError::InvalidJsonValue(s()),
                sqlstate::INVALID_TEXT_REPRESENTATION,
            ),
            (
                StorageError::FlushFailing {
                    message: s(),
                    disk_full: false,
                },
                sqlstate::IO_ERROR,
            ),
            (
                StorageError::FlushFailing {
                    message: s(),
                    disk_full: true,
                },
                sqlstate::DISK_FULL,
            ),
            (StorageError::Corrupt(s()), sqlstate::DATA_CORRUPTED),
            (
                StorageError::Config(s()),
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ),
            (
                StorageError::Locked(s()),
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ),
            (
                StorageError::Expression(Box::new(DataFusionError::External(Box::new(
                    quiver_vector::VectorError::NotFinite,
                )))),
                sqlstate::DATA_EXCEPTION,
            ),
            (StorageError::Dropped(s()), sqlstate::UNDEFINED_TABLE),
            (
                StorageError::Released(s()),
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ),
            (
                StorageError::Index(quiver_vector::index::IndexError::InvalidParameter(s())),
                sqlstate::INVALID_PARAMETER_VALUE,
            ),
            (
                StorageError::Vector(quiver_vector::VectorError::DimensionMismatch {
                    expected: 3,
                    actual: 2,
                }),
                sqlstate::DATA_EXCEPTION,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
    }

    #[test]
    fn wrapped_errors_answer_with_their_own_code() {
        use datafusion::error::DataFusionError;
        let dup = StorageError::DuplicateKey {
            collection: "t".into(),
            field: "id".into(),
            value: "1".into(),
        };
        let wrapped = DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::External(Box::new(dup))),
        );
        assert_eq!(
            sqlstate_of::datafusion(&wrapped),
            sqlstate::UNIQUE_VIOLATION
        );
        let arrow = arrow::error::ArrowError::ExternalError(Box::new(
            quiver_catalog::CatalogError::CollectionNotFound { name: "t".into() },
        ));
        assert_eq!(sqlstate_of::arrow(&arrow), sqlstate::UNDEFINED_TABLE);
        assert_eq!(
            sqlstate_of::datafusion(&DataFusionError::ResourcesExhausted("m".into())),
            sqlstate::OUT_OF_MEMORY
        );
        assert_eq!(
            sqlstate_of::datafusion(&DataFusionError::NotImplemented("m".into())),
            sqlstate::FEATURE_NOT_SUPPORTED
        );
    }
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use quiver_catalog::{CollectionDef, FieldDef, FieldType};

    fn parquet_files(dir: &std::path::Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    parquet_files(&p)
                } else {
                    usize::from(p.extension().is_some_and(|x| x == "parquet"))
                }
            })
            .sum()
    }

    /// A query that took its snapshot before DROP COLLECTION still reads
    /// the flushed segments' files; they go when it lets them go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_collections_files_outlive_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageConfig::new(dir.path().to_path_buf()))
            .await
            .unwrap();
        let def = CollectionDef {
            id: 7,
            database: "db".into(),
            name: "c".into(),
            fields: vec![FieldDef::new("id", FieldType::Int64)],
            primary_key: None,
            owner: None,
            indexes: vec![],
        };
        let data = storage.open_collection(&def).unwrap();
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1000));
        let batch = RecordBatch::try_new(def.arrow_schema(), vec![ids]).unwrap();
        data.mutate(Mutation::insert(batch)).await.unwrap();
        data.flush().await.unwrap();
        // Reads now go to the Parquet files.
        data.release();
        let reader = data.snapshot();
        drop(data);
        assert!(parquet_files(dir.path()) > 0);
        storage.drop_collection(def.id);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut rows = 0;
        for segment in &reader.segments {
            rows += segment
                .batches()
                .await
                .unwrap()
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>();
        }
        assert_eq!(rows, 1000);
        drop(reader);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while parquet_files(dir.path()) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "files left after the reader finished"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
