//! The primary-key index: keys of a batch, the rows that hold them, and
//! forgetting keys whose rows are gone.

use super::*;

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
    pub(super) fn json(&self) -> serde_json::Value {
        match self {
            PkKey::Int(v) => serde_json::Value::from(*v),
            PkKey::Text(v) => serde_json::Value::from(v.clone()),
        }
    }
}

pub(super) fn pk_keys(array: &ArrayRef) -> Result<Vec<Option<PkKey>>> {
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

/// The least and greatest non-null key of a key column, by the column's
/// own kernels (no key per row).
pub(super) fn pk_bounds(array: &ArrayRef) -> Result<Option<(PkKey, PkKey)>> {
    use arrow::compute::{max, max_string, min, min_string};
    fn ints<T: arrow::datatypes::ArrowNumericType>(array: &ArrayRef) -> Option<(PkKey, PkKey)>
    where
        T::Native: Into<i64> + arrow::datatypes::ArrowNativeTypeOp,
    {
        let a = array.as_primitive::<T>();
        Some((PkKey::Int(min(a)?.into()), PkKey::Int(max(a)?.into())))
    }
    Ok(match array.data_type() {
        DataType::Int64 => ints::<Int64Type>(array),
        DataType::Int32 => ints::<Int32Type>(array),
        DataType::Int16 => ints::<Int16Type>(array),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            min_string(a)
                .zip(max_string(a))
                .map(|(lo, hi)| (PkKey::Text(lo.to_string()), PkKey::Text(hi.to_string())))
        }
        other => {
            return Err(StorageError::InvalidBatch(format!(
                "primary key of type {other} is not supported"
            )));
        }
    })
}

/// Whether key `a` sorts before key `b` (keys of one column are of one kind).
pub(super) fn key_less(a: &PkKey, b: &PkKey) -> bool {
    match (a, b) {
        (PkKey::Int(a), PkKey::Int(b)) => a < b,
        (PkKey::Text(a), PkKey::Text(b)) => a < b,
        _ => false,
    }
}

impl CollectionData {
    /// The live rows of the current snapshot for which `predicate` is true,
    /// as (row id, full row batch) pairs.
    pub(super) async fn matching(
        &self,
        predicate: impl FnMut(&RecordBatch) -> Result<BooleanArray> + Send,
    ) -> Result<(Vec<u64>, Vec<RecordBatch>)> {
        self.matching_in(&self.snapshot(), predicate).await
    }

    /// [`Self::matching`] over `snap` (a transaction's view).
    pub(super) async fn matching_in(
        &self,
        snap: &Snapshot,
        mut predicate: impl FnMut(&RecordBatch) -> Result<BooleanArray> + Send,
    ) -> Result<(Vec<u64>, Vec<RecordBatch>)> {
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

    pub(super) fn forget_keys(
        &self,
        state: &mut WriteState,
        rows: &[RecordBatch],
        gone: &HashSet<u64>,
    ) {
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
    pub(super) fn still_live(state: &WriteState, ids: &[u64]) -> Vec<u64> {
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

    /// The live rows of `snap` (a transaction's view) whose primary key is
    /// one of `keys`, in the full schema.
    pub async fn rows_by_key_in(&self, snap: &Snapshot, keys: &ArrayRef) -> Result<RecordBatch> {
        let Some(pk) = self.primary_key else {
            return Ok(RecordBatch::new_empty(self.full_schema.clone()));
        };
        let wanted: HashSet<PkKey> = pk_keys(keys)?.into_iter().flatten().collect();
        let mut out = Vec::new();
        if !wanted.is_empty() {
            for chunk in snap.chunks().await? {
                let have = pk_keys(chunk.batch.column(pk))?;
                let mask: BooleanArray = have
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        Some(chunk.is_live(i) && k.as_ref().is_some_and(|k| wanted.contains(k)))
                    })
                    .collect();
                if mask.true_count() > 0 {
                    out.push(arrow::compute::filter_record_batch(&chunk.batch, &mask)?);
                }
            }
        }
        Ok(concat_batches(&self.full_schema, &out)?)
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
}

pub(super) fn rowid_at(rowids: &RowIds, offset: usize) -> Option<u64> {
    rowids.at(offset)
}
