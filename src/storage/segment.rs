//! Segments: the units a collection's rows live in.
//!
//! A collection's rows sit in a list of segments. New rows go to the one
//! *growing* segment (Arrow batches in memory, searchable at once); it
//! *seals* when full or idle, and a background task writes it to object
//! storage as Parquet, after which it is *flushed* (its rows are read back
//! from the Parquet file when a query needs them). *Compacted* segments are
//! flushed segments produced by merging others.
//!
//! Every row carries a hidden row id (`_rowid`), unique in its collection
//! and increasing in insertion order. Deletes are kept per segment as a
//! bitmap of row offsets plus a log of `(row id, timestamp)`, applied when
//! the segment is read.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::UInt64Type;
use serde::{Deserialize, Serialize};

use super::Result;
use super::objects::ObjectIo;

/// The hidden row-id column, last in every stored batch.
pub const ROWID: &str = "_rowid";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentState {
    Growing,
    Sealed,
    Flushed,
    Compacted,
}

impl SegmentState {
    pub fn name(self) -> &'static str {
        match self {
            SegmentState::Growing => "growing",
            SegmentState::Sealed => "sealed",
            SegmentState::Flushed => "flushed",
            SegmentState::Compacted => "compacted",
        }
    }
}

/// Deleted rows of one segment.
#[derive(Debug, Clone, Default)]
pub struct Deletes {
    bits: Vec<u64>,
    count: usize,
    /// `(row id, timestamp)` of each delete, in order.
    pub log: Vec<(u64, u64)>,
}

impl Deletes {
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn contains(&self, offset: usize) -> bool {
        self.bits
            .get(offset / 64)
            .is_some_and(|w| w & (1 << (offset % 64)) != 0)
    }

    /// Mark `offset` deleted; false if it already was.
    pub fn insert(&mut self, offset: usize, rowid: u64, ts: u64) -> bool {
        if self.contains(offset) {
            return false;
        }
        let word = offset / 64;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (offset % 64);
        self.count += 1;
        self.log.push((rowid, ts));
        true
    }

    /// The liveness mask of rows `start..start + len`, `None` if all live.
    pub fn live_mask(&self, start: usize, len: usize) -> Option<BooleanArray> {
        if self.count == 0 {
            return None;
        }
        let mask = BooleanBuffer::collect_bool(len, |i| !self.contains(start + i));
        if mask.count_set_bits() == len {
            None
        } else {
            Some(BooleanArray::new(mask, None))
        }
    }
}

/// Which row ids a segment holds, in row order.
#[derive(Debug, Clone)]
pub enum RowIds {
    /// `start, start + 1, ...` (a segment written by inserts).
    Range { start: u64, len: usize },
    /// Any increasing list (a segment merged by compaction).
    List(Arc<Vec<u64>>),
    /// Row ids out of order (compaction merged a bulk load's segment, whose
    /// ids were reserved while others were inserted), with them sorted
    /// alongside their offsets for lookups.
    Unordered {
        ids: Arc<Vec<u64>>,
        sorted: Arc<Vec<(u64, usize)>>,
    },
}

impl RowIds {
    pub fn len(&self) -> usize {
        match self {
            RowIds::Range { len, .. } => *len,
            RowIds::List(l) => l.len(),
            RowIds::Unordered { ids, .. } => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn offset_of(&self, rowid: u64) -> Option<usize> {
        match self {
            RowIds::Range { start, len } => {
                (rowid >= *start && rowid < start + *len as u64).then(|| (rowid - start) as usize)
            }
            RowIds::List(l) => l.binary_search(&rowid).ok(),
            RowIds::Unordered { sorted, .. } => sorted
                .binary_search_by_key(&rowid, |p| p.0)
                .ok()
                .map(|i| sorted[i].1),
        }
    }

    pub fn min(&self) -> Option<u64> {
        match self {
            RowIds::Range { start, len } => (*len > 0).then_some(*start),
            RowIds::List(l) => l.first().copied(),
            RowIds::Unordered { sorted, .. } => sorted.first().map(|p| p.0),
        }
    }

    pub fn max(&self) -> Option<u64> {
        match self {
            RowIds::Range { start, len } => (*len > 0).then(|| start + *len as u64 - 1),
            RowIds::List(l) => l.last().copied(),
            RowIds::Unordered { sorted, .. } => sorted.last().map(|p| p.0),
        }
    }

    /// The row id at `offset`.
    pub fn at(&self, offset: usize) -> Option<u64> {
        match self {
            RowIds::Range { start, len } => (offset < *len).then(|| start + offset as u64),
            RowIds::List(l) => l.get(offset).copied(),
            RowIds::Unordered { ids, .. } => ids.get(offset).copied(),
        }
    }

    /// From the row-id column of a segment's batches.
    pub fn from_batches(batches: &[RecordBatch]) -> RowIds {
        let mut all: Vec<u64> = Vec::new();
        for b in batches {
            if let Some(col) = b.column_by_name(ROWID)
                && let Some(a) = col.as_primitive_opt::<UInt64Type>()
            {
                all.extend(a.values().iter());
            }
        }
        let contiguous = all.windows(2).all(|w| w[1] == w[0] + 1);
        match (contiguous, all.first()) {
            (true, Some(&start)) => RowIds::Range {
                start,
                len: all.len(),
            },
            (true, None) => RowIds::Range { start: 0, len: 0 },
            (false, _) if all.windows(2).all(|w| w[1] > w[0]) => RowIds::List(Arc::new(all)),
            (false, _) => {
                let mut sorted: Vec<(u64, usize)> =
                    all.iter().enumerate().map(|(i, &r)| (r, i)).collect();
                sorted.sort_unstable();
                RowIds::Unordered {
                    ids: Arc::new(all),
                    sorted: Arc::new(sorted),
                }
            }
        }
    }
}

/// What the manifest records of a flushed segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: u64,
    pub state: SegmentState,
    pub rows: u64,
    /// Size of the data file in bytes.
    pub bytes: u64,
    /// Object path of the Parquet data file, relative to the storage root.
    pub data_file: String,
    /// Latest delete log (all deletes persisted so far), if any.
    pub delta_file: Option<String>,
    pub deleted: u64,
    pub rowid_min: u64,
    pub rowid_max: u64,
    /// Primary-key range (stats used to skip segments on lookups).
    pub pk_min: Option<serde_json::Value>,
    pub pk_max: Option<serde_json::Value>,
    /// Timestamp of the last write the segment contains.
    pub max_ts: u64,
    /// Index files written for this segment, by index name.
    #[serde(default)]
    pub indexes: std::collections::BTreeMap<String, IndexFile>,
}

/// An index file of a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Object path, relative to the storage root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub build_ms: u64,
}

/// An index in memory for one segment.
#[derive(Debug, Clone)]
pub struct LoadedIndex {
    pub index: Arc<dyn quiver_vector::index::VectorIndex>,
}

/// A segment on object storage; its rows are loaded on first use and kept
/// (Milvus "loads" sealed segments into query nodes the same way).
#[derive(Debug)]
pub struct FlushedSegment {
    pub meta: SegmentMeta,
    io: Arc<ObjectIo>,
    cache: parking_lot::Mutex<Option<Arc<Vec<RecordBatch>>>>,
    /// Index files written so far (persisted in the manifest).
    pub index_files: parking_lot::Mutex<std::collections::BTreeMap<String, IndexFile>>,
    /// Indexes loaded or built, by index name.
    pub indexes: parking_lot::RwLock<HashMap<String, LoadedIndex>>,
    /// Values derived from the segment's rows (a search's filter results),
    /// by key, most recently used last; the rows never change, so neither
    /// do they.
    derived: parking_lot::Mutex<Vec<(String, Arc<dyn std::any::Any + Send + Sync>)>>,
}

/// How many derived values a segment keeps ([`FlushedSegment::derived`]).
const DERIVED_KEPT: usize = 32;

impl FlushedSegment {
    pub fn new(meta: SegmentMeta, io: Arc<ObjectIo>) -> FlushedSegment {
        FlushedSegment {
            index_files: parking_lot::Mutex::new(meta.indexes.clone()),
            meta,
            io,
            cache: parking_lot::Mutex::new(None),
            indexes: parking_lot::RwLock::new(HashMap::new()),
            derived: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// The value `make` derives from this segment's rows, kept under `key`
    /// (at most 32 per segment, the least recently used going first).
    /// `make` runs outside the lock; two callers may both run it.
    pub fn derived<T, E>(
        &self,
        key: &str,
        make: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<Arc<T>, E>
    where
        T: Send + Sync + 'static,
    {
        {
            let mut kept = self.derived.lock();
            if let Some(at) = kept.iter().position(|(k, _)| k == key) {
                let entry = kept.remove(at);
                let value = entry.1.clone();
                kept.push(entry);
                if let Ok(value) = value.downcast::<T>() {
                    return Ok(value);
                }
            }
        }
        let value = Arc::new(make()?);
        let mut kept = self.derived.lock();
        kept.retain(|(k, _)| k != key);
        if kept.len() >= DERIVED_KEPT {
            kept.remove(0);
        }
        kept.push((key.to_string(), value.clone()));
        Ok(value)
    }

    /// A just-written segment whose rows are still at hand.
    pub fn with_rows(meta: SegmentMeta, io: Arc<ObjectIo>, rows: Arc<Vec<RecordBatch>>) -> Self {
        let s = FlushedSegment::new(meta, io);
        *s.cache.lock() = Some(rows);
        s
    }

    /// The loaded index `name`, if any.
    pub fn index(&self, name: &str) -> Option<LoadedIndex> {
        self.indexes.read().get(name).cloned()
    }

    /// The manifest record of this segment, with its index files.
    pub fn current_meta(&self) -> SegmentMeta {
        let mut meta = self.meta.clone();
        meta.indexes = self.index_files.lock().clone();
        meta
    }

    pub async fn batches(&self) -> Result<Arc<Vec<RecordBatch>>> {
        if let Some(rows) = self.cache.lock().clone() {
            return Ok(rows);
        }
        let rows = Arc::new(self.io.read_parquet(&self.meta.data_file, None).await?);
        *self.cache.lock() = Some(rows.clone());
        Ok(rows)
    }

    /// Drop the rows held in memory; they are read again when needed.
    pub fn forget_rows(&self) {
        *self.cache.lock() = None;
    }

    pub fn is_loaded(&self) -> bool {
        self.cache.lock().is_some()
    }
}

#[derive(Debug, Clone)]
pub enum SegmentData {
    Memory(Arc<Vec<RecordBatch>>),
    Flushed(Arc<FlushedSegment>),
}

/// One segment as seen by a snapshot.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: u64,
    pub state: SegmentState,
    pub data: SegmentData,
    pub rowids: RowIds,
    pub deletes: Arc<Deletes>,
    /// Bytes held in memory by an unflushed segment.
    pub mem_bytes: usize,
    /// Timestamp of the last write into the segment.
    pub max_ts: u64,
}

impl Segment {
    pub fn rows(&self) -> usize {
        self.rowids.len()
    }

    pub fn live_rows(&self) -> usize {
        self.rows() - self.deletes.count()
    }

    pub fn file_bytes(&self) -> u64 {
        match &self.data {
            SegmentData::Flushed(f) => f.meta.bytes,
            SegmentData::Memory(_) => 0,
        }
    }

    /// What merging the segment takes: its file's size, or its rows' in
    /// memory at `row_width` bytes each when that is more.
    pub fn merge_size(&self, row_width: u64) -> u64 {
        self.file_bytes().max(self.rows() as u64 * row_width)
    }

    /// The segment's batches (loading a flushed one if needed).
    pub async fn batches(&self) -> Result<Arc<Vec<RecordBatch>>> {
        match &self.data {
            SegmentData::Memory(b) => Ok(b.clone()),
            SegmentData::Flushed(f) => f.batches().await,
        }
    }

    /// The segment's batches with their liveness masks.
    pub async fn chunks(&self) -> Result<Vec<Chunk>> {
        let batches = self.batches().await?;
        let mut out = Vec::with_capacity(batches.len());
        let mut start = 0;
        for b in batches.iter() {
            let n = b.num_rows();
            out.push(Chunk {
                batch: b.clone(),
                live: self.deletes.live_mask(start, n),
            });
            start += n;
        }
        Ok(out)
    }
}

/// A batch of rows and which of them are live.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// In the storage schema: the collection's fields, then `_rowid`.
    pub batch: RecordBatch,
    /// `None` when every row is live.
    pub live: Option<BooleanArray>,
}

impl Chunk {
    pub fn is_live(&self, row: usize) -> bool {
        self.live.as_ref().is_none_or(|m| m.value(row))
    }

    /// The live rows only.
    pub fn live_batch(&self) -> Result<RecordBatch> {
        match &self.live {
            None => Ok(self.batch.clone()),
            Some(mask) => Ok(arrow::compute::filter_record_batch(&self.batch, mask)?),
        }
    }

    /// The row ids of this chunk.
    pub fn rowids(&self) -> Option<&UInt64Array> {
        self.batch
            .column_by_name(ROWID)
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
    }
}

/// An immutable view of a collection at one point: every query reads one.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Order of publication (later snapshots include earlier writes).
    pub seq: u64,
    /// Timestamp of the last write visible.
    pub ts: u64,
    pub segments: Vec<Segment>,
}

impl Snapshot {
    pub fn live_rows(&self) -> usize {
        self.segments.iter().map(Segment::live_rows).sum()
    }

    /// Every segment's batches with liveness masks, loading flushed
    /// segments as needed.
    pub async fn chunks(&self) -> Result<Vec<Chunk>> {
        let mut out = Vec::new();
        for s in &self.segments {
            out.extend(s.chunks().await?);
        }
        Ok(out)
    }

    /// Which segment (by position) holds `rowid`, and at which offset.
    pub fn locate(&self, rowid: u64) -> Option<(usize, usize)> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.rowids.offset_of(rowid).map(|o| (i, o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_and_masks() {
        let mut d = Deletes::default();
        assert!(d.live_mask(0, 10).is_none());
        assert!(d.insert(3, 103, 1));
        assert!(!d.insert(3, 103, 2));
        assert!(d.insert(70, 170, 3));
        assert_eq!(d.count(), 2);
        let m = d.live_mask(0, 10).unwrap();
        assert!(!m.value(3) && m.value(4));
        assert!(d.live_mask(10, 50).is_none());
        let m = d.live_mask(64, 10).unwrap();
        assert!(!m.value(6));
    }

    #[test]
    fn rowid_offsets() {
        let r = RowIds::Range { start: 10, len: 5 };
        assert_eq!(r.offset_of(12), Some(2));
        assert_eq!(r.offset_of(15), None);
        let l = RowIds::List(Arc::new(vec![1, 5, 9]));
        assert_eq!(l.offset_of(5), Some(1));
        assert_eq!(l.offset_of(6), None);
    }
}
