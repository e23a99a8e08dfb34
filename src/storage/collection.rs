//! The rows of one collection: the write path (validate, log, apply,
//! publish) in [`write`], recovery in [`open`], the primary-key index in
//! [`pk_index`], flush of sealed segments to Parquet in [`flush`],
//! compaction in [`compaction`], index builds in [`index_build`] and bulk
//! loads (a large COPY written as segments of its own) in [`bulk`].
//!
//! Writers are serialised by one lock, under which a change is checked,
//! appended to the WAL and applied to the *pending* snapshot; the writer
//! then waits for the WAL to be durable (sharing an fsync with concurrent
//! writers) and *publishes* its snapshot, unless a later one already is.
//! Readers take the published snapshot: they see exactly the acknowledged
//! writes, and never a write that a crash could still lose.

// Primary keys are hashed with foldhash (seeded per process): SipHash
// was a tenth of a bulk load's CPU.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int16Array, Int32Array, Int64Array, RecordBatch,
    UInt64Array,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Int16Type, Int32Type, Int64Type, Schema, SchemaRef};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info};

use super::layout::{collection_prefix, index_path};
use super::manifest::CollectionManifest;
use super::segment::{
    Deletes, FlushedSegment, IndexFile, LoadedIndex, ROWID, RowIds, Segment, SegmentData,
    SegmentMeta, SegmentState, Snapshot,
};
use super::wal::{LocalWal, Wal, WalRecord};
use super::{ObjectIo, Result, Shared, StorageError};
use quiver_catalog::{CollectionDef, IndexDef};
use quiver_vector::VectorError;

mod bulk;
mod compaction;
mod flush;
mod index_build;
mod open;
mod pk_index;
mod stage;
mod write;

pub use bulk::BulkLoad;
use compaction::*;
pub use index_build::{IndexReport, IndexStatus};
pub use pk_index::PkKey;
use pk_index::*;
pub use stage::{Overlay, PROVISIONAL};
pub use write::{Mutation, RowChange, RowFilter};

/// How long a dropped collection's files wait for the queries that still
/// read them.
const DROPPED_FILES_WAIT: Duration = Duration::from_secs(600);

/// Appends merge into the last batch of the growing segment up to this.
const BATCH_ROWS: usize = 1024;

#[derive(Debug)]
struct WriteState {
    pending: Arc<Snapshot>,
    /// The primary-key index: key to row id of the live row holding it.
    pks: HashMap<PkKey, u64>,
    next_rowid: u64,
    next_auto: i64,
    /// Deletes persisted per flushed segment: (delta file, count).
    persisted: HashMap<u64, (String, usize)>,
    /// Records were logged since the last seal.
    dirty: bool,
    checkpoint_ts: u64,
    /// Flushed segments dropped from the snapshot (by TRUNCATE or
    /// compaction) whose files go once the manifest no longer names them
    /// and no reader holds them.
    retired: Vec<Weak<FlushedSegment>>,
}

/// How an insert treats rows whose primary key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// SQLSTATE 23505.
    Error,
    /// ON CONFLICT DO NOTHING: skip the row.
    Skip,
    /// UPSERT: the new row replaces the old one.
    Replace,
}

/// A collection's rows.
#[derive(Debug)]
pub struct CollectionData {
    pub id: u64,
    /// Its name now (ALTER COLLECTION ... RENAME TO changes it).
    name: RwLock<String>,
    /// `collections/<id>`: where its objects go.
    prefix: String,
    /// The fields, all nullable (NOT NULL is checked with a precise error).
    schema: SchemaRef,
    /// The fields and `_rowid`: what is stored.
    full_schema: SchemaRef,
    field_names: Vec<String>,
    not_null: Vec<usize>,
    /// Fields of type JSON: their values must parse.
    json: Vec<usize>,
    /// Uuid fields: their values are brought to the canonical text.
    uuid: Vec<usize>,
    primary_key: Option<usize>,
    auto_increment: Option<usize>,
    shared: Arc<Shared>,
    wal: Arc<dyn Wal>,
    published: RwLock<Arc<Snapshot>>,
    write: Mutex<WriteState>,
    maintenance: tokio::sync::Mutex<()>,
    last_write_ms: AtomicU64,
    /// The next flush pass must flush: a bulk load attached segments the
    /// manifest does not name yet, or a TRUNCATE emptied it.
    attached: AtomicBool,
    dropped: AtomicBool,
    /// RELEASE COLLECTION: rows and indexes out of memory, reads refused
    /// until LOAD COLLECTION (not kept across restarts: every collection
    /// starts loaded).
    released: AtomicBool,
    /// The vector indexes defined on the collection (from the catalog).
    indexes: RwLock<Vec<IndexDef>>,
    /// Per index: build time so far, builds, loads, the last failure.
    index_status: Mutex<HashMap<String, IndexStatus>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CollectionData {
    /// The fields (all nullable), the schema INSERT and COPY batches use.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The stored schema: the fields and `_rowid`.
    pub fn full_schema(&self) -> SchemaRef {
        self.full_schema.clone()
    }

    pub fn name(&self) -> String {
        self.name.read().clone()
    }

    /// The collection was renamed (its data stays where it is: by id).
    pub fn set_name(&self, name: &str) {
        *self.name.write() = name.to_string();
    }

    /// The current consistent view (every acknowledged write).
    /// The object store the collection's segments are in.
    pub fn io(&self) -> &Arc<ObjectIo> {
        &self.shared.io
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.read().clone()
    }

    /// Make `snap` the one readers take, unless a later one already is.
    pub(super) fn publish(&self, snap: Arc<Snapshot>) {
        {
            let mut p = self.published.write();
            if p.seq < snap.seq {
                *p = snap;
            }
        }
        self.last_write_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A timestamp no record still in the collection's WAL is older than.
    pub(super) fn wal_oldest(&self) -> Result<u64> {
        self.wal.oldest()
    }

    /// Whether the background flusher should flush now.
    pub(super) fn wants_flush(&self, under_pressure: bool) -> bool {
        if self.attached.load(Ordering::Relaxed) {
            return true;
        }
        let snap = self.snapshot();
        let Some(last) = snap.segments.last() else {
            return false;
        };
        let in_memory: usize = snap.segments.iter().map(|s| s.mem_bytes).sum();
        if last.state != SegmentState::Growing {
            return in_memory > 0;
        }
        let cfg = &self.shared.config;
        let idle = now_ms().saturating_sub(self.last_write_ms.load(Ordering::Relaxed));
        last.rows() >= cfg.segment_max_rows
            || last.mem_bytes >= cfg.segment_max_bytes
            || (last.rows() > 0 && idle >= cfg.seal_idle.as_millis() as u64)
            || (under_pressure && in_memory > 0)
    }

    /// Number of flushed segments smaller than half the target size.
    pub(super) fn small_segments(&self) -> usize {
        let target = self.shared.config.segment_target_size as u64;
        let width = self.row_width();
        self.snapshot()
            .segments
            .iter()
            .filter(|s| {
                matches!(s.data, SegmentData::Flushed(_)) && s.merge_size(width) < target / 2
            })
            .count()
    }

    /// About how many bytes a row takes in memory (Arrow): what a merge
    /// holds of each row, however well its file compressed.
    pub(super) fn row_width(&self) -> u64 {
        fn width(t: &DataType) -> u64 {
            match t {
                DataType::FixedSizeList(f, n) => *n as u64 * width(f.data_type()),
                DataType::FixedSizeBinary(n) => *n as u64,
                DataType::Utf8 | DataType::Binary | DataType::List(_) => 32,
                other => other.primitive_width().unwrap_or(8) as u64,
            }
        }
        self.full_schema
            .fields()
            .iter()
            .map(|f| width(f.data_type()))
            .sum()
    }

    /// The collection is gone: stop writes, remove its log and objects.
    pub(super) async fn destroy(&self) {
        self.dropped.store(true, Ordering::Relaxed);
        let _maintenance = self.maintenance.lock().await;
        // The collection lets go of its segments; queries that began
        // before the drop keep theirs until they finish.
        let (freed, pending) = {
            let mut state = self.write.lock();
            let freed: usize = state.pending.segments.iter().map(|s| s.mem_bytes).sum();
            (freed, std::mem::take(&mut state.pending))
        };
        let published = std::mem::take(&mut *self.published.write());
        self.shared.release(freed);
        if let Err(e) = self.wal.destroy() {
            tracing::warn!(collection = %self.name(), "cannot remove WAL: {e}");
        }
        let mut ids: Vec<u64> = pending.segments.iter().map(|s| s.id).collect();
        ids.extend(published.segments.iter().map(|s| s.id));
        ids.sort_unstable();
        ids.dedup();
        let held: Vec<Weak<FlushedSegment>> = pending
            .segments
            .iter()
            .chain(&published.segments)
            .filter_map(|s| match &s.data {
                SegmentData::Flushed(f) => Some(Arc::downgrade(f)),
                _ => None,
            })
            .collect();
        drop((pending, published));
        // A scan of a flushed segment reads its files as it goes: they are
        // removed once no query holds the segment (or after ten minutes).
        let deadline = std::time::Instant::now() + DROPPED_FILES_WAIT;
        while held.iter().any(|w| w.strong_count() > 0) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for id in ids {
            self.shared.io.delete_prefix(&self.segment_dir(id)).await;
        }
    }

    /// RELEASE COLLECTION, as Milvus's: the flushed rows and the indexes
    /// leave memory, and queries and searches are refused until LOAD.
    /// Writes go on (into the growing segment).
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        for s in &self.snapshot().segments {
            if let SegmentData::Flushed(f) = &s.data {
                f.forget_rows();
                f.indexes.write().clear();
            }
        }
    }

    /// LOAD COLLECTION: reads are served again; the rows are read in now
    /// and the indexes loaded from their files in the background.
    pub async fn load(&self) -> Result<()> {
        self.released.store(false, Ordering::SeqCst);
        self.snapshot().chunks().await?;
        self.shared.wake_indexer.notify_one();
        Ok(())
    }

    /// `Err` while the collection is released.
    pub fn readable(&self) -> Result<()> {
        if self.released.load(Ordering::SeqCst) {
            return Err(StorageError::Released(self.name()));
        }
        Ok(())
    }

    /// Rows of a segment for `SHOW SEGMENTS`.
    pub fn segment_rows(&self) -> Vec<(u64, &'static str, u64, u64, u64, &'static str)> {
        let defs = self.index_defs();
        self.snapshot()
            .segments
            .iter()
            .map(|s| {
                let (size, index_state) = match &s.data {
                    SegmentData::Flushed(f) => {
                        let built = defs.iter().filter(|d| f.index(&d.name).is_some()).count();
                        let state = match (defs.len(), built) {
                            (0, _) => "none",
                            (n, b) if b == n => "ready",
                            _ => "building",
                        };
                        (f.meta.bytes, state)
                    }
                    // Growing segments are searched exactly.
                    SegmentData::Memory(_) => (s.mem_bytes as u64, "none"),
                };
                (
                    s.id,
                    s.state.name(),
                    s.rows() as u64,
                    s.deletes.count() as u64,
                    size,
                    index_state,
                )
            })
            .collect()
    }
}

/// How long the flusher sleeps between checks.
pub(super) const FLUSH_TICK: Duration = Duration::from_millis(200);
