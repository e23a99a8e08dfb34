//! Opening a collection: its flushed segments from the manifest entry, then
//! the WAL records after the entry's checkpoint.

use super::*;

impl CollectionData {
    /// Open a collection: its flushed segments from the manifest entry,
    /// then every WAL record after the entry's checkpoint.
    pub(crate) async fn open(
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
                pk_columns.insert(meta.id, column_of(&batches, pk));
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
        let replay =
            |r: &&WalRecord| r.ts > entry.checkpoint_ts && (!r.multi || shared.committed(r.ts));
        // Segment ids a bulk load wrote are not in the manifest's counter:
        // segments replay creates must not take them.
        for meta in records.iter().flat_map(|r| &r.attach) {
            shared.observe_segment_id(meta.id);
        }
        // The keys (and server-assigned values) of segments a bulk load
        // attached after the checkpoint.
        let auto_name = def
            .auto_increment_field()
            .map(|i| def.fields[i].name.clone());
        let mut auto_max: Option<i64> = None;
        for meta in records.iter().filter(replay).flat_map(|r| &r.attach) {
            if entry.segments.iter().any(|m| m.id == meta.id) {
                continue;
            }
            let cols: Vec<&str> = pk_name
                .iter()
                .chain(&auto_name)
                .map(String::as_str)
                .collect();
            if cols.is_empty() {
                continue;
            }
            let batches = shared.io.read_parquet(&meta.data_file, Some(&cols)).await?;
            if let Some(pk) = &pk_name {
                pk_columns.insert(meta.id, column_of(&batches, pk));
            }
            if let Some(auto) = &auto_name {
                for col in column_of(&batches, auto) {
                    for k in pk_keys(&col)?.into_iter().flatten() {
                        if let PkKey::Int(v) = k {
                            auto_max = Some(auto_max.map_or(v, |m| m.max(v)));
                        }
                    }
                }
            }
        }
        let data = CollectionData {
            id: def.id,
            name: RwLock::new(def.name.clone()),
            prefix: collection_prefix(def.id),
            schema,
            full_schema,
            field_names: def.fields.iter().map(|f| f.name.clone()).collect(),
            json: def
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.field_type == quiver_catalog::FieldType::Json)
                .map(|(i, _)| i)
                .collect(),
            uuid: def
                .fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.field_type == quiver_catalog::FieldType::Uuid)
                .map(|(i, _)| i)
                .collect(),
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
            attached: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            released: AtomicBool::new(false),
            indexes: RwLock::new(def.indexes.clone()),
            index_status: Mutex::new(HashMap::new()),
        };
        // Replay what the segments do not hold yet.
        let mut replayed = 0usize;
        {
            let mut state = data.write.lock();
            // A record of a multi-collection transaction counts only if
            // the commit log says the transaction committed.
            for rec in records.iter().filter(replay) {
                shared.tso.observe(rec.ts);
                if let Some(batch) = &rec.insert {
                    data.advance_counters(&mut state, batch)?;
                }
                for meta in &rec.attach {
                    data.advance_past(&mut state, meta);
                    data.attached.store(true, Ordering::Relaxed);
                }
                if let Some(max) = auto_max.filter(|_| !rec.attach.is_empty()) {
                    state.next_auto = state.next_auto.max(max.saturating_add(1));
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
        // Paths are by collection id, so whatever else is under this
        // collection's prefix is a flush that did not commit or a bulk load
        // that did not attach (even for a collection never flushed).
        let named: HashSet<u64> = data.snapshot().segments.iter().map(|s| s.id).collect();
        data.remove_unnamed_segments(&named).await;
        if replayed > 0 || !entry.segments.is_empty() {
            info!(
                collection = %data.name(),
                segments = entry.segments.len(),
                wal_records_replayed = replayed,
                rows = data.snapshot().live_rows(),
                "collection recovered"
            );
        }
        Ok(Arc::new(data))
    }
}

/// The column `name` of each batch.
fn column_of(batches: &[RecordBatch], name: &str) -> Vec<ArrayRef> {
    batches
        .iter()
        .filter_map(|b| b.column_by_name(name).cloned())
        .collect()
}
