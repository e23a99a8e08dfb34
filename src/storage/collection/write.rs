//! The write path of one collection. Every change a statement makes
//! (INSERT, COPY, UPSERT, ON CONFLICT, UPDATE, DELETE, TRUNCATE) is one
//! [`Mutation`] applied by [`CollectionData::mutate`]: its rows are validated
//! (types and vector dimensions, NOT NULL, bit lengths, primary keys), it is
//! given a timestamp, logged to the WAL and applied to the pending snapshot
//! under one lock, then published once the WAL is durable.

use super::*;
use quiver_common::interrupt::Interrupt;

/// Which rows a DELETE or UPDATE acts on: true for each row to change.
pub type RowFilter = Box<dyn FnMut(&RecordBatch) -> Result<BooleanArray> + Send>;

/// An UPDATE's new rows (in [`CollectionData::schema`]) for the rows it
/// matched (in the same schema).
pub type RowChange = Box<dyn Fn(&RecordBatch) -> Result<RecordBatch> + Send>;

/// One statement's change to a collection's rows.
pub enum Mutation {
    /// Rows in [`CollectionData::schema`] (INSERT VALUES or SELECT, COPY,
    /// UPSERT, INSERT ... ON CONFLICT); `on_conflict` says what an existing
    /// primary key means. All or nothing.
    Insert {
        rows: RecordBatch,
        on_conflict: Conflict,
    },
    /// DELETE: the live rows `filter` selects.
    Delete { filter: RowFilter },
    /// UPDATE: the live rows `filter` selects are replaced by `change` of
    /// them, at one timestamp.
    Update {
        filter: RowFilter,
        change: RowChange,
    },
    /// TRUNCATE: every row.
    Truncate,
}

impl Mutation {
    /// INSERT: rows whose primary key exists are an error.
    pub fn insert(rows: RecordBatch) -> Mutation {
        Mutation::Insert {
            rows,
            on_conflict: Conflict::Error,
        }
    }
}

impl CollectionData {
    /// Apply one statement's change: the single entry point of every write.
    /// Returns the rows inserted, replaced, updated or deleted.
    pub async fn mutate(&self, mutation: Mutation) -> Result<usize> {
        Ok(self.apply_mutation(mutation, false, None).await?.0)
    }

    /// [`Self::mutate`] (or, with `returning`, [`Self::mutate_returning`])
    /// whose wait for the collection's lock `stop` can end.
    pub async fn mutate_stoppable(
        &self,
        mutation: Mutation,
        returning: bool,
        stop: Option<&Interrupt>,
    ) -> Result<(usize, Option<RecordBatch>)> {
        self.apply_mutation(mutation, returning, stop).await
    }

    /// Serialise a statement that reads rows and writes from them with the
    /// others of this collection and with the transactions that changed
    /// rows of it (the collection's lock, `txn.rs`); UPDATE, DELETE and
    /// TRUNCATE take it themselves.
    pub async fn read_modify_write(
        &self,
        stop: Option<&Interrupt>,
    ) -> Result<crate::txn::StatementLock> {
        crate::txn::StatementLock::take(&self.shared.locks, self.id, &self.name(), stop).await
    }

    /// [`Self::mutate`], also returning the rows written (inserted, or the
    /// new versions of updated rows) or deleted, in [`Self::schema`]: what
    /// a `RETURNING` clause reads.
    pub async fn mutate_returning(&self, mutation: Mutation) -> Result<(usize, RecordBatch)> {
        let (n, rows) = self.apply_mutation(mutation, true, None).await?;
        Ok((
            n,
            rows.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone())),
        ))
    }

    async fn apply_mutation(
        &self,
        mutation: Mutation,
        returning: bool,
        stop: Option<&Interrupt>,
    ) -> Result<(usize, Option<RecordBatch>)> {
        match mutation {
            Mutation::Insert { rows, on_conflict } => {
                self.insert_rows(rows, on_conflict, returning).await
            }
            Mutation::Delete { filter } => {
                let _serial = self.read_modify_write(stop).await?;
                self.delete_rows(filter, returning).await
            }
            Mutation::Update { filter, change } => {
                let _serial = self.read_modify_write(stop).await?;
                self.update_rows(filter, change, returning).await
            }
            Mutation::Truncate => {
                let _serial = self.read_modify_write(stop).await?;
                Ok((self.truncate_rows().await?, None))
            }
        }
    }

    /// `batch` with its uuids in the canonical text, then checked as
    /// [`Self::validate`] checks it.
    pub(super) fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let mut batch = batch;
        for &i in &self.uuid {
            let Some(values) = batch.column(i).as_string_opt::<i32>() else {
                continue;
            };
            if values
                .iter()
                .flatten()
                .all(quiver_common::uuid::is_canonical)
            {
                continue;
            }
            let mut out =
                arrow::array::StringBuilder::with_capacity(values.len(), values.len() * 36);
            for v in values.iter() {
                match v {
                    None => out.append_null(),
                    Some(v) => out.append_value(
                        quiver_common::uuid::canonical(v)
                            .ok_or_else(|| StorageError::InvalidUuid(v.to_string()))?,
                    ),
                }
            }
            let mut columns = batch.columns().to_vec();
            columns[i] = Arc::new(out.finish());
            batch = RecordBatch::try_new(batch.schema(), columns)?;
        }
        self.validate(&batch)?;
        Ok(batch)
    }

    /// What every new row must satisfy before it is logged: the schema's
    /// types (a vector's dimension among them), NOT NULL and bit lengths.
    /// The primary key is checked against the key index by the caller.
    pub(super) fn validate(&self, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != self.schema.fields().len() {
            return Err(StorageError::InvalidBatch(format!(
                "{} columns for the {} fields of \"{}\"",
                batch.num_columns(),
                self.schema.fields().len(),
                self.name()
            )));
        }
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            match (field.data_type(), column.data_type()) {
                (DataType::FixedSizeList(_, dim), DataType::FixedSizeList(_, got))
                    if dim != got =>
                {
                    return Err(StorageError::Vector(VectorError::DimensionMismatch {
                        expected: *dim as usize,
                        actual: *got as usize,
                    }));
                }
                (want, got) if !want.equals_datatype(got) => {
                    return Err(StorageError::InvalidBatch(format!(
                        "column \"{}\" is {got}, not {want}",
                        field.name()
                    )));
                }
                _ => {}
            }
        }
        for &i in &self.not_null {
            if batch.column(i).null_count() > 0 {
                return Err(StorageError::NotNull {
                    collection: self.name(),
                    field: self.field_names[i].clone(),
                });
            }
        }
        for &i in &self.json {
            let Some(values) = batch.column(i).as_string_opt::<i32>() else {
                continue;
            };
            for v in values.iter().flatten() {
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(v) {
                    return Err(StorageError::InvalidJson {
                        field: self.field_names[i].clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        self.check_bits(batch)
    }

    /// Bit strings must have no bit set past their length: a value of
    /// another `BIT(m)` with the same number of bytes would otherwise be
    /// stored as it is.
    pub(super) fn check_bits(&self, batch: &RecordBatch) -> Result<()> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            let Some(bits) = quiver_vector::column::bit_length_of(field) else {
                continue;
            };
            let Some(column) = batch.column(i).as_fixed_size_binary_opt() else {
                continue;
            };
            let width = column.value_length() as usize;
            let bad = if width != quiver_vector::bits::bytes_for(bits) {
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

    /// 23505 for `key` of the primary-key field `pk`.
    pub(super) fn duplicate_key(&self, pk: usize, key: &PkKey) -> StorageError {
        StorageError::DuplicateKey {
            collection: self.name(),
            field: self.field_names[pk].clone(),
            value: key.to_string(),
        }
    }

    /// 23502 for a NULL primary key.
    pub(super) fn null_key(&self, pk: usize) -> StorageError {
        StorageError::NotNull {
            collection: self.name(),
            field: self.field_names[pk].clone(),
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.dropped.load(Ordering::Relaxed) {
            return Err(StorageError::Dropped(self.name()));
        }
        Ok(())
    }

    /// Keep the row-id and auto-increment counters ahead of `batch`.
    pub(super) fn advance_counters(
        &self,
        state: &mut WriteState,
        batch: &RecordBatch,
    ) -> Result<()> {
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

    /// Keep the row-id counter ahead of an attached segment.
    /// (Server-assigned values were taken from `next_auto` when the rows
    /// were staged; recovery reads them back from the files.)
    pub(super) fn advance_past(&self, state: &mut WriteState, meta: &SegmentMeta) {
        if meta.rows > 0 {
            state.next_rowid = state.next_rowid.max(meta.rowid_max + 1);
        }
    }

    /// Apply a logged record to the pending snapshot; returns the number
    /// of rows it deleted.
    pub(super) fn apply(&self, state: &mut WriteState, rec: &WalRecord) -> usize {
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
        for meta in &rec.attach {
            // Replayed after a flush that already named it.
            if snap.segments.iter().any(|s| s.id == meta.id) {
                continue;
            }
            self.shared.observe_segment_id(meta.id);
            let seg = Segment {
                id: meta.id,
                state: SegmentState::Flushed,
                data: SegmentData::Flushed(Arc::new(FlushedSegment::new(
                    meta.clone(),
                    self.shared.io.clone(),
                ))),
                rowids: RowIds::Range {
                    start: meta.rowid_min,
                    len: meta.rows as usize,
                },
                deletes: Arc::new(Deletes::default()),
                mem_bytes: 0,
                max_ts: rec.ts,
            };
            // Before the growing segment, which later inserts extend.
            let at = match snap.segments.last() {
                Some(s) if s.state == SegmentState::Growing => snap.segments.len() - 1,
                _ => snap.segments.len(),
            };
            snap.segments.insert(at, seg);
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

    /// Give a change its timestamp, log it and apply it (under the write
    /// lock); returns the WAL sequence number, the snapshot to publish and
    /// the rows deleted.
    pub(super) fn log(
        &self,
        state: &mut WriteState,
        truncate: bool,
        deletes: Vec<u64>,
        insert: Option<RecordBatch>,
    ) -> Result<(u64, Arc<Snapshot>, usize)> {
        self.log_record(
            state,
            WalRecord {
                truncate,
                deletes,
                insert,
                ..WalRecord::default()
            },
        )
    }

    /// [`Self::log`] of a whole record (its timestamp is given here).
    pub(super) fn log_record(
        &self,
        state: &mut WriteState,
        mut rec: WalRecord,
    ) -> Result<(u64, Arc<Snapshot>, usize)> {
        rec.ts = self.shared.tso.next();
        for meta in &mut rec.attach {
            meta.max_ts = rec.ts;
        }
        let mut frame = self.shared.take_frame();
        let appended = rec
            .encode_into(&mut frame)
            .and_then(|()| self.wal.append(&frame));
        self.shared.give_frame(frame);
        let lsn = appended?;
        state.dirty = true;
        let deleted = self.apply(state, &rec);
        Ok((lsn, state.pending.clone(), deleted))
    }

    /// Wait until `lsn` is durable, then publish `snap`.
    pub(super) async fn durable(&self, lsn: u64, snap: Arc<Snapshot>) -> Result<()> {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.sync(lsn))
            .await
            .map_err(|e| StorageError::WalFailed(e.to_string()))??;
        self.publish(snap);
        self.shared.wake_flusher.notify_one();
        Ok(())
    }

    /// Append rows, treating existing primary keys as `conflict` says.
    /// Assigns server-generated values. Returns the number of rows inserted
    /// or replaced.
    pub(super) async fn insert_rows(
        &self,
        batch: RecordBatch,
        conflict: Conflict,
        returning: bool,
    ) -> Result<(usize, Option<RecordBatch>)> {
        if batch.num_rows() == 0 {
            return Ok((0, None));
        }
        self.shared.wait_for_space().await?;
        let (lsn, snap, rows) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let batch = self.fill_auto_increment(&mut state, batch)?;
            let batch = self.conform(batch)?;
            let mut keep: Vec<bool> = vec![true; batch.num_rows()];
            let mut replaced = Vec::new();
            let mut new_keys = Vec::new();
            if let Some(pk) = self.primary_key {
                let keys = pk_keys(batch.column(pk))?;
                // Later rows of one statement win over earlier ones (upsert).
                let mut seen: HashMap<PkKey, usize> = HashMap::with_capacity(keys.len());
                for (i, key) in keys.into_iter().enumerate() {
                    let Some(key) = key else {
                        return Err(self.null_key(pk));
                    };
                    let existing = state.pks.get(&key).copied();
                    // One lookup: a skipped row's index in `seen` is only
                    // ever tested for presence.
                    let duplicate = seen.insert(key.clone(), i);
                    match (conflict, existing.is_some() || duplicate.is_some()) {
                        (_, false) => {}
                        (Conflict::Error, true) => {
                            return Err(self.duplicate_key(pk, &key));
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
                return Ok((0, None));
            }
            let written = returning.then(|| batch.clone());
            let start = state.next_rowid;
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(UInt64Array::from_iter_values(
                start..start + n as u64,
            )));
            let full = RecordBatch::try_new(self.full_schema.clone(), columns)?;
            let (lsn, snap, _) = self.log(&mut state, false, replaced, Some(full))?;
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
            (lsn, snap, (n, written))
        };
        self.durable(lsn, snap).await?;
        crate::stats::Stats::add(&crate::stats::STATS.rows_written, rows.0 as u64);
        Ok(rows)
    }

    pub(super) fn fill_auto_increment(
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

    /// Delete the live rows for which `predicate` is true; returns how many.
    pub(super) async fn delete_rows(
        &self,
        predicate: RowFilter,
        returning: bool,
    ) -> Result<(usize, Option<RecordBatch>)> {
        let (ids, rows) = self.matching(predicate).await?;
        if ids.is_empty() {
            return Ok((0, None));
        }
        let (lsn, snap, n, gone) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let live = Self::still_live(&state, &ids);
            if live.is_empty() {
                return Ok((0, None));
            }
            let gone: HashSet<u64> = live.iter().copied().collect();
            let (lsn, snap, n) = self.log(&mut state, false, live, None)?;
            self.forget_keys(&mut state, &rows, &gone);
            (lsn, snap, n, gone)
        };
        self.durable(lsn, snap).await?;
        let deleted = if returning {
            Some(self.rows_with_ids(&rows, &gone)?)
        } else {
            None
        };
        Ok((n, deleted))
    }

    /// The rows of `rows` (as [`Self::matching`] gives them) whose row id
    /// is in `ids`, in [`Self::schema`].
    pub(super) fn rows_with_ids(
        &self,
        rows: &[RecordBatch],
        ids: &HashSet<u64>,
    ) -> Result<RecordBatch> {
        let n_fields = self.schema.fields().len();
        let mut out = Vec::with_capacity(rows.len());
        for b in rows {
            let Some(rowids) = b
                .column_by_name(ROWID)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
            else {
                continue;
            };
            let keep: BooleanArray = rowids
                .iter()
                .map(|id| Some(id.is_some_and(|id| ids.contains(&id))))
                .collect();
            let user = b.project(&(0..n_fields).collect::<Vec<_>>())?;
            let user = RecordBatch::try_new(self.schema.clone(), user.columns().to_vec())?;
            out.push(arrow::compute::filter_record_batch(&user, &keep)?);
        }
        Ok(concat_batches(&self.schema, &out)?)
    }

    /// UPDATE: rows matching `predicate` are replaced by `change(rows)` (in
    /// [`Self::schema`]) at one timestamp. Returns the rows updated.
    pub(super) async fn update_rows(
        &self,
        predicate: RowFilter,
        change: RowChange,
        returning: bool,
    ) -> Result<(usize, Option<RecordBatch>)> {
        let (ids, rows) = self.matching(predicate).await?;
        if ids.is_empty() {
            return Ok((0, None));
        }
        let n_fields = self.schema.fields().len();
        let mut new_rows = Vec::with_capacity(rows.len());
        for b in &rows {
            let user = b.project(&(0..n_fields).collect::<Vec<_>>())?;
            let user = RecordBatch::try_new(self.schema.clone(), user.columns().to_vec())?;
            new_rows.push(change(&user)?);
        }
        let new_batch = concat_batches(&self.schema, &new_rows)?;
        self.shared.wait_for_space().await?;
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
                return Ok((0, None));
            }
            let new_batch = self.conform(new_batch)?;
            let written = returning.then(|| new_batch.clone());
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
                        return Err(self.null_key(pk));
                    };
                    let taken = state.pks.contains_key(&key) && !old_keys.contains(&key);
                    if taken || !seen.insert(key.clone()) {
                        return Err(self.duplicate_key(pk, &key));
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
            let (lsn, snap, _) = self.log(&mut state, false, deletes, Some(full))?;
            state.next_rowid = start + n as u64;
            self.forget_keys(&mut state, &rows, &live);
            for (j, key) in new_keys.into_iter().enumerate() {
                state.pks.insert(key, start + j as u64);
            }
            (lsn, snap, (n, written))
        };
        self.durable(lsn, snap).await?;
        Ok(n)
    }

    /// Remove every row; returns how many there were.
    pub(super) async fn truncate_rows(&self) -> Result<usize> {
        let (lsn, snap, n) = {
            let mut state = self.write.lock();
            self.check_writable()?;
            let out = self.log(&mut state, true, Vec::new(), None)?;
            state.pks.clear();
            out
        };
        self.durable(lsn, snap).await?;
        // The next flush names no segment, and the emptied table's files
        // go then (not at its next write).
        self.attached.store(true, Ordering::Relaxed);
        self.shared.wake_flusher.notify_one();
        Ok(n)
    }
}
