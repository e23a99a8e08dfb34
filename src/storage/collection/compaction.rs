//! Compaction: small flushed segments merged, deleted rows dropped, the
//! replaced segments' files removed once no reader holds them.

use super::*;

impl CollectionData {
    /// Merge small flushed segments (toward `segment_target_size`) and drop
    /// deleted rows. Returns the number of segments merged away.
    pub async fn compact(&self) -> Result<usize> {
        self.flush().await?;
        let _maintenance = self.maintenance.lock().await;
        let target = self.shared.config.segment_target_size as u64;
        let (snap, checkpoint) = {
            let state = self.write.lock();
            (state.pending.clone(), state.checkpoint_ts)
        };
        let width = self.row_width();
        // Runs of adjacent flushed segments worth merging: small ones, or
        // ones with many deleted rows, up to the target size.
        let worth = |run: &[Segment]| run.len() > 1 || run.iter().any(|s| s.deletes.count() > 0);
        let mut groups: Vec<Vec<Segment>> = Vec::new();
        let mut run: Vec<Segment> = Vec::new();
        let mut run_bytes = 0u64;
        for seg in &snap.segments {
            // A bulk load's segments attached since the last flush are
            // named by their WAL record, not yet by the manifest: merging
            // them away now would have recovery attach them again.
            let flushed = matches!(seg.data, SegmentData::Flushed(_)) && seg.max_ts <= checkpoint;
            let size = seg.merge_size(width);
            let small = size < target / 2;
            let holey = seg.deletes.count() * 5 > seg.rows();
            let candidate = flushed && (small || holey);
            if !candidate || run_bytes + size > target {
                let done = std::mem::take(&mut run);
                if worth(&done) {
                    groups.push(done);
                }
                run_bytes = 0;
            }
            if candidate {
                run_bytes += size;
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
            // Slices of the live rows, not one copy of them all: a merge
            // holds the group once.
            let mut parts = Vec::new();
            for batch in &batches {
                let mut at = 0;
                while at < batch.num_rows() {
                    let len = BATCH_ROWS.min(batch.num_rows() - at);
                    parts.push(batch.slice(at, len));
                    at += len;
                }
            }
            drop(batches);
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
        info!(collection = %self.name(), merged_away, "compacted");
        Ok(merged_away)
    }

    /// Put `new` in place of the segments `old` (carrying over deletes made
    /// since it was built) and commit the manifest.
    pub(super) async fn replace_segments(
        &self,
        old: &HashSet<u64>,
        new: Option<Segment>,
    ) -> Result<()> {
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
}

/// Note the flushed ones among `segments`, which leave the snapshot.
pub(super) fn retire(state: &mut WriteState, segments: &[Segment]) {
    for s in segments {
        if let SegmentData::Flushed(f) = &s.data {
            state.retired.push(Arc::downgrade(f));
        }
    }
}
