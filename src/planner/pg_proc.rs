//! `pg_proc` with the functions quiver adds to PostgreSQL's, and the
//! `regproc` columns of the catalog as function oids.
//!
//! pgvector's functions that quiver implements are described where
//! `CREATE EXTENSION vector` puts them (schema `public`), with their
//! argument and result types, so that `\df`, `pg_get_function_result` and
//! tools that list functions see them. So are the handlers of quiver's
//! index access methods and the I/O functions of the `vector` type, which
//! `pg_am` and `pg_type` name.
//!
//! The catalog crate ships `regproc` columns (`pg_type.typreceive`,
//! `pg_aggregate.aggfnoid`, ...) as the names PostgreSQL prints. Clients
//! join them with `pg_proc.oid` (Npgsql's type loading, DBeaver's and
//! Grafana's aggregate lists), so quiver serves them as oids, marked
//! `regproc`; the wire layer prints them as names again
//! ([`quiver_common::regproc`]). A name that several functions share
//! (`pg_catalog.avg`) is resolved by what the row says of the function: an
//! aggregate by its transition function's argument types, an operator's
//! function by the operand types.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Builder, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, ScalarValue};

use crate::pg_relations::{BIT_TYPE_OID, Rows, VECTOR_AMS, VECTOR_TYPE_OID};

const INT4: i64 = 23;
const OID: i64 = 26;
const BYTEA: i64 = 17;
const FLOAT8: i64 = 701;
const CSTRING: i64 = 2275;
const CSTRING_ARRAY: i64 = 1263;
const INTERNAL: i64 = 2281;
const INDEX_AM_HANDLER: i64 = 325;
/// `pg_language`'s `c`: pgvector's functions are C functions.
const LANGUAGE_C: i64 = 13;
const BOOTSTRAP_SUPERUSER: i64 = 10;
/// The oid of the first function quiver adds; the rest follow.
const FIRST_ADDED_OID: i64 = 16_200;

/// A function quiver adds: name, argument types, result type.
struct Added {
    name: &'static str,
    args: &'static [i64],
    result: i64,
}

const V: i64 = VECTOR_TYPE_OID as i64;
const BIT: i64 = BIT_TYPE_OID as i64;

/// pgvector's functions that quiver has: the type's I/O, then what SQL
/// calls (`sqllogictest/vector_ops.slt` and `search.slt` call each).
const PGVECTOR: &[Added] = &[
    Added {
        name: "vector_in",
        args: &[CSTRING, OID, INT4],
        result: V,
    },
    Added {
        name: "vector_out",
        args: &[V],
        result: CSTRING,
    },
    Added {
        name: "vector_typmod_in",
        args: &[CSTRING_ARRAY],
        result: INT4,
    },
    Added {
        name: "vector_recv",
        args: &[INTERNAL, OID, INT4],
        result: V,
    },
    Added {
        name: "vector_send",
        args: &[V],
        result: BYTEA,
    },
    Added {
        name: "l2_distance",
        args: &[V, V],
        result: FLOAT8,
    },
    Added {
        name: "inner_product",
        args: &[V, V],
        result: FLOAT8,
    },
    Added {
        name: "cosine_distance",
        args: &[V, V],
        result: FLOAT8,
    },
    Added {
        name: "l1_distance",
        args: &[V, V],
        result: FLOAT8,
    },
    Added {
        name: "vector_dims",
        args: &[V],
        result: INT4,
    },
    Added {
        name: "vector_norm",
        args: &[V],
        result: FLOAT8,
    },
    Added {
        name: "l2_normalize",
        args: &[V],
        result: V,
    },
    Added {
        name: "binary_quantize",
        args: &[V],
        result: BIT,
    },
    Added {
        name: "subvector",
        args: &[V, INT4, INT4],
        result: V,
    },
    Added {
        name: "vector_add",
        args: &[V, V],
        result: V,
    },
    Added {
        name: "vector_sub",
        args: &[V, V],
        result: V,
    },
    Added {
        name: "vector_mul",
        args: &[V, V],
        result: V,
    },
    Added {
        name: "vector_concat",
        args: &[V, V],
        result: V,
    },
    Added {
        name: "vector_negative_inner_product",
        args: &[V, V],
        result: FLOAT8,
    },
    Added {
        name: "hamming_distance",
        args: &[BIT, BIT],
        result: FLOAT8,
    },
    Added {
        name: "jaccard_distance",
        args: &[BIT, BIT],
        result: FLOAT8,
    },
];

/// A function quiver adds, with its oid.
pub(crate) struct AddedProc {
    pub oid: i64,
    pub name: &'static str,
    pub args: Vec<i64>,
    pub result: i64,
    /// An index access method's handler (volatile, not strict, as
    /// pgvector declares them).
    pub handler: bool,
}

/// Every function quiver adds to `pg_proc`: pgvector's, then the
/// handlers of the vector access methods, numbered from
/// [`FIRST_ADDED_OID`].
pub(crate) fn added() -> Vec<AddedProc> {
    let functions = PGVECTOR
        .iter()
        .map(|a| (a.name, a.args.to_vec(), a.result, false));
    let handlers = VECTOR_AMS
        .iter()
        .map(|(_, _, handler)| (*handler, vec![INTERNAL], INDEX_AM_HANDLER, true));
    functions
        .chain(handlers)
        .enumerate()
        .map(|(i, (name, args, result, handler))| AddedProc {
            oid: FIRST_ADDED_OID + i as i64,
            name,
            args,
            result,
            handler,
        })
        .collect()
}

/// `pg_proc`'s rows (the catalog crate's) followed by those of the
/// added functions, in schema `public` (oid `public`).
pub(crate) fn with_added(rows: Rows, public: i64) -> Result<Rows> {
    let mut out = rows;
    for p in added() {
        let mut row = out.blank();
        let text = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
        let int = |v: i64| ScalarValue::Int64(Some(v));
        let boolean = |v: bool| ScalarValue::Boolean(Some(v));
        out.set(&mut row, "oid", int(p.oid))?;
        out.set(&mut row, "proname", text(p.name))?;
        out.set(&mut row, "pronamespace", int(public))?;
        out.set(&mut row, "proowner", int(BOOTSTRAP_SUPERUSER))?;
        out.set(&mut row, "prolang", int(LANGUAGE_C))?;
        out.set(&mut row, "procost", ScalarValue::Float64(Some(1.0)))?;
        out.set(&mut row, "prosupport", text("-"))?;
        out.set(&mut row, "prokind", text("f"))?;
        out.set(&mut row, "proisstrict", boolean(!p.handler))?;
        out.set(
            &mut row,
            "provolatile",
            text(if p.handler { "v" } else { "i" }),
        )?;
        out.set(
            &mut row,
            "proparallel",
            text(if p.handler { "u" } else { "s" }),
        )?;
        out.set(&mut row, "pronargs", int(p.args.len() as i64))?;
        out.set(&mut row, "prorettype", int(p.result))?;
        let args: Vec<String> = p.args.iter().map(|a| a.to_string()).collect();
        out.set(&mut row, "proargtypes", text(&args.join(" ")))?;
        out.set(&mut row, "prosrc", text(p.name))?;
        out.set(&mut row, "probin", text("$libdir/vector"))?;
        out.rows.push(row);
    }
    Ok(out)
}

/// What resolving `regproc` names needs to know of `pg_proc`.
#[derive(Debug, Default)]
pub struct Regprocs {
    /// The name each function prints as → the functions printed so (one,
    /// or several for a name PostgreSQL qualifies, `pg_catalog.avg`).
    by_name: HashMap<String, Vec<i32>>,
    /// oid → argument types.
    args: HashMap<i32, Vec<i64>>,
    /// The aggregates' oids.
    aggregates: HashSet<i32>,
    /// oid → the name it prints as.
    pub(crate) display: HashMap<i32, String>,
}

impl Regprocs {
    /// From `(oid, proname, namespace is pg_catalog, prokind, argument
    /// types)` of every function.
    pub(crate) fn new(procs: Vec<(i64, String, bool, String, Vec<i64>)>) -> Regprocs {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, name, ..) in &procs {
            *count.entry(name.as_str()).or_default() += 1;
        }
        let mut out = Regprocs::default();
        for (oid, name, system, kind, args) in &procs {
            let Ok(oid) = i32::try_from(*oid) else {
                continue;
            };
            // regprocout qualifies a name that does not find the
            // function alone.
            let shown = if count.get(name.as_str()) == Some(&1) {
                name.clone()
            } else if *system {
                format!("pg_catalog.{name}")
            } else {
                format!("public.{name}")
            };
            out.by_name.entry(shown.clone()).or_default().push(oid);
            out.args.insert(oid, args.clone());
            if kind == "a" {
                out.aggregates.insert(oid);
            }
            out.display.insert(oid, shown);
        }
        for oids in out.by_name.values_mut() {
            oids.sort_unstable();
        }
        out
    }

    /// The oid of the function printed as `name`, for row `row` of
    /// `batch` (which tells apart functions of one name); 0 for `-`.
    fn resolve(
        &self,
        name: &str,
        batch: &RecordBatch,
        column: &str,
        row: usize,
        used: &mut HashSet<i32>,
    ) -> Option<i32> {
        if name == "-" {
            return Some(0);
        }
        if let Ok(oid) = name.parse::<i32>() {
            return Some(oid);
        }
        let candidates = self.by_name.get(name)?;
        if let [one] = candidates.as_slice() {
            return Some(*one);
        }
        let wanted: Option<Vec<i64>> = match column {
            // An aggregate takes what its transition function takes
            // after the state.
            "aggfnoid" => self
                .text_at(batch, "aggtransfn", row)
                .and_then(|t| self.by_name.get(&t))
                .and_then(|o| o.first())
                .and_then(|o| self.args.get(o))
                .map(|a| a.iter().skip(1).copied().collect()),
            "oprcode" => {
                let left = int_at(batch, "oprleft", row).unwrap_or(0);
                let right = int_at(batch, "oprright", row).unwrap_or(0);
                Some([left, right].into_iter().filter(|t| *t != 0).collect())
            }
            _ => None,
        };
        let fits = |o: &&i32| {
            (column != "aggfnoid" || self.aggregates.contains(o))
                && wanted.as_ref().is_none_or(|w| self.args.get(o) == Some(w))
        };
        let pick = candidates
            .iter()
            .filter(fits)
            .find(|o| !used.contains(o))
            .or_else(|| candidates.iter().find(|o| fits(o) && !used.contains(o)))
            .or_else(|| candidates.iter().find(|o| !used.contains(o)))
            .or(candidates.first())
            .copied();
        if let Some(o) = pick {
            used.insert(o);
        }
        pick
    }

    fn text_at(&self, batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
        let c = batch.column_by_name(column)?.as_string_opt::<i32>()?;
        c.is_valid(row).then(|| c.value(row).to_string())
    }

    /// `batch` with its `regproc` columns of names as columns of oids;
    /// `None` when it has none.
    pub(crate) fn to_oids(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let schema = batch.schema();
        if !has_regproc_names(&schema) {
            return Ok(None);
        }
        let mut fields = Vec::with_capacity(schema.fields().len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let Some(names) = column.as_string_opt::<i32>().filter(|_| is_regproc(field)) else {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
                continue;
            };
            let mut used = HashSet::new();
            let mut b = Int32Builder::with_capacity(names.len());
            for row in 0..names.len() {
                if names.is_null(row) {
                    b.append_null();
                    continue;
                }
                let oid = self.resolve(names.value(row), batch, field.name(), row, &mut used);
                b.append_value(oid.unwrap_or(0));
            }
            fields.push(
                Field::new(field.name(), DataType::Int32, field.is_nullable())
                    .with_metadata(field.metadata().clone()),
            );
            columns.push(Arc::new(b.finish()));
        }
        let schema: SchemaRef =
            Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }
}

/// Records the names `regproc` values print as
/// ([`quiver_common::regproc::display`]) without an engine: for a client
/// that reads binary `regproc` results (an oid) and shows them as text
/// results would show them, as the tests do. An engine records them when
/// it starts.
pub fn register_names() -> Result<()> {
    let tables = datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables::try_new()?;
    crate::pg_functions::SystemRows::load(&tables)?;
    Ok(())
}

fn int_at(batch: &RecordBatch, column: &str, row: usize) -> Option<i64> {
    let c = batch.column_by_name(column)?;
    let c = arrow::compute::cast(&c.slice(row, 1), &DataType::Int64).ok()?;
    let c = c.as_primitive::<arrow::datatypes::Int64Type>();
    c.is_valid(0).then(|| c.value(0))
}

fn is_regproc(field: &Field) -> bool {
    field
        .metadata()
        .get(arrow_pg::datatypes::PG_OID_ALIAS_KEY)
        .is_some_and(|k| k == quiver_common::regproc::REGPROC)
}

/// Whether `schema` has `regproc` columns that hold names.
pub(crate) fn has_regproc_names(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| is_regproc(f) && f.data_type() == &DataType::Utf8)
}

/// `schema` as [`Regprocs::to_oids`] gives it.
pub(crate) fn schema_with_oids(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if is_regproc(f) && f.data_type() == &DataType::Utf8 {
                Field::new(f.name(), DataType::Int32, f.is_nullable())
                    .with_metadata(f.metadata().clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `pg_proc`'s argument columns as PostgreSQL types them: `proargtypes`
/// an `oidvector` (a list here, marked for the wire, `23 25` as text),
/// `proallargtypes` an `oid[]`, `proargmodes` a `"char"[]` and
/// `proargnames` a `text[]`. The catalog crate ships them as text, the last
/// three in another notation (`['o', 'o']`), which clients cannot read as
/// arrays (pgcli's function completion casts them: `proargtypes::regtype[]`).
pub(crate) const ARGUMENT_ARRAYS: [(&str, bool); 4] = [
    ("proargtypes", true),
    ("proallargtypes", true),
    ("proargmodes", false),
    ("proargnames", false),
];

/// `schema` as [`with_argument_arrays`] gives it.
pub(crate) fn schema_with_argument_arrays(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(
            |f| match ARGUMENT_ARRAYS.iter().find(|(n, _)| n == f.name()) {
                Some((name, oids)) if f.data_type() == &DataType::Utf8 => {
                    let item = if *oids {
                        DataType::Int32
                    } else {
                        DataType::Utf8
                    };
                    let field = Field::new(
                        f.name(),
                        DataType::List(Arc::new(Field::new_list_field(item, true))),
                        true,
                    );
                    if *name == "proargtypes" {
                        field.with_metadata(HashMap::from([(
                            quiver_common::pg_array::CATALOG_VECTOR_KEY.to_string(),
                            "oidvector".to_string(),
                        )]))
                    } else {
                        field
                    }
                }
                _ => f.as_ref().clone(),
            },
        )
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The elements of an argument column's text: `23 25`, `{23,25}`,
/// `[23, 25]` or `['a', "b's"]`.
fn argument_items(text: &str) -> Vec<String> {
    let body = text.trim();
    let body = body
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .or_else(|| body.strip_prefix('{').and_then(|b| b.strip_suffix('}')))
        .unwrap_or(body);
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut item = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => item.extend(chars.next()),
                    c if c == first => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
    }
}

/// `batch` (rows of `pg_proc`) with its argument columns as arrays, see
/// [`ARGUMENT_ARRAYS`].
pub(crate) fn with_argument_arrays(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{ListBuilder, StringBuilder};
    let schema = schema_with_argument_arrays(batch.schema_ref());
    let mut columns = batch.columns().to_vec();
    for (name, oids) in ARGUMENT_ARRAYS {
        let Some(i) = batch.schema_ref().index_of(name).ok() else {
            continue;
        };
        let Some(text) = columns[i].as_string_opt::<i32>() else {
            continue;
        };
        let new: ArrayRef = if oids {
            let mut b = ListBuilder::new(Int32Builder::new());
            for v in text.iter() {
                match v {
                    None => b.append_null(),
                    Some(v) => {
                        for item in argument_items(v) {
                            b.values().append_option(item.parse::<i32>().ok());
                        }
                        b.append(true);
                    }
                }
            }
            Arc::new(b.finish())
        } else {
            let mut b = ListBuilder::new(StringBuilder::new());
            for v in text.iter() {
                match v {
                    None => b.append_null(),
                    Some(v) => {
                        for item in argument_items(v) {
                            b.values().append_value(item);
                        }
                        b.append(true);
                    }
                }
            }
            Arc::new(b.finish())
        };
        columns[i] = new;
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regprocs() -> Regprocs {
        let p = |oid: i64, name: &str, kind: &str, args: &[i64]| {
            (oid, name.to_string(), true, kind.to_string(), args.to_vec())
        };
        Regprocs::new(vec![
            p(2100, "avg", "a", &[20]),
            p(2101, "avg", "a", &[23]),
            p(1963, "int4_avg_accum", "f", &[1016, 23]),
            p(2746, "int8_avg_accum", "f", &[2281, 20]),
            p(2400, "array_recv", "f", &[2281, 26, 23]),
        ])
    }

    #[test]
    fn argument_columns_read_in_every_notation() {
        assert_eq!(argument_items("23 25"), ["23", "25"]);
        assert_eq!(argument_items(""), Vec::<String>::new());
        assert_eq!(argument_items("[25, 18, 16]"), ["25", "18", "16"]);
        assert_eq!(argument_items("{a,b}"), ["a", "b"]);
        assert_eq!(argument_items("['o', 'o']"), ["o", "o"]);
        assert_eq!(
            argument_items(r#"['', "it's", 'x,y']"#),
            ["", "it's", "x,y"]
        );
    }

    #[test]
    fn names_become_oids_and_shared_names_are_told_apart_by_the_row() {
        let r = regprocs();
        let regproc = |name: &str| {
            Field::new(name, DataType::Utf8, false).with_metadata(HashMap::from([(
                arrow_pg::datatypes::PG_OID_ALIAS_KEY.to_string(),
                "regproc".to_string(),
            )]))
        };
        let schema = Arc::new(Schema::new(vec![
            regproc("aggfnoid"),
            regproc("aggtransfn"),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::StringArray::from(vec![
                    "pg_catalog.avg",
                    "pg_catalog.avg",
                    "-",
                ])),
                Arc::new(arrow::array::StringArray::from(vec![
                    "int4_avg_accum",
                    "int8_avg_accum",
                    "array_recv",
                ])),
            ],
        )
        .unwrap();
        let out = r.to_oids(&batch).unwrap().unwrap();
        let ints = |c: usize| -> Vec<i32> {
            out.column(c)
                .as_primitive::<arrow::datatypes::Int32Type>()
                .values()
                .to_vec()
        };
        assert_eq!(ints(0), vec![2101, 2100, 0]);
        assert_eq!(ints(1), vec![1963, 2746, 2400]);
        assert_eq!(out.schema().field(0).data_type(), &DataType::Int32);
        assert!(is_regproc(out.schema().field(0)));
    }

    #[test]
    fn every_added_function_has_its_own_oid() {
        let all = added();
        let oids: HashSet<i64> = all.iter().map(|p| p.oid).collect();
        assert_eq!(oids.len(), all.len());
        assert!(all.iter().any(|p| p.name == "hnswhandler" && p.handler));
    }
}
