//! `BIT(n)` on the wire. arrow-pg knows no bit type: a bit column (packed
//! bytes) is turned into the form PostgreSQL sends, text `0101` or the
//! binary form (length in bits as int4, then the bytes), before arrow-pg
//! encodes the batch, and its field is described as `bit`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::types::format::FormatOptions;

use quiver_vector::bits::format_bits;
use quiver_vector::column::bit_length_of;

/// The columns of `schema` that hold bit strings, with their length in bits.
fn bit_columns(schema: &Schema) -> Vec<(usize, usize)> {
    schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(i, f)| bit_length_of(f).map(|n| (i, n)))
        .collect()
}

/// Whether a type mark in `field`'s metadata (vector, bit, oid alias,
/// `char`) fits its Arrow type. A cast keeps its input's metadata:
/// `v::text` is text with the vector mark.
fn mark_fits(key: &str, data_type: &DataType) -> bool {
    use arrow_pg::datatypes::{PG_CHAR_KEY, PG_OID_ALIAS_KEY, PG_VECTOR_KEY};
    match key {
        PG_VECTOR_KEY => matches!(
            data_type,
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
        ),
        quiver_vector::column::BIT_METADATA_KEY => {
            matches!(data_type, DataType::FixedSizeBinary(_))
        }
        PG_OID_ALIAS_KEY => data_type.is_integer(),
        PG_CHAR_KEY => matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        quiver_common::pg_array::CATALOG_VECTOR_KEY => matches!(data_type, DataType::List(_)),
        quiver_common::uuid::UUID_METADATA_KEY | quiver_common::json::JSON_METADATA_KEY => {
            data_type == &DataType::Utf8
        }
        _ => true,
    }
}

/// `schema` without type marks that do not fit their fields' types.
fn without_stale_marks(schema: &Schema) -> Option<Schema> {
    let stale = |f: &Field| f.metadata().keys().any(|k| !mark_fits(k, f.data_type()));
    if !schema.fields().iter().any(|f| stale(f)) {
        return None;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut metadata = f.metadata().clone();
            metadata.retain(|k, _| mark_fits(k, f.data_type()));
            f.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    Some(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The wire description of `schema`: arrow-pg's, with bit columns as `bit`.
pub fn wire_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let cleaned = without_stale_marks(schema);
    let schema = cleaned.as_ref().unwrap_or(schema);
    let mut infos = bit_fields(schema, format, options)?;
    // int2vector / oidvector columns of the catalog: arrays of int2 / oid
    // in binary; PostgreSQL's `1 2` in text, described as text (pgwire
    // quotes a text value of an array type, as it would an element).
    for (i, f) in schema.fields().iter().enumerate() {
        let marked = if quiver_common::uuid::is_uuid(f.metadata()) {
            Some(Type::UUID)
        } else if quiver_common::json::is_json(f.metadata()) {
            Some(Type::JSON)
        } else {
            None
        };
        if let Some(pg_type) = marked {
            infos[i] = retyped(&infos[i], pg_type);
            continue;
        }
        let kind = f
            .metadata()
            .get(quiver_common::pg_array::CATALOG_VECTOR_KEY)
            .map(|k| k.as_str());
        let pg_type = match (kind, infos[i].format()) {
            (None, _) => continue,
            (Some(_), FieldFormat::Text) => Type::TEXT,
            (Some("oidvector"), _) => Type::OID_VECTOR,
            (Some(_), _) => Type::INT2_VECTOR,
        };
        infos[i] = retyped(&infos[i], pg_type);
    }
    for (i, f) in schema.fields().iter().enumerate() {
        let number = |key: &str| f.metadata().get(key).and_then(|v| v.parse::<i64>().ok());
        if let (Some(table), Some(column)) = (
            number(quiver_planner::origins::TABLE_OID_KEY),
            number(quiver_planner::origins::ATTNUM_KEY),
        ) {
            let old = &infos[i];
            infos[i] = FieldInfo::new(
                old.name().to_string(),
                Some(table as i32),
                Some(column as i16),
                old.datatype().clone(),
                old.format(),
            )
            .with_format_options(old.format_options().clone());
        }
    }
    Ok(infos)
}

/// The oid-alias kind of `field` other than a plain `oid` (which arrow-pg
/// sends itself): `regproc`, `regclass`, ...
fn oid_alias(field: &Field) -> Option<&str> {
    field
        .metadata()
        .get(arrow_pg::datatypes::PG_OID_ALIAS_KEY)
        .map(|k| k.as_str())
        .filter(|k| *k != "oid")
}

/// `old` described as `pg_type`.
fn retyped(old: &FieldInfo, pg_type: Type) -> FieldInfo {
    FieldInfo::new(
        old.name().to_string(),
        old.table_id(),
        old.column_id(),
        pg_type,
        old.format(),
    )
    .with_format_options(old.format_options().clone())
}

fn bit_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let bits = bit_columns(schema);
    if bits.is_empty() {
        return arrow_schema_to_pg_fields(schema, format, options);
    }
    // Describe the columns as arrow-pg would the converted ones, then name
    // the type.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if bits.iter().any(|(c, _)| *c == i) {
                Field::new(f.name(), converted_type(format.format_for(i)), true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let mut infos = arrow_schema_to_pg_fields(&Schema::new(fields), format, options)?;
    for (i, _) in bits {
        let old = &infos[i];
        infos[i] = retyped(old, Type::BIT);
    }
    Ok(infos)
}

fn converted_type(format: FieldFormat) -> DataType {
    match format {
        FieldFormat::Text => DataType::Utf8,
        FieldFormat::Binary => DataType::Binary,
    }
}

/// `batch` with its bit columns in the form `fields` (from [`wire_fields`])
/// sends them in, and its text-format columns of types arrow-pg writes
/// otherwise than PostgreSQL (floats, times) as PostgreSQL's text
/// ([`super::text_out`]); unchanged when it has none.
pub fn wire_batch(batch: RecordBatch, fields: &[FieldInfo]) -> arrow::error::Result<RecordBatch> {
    let schema: SchemaRef = batch.schema();
    let bits = bit_columns(&schema);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let mut out_fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut changed = false;
    for (i, field) in fields.iter().enumerate().take(columns.len()) {
        // uuids in binary: their 16 bytes.
        if field.format() == FieldFormat::Binary
            && quiver_common::uuid::is_uuid(schema.field(i).metadata())
            && let Some(text) = columns[i].as_string_opt::<i32>()
        {
            let mut b = BinaryBuilder::with_capacity(text.len(), text.len() * 16);
            for v in text.iter() {
                match v.and_then(quiver_common::uuid::to_bytes) {
                    Some(bytes) => b.append_value(bytes),
                    None => b.append_null(),
                }
            }
            out_fields[i] = Field::new(schema.field(i).name(), DataType::Binary, true);
            columns[i] = Arc::new(b.finish());
            changed = true;
            continue;
        }
        // Columns of an oid alias (regproc, regclass, ...): the oid's four
        // bytes in binary; a regproc's function name in text.
        if let Some(kind) = oid_alias(schema.field(i))
            && let Some(oids) = columns[i].as_primitive_opt::<arrow::datatypes::Int32Type>()
        {
            let converted: Option<ArrayRef> = match field.format() {
                FieldFormat::Binary => Some(Arc::new(
                    oids.iter()
                        .map(|v| v.map(|v| v.to_be_bytes()))
                        .collect::<arrow::array::BinaryArray>(),
                )),
                FieldFormat::Text if kind == quiver_common::regproc::REGPROC => Some(Arc::new(
                    oids.iter()
                        .map(|v| v.map(quiver_common::regproc::display))
                        .collect::<arrow::array::StringArray>(),
                )),
                FieldFormat::Text => None,
            };
            if let Some(converted) = converted {
                out_fields[i] =
                    Field::new(schema.field(i).name(), converted.data_type().clone(), true);
                columns[i] = converted;
                changed = true;
                continue;
            }
        }
        if field.format() != FieldFormat::Text || bits.iter().any(|(c, _)| *c == i) {
            continue;
        }
        let vector = is_text_vector(field)
            || schema
                .field(i)
                .metadata()
                .contains_key(arrow_pg::datatypes::PG_VECTOR_KEY);
        if schema
            .field(i)
            .metadata()
            .contains_key(quiver_common::pg_array::CATALOG_VECTOR_KEY)
            && let Some(text) = catalog_vector_text(&columns[i])
        {
            out_fields[i] = Field::new(schema.field(i).name(), DataType::Utf8, true);
            columns[i] = text;
            changed = true;
            continue;
        }
        let extra = field.format_options().extra_float_digits;
        if let Some(text) = super::text_out::text_column(&columns[i], extra, vector) {
            out_fields[i] = Field::new(schema.field(i).name(), text.data_type().clone(), true);
            columns[i] = text;
            changed = true;
        }
    }
    if bits.is_empty() && !changed {
        return Ok(batch);
    }
    for (i, n) in bits {
        let Some(array) = columns[i].as_fixed_size_binary_opt() else {
            continue;
        };
        let format = fields
            .get(i)
            .map(|f| f.format())
            .unwrap_or(FieldFormat::Text);
        let converted: ArrayRef = match format {
            FieldFormat::Text => {
                let mut b = StringBuilder::with_capacity(array.len(), array.len() * n);
                for r in 0..array.len() {
                    if array.is_valid(r) {
                        b.append_value(format_bits(array.value(r), n));
                    } else {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
            FieldFormat::Binary => {
                let mut b = BinaryBuilder::new();
                for r in 0..array.len() {
                    if array.is_valid(r) {
                        let mut value = (n as i32).to_be_bytes().to_vec();
                        value.extend_from_slice(array.value(r));
                        b.append_value(value);
                    } else {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
        };
        out_fields[i] = Field::new(schema.field(i).name(), converted.data_type().clone(), true);
        columns[i] = converted;
    }
    RecordBatch::try_new(Arc::new(Schema::new(out_fields)), columns)
}

/// A text-format column described as a `vector`.
fn is_text_vector(field: &FieldInfo) -> bool {
    field.format() == FieldFormat::Text
        && field.datatype().oid() == arrow_pg::datatypes::PG_VECTOR_TYPE_OID
}

/// The fields arrow-pg encodes [`wire_batch`]'s rows by: `fields`, with
/// text-format vector columns as `text`, for wire_batch has written them
/// as pgvector does (arrow-pg would otherwise format a vector itself).
/// The RowDescription keeps `fields`.
pub fn encoding_fields(fields: &[FieldInfo]) -> Vec<FieldInfo> {
    fields
        .iter()
        .map(|f| {
            if is_text_vector(f) {
                retyped(f, Type::TEXT)
            } else {
                f.clone()
            }
        })
        .collect()
}

/// An int2vector / oidvector column as PostgreSQL's text: the numbers
/// separated by spaces (`1 2`, `` for none).
fn catalog_vector_text(column: &ArrayRef) -> Option<ArrayRef> {
    let list = column.as_list_opt::<i32>()?;
    let mut b = StringBuilder::new();
    for r in 0..list.len() {
        if list.is_null(r) {
            b.append_null();
            continue;
        }
        let values = arrow::compute::cast(&list.value(r), &DataType::Int64).ok()?;
        let values = values.as_primitive::<arrow::datatypes::Int64Type>();
        let text: Vec<String> = values.iter().flatten().map(|v| v.to_string()).collect();
        b.append_value(text.join(" "));
    }
    Some(Arc::new(b.finish()))
}

/// A `bit` parameter in PostgreSQL's text or binary form, as packed bytes
/// of `bits` bits; `None` when it is not a well-formed bit string of that
/// length.
pub fn parameter(raw: &[u8], format: FieldFormat, bits: usize) -> Option<Vec<u8>> {
    match format {
        FieldFormat::Text => {
            let text = std::str::from_utf8(raw).ok()?;
            let mut out = Vec::new();
            quiver_vector::bits::parse_bits_into(text, Some(bits), &mut out).ok()?;
            Some(out)
        }
        FieldFormat::Binary => {
            let n = i32::from_be_bytes(raw.get(..4)?.try_into().ok()?);
            let body = raw.get(4..)?;
            if n as usize != bits || body.len() != quiver_vector::bits::bytes_for(bits) {
                return None;
            }
            // As PostgreSQL's bit_recv: the bits past the length are cleared.
            let mut out = body.to_vec();
            if !bits.is_multiple_of(8)
                && let Some(last) = out.last_mut()
            {
                *last &= 0xffu8 << (8 - bits % 8);
            }
            Some(out)
        }
    }
}
