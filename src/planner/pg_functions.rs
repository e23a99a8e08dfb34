//! The catalog functions clients call to print what `pg_relations`
//! describes: `pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_expr`,
//! `format_type`, `pg_get_function_result` / `_arguments`,
//! `obj_description`, `col_description`, `pg_get_serial_sequence`,
//! `pg_function_is_visible`, `pg_type_is_visible`, `pg_typeof` and
//! `information_schema._pg_expandarray`, with [`SystemRows`], what the
//! shipped catalog rows say about types, functions and comments.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use quiver_catalog::{Catalog, CollectionDef, IndexDef};

use crate::pg_relations::*;

/// The collection and index an index oid names, in `database`.
fn find_index(
    catalog: &Catalog,
    database: &str,
    oid: i64,
) -> Option<(Arc<CollectionDef>, Option<IndexDef>)> {
    for name in catalog.collection_names(database) {
        let Some(def) = catalog.collection(database, &name) else {
            continue;
        };
        if def.primary_key.is_some() && pkey_index_oid(&def) == oid {
            return Some((def, None));
        }
        if let Some(i) = def.indexes.iter().find(|i| index_oid(i) == oid).cloned() {
            return Some((def, Some(i)));
        }
    }
    None
}

fn find_constraint(catalog: &Catalog, database: &str, oid: i64) -> Option<String> {
    catalog
        .collection_names(database)
        .into_iter()
        .find_map(|name| {
            let def = catalog.collection(database, &name)?;
            let key = def.fields.get(def.primary_key?)?;
            (constraint_oid(&def) == oid)
                .then(|| format!("PRIMARY KEY ({})", quote_ident(&key.name)))
        })
}

fn int_arg(args: &[ArrayRef], i: usize, row: usize) -> Option<i64> {
    let a = args.get(i)?;
    if a.is_null(row) {
        return None;
    }
    let a = arrow::compute::cast(&a.slice(row, 1), &DataType::Int64).ok()?;
    a.as_primitive_opt::<arrow::datatypes::Int64Type>()
        .map(|p| p.value(0))
}

fn bool_arg(args: &[ArrayRef], i: usize, row: usize) -> Option<bool> {
    let a = args.get(i)?;
    if a.is_null(row) {
        return None;
    }
    a.as_boolean_opt().map(|b| b.value(row))
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Kind {
    IndexDef,
    ConstraintDef,
    Expr,
    FormatType,
    Visible(&'static str),
    FunctionResult,
    FunctionArguments(&'static str),
    ObjDescription,
    ColDescription,
    SerialSequence,
    /// `oids::regtype[]`: the names of the types.
    RegtypeNames,
}

/// The catalog functions this module answers.
#[derive(Debug)]
struct CatalogFn {
    kind: Kind,
    catalog: Arc<Catalog>,
    database: String,
    signature: Signature,
    system: Arc<SystemRows>,
}

impl PartialEq for CatalogFn {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.database == other.database
            && Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}
impl Eq for CatalogFn {}
impl std::hash::Hash for CatalogFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.database.hash(state);
    }
}

impl ScalarUDFImpl for CatalogFn {
    fn name(&self) -> &str {
        match self.kind {
            Kind::IndexDef => "pg_get_indexdef",
            Kind::ConstraintDef => "pg_get_constraintdef",
            Kind::Expr => "pg_get_expr",
            Kind::FormatType => "format_type",
            Kind::Visible(name) | Kind::FunctionArguments(name) => name,
            Kind::FunctionResult => "pg_get_function_result",
            Kind::ObjDescription => "obj_description",
            Kind::ColDescription => "col_description",
            Kind::SerialSequence => "pg_get_serial_sequence",
            Kind::RegtypeNames => quiver_sql::REGTYPE_NAMES,
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Visible(_) => DataType::Boolean,
            Kind::RegtypeNames => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
            _ => DataType::Utf8,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<Result<Vec<_>>>()?;
        if let Kind::RegtypeNames = self.kind {
            return self.regtype_names(&arrays, n);
        }
        if let Kind::Visible(_) = self.kind {
            let out: arrow::array::BooleanArray = (0..n)
                .map(|row| int_arg(&arrays, 0, row).map(|_| true))
                .collect();
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        let mut out = StringBuilder::new();
        for row in 0..n {
            let value: Option<String> = match self.kind {
                Kind::IndexDef => int_arg(&arrays, 0, row).and_then(|oid| {
                    let (def, index) = find_index(&self.catalog, &self.database, oid)?;
                    let column = int_arg(&arrays, 1, row).unwrap_or(0);
                    let pretty = bool_arg(&arrays, 2, row).unwrap_or(false);
                    if column > 0 {
                        let field = index.as_ref().map_or(def.primary_key?, |i| i.field);
                        return (column == 1).then(|| quote_ident(&def.fields[field].name));
                    }
                    index_def(&def, index.as_ref(), !pretty)
                }),
                Kind::ConstraintDef => int_arg(&arrays, 0, row)
                    .and_then(|oid| find_constraint(&self.catalog, &self.database, oid)),
                Kind::Expr => {
                    let a = &arrays[0];
                    if a.is_null(row) {
                        None
                    } else {
                        let s = arrow::compute::cast(&a.slice(row, 1), &DataType::Utf8)?;
                        Some(s.as_string::<i32>().value(0).to_string())
                    }
                }
                // PostgreSQL prints an unknown type's oid as `???`.
                Kind::FormatType => int_arg(&arrays, 0, row).map(|oid| {
                    let typmod = int_arg(&arrays, 1, row).unwrap_or(-1);
                    self.system
                        .type_name(oid, typmod)
                        .unwrap_or_else(|| "???".to_string())
                }),
                Kind::FunctionResult => {
                    int_arg(&arrays, 0, row).and_then(|oid| self.system.function_result(oid))
                }
                Kind::FunctionArguments(_) => {
                    int_arg(&arrays, 0, row).and_then(|oid| self.system.function_arguments(oid))
                }
                Kind::ObjDescription => int_arg(&arrays, 0, row).and_then(|oid| {
                    let class = match arrays.get(1) {
                        None => None,
                        Some(a) if a.is_null(row) => return None,
                        Some(a) => {
                            let a = arrow::compute::cast(&a.slice(row, 1), &DataType::Utf8).ok()?;
                            Some(catalog_oid(a.as_string::<i32>().value(0))?)
                        }
                    };
                    self.system.comment(oid, class, 0)
                }),
                Kind::ColDescription => {
                    match (int_arg(&arrays, 0, row), int_arg(&arrays, 1, row)) {
                        (Some(oid), Some(column)) => {
                            self.system.comment(oid, catalog_oid("pg_class"), column)
                        }
                        _ => None,
                    }
                }
                Kind::SerialSequence => {
                    let text = |i: usize| -> Option<String> {
                        let a = arrays.get(i)?;
                        if a.is_null(row) {
                            return None;
                        }
                        let a = arrow::compute::cast(&a.slice(row, 1), &DataType::Utf8).ok()?;
                        Some(a.as_string::<i32>().value(0).to_string())
                    };
                    match (text(0), text(1)) {
                        (Some(table), Some(column)) => {
                            serial_sequence(&self.catalog, &self.database, &table, &column)
                        }
                        _ => None,
                    }
                }
                Kind::Visible(_) | Kind::RegtypeNames => None,
            };
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

impl CatalogFn {
    /// A list of type oids as the names `regtype[]` prints (`???` for an
    /// oid no type has, as PostgreSQL's `format_type`).
    fn regtype_names(&self, arrays: &[ArrayRef], n: usize) -> Result<ColumnarValue> {
        use arrow::array::{ListBuilder, StringBuilder};
        let Some(list) = arrays.first() else {
            return exec_err!("{} takes one argument", quiver_sql::REGTYPE_NAMES);
        };
        let item = DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)));
        let list = match list.data_type() {
            DataType::Null => arrow::array::new_null_array(&item, n),
            _ => arrow::compute::cast(list, &item)?,
        };
        let list = list.as_list::<i32>();
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..n {
            if list.is_null(row) {
                out.append_null();
                continue;
            }
            let oids = list.value(row);
            let oids = oids.as_primitive::<arrow::datatypes::Int64Type>();
            for oid in oids.iter() {
                out.values().append_option(oid.map(|oid| {
                    self.system
                        .type_name(oid, -1)
                        .unwrap_or_else(|| "???".to_string())
                }));
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_expr`,
/// `format_type`, `pg_get_function_result`, `pg_get_function_arguments`,
/// `obj_description`, `col_description`, `pg_function_is_visible` and
/// `pg_type_is_visible` for
/// a session on `database` (every function and type is in `pg_catalog`
/// or `public`, both on the search path).
pub fn udfs(catalog: &Arc<Catalog>, database: &str, system: &Arc<SystemRows>) -> Vec<ScalarUDF> {
    let make = |kind: Kind| {
        ScalarUDF::new_from_impl(CatalogFn {
            kind,
            catalog: catalog.clone(),
            database: database.to_string(),
            signature: Signature::variadic_any(Volatility::Stable),
            system: system.clone(),
        })
    };
    vec![
        make(Kind::IndexDef),
        make(Kind::ConstraintDef),
        make(Kind::Expr),
        make(Kind::FormatType),
        make(Kind::Visible("pg_function_is_visible")),
        make(Kind::Visible("pg_type_is_visible")),
        make(Kind::FunctionResult),
        make(Kind::FunctionArguments("pg_get_function_arguments")),
        make(Kind::FunctionArguments(
            "pg_get_function_identity_arguments",
        )),
        make(Kind::ObjDescription),
        make(Kind::ColDescription),
        make(Kind::SerialSequence),
        make(Kind::RegtypeNames),
        ScalarUDF::new_from_impl(ExpandArray {
            signature: Signature::any(1, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(PgTypeof {
            signature: Signature::any(1, Volatility::Immutable),
            system: system.clone(),
        }),
    ]
}

/// The PostgreSQL type oid of a value of `field` (as the wire describes it).
pub fn pg_type_oid(field: &FieldRef) -> i64 {
    if field
        .metadata()
        .contains_key(quiver_vector::column::VECTOR_METADATA_KEY)
    {
        return VECTOR_TYPE_OID as i64;
    }
    if quiver_vector::column::bit_length_of(field).is_some() {
        return BIT_TYPE_OID as i64;
    }
    if quiver_common::uuid::is_uuid(field.metadata()) {
        return quiver_common::uuid::UUID_TYPE_OID as i64;
    }
    if quiver_common::json::is_json(field.metadata()) {
        return 114;
    }
    arrow_pg::datatypes::field_into_pg_type(field).map_or(25, |t| t.oid() as i64)
}

/// `pg_typeof(value)`: the name of the value's type.
#[derive(Debug)]
struct PgTypeof {
    signature: Signature,
    system: Arc<SystemRows>,
}

impl PartialEq for PgTypeof {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature
    }
}
impl Eq for PgTypeof {}
impl std::hash::Hash for PgTypeof {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "pg_typeof".hash(state);
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let field = args.arg_fields.first().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("pg_typeof takes one argument".into())
        })?;
        let name = if field.data_type() == &DataType::Null {
            "unknown".to_string()
        } else {
            let oid = pg_type_oid(field);
            self.system
                .type_name(oid, -1)
                .unwrap_or_else(|| oid.to_string())
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// `information_schema._pg_expandarray(a)`: each element of `a` with its
/// position from 1, as `(x, n)` records (pgjdbc reads primary keys and
/// index columns with it). A set-returning function in PostgreSQL; here
/// a list of records that the SQL layer wraps in `unnest()`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArray {
    signature: Signature,
}

fn expanded_type(item: &DataType) -> DataType {
    let record = DataType::Struct(
        vec![
            Field::new("x", item.clone(), true),
            Field::new("n", DataType::Int32, false),
        ]
        .into(),
    );
    DataType::List(Arc::new(Field::new_list_field(record, true)))
}

impl ScalarUDFImpl for ExpandArray {
    fn name(&self) -> &str {
        "_pg_expandarray"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::List(f)) => Ok(expanded_type(f.data_type())),
            Some(DataType::Null) => Ok(expanded_type(&DataType::Int32)),
            other => datafusion::common::plan_err!(
                "function _pg_expandarray({}) does not exist: it takes an array",
                other.map(|t| t.to_string()).unwrap_or_default()
            ),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let array = args.args[0].to_array(n)?;
        let Some(list) = array.as_list_opt::<i32>() else {
            return Ok(ColumnarValue::Array(arrow::array::new_null_array(
                &expanded_type(&DataType::Int32),
                n,
            )));
        };
        let offsets = list.offsets();
        let mut positions = Vec::with_capacity(list.values().len());
        for w in offsets.windows(2) {
            positions.extend(1..=(w[1] - w[0]));
        }
        // Values outside every list (a sliced array) keep a position too.
        positions.resize(list.values().len(), 0);
        let item = match list.data_type() {
            DataType::List(f) => f.data_type().clone(),
            other => other.clone(),
        };
        let DataType::List(record_field) = expanded_type(&item) else {
            unreachable!("expanded_type makes a list")
        };
        let DataType::Struct(fields) = record_field.data_type().clone() else {
            unreachable!("expanded_type makes a list of structs")
        };
        let records = arrow::array::StructArray::try_new(
            fields,
            vec![
                list.values().clone(),
                Arc::new(arrow::array::Int32Array::from(positions)),
            ],
            None,
        )?;
        let out = arrow::array::ListArray::try_new(
            record_field,
            list.offsets().clone(),
            Arc::new(records),
            list.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// What the shipped (static) catalog rows say about types, functions and
/// comments, read once: for `format_type`, `pg_get_function_result`,
/// `pg_get_function_arguments` and `obj_description`.
#[derive(Debug, Default)]
pub struct SystemRows {
    /// oid → (typname, typelem)
    types: HashMap<i64, (String, i64)>,
    /// oid → its `pg_proc` row's signature.
    procs: HashMap<i64, Proc>,
    /// (objoid, classoid, objsubid) → description
    comments: HashMap<(i64, i64, i64), String>,
    /// What turns the catalog's `regproc` names into oids.
    pub regprocs: crate::pg_proc::Regprocs,
}

#[derive(Debug)]
struct Proc {
    result: i64,
    set: bool,
    args: Vec<i64>,
    all_args: Option<Vec<i64>>,
    modes: Vec<String>,
    names: Vec<String>,
}

/// `pg_catalog`'s oid.
const PG_CATALOG_NAMESPACE: i64 = 11;

/// `['i', 'v']`, `{a,b}` or `23 25`: the items of a shipped array value.
fn items(text: &str) -> Vec<String> {
    text.trim_matches(|c| c == '[' || c == ']' || c == '{' || c == '}')
        .split([',', ' '])
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl SystemRows {
    pub fn load(
        tables: &datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables,
    ) -> Result<SystemRows> {
        let rows = |t: &datafusion_pg_catalog::pg_catalog::ArrowTable| {
            Rows::from_batches(t.schema(), t.data())
        };
        let mut out = SystemRows::default();
        let types = rows(&tables.pg_type)?;
        for r in &types.rows {
            if let (Some(oid), Some(name)) = (types.int(r, "oid")?, types.text(r, "typname")?) {
                let elem = types.int(r, "typelem")?.unwrap_or(0);
                out.types.insert(oid, (name, elem));
            }
        }
        out.types
            .insert(VECTOR_TYPE_OID as i64, ("vector".to_string(), 0));
        out.types.insert(
            VECTOR_TYPE_OID as i64 + 1,
            ("_vector".to_string(), VECTOR_TYPE_OID as i64),
        );
        let procs = rows(&tables.pg_proc)?;
        let mut names = Vec::with_capacity(procs.rows.len());
        for r in &procs.rows {
            let Some(oid) = procs.int(r, "oid")? else {
                continue;
            };
            names.push((
                oid,
                procs.text(r, "proname")?.unwrap_or_default(),
                procs.int(r, "pronamespace")? == Some(PG_CATALOG_NAMESPACE),
                procs.text(r, "prokind")?.unwrap_or_default(),
                procs
                    .text(r, "proargtypes")?
                    .map(|t| items(&t).iter().filter_map(|s| s.parse().ok()).collect())
                    .unwrap_or_default(),
            ));
            let list = |name: &str| -> Result<Vec<String>> {
                Ok(procs.text(r, name)?.map(|t| items(&t)).unwrap_or_default())
            };
            let numbers = |v: Vec<String>| v.iter().filter_map(|s| s.parse().ok()).collect();
            let all = list("proallargtypes")?;
            out.procs.insert(
                oid,
                Proc {
                    result: procs.int(r, "prorettype")?.unwrap_or(0),
                    set: matches!(r[procs.col("proretset")?], ScalarValue::Boolean(Some(true))),
                    args: numbers(list("proargtypes")?),
                    all_args: (!all.is_empty()).then(|| numbers(all)),
                    modes: list("proargmodes")?,
                    names: list("proargnames")?,
                },
            );
        }
        for p in crate::pg_proc::added() {
            names.push((p.oid, p.name.to_string(), false, "f".into(), p.args.clone()));
            out.procs.insert(
                p.oid,
                Proc {
                    result: p.result,
                    set: false,
                    args: p.args,
                    all_args: None,
                    modes: Vec::new(),
                    names: Vec::new(),
                },
            );
        }
        out.regprocs = crate::pg_proc::Regprocs::new(names);
        quiver_common::regproc::register(out.regprocs.display.clone());
        let comments = rows(&tables.pg_description)?;
        for r in &comments.rows {
            if let (Some(o), Some(c), Some(d)) = (
                comments.int(r, "objoid")?,
                comments.int(r, "classoid")?,
                comments.text(r, "description")?,
            ) {
                let sub = comments.int(r, "objsubid")?.unwrap_or(0);
                out.comments.insert((o, c, sub), d);
            }
        }
        out.comments.insert(
            (
                VECTOR_EXTENSION_OID as i64,
                PG_EXTENSION_CLASS_OID as i64,
                0,
            ),
            VECTOR_EXTENSION_COMMENT.to_string(),
        );
        Ok(out)
    }

    /// `format_type(oid, typmod)`, with PostgreSQL's SQL names.
    /// A type's `typname` and, for an array type, its element's oid.
    pub fn type_row(&self, oid: i64) -> Option<(&str, i64)> {
        self.types.get(&oid).map(|(n, e)| (n.as_str(), *e))
    }

    pub fn type_name(&self, oid: i64, typmod: i64) -> Option<String> {
        let (name, elem) = self.types.get(&oid)?;
        if *elem != 0 && name.starts_with('_') {
            return Some(format!("{}[]", self.type_name(*elem, typmod)?));
        }
        let with = |base: &str, n: i64| match n {
            n if n >= 0 => format!("{base}({n})"),
            _ => base.to_string(),
        };
        Some(match name.as_str() {
            "bool" => "boolean".into(),
            "int2" => "smallint".into(),
            "int4" => "integer".into(),
            "int8" => "bigint".into(),
            "float4" => "real".into(),
            "float8" => "double precision".into(),
            "bpchar" => with("character", if typmod > 4 { typmod - 4 } else { -1 }),
            "varchar" => with(
                "character varying",
                if typmod > 4 { typmod - 4 } else { -1 },
            ),
            "numeric" if typmod >= 4 => {
                let t = typmod - 4;
                format!("numeric({},{})", (t >> 16) & 0xffff, t & 0xffff)
            }
            "time" => "time without time zone".into(),
            "timetz" => "time with time zone".into(),
            "timestamp" => "timestamp without time zone".into(),
            "timestamptz" => "timestamp with time zone".into(),
            "bit" => with("bit", if typmod > 0 { typmod } else { -1 }),
            "varbit" => with("bit varying", if typmod > 0 { typmod } else { -1 }),
            "vector" => with("vector", if typmod > 0 { typmod } else { -1 }),
            "char" => "\"char\"".into(),
            other => quote_ident(other),
        })
    }

    fn function_result(&self, oid: i64) -> Option<String> {
        let p = self.procs.get(&oid)?;
        if p.modes.iter().any(|m| m == "t") {
            let columns = self.arguments(p, |m| m == "t", false);
            return Some(format!("TABLE({columns})"));
        }
        let t = self.type_name(p.result, -1)?;
        Some(if p.set { format!("SETOF {t}") } else { t })
    }

    fn arguments(&self, p: &Proc, keep: impl Fn(&str) -> bool, modes: bool) -> String {
        let types = p.all_args.as_ref().unwrap_or(&p.args);
        types
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(p.modes.get(*i).map_or("i", |m| m.as_str())))
            .map(|(i, t)| {
                let mode = match p.modes.get(i).map(|m| m.as_str()) {
                    Some("o") if modes => "OUT ",
                    Some("b") if modes => "INOUT ",
                    Some("v") if modes => "VARIADIC ",
                    _ => "",
                };
                let name = p
                    .names
                    .get(i)
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("{} ", quote_ident(n)))
                    .unwrap_or_default();
                let t = self.type_name(*t, -1).unwrap_or_else(|| format!("oid {t}"));
                format!("{mode}{name}{t}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn function_arguments(&self, oid: i64) -> Option<String> {
        let p = self.procs.get(&oid)?;
        Some(self.arguments(p, |m| m != "t", true))
    }

    fn comment(&self, oid: i64, class: Option<i64>, sub: i64) -> Option<String> {
        match class {
            Some(c) => self.comments.get(&(oid, c, sub)).cloned(),
            None => self
                .comments
                .iter()
                .find(|((o, _, s), _)| *o == oid && *s == sub)
                .map(|(_, d)| d.clone()),
        }
    }
}

/// `pg_get_serial_sequence(table, column)`: the sequence PostgreSQL would
/// have made for a server-assigned column (BIGSERIAL, identity), named as
/// there; NULL for other columns. The table name may be qualified and
/// quoted (`public."Items"`), the column name is taken as written.
fn serial_sequence(catalog: &Catalog, database: &str, table: &str, column: &str) -> Option<String> {
    let unquote = |p: &str| match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(q) => q.replace("\"\"", "\""),
        None => p.to_ascii_lowercase(),
    };
    let parts: Vec<String> = table.split('.').map(unquote).collect();
    let name = match parts.as_slice() {
        [t] => t.clone(),
        [schema, t] if schema == crate::catalog_provider::PUBLIC_SCHEMA => t.clone(),
        _ => return None,
    };
    let def = catalog.collection(database, &name)?;
    let field = def.fields.iter().find(|f| f.name == column)?;
    field.auto_increment.then(|| {
        format!(
            "{}.{}",
            crate::catalog_provider::PUBLIC_SCHEMA,
            quote_ident(&format!("{}_{}_seq", def.name, field.name))
        )
    })
}

/// The oid of the system catalog named `name` (`pg_class`,
/// `pg_catalog.pg_type`).
fn catalog_oid(name: &str) -> Option<i64> {
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name);
    SYSTEM_RELATION_OIDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, oid)| *oid as i64)
}

/// `pg_database_size(name | oid)`: the bytes a database's collections
/// hold: their flushed segments' files and their rows in memory, as
/// `SHOW SEGMENTS` counts them, of the collections the user sees. A
/// database that does not exist is 3D000
/// by name and NULL by oid, as in PostgreSQL.
#[derive(Debug)]
struct DatabaseSize {
    signature: Signature,
    catalog: Arc<Catalog>,
    storage: Arc<quiver_storage::Storage>,
    /// The session's user: only the collections it sees are counted (as
    /// everywhere else, a size must not tell of collections it may not
    /// know of).
    viewer: String,
}

impl PartialEq for DatabaseSize {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}
impl Eq for DatabaseSize {}
impl std::hash::Hash for DatabaseSize {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "pg_database_size".hash(state);
    }
}

impl DatabaseSize {
    fn size(&self, database: &str) -> Result<i64> {
        let mut bytes = 0u64;
        for name in self.catalog.collection_names(database) {
            let Some(def) = self.catalog.collection(database, &name) else {
                continue;
            };
            if def.name != name || !crate::access::sees(&self.catalog, &self.viewer, &def) {
                continue;
            }
            let data = self
                .storage
                .open_collection(&def)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            bytes += data.segment_rows().iter().map(|s| s.4).sum::<u64>();
        }
        Ok(bytes as i64)
    }
}

impl ScalarUDFImpl for DatabaseSize {
    fn name(&self) -> &str {
        "pg_database_size"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return datafusion::common::exec_err!("pg_database_size takes one argument");
        };
        let values = arg.to_array(args.number_rows)?;
        let by_oid = values.data_type().is_integer();
        let text = arrow::compute::cast(&values, &DataType::Utf8)?;
        let databases = self.catalog.databases();
        let mut out = arrow::array::Int64Builder::new();
        for v in text.as_string::<i32>().iter() {
            let found = v.and_then(|v| {
                databases.iter().find(|(id, name, _)| {
                    if by_oid {
                        v.parse::<i64>().ok() == Some(crate::pg_users::database_oid(*id) as i64)
                    } else {
                        name == v
                    }
                })
            });
            match (found, v) {
                (Some((_, name, _)), _) => out.append_value(self.size(name)?),
                // PostgreSQL: 3D000 for a name, NULL for an oid.
                (None, Some(name)) if !by_oid => {
                    return Err(datafusion::error::DataFusionError::External(Box::new(
                        quiver_catalog::CatalogError::DatabaseNotFound {
                            name: name.to_string(),
                        },
                    )));
                }
                (None, _) => out.append_null(),
            }
        }
        let out = out.finish();
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
        })
    }
}

/// The functions that read sizes from storage.
pub fn size_udfs(
    catalog: &Arc<Catalog>,
    storage: &Arc<quiver_storage::Storage>,
    viewer: &str,
) -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(DatabaseSize {
        signature: Signature::any(1, Volatility::Volatile),
        catalog: catalog.clone(),
        storage: storage.clone(),
        viewer: viewer.to_string(),
    })]
}
