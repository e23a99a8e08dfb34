//! Integer result types as PostgreSQL gives them. DataFusion reads every
//! integer literal as a bigint, so `SELECT 1`, `SELECT int_col + 1` and
//! `SELECT 10 / 3` came back as int8 where PostgreSQL says int4 (a
//! literal that fits is an `integer`; arithmetic takes the wider of its
//! operands). Drivers map the two to different types (node-postgres
//! returns an int8 as a string). A query's result columns whose type
//! PostgreSQL would narrow get a cast on top of the plan; a value that
//! does not fit is 22003, as PostgreSQL's "integer out of range".

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{
    BinaryExpr, Cast, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, Operator, TryCast,
};

/// Width rank of an integer type, `None` for any other.
fn rank(t: &DataType) -> Option<u8> {
    match t {
        DataType::Int8 | DataType::Int16 => Some(1),
        DataType::Int32 => Some(2),
        DataType::Int64 => Some(3),
        _ => None,
    }
}

fn of_rank(r: u8) -> DataType {
    match r {
        1 => DataType::Int16,
        2 => DataType::Int32,
        _ => DataType::Int64,
    }
}

/// The integer type PostgreSQL gives `expr` (over `input`'s rows), as a
/// rank; `None` when it is no integer or is not worked out here.
fn pg_rank(expr: &Expr, input: &LogicalPlan, depth: usize) -> Option<u8> {
    if depth > 64 {
        return None;
    }
    let own = || {
        expr.get_type(input.schema().as_ref())
            .ok()
            .and_then(|t| rank(&t))
    };
    match expr {
        Expr::Alias(a) => pg_rank(&a.expr, input, depth + 1),
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => {
            Some(if i32::try_from(*v).is_ok() { 2 } else { 3 })
        }
        Expr::Literal(..) => own(),
        Expr::Negative(e) => pg_rank(e, input, depth + 1),
        Expr::Cast(Cast { field, .. }) | Expr::TryCast(TryCast { field, .. }) => {
            rank(field.data_type())
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            use Operator::*;
            let l = pg_rank(left, input, depth + 1)?;
            match op {
                BitwiseShiftLeft | BitwiseShiftRight => pg_rank(right, input, depth + 1).map(|_| l),
                Plus | Minus | Multiply | Divide | Modulo | BitwiseAnd | BitwiseOr | BitwiseXor => {
                    pg_rank(right, input, depth + 1).map(|r| l.max(r))
                }
                _ => None,
            }
        }
        Expr::ScalarFunction(f) if f.name() == "abs" && f.args.len() == 1 => {
            pg_rank(&f.args[0], input, depth + 1)
        }
        Expr::Column(c) => column_rank(c, input, depth + 1).or_else(own),
        _ => own(),
    }
}

/// The rank of column `c` of `plan`'s output, followed down through the
/// nodes that pass their input's columns on.
fn column_rank(c: &Column, plan: &LogicalPlan, depth: usize) -> Option<u8> {
    if depth > 64 {
        return None;
    }
    let index = plan.schema().index_of_column(c).ok()?;
    source_rank(plan, index, depth)
}

/// The rank of output column `index` of `plan`.
fn source_rank(plan: &LogicalPlan, index: usize, depth: usize) -> Option<u8> {
    if depth > 64 {
        return None;
    }
    match plan {
        // One expression per output column (a wildcard not yet expanded
        // would break that: then nothing is worked out).
        LogicalPlan::Projection(p) if p.expr.len() == p.schema.fields().len() => {
            pg_rank(&p.expr[index], &p.input, depth + 1)
        }
        LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_) => {
            let input = plan.inputs().into_iter().next()?;
            source_rank(input, index, depth + 1)
        }
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            source_rank(input, index, depth + 1)
        }
        _ => rank(plan.schema().field(index).data_type()),
    }
}

/// `plan` with its bigint result columns that PostgreSQL types narrower
/// cast to that type; `plan` itself when there are none (or its columns'
/// names are not unique, so they cannot be named).
pub fn narrow_result_integers(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    if matches!(
        plan,
        LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_)
    ) {
        return Ok(plan);
    }
    let schema: &DFSchema = plan.schema();
    let mut narrowed = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if field.data_type() == &DataType::Int64
            && let Some(r) = source_rank(&plan, i, 0)
            && r < 3
        {
            narrowed.push((i, of_rank(r)));
        }
    }
    if narrowed.is_empty() {
        return Ok(plan);
    }
    let columns: Vec<Column> = schema.columns();
    let unique = {
        let mut seen = std::collections::HashSet::new();
        columns.iter().all(|c| seen.insert(c.clone()))
    };
    if !unique {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = columns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c.name.clone();
            match narrowed.iter().find(|(j, _)| *j == i) {
                Some((_, t)) => Expr::Cast(Cast::new(Box::new(Expr::Column(c)), t.clone()))
                    .alias_qualified(schema.qualified_field(i).0.cloned(), name),
                None => Expr::Column(c),
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}
