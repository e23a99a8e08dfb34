//! Bulk loading, as Milvus's bulk insert: a large COPY writes its rows as
//! segments of their own while they arrive, so that the server holds about
//! one segment of them at a time, and attaches them all with one WAL record
//! at the end. Until then no reader sees them, and a crash or an error
//! leaves nothing behind: unattached segment files are removed (at once,
//! or at the next start).
//!
//! The rows get their row ids and server-assigned values when they are
//! staged; their primary keys are checked against each other as they
//! arrive, and against the collection's when staged and again, under the
//! write lock, when attached.

use super::*;

/// A bulk load in progress into one collection.
pub struct BulkLoad {
    data: Arc<CollectionData>,
    /// Segments written so far, not yet attached.
    staged: Vec<SegmentMeta>,
    /// Primary keys of the staged rows, with their row ids.
    keys: HashMap<PkKey, u64>,
    rows: usize,
    attached: bool,
}

impl CollectionData {
    /// Bytes of rows (in memory, as Arrow) a bulk load gathers into each
    /// segment it writes: `[storage] segment_max_bytes`, the size at which
    /// a growing segment is sealed.
    pub fn bulk_segment_bytes(&self) -> usize {
        self.shared.config.segment_max_bytes
    }

    /// Start a bulk load into this collection.
    pub fn bulk_load(self: &Arc<Self>) -> BulkLoad {
        BulkLoad {
            data: self.clone(),
            staged: Vec::new(),
            keys: HashMap::new(),
            rows: 0,
            attached: false,
        }
    }
}

impl BulkLoad {
    /// Rows staged so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether any segment has been written.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Write `batches` (in [`CollectionData::schema`]) as one new segment,
    /// not yet visible.
    pub async fn stage(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        let data = self.data.clone();
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        if n == 0 {
            return Ok(());
        }
        let mut parts = Vec::with_capacity(batches.len());
        {
            let mut state = data.write.lock();
            data.check_writable()?;
            let mut start = state.next_rowid;
            for batch in batches {
                let batch = data.fill_auto_increment(&mut state, batch)?;
                let batch = data.conform(batch)?;
                let rows = batch.num_rows() as u64;
                if let Some(pk) = data.primary_key {
                    for (i, key) in pk_keys(batch.column(pk))?.into_iter().enumerate() {
                        let Some(key) = key else {
                            return Err(data.null_key(pk));
                        };
                        if self.keys.contains_key(&key) || state.pks.contains_key(&key) {
                            return Err(data.duplicate_key(pk, &key));
                        }
                        self.keys.insert(key, start + i as u64);
                    }
                }
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(UInt64Array::from_iter_values(start..start + rows)));
                parts.push(RecordBatch::try_new(data.full_schema.clone(), columns)?);
                start += rows;
            }
            // The range is this load's even if it never attaches.
            state.next_rowid = start;
        }
        let id = data.shared.new_segment_id();
        // Recorded first, so that a failed write is removed too.
        self.staged.push(SegmentMeta {
            id,
            state: SegmentState::Flushed,
            rows: 0,
            bytes: 0,
            data_file: String::new(),
            delta_file: None,
            deleted: 0,
            rowid_min: 0,
            rowid_max: 0,
            pk_min: None,
            pk_max: None,
            max_ts: 0,
            indexes: Default::default(),
        });
        let meta = data
            .write_segment(id, SegmentState::Flushed, &parts, 0)
            .await?;
        if let Some(last) = self.staged.last_mut() {
            *last = meta;
        }
        self.rows += n;
        debug!(collection = %data.name(), segment = id, rows = n, "bulk load staged a segment");
        Ok(())
    }

    /// Make every staged row visible at once (one WAL record); returns how
    /// many there are.
    pub async fn attach(mut self) -> Result<usize> {
        let data = self.data.clone();
        if self.staged.is_empty() {
            return Ok(0);
        }
        let (lsn, snap) = {
            let mut state = data.write.lock();
            data.check_writable()?;
            if let Some(pk) = data.primary_key
                && let Some(key) = self.keys.keys().find(|k| state.pks.contains_key(*k))
            {
                return Err(data.duplicate_key(pk, key));
            }
            let rec = WalRecord {
                attach: self.staged.clone(),
                ..WalRecord::default()
            };
            let (lsn, snap, _) = data.log_record(&mut state, rec)?;
            for meta in &self.staged {
                data.advance_past(&mut state, meta);
            }
            // Into an empty index (a first load) the load's own keys are
            // moved whole: copied, both tables would be held at once.
            if state.pks.is_empty() {
                state.pks = std::mem::take(&mut self.keys);
            } else {
                state.pks.extend(std::mem::take(&mut self.keys));
            }
            // The next flush names them in the manifest (and trims the WAL).
            data.attached.store(true, Ordering::Relaxed);
            (lsn, snap)
        };
        // Logged: the segments are the collection's now, durable or not.
        self.attached = true;
        data.durable(lsn, snap).await?;
        data.shared.wake_indexer.notify_one();
        crate::stats::Stats::add(&crate::stats::STATS.rows_written, self.rows as u64);
        Ok(self.rows)
    }
}

impl Drop for BulkLoad {
    /// An abandoned load removes what it wrote.
    fn drop(&mut self) {
        if self.attached || self.staged.is_empty() {
            return;
        }
        let dirs: Vec<String> = self
            .staged
            .iter()
            .map(|m| self.data.segment_dir(m.id))
            .collect();
        let io = self.data.shared.io.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    for dir in dirs {
                        io.delete_prefix(&dir).await;
                    }
                });
            }
            // Without a runtime the next start removes them.
            Err(_) => tracing::warn!(
                collection = %self.data.name(),
                segments = dirs.len(),
                "an abandoned bulk load's segments stay until the next start"
            ),
        }
    }
}
