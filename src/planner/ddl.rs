//! DDL: turning `CREATE TABLE`/`CREATE COLLECTION` into a collection
//! definition, column types and defaults, and the DESCRIBE output.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{Expr, lit};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::QueryError;
use quiver_catalog::{CatalogError, CollectionDef, FieldDef, FieldType};

fn unsupported(what: impl Into<String>) -> QueryError {
    QueryError::Unsupported(what.into())
}

/// Map a SQL column type to a field type; the flag says server-assigned (SERIAL).
pub fn field_type(data_type: &ast::DataType) -> Result<(FieldType, bool), QueryError> {
    let text = data_type.to_string().to_ascii_lowercase();
    parse_type_text(text.trim())
}

fn parse_type_text(text: &str) -> Result<(FieldType, bool), QueryError> {
    if let Some(inner) = text.strip_suffix("[]") {
        let (inner, auto) = parse_type_text(inner.trim())?;
        if auto
            || matches!(
                inner,
                FieldType::Vector { .. } | FieldType::Bit { .. } | FieldType::Array(_)
            )
        {
            return Err(unsupported(format!(
                "arrays of {} are not supported",
                inner.sql_name()
            )));
        }
        return Ok((FieldType::Array(Box::new(inner)), false));
    }
    let (name, args) = match text.find('(') {
        Some(i) => {
            let close = text.rfind(')').unwrap_or(text.len());
            let args: Vec<&str> = text[i + 1..close.max(i + 1)]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            let rest = text[(close + 1).min(text.len())..].trim();
            let name = format!("{} {}", text[..i].trim(), rest);
            (name.trim().to_string(), args)
        }
        None => (text.to_string(), vec![]),
    };
    let name = name.as_str();
    let int_arg = |i: usize| -> Result<Option<usize>, QueryError> {
        args.get(i)
            .map(|a| {
                a.parse::<usize>().map_err(|_| {
                    QueryError::Catalog(CatalogError::InvalidDefinition(format!(
                        "invalid type modifier \"{a}\" for {name}"
                    )))
                })
            })
            .transpose()
    };
    let t = match name {
        "bool" | "boolean" => FieldType::Bool,
        "smallint" | "int2" => FieldType::Int16,
        "int" | "integer" | "int4" => FieldType::Int32,
        "bigint" | "int8" | "int64" => FieldType::Int64,
        "smallserial" | "serial2" => return Ok((FieldType::Int16, true)),
        "serial" | "serial4" => return Ok((FieldType::Int32, true)),
        "bigserial" | "serial8" => return Ok((FieldType::Int64, true)),
        "real" | "float4" => FieldType::Float32,
        "float" => match int_arg(0)? {
            Some(p) if p <= 24 => FieldType::Float32,
            _ => FieldType::Float64,
        },
        "double" | "double precision" | "float8" => FieldType::Float64,
        "numeric" | "decimal" => {
            let precision = int_arg(0)?.unwrap_or(38).clamp(1, 38) as u8;
            let scale = int_arg(1)?.unwrap_or(if args.is_empty() { 10 } else { 0 }) as i8;
            FieldType::Decimal { precision, scale }
        }
        "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" | "string"
        | "name" => FieldType::Text,
        "json" | "jsonb" => FieldType::Json,
        "uuid" => FieldType::Uuid,
        "bytea" => FieldType::Bytea,
        "date" => FieldType::Date,
        "timestamp" | "timestamp without time zone" => FieldType::Timestamp,
        "timestamptz" | "timestamp with time zone" => FieldType::TimestampTz,
        "vector" | "float_vector" => match int_arg(0)? {
            Some(dim) => FieldType::Vector { dim },
            None => {
                return Err(QueryError::Catalog(CatalogError::InvalidDefinition(
                    "vector columns need a dimension, e.g. VECTOR(3)".into(),
                )));
            }
        },
        "bit" | "binary_vector" => FieldType::Bit {
            // PostgreSQL: BIT without a length is BIT(1).
            bits: int_arg(0)?.unwrap_or(if name == "bit" { 1 } else { 0 }),
        },
        "halfvec" | "float16_vector" | "bfloat16_vector" | "sparsevec" | "sparse_float_vector" => {
            return Err(QueryError::Catalog(CatalogError::UnsupportedType {
                name: name.to_string(),
                hint: " yet: use VECTOR(n)".into(),
            }));
        }
        other => {
            return Err(QueryError::Catalog(CatalogError::UnsupportedType {
                name: other.to_string(),
                hint: String::new(),
            }));
        }
    };
    Ok((t, false))
}

/// The constant value of a literal SQL expression (defaults must be constants).
fn literal(expr: &ast::Expr) -> Result<ScalarValue, QueryError> {
    use ast::{Expr as E, UnaryOperator, Value};
    match expr {
        E::Value(v) => match &v.value {
            Value::Number(n, _) => Ok(n
                .parse::<i64>()
                .map(|i| ScalarValue::Int64(Some(i)))
                .or_else(|_| n.parse::<f64>().map(|f| ScalarValue::Float64(Some(f))))
                .map_err(|_| unsupported(format!("invalid number {n}")))?),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                Ok(ScalarValue::Utf8(Some(s.clone())))
            }
            Value::Boolean(b) => Ok(ScalarValue::Boolean(Some(*b))),
            Value::Null => Ok(ScalarValue::Null),
            other => Err(unsupported(format!(
                "default value {other} is not supported"
            ))),
        },
        E::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => Ok(literal(expr)?.arithmetic_negate()?),
        E::Nested(e) => literal(e),
        E::Cast { expr, .. } => literal(expr),
        other => Err(unsupported(format!(
            "default {other} is not supported yet: defaults must be constants"
        ))),
    }
}

/// A default's constant as a value of the column's type where text means
/// something else there: a vector (`'[1,2]'`) or a bit string (`'0101'`),
/// checked against the column's dimension or length.
fn typed_default(
    field_type: &FieldType,
    value: ScalarValue,
) -> datafusion::common::Result<ScalarValue> {
    let text = match &value {
        ScalarValue::Utf8(Some(t)) => t.as_str(),
        ScalarValue::Null => return ScalarValue::try_from(&field_type.arrow_type()),
        _ => return Ok(value),
    };
    let external = |e: quiver_vector::VectorError| DataFusionError::External(Box::new(e));
    match field_type {
        FieldType::Vector { dim } => {
            let values = quiver_vector::text::parse_vector(text).map_err(external)?;
            if values.len() != *dim {
                return Err(external(quiver_vector::VectorError::DimensionMismatch {
                    expected: *dim,
                    actual: values.len(),
                }));
            }
            let DataType::FixedSizeList(item, size) = field_type.arrow_type() else {
                return Ok(value);
            };
            let array = arrow::array::FixedSizeListArray::try_new(
                item,
                size,
                Arc::new(arrow::array::Float32Array::from(values)),
                None,
            )?;
            Ok(ScalarValue::FixedSizeList(Arc::new(array)))
        }
        FieldType::Bit { bits } => {
            let (n, bytes) = quiver_vector::bits::parse_bits(text).map_err(external)?;
            if n != *bits {
                return Err(external(quiver_vector::VectorError::BitLengthMismatch {
                    expected: *bits,
                    actual: n,
                }));
            }
            Ok(ScalarValue::FixedSizeBinary(
                bytes.len() as i32,
                Some(bytes),
            ))
        }
        _ => Ok(value),
    }
}

/// A column default as the catalog keeps it, checked: a constant, and for
/// vectors and bit strings one of the column's dimension or length.
pub fn default_text(expr: &ast::Expr, field_type: &FieldType) -> Result<String, QueryError> {
    typed_default(field_type, literal(expr)?)?;
    Ok(expr.to_string())
}

/// The DataFusion expression of a stored default for a column of
/// `field_type`.
pub fn default_expr(text: &str, field_type: &FieldType) -> datafusion::common::Result<Expr> {
    Ok(lit(default_value(text, field_type)?))
}

/// The value of a stored default (a constant) for a column of `field_type`.
pub fn default_value(
    text: &str,
    field_type: &FieldType,
) -> datafusion::common::Result<ScalarValue> {
    let expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| DataFusionError::Plan(e.to_string()))?;
    let value = literal(&expr).map_err(|e| DataFusionError::Plan(e.to_string()))?;
    typed_default(field_type, value)
}

/// An identifier as PostgreSQL folds it (lower case unless quoted).
pub fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// Split `[db.][schema.]name` into (database, name), checking the schema.
pub fn resolve_name(
    name: &ast::ObjectName,
    current_db: &str,
) -> Result<(String, String), QueryError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident_name)
        .collect();
    if parts.len() != name.0.len() {
        return Err(unsupported(format!("invalid name {name}")));
    }
    resolve_parts(&parts, current_db)
}

/// [`resolve_name`] of a name already split and folded: `c`, `public.c`
/// or `db.public.c`.
pub fn resolve_parts(parts: &[String], current_db: &str) -> Result<(String, String), QueryError> {
    let (db, schema, coll) = match parts {
        [c] => (current_db.to_string(), None, c.clone()),
        [s, c] => (current_db.to_string(), Some(s.clone()), c.clone()),
        [d, s, c] => (d.clone(), Some(s.clone()), c.clone()),
        _ => return Err(unsupported(format!("invalid name {}", parts.join(".")))),
    };
    if let Some(s) = schema
        && s != super::catalog_provider::PUBLIC_SCHEMA
    {
        return Err(QueryError::Catalog(CatalogError::InvalidDefinition(
            format!("schema \"{s}\" does not exist: collections live in schema \"public\""),
        )));
    }
    Ok((db, coll))
}

/// Build a collection definition from `CREATE TABLE`.
pub fn collection_def(
    ct: &ast::CreateTable,
    current_db: &str,
) -> Result<CollectionDef, QueryError> {
    if ct.query.is_some() {
        return Err(unsupported("CREATE TABLE ... AS is not supported yet"));
    }
    if ct.like.is_some() || ct.clone.is_some() {
        return Err(unsupported("CREATE TABLE ... LIKE is not supported yet"));
    }
    if ct.temporary || ct.external {
        return Err(unsupported(
            "temporary and external tables are not supported",
        ));
    }
    // Clauses quiver does not implement are refused, never ignored.
    let refused = [
        (
            ct.partition_by.is_some(),
            "PARTITION BY (partitions are open work)",
        ),
        (
            ct.partition_of.is_some() || ct.for_values.is_some(),
            "PARTITION OF",
        ),
        (ct.inherits.is_some(), "INHERITS"),
        (ct.on_commit.is_some(), "ON COMMIT"),
        (ct.or_replace, "OR REPLACE"),
        (ct.order_by.is_some(), "ORDER BY"),
        (
            ct.cluster_by.is_some() || ct.clustered_by.is_some(),
            "CLUSTER BY",
        ),
        (ct.primary_key.is_some(), "PRIMARY KEY expression"),
        (
            ct.location.is_some() || ct.file_format.is_some(),
            "LOCATION / STORED AS",
        ),
    ];
    if let Some((_, clause)) = refused.iter().find(|(present, _)| *present) {
        return Err(unsupported(format!(
            "CREATE TABLE ... {clause} is not supported"
        )));
    }
    let options = ct.table_options.to_string();
    if !options.trim().is_empty() {
        return Err(unsupported(format!(
            "collection options {} are not supported yet",
            options.trim()
        )));
    }
    let (database, name) = resolve_name(&ct.name, current_db)?;
    let mut fields = Vec::new();
    let mut primary_key: Option<usize> = None;
    let set_pk = |pk: &mut Option<usize>, idx: usize| -> Result<(), QueryError> {
        if pk.is_some() {
            return Err(QueryError::Catalog(CatalogError::InvalidDefinition(
                "multiple primary keys are not allowed".into(),
            )));
        }
        *pk = Some(idx);
        Ok(())
    };
    for (i, col) in ct.columns.iter().enumerate() {
        let (field_type, auto) = field_type(&col.data_type)?;
        let mut field = FieldDef::new(&ident_name(&col.name), field_type);
        field.auto_increment = auto;
        for opt in &col.options {
            match &opt.option {
                ast::ColumnOption::NotNull => field.nullable = false,
                ast::ColumnOption::Null => field.nullable = true,
                ast::ColumnOption::Default(e) => {
                    field.default = Some(default_text(e, &field.field_type)?);
                }
                ast::ColumnOption::PrimaryKey(_) => set_pk(&mut primary_key, i)?,
                ast::ColumnOption::Identity(_) => field.auto_increment = true,
                ast::ColumnOption::Generated {
                    generation_expr: None,
                    ..
                } => field.auto_increment = true,
                other => {
                    return Err(unsupported(format!(
                        "column option {other} is not supported yet"
                    )));
                }
            }
        }
        fields.push(field);
    }
    for c in &ct.constraints {
        match c {
            ast::TableConstraint::PrimaryKey(pk) => {
                let [col] = pk.columns.as_slice() else {
                    return Err(unsupported("composite primary keys are not supported"));
                };
                let ast::Expr::Identifier(ident) = &col.column.expr else {
                    return Err(unsupported("primary keys must name a column"));
                };
                let n = ident_name(ident);
                let idx = fields.iter().position(|f| f.name == n).ok_or_else(|| {
                    QueryError::Catalog(CatalogError::InvalidDefinition(format!(
                        "column \"{n}\" named in key does not exist"
                    )))
                })?;
                set_pk(&mut primary_key, idx)?;
            }
            other => {
                return Err(unsupported(format!(
                    "constraint {other} is not supported yet"
                )));
            }
        }
    }
    if let Some(pk) = primary_key {
        fields[pk].nullable = false;
    }
    Ok(CollectionDef {
        id: 0,
        database,
        name,
        fields,
        primary_key,
        owner: None,
        indexes: vec![],
    })
}

/// The rows of `DESCRIBE COLLECTION`.
pub fn describe(def: &CollectionDef) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("field", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
        Field::new("default", DataType::Utf8, true),
        Field::new("primary_key", DataType::Boolean, false),
        Field::new("auto_id", DataType::Boolean, false),
    ]));
    let f = &def.fields;
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            f.iter().map(|x| x.name.clone()),
        )),
        Arc::new(StringArray::from_iter_values(
            f.iter().map(|x| x.field_type.sql_name()),
        )),
        Arc::new(BooleanArray::from_iter(f.iter().map(|x| Some(x.nullable)))),
        Arc::new(StringArray::from_iter(f.iter().map(|x| x.default.clone()))),
        Arc::new(BooleanArray::from_iter(
            (0..f.len()).map(|i| Some(def.primary_key == Some(i))),
        )),
        Arc::new(BooleanArray::from_iter(
            f.iter().map(|x| Some(x.auto_increment)),
        )),
    ];
    // The columns match the schema by construction.
    RecordBatch::try_new(schema.clone(), columns).unwrap_or_else(|_| RecordBatch::new_empty(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(
            parse_type_text("vector(3)").unwrap().0,
            FieldType::Vector { dim: 3 }
        );
        assert_eq!(
            parse_type_text("bigserial").unwrap(),
            (FieldType::Int64, true)
        );
        assert_eq!(parse_type_text("varchar(64)").unwrap().0, FieldType::Text);
        assert_eq!(
            parse_type_text("text[]").unwrap().0,
            FieldType::Array(Box::new(FieldType::Text))
        );
        assert_eq!(
            parse_type_text("timestamp with time zone").unwrap().0,
            FieldType::TimestampTz
        );
        assert!(parse_type_text("vector").is_err());
        assert!(parse_type_text("halfvec(3)").is_err());
    }
}
