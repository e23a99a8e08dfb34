//! Result helpers and the rows of quiver's SHOW statements (collections,
//! segments) as Arrow batches.

use super::*;

pub(super) fn empty_def() -> quiver_catalog::CollectionDef {
    quiver_catalog::CollectionDef {
        id: 0,
        database: String::new(),
        name: String::new(),
        fields: vec![],
        primary_key: None,
        owner: None,
        indexes: vec![],
    }
}

pub(super) fn collections_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("row_count", DataType::Int64, false),
    ]))
}

pub(super) fn segments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("segment_id", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("deleted_rows", DataType::Int64, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("index_state", DataType::Utf8, false),
    ]))
}

pub(super) type SegmentRow = (u64, &'static str, u64, u64, u64, &'static str);

pub(super) fn segments_batch(segs: &[SegmentRow]) -> Result<RecordBatch, QueryError> {
    Ok(RecordBatch::try_new(
        segments_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.0 as i64),
            )),
            Arc::new(StringArray::from_iter_values(segs.iter().map(|s| s.1))),
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.2 as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.3 as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                segs.iter().map(|s| s.4 as i64),
            )),
            Arc::new(StringArray::from_iter_values(segs.iter().map(|s| s.5))),
        ],
    )?)
}

pub(super) fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]))
}

pub(super) fn rows(batch: RecordBatch) -> Result<Output, QueryError> {
    let schema = batch.schema();
    let stream = MemoryStream::try_new(vec![batch], schema.clone(), None)?;
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
    })
}

/// `output` with its columns named as PostgreSQL names them (see
/// [`crate::colnames`]).
pub(super) fn named(output: Output, names: Option<&[crate::colnames::ColumnName]>) -> Output {
    match (output, names) {
        (Output::Rows { schema, stream }, Some(names)) => Output::Rows {
            schema: crate::colnames::rename(&schema, names),
            stream,
        },
        (output, _) => output,
    }
}

pub(super) fn command(tag: impl Into<String>) -> Output {
    Output::Command {
        tag: tag.into(),
        rows: None,
    }
}
