//! Teaching DataFusion's SQL planner about vectors: the `vector(n)` type,
//! pgvector's distance operators, and casts to `vector`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr, TypePlanner};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, ScalarUDF, lit};
use datafusion::optimizer::AnalyzerRule;
use datafusion::sql::sqlparser::ast::{self, BinaryOperator};
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;

use crate::vector_udf::{distance_udf, to_bit_udf, to_text_udf, to_vector_udf};
use quiver_vector::column::{
    any_vector_data_type, bit_data_type, bit_length_of, bit_metadata, vector_data_type,
    vector_dim_of, vector_metadata,
};
use quiver_vector::text::parse_vector;
use quiver_vector::{Metric, VectorError};

/// Plans `vector(n)`/`float_vector(n)`; everything else goes to the
/// PostgreSQL oid-alias planner of `datafusion-pg-catalog`.
#[derive(Debug)]
pub struct VectorTypePlanner;

impl TypePlanner for VectorTypePlanner {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> Result<Option<FieldRef>> {
        if let ast::DataType::Custom(name, modifiers) = sql_type {
            let last = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.to_ascii_lowercase());
            if matches!(last.as_deref(), Some("vector" | "float_vector")) {
                let data_type = match modifiers.first() {
                    Some(d) => {
                        let dim: usize = d.parse().map_err(|_| {
                            DataFusionError::Plan(format!("invalid vector dimension {d}"))
                        })?;
                        vector_data_type(dim)
                    }
                    None => any_vector_data_type(),
                };
                return Ok(Some(Arc::new(
                    Field::new("vector", data_type, true).with_metadata(vector_metadata()),
                )));
            }
        }
        let bits = match sql_type {
            ast::DataType::Bit(n) => Some(n.unwrap_or(1) as usize),
            ast::DataType::Custom(name, modifiers)
                if name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("binary_vector")) =>
            {
                let n = modifiers.first().ok_or_else(|| {
                    DataFusionError::Plan("binary_vector needs a length in bits".into())
                })?;
                Some(
                    n.parse::<usize>()
                        .map_err(|_| DataFusionError::Plan(format!("invalid bit length {n}")))?,
                )
            }
            _ => None,
        };
        if let Some(bits) = bits {
            if bits == 0 || bits as i64 > quiver_vector::column::MAX_BITS {
                return Err(DataFusionError::Plan(format!(
                    "length for type bit must be from 1 to {}, not {bits}",
                    quiver_vector::column::MAX_BITS
                )));
            }
            return Ok(Some(Arc::new(
                Field::new("bit", bit_data_type(bits), true).with_metadata(bit_metadata(bits)),
            )));
        }
        if let Some(uuid) = crate::uuid_sql::plan_uuid_type(sql_type) {
            return Ok(Some(uuid));
        }
        // `'_RETURN'::name` (catalog queries): the catalog's names are text.
        if let ast::DataType::Custom(name, modifiers) = sql_type
            && modifiers.is_empty()
            && name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("name"))
        {
            return Ok(Some(Arc::new(Field::new("name", DataType::Utf8, true))));
        }
        PgOidTypePlanner.plan_type_field(sql_type)
    }
}

/// Plans `<->`, `<#>`, `<=>`, `<+>` into the distance functions.
#[derive(Debug)]
pub struct VectorOperatorPlanner;

fn operator_metric(op: &BinaryOperator) -> Option<Metric> {
    match op {
        BinaryOperator::LtDashGt => Some(Metric::L2),
        BinaryOperator::Spaceship => Some(Metric::Cosine),
        BinaryOperator::Custom(s) => match s.as_str() {
            "<->" => Some(Metric::L2),
            "<#>" => Some(Metric::NegativeInnerProduct),
            "<=>" => Some(Metric::Cosine),
            "<+>" => Some(Metric::L1),
            "<~>" => Some(Metric::Hamming),
            "<%>" => Some(Metric::Jaccard),
            _ => None,
        },
        _ => None,
    }
}

/// Turn a text literal into a vector literal and type a bare parameter as a
/// vector (so clients are told the parameter is a `vector`).
fn vector_operand(expr: Expr) -> Result<Expr> {
    match expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)), _) => {
            let values = parse_vector(&text).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let scalars: Vec<ScalarValue> = values
                .into_iter()
                .map(|v| ScalarValue::Float32(Some(v)))
                .collect();
            Ok(lit(ScalarValue::List(ScalarValue::new_list_nullable(
                &scalars,
                &DataType::Float32,
            ))))
        }
        Expr::Placeholder(Placeholder { id, field: None }) => {
            // Dimensionless, so that a query vector of the wrong size reaches
            // the distance function and fails there with its clear message.
            let data_type = any_vector_data_type();
            Ok(Expr::Placeholder(Placeholder {
                id,
                field: Some(Arc::new(
                    Field::new("vector", data_type, true).with_metadata(vector_metadata()),
                )),
            }))
        }
        // `$1::real[]`: the parameter takes the type it is cast to.
        Expr::Cast(mut cast) => {
            if let Expr::Placeholder(Placeholder { id, field: None }) = cast.expr.as_ref() {
                cast.expr = Box::new(Expr::Placeholder(Placeholder {
                    id: id.clone(),
                    field: Some(cast.field.clone()),
                }));
            }
            Ok(Expr::Cast(cast))
        }
        other => Ok(other),
    }
}

/// An operand of `<~>`/`<%>`: a bare parameter is typed as text (the bit
/// string's text form, `'0101'`), a cast parameter takes the cast's type;
/// text literals are parsed by the distance function.
fn bit_operand(expr: Expr) -> Expr {
    match expr {
        Expr::Placeholder(Placeholder { id, field: None }) => Expr::Placeholder(Placeholder {
            id,
            field: Some(Arc::new(Field::new("bit", DataType::Utf8, true))),
        }),
        Expr::Cast(mut cast) => {
            if let Expr::Placeholder(Placeholder { id, field: None }) = cast.expr.as_ref() {
                cast.expr = Box::new(Expr::Placeholder(Placeholder {
                    id: id.clone(),
                    field: Some(cast.field.clone()),
                }));
            }
            Expr::Cast(cast)
        }
        other => other,
    }
}

impl ExprPlanner for VectorOperatorPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if let Some(udf) = crate::json_udf::operator_function(&expr.op) {
            return Ok(PlannerResult::Planned(Expr::ScalarFunction(
                ScalarFunction::new_udf(Arc::new(udf), vec![expr.left, expr.right]),
            )));
        }
        use crate::vector_ops::{Arith, arith_udf};
        let arith = match expr.op {
            BinaryOperator::Plus => Some(Arith::Add),
            BinaryOperator::Minus => Some(Arith::Sub),
            BinaryOperator::Multiply => Some(Arith::Mul),
            BinaryOperator::StringConcat => Some(Arith::Concat),
            _ => None,
        };
        if let Some(op) = arith
            && (is_vector(&expr.left, schema) || is_vector(&expr.right, schema))
        {
            return Ok(PlannerResult::Planned(Expr::ScalarFunction(
                ScalarFunction::new_udf(
                    Arc::new(arith_udf(op)),
                    vec![vector_operand(expr.left)?, vector_operand(expr.right)?],
                ),
            )));
        }
        let Some(metric) = operator_metric(&expr.op) else {
            return Ok(PlannerResult::Original(compare_as_stored(expr, schema)?));
        };
        let (left, right) = if metric.is_binary() {
            (bit_operand(expr.left), bit_operand(expr.right))
        } else {
            (vector_operand(expr.left)?, vector_operand(expr.right)?)
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(distance_udf(metric)), vec![left, right]),
        )))
    }
}

/// What a text literal compared with a vector or bit-string expression
/// becomes: `to_vector(text, dim)` or `to_bit(text, bits)`.
fn stored_form_of(other: &Expr, schema: &DFSchema) -> Option<(ScalarUDF, i64)> {
    let (_, field) = other.to_field(schema).ok()?;
    if let DataType::FixedSizeBinary(width) = field.data_type() {
        let bits = bit_length_of(&field).map_or(-(*width as i64), |n| n as i64);
        return Some((to_bit_udf(), bits));
    }
    match vector_dim_of(field.data_type()) {
        Some(Some(dim)) => Some((to_vector_udf(), dim as i64)),
        _ => None,
    }
}

/// Whether `e` is a vector (of a dimension, or marked as one) or a bit
/// string, whose casts to text give its text form.
fn has_text_form(e: &Expr, schema: &DFSchema) -> bool {
    let Ok((_, field)) = e.to_field(schema) else {
        return false;
    };
    matches!(field.data_type(), DataType::FixedSizeBinary(_))
        || matches!(vector_dim_of(field.data_type()), Some(Some(_)))
        || (vector_dim_of(field.data_type()).is_some()
            && field
                .metadata()
                .contains_key(quiver_vector::column::VECTOR_METADATA_KEY))
}

fn is_text_literal(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Literal(
            ScalarValue::Utf8(Some(_))
                | ScalarValue::LargeUtf8(Some(_))
                | ScalarValue::Utf8View(Some(_)),
            _
        )
    )
}

/// `b = '0101'`, `v <> '[1,2]'`: a text literal compared with a bit string
/// or a vector is read as one, as PostgreSQL reads an untyped literal.
fn compare_as_stored(mut expr: RawBinaryExpr, schema: &DFSchema) -> Result<RawBinaryExpr> {
    let comparison = matches!(
        expr.op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    );
    if !comparison {
        return Ok(expr);
    }
    let wrap = |text: Expr, (udf, size): (ScalarUDF, i64)| {
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(udf),
            vec![text, lit(size)],
        ))
    };
    if is_text_literal(&expr.right)
        && let Some(form) = stored_form_of(&expr.left, schema)
    {
        expr.right = wrap(expr.right, form);
    } else if is_text_literal(&expr.left)
        && let Some(form) = stored_form_of(&expr.right, schema)
    {
        expr.left = wrap(expr.left, form);
    } else if is_text_literal(&expr.right) && is_vector(&expr.left, schema) {
        // A vector of no fixed dimension (`'[1,2]'::vector < '[1,3]'`).
        expr.right = vector_operand(expr.right)?;
    } else if is_text_literal(&expr.left) && is_vector(&expr.right, schema) {
        expr.left = vector_operand(expr.left)?;
    }
    Ok(expr)
}

/// Whether `e` is a vector: of a dimension, or marked as one.
fn is_vector(e: &Expr, schema: &DFSchema) -> bool {
    e.to_field(schema)
        .is_ok_and(|(_, f)| match vector_dim_of(f.data_type()) {
            Some(Some(_)) => true,
            Some(None) => f
                .metadata()
                .contains_key(quiver_vector::column::VECTOR_METADATA_KEY),
            None => false,
        })
}

/// Rewrites casts to `vector` (`'[1,2]'::vector(2)`, INSERT coercion of
/// text or arrays into a vector column) into `to_vector`, which parses text
/// and checks the dimension with a clear error.
#[derive(Debug)]
pub struct VectorCastRule;

fn rewrite_casts(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| {
        let (inner, field) = match &e {
            Expr::Cast(c) => (&c.expr, &c.field),
            Expr::TryCast(c) => (&c.expr, &c.field),
            _ => return Ok(Transformed::no(e)),
        };
        // Vectors and bit strings to text: their text forms.
        if matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) && has_text_form(inner, schema)
        {
            let text = Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(to_text_udf()),
                vec![inner.as_ref().clone()],
            ));
            return Ok(Transformed::yes(text.cast_to(field.data_type(), schema)?));
        }
        // Casts to `bit(n)`, or to the bytes of a bit string whose length
        // was lost on the way (UPDATE): `to_bit` parses and checks.
        if let DataType::FixedSizeBinary(width) = field.data_type() {
            let bits = bit_length_of(field).map_or(-(*width as i64), |n| n as i64);
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(to_bit_udf()),
                vec![inner.as_ref().clone(), lit(bits)],
            ));
            return Ok(Transformed::yes(call));
        }
        // Text to an array (not a vector): PostgreSQL's array literal.
        let marked = field
            .metadata()
            .contains_key(quiver_vector::column::VECTOR_METADATA_KEY);
        if let DataType::List(item) = field.data_type()
            && !marked
            && matches!(
                inner.get_type(schema),
                Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            )
        {
            let item_null = datafusion::common::ScalarValue::try_from(item.data_type())?;
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(crate::array_udf::to_array_udf()),
                vec![inner.as_ref().clone(), lit(item_null)],
            ));
            return Ok(Transformed::yes(call.cast_to(field.data_type(), schema)?));
        }
        // Casts to `vector(n)` (fixed size) or to a field marked as a
        // vector; a cast to `real[]` stays an ordinary array cast.
        let Some(dim) = vector_dim_of(field.data_type()) else {
            return Ok(Transformed::no(e));
        };
        let marked = field
            .metadata()
            .contains_key(quiver_vector::column::VECTOR_METADATA_KEY);
        if dim.is_none() && !marked {
            return Ok(Transformed::no(e));
        }
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(to_vector_udf()),
            vec![inner.as_ref().clone(), lit(dim.unwrap_or(0) as i64)],
        ));
        Ok(Transformed::yes(call))
    })
}

/// `plan` with `rewrite` applied to every expression of every node (its
/// subqueries too), each against the schema of the node's inputs; output
/// column names stay what they were before the rewrite.
pub fn rewrite_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|p| {
            let names = NamePreserver::new(&p);
            let schema = merge_schema(&p.inputs());
            p.map_expressions(|e| {
                let saved = names.save(&e);
                Ok(rewrite(e, &schema)?.update_data(|e| saved.restore(e)))
            })
        })?
        .data)
}

impl AnalyzerRule for VectorCastRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_expressions(plan, rewrite_casts)
    }

    fn name(&self) -> &str {
        "vector_cast"
    }
}

/// Errors raised by vector planning, for the SQLSTATE mapping.
pub fn is_vector_error(e: &DataFusionError) -> Option<&VectorError> {
    match e {
        DataFusionError::External(b) => b.downcast_ref::<VectorError>(),
        _ => None,
    }
}
