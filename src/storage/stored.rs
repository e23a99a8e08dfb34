//! How vectors are laid out in segment files. In Arrow a `VECTOR(d)` is a
//! fixed-size list of d float32; Parquet would store that as a nested
//! column, with a repetition and a definition level computed and encoded
//! for every float (the largest part of a flush's CPU). Segment files store
//! it instead as a fixed-size binary value of 4·d bytes, the floats as they
//! lie in memory (little-endian), marked in the field's metadata; reading
//! turns it back into the list without copying. Files written before hold
//! the list form, and read as they are.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, RecordBatch,
};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};

use super::{Result, StorageError};

/// Field metadata marking a fixed-size binary column as stored vectors.
pub const STORED_VECTOR: &str = "quiver.stored";
const FLOAT32_LE: &str = "vector_f32le";

/// The dimension of a field stored as a fixed-size binary value.
fn stored_dim(field: &Field) -> Option<usize> {
    match field.data_type() {
        DataType::FixedSizeList(item, dim) if item.data_type() == &DataType::Float32 => {
            Some(*dim as usize)
        }
        _ => None,
    }
}

/// `schema` as segment files store it: vectors as fixed-size binary.
pub fn stored_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| stored_dim(f).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match stored_dim(f) {
            Some(dim) => {
                let mut meta = f.metadata().clone();
                meta.insert(STORED_VECTOR.to_string(), FLOAT32_LE.to_string());
                Field::new(
                    f.name(),
                    DataType::FixedSizeBinary((dim * 4) as i32),
                    f.is_nullable(),
                )
                .with_metadata(meta)
            }
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether a field of a stored schema holds vectors as binary values.
pub fn is_stored_vector(field: &Field) -> bool {
    matches!(field.data_type(), DataType::FixedSizeBinary(_))
        && field.metadata().get(STORED_VECTOR).map(String::as_str) == Some(FLOAT32_LE)
}

/// `batch` in `stored` (from [`stored_schema`] of its schema): each vector
/// column's floats become the binary column's bytes, not copied.
pub fn to_stored(batch: &RecordBatch, stored: &SchemaRef) -> Result<RecordBatch> {
    if Arc::ptr_eq(&batch.schema(), stored) || batch.schema() == *stored {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(stored.fields())
        .map(|(column, field)| {
            if !is_stored_vector(field) {
                return Ok(column.clone());
            }
            let list = column.as_fixed_size_list_opt().ok_or_else(|| {
                StorageError::InvalidBatch(format!("column \"{}\" is not a vector", field.name()))
            })?;
            let dim = list.value_length() as usize;
            let values = list.values().as_primitive::<Float32Type>();
            if values.len() != list.len() * dim {
                return Err(StorageError::InvalidBatch(format!(
                    "column \"{}\": {} floats for {} vectors of {dim}",
                    field.name(),
                    values.len(),
                    list.len()
                )));
            }
            // NULL elements may only lie under NULL vectors (whose bytes
            // are never read).
            if values.null_count() > 0
                && (0..list.len()).any(|r| {
                    list.is_valid(r) && (r * dim..(r + 1) * dim).any(|i| values.is_null(i))
                })
            {
                return Err(StorageError::InvalidBatch(format!(
                    "column \"{}\": a vector with a NULL element",
                    field.name()
                )));
            }
            let bytes = values.values().inner().clone();
            let array =
                FixedSizeBinaryArray::try_new((dim * 4) as i32, bytes, list.nulls().cloned())?;
            Ok(Arc::new(array) as ArrayRef)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(stored.clone(), columns)?)
}

/// Stored vectors (fixed-size binary values of little-endian floats) as
/// the fixed-size list of float32 that `VECTOR(d)` is; the floats are not
/// copied when the bytes are aligned for them.
pub fn binary_to_vectors(
    binary: &FixedSizeBinaryArray,
) -> std::result::Result<FixedSizeListArray, arrow::error::ArrowError> {
    let width = binary.value_length() as usize;
    if !width.is_multiple_of(4) {
        return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "stored vectors of {width} bytes"
        )));
    }
    let dim = width / 4;
    let n = binary.len() * dim;
    let data: &Buffer = binary.values();
    if data.len() < n * 4 {
        return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "{} bytes of stored vectors for {} values of {width}",
            data.len(),
            binary.len()
        )));
    }
    // Parquet's buffers are usually aligned; a copy otherwise.
    let floats: ScalarBuffer<f32> = if data.as_ptr().align_offset(4) == 0 {
        ScalarBuffer::new(data.clone(), 0, n)
    } else {
        data.as_slice()[..n * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let list_type = quiver_vector::column::vector_data_type(dim);
    let DataType::FixedSizeList(item, _) = &list_type else {
        unreachable!("vector_data_type is a fixed-size list");
    };
    FixedSizeListArray::try_new(
        item.clone(),
        dim as i32,
        Arc::new(Float32Array::new(floats, None)),
        binary.nulls().cloned(),
    )
}

/// A batch read from a segment file with its vectors as lists again; a
/// batch with none stored as binary is returned as it is.
pub fn from_stored(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_stored_vector(f)) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_stored_vector(field) {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let list = binary_to_vectors(column.as_fixed_size_binary())
            .map_err(|e| StorageError::Corrupt(format!("column \"{}\": {e}", field.name())))?;
        let list_type = list.data_type().clone();
        let mut meta: HashMap<String, String> = field.metadata().clone();
        meta.remove(STORED_VECTOR);
        fields.push(Field::new(field.name(), list_type, field.is_nullable()).with_metadata(meta));
        columns.push(Arc::new(list) as ArrayRef);
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn vectors_round_trip_through_their_stored_form() {
        let vt = quiver_vector::column::vector_data_type(2);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", vt.clone(), true)
                .with_metadata(HashMap::from([("pg.vector".into(), "vector".into())])),
        ]));
        let DataType::FixedSizeList(item, _) = &vt else {
            unreachable!()
        };
        let list = FixedSizeListArray::try_new(
            item.clone(),
            2,
            Arc::new(Float32Array::from(vec![1.0, 2.0, 0.0, 0.0, 5.5, -6.0])),
            Some(vec![true, false, true].into()),
        )
        .unwrap();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(list)],
        )
        .unwrap();
        let stored = stored_schema(&schema);
        assert_eq!(stored.field(1).data_type(), &DataType::FixedSizeBinary(8));
        assert!(is_stored_vector(stored.field(1)));
        // A slice keeps only its rows.
        let out = to_stored(&batch.slice(1, 2), &stored).unwrap();
        assert_eq!(out.num_rows(), 2);
        let back = from_stored(out).unwrap();
        assert_eq!(back.schema(), batch.slice(1, 2).schema());
        assert_eq!(back, batch.slice(1, 2));
        // A NULL vector's elements may be NULL (as Arrow's casts make them).
        let nulls_inside = FixedSizeListArray::try_new(
            item.clone(),
            2,
            Arc::new(Float32Array::from(vec![Some(1.0), Some(2.0), None, None])),
            Some(vec![true, false].into()),
        )
        .unwrap();
        let two = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(nulls_inside),
            ],
        )
        .unwrap();
        let back = from_stored(to_stored(&two, &stored).unwrap()).unwrap();
        assert!(back.column(1).is_null(1));
        assert_eq!(back.column(1).as_fixed_size_list().value(0).len(), 2);
        // Without vectors nothing changes.
        let plain = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        assert!(Arc::ptr_eq(&stored_schema(&plain), &plain));
    }
}
