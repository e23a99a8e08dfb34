//! `INSERT INTO c [(cols)] VALUES (...), (...)` whose values are all plain
//! literals goes straight to Arrow, as COPY does, instead of through
//! DataFusion's planner: a 22 MB VALUES list took 43 s and 2.5 GB there.
//! Anything else (expressions, DEFAULT, RETURNING, columns with defaults,
//! types whose literals need PostgreSQL's own input rules) takes the
//! general path, which gives the same answers, only slower.

use std::collections::BTreeSet;

use datafusion::sql::sqlparser::ast;
use quiver_auth::acl::Privilege;
use quiver_catalog::{CollectionDef, FieldType};
use quiver_common::sqlstate;
use quiver_storage::Mutation;

use super::access::{self, Need};
use super::ddl::{ident_name, resolve_name};
use super::{Engine, Output, QueryError, Session};

/// A literal as text, or why the statement takes the general path.
fn literal(expr: &ast::Expr, field: &FieldType) -> Option<Option<String>> {
    use ast::{Expr, UnaryOperator, Value};
    let (value, negative) = match expr {
        Expr::Value(v) => (&v.value, false),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) if matches!(v.value, Value::Number(..)) => (&v.value, true),
            _ => return None,
        },
        _ => return None,
    };
    match (value, field) {
        (Value::Null, _) => Some(None),
        (Value::Number(n, false), FieldType::Int16 | FieldType::Int32 | FieldType::Int64) => {
            let v: i64 = n.parse().ok()?;
            let v = if negative { v.checked_neg()? } else { v };
            let fits = match field {
                FieldType::Int16 => i16::try_from(v).is_ok(),
                FieldType::Int32 => i32::try_from(v).is_ok(),
                _ => true,
            };
            fits.then(|| Some(v.to_string()))
        }
        (Value::Number(n, false), FieldType::Float32 | FieldType::Float64) => {
            let v: f64 = n.parse().ok()?;
            v.is_finite()
                .then(|| Some(if negative { format!("-{n}") } else { n.clone() }))
        }
        (Value::Boolean(b), FieldType::Bool) if !negative => Some(Some(b.to_string())),
        (
            Value::SingleQuotedString(s),
            FieldType::Text | FieldType::Vector { .. } | FieldType::Bit { .. },
        ) if !negative => Some(Some(s.clone())),
        _ => None,
    }
}

impl Engine {
    /// Run `stmt` on the literal path if it qualifies; `None` otherwise.
    pub(super) async fn insert_literals(
        &self,
        session: &Session,
        stmt: &ast::Statement,
    ) -> Result<Option<Output>, QueryError> {
        let ast::Statement::Insert(insert) = stmt else {
            return Ok(None);
        };
        let plain = insert.on.is_none()
            && insert.returning.is_none()
            && insert.output.is_none()
            && !insert.overwrite
            && !insert.replace_into
            && !insert.ignore
            && insert.or.is_none()
            && insert.table_alias.is_none()
            && insert.partitioned.is_none()
            && insert.after_columns.is_empty()
            && insert.assignments.is_empty()
            && insert.settings.is_none()
            && insert.format_clause.is_none()
            && insert.insert_alias.is_none()
            && insert.multi_table_insert_type.is_none();
        let (ast::TableObject::TableName(name), Some(source), true) =
            (&insert.table, &insert.source, plain)
        else {
            return Ok(None);
        };
        let ast::SetExpr::Values(values) = source.body.as_ref() else {
            return Ok(None);
        };
        if source.with.is_some()
            || source.order_by.is_some()
            || source.limit_clause.is_some()
            || source.fetch.is_some()
            || values.explicit_row
            || values.rows.is_empty()
        {
            return Ok(None);
        }
        let Ok((db, coll)) = resolve_name(name, &session.database()) else {
            return Ok(None);
        };
        let Some(def) = self.catalog().collection(&db, &coll) else {
            return Ok(None);
        };
        let Some(targets) = targets(&def, &insert.columns) else {
            return Ok(None);
        };
        // Every row as long as the column list, every value a literal of
        // its column's type.
        let mut columns: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(values.rows.len()); targets.len()];
        for row in &values.rows {
            if row.content.len() != targets.len() {
                return Ok(None);
            }
            for ((expr, &field), column) in row.content.iter().zip(&targets).zip(&mut columns) {
                let Some(v) = literal(expr, &def.fields[field].field_type) else {
                    return Ok(None);
                };
                column.push(v);
            }
        }
        access::authorize(
            self.catalog(),
            session,
            &BTreeSet::from([Need::on(Privilege::Insert, &def)]),
        )?;
        let data = self.storage().open_collection(&def)?;
        let rows = values.rows.len();
        let batch = quiver_exec::copy::text_to_batch(
            &def,
            data.schema(),
            &targets,
            &mut columns,
            rows,
            |m, code| quiver_exec::ExecError::Data {
                message: format!("invalid input for {m}"),
                code,
            },
        )?;
        let tx = session.transaction();
        let (n, _) =
            quiver_exec::txn::mutate(&data, tx.as_deref(), Mutation::insert(batch), false, None)
                .await?;
        Ok(Some(Output::Command {
            tag: "INSERT".into(),
            rows: Some(n),
        }))
    }
}

/// The collection an INSERT writes and the fields its columns fill.
pub(super) fn insert_targets(
    engine: &Engine,
    session: &Session,
    stmt: &ast::Statement,
) -> Option<(std::sync::Arc<CollectionDef>, Vec<usize>)> {
    let ast::Statement::Insert(insert) = stmt else {
        return None;
    };
    let ast::TableObject::TableName(name) = &insert.table else {
        return None;
    };
    let (db, coll) = resolve_name(name, &session.database()).ok()?;
    let def = engine.catalog().collection(&db, &coll)?;
    let targets = field_list(&def, &insert.columns)?;
    Some((def, targets))
}

/// DataFusion stops a NULL bound for a NOT NULL column before storage
/// sees it, with Arrow's words about the VALUES list's own column
/// (`Column 'column2' is declared as non-nullable`) or the sink's input
/// (`Invalid batch column at '2' has null`). Say it as PostgreSQL does
/// (23502, the collection's column); likewise its refusal to store text
/// in a vector column (42804).
pub(super) fn insert_error(
    target: Option<&(std::sync::Arc<CollectionDef>, Vec<usize>)>,
    e: QueryError,
) -> QueryError {
    let Some((def, targets)) = target else {
        return e;
    };
    let text = e.to_string();
    // DataFusion's refusal to store text in a vector (or bit) column:
    // PostgreSQL's 42804, naming the column.
    if let Some(rest) = text.split("Cannot automatically convert ").nth(1)
        && let Some((from, to)) = rest.split_once(" to ")
    {
        let column = targets
            .iter()
            .map(|&t| &def.fields[t])
            .find(|f| to.trim() == f.field_type.arrow_type().to_string());
        if let Some(field) = column {
            let from = match from.trim() {
                "Utf8" | "Utf8View" | "LargeUtf8" => "text".to_string(),
                other => other.to_lowercase(),
            };
            return QueryError::Data {
                message: format!(
                    "column \"{}\" is of type {} but expression is of type {from}: cast the expression (e.g. ::{})",
                    field.name,
                    field.field_type.sql_name(),
                    field.field_type.sql_name()
                ),
                code: sqlstate::DATATYPE_MISMATCH,
            };
        }
    }
    let between = |start: &str, end: &str| {
        text.split(start)
            .nth(1)
            .and_then(|rest| rest.split_once(end))
            .map(|(name, _)| name.to_string())
    };
    let field = if let Some(name) = between("Column '", "' is declared as non-nullable") {
        match name
            .strip_prefix("column")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n >= 1 && n <= targets.len() => Some(targets[n - 1]),
            _ => def.field_index(&name),
        }
    } else if let Some(at) = between("Invalid batch column at '", "' has null") {
        // The sink's input has the collection's fields, in order.
        at.parse::<usize>().ok().filter(|&i| i < def.fields.len())
    } else {
        None
    };
    match field {
        Some(f) => QueryError::Storage(quiver_storage::StorageError::NotNull {
            collection: def.name.clone(),
            field: def.fields[f].name.clone(),
        }),
        None => e,
    }
}

/// The fields the VALUES fill, in order; `None` when a name is unknown or
/// repeated (the general path words the error), or when a field left out
/// has a default to compute.
fn targets(def: &CollectionDef, columns: &[ast::ObjectName]) -> Option<Vec<usize>> {
    let targets = field_list(def, columns)?;
    let omitted_default = def
        .fields
        .iter()
        .enumerate()
        .any(|(i, f)| f.default.is_some() && !targets.contains(&i));
    (!omitted_default).then_some(targets)
}

/// The fields named by an INSERT's column list (all, in order, without
/// one); `None` when a name is unknown or repeated.
fn field_list(def: &CollectionDef, columns: &[ast::ObjectName]) -> Option<Vec<usize>> {
    let targets: Vec<usize> = if columns.is_empty() {
        (0..def.fields.len()).collect()
    } else {
        let mut out = Vec::with_capacity(columns.len());
        for c in columns {
            let [part] = c.0.as_slice() else { return None };
            let name = ident_name(part.as_ident()?);
            let i = def.field_index(&name)?;
            if out.contains(&i) {
                return None;
            }
            out.push(i);
        }
        out
    };
    Some(targets)
}
