//! A transaction's uncommitted writes to one collection (see `txn.rs`):
//! staged by its statements, laid over the committed rows when it reads,
//! and written as one WAL record at COMMIT.

use std::collections::BTreeMap;

use super::*;
use crate::wal::WalRecord;

/// A transaction's own rows have provisional row ids from here on; COMMIT
/// gives them real ones.
pub const PROVISIONAL: u64 = 1 << 62;
/// The segment id a transaction's own rows show under in its views.
const OVERLAY_SEGMENT: u64 = u64::MAX;

/// What one transaction changed in one collection.
#[derive(Debug, Clone)]
pub struct Overlay {
    data: Arc<CollectionData>,
    /// TRUNCATE: the committed rows with row ids below this (every row
    /// committed when it ran) are gone; rows committed by others since stay.
    truncated: Option<u64>,
    /// Committed rows it deleted (or replaced): row id to primary key.
    deleted: Arc<BTreeMap<u64, Option<PkKey>>>,
    /// Its own rows (the storage schema), provisional ids `first..next`.
    rows: Arc<Vec<RecordBatch>>,
    /// Its own rows it deleted again, by offset from `first`.
    dead: Arc<Deletes>,
    first: u64,
    next: u64,
    /// Primary key to provisional id, of its own live rows.
    keys: Arc<HashMap<PkKey, u64>>,
    bytes: usize,
}

/// One collection's part of a commit: its WAL record and what the
/// primary-key index learns from it.
pub(crate) struct Prepared {
    record: WalRecord,
    gone: Vec<(u64, PkKey)>,
    new_keys: Vec<PkKey>,
    rows: usize,
}

impl Overlay {
    pub fn new(data: Arc<CollectionData>) -> Overlay {
        Overlay {
            data,
            truncated: None,
            deleted: Arc::default(),
            rows: Arc::default(),
            dead: Arc::default(),
            first: PROVISIONAL,
            next: PROVISIONAL,
            keys: Arc::default(),
            bytes: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.truncated.is_none() && self.deleted.is_empty() && self.next == self.first
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `base` with this overlay laid over it.
    pub fn view(&self, base: &Snapshot) -> Snapshot {
        let mut snap = base.clone();
        if let Some(cutoff) = self.truncated {
            for seg in &mut snap.segments {
                if seg.rowids.min().is_none_or(|m| m >= cutoff) {
                    continue;
                }
                let deletes = Arc::make_mut(&mut seg.deletes);
                for off in 0..seg.rowids.len() {
                    if let Some(id) = rowid_at(&seg.rowids, off)
                        && id < cutoff
                    {
                        deletes.insert(off, id, u64::MAX);
                    }
                }
            }
        }
        for &rowid in self.deleted.keys() {
            if let Some((si, off)) = snap.locate(rowid) {
                Arc::make_mut(&mut snap.segments[si].deletes).insert(off, rowid, u64::MAX);
            }
        }
        if self.next > self.first {
            snap.segments.push(Segment {
                id: OVERLAY_SEGMENT,
                state: SegmentState::Growing,
                data: SegmentData::Memory(self.rows.clone()),
                rowids: RowIds::Range {
                    start: self.first,
                    len: (self.next - self.first) as usize,
                },
                deletes: self.dead.clone(),
                mem_bytes: 0,
                max_ts: u64::MAX,
            });
        }
        snap
    }

    /// Stage one statement's change; `base` is the committed snapshot the
    /// transaction reads. Returns the rows changed and those written or
    /// deleted (empty unless `returning`).
    pub(crate) async fn stage(
        &mut self,
        base: &Snapshot,
        mutation: Mutation,
        returning: bool,
        repeatable: bool,
    ) -> Result<(usize, RecordBatch)> {
        let data = self.data.clone();
        let empty = || RecordBatch::new_empty(data.schema.clone());
        match mutation {
            Mutation::Insert { rows, on_conflict } => {
                let n_before = rows.num_rows();
                if n_before == 0 {
                    return Ok((0, empty()));
                }
                let batch = {
                    let mut state = data.write.lock();
                    data.fill_auto_increment(&mut state, rows)?
                };
                let batch = data.conform(batch)?;
                let kept = self.replace_keys(base, &batch, on_conflict, repeatable)?;
                let batch = match kept {
                    Some(mask) => arrow::compute::filter_record_batch(&batch, &mask)?,
                    None => batch,
                };
                let n = batch.num_rows();
                let written = if returning { batch.clone() } else { empty() };
                self.append(batch)?;
                Ok((n, written))
            }
            Mutation::Delete { mut filter } => {
                let view = self.view(base);
                let (ids, rows) = data.matching_in(&view, &mut filter).await?;
                if ids.is_empty() {
                    return Ok((0, empty()));
                }
                self.check_current(&ids, repeatable)?;
                self.remove(&rows)?;
                let all: HashSet<u64> = ids.iter().copied().collect();
                let deleted = if returning {
                    data.rows_with_ids(&rows, &all)?
                } else {
                    empty()
                };
                Ok((ids.len(), deleted))
            }
            Mutation::Update { mut filter, change } => {
                let view = self.view(base);
                let (ids, rows) = data.matching_in(&view, &mut filter).await?;
                if ids.is_empty() {
                    return Ok((0, empty()));
                }
                self.check_current(&ids, repeatable)?;
                let n_fields = data.schema.fields().len();
                let mut new_rows = Vec::with_capacity(rows.len());
                for b in &rows {
                    let user = b.project(&(0..n_fields).collect::<Vec<_>>())?;
                    let user = RecordBatch::try_new(data.schema.clone(), user.columns().to_vec())?;
                    new_rows.push(change(&user)?);
                }
                let new_batch = concat_batches(&data.schema, &new_rows)?;
                let new_batch = data.conform(new_batch)?;
                let old = self.remove(&rows)?;
                self.check_new_keys(&new_batch, &old)?;
                let n = new_batch.num_rows();
                let written = if returning {
                    new_batch.clone()
                } else {
                    empty()
                };
                self.append(new_batch)?;
                Ok((n, written))
            }
            Mutation::Truncate => {
                let n = self.view(base).live_rows();
                self.truncated = Some(data.write.lock().next_rowid);
                self.deleted = Arc::default();
                self.rows = Arc::default();
                self.dead = Arc::default();
                self.first = self.next;
                self.keys = Arc::default();
                self.bytes = 0;
                Ok((n, empty()))
            }
        }
    }

    /// The committed row holding `key` that this transaction still sees.
    fn committed_row(&self, state_pks: &HashMap<PkKey, u64>, key: &PkKey) -> Option<u64> {
        state_pks
            .get(key)
            .copied()
            .filter(|r| !self.deleted.contains_key(r) && self.truncated.is_none_or(|c| *r >= c))
    }

    /// Apply `conflict` to the keys of new rows: existing keys are an
    /// error, skipped or replaced (their rows deleted here). Returns which
    /// rows to keep, `None` for all.
    fn replace_keys(
        &mut self,
        base: &Snapshot,
        batch: &RecordBatch,
        conflict: Conflict,
        repeatable: bool,
    ) -> Result<Option<BooleanArray>> {
        let data = self.data.clone();
        let Some(pk) = data.primary_key else {
            return Ok(None);
        };
        let keys = pk_keys(batch.column(pk))?;
        let committed: HashMap<PkKey, u64> = {
            let state = data.write.lock();
            keys.iter()
                .flatten()
                .filter_map(|k| state.pks.get(k).map(|r| (k.clone(), *r)))
                .collect()
        };
        let mut keep = vec![true; keys.len()];
        let mut seen: HashMap<PkKey, usize> = HashMap::with_capacity(keys.len());
        for (i, key) in keys.into_iter().enumerate() {
            let Some(key) = key else {
                return Err(data.null_key(pk));
            };
            let own = self.keys.get(&key).copied();
            let theirs = self.committed_row(&committed, &key);
            let duplicate = seen.get(&key).copied();
            let exists = own.is_some() || theirs.is_some() || duplicate.is_some();
            match (conflict, exists) {
                (_, false) => {}
                (Conflict::Error, true) => {
                    return Err(data.duplicate_key(pk, &key));
                }
                (Conflict::Skip, true) => {
                    keep[i] = false;
                    continue;
                }
                (Conflict::Replace, true) => {
                    if let Some(j) = duplicate {
                        keep[j] = false;
                    } else if let Some(r) = own {
                        self.kill_own(r);
                        Arc::make_mut(&mut self.keys).remove(&key);
                    } else if let Some(r) = theirs {
                        if repeatable && !live_in(base, r) {
                            return Err(StorageError::SerializationFailure(data.name()));
                        }
                        Arc::make_mut(&mut self.deleted).insert(r, Some(key.clone()));
                    }
                }
            }
            seen.insert(key, i);
        }
        Ok((!keep.iter().all(|k| *k)).then(|| BooleanArray::from(keep)))
    }

    /// New keys of an UPDATE must not collide with the rows it does not
    /// replace (`old`: the keys it freed), nor with each other.
    fn check_new_keys(&self, batch: &RecordBatch, old: &HashSet<PkKey>) -> Result<()> {
        let data = &self.data;
        let Some(pk) = data.primary_key else {
            return Ok(());
        };
        let keys = pk_keys(batch.column(pk))?;
        let state = data.write.lock();
        let mut seen = HashSet::new();
        for key in keys {
            let Some(key) = key else {
                return Err(data.null_key(pk));
            };
            let taken = !old.contains(&key)
                && (self.keys.contains_key(&key) || self.committed_row(&state.pks, &key).is_some());
            if taken || !seen.insert(key.clone()) {
                return Err(data.duplicate_key(pk, &key));
            }
        }
        Ok(())
    }

    /// REPEATABLE READ: the committed rows about to be changed must not
    /// have been changed by a transaction that committed since the
    /// snapshot (PostgreSQL's "could not serialize access").
    fn check_current(&self, ids: &[u64], repeatable: bool) -> Result<()> {
        if !repeatable {
            return Ok(());
        }
        let committed: Vec<u64> = ids.iter().copied().filter(|i| *i < PROVISIONAL).collect();
        let state = self.data.write.lock();
        if CollectionData::still_live(&state, &committed).len() != committed.len() {
            return Err(StorageError::SerializationFailure(self.data.name()));
        }
        Ok(())
    }

    fn kill_own(&mut self, rowid: u64) {
        let off = (rowid - self.first) as usize;
        Arc::make_mut(&mut self.dead).insert(off, rowid, 0);
    }

    /// Delete the matched `rows` (full schema): its own rows die, committed
    /// ones are marked deleted. Returns the primary keys they held.
    fn remove(&mut self, rows: &[RecordBatch]) -> Result<HashSet<PkKey>> {
        let pk = self.data.primary_key;
        let mut freed = HashSet::new();
        for b in rows {
            let Some(ids) = b
                .column_by_name(ROWID)
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::UInt64Type>())
                .cloned()
            else {
                continue;
            };
            let keys = match pk {
                Some(pk) => pk_keys(b.column(pk))?,
                None => vec![None; b.num_rows()],
            };
            for (i, key) in keys.into_iter().enumerate() {
                let id = ids.value(i);
                if id >= PROVISIONAL {
                    self.kill_own(id);
                    if let Some(k) = &key
                        && self.keys.get(k) == Some(&id)
                    {
                        Arc::make_mut(&mut self.keys).remove(k);
                    }
                } else {
                    Arc::make_mut(&mut self.deleted).insert(id, key.clone());
                }
                if let Some(k) = key {
                    freed.insert(k);
                }
            }
        }
        Ok(freed)
    }

    /// Add rows (the collection's schema) with provisional ids.
    fn append(&mut self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let start = self.next;
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_iter_values(
            start..start + n as u64,
        )));
        let full = RecordBatch::try_new(self.data.full_schema.clone(), columns)?;
        if let Some(pk) = self.data.primary_key {
            let keys = Arc::make_mut(&mut self.keys);
            for (i, key) in pk_keys(full.column(pk))?.into_iter().enumerate() {
                if let Some(key) = key {
                    keys.insert(key, start + i as u64);
                }
            }
        }
        self.bytes += full.get_array_memory_size();
        Arc::make_mut(&mut self.rows).push(full);
        self.next += n as u64;
        Ok(())
    }

    /// Under the collection's write lock: the record that commits this
    /// overlay at `ts`, with its rows given real row ids. 23505 if a key it
    /// inserts was committed by another transaction meanwhile.
    fn prepare(&self, state: &WriteState, ts: u64, multi: bool) -> Result<Prepared> {
        let data = &self.data;
        let ids: Vec<u64> = self.deleted.keys().copied().collect();
        let mut deletes = CollectionData::still_live(state, &ids);
        let mut gone: Vec<(u64, PkKey)> = self
            .deleted
            .iter()
            .filter_map(|(id, k)| k.clone().map(|k| (*id, k)))
            .collect();
        if let Some(cutoff) = self.truncated {
            // Every row committed when the TRUNCATE ran, no later one.
            for seg in &state.pending.segments {
                for off in 0..seg.rowids.len() {
                    if let Some(id) = rowid_at(&seg.rowids, off)
                        && id < cutoff
                        && !seg.deletes.contains(off)
                    {
                        deletes.push(id);
                    }
                }
            }
            deletes.sort_unstable();
            deletes.dedup();
            gone.extend(
                state
                    .pks
                    .iter()
                    .filter(|(_, id)| **id < cutoff)
                    .map(|(k, id)| (*id, k.clone())),
            );
        }
        let mut live = Vec::new();
        let mut at = 0usize;
        for b in self.rows.iter() {
            let mask = self.dead.live_mask(at, b.num_rows());
            at += b.num_rows();
            live.push(match mask {
                Some(m) => arrow::compute::filter_record_batch(b, &m)?,
                None => b.clone(),
            });
        }
        let mut insert = concat_batches(&data.full_schema, &live)?;
        let n = insert.num_rows();
        let mut new_keys = Vec::new();
        if let Some(pk) = data.primary_key {
            for key in pk_keys(insert.column(pk))?.into_iter().flatten() {
                if self.committed_row(&state.pks, &key).is_some() {
                    return Err(data.duplicate_key(pk, &key));
                }
                new_keys.push(key);
            }
        }
        if n > 0 {
            let start = state.next_rowid;
            let mut columns = insert.columns().to_vec();
            if let Some(last) = columns.last_mut() {
                *last = Arc::new(UInt64Array::from_iter_values(start..start + n as u64));
            }
            insert = RecordBatch::try_new(data.full_schema.clone(), columns)?;
        }
        Ok(Prepared {
            record: WalRecord {
                ts,
                truncate: false,
                deletes,
                insert: (n > 0).then_some(insert),
                multi,
                attach: Vec::new(),
            },
            gone,
            new_keys,
            rows: n,
        })
    }

    /// Apply a logged `prepared` to the pending snapshot and the key index.
    fn apply(&self, state: &mut WriteState, prepared: &Prepared) -> Arc<Snapshot> {
        let data = &self.data;
        state.dirty = true;
        let start = state.next_rowid;
        data.apply(state, &prepared.record);
        state.next_rowid = start + prepared.rows as u64;
        for (id, key) in &prepared.gone {
            if state.pks.get(key) == Some(id) {
                state.pks.remove(key);
            }
        }
        for (j, key) in prepared.new_keys.iter().enumerate() {
            state.pks.insert(key.clone(), start + j as u64);
        }
        state.pending.clone()
    }

    /// COMMIT of a transaction that wrote this collection only: one
    /// record, durable before the rows are visible.
    pub(crate) async fn commit_alone(&self) -> Result<()> {
        let data = &self.data;
        if self.next > self.first {
            data.shared.wait_for_space().await?;
        }
        let (lsn, snap) = {
            let mut state = data.write.lock();
            data.check_writable()?;
            let prepared = self.prepare(&state, data.shared.tso.next(), false)?;
            let lsn = data.wal.append(&prepared.record.encode()?)?;
            (lsn, self.apply(&mut state, &prepared))
        };
        data.durable(lsn, snap).await
    }

    /// COMMIT of a transaction that wrote several collections: each one's
    /// record is logged (marked as part of a multi-collection commit) and
    /// made durable, then the commit log names the transaction, then the
    /// rows become visible; the collections' write locks are held
    /// throughout, so no other record comes between.
    pub(crate) async fn commit_together(
        shared: &Arc<Shared>,
        mut overlays: Vec<Overlay>,
    ) -> Result<()> {
        if overlays.iter().any(|o| o.next > o.first) {
            shared.wait_for_space().await?;
        }
        overlays.sort_by_key(|o| o.data.id);
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut states: Vec<_> = overlays.iter().map(|o| o.data.write.lock()).collect();
            for o in &overlays {
                o.data.check_writable()?;
            }
            let ts = shared.tso.next();
            let prepared = overlays
                .iter()
                .zip(&states)
                .map(|(o, s)| o.prepare(s, ts, true))
                .collect::<Result<Vec<_>>>()?;
            let mut lsns = Vec::with_capacity(overlays.len());
            for (o, p) in overlays.iter().zip(&prepared) {
                lsns.push(o.data.wal.append(&p.record.encode()?)?);
            }
            for (o, lsn) in overlays.iter().zip(&lsns) {
                o.data.wal.sync(*lsn)?;
            }
            shared.log_commit(ts)?;
            for ((o, p), state) in overlays.iter().zip(&prepared).zip(states.iter_mut()) {
                let snap = o.apply(state, p);
                o.data.publish(snap);
            }
            drop(states);
            shared.wake_flusher.notify_one();
            Ok(())
        })
        .await
        .map_err(|e| StorageError::WalFailed(e.to_string()))?
    }
}

/// Whether committed row `rowid` is live in `snap`.
fn live_in(snap: &Snapshot, rowid: u64) -> bool {
    snap.locate(rowid)
        .is_some_and(|(s, o)| !snap.segments[s].deletes.contains(o))
}
