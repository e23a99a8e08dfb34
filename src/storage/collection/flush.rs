//! A flush: the growing segment sealed, in-memory segments and changed
//! delete logs written as Parquet, the manifest committed, the WAL trimmed.

use super::*;

impl CollectionData {
    pub(super) fn data_path(&self, segment: u64) -> String {
        super::super::layout::data_path(&self.segment_dir(segment))
    }

    /// Remove segment directories that none of `segments` (those of the
    /// recovered snapshot) is: those of a flush that did not commit, of a
    /// bulk load that did not attach them, or replaced ones whose removal
    /// waited for readers when the server stopped.
    pub(super) async fn remove_unnamed_segments(&self, segments: &HashSet<u64>) {
        let named: HashSet<String> = segments.iter().map(|id| id.to_string()).collect();
        let root = format!("{}/segments/", self.prefix);
        let objects = match self.shared.io.list(&root).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(collection = %self.name(), "cannot list segments: {e}");
                return;
            }
        };
        let unnamed: HashSet<&str> = objects
            .iter()
            .filter_map(|o| o.strip_prefix(&root)?.split('/').next())
            .filter(|id| !named.contains(*id))
            .collect();
        for id in unnamed {
            info!(collection = %self.name(), segment = id, "removing a segment the manifest does not name");
            self.shared.io.delete_prefix(&format!("{root}{id}")).await;
        }
    }

    pub(super) fn segment_dir(&self, segment: u64) -> String {
        super::super::layout::segment_dir(self.id, segment)
    }

    pub(super) async fn write_segment(
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
                let Some((lo, hi)) = pk_bounds(b.column(pk))? else {
                    continue;
                };
                if pk_min.as_ref().is_none_or(|m| key_less(&lo, m)) {
                    pk_min = Some(lo);
                }
                if pk_max.as_ref().is_none_or(|m| key_less(m, &hi)) {
                    pk_max = Some(hi);
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
            rowid_max: rowids.max().unwrap_or(0),
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
        let attached = self.attached.load(Ordering::Relaxed);
        let result = self.flush_once().await;
        if result.is_err() && attached {
            // Tried again at the next tick.
            self.attached.store(true, Ordering::Relaxed);
        }
        result
    }

    async fn flush_once(&self) -> Result<()> {
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
            self.attached.store(false, Ordering::Relaxed);
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
            collection = %self.name(),
            segments = sealed.len(),
            deltas = deltas.len(),
            ms = started.elapsed().as_millis() as u64,
            "flushed"
        );
        Ok(())
    }

    /// Write `entry` as this collection's state in a new manifest version;
    /// returns the entry it replaced.
    pub(super) async fn commit_manifest(
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

    pub(super) async fn remove_obsolete(
        &self,
        previous: &CollectionManifest,
        current: &[SegmentMeta],
    ) {
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
}
