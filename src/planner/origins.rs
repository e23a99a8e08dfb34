//! Where a result column comes from: the table oid and column number
//! PostgreSQL puts in a RowDescription for a column that is a table's
//! column as stored (`SELECT id, title AS t FROM docs`), and 0 for
//! anything computed. Clients read them: pgjdbc's
//! `ResultSetMetaData.isNullable`, `getTableName` and `isAutoIncrement`
//! look the column up in `pg_attribute` by them.
//!
//! The origin is traced through the logical plan as planned (before the
//! optimizer and the ANN rewrite): projections of plain columns (aliased
//! or not), filters, sorts, limits, subquery aliases, `DISTINCT` and the
//! two sides of a join lead to a scan of a collection.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan};
use quiver_catalog::Catalog;

/// Field metadata: the table oid of a result column's origin.
pub const TABLE_OID_KEY: &str = "quiver.origin_table";
/// Field metadata: the column number (from 1) of a result column's origin.
pub const ATTNUM_KEY: &str = "quiver.origin_attnum";

/// The scan and column a plan's output column `i` reads unchanged.
fn trace(plan: &LogicalPlan, i: usize) -> Option<(String, Option<String>, String)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let mut e = p.expr.get(i)?;
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            let Expr::Column(c) = e else {
                return None;
            };
            let j = p.input.schema().index_of_column(c).ok()?;
            trace(&p.input, j)
        }
        LogicalPlan::Filter(f) => trace(&f.input, i),
        LogicalPlan::Sort(s) => trace(&s.input, i),
        LogicalPlan::Limit(l) => trace(&l.input, i),
        LogicalPlan::SubqueryAlias(s) => trace(&s.input, i),
        LogicalPlan::Distinct(Distinct::All(input)) => trace(input, i),
        LogicalPlan::Join(j) => match j.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => trace(&j.left, i),
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => trace(&j.right, i),
            _ => {
                let n = j.left.schema().fields().len();
                if i < n {
                    trace(&j.left, i)
                } else {
                    trace(&j.right, i - n)
                }
            }
        },
        LogicalPlan::TableScan(t) => {
            let source = match &t.projection {
                Some(p) => *p.get(i)?,
                None => i,
            };
            let schema = t.source.schema();
            let column = schema.fields().get(source)?.name().clone();
            Some((
                t.table_name.table().to_string(),
                t.table_name.schema().map(str::to_string),
                column,
            ))
        }
        _ => None,
    }
}

/// The origin (table oid, column number) of each output column of `plan`
/// that is a collection's column in `database`.
pub fn origins(plan: &LogicalPlan, catalog: &Catalog, database: &str) -> Vec<Option<(i64, usize)>> {
    (0..plan.schema().fields().len())
        .map(|i| {
            let (table, schema, column) = trace(plan, i)?;
            if schema
                .as_deref()
                .is_some_and(|s| s != crate::catalog_provider::PUBLIC_SCHEMA)
            {
                return None;
            }
            let def = catalog.collection(database, &table)?;
            let attnum = def.fields.iter().position(|c| c.name == column)? + 1;
            Some((crate::pg_relations::table_oid(&def), attnum))
        })
        .collect()
}

/// `schema` with `origins` (from [`origins`], column for column) marked in
/// its fields' metadata ([`TABLE_OID_KEY`], [`ATTNUM_KEY`]).
pub fn mark(schema: SchemaRef, origins: &[Option<(i64, usize)>]) -> SchemaRef {
    if origins.len() != schema.fields().len() || origins.iter().all(Option::is_none) {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(origins)
        .map(|(f, origin)| match origin {
            Some((oid, attnum)) => {
                let mut metadata: HashMap<String, String> = f.metadata().clone();
                metadata.insert(TABLE_OID_KEY.to_string(), oid.to_string());
                metadata.insert(ATTNUM_KEY.to_string(), attnum.to_string());
                f.as_ref().clone().with_metadata(metadata)
            }
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `schema` (the output of `plan`) marked with the origins of its columns.
pub fn with_origins(
    schema: SchemaRef,
    plan: &LogicalPlan,
    catalog: &Catalog,
    database: &str,
) -> SchemaRef {
    mark(schema, &origins(plan, catalog, database))
}
