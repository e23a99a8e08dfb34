//! Collections as PostgreSQL describes tables: column types with their
//! typmods, defaults, primary keys and vector indexes in `pg_class`,
//! `pg_attribute`, `pg_index`, `pg_constraint`, `pg_attrdef` and `pg_am`,
//! pgvector in `pg_extension`, and the functions that print them
//! (`pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_expr`,
//! `format_type`).
//!
//! datafusion-pg-catalog derives its rows from Arrow schemas, which know no
//! keys, indexes, owners, defaults or vector dimensions, and numbers the
//! system tables from 16384 like user tables. These tables start from its
//! rows and add what quiver's catalog knows; system tables get the oids
//! PostgreSQL gives them, so that `'pg_extension'::regclass` matches the
//! `classoid` of the shipped `pg_description` rows.
//!
//! Oids of what quiver adds are derived from catalog ids, so that they are
//! the same in every session: a primary key's index and a vector index are
//! [`INDEX_OID_BASE`] + the collection's or the index's id (one counter
//! numbers both), a primary key constraint [`CONSTRAINT_OID_BASE`] + the
//! collection's id.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::TableProvider;

use quiver_catalog::{Catalog, CollectionDef, FieldType, IndexDef};

pub use crate::pg_functions::{SystemRows, pg_type_oid, udfs};
use quiver_vector::index::{IndexSpec, Method};

/// pgvector's `vector` type (and its array type, the next oid).
pub const VECTOR_TYPE_OID: i32 = arrow_pg::datatypes::PG_VECTOR_TYPE_OID as i32;
pub(crate) const BIT_TYPE_OID: i32 = 1560;
const HEAP_AM_OID: i32 = 2;
const BTREE_AM_OID: i32 = 403;
/// `pg_extension` in `pg_class` (the `classoid` of an extension's comment).
pub(crate) const PG_EXTENSION_CLASS_OID: i32 = 3079;
const PG_CATALOG_NAMESPACE_OID: i32 = 11;
/// The owner of what has none: the bootstrap superuser.
const BOOTSTRAP_SUPERUSER_OID: i32 = 10;
pub const INDEX_OID_BASE: i64 = 1_000_000_000;
/// A collection's oid: this + its id, stable for its life (the catalog
/// crate numbers tables in the order it lists them, which changes as
/// collections come and go and with what the viewer sees). Clients keep
/// it: the table oid of a result column (pgjdbc's `isNullable`).
pub const TABLE_OID_BASE: i64 = 800_000_000;
pub const CONSTRAINT_OID_BASE: i64 = 1_200_000_000;
const ATTRDEF_OID_BASE: i64 = 1_400_000_000;
/// pgvector, which quiver has built in: every database lists it.
pub(crate) const VECTOR_EXTENSION_OID: i32 = 16_300;
const VECTOR_EXTENSION_VERSION: &str = "0.8.0";
const OPCLASS_OID_BASE: i64 = 16_320;
pub(crate) const VECTOR_EXTENSION_COMMENT: &str =
    "vector data type and ivfflat and hnsw access methods";

/// quiver's vector index methods as access methods: pgvector's `hnsw` and
/// `ivfflat`, and the faiss methods pgvector does not have.
pub(crate) const VECTOR_AMS: [(i32, &str, &str); 7] = [
    (16_301, "hnsw", "hnswhandler"),
    (16_302, "ivfflat", "ivfflathandler"),
    (16_303, "flat", "flathandler"),
    (16_304, "ivf_sq8", "ivf_sq8handler"),
    (16_305, "ivf_pq", "ivf_pqhandler"),
    (16_306, "hnsw_sq", "hnsw_sqhandler"),
    (16_307, "ivf_rabitq", "ivf_rabitqhandler"),
];

/// The oids PostgreSQL 15 gives its catalog tables and the views clients
/// join on (`SELECT relname, oid FROM pg_class WHERE relnamespace = 11`).
pub(crate) const SYSTEM_RELATION_OIDS: [(&str, i32); 48] = [
    ("pg_default_acl", 826),
    ("pg_tablespace", 1213),
    ("pg_shdepend", 1214),
    ("pg_type", 1247),
    ("pg_attribute", 1249),
    ("pg_proc", 1255),
    ("pg_class", 1259),
    ("pg_authid", 1260),
    ("pg_auth_members", 1261),
    ("pg_database", 1262),
    ("pg_sequence", 2224),
    ("pg_shdescription", 2396),
    ("pg_aggregate", 2600),
    ("pg_am", 2601),
    ("pg_amop", 2602),
    ("pg_amproc", 2603),
    ("pg_attrdef", 2604),
    ("pg_cast", 2605),
    ("pg_constraint", 2606),
    ("pg_conversion", 2607),
    ("pg_depend", 2608),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_inherits", 2611),
    ("pg_language", 2612),
    ("pg_namespace", 2615),
    ("pg_opclass", 2616),
    ("pg_operator", 2617),
    ("pg_rewrite", 2618),
    ("pg_statistic", 2619),
    ("pg_trigger", 2620),
    ("pg_opfamily", 2753),
    ("pg_db_role_setting", 2964),
    ("pg_extension", 3079),
    ("pg_policy", 3256),
    ("pg_partitioned_table", 3350),
    ("pg_statistic_ext", 3381),
    ("pg_collation", 3456),
    ("pg_enum", 3501),
    ("pg_range", 3541),
    ("pg_publication", 6104),
    ("pg_publication_rel", 6106),
    ("pg_roles", 12000),
    ("pg_user", 12014),
    ("pg_views", 12028),
    ("pg_tables", 12033),
    ("pg_indexes", 12043),
    ("pg_settings", 12104),
];

pub(crate) type Row = Vec<ScalarValue>;

/// A small catalog table as rows of scalars, to patch and extend.
pub(crate) struct Rows {
    pub(crate) schema: SchemaRef,
    pub(crate) rows: Vec<Row>,
}

impl Rows {
    pub(crate) async fn of(table: &Arc<dyn TableProvider>) -> Result<Rows> {
        Self::from_batches(table.schema(), &crate::pg_users::rows_of(table).await?)
    }

    pub(crate) fn from_batches(
        schema: SchemaRef,
        batches: &[arrow::array::RecordBatch],
    ) -> Result<Rows> {
        let mut rows = Vec::new();
        for batch in batches {
            for i in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c, i))
                        .collect::<Result<Row>>()?,
                );
            }
        }
        Ok(Rows { schema, rows })
    }

    pub(crate) fn col(&self, name: &str) -> Result<usize> {
        Ok(self.schema.index_of(name)?)
    }

    pub(crate) fn int(&self, row: &Row, name: &str) -> Result<Option<i64>> {
        let v = &row[self.col(name)?];
        if v.is_null() {
            return Ok(None);
        }
        Ok(match v.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(v) => v,
            _ => None,
        })
    }

    pub(crate) fn text(&self, row: &Row, name: &str) -> Result<Option<String>> {
        Ok(match &row[self.col(name)?] {
            ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                v.clone()
            }
            _ => None,
        })
    }

    /// A row of defaults: zero, false or '' in NOT NULL columns, NULL in
    /// the others.
    pub(crate) fn blank(&self) -> Row {
        self.schema
            .fields()
            .iter()
            .map(|f| {
                let null = ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null);
                if f.is_nullable() {
                    return null;
                }
                match f.data_type() {
                    DataType::Utf8 => ScalarValue::Utf8(Some(String::new())),
                    DataType::Boolean => ScalarValue::Boolean(Some(false)),
                    dt => ScalarValue::new_zero(dt).unwrap_or(null),
                }
            })
            .collect()
    }

    pub(crate) fn set(&self, row: &mut Row, name: &str, value: ScalarValue) -> Result<()> {
        let i = self.col(name)?;
        let dt = self.schema.field(i).data_type();
        row[i] = if &value.data_type() == dt || value.is_null() && dt.is_nested() {
            value
        } else {
            value.cast_to(dt)?
        };
        if row[i].is_null() && !row[i].data_type().equals_datatype(dt) {
            row[i] = ScalarValue::try_from(dt)?;
        }
        Ok(())
    }

    pub(crate) fn into_table(self) -> Result<Arc<dyn TableProvider>> {
        let schema = self.schema.clone();
        let batch = self.into_batch()?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    pub(crate) fn into_batch(self) -> Result<arrow::array::RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, f)| -> Result<ArrayRef> {
                if self.rows.is_empty() {
                    return Ok(arrow::array::new_empty_array(f.data_type()));
                }
                let array = ScalarValue::iter_to_array(self.rows.iter().map(|r| r[c].clone()))?;
                Ok(if array.data_type() == f.data_type() {
                    array
                } else {
                    arrow::compute::cast(&array, f.data_type())?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(arrow::array::RecordBatch::try_new(self.schema, columns)?)
    }
}

fn int(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}
fn text(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_string()))
}
fn boolean(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
fn int2_list(values: &[i64]) -> ScalarValue {
    let items: Vec<ScalarValue> = values
        .iter()
        .map(|v| ScalarValue::Int16(Some(*v as i16)))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Int16))
}
fn int4_list(values: &[i64]) -> ScalarValue {
    let items: Vec<ScalarValue> = values
        .iter()
        .map(|v| ScalarValue::Int32(Some(*v as i32)))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Int32))
}

fn derived_oid(base: i64, id: u64) -> i64 {
    base.saturating_add(id.min(i32::MAX as u64) as i64)
        .min(i32::MAX as i64)
}

/// The oid of a collection (of its `pg_class` row).
pub fn table_oid(def: &CollectionDef) -> i64 {
    derived_oid(TABLE_OID_BASE, def.id)
}

/// The oid of a collection's primary key index.
pub fn pkey_index_oid(def: &CollectionDef) -> i64 {
    derived_oid(INDEX_OID_BASE, def.id)
}

pub(crate) fn index_oid(index: &IndexDef) -> i64 {
    derived_oid(INDEX_OID_BASE, index.id)
}

pub(crate) fn constraint_oid(def: &CollectionDef) -> i64 {
    derived_oid(CONSTRAINT_OID_BASE, def.id)
}

fn attrdef_oid(def: &CollectionDef, attnum: usize) -> i64 {
    derived_oid(
        ATTRDEF_OID_BASE,
        def.id.saturating_mul(2048).saturating_add(attnum as u64),
    )
}

/// A default as PostgreSQL prints it back: a string constant of a
/// non-numeric type with its type (`'n'::text`, `'{}'::json`).
fn deparsed_default(text: &str, t: &FieldType) -> String {
    let quoted = text.len() >= 2
        && text.starts_with('\'')
        && text.ends_with('\'')
        && !text[1..text.len() - 1].replace("''", "").contains('\'');
    let name = match t {
        FieldType::Text => "text",
        FieldType::Json => "json",
        FieldType::Uuid => "uuid",
        FieldType::Bytea => "bytea",
        FieldType::Date => "date",
        FieldType::Timestamp => "timestamp without time zone",
        FieldType::TimestampTz => "timestamp with time zone",
        _ => return text.to_string(),
    };
    if quoted {
        format!("{text}::{name}")
    } else {
        text.to_string()
    }
}

/// The type oid and typmod of a column of type `t`.
pub fn column_type(t: &FieldType) -> (i64, i64) {
    let p = pg_type_of(t);
    (p.oid, p.typmod)
}

/// A column's default as PostgreSQL prints it (`'n'::text`,
/// `nextval('t_id_seq'::regclass)` for a serial column).
pub fn column_default(def: &CollectionDef, f: &quiver_catalog::FieldDef) -> Option<String> {
    match (&f.default, f.auto_increment) {
        (Some(d), _) => Some(deparsed_default(d, &f.field_type)),
        (None, true) => Some(format!("nextval('{}_{}_seq'::regclass)", def.name, f.name)),
        (None, false) => None,
    }
}

/// `rows` with the text columns `columns` (PostgreSQL array text, `{1,2}`,
/// or an int2vector's `1 2`) as lists of the given item type.
fn with_array_columns(rows: Rows, columns: &[(&str, DataType)]) -> Result<Rows> {
    let list =
        |item: &DataType| DataType::List(Arc::new(Field::new_list_field(item.clone(), true)));
    let fields: Vec<Field> = rows
        .schema
        .fields()
        .iter()
        .map(|f| match columns.iter().find(|(n, _)| n == f.name()) {
            Some((_, item)) => Field::new(f.name(), list(item), true),
            None => f.as_ref().clone(),
        })
        .collect();
    let mut out = Rows {
        schema: Arc::new(Schema::new_with_metadata(
            fields,
            rows.schema.metadata().clone(),
        )),
        rows: Vec::new(),
    };
    for row in &rows.rows {
        let mut row = row.clone();
        for (name, item) in columns {
            let Ok(i) = out.col(name) else { continue };
            let value = match rows.text(&row, name)? {
                None => ScalarValue::try_from(&list(item))?,
                Some(text) if *item == DataType::Utf8 => {
                    let items: Vec<ScalarValue> = quiver_common::pg_array::parse(&text)
                        .unwrap_or_default()
                        .into_iter()
                        .map(ScalarValue::Utf8)
                        .collect();
                    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Utf8))
                }
                Some(text) => {
                    let numbers: Vec<i64> = text
                        .trim_matches(|c| c == '{' || c == '}')
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter_map(|n| n.trim().parse().ok())
                        .collect();
                    if *item == DataType::Int16 {
                        int2_list(&numbers)
                    } else {
                        int4_list(&numbers)
                    }
                }
            };
            row[i] = value;
        }
        out.rows.push(row);
    }
    Ok(out)
}

/// The name PostgreSQL gives a primary key (its constraint and index).
pub fn pkey_name(def: &CollectionDef) -> String {
    format!("{}_pkey", def.name)
}

/// How PostgreSQL stores a column of this type.
struct PgType {
    oid: i64,
    typmod: i64,
    len: i64,
    byval: bool,
    align: &'static str,
    storage: &'static str,
    ndims: i64,
}

fn element_type(t: &FieldType) -> (i64, i64, i64, bool, &'static str, &'static str, i64) {
    // (oid, array oid, len, byval, align, storage, typmod)
    match t {
        FieldType::Bool => (16, 1000, 1, true, "c", "p", -1),
        FieldType::Int16 => (21, 1005, 2, true, "s", "p", -1),
        FieldType::Int32 => (23, 1007, 4, true, "i", "p", -1),
        FieldType::Int64 => (20, 1016, 8, true, "d", "p", -1),
        FieldType::Float32 => (700, 1021, 4, true, "i", "p", -1),
        FieldType::Float64 => (701, 1022, 8, true, "d", "p", -1),
        FieldType::Decimal { precision, scale } => (
            1700,
            1231,
            -1,
            false,
            "i",
            "m",
            ((*precision as i64) << 16 | (*scale as i64 & 0xffff)) + 4,
        ),
        FieldType::Text => (25, 1009, -1, false, "i", "x", -1),
        FieldType::Json => (114, 199, -1, false, "i", "x", -1),
        FieldType::Uuid => (2950, 2951, 16, false, "c", "p", -1),
        FieldType::Bytea => (17, 1001, -1, false, "i", "x", -1),
        FieldType::Date => (1082, 1182, 4, true, "i", "p", -1),
        FieldType::Timestamp => (1114, 1115, 8, true, "d", "p", -1),
        FieldType::TimestampTz => (1184, 1185, 8, true, "d", "p", -1),
        FieldType::Vector { dim } => (
            VECTOR_TYPE_OID as i64,
            VECTOR_TYPE_OID as i64 + 1,
            -1,
            false,
            "i",
            "e",
            *dim as i64,
        ),
        FieldType::Bit { bits } => (BIT_TYPE_OID as i64, 1561, -1, false, "i", "x", *bits as i64),
        FieldType::Array(inner) => element_type(inner),
    }
}

fn pg_type_of(t: &FieldType) -> PgType {
    let (oid, array_oid, len, byval, align, storage, typmod) = element_type(t);
    match t {
        FieldType::Array(inner) => {
            let mut ndims = 1;
            let mut inner = inner.as_ref();
            while let FieldType::Array(i) = inner {
                ndims += 1;
                inner = i;
            }
            PgType {
                oid: array_oid,
                typmod: -1,
                len: -1,
                byval: false,
                align: if align == "d" { "d" } else { "i" },
                storage: "x",
                ndims,
            }
        }
        _ => PgType {
            oid,
            typmod,
            len,
            byval,
            align,
            storage,
            ndims: 0,
        },
    }
}

/// The access method of a vector index, under pgvector's name where
/// pgvector has it (`ivfflat`; its bit-string form too).
fn am_name(method: &Method) -> &'static str {
    match method {
        Method::Hnsw { .. } => "hnsw",
        Method::IvfFlat { .. } | Method::BinIvfFlat { .. } => "ivfflat",
        Method::Flat | Method::BinFlat => "flat",
        Method::IvfSq8 { .. } => "ivf_sq8",
        Method::IvfPq { .. } => "ivf_pq",
        Method::HnswSq { .. } => "hnsw_sq",
        Method::IvfRabitq { .. } => "ivf_rabitq",
    }
}

fn am_oid(method: &Method) -> i64 {
    let name = am_name(method);
    VECTOR_AMS
        .iter()
        .find(|(_, n, _)| *n == name)
        .map_or(0, |(oid, _, _)| *oid as i64)
}

/// `name` as PostgreSQL prints an identifier: bare when it is a plain
/// lower-case name, double-quoted otherwise.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The `WITH (...)` of an index: the parameters that differ from the
/// method's defaults, as `CREATE INDEX` would take them.
fn index_options(spec: &IndexSpec) -> String {
    let changed: Vec<String> = changed_params(spec)
        .iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect();
    if changed.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", changed.join(", "))
    }
}

/// The parameters of an index that differ from its method's defaults
/// (what `CREATE INDEX ... WITH (...)` set), in order.
fn changed_params(spec: &IndexSpec) -> Vec<(String, String)> {
    let defaults = IndexSpec::parse(
        spec.method.name(),
        spec.metric,
        spec.dim,
        &Default::default(),
    )
    .map(|d| d.method.params())
    .unwrap_or_default();
    let defaults: Vec<&str> = defaults.split(", ").collect();
    spec.method
        .params()
        .split(", ")
        .filter(|p| !p.is_empty() && !defaults.contains(p))
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Operator classes of the vector access methods: pgvector's for `hnsw`
/// and `ivfflat` (which make only `ivfflat`'s `vector_l2_ops` the default),
/// and for quiver's other methods the classes `CREATE INDEX` takes, with
/// `vector_l2_ops` as default as there.
fn vector_opclasses() -> Vec<(i64, i64, &'static str, i64, bool)> {
    // (oid, access method oid, name, input type, default)
    let vector = VECTOR_TYPE_OID as i64;
    let bit = BIT_TYPE_OID as i64;
    let mut out = Vec::new();
    for (k, (am, name, _)) in VECTOR_AMS.iter().enumerate() {
        let pgvector = matches!(*name, "hnsw" | "ivfflat");
        let classes: &[(&str, i64)] = match *name {
            "hnsw" => &[
                ("vector_l2_ops", vector),
                ("vector_ip_ops", vector),
                ("vector_cosine_ops", vector),
                ("bit_hamming_ops", bit),
                ("bit_jaccard_ops", bit),
                ("vector_l1_ops", vector),
            ],
            "ivfflat" | "flat" => &[
                ("vector_l2_ops", vector),
                ("vector_ip_ops", vector),
                ("vector_cosine_ops", vector),
                ("bit_hamming_ops", bit),
                ("bit_jaccard_ops", bit),
            ],
            _ => &[
                ("vector_l2_ops", vector),
                ("vector_ip_ops", vector),
                ("vector_cosine_ops", vector),
            ],
        };
        for (j, (class, input)) in classes.iter().enumerate() {
            let default = *class == "vector_l2_ops" && (*name != "hnsw" || !pgvector);
            out.push((
                OPCLASS_OID_BASE + (k * 8 + j) as i64,
                *am as i64,
                *class,
                *input,
                default,
            ));
        }
    }
    out
}

fn opclass_oid(index: &IndexDef) -> i64 {
    let am = am_oid(&index.spec.method);
    let name = crate::index_ddl::opclass_name(index);
    vector_opclasses()
        .into_iter()
        .find(|(_, m, n, _, _)| *m == am && *n == name)
        .map_or(0, |(oid, ..)| oid)
}

/// `pg_policies`: quiver has no row security policies.
pub fn pg_policies() -> Result<Arc<dyn TableProvider>> {
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, true),
        Field::new("tablename", DataType::Utf8, true),
        Field::new("policyname", DataType::Utf8, true),
        Field::new("permissive", DataType::Utf8, true),
        Field::new("roles", list, true),
        Field::new("cmd", DataType::Utf8, true),
        Field::new("qual", DataType::Utf8, true),
        Field::new("with_check", DataType::Utf8, true),
    ]));
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

/// The `pg_indexes` view: a row per index of each collection `viewer`
/// sees (its primary key's and its vector indexes), with the definition
/// `pg_get_indexdef` gives.
pub fn pg_indexes(
    catalog: &Catalog,
    database: &str,
    viewer: &str,
) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(
        [
            "schemaname",
            "tablename",
            "indexname",
            "tablespace",
            "indexdef",
        ]
        .map(|n| Field::new(n, DataType::Utf8, true))
        .to_vec(),
    ));
    let mut columns: [StringBuilder; 5] = std::array::from_fn(|_| StringBuilder::new());
    for name in catalog.collection_names(database) {
        let Some(def) = catalog.collection(database, &name) else {
            continue;
        };
        if def.name != name || !crate::access::sees(catalog, viewer, &def) {
            continue;
        }
        for (_, index) in Relations::indexes(&def) {
            let Some(definition) = index_def(&def, index, true) else {
                continue;
            };
            let index_name = index.map_or_else(|| pkey_name(&def), |i| i.name.clone());
            columns[0].append_value(crate::catalog_provider::PUBLIC_SCHEMA);
            columns[1].append_value(&def.name);
            columns[2].append_value(index_name);
            columns[3].append_null();
            columns[4].append_value(definition);
        }
    }
    let arrays: Vec<ArrayRef> = columns
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let batch = arrow::array::RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `pg_get_indexdef` of a collection's index (`None`: the primary key's).
pub(crate) fn index_def(
    def: &CollectionDef,
    index: Option<&IndexDef>,
    qualified: bool,
) -> Option<String> {
    let table = if qualified {
        format!(
            "{}.{}",
            crate::catalog_provider::PUBLIC_SCHEMA,
            quote_ident(&def.name)
        )
    } else {
        quote_ident(&def.name)
    };
    Some(match index {
        None => {
            let key = def.fields.get(def.primary_key?)?;
            format!(
                "CREATE UNIQUE INDEX {} ON {table} USING btree ({})",
                quote_ident(&pkey_name(def)),
                quote_ident(&key.name)
            )
        }
        Some(index) => {
            let column = def.fields.get(index.field)?;
            format!(
                "CREATE INDEX {} ON {table} USING {} ({} {}){}",
                quote_ident(&index.name),
                am_name(&index.spec.method),
                quote_ident(&column.name),
                crate::index_ddl::opclass_name(index),
                index_options(&index.spec)
            )
        }
    })
}

/// A collection's row oid in datafusion-pg-catalog's `pg_class`, and the
/// system tables' oids there mapped to PostgreSQL's.
struct Base {
    class: Rows,
    public: Option<i64>,
    /// Collections with the oid their table has ([`table_oid`]).
    collections: Vec<(i64, Arc<CollectionDef>)>,
    /// System tables' oids in the catalog crate → PostgreSQL's.
    remap: HashMap<i64, i64>,
    /// Collections' oids in the catalog crate → [`table_oid`].
    moved: HashMap<i64, i64>,
}

/// Builds the tables for one session's database and user.
pub struct Relations<'a> {
    pub inner: &'a dyn SchemaProvider,
    pub catalog: &'a Catalog,
    pub database: &'a str,
}

impl Relations<'_> {
    /// The tables this module replaces.
    pub const TABLES: [&'static str; 13] = [
        "pg_opclass",
        "pg_class",
        "pg_attribute",
        "pg_index",
        "pg_constraint",
        "pg_attrdef",
        "pg_am",
        "pg_extension",
        "pg_description",
        "pg_depend",
        "pg_policy",
        "pg_statistic_ext",
        "pg_publication_rel",
    ];

    pub async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(inner) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let table = match name {
            "pg_class" => self.pg_class().await?,
            "pg_attribute" => self.pg_attribute().await?,
            "pg_index" => self.pg_index(&inner).await?,
            "pg_constraint" => self.pg_constraint(&inner).await?,
            "pg_attrdef" => self.pg_attrdef(&inner).await?,
            "pg_am" => Self::pg_am(&inner).await?,
            "pg_opclass" => self.pg_opclass(&inner).await?,
            "pg_extension" => self.pg_extension(&inner).await?,
            "pg_description" => Self::pg_description(&inner).await?,
            "pg_depend" => Self::pg_depend(&inner).await?,
            // Their array columns as arrays (psql's `\d` reads them with
            // `= any(...)` and subscripts).
            "pg_policy" => Self::with_arrays(&inner, &[("polroles", DataType::Int32)]).await?,
            "pg_statistic_ext" => {
                Self::with_arrays(
                    &inner,
                    &[("stxkeys", DataType::Int16), ("stxkind", DataType::Utf8)],
                )
                .await?
            }
            "pg_publication_rel" => {
                Self::with_arrays(&inner, &[("prattrs", DataType::Int16)]).await?
            }
            _ => inner,
        };
        Ok(Some(table))
    }

    async fn base(&self) -> Result<Base> {
        let mut public = None;
        if let Some(ns) = self.inner.table("pg_namespace").await? {
            let ns = Rows::of(&ns).await?;
            for row in &ns.rows {
                if ns.text(row, "nspname")?.as_deref()
                    == Some(crate::catalog_provider::PUBLIC_SCHEMA)
                {
                    public = ns.int(row, "oid")?;
                }
            }
        }
        let Some(class) = self.inner.table("pg_class").await? else {
            return Err(datafusion::error::DataFusionError::Plan(
                "pg_class is missing".into(),
            ));
        };
        let class = Rows::of(&class).await?;
        let mut collections = Vec::new();
        let mut remap = HashMap::new();
        let mut moved = HashMap::new();
        for row in &class.rows {
            let (Some(oid), Some(ns), Some(name)) = (
                class.int(row, "oid")?,
                class.int(row, "relnamespace")?,
                class.text(row, "relname")?,
            ) else {
                continue;
            };
            if Some(ns) == public {
                if let Some(def) = self.catalog.collection(self.database, &name)
                    && def.name == name
                {
                    moved.insert(oid, table_oid(&def));
                    collections.push((table_oid(&def), def));
                }
            } else if ns == PG_CATALOG_NAMESPACE_OID as i64
                && let Some((_, real)) = SYSTEM_RELATION_OIDS.iter().find(|(n, _)| *n == name)
            {
                remap.insert(oid, *real as i64);
            }
        }
        Ok(Base {
            class,
            public,
            collections,
            remap,
            moved,
        })
    }

    fn owner_oid(&self, def: &CollectionDef) -> i64 {
        self.catalog.security(|s| {
            def.owner
                .as_ref()
                .and_then(|o| {
                    crate::pg_users::role_oids(s)
                        .into_iter()
                        .find(|(name, _)| name == o)
                })
                .map_or(BOOTSTRAP_SUPERUSER_OID, |(_, oid)| oid) as i64
        })
    }

    /// The indexes of a collection: its primary key's (`None`), then its
    /// vector indexes, with their oids.
    fn indexes(def: &CollectionDef) -> Vec<(i64, Option<&IndexDef>)> {
        def.primary_key
            .map(|_| (pkey_index_oid(def), None))
            .into_iter()
            .chain(def.indexes.iter().map(|i| (index_oid(i), Some(i))))
            .collect()
    }

    async fn pg_class(&self) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        let list = |item: DataType| DataType::List(Arc::new(Field::new_list_field(item, true)));
        let mut fields: Vec<Field> = base
            .class
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("reloptions", list(DataType::Utf8), true));
        fields.push(Field::new("relacl", list(DataType::Utf8), true));
        let mut out = Rows {
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                base.class.schema.metadata().clone(),
            )),
            rows: Vec::new(),
        };
        let extra = out.schema.fields().len() - base.class.schema.fields().len();
        for row in &base.class.rows {
            let mut row = row.clone();
            for f in &out.schema.fields()[out.schema.fields().len() - extra..] {
                row.push(ScalarValue::try_from(f.data_type())?);
            }
            let oid = base.class.int(&row, "oid")?.unwrap_or(0);
            if let Some(real) = base.remap.get(&oid) {
                out.set(&mut row, "oid", int(*real))?;
                out.set(&mut row, "relfilenode", int(0))?;
            }
            let oid = base.moved.get(&oid).copied().unwrap_or(oid);
            if let Some((_, def)) = base.collections.iter().find(|(o, _)| *o == oid) {
                out.set(&mut row, "oid", int(oid))?;
                out.set(&mut row, "relfilenode", int(oid))?;
                out.set(&mut row, "relowner", int(self.owner_oid(def)))?;
                out.set(&mut row, "relam", int(HEAP_AM_OID as i64))?;
                out.set(
                    &mut row,
                    "relhasindex",
                    boolean(!Self::indexes(def).is_empty()),
                )?;
                out.set(&mut row, "relpages", int(0))?;
                out.set(&mut row, "reltuples", ScalarValue::Float64(Some(-1.0)))?;
            }
            out.rows.push(row);
        }
        for (table_oid, def) in &base.collections {
            let _ = table_oid;
            for (oid, index) in Self::indexes(def) {
                let mut row = out.blank();
                let name = match index {
                    Some(i) => i.name.clone(),
                    None => pkey_name(def),
                };
                out.set(&mut row, "oid", int(oid))?;
                out.set(&mut row, "relname", text(&name))?;
                out.set(&mut row, "relnamespace", int(base.public.unwrap_or(0)))?;
                out.set(&mut row, "relowner", int(self.owner_oid(def)))?;
                let am = index.map_or(BTREE_AM_OID as i64, |i| am_oid(&i.spec.method));
                out.set(&mut row, "relam", int(am))?;
                out.set(&mut row, "relfilenode", int(oid))?;
                out.set(&mut row, "relpages", int(1))?;
                out.set(&mut row, "reltuples", ScalarValue::Float64(Some(-1.0)))?;
                out.set(&mut row, "relpersistence", text("p"))?;
                out.set(&mut row, "relkind", text("i"))?;
                out.set(&mut row, "relnatts", int(1))?;
                out.set(&mut row, "relispopulated", boolean(true))?;
                out.set(&mut row, "relreplident", text("n"))?;
                if let Some(i) = index {
                    let options: Vec<ScalarValue> = changed_params(&i.spec)
                        .into_iter()
                        .map(|(k, v)| ScalarValue::Utf8(Some(format!("{k}={v}"))))
                        .collect();
                    if !options.is_empty() {
                        let c = out.col("reloptions")?;
                        row[c] = ScalarValue::List(ScalarValue::new_list_nullable(
                            &options,
                            &DataType::Utf8,
                        ));
                    }
                }
                out.rows.push(row);
            }
        }
        out.into_table()
    }

    async fn pg_attribute(&self) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        let Some(inner) = self.inner.table("pg_attribute").await? else {
            return Err(datafusion::error::DataFusionError::Plan(
                "pg_attribute is missing".into(),
            ));
        };
        let attrs = Rows::of(&inner).await?;
        let mut out = Rows {
            schema: attrs.schema.clone(),
            rows: Vec::new(),
        };
        for row in &attrs.rows {
            let relid = attrs.int(row, "attrelid")?.unwrap_or(0);
            if base.moved.contains_key(&relid) {
                continue;
            }
            let mut row = row.clone();
            if let Some(real) = base.remap.get(&relid) {
                out.set(&mut row, "attrelid", int(*real))?;
            }
            out.rows.push(row);
        }
        for (table_oid, def) in &base.collections {
            let column = |out: &Rows, relid: i64, attnum: usize, field: usize| -> Result<Row> {
                let f = &def.fields[field];
                let t = pg_type_of(&f.field_type);
                let mut row = out.blank();
                out.set(&mut row, "attrelid", int(relid))?;
                out.set(&mut row, "attname", text(&f.name))?;
                out.set(&mut row, "atttypid", int(t.oid))?;
                out.set(&mut row, "attstattarget", int(-1))?;
                out.set(&mut row, "attlen", int(t.len))?;
                out.set(&mut row, "attnum", int(attnum as i64))?;
                out.set(&mut row, "attndims", int(t.ndims))?;
                out.set(&mut row, "attcacheoff", int(-1))?;
                out.set(&mut row, "atttypmod", int(t.typmod))?;
                out.set(&mut row, "attbyval", boolean(t.byval))?;
                out.set(&mut row, "attalign", text(t.align))?;
                out.set(&mut row, "attstorage", text(t.storage))?;
                out.set(&mut row, "attislocal", boolean(true))?;
                let collatable = matches!(f.field_type, FieldType::Text);
                out.set(
                    &mut row,
                    "attcollation",
                    int(if collatable { 100 } else { 0 }),
                )?;
                Ok(row)
            };
            for (i, f) in def.fields.iter().enumerate() {
                let mut row = column(&out, *table_oid, i + 1, i)?;
                let key = def.primary_key == Some(i);
                out.set(&mut row, "attnotnull", boolean(key || !f.nullable))?;
                out.set(
                    &mut row,
                    "atthasdef",
                    boolean(f.default.is_some() || f.auto_increment),
                )?;
                out.rows.push(row);
            }
            for (oid, index) in Self::indexes(def) {
                let field = match index {
                    Some(i) => i.field,
                    None => def.primary_key.unwrap_or(0),
                };
                if field < def.fields.len() {
                    let mut row = column(&out, oid, 1, field)?;
                    out.set(&mut row, "attstattarget", int(0))?;
                    out.rows.push(row);
                }
            }
        }
        out.into_table()
    }

    /// `pg_index` with its vectors as arrays (`indkey` is an `int2vector`:
    /// SQLAlchemy and JDBC unnest it), and a row per collection index.
    async fn pg_index(&self, inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        let rows = Rows::of(inner).await?;
        let vectors = [
            ("indkey", DataType::Int16),
            ("indcollation", DataType::Int32),
            ("indclass", DataType::Int32),
            ("indoption", DataType::Int16),
        ];
        // int2vector / oidvector: arrays in queries, marked for the wire.
        let mut out = with_array_columns(rows, &vectors)?;
        let fields: Vec<Field> = out
            .schema
            .fields()
            .iter()
            .map(|f| match vectors.iter().find(|(n, _)| n == f.name()) {
                Some((_, item)) => {
                    let kind = if *item == DataType::Int16 {
                        "int2vector"
                    } else {
                        "oidvector"
                    };
                    f.as_ref().clone().with_metadata(
                        [(
                            quiver_common::pg_array::CATALOG_VECTOR_KEY.to_string(),
                            kind.to_string(),
                        )]
                        .into(),
                    )
                }
                None => f.as_ref().clone(),
            })
            .collect();
        out.schema = Arc::new(Schema::new_with_metadata(
            fields,
            out.schema.metadata().clone(),
        ));
        // The default btree class of each type (a primary key's).
        let mut btree_opclasses = HashMap::new();
        if let Some(classes) = self.inner.table("pg_opclass").await? {
            let classes = Rows::of(&classes).await?;
            for r in &classes.rows {
                if classes.int(r, "opcmethod")? == Some(BTREE_AM_OID as i64)
                    && matches!(
                        r[classes.col("opcdefault")?],
                        ScalarValue::Boolean(Some(true))
                    )
                    && let (Some(oid), Some(input)) =
                        (classes.int(r, "oid")?, classes.int(r, "opcintype")?)
                {
                    btree_opclasses.insert(input, oid);
                }
            }
        }
        for (table_oid, def) in &base.collections {
            for (oid, index) in Self::indexes(def) {
                let field = match index {
                    Some(i) => i.field,
                    None => def.primary_key.unwrap_or(0),
                };
                let primary = index.is_none();
                let mut row = out.blank();
                out.set(&mut row, "indexrelid", int(oid))?;
                out.set(&mut row, "indrelid", int(*table_oid))?;
                out.set(&mut row, "indnatts", int(1))?;
                out.set(&mut row, "indnkeyatts", int(1))?;
                out.set(&mut row, "indisunique", boolean(primary))?;
                out.set(&mut row, "indisprimary", boolean(primary))?;
                out.set(&mut row, "indimmediate", boolean(true))?;
                out.set(&mut row, "indisvalid", boolean(true))?;
                out.set(&mut row, "indisready", boolean(true))?;
                out.set(&mut row, "indislive", boolean(true))?;
                let i = out.col("indkey")?;
                row[i] = int2_list(&[field as i64 + 1]);
                let collatable = def
                    .fields
                    .get(field)
                    .is_some_and(|f| matches!(f.field_type, FieldType::Text));
                let i = out.col("indcollation")?;
                row[i] = int4_list(&[if collatable { 100 } else { 0 }]);
                let class = match index {
                    Some(i) => opclass_oid(i),
                    None => def
                        .fields
                        .get(field)
                        .and_then(|f| btree_opclasses.get(&pg_type_of(&f.field_type).oid))
                        .copied()
                        .unwrap_or(0),
                };
                let i = out.col("indclass")?;
                row[i] = int4_list(&[class]);
                let i = out.col("indoption")?;
                row[i] = int2_list(&[0]);
                out.rows.push(row);
            }
        }
        out.into_table()
    }

    async fn pg_constraint(
        &self,
        inner: &Arc<dyn TableProvider>,
    ) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        // PostgreSQL's arrays (`int2[]`, `oid[]`), which the shipped rows
        // hold as text (`{1,2}`): tools test `attnum = ANY(conkey)`.
        let mut out = with_array_columns(
            Rows::of(inner).await?,
            &[
                ("conkey", DataType::Int16),
                ("confkey", DataType::Int16),
                ("conpfeqop", DataType::Int32),
                ("conppeqop", DataType::Int32),
                ("conffeqop", DataType::Int32),
                ("confdelsetcols", DataType::Int16),
                ("conexclop", DataType::Int32),
            ],
        )?;
        for (table_oid, def) in &base.collections {
            let Some(key) = def.primary_key else {
                continue;
            };
            let mut row = out.blank();
            out.set(&mut row, "oid", int(constraint_oid(def)))?;
            out.set(&mut row, "conname", text(&pkey_name(def)))?;
            out.set(&mut row, "connamespace", int(base.public.unwrap_or(0)))?;
            out.set(&mut row, "contype", text("p"))?;
            out.set(&mut row, "convalidated", boolean(true))?;
            out.set(&mut row, "conrelid", int(*table_oid))?;
            out.set(&mut row, "conindid", int(pkey_index_oid(def)))?;
            out.set(&mut row, "confupdtype", text(" "))?;
            out.set(&mut row, "confdeltype", text(" "))?;
            out.set(&mut row, "confmatchtype", text(" "))?;
            out.set(&mut row, "conislocal", boolean(true))?;
            out.set(&mut row, "connoinherit", boolean(true))?;
            out.set(&mut row, "conkey", int2_list(&[key as i64 + 1]))?;
            out.rows.push(row);
        }
        out.into_table()
    }

    async fn pg_attrdef(&self, inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        let mut out = Rows::of(inner).await?;
        for (table_oid, def) in &base.collections {
            for (i, f) in def.fields.iter().enumerate() {
                let Some(expr) = column_default(def, f) else {
                    continue;
                };
                let mut row = out.blank();
                out.set(&mut row, "oid", int(attrdef_oid(def, i + 1)))?;
                out.set(&mut row, "adrelid", int(*table_oid))?;
                out.set(&mut row, "adnum", int(i as i64 + 1))?;
                out.set(&mut row, "adbin", text(&expr))?;
                out.rows.push(row);
            }
        }
        out.into_table()
    }

    async fn pg_am(inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        let mut out = Rows::of(inner).await?;
        for (oid, name, handler) in VECTOR_AMS {
            let mut row = out.blank();
            out.set(&mut row, "oid", int(oid as i64))?;
            out.set(&mut row, "amname", text(name))?;
            out.set(&mut row, "amhandler", text(handler))?;
            out.set(&mut row, "amtype", text("i"))?;
            out.rows.push(row);
        }
        out.into_table()
    }

    async fn pg_opclass(&self, inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        let mut out = Rows::of(inner).await?;
        for (oid, am, name, input, default) in vector_opclasses() {
            let mut row = out.blank();
            out.set(&mut row, "oid", int(oid))?;
            out.set(&mut row, "opcmethod", int(am))?;
            out.set(&mut row, "opcname", text(name))?;
            out.set(&mut row, "opcnamespace", int(base.public.unwrap_or(0)))?;
            out.set(&mut row, "opcowner", int(BOOTSTRAP_SUPERUSER_OID as i64))?;
            out.set(&mut row, "opcintype", int(input))?;
            out.set(&mut row, "opcdefault", boolean(default))?;
            out.rows.push(row);
        }
        out.into_table()
    }

    /// pgvector is built in: listed as installed in schema `public`, where
    /// `CREATE EXTENSION vector` puts it.
    async fn pg_extension(&self, inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        let base = self.base().await?;
        // `extconfig` is an oid[] (DBeaver unnests it).
        let mut out =
            with_array_columns(Rows::of(inner).await?, &[("extconfig", DataType::Int32)])?;
        let mut row = out.blank();
        out.set(&mut row, "oid", int(VECTOR_EXTENSION_OID as i64))?;
        out.set(&mut row, "extname", text("vector"))?;
        out.set(&mut row, "extowner", int(BOOTSTRAP_SUPERUSER_OID as i64))?;
        out.set(&mut row, "extnamespace", int(base.public.unwrap_or(0)))?;
        out.set(&mut row, "extrelocatable", boolean(true))?;
        out.set(&mut row, "extversion", text(VECTOR_EXTENSION_VERSION))?;
        out.rows.push(row);
        out.into_table()
    }

    /// `pg_available_extensions`: the installed extensions (quiver ships
    /// no others), with their versions and comments.
    pub async fn pg_available_extensions(&self) -> Result<Option<Arc<dyn TableProvider>>> {
        let (Some(ext), Some(desc)) = (
            self.inner.table("pg_extension").await?,
            self.inner.table("pg_description").await?,
        ) else {
            return Ok(None);
        };
        let ext = Rows::of(&self.pg_extension(&ext).await?).await?;
        let desc = Rows::of(&Self::pg_description(&desc).await?).await?;
        let mut rows = Vec::new();
        for r in &ext.rows {
            let oid = ext.int(r, "oid")?;
            let comment = desc
                .rows
                .iter()
                .find(|d| {
                    desc.int(d, "objoid").ok().flatten() == oid
                        && desc.int(d, "classoid").ok().flatten()
                            == Some(PG_EXTENSION_CLASS_OID as i64)
                })
                .map(|d| desc.text(d, "description"))
                .transpose()?
                .flatten();
            let version = ext.text(r, "extversion")?;
            rows.push(vec![
                ext.text(r, "extname")?,
                version.clone(),
                version,
                comment,
            ]);
        }
        let schema = Arc::new(Schema::new(
            ["name", "default_version", "installed_version", "comment"]
                .map(|n| Field::new(n, DataType::Utf8, true))
                .to_vec(),
        ));
        let columns: Vec<ArrayRef> = (0..4)
            .map(|i| {
                Arc::new(arrow::array::StringArray::from(
                    rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        let batch = arrow::array::RecordBatch::try_new(schema.clone(), columns)?;
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }

    /// `pg_depend` with the members of extension `vector` (deptype `e`):
    /// pgvector's functions, its type and its access methods (pgcli marks
    /// extension functions by them).
    async fn pg_depend(inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        const PG_TYPE_CLASS_OID: i64 = 1247;
        const PG_PROC_CLASS_OID: i64 = 1255;
        const PG_AM_CLASS_OID: i64 = 2601;
        let mut out = Rows::of(inner).await?;
        // The access methods pgvector has (the others are quiver's own).
        let pgvector_ams = ["hnsw", "ivfflat"];
        let own_handlers: Vec<&str> = VECTOR_AMS
            .iter()
            .filter(|(_, name, _)| !pgvector_ams.contains(name))
            .map(|(_, _, handler)| *handler)
            .collect();
        let mut members: Vec<(i64, i64)> = crate::pg_proc::added()
            .into_iter()
            .filter(|p| !own_handlers.contains(&p.name))
            .map(|p| (PG_PROC_CLASS_OID, p.oid))
            .collect();
        members.push((PG_TYPE_CLASS_OID, VECTOR_TYPE_OID as i64));
        for (oid, name, _) in VECTOR_AMS {
            if pgvector_ams.contains(&name) {
                members.push((PG_AM_CLASS_OID, oid as i64));
            }
        }
        for (class, oid) in members {
            let mut row = out.blank();
            out.set(&mut row, "classid", int(class))?;
            out.set(&mut row, "objid", int(oid))?;
            out.set(&mut row, "objsubid", int(0))?;
            out.set(&mut row, "refclassid", int(PG_EXTENSION_CLASS_OID as i64))?;
            out.set(&mut row, "refobjid", int(VECTOR_EXTENSION_OID as i64))?;
            out.set(&mut row, "refobjsubid", int(0))?;
            out.set(&mut row, "deptype", text("e"))?;
            out.rows.push(row);
        }
        out.into_table()
    }

    /// `inner` with its text columns `columns` as lists of the given items.
    async fn with_arrays(
        inner: &Arc<dyn TableProvider>,
        columns: &[(&str, DataType)],
    ) -> Result<Arc<dyn TableProvider>> {
        with_array_columns(Rows::of(inner).await?, columns)?.into_table()
    }

    async fn pg_description(inner: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
        let mut out = Rows::of(inner).await?;
        let mut row = out.blank();
        out.set(&mut row, "objoid", int(VECTOR_EXTENSION_OID as i64))?;
        out.set(&mut row, "classoid", int(PG_EXTENSION_CLASS_OID as i64))?;
        out.set(&mut row, "objsubid", int(0))?;
        out.set(&mut row, "description", text(VECTOR_EXTENSION_COMMENT))?;
        out.rows.push(row);
        out.into_table()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_as_postgresql_does() {
        assert_eq!(quote_ident("items"), "items");
        assert_eq!(quote_ident("_a1$"), "_a1$");
        assert_eq!(quote_ident("Items"), "\"Items\"");
        assert_eq!(quote_ident("1a"), "\"1a\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn column_types_carry_their_typmods() {
        let v = pg_type_of(&FieldType::Vector { dim: 3 });
        assert_eq!(
            (v.oid, v.typmod, v.storage),
            (VECTOR_TYPE_OID as i64, 3, "e")
        );
        let n = pg_type_of(&FieldType::Decimal {
            precision: 10,
            scale: 2,
        });
        assert_eq!((n.oid, n.typmod), (1700, (10 << 16 | 2) + 4));
        let a = pg_type_of(&FieldType::Array(Box::new(FieldType::Int64)));
        assert_eq!((a.oid, a.ndims, a.align), (1016, 1, "d"));
    }
}
