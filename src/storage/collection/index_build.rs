//! Index builds: one segment's index loaded or built at a time, its files
//! committed to the manifest, and the progress each index reports.

use super::*;

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

    pub(super) fn index_path(&self, segment: u64, index: &IndexDef) -> String {
        index_path(&self.segment_dir(segment), index.id)
    }

    /// Build or load one missing segment index; `true` if there was one.
    pub async fn index_step(&self) -> Result<bool> {
        if self.dropped.load(Ordering::SeqCst) || self.readable().is_err() {
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

    pub(super) async fn load_or_build(
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
                    tokio::task::spawn_blocking(move || quiver_vector::index::load(&spec, &bytes))
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
                    info!(collection = %self.name(), index = %def.name, segment, "index loaded from {}", file.path);
                    return Ok(());
                }
                Err(why) => {
                    tracing::warn!(collection = %self.name(), index = %def.name, segment, "index file {} is unusable ({why}): rebuilding it", file.path);
                }
            }
        }
        // Rows with a NULL vector are indexed as zeros; searches never
        // return them (AnnSearchExec leaves them out of what may pass).
        let batches = f.batches().await?;
        let vectors = if def.spec.method.is_binary() {
            quiver_vector::index::IndexData::Bits(bits_of(&batches, def.field, def.spec.dim)?)
        } else {
            quiver_vector::index::IndexData::Vectors(vectors_of(&batches, def.field, def.spec.dim)?)
        };
        drop(batches);
        let spec = def.spec.clone();
        let started = std::time::Instant::now();
        let threads = self.shared.config.index_build_threads;
        let built = tokio::task::spawn_blocking(move || {
            quiver_vector::index::set_build_threads(threads);
            let index = quiver_vector::index::build_any(&spec, vectors)?;
            let bytes = index.serialize()?;
            Ok::<_, quiver_vector::index::IndexError>((index, bytes))
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
        let path = self.index_path(segment, def);
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
            // Failures of segments that compaction has since replaced no
            // longer count.
            let live: HashSet<u64> = self.snapshot().segments.iter().map(|s| s.id).collect();
            st.failed_segments.retain(|s| live.contains(s));
            if st.failed_segments.is_empty() {
                st.failed = None;
            }
        }
        self.commit_index_files().await?;
        info!(collection = %self.name(), index = %def.name, segment, rows = f.meta.rows, ms = build_ms, "index built");
        Ok(())
    }

    /// Record the index files of every flushed segment in the manifest.
    pub(super) async fn commit_index_files(&self) -> Result<()> {
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
                        quiver_vector::index::IndexError::Faiss(e),
                    )),
                    None => Ok(()),
                };
            }
            if self.dropped.load(Ordering::SeqCst) {
                return Err(StorageError::Dropped(self.name()));
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

/// The vectors of `field` in `batches`, row-major (zeros for NULL).
pub(super) fn vectors_of(batches: &[RecordBatch], field: usize, dim: usize) -> Result<Vec<f32>> {
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
pub(super) fn bits_of(batches: &[RecordBatch], field: usize, bits: usize) -> Result<Vec<u8>> {
    let width = quiver_vector::bits::bytes_for(bits).max(1);
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
