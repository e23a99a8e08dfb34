//! The rows of one collection: the write path (validate, log, apply,
//! publish), flush of sealed segments to Parquet, compaction and recovery.
//!
//! Writers are serialised by one lock, under which a change is checked,
//! appended to the WAL and applied to the *pending* snapshot; the writer
//! then waits for the WAL to be durable (sharing an fsync with concurrent
//! writers) and *publishes* its snapshot, unless a later one already is.
//! Readers take the published snapshot: they see exactly the acknowledged
//! writes, and never a write that a crash could still lose.

use std::collections::{HashMap, HashSet};
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

use super::manifest::CollectionManifest;
use super::segment::{
    Deletes, FlushedSegment, IndexFile, LoadedIndex, ROWID, RowIds, Segment, SegmentData,
    SegmentMeta, SegmentState, Snapshot,
};
use super::wal::{LocalWal, Wal, WalRecord};
use super::{ObjectIo, Result, Shared, StorageError};
use crate::catalog::{CollectionDef, IndexDef};

/// How long a dropped collection's files wait for the queries that still
/// read them.
const DROPPED_FILES_WAIT: Duration = Duration::from_secs(600);

/// Appends merge into the last batch of the growing segment up to this.
const BATCH_ROWS: usize = 1024;

/// A primary-key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PkKey {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for PkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PkKey::Int(v) => write!(f, "{v}"),
            PkKey::Text(v) => write!(f, "{v}"),
        }
    }
}

impl PkKey {
    fn json(&self) -> serde_json::Value {
        match self {
            PkKey::Int(v) => serde_json::Value::from(*v),
            PkKey::Text(v) => serde_json::Value::from(v.clone()),
        }
    }
}

fn pk_keys(array: &ArrayRef) -> Result<Vec<Option<PkKey>>> {
    let n = array.len();
    let out = match array.data_type() {
        DataType::Int64 => {
            let a = array.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| a.is_valid(i).then(|| PkKey::Int(a.value(i))))
                .collect()
        }
        DataType::Int32 => {
            let a = array.as_primitive::<Int32Type>();
            (0..n)
                .map(|i| a.is_valid(i).then(|| PkKey::Int(a.value(i) as i64)))
                .collect()
        }
        DataType::Int16 => {
            let a = array.as_primitive::<Int16Type>();
            (0..n)
                .map(|i| a.is_valid(i).then(|| PkKey::Int(a.value(i) as i64)))
                .collect()
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..n)
                .map(|i| a.is_valid(i).then(|| PkKey::Text(a.value(i).to_string())))
                .collect()
        }
        other => {
            return Err(StorageError::InvalidBatch(format!(
                "primary key of type {other} is not supported"
            )));
        }
    };
    Ok(out)
}

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
    name: String,
    /// `<db>/<collection>`: where its objects go.
    prefix: String,
    /// The fields, all nullable (NOT NULL is checked with a precise error).
    schema: SchemaRef,
    /// The fields and `_rowid`: what is stored.
    full_schema: SchemaRef,
    field_names: Vec<String>,
    not_null: Vec<usize>,
    primary_key: Option<usize>,
    auto_increment: Option<usize>,
    shared: Arc<Shared>,
    wal: Arc<dyn Wal>,
    published: RwLock<Arc<Snapshot>>,
    write: Mutex<WriteState>,
    maintenance: tokio::sync::Mutex<()>,
    last_write_ms: AtomicU64,
    dropped: AtomicBool,
    /// The vector indexes defined on the collection (from the catalog).
    indexes: RwLock<Vec<IndexDef>>,
    /// Per index: build time so far, builds, loads, the last failure.
    index_status: Mutex<HashMap<String, IndexStatus>>,
}

/// How an index's builds went.
#[derive(Debug, Clone, Default)]
pub struct IndexStatus {
    pub build_ms: u64,
    pub built: u64,
    pub loaded: u64,
    pub failed: Option<String>,
    /// Segments whose build failed (not retried until REINDEX).
    pub failed_segments: HashSet<u64>,
}

/// One line of SHOW INDEXES.
#[derive(Debug, Clone)]
pub struct IndexReport {
    pub def: IndexDef,
    pub rows_indexed: u64,
    pub rows_total: u64,
    pub state: &'static str,
    pub build_ms: u64,
    pub error: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CollectionData {
    /// Open a collection: its flushed segments from the manifest entry,
    /// then every WAL record after the entry's checkpoint.
    pub(super) async fn open(
        def: &CollectionDef,
        shared: Arc<Shared>,
        entry: Option<CollectionManifest>,
    ) -> Result<Arc<CollectionData>> {
        let schema = Arc::new(Schema::new(
            def.arrow_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(ROWID, DataType::UInt64, false));
        let full_schema = Arc::new(Schema::new(fields));
        // Recovery (a manifest entry) may clean up after a crash; a new
        // collection must not touch what another of the same name left.
        let recovering = entry.is_some();
        let entry = entry.unwrap_or_default();
        let pk_name = def.primary_key.map(|i| def.fields[i].name.clone());

        // Flushed segments: row ids, deletes and primary keys.
        let mut segments = Vec::new();
        let mut persisted = HashMap::new();
        let mut pk_columns: HashMap<u64, Vec<ArrayRef>> = HashMap::new();
        for meta in &entry.segments {
            let mut cols = vec![ROWID];
            if let Some(pk) = &pk_name {
                cols.push(pk.as_str());
            }
            let batches = shared.io.read_parquet(&meta.data_file, Some(&cols)).await?;
            let rowids = RowIds::from_batches(&batches);
            if let Some(pk) = &pk_name {
                pk_columns.insert(
                    meta.id,
                    batches
                        .iter()
                        .filter_map(|b| b.column_by_name(pk).cloned())
                        .collect(),
                );
            }
            let mut deletes = Deletes::default();
            if let Some(delta) = &meta.delta_file {
                for b in shared.io.read_parquet(delta, None).await? {
                    let ids = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
                    let ts = b.column(1).as_primitive::<arrow::datatypes::UInt64Type>();
                    for i in 0..b.num_rows() {
                        if let Some(off) = rowids.offset_of(ids.value(i)) {
                            deletes.insert(off, ids.value(i), ts.value(i));
                        }
                    }
                }
                persisted.insert(meta.id, (delta.clone(), deletes.count()));
            }
            shared.observe_segment_id(meta.id);
            segments.push(Segment {
                id: meta.id,
                state: meta.state,
                data: SegmentData::Flushed(Arc::new(FlushedSegment::new(
                    meta.clone(),
                    shared.io.clone(),
                ))),
                rowids,
                deletes: Arc::new(deletes),
                mem_bytes: 0,
                max_ts: meta.max_ts,
            });
        }
        let wal_dir = shared.wal_dir.join(def.id.to_string()).join("0");
        let (wal, records) = LocalWal::open(&wal_dir, shared.config.wal_sync, shared.tso.now())?;
        let data = CollectionData {
            id: def.id,
            name: def.name.clone(),
            prefix: format!("{}/{}", def.database, def.name),
            schema,
            full_schema,
            field_names: def.fields.iter().map(|f| f.name.clone()).collect(),
            not_null: def
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.nullable && !f.auto_increment)
                .map(|(i, _)| i)
                .collect(),
            primary_key: def.primary_key,
            auto_increment: def.auto_increment_field(),
            shared: shared.clone(),
            wal: wal.clone(),
            published: RwLock::new(Arc::new(Snapshot::default())),
            write: Mutex::new(WriteState {
                pending: Arc::new(Snapshot {
                    seq: 1,
                    ts: entry.checkpoint_ts,
                    segments,
                }),
                pks: HashMap::new(),
                next_rowid: entry.next_rowid,
                next_auto: entry.next_auto.max(1),
                persisted,
                dirty: false,
                checkpoint_ts: entry.checkpoint_ts,
                retired: Vec::new(),
            }),
            maintenance: tokio::sync::Mutex::new(()),
            last_write_ms: AtomicU64::new(now_ms()),
            dropped: AtomicBool::new(false),
            indexes: RwLock::new(def.indexes.clone()),
            index_status: Mutex::new(HashMap::new()),
        };
        // Replay what the segments do not hold yet.
        let mut replayed = 0usize;
        {
            let mut state = data.write.lock();
            for rec in records.iter().filter(|r| r.ts > entry.checkpoint_ts) {
                shared.tso.observe(rec.ts);
                if let Some(batch) = &rec.insert {
                    data.advance_counters(&mut state, batch)?;
                }
                data.apply(&mut state, rec);
                replayed += 1;
            }
            state.dirty = replayed > 0;
            shared.tso.observe(entry.checkpoint_ts);
            // The primary-key index, from the live rows.
            if let Some(pk) = data.primary_key {
                let snap = state.pending.clone();
                for seg in &snap.segments {
                    let cols: Vec<ArrayRef> = match &seg.data {
                        SegmentData::Flushed(_) => pk_columns.remove(&seg.id).unwrap_or_default(),
                        SegmentData::Memory(b) => b.iter().map(|b| b.column(pk).clone()).collect(),
                    };
                    let mut offset = 0;
                    for col in cols {
                        for (i, key) in pk_keys(&col)?.into_iter().enumerate() {
                            let off = offset + i;
                            if let Some(key) = key
                                && !seg.deletes.contains(off)
                                && let Some(rowid) = rowid_at(&seg.rowids, off)
                            {
                                state.pks.insert(key, rowid);
                            }
                        }
                        offset += col.len();
                    }
                }
            }
            *data.published.write() = state.pending.clone();
        }
        if recovering {
            data.remove_unnamed_segments(&entry).await;
        }
        if replayed > 0 || !entry.segments.is_empty() {
            info!(
                collection = %data.name,
                segments = entry.segments.len(),
                wal_records_replayed = replayed,
                rows = data.snapshot().live_rows(),
                "collection recovered"
            );
        }
        Ok(Arc::new(data))
    }

    /// Bit strings must have no bit set past their length: a value of
    /// another `BIT(m)` with the same number of bytes would otherwise be
    /// stored as it is.
    fn check_bits(&self, batch: &RecordBatch) -> Result<()> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            let Some(bits) = crate::vector::udf::bit_length_of(field) else {
                continue;
            };
            let Some(column) = batch.column(i).as_fixed_size_binary_opt() else {
                continue;
            };
            let width = column.value_length() as usize;
            let bad = if width != crate::vector::bits::bytes_for(bits) {
                true
            } else {
                // Fewer than 8 bits past the length, in the last byte.
                let mask = ((1u16 << (width * 8 - bits)) - 1) as u8;
                mask != 0
                    && (0..column.len())
                        .any(|r| column.is_valid(r) && column.value(r)[width - 1] & mask != 0)
            };
            if bad {
                return Err(StorageError::BitLength {
                    field: field.name().clone(),
                    bits,
                });
            }
        }
        Ok(())
    }

    /// The fields (all nullable), the schema INSERT and COPY batches use.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The stored schema: the fields and `_rowid`.
    pub fn full_schema(&self) -> SchemaRef {
        self.full_schema.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current consistent view (every acknowledged write).
    /// The object store the collection's segments are in.
    pub fn io(&self) -> &Arc<ObjectIo> {
        &self.shared.io
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.read().clone()
    }

    fn check_writable(&self) -> Result<()> {
        if self.dropped.load(Ordering::Relaxed) {
            return Err(StorageError::Dropped(self.name.clone()));
        }
        Ok(())
    }

    /// Keep the row-id and auto-increment counters ahead of `batch`.
    fn advance_counters(&self, state: &mut WriteState, batch: &RecordBatch) -> Result<()> {
        if let Some(ids) = batch
            .column_by_name(ROWID)
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
            && let Some(max) = ids.values().iter().max()
        {
            state.next_rowid = state.next_rowid.max(max + 1);
        }
        if let Some(idx) = self.auto_increment {
            for k in pk_keys(batch.column(idx))?.into_iter().flatten() {
                if let PkKey::Int(v) = k {
                    state.next_auto = state.next_auto.max(v.saturating_add(1));
                }
            }
        }
        Ok(())
    }

    /// Apply a logged record to the pending snapshot; returns the number
    /// of rows it deleted.
    fn apply(&self, state: &mut WriteState, rec: &WalRecord) -> usize {
        let mut snap = (*state.pending).clone();
        snap.seq += 1;
        snap.ts = snap.ts.max(rec.ts);
        let mut deleted = 0;
        if rec.truncate {
            deleted += snap.live_rows();
            let freed: usize = snap.segments.iter().map(|s| s.mem_bytes).sum();
            self.shared.release(freed);
            retire(state, &snap.segments);
            snap.segments.clear();
        }
        for &rowid in &rec.deletes {
            if let Some((si, off)) = snap.locate(rowid) {
                let seg = &mut snap.segments[si];
                if Arc::make_mut(&mut seg.deletes).insert(off, rowid, rec.ts) {
                    deleted += 1;
                }
            }
        }
        if let Some(batch) = &rec.insert {
            let n = batch.num_rows();
            let bytes = batch.get_array_memory_size();
            let first = batch
                .column_by_name(ROWID)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
                .and_then(|a| a.values().first().copied())
                .unwrap_or(0);
            let growing = snap
                .segments
                .last()
                .is_some_and(|s| s.state == SegmentState::Growing);
            if !growing {
                snap.segments.push(Segment {
                    id: self.shared.new_segment_id(),
                    state: SegmentState::Growing,
                    data: SegmentData::Memory(Arc::new(Vec::new())),
                    rowids: RowIds::Range {
                        start: first,
                        len: 0,
                    },
                    deletes: Arc::new(Deletes::default()),
                    mem_bytes: 0,
                    max_ts: rec.ts,
                });
            }
            if let Some(seg) = snap.segments.last_mut() {
                let SegmentData::Memory(batches) = &seg.data else {
                    unreachable!("a growing segment is in memory");
                };
                let mut batches = (**batches).clone();
                match batches.last_mut() {
                    Some(last) if last.num_rows() + n <= BATCH_ROWS => {
                        if let Ok(merged) = concat_batches(&self.full_schema, [&*last, batch]) {
                            *last = merged;
                        } else {
                            batches.push(batch.clone());
                        }
                    }
                    _ => batches.push(batch.clone()),
                }
                seg.rowids = match &seg.rowids {
                    RowIds::Range { start, len } if *len == 0 || start + *len as u64 == first => {
                        RowIds::Range {
                            start: if *len == 0 { first } else { *start },
                            len: len + n,
                        }
                    }
                    _ => RowIds::from_batches(&batches),
                };
                seg.data = SegmentData::Memory(Arc::new(batches));
                seg.mem_bytes += bytes;
                seg.max_ts = rec.ts;
                self.shared.reserve(bytes);
            }
        }
        state.pending = Arc::new(snap);
        deleted
    }

    /// Log `rec` and apply it (under the write lock); returns the WAL
    /// sequence number, the snapshot to publish and the rows deleted.
    fn log(&self, state: &mut WriteState, rec: &WalRecord) -> Result<(u64, Arc<Snapshot>, usize)> {
        let frame = rec.encode()?;
        let lsn = self.wal.append(&frame)?;
        state.dirty = true;
        let deleted = self.apply(state, rec);
        Ok((lsn, state.pending.clone(), deleted))
    }

    /// Wait until `lsn` is durable, then publish `snap`.
    async fn durable(&self, lsn: u64, snap: Arc<Snapshot>) -> Result<()> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.sync(lsn))
            .await
            .map_err(|e| StorageError::WalFailed(e.to_string()))??;
        {
            let mut p = self.published.write();
            if p.seq < snap.seq {
                *p = snap;
            }
        }
        self.last_write_ms.store(now_ms(), Ordering::Relaxed);
        self.shared.wake_flusher.notify_one();
        Ok(())
    }

    /// Append rows (in [`Self::schema`]). Assigns server-generated values,
    /// enforces NOT NULL and primary-key uniqueness; all or nothing.
    pub async fn insert(&self, batch: RecordBatch) -> Result<usize> {
        self.insert_with(batch, Conflict::Error).await
    }

    /// Append rows, treating existing primary keys as `conflict` says.
    /// Returns the number of rows inserted or replaced.
    pub async fn insert_with(&self, batch: RecordBatch, conflict: Conflict) -> Result<usize> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        self.shared.wait_for_space().await;
        let (lsn, snap, rows) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let batch = self.fill_auto_increment(&mut state, batch)?;
            for &i in &self.not_null {
                if batch.column(i).null_count() > 0 {
                    return Err(StorageError::NotNull {
                        collection: self.name.clone(),
                        field: self.field_names[i].clone(),
                    });
                }
            }
            self.check_bits(&batch)?;
            let mut keep: Vec<bool> = vec![true; batch.num_rows()];
            let mut replaced = Vec::new();
            let mut new_keys = Vec::new();
            if let Some(pk) = self.primary_key {
                let keys = pk_keys(batch.column(pk))?;
                // Later rows of one statement win over earlier ones (upsert).
                let mut seen: HashMap<PkKey, usize> = HashMap::with_capacity(keys.len());
                for (i, key) in keys.into_iter().enumerate() {
                    let Some(key) = key else {
                        return Err(StorageError::NotNull {
                            collection: self.name.clone(),
                            field: self.field_names[pk].clone(),
                        });
                    };
                    let existing = state.pks.get(&key).copied();
                    let duplicate = seen.get(&key).copied();
                    match (conflict, existing.is_some() || duplicate.is_some()) {
                        (_, false) => {}
                        (Conflict::Error, true) => {
                            return Err(StorageError::DuplicateKey {
                                collection: self.name.clone(),
                                field: self.field_names[pk].clone(),
                                value: key.to_string(),
                            });
                        }
                        (Conflict::Skip, true) => {
                            keep[i] = false;
                            continue;
                        }
                        (Conflict::Replace, true) => {
                            if let Some(j) = duplicate {
                                keep[j] = false;
                            } else if let Some(rowid) = existing {
                                replaced.push(rowid);
                            }
                        }
                    }
                    seen.insert(key.clone(), i);
                    new_keys.push((i, key));
                }
            }
            let batch = if keep.iter().all(|k| *k) {
                batch
            } else {
                arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep.clone()))?
            };
            let n = batch.num_rows();
            if n == 0 {
                return Ok(0);
            }
            let start = state.next_rowid;
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(UInt64Array::from_iter_values(
                start..start + n as u64,
            )));
            let full = RecordBatch::try_new(self.full_schema.clone(), columns)?;
            let rec = WalRecord {
                ts: self.shared.tso.next(),
                truncate: false,
                deletes: replaced,
                insert: Some(full),
            };
            let (lsn, snap, _) = self.log(&mut state, &rec)?;
            state.next_rowid = start + n as u64;
            // Row ids follow the kept rows in order.
            if !new_keys.is_empty() {
                let mut rowid_of = Vec::with_capacity(keep.len());
                let mut next = start;
                for k in &keep {
                    rowid_of.push(next);
                    next += *k as u64;
                }
                for (i, key) in new_keys {
                    if keep[i] {
                        state.pks.insert(key, rowid_of[i]);
                    }
                }
            }
            (lsn, snap, n)
        };
        self.durable(lsn, snap).await?;
        Ok(rows)
    }

    fn fill_auto_increment(
        &self,
        state: &mut WriteState,
        batch: RecordBatch,
    ) -> Result<RecordBatch> {
        let Some(idx) = self.auto_increment else {
            return Ok(batch);
        };
        let col = batch.column(idx);
        if col.null_count() == 0 {
            // Explicit values: keep the generator ahead of them.
            for k in pk_keys(col)?.into_iter().flatten() {
                if let PkKey::Int(v) = k {
                    state.next_auto = state.next_auto.max(v.saturating_add(1));
                }
            }
            return Ok(batch);
        }
        let mut next = state.next_auto;
        let mut assign = |valid: bool, v: i64| {
            if valid {
                v
            } else {
                let id = next;
                next += 1;
                id
            }
        };
        let filled: ArrayRef = match col.data_type() {
            DataType::Int64 => {
                let a = col.as_primitive::<Int64Type>();
                Arc::new(Int64Array::from_iter_values(
                    (0..a.len()).map(|i| assign(a.is_valid(i), a.value(i))),
                ))
            }
            DataType::Int32 => {
                let a = col.as_primitive::<Int32Type>();
                Arc::new(Int32Array::from_iter_values(
                    (0..a.len()).map(|i| assign(a.is_valid(i), a.value(i) as i64) as i32),
                ))
            }
            DataType::Int16 => {
                let a = col.as_primitive::<Int16Type>();
                Arc::new(Int16Array::from_iter_values(
                    (0..a.len()).map(|i| assign(a.is_valid(i), a.value(i) as i64) as i16),
                ))
            }
            other => {
                return Err(StorageError::InvalidBatch(format!(
                    "server-assigned field of type {other}"
                )));
            }
        };
        state.next_auto = next;
        let mut columns = batch.columns().to_vec();
        columns[idx] = filled;
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }

    /// The live rows of the current snapshot for which `predicate` is true,
    /// as (row id, full row batch) pairs.
    async fn matching(
        &self,
        mut predicate: impl FnMut(&RecordBatch) -> Result<BooleanArray> + Send,
    ) -> Result<(Vec<u64>, Vec<RecordBatch>)> {
        let snap = self.snapshot();
        let mut ids = Vec::new();
        let mut rows = Vec::new();
        let n_fields = self.schema.fields().len();
        for chunk in snap.chunks().await? {
            let user = chunk.batch.project(&(0..n_fields).collect::<Vec<_>>())?;
            let user = RecordBatch::try_new(self.schema.clone(), user.columns().to_vec())?;
            let hits = predicate(&user)?;
            let mask: BooleanArray = (0..chunk.batch.num_rows())
                .map(|i| Some(chunk.is_live(i) && hits.is_valid(i) && hits.value(i)))
                .collect();
            if mask.true_count() == 0 {
                continue;
            }
            let picked = arrow::compute::filter_record_batch(&chunk.batch, &mask)?;
            if let Some(r) = picked
                .column_by_name(ROWID)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
            {
                ids.extend(r.values().iter());
            }
            rows.push(picked);
        }
        Ok((ids, rows))
    }

    fn forget_keys(&self, state: &mut WriteState, rows: &[RecordBatch], gone: &HashSet<u64>) {
        let Some(pk) = self.primary_key else { return };
        for b in rows {
            let Ok(keys) = pk_keys(b.column(pk)) else {
                continue;
            };
            let Some(ids) = b
                .column_by_name(ROWID)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
            else {
                continue;
            };
            for (i, key) in keys.into_iter().enumerate() {
                if let Some(key) = key
                    && gone.contains(&ids.value(i))
                    && state.pks.get(&key) == Some(&ids.value(i))
                {
                    state.pks.remove(&key);
                }
            }
        }
    }

    /// Still-live row ids among `ids` in the pending snapshot.
    fn still_live(state: &WriteState, ids: &[u64]) -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|&id| {
                state
                    .pending
                    .locate(id)
                    .is_some_and(|(s, o)| !state.pending.segments[s].deletes.contains(o))
            })
            .collect()
    }

    /// Delete the live rows for which `predicate` is true; returns how many.
    pub async fn delete(
        &self,
        predicate: impl FnMut(&RecordBatch) -> Result<BooleanArray> + Send,
    ) -> Result<usize> {
        let (ids, rows) = self.matching(predicate).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let (lsn, snap, n) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let live = Self::still_live(&state, &ids);
            if live.is_empty() {
                return Ok(0);
            }
            let gone: HashSet<u64> = live.iter().copied().collect();
            let rec = WalRecord {
                ts: self.shared.tso.next(),
                truncate: false,
                deletes: live,
                insert: None,
            };
            let (lsn, snap, n) = self.log(&mut state, &rec)?;
            self.forget_keys(&mut state, &rows, &gone);
            (lsn, snap, n)
        };
        self.durable(lsn, snap).await?;
        Ok(n)
    }

    /// UPDATE: rows matching `predicate` are replaced by `change(rows)` (in
    /// [`Self::schema`]) at one timestamp. Returns the rows updated.
    pub async fn update(
        &self,
        predicate: impl FnMut(&RecordBatch) -> Result<BooleanArray> + Send,
        change: impl Fn(&RecordBatch) -> Result<RecordBatch> + Send,
    ) -> Result<usize> {
        let (ids, rows) = self.matching(predicate).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let n_fields = self.schema.fields().len();
        let mut new_rows = Vec::with_capacity(rows.len());
        for b in &rows {
            let user = b.project(&(0..n_fields).collect::<Vec<_>>())?;
            let user = RecordBatch::try_new(self.schema.clone(), user.columns().to_vec())?;
            new_rows.push(change(&user)?);
        }
        let new_batch = concat_batches(&self.schema, &new_rows)?;
        self.shared.wait_for_space().await;
        let (lsn, snap, n) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let live: HashSet<u64> = Self::still_live(&state, &ids).into_iter().collect();
            let live_ref = &live;
            // Rows deleted meanwhile are not updated.
            let keep: BooleanArray = ids.iter().map(|id| Some(live.contains(id))).collect();
            let new_batch = arrow::compute::filter_record_batch(&new_batch, &keep)?;
            let n = new_batch.num_rows();
            if n == 0 {
                return Ok(0);
            }
            for &i in &self.not_null {
                if new_batch.column(i).null_count() > 0 {
                    return Err(StorageError::NotNull {
                        collection: self.name.clone(),
                        field: self.field_names[i].clone(),
                    });
                }
            }
            self.check_bits(&new_batch)?;
            let mut new_keys = Vec::new();
            if let Some(pk) = self.primary_key {
                let old_keys: HashSet<PkKey> = rows
                    .iter()
                    .flat_map(|b| {
                        let ids = b
                            .column_by_name(ROWID)
                            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
                            .cloned();
                        pk_keys(b.column(pk))
                            .unwrap_or_default()
                            .into_iter()
                            .enumerate()
                            .filter_map(move |(i, k)| {
                                let id = ids.as_ref()?.value(i);
                                if live_ref.contains(&id) { k } else { None }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let mut seen = HashSet::new();
                for key in pk_keys(new_batch.column(pk))? {
                    let Some(key) = key else {
                        return Err(StorageError::NotNull {
                            collection: self.name.clone(),
                            field: self.field_names[pk].clone(),
                        });
                    };
                    let taken = state.pks.contains_key(&key) && !old_keys.contains(&key);
                    if taken || !seen.insert(key.clone()) {
                        return Err(StorageError::DuplicateKey {
                            collection: self.name.clone(),
                            field: self.field_names[pk].clone(),
                            value: key.to_string(),
                        });
                    }
                    new_keys.push(key);
                }
            }
            let start = state.next_rowid;
            let mut columns = new_batch.columns().to_vec();
            columns.push(Arc::new(UInt64Array::from_iter_values(
                start..start + n as u64,
            )));
            let full = RecordBatch::try_new(self.full_schema.clone(), columns)?;
            let deletes: Vec<u64> = ids.iter().copied().filter(|i| live.contains(i)).collect();
            let rec = WalRecord {
                ts: self.shared.tso.next(),
                truncate: false,
                deletes,
                insert: Some(full),
            };
            let (lsn, snap, _) = self.log(&mut state, &rec)?;
            state.next_rowid = start + n as u64;
            self.forget_keys(&mut state, &rows, &live);
            for (j, key) in new_keys.into_iter().enumerate() {
                state.pks.insert(key, start + j as u64);
            }
            (lsn, snap, n)
        };
        self.durable(lsn, snap).await?;
        Ok(n)
    }

    /// The live rows whose primary key is one of `keys`, in the full schema.
    pub async fn rows_by_key(&self, keys: &ArrayRef) -> Result<RecordBatch> {
        let wanted: HashSet<u64> = {
            let state = self.write.lock();
            pk_keys(keys)?
                .into_iter()
                .flatten()
                .filter_map(|k| state.pks.get(&k).copied())
                .collect()
        };
        let snap = self.snapshot();
        let mut out = Vec::new();
        if !wanted.is_empty() {
            for chunk in snap.chunks().await? {
                let Some(ids) = chunk.rowids() else { continue };
                let mask: BooleanArray = (0..chunk.batch.num_rows())
                    .map(|i| Some(chunk.is_live(i) && wanted.contains(&ids.value(i))))
                    .collect();
                if mask.true_count() > 0 {
                    out.push(arrow::compute::filter_record_batch(&chunk.batch, &mask)?);
                }
            }
        }
        Ok(concat_batches(&self.full_schema, &out)?)
    }

    /// Remove every row; returns how many there were.
    pub async fn truncate(&self) -> Result<usize> {
        let (lsn, snap, n) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let rec = WalRecord {
                ts: self.shared.tso.next(),
                truncate: true,
                deletes: Vec::new(),
                insert: None,
            };
            let out = self.log(&mut state, &rec)?;
            state.pks.clear();
            out
        };
        self.durable(lsn, snap).await?;
        Ok(n)
    }

    /// Whether the background flusher should flush now.
    pub(super) fn wants_flush(&self, under_pressure: bool) -> bool {
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

    fn data_path(&self, segment: u64) -> String {
        format!("{}/segments/{segment}/data-0.parquet", self.prefix)
    }

    /// Remove segment directories the manifest does not name: those of a
    /// flush that did not commit, or replaced ones whose removal waited for
    /// readers when the server stopped.
    async fn remove_unnamed_segments(&self, entry: &CollectionManifest) {
        let named: HashSet<String> = entry.segments.iter().map(|m| m.id.to_string()).collect();
        let root = format!("{}/segments/", self.prefix);
        let objects = match self.shared.io.list(&root).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(collection = %self.name, "cannot list segments: {e}");
                return;
            }
        };
        let unnamed: HashSet<&str> = objects
            .iter()
            .filter_map(|o| o.strip_prefix(&root)?.split('/').next())
            .filter(|id| !named.contains(*id))
            .collect();
        for id in unnamed {
            info!(collection = %self.name, segment = id, "removing a segment the manifest does not name");
            self.shared.io.delete_prefix(&format!("{root}{id}")).await;
        }
    }

    fn segment_dir(&self, segment: u64) -> String {
        format!("{}/segments/{segment}", self.prefix)
    }

    async fn write_segment(
        &self,
        id: u64,
        state: SegmentState,
        batches: &[RecordBatch],
        max_ts: u64,
    ) -> Result<SegmentMeta> {
        let path = self.data_path(id);
        let pk_name = self.primary_key.map(|i| self.field_names[i].as_str());
        let bytes = self
            .shared
            .io
            .write_parquet(&path, &self.full_schema, batches, pk_name)
            .await?;
        let rowids = RowIds::from_batches(batches);
        let (mut pk_min, mut pk_max): (Option<PkKey>, Option<PkKey>) = (None, None);
        if let Some(pk) = self.primary_key {
            for b in batches {
                for k in pk_keys(b.column(pk))?.into_iter().flatten() {
                    let lower = match (&pk_min, &k) {
                        (None, _) => true,
                        (Some(PkKey::Int(a)), PkKey::Int(b)) => b < a,
                        (Some(PkKey::Text(a)), PkKey::Text(b)) => b < a,
                        _ => false,
                    };
                    let higher = match (&pk_max, &k) {
                        (None, _) => true,
                        (Some(PkKey::Int(a)), PkKey::Int(b)) => b > a,
                        (Some(PkKey::Text(a)), PkKey::Text(b)) => b > a,
                        _ => false,
                    };
                    if lower {
                        pk_min = Some(k.clone());
                    }
                    if higher {
                        pk_max = Some(k);
                    }
                }
            }
        }
        Ok(SegmentMeta {
            id,
            state,
            rows: rowids.len() as u64,
            bytes,
            data_file: path,
            delta_file: None,
            deleted: 0,
            rowid_min: rowids.min().unwrap_or(0),
            rowid_max: match &rowids {
                RowIds::Range { start, len } => start + (*len as u64).saturating_sub(1),
                RowIds::List(l) => l.last().copied().unwrap_or(0),
            },
            pk_min: pk_min.map(|k| k.json()),
            pk_max: pk_max.map(|k| k.json()),
            max_ts,
            indexes: Default::default(),
        })
    }

    /// Seal the growing segment and write every in-memory segment and every
    /// changed delete log to object storage; commit them in the manifest,
    /// then trim the WAL. Reads see the same rows throughout.
    pub async fn flush(&self) -> Result<()> {
        let _maintenance = self.maintenance.lock().await;
        if self.dropped.load(Ordering::Relaxed) {
            return Ok(());
        }
        // 1. Seal, and capture what to write.
        let (seal_ts, sealed, deltas, next_rowid, next_auto, order) = {
            let mut state = self.write.lock();
            let unflushed = state
                .pending
                .segments
                .iter()
                .any(|s| matches!(s.data, SegmentData::Memory(_)));
            if !state.dirty && !unflushed {
                return Ok(());
            }
            let mut snap = (*state.pending).clone();
            if let Some(last) = snap.segments.last_mut()
                && last.state == SegmentState::Growing
            {
                last.state = SegmentState::Sealed;
            }
            snap.seq += 1;
            let seal_ts = snap.ts;
            if state.dirty {
                self.wal.rotate(seal_ts + 1)?;
            }
            state.dirty = false;
            let sealed: Vec<(u64, Arc<Vec<RecordBatch>>, u64)> = snap
                .segments
                .iter()
                .filter_map(|s| match &s.data {
                    SegmentData::Memory(b) if !b.is_empty() => Some((s.id, b.clone(), s.max_ts)),
                    _ => None,
                })
                .collect();
            let deltas: Vec<(u64, Arc<Deletes>)> = snap
                .segments
                .iter()
                .filter(|s| {
                    s.deletes.count() > 0
                        && state.persisted.get(&s.id).map(|p| p.1) != Some(s.deletes.count())
                })
                .map(|s| (s.id, s.deletes.clone()))
                .collect();
            let order: Vec<u64> = snap.segments.iter().map(|s| s.id).collect();
            let out = (
                seal_ts,
                sealed,
                deltas,
                state.next_rowid,
                state.next_auto,
                order,
            );
            state.pending = Arc::new(snap);
            out
        };
        // 2. Write the segments and delete logs.
        let started = std::time::Instant::now();
        let mut written: HashMap<u64, (SegmentMeta, Arc<Vec<RecordBatch>>)> = HashMap::new();
        for (id, batches, max_ts) in &sealed {
            let meta = self
                .write_segment(*id, SegmentState::Flushed, batches, *max_ts)
                .await?;
            written.insert(*id, (meta, batches.clone()));
        }
        let mut new_deltas: HashMap<u64, (String, usize)> = HashMap::new();
        for (id, deletes) in &deltas {
            let path = format!("{}/deltas/{seal_ts}.parquet", self.segment_dir(*id));
            let schema = Arc::new(Schema::new(vec![
                Field::new(ROWID, DataType::UInt64, false),
                Field::new("ts", DataType::UInt64, false),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from_iter_values(
                        deletes.log.iter().map(|d| d.0),
                    )),
                    Arc::new(UInt64Array::from_iter_values(
                        deletes.log.iter().map(|d| d.1),
                    )),
                ],
            )?;
            self.shared
                .io
                .write_parquet(&path, &schema, &[batch], None)
                .await?;
            new_deltas.insert(*id, (path, deletes.count()));
        }
        // 3. Commit in the manifest.
        let (metas, persisted_after) = {
            let state = self.write.lock();
            let mut persisted = state.persisted.clone();
            persisted.extend(new_deltas.clone());
            let mut metas = Vec::new();
            for id in &order {
                let meta = if let Some((m, _)) = written.get(id) {
                    Some(m.clone())
                } else {
                    state
                        .pending
                        .segments
                        .iter()
                        .find(|s| s.id == *id)
                        .and_then(|s| match &s.data {
                            SegmentData::Flushed(f) => Some(f.current_meta()),
                            SegmentData::Memory(_) => None,
                        })
                };
                if let Some(mut meta) = meta {
                    if let Some((file, count)) = persisted.get(id) {
                        meta.delta_file = Some(file.clone());
                        meta.deleted = *count as u64;
                    }
                    metas.push(meta);
                }
            }
            (metas, persisted)
        };
        let previous = self
            .commit_manifest(CollectionManifest {
                checkpoint_ts: seal_ts,
                next_rowid,
                next_auto,
                segments: metas.clone(),
            })
            .await?;
        // 4. Swap the in-memory segments for the flushed ones.
        {
            let mut state = self.write.lock();
            let mut freed = 0;
            let flushed: HashMap<u64, Arc<FlushedSegment>> = written
                .into_iter()
                .map(|(id, (meta, rows))| {
                    (
                        id,
                        Arc::new(FlushedSegment::with_rows(
                            meta,
                            self.shared.io.clone(),
                            rows,
                        )),
                    )
                })
                .collect();
            let swap = |snap: &Snapshot, count_freed: bool, freed: &mut usize| -> Snapshot {
                let mut snap = snap.clone();
                for seg in snap.segments.iter_mut() {
                    if let Some(f) = flushed.get(&seg.id) {
                        if count_freed {
                            *freed += seg.mem_bytes;
                        }
                        seg.data = SegmentData::Flushed(f.clone());
                        seg.state = SegmentState::Flushed;
                        seg.mem_bytes = 0;
                    }
                }
                snap
            };
            let mut pending = swap(&state.pending, true, &mut freed);
            pending.seq += 1;
            state.pending = Arc::new(pending);
            {
                let mut published = self.published.write();
                let mut ignored = 0;
                *published = Arc::new(swap(&published, false, &mut ignored));
            }
            state.persisted = persisted_after;
            state.checkpoint_ts = seal_ts;
            self.shared.release(freed);
            // Flushed rows are read back from object storage when needed.
            for f in flushed.values() {
                f.forget_rows();
            }
        }
        // 5. Trim the WAL and remove what the new manifest no longer names.
        self.wal.trim(seal_ts)?;
        if let Some(prev) = previous {
            self.remove_obsolete(&prev, &metas).await;
        }
        self.shared.wake_indexer.notify_one();
        debug!(
            collection = %self.name,
            segments = sealed.len(),
            deltas = deltas.len(),
            ms = started.elapsed().as_millis() as u64,
            "flushed"
        );
        Ok(())
    }

    /// Write `entry` as this collection's state in a new manifest version;
    /// returns the entry it replaced.
    async fn commit_manifest(
        &self,
        entry: CollectionManifest,
    ) -> Result<Option<CollectionManifest>> {
        let id = self.id;
        let next_segment_id = self.shared.peek_segment_id();
        self.shared
            .manifest
            .commit(move |m| {
                m.next_segment_id = m.next_segment_id.max(next_segment_id);
                m.collections.insert(id, entry)
            })
            .await
    }

    async fn remove_obsolete(&self, previous: &CollectionManifest, current: &[SegmentMeta]) {
        let live: HashMap<u64, &SegmentMeta> = current.iter().map(|m| (m.id, m)).collect();
        let retired: HashMap<u64, Weak<FlushedSegment>> = {
            let mut state = self.write.lock();
            state.retired.retain(|w| w.strong_count() > 0);
            state
                .retired
                .iter()
                .filter_map(|w| w.upgrade().map(|f| (f.meta.id, w.clone())))
                .collect()
        };
        for old in &previous.segments {
            match live.get(&old.id) {
                None => {
                    let dir = self.segment_dir(old.id);
                    match retired.get(&old.id) {
                        // Queries that began before the new manifest may
                        // still read the files: they go when those finish.
                        Some(held) => {
                            let held = held.clone();
                            let io = self.shared.io.clone();
                            tokio::spawn(async move {
                                while held.strong_count() > 0 {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                io.delete_prefix(&dir).await;
                            });
                        }
                        None => self.shared.io.delete_prefix(&dir).await,
                    }
                }
                Some(now) => {
                    if let Some(d) = &old.delta_file
                        && now.delta_file.as_ref() != Some(d)
                    {
                        self.shared.io.delete(d).await;
                    }
                }
            }
        }
    }

    /// Merge small flushed segments (toward `segment_target_size`) and drop
    /// deleted rows. Returns the number of segments merged away.
    pub async fn compact(&self) -> Result<usize> {
        self.flush().await?;
        let _maintenance = self.maintenance.lock().await;
        let target = self.shared.config.segment_target_size as u64;
        let snap = self.write.lock().pending.clone();
        // Runs of adjacent flushed segments worth merging: small ones, or
        // ones with many deleted rows, up to the target size.
        let worth = |run: &[Segment]| run.len() > 1 || run.iter().any(|s| s.deletes.count() > 0);
        let mut groups: Vec<Vec<Segment>> = Vec::new();
        let mut run: Vec<Segment> = Vec::new();
        let mut run_bytes = 0u64;
        for seg in &snap.segments {
            let flushed = matches!(seg.data, SegmentData::Flushed(_));
            let small = seg.file_bytes() < target / 2;
            let holey = seg.deletes.count() * 5 > seg.rows();
            let candidate = flushed && (small || holey);
            if !candidate || run_bytes + seg.file_bytes() > target {
                let done = std::mem::take(&mut run);
                if worth(&done) {
                    groups.push(done);
                }
                run_bytes = 0;
            }
            if candidate {
                run_bytes += seg.file_bytes();
                run.push(seg.clone());
            }
        }
        if worth(&run) {
            groups.push(run);
        }
        if groups.is_empty() {
            return Ok(0);
        }
        let mut merged_away = 0;
        for group in groups {
            let mut batches = Vec::new();
            let mut max_ts = 0;
            for seg in &group {
                max_ts = max_ts.max(seg.max_ts);
                for chunk in seg.chunks().await? {
                    let b = chunk.live_batch()?;
                    if b.num_rows() > 0 {
                        batches.push(b);
                    }
                }
            }
            let ids: HashSet<u64> = group.iter().map(|s| s.id).collect();
            if batches.is_empty() {
                // Every row was deleted: the segments just go.
                self.replace_segments(&ids, None).await?;
                merged_away += group.len();
                continue;
            }
            let merged = concat_batches(&self.full_schema, &batches)?;
            let mut parts = Vec::new();
            let mut at = 0;
            while at < merged.num_rows() {
                let len = BATCH_ROWS.min(merged.num_rows() - at);
                parts.push(merged.slice(at, len));
                at += len;
            }
            let id = self.shared.new_segment_id();
            let meta = self
                .write_segment(id, SegmentState::Compacted, &parts, max_ts)
                .await?;
            let rowids = RowIds::from_batches(&parts);
            let seg = Segment {
                id,
                state: SegmentState::Compacted,
                data: SegmentData::Flushed(Arc::new(FlushedSegment::new(
                    meta,
                    self.shared.io.clone(),
                ))),
                rowids,
                deletes: Arc::new(Deletes::default()),
                mem_bytes: 0,
                max_ts,
            };
            self.replace_segments(&ids, Some(seg)).await?;
            merged_away += group.len().saturating_sub(1);
        }
        info!(collection = %self.name, merged_away, "compacted");
        Ok(merged_away)
    }

    /// Put `new` in place of the segments `old` (carrying over deletes made
    /// since it was built) and commit the manifest.
    async fn replace_segments(&self, old: &HashSet<u64>, new: Option<Segment>) -> Result<()> {
        let (metas, checkpoint, next_rowid, next_auto) = {
            let mut state = self.write.lock();
            let mut new = new;
            if let Some(seg) = new.as_mut() {
                let mut carried = Deletes::default();
                for s in state
                    .pending
                    .segments
                    .iter()
                    .filter(|s| old.contains(&s.id))
                {
                    for &(rowid, ts) in &s.deletes.log {
                        if let Some(off) = seg.rowids.offset_of(rowid) {
                            carried.insert(off, rowid, ts);
                        }
                    }
                }
                seg.deletes = Arc::new(carried);
            }
            let gone: Vec<Segment> = state
                .pending
                .segments
                .iter()
                .filter(|s| old.contains(&s.id))
                .cloned()
                .collect();
            retire(&mut state, &gone);
            let swap = |snap: &Snapshot| -> Snapshot {
                let mut snap = snap.clone();
                let at = snap.segments.iter().position(|s| old.contains(&s.id));
                snap.segments.retain(|s| !old.contains(&s.id));
                if let (Some(at), Some(seg)) = (at, new.clone()) {
                    snap.segments.insert(at.min(snap.segments.len()), seg);
                }
                snap
            };
            let mut pending = swap(&state.pending);
            pending.seq += 1;
            state.pending = Arc::new(pending);
            {
                let mut published = self.published.write();
                *published = Arc::new(swap(&published));
            }
            for id in old {
                state.persisted.remove(id);
            }
            // Deletes carried over are persisted by the next flush.
            state.dirty |= new.as_ref().is_some_and(|s| s.deletes.count() > 0);
            let metas: Vec<SegmentMeta> = state
                .pending
                .segments
                .iter()
                .filter_map(|s| match &s.data {
                    SegmentData::Flushed(f) => {
                        let mut m = f.current_meta();
                        if let Some((file, count)) = state.persisted.get(&s.id) {
                            m.delta_file = Some(file.clone());
                            m.deleted = *count as u64;
                        }
                        Some(m)
                    }
                    SegmentData::Memory(_) => None,
                })
                .collect();
            (
                metas,
                state.checkpoint_ts,
                state.next_rowid,
                state.next_auto,
            )
        };
        let previous = self
            .commit_manifest(CollectionManifest {
                checkpoint_ts: checkpoint,
                next_rowid,
                next_auto,
                segments: metas.clone(),
            })
            .await?;
        if let Some(prev) = previous {
            self.remove_obsolete(&prev, &metas).await;
        }
        self.shared.wake_indexer.notify_one();
        Ok(())
    }

    /// Number of flushed segments smaller than half the target size.
    pub(super) fn small_segments(&self) -> usize {
        let target = self.shared.config.segment_target_size as u64;
        self.snapshot()
            .segments
            .iter()
            .filter(|s| matches!(s.data, SegmentData::Flushed(_)) && s.file_bytes() < target / 2)
            .count()
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
            tracing::warn!(collection = %self.name, "cannot remove WAL: {e}");
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

    /// RELEASE COLLECTION: drop the flushed rows held in memory.
    pub fn release(&self) {
        for s in &self.snapshot().segments {
            if let SegmentData::Flushed(f) = &s.data {
                f.forget_rows();
            }
        }
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

/// Note the flushed ones among `segments`, which leave the snapshot.
fn retire(state: &mut WriteState, segments: &[Segment]) {
    for s in segments {
        if let SegmentData::Flushed(f) = &s.data {
            state.retired.push(Arc::downgrade(f));
        }
    }
}

fn rowid_at(rowids: &RowIds, offset: usize) -> Option<u64> {
    match rowids {
        RowIds::Range { start, len } => (offset < *len).then(|| start + offset as u64),
        RowIds::List(l) => l.get(offset).copied(),
    }
}

/// How long the flusher sleeps between checks.
pub(super) const FLUSH_TICK: Duration = Duration::from_millis(200);

/// The vectors of `field` in `batches`, row-major (zeros for NULL).
fn vectors_of(batches: &[RecordBatch], field: usize, dim: usize) -> Result<Vec<f32>> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut out = Vec::with_capacity(rows * dim);
    for b in batches {
        let list = b.column(field).as_fixed_size_list_opt().ok_or_else(|| {
            StorageError::InvalidBatch("an indexed column is not a vector".into())
        })?;
        let values = list
            .values()
            .as_primitive_opt::<arrow::datatypes::Float32Type>()
            .ok_or_else(|| StorageError::InvalidBatch("vector values are not float4".into()))?
            .values();
        let base = list.offset() * dim;
        for i in 0..list.len() {
            if list.is_null(i) {
                out.extend(std::iter::repeat_n(0.0, dim));
            } else {
                out.extend_from_slice(&values[base + i * dim..base + (i + 1) * dim]);
            }
        }
    }
    Ok(out)
}

/// The bit strings of `field` in `batches`, packed row after row (zeros
/// for NULL).
fn bits_of(batches: &[RecordBatch], field: usize, bits: usize) -> Result<Vec<u8>> {
    let width = crate::vector::bits::bytes_for(bits).max(1);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut out = Vec::with_capacity(rows * width);
    for b in batches {
        let column = b.column(field).as_fixed_size_binary_opt().ok_or_else(|| {
            StorageError::InvalidBatch("an indexed column is not a bit string".into())
        })?;
        for i in 0..column.len() {
            if column.is_null(i) || column.value_length() as usize != width {
                out.extend(std::iter::repeat_n(0u8, width));
            } else {
                out.extend_from_slice(column.value(i));
            }
        }
    }
    Ok(out)
}

impl CollectionData {
    /// Replace the index definitions (after CREATE/DROP INDEX).
    pub fn set_indexes(&self, defs: Vec<IndexDef>) {
        let names: HashSet<String> = defs.iter().map(|d| d.name.clone()).collect();
        *self.indexes.write() = defs;
        self.index_status.lock().retain(|n, _| names.contains(n));
        self.shared.wake_indexer.notify_one();
    }

    pub fn index_defs(&self) -> Vec<IndexDef> {
        self.indexes.read().clone()
    }

    fn index_path(&self, segment: u64, name: &str) -> String {
        format!("{}/index/{name}.faiss", self.segment_dir(segment))
    }

    /// Build or load one missing segment index; `true` if there was one.
    pub async fn index_step(&self) -> Result<bool> {
        if self.dropped.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let defs = self.index_defs();
        if defs.is_empty() {
            return Ok(false);
        }
        let snap = self.snapshot();
        for seg in &snap.segments {
            let SegmentData::Flushed(f) = &seg.data else {
                continue;
            };
            for def in &defs {
                if f.index(&def.name).is_some()
                    || self
                        .index_status
                        .lock()
                        .get(&def.name)
                        .is_some_and(|s| s.failed_segments.contains(&seg.id))
                {
                    continue;
                }
                self.load_or_build(seg.id, f, def).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn load_or_build(
        &self,
        segment: u64,
        f: &Arc<FlushedSegment>,
        def: &IndexDef,
    ) -> Result<()> {
        let registered = f.index_files.lock().get(&def.name).cloned();
        if let Some(file) = registered {
            let bytes = self.shared.io.get(&file.path).await;
            let spec = def.spec.clone();
            let loaded = match bytes {
                Ok(bytes) => {
                    tokio::task::spawn_blocking(move || crate::vector::index::load(&spec, &bytes))
                        .await
                        .map_err(|e| StorageError::Corrupt(e.to_string()))?
                        .map_err(|e| e.to_string())
                        .and_then(|i| {
                            if i.len() as u64 == f.meta.rows {
                                Ok(i)
                            } else {
                                Err(format!(
                                    "it holds {} rows, the segment {}",
                                    i.len(),
                                    f.meta.rows
                                ))
                            }
                        })
                }
                Err(e) => Err(e.to_string()),
            };
            match loaded {
                Ok(index) => {
                    f.indexes.write().insert(
                        def.name.clone(),
                        LoadedIndex {
                            index: Arc::from(index),
                        },
                    );
                    self.index_status
                        .lock()
                        .entry(def.name.clone())
                        .or_default()
                        .loaded += 1;
                    info!(collection = %self.name, index = %def.name, segment, "index loaded from {}", file.path);
                    return Ok(());
                }
                Err(why) => {
                    tracing::warn!(collection = %self.name, index = %def.name, segment, "index file {} is unusable ({why}): rebuilding it", file.path);
                }
            }
        }
        // Rows with a NULL vector are indexed as zeros; searches never
        // return them (AnnSearchExec leaves them out of what may pass).
        let batches = f.batches().await?;
        let vectors = if def.spec.method.is_binary() {
            crate::vector::index::IndexData::Bits(bits_of(&batches, def.field, def.spec.dim)?)
        } else {
            crate::vector::index::IndexData::Vectors(vectors_of(&batches, def.field, def.spec.dim)?)
        };
        drop(batches);
        let spec = def.spec.clone();
        let started = std::time::Instant::now();
        let threads = self.shared.config.index_build_threads;
        let built = tokio::task::spawn_blocking(move || {
            crate::vector::index::set_build_threads(threads);
            let index = crate::vector::index::build_any(&spec, vectors)?;
            let bytes = index.serialize()?;
            Ok::<_, crate::vector::index::IndexError>((index, bytes))
        })
        .await
        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let (index, bytes) = match built {
            Ok(b) => b,
            Err(e) => {
                let mut status = self.index_status.lock();
                let st = status.entry(def.name.clone()).or_default();
                st.failed = Some(e.to_string());
                st.failed_segments.insert(segment);
                return Err(e.into());
            }
        };
        let build_ms = started.elapsed().as_millis() as u64;
        if !self.index_defs().iter().any(|d| d == def) {
            // Dropped (or replaced) while it was being built.
            return Ok(());
        }
        let path = self.index_path(segment, &def.name);
        let size = bytes.len() as u64;
        self.shared.io.put(&path, bytes, false).await?;
        f.index_files.lock().insert(
            def.name.clone(),
            IndexFile {
                path: path.clone(),
                rows: index.len() as u64,
                bytes: size,
                build_ms,
            },
        );
        f.indexes.write().insert(
            def.name.clone(),
            LoadedIndex {
                index: Arc::from(index),
            },
        );
        {
            let mut status = self.index_status.lock();
            let st = status.entry(def.name.clone()).or_default();
            st.build_ms += build_ms;
            st.built += 1;
        }
        self.commit_index_files().await?;
        info!(collection = %self.name, index = %def.name, segment, rows = f.meta.rows, ms = build_ms, "index built");
        Ok(())
    }

    /// Record the index files of every flushed segment in the manifest.
    async fn commit_index_files(&self) -> Result<()> {
        let _maintenance = self.maintenance.lock().await;
        let snap = self.write.lock().pending.clone();
        let files: HashMap<u64, std::collections::BTreeMap<String, IndexFile>> = snap
            .segments
            .iter()
            .filter_map(|s| match &s.data {
                SegmentData::Flushed(f) => Some((s.id, f.index_files.lock().clone())),
                SegmentData::Memory(_) => None,
            })
            .collect();
        let id = self.id;
        self.shared
            .manifest
            .commit(move |m| {
                if let Some(entry) = m.collections.get_mut(&id) {
                    for meta in entry.segments.iter_mut() {
                        if let Some(f) = files.get(&meta.id) {
                            meta.indexes = f.clone();
                        }
                    }
                }
            })
            .await
    }

    /// Forget index `name` everywhere and delete its files (DROP INDEX,
    /// or before a REINDEX).
    pub async fn remove_index_files(&self, name: &str) -> Result<()> {
        let snap = self.snapshot();
        let mut paths = Vec::new();
        for seg in &snap.segments {
            if let SegmentData::Flushed(f) = &seg.data {
                f.indexes.write().remove(name);
                if let Some(file) = f.index_files.lock().remove(name) {
                    paths.push(file.path);
                }
            }
        }
        self.index_status.lock().remove(name);
        self.commit_index_files().await?;
        for p in paths {
            self.shared.io.delete(&p).await;
        }
        Ok(())
    }

    /// Whether every flushed segment has index `name` (or failed it).
    pub fn index_ready(&self, name: &str) -> bool {
        let failed = self
            .index_status
            .lock()
            .get(name)
            .map(|s| s.failed_segments.clone())
            .unwrap_or_default();
        self.snapshot().segments.iter().all(|s| match &s.data {
            SegmentData::Flushed(f) => f.index(name).is_some() || failed.contains(&s.id),
            SegmentData::Memory(_) => true,
        })
    }

    /// Wait until index `name` covers every sealed segment.
    pub async fn wait_for_index(&self, name: &str) -> Result<()> {
        loop {
            let progress = self.shared.index_progress.notified();
            if self.index_ready(name) {
                let failed = self
                    .index_status
                    .lock()
                    .get(name)
                    .and_then(|s| s.failed.clone());
                return match failed {
                    Some(e) => Err(StorageError::Index(
                        crate::vector::index::IndexError::Faiss(e),
                    )),
                    None => Ok(()),
                };
            }
            if self.dropped.load(Ordering::SeqCst) {
                return Err(StorageError::Dropped(self.name.clone()));
            }
            self.shared.wake_indexer.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(200), progress).await;
        }
    }

    /// SHOW INDEXES.
    pub fn index_reports(&self) -> Vec<IndexReport> {
        let snap = self.snapshot();
        let total: u64 = snap.segments.iter().map(|s| s.rows() as u64).sum();
        self.index_defs()
            .into_iter()
            .map(|def| {
                let indexed: u64 = snap
                    .segments
                    .iter()
                    .filter_map(|s| match &s.data {
                        SegmentData::Flushed(f) => f.index(&def.name).map(|_| s.rows() as u64),
                        SegmentData::Memory(_) => None,
                    })
                    .sum();
                let status = self
                    .index_status
                    .lock()
                    .get(&def.name)
                    .cloned()
                    .unwrap_or_default();
                // Build time of the files in use (kept across restarts).
                let build_ms: u64 = snap
                    .segments
                    .iter()
                    .filter_map(|s| match &s.data {
                        SegmentData::Flushed(f) => {
                            f.index_files.lock().get(&def.name).map(|i| i.build_ms)
                        }
                        SegmentData::Memory(_) => None,
                    })
                    .sum();
                let ready = self.index_ready(&def.name);
                let state = match (&status.failed, ready) {
                    (Some(_), _) => "failed",
                    (None, true) => "ready",
                    (None, false) => "building",
                };
                IndexReport {
                    rows_indexed: indexed,
                    rows_total: total,
                    state,
                    build_ms,
                    error: status.failed,
                    def,
                }
            })
            .collect()
    }

    /// Builds and loads so far of index `name` (for tests and logs).
    pub fn index_counts(&self, name: &str) -> (u64, u64) {
        self.index_status
            .lock()
            .get(name)
            .map(|s| (s.built, s.loaded))
            .unwrap_or((0, 0))
    }
}
