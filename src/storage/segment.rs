//! The growing segment: append-only Arrow batches plus a per-chunk liveness
//! mask for deletes, published as immutable snapshots so readers never block
//! writers and always see one consistent view.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int16Array, Int32Array, Int64Array, RecordBatch,
};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type, SchemaRef};
use parking_lot::{Mutex, RwLock};

use super::{Result, StorageError};
use crate::catalog::CollectionDef;

/// Appends merge into the last chunk until it holds this many rows.
const CHUNK_ROWS: usize = 8192;

/// A batch of rows and which of them are still live.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub batch: RecordBatch,
    /// `None` when every row is live.
    pub live: Option<BooleanArray>,
}

impl Chunk {
    /// The live rows only.
    pub fn live_batch(&self) -> Result<RecordBatch> {
        match &self.live {
            None => Ok(self.batch.clone()),
            Some(mask) => Ok(filter_record_batch(&self.batch, mask)?),
        }
    }

    pub fn is_live(&self, row: usize) -> bool {
        self.live.as_ref().is_none_or(|m| m.value(row))
    }

    pub fn live_rows(&self) -> usize {
        match &self.live {
            None => self.batch.num_rows(),
            Some(m) => m.true_count(),
        }
    }
}

/// An immutable view of a collection's rows at one point in time.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub chunks: Vec<Chunk>,
}

impl Snapshot {
    pub fn live_rows(&self) -> usize {
        self.chunks.iter().map(|c| c.live_rows()).sum()
    }
}

/// A primary-key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PkKey {
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
    pks: HashSet<PkKey>,
    next_auto: i64,
}

/// The rows of one collection.
#[derive(Debug)]
pub struct CollectionData {
    name: String,
    schema: SchemaRef,
    field_names: Vec<String>,
    not_null: Vec<usize>,
    primary_key: Option<usize>,
    auto_increment: Option<usize>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises writers: uniqueness checks and appends are atomic.
    write: Mutex<WriteState>,
}

impl CollectionData {
    pub fn new(def: &CollectionDef) -> CollectionData {
        CollectionData {
            name: def.name.clone(),
            // NOT NULL is enforced by `insert`, with a precise error.
            schema: Arc::new(arrow::datatypes::Schema::new(
                def.arrow_schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
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
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            write: Mutex::new(WriteState {
                pks: HashSet::new(),
                next_auto: 1,
            }),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The current consistent view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// Append rows (in the collection's schema). Assigns server-generated
    /// values, enforces NOT NULL and primary-key uniqueness; all or nothing.
    pub fn insert(&self, batch: RecordBatch) -> Result<usize> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let mut state = self.write.lock();
        let batch = self.fill_auto_increment(&mut state, batch)?;
        for &i in &self.not_null {
            if batch.column(i).null_count() > 0 {
                return Err(StorageError::NotNull {
                    collection: self.name.clone(),
                    field: self.field_names[i].clone(),
                });
            }
        }
        let mut new_keys = Vec::new();
        if let Some(pk) = self.primary_key {
            let keys = pk_keys(batch.column(pk))?;
            let mut seen = HashSet::with_capacity(keys.len());
            for key in keys {
                let Some(key) = key else {
                    return Err(StorageError::NotNull {
                        collection: self.name.clone(),
                        field: self.field_names[pk].clone(),
                    });
                };
                if state.pks.contains(&key) || !seen.insert(key.clone()) {
                    return Err(StorageError::DuplicateKey {
                        collection: self.name.clone(),
                        field: self.field_names[pk].clone(),
                        value: key.to_string(),
                    });
                }
                new_keys.push(key);
            }
        }
        let rows = batch.num_rows();
        let current = self.snapshot();
        let mut chunks = current.chunks.clone();
        match chunks.last_mut() {
            Some(last) if last.live.is_none() && last.batch.num_rows() + rows <= CHUNK_ROWS => {
                last.batch = concat_batches(&self.schema, [&last.batch, &batch])?;
            }
            _ => chunks.push(Chunk { batch, live: None }),
        }
        *self.snapshot.write() = Arc::new(Snapshot { chunks });
        state.pks.extend(new_keys);
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
            if let Some(max) = pk_keys(col)?
                .into_iter()
                .flatten()
                .filter_map(|k| match k {
                    PkKey::Int(v) => Some(v),
                    PkKey::Text(_) => None,
                })
                .max()
            {
                state.next_auto = state.next_auto.max(max.saturating_add(1));
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
    pub fn delete(
        &self,
        mut predicate: impl FnMut(&RecordBatch) -> Result<BooleanArray>,
    ) -> Result<usize> {
        let mut state = self.write.lock();
        let current = self.snapshot();
        let mut chunks = current.chunks.clone();
        let mut deleted = 0;
        let mut removed_keys = Vec::new();
        for chunk in chunks.iter_mut() {
            let hits = predicate(&chunk.batch)?;
            let mut changed = false;
            let live: BooleanArray = (0..chunk.batch.num_rows())
                .map(|i| {
                    let was_live = chunk.is_live(i);
                    let hit = hits.is_valid(i) && hits.value(i);
                    if was_live && hit {
                        changed = true;
                        deleted += 1;
                        if self.primary_key.is_some() {
                            removed_keys.push(i);
                        }
                    }
                    Some(was_live && !hit)
                })
                .collect();
            if changed {
                if let Some(pk) = self.primary_key {
                    let keys = pk_keys(chunk.batch.column(pk))?;
                    for &i in &removed_keys {
                        if let Some(k) = &keys[i] {
                            state.pks.remove(k);
                        }
                    }
                }
                chunk.live = Some(live);
            }
            removed_keys.clear();
        }
        chunks.retain(|c| c.live_rows() > 0);
        *self.snapshot.write() = Arc::new(Snapshot { chunks });
        Ok(deleted)
    }

    /// Remove every row; returns how many there were.
    pub fn truncate(&self) -> usize {
        let mut state = self.write.lock();
        let rows = self.snapshot().live_rows();
        state.pks.clear();
        *self.snapshot.write() = Arc::new(Snapshot::default());
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{FieldDef, FieldType};

    fn def() -> CollectionDef {
        let mut id = FieldDef::new("id", FieldType::Int64);
        id.nullable = false;
        CollectionDef {
            id: 1,
            database: "default".into(),
            name: "t".into(),
            fields: vec![id, FieldDef::new("x", FieldType::Int32)],
            primary_key: Some(0),
        }
    }

    fn batch(data: &CollectionData, ids: Vec<i64>) -> RecordBatch {
        let xs: Vec<i32> = ids.iter().map(|i| *i as i32 * 10).collect();
        RecordBatch::try_new(
            data.schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int32Array::from(xs)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn unique_keys_and_deletes() {
        let data = CollectionData::new(&def());
        assert_eq!(data.insert(batch(&data, vec![1, 2, 3])).unwrap(), 3);
        assert!(matches!(
            data.insert(batch(&data, vec![4, 2])),
            Err(StorageError::DuplicateKey { .. })
        ));
        assert!(matches!(
            data.insert(batch(&data, vec![5, 5])),
            Err(StorageError::DuplicateKey { .. })
        ));
        assert_eq!(data.snapshot().live_rows(), 3);
        let n = data
            .delete(|b| {
                let ids = b.column(0).as_primitive::<Int64Type>();
                Ok(ids.iter().map(|v| v.map(|v| v == 2)).collect())
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(data.snapshot().live_rows(), 2);
        // The deleted key can be inserted again.
        data.insert(batch(&data, vec![2])).unwrap();
        assert_eq!(data.truncate(), 3);
        assert_eq!(data.snapshot().live_rows(), 0);
    }
}
