//! PostgreSQL's `uuid` in queries: the type name, casts to it, text
//! literals compared with a uuid, and `gen_random_uuid()`. Also casts to
//! `json` / `jsonb`, text checked to be JSON.
//!
//! A uuid is its canonical text in a marked `Utf8` field
//! (`quiver_common::uuid`). Stored values are canonical (the storage layer
//! brings them to that form on write), so what a query compares them with
//! must be too: `id = 'A0EEBC99-…'` and `id = '{a0eebc99…}'` find the row
//! as in PostgreSQL, and `'xyz'::uuid` is PostgreSQL's 22P02.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::{InList, ScalarFunction};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::sql::sqlparser::ast;
use quiver_common::uuid::{canonical, is_uuid, uuid_metadata};

/// A uuid field named `name`.
pub fn uuid_field(name: &str) -> FieldRef {
    Arc::new(Field::new(name, DataType::Utf8, true).with_metadata(uuid_metadata()))
}

/// The field of the SQL type `uuid`.
pub fn plan_uuid_type(sql_type: &ast::DataType) -> Option<FieldRef> {
    let named = match sql_type {
        ast::DataType::Uuid => true,
        ast::DataType::Custom(name, modifiers) => {
            modifiers.is_empty()
                && name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("uuid"))
        }
        _ => false,
    };
    if named {
        return Some(uuid_field("uuid"));
    }
    let json = match sql_type {
        ast::DataType::JSON | ast::DataType::JSONB => true,
        ast::DataType::Custom(name, modifiers) => {
            modifiers.is_empty()
                && name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                    matches!(i.value.to_ascii_lowercase().as_str(), "json" | "jsonb")
                })
        }
        _ => false,
    };
    json.then(|| json_field("json"))
}

/// A json field named `name`.
fn json_field(name: &str) -> FieldRef {
    Arc::new(
        Field::new(name, DataType::Utf8, true).with_metadata(quiver_common::json::json_metadata()),
    )
}

fn invalid(text: &str) -> DataFusionError {
    DataFusionError::External(Box::new(quiver_storage::StorageError::InvalidUuid(
        text.to_string(),
    )))
}

/// The canonical text of `text`, or 22P02.
fn canonical_or_error(text: &str) -> Result<String> {
    canonical(text).ok_or_else(|| invalid(text))
}

fn marked(expr: &Expr, schema: &DFSchema) -> bool {
    expr.to_field(schema)
        .is_ok_and(|(_, f)| is_uuid(f.metadata()) && f.data_type() == &DataType::Utf8)
}

fn is_text(expr: &Expr, schema: &DFSchema) -> bool {
    matches!(
        expr.get_type(schema),
        Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    )
}

/// `uuid_in(text)`: text as a uuid, as PostgreSQL's input function reads
/// it (22P02 for text that is not one).
#[derive(Debug, PartialEq, Eq, Hash)]
struct UuidIn {
    signature: Signature,
}

pub const UUID_IN: &str = "uuid_in";

impl ScalarUDFImpl for UuidIn {
    fn name(&self) -> &str {
        UUID_IN
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(uuid_field(UUID_IN))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("uuid_in takes one argument");
        };
        match arg {
            ColumnarValue::Scalar(s) => {
                let text = match s {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                        v.clone()
                    }
                    ScalarValue::Null => None,
                    other => return exec_err!("uuid_in: text expected, not {other}"),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                    text.map(|t| canonical_or_error(&t)).transpose()?,
                )))
            }
            ColumnarValue::Array(a) => {
                let a = arrow::compute::cast(a, &DataType::Utf8)?;
                let values = a.as_string::<i32>();
                let mut out = StringBuilder::with_capacity(values.len(), values.len() * 36);
                for v in values.iter() {
                    match v {
                        Some(v) => out.append_value(canonical_or_error(v)?),
                        None => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
            }
        }
    }
}

/// `json_in(text)`: text checked to be JSON (22P02 otherwise), as json.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonIn {
    signature: Signature,
}

pub const JSON_IN: &str = "json_in";

fn checked_json(text: &str) -> Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| {
            DataFusionError::External(Box::new(quiver_storage::StorageError::InvalidJsonValue(
                e.to_string(),
            )))
        })
}

impl ScalarUDFImpl for JsonIn {
    fn name(&self) -> &str {
        JSON_IN
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(json_field(JSON_IN))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("json_in takes one argument");
        };
        let text = arg.to_array(args.number_rows)?;
        let text = arrow::compute::cast(&text, &DataType::Utf8)?;
        for v in text.as_string::<i32>().iter().flatten() {
            checked_json(v)?;
        }
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&text, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(text),
        })
    }
}

/// `gen_random_uuid()`: a version 4 (random) uuid per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GenRandomUuid {
    signature: Signature,
}

impl ScalarUDFImpl for GenRandomUuid {
    fn name(&self) -> &str {
        "gen_random_uuid"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(uuid_field("gen_random_uuid"))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mut out = StringBuilder::with_capacity(args.number_rows, args.number_rows * 36);
        for _ in 0..args.number_rows {
            out.append_value(uuid::Uuid::new_v4().hyphenated().to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

pub fn uuid_in_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(UuidIn {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// The functions of this module, for registration in a session.
pub fn all_udfs() -> Vec<ScalarUDF> {
    vec![
        uuid_in_udf(),
        json_in_udf(),
        ScalarUDF::new_from_impl(GenRandomUuid {
            signature: Signature::nullary(Volatility::Volatile),
        }),
    ]
}

fn json_in_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonIn {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

fn uuid_in(expr: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(uuid_in_udf()), vec![expr]))
}

/// `other` made fit to compare with a uuid: a text literal in canonical
/// form (22P02 now when it is not a uuid), other text through `uuid_in`.
/// Parameters arrive canonical (the server reads them as uuids).
fn as_uuid(other: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match other {
        Expr::Literal(ScalarValue::Utf8(Some(t)), meta) => Ok(Transformed::yes(Expr::Literal(
            ScalarValue::Utf8(Some(canonical_or_error(&t)?)),
            meta,
        ))),
        Expr::Literal(ScalarValue::Utf8View(Some(t)) | ScalarValue::LargeUtf8(Some(t)), meta) => {
            Ok(Transformed::yes(Expr::Literal(
                ScalarValue::Utf8(Some(canonical_or_error(&t)?)),
                meta,
            )))
        }
        e @ (Expr::Literal(..) | Expr::Placeholder(_)) => Ok(Transformed::no(e)),
        e if !marked(&e, schema) && is_text(&e, schema) => Ok(Transformed::yes(uuid_in(e))),
        e => Ok(Transformed::no(e)),
    }
}

fn is_comparison(op: &Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

fn rewrite(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| match e {
        Expr::Cast(c) if is_uuid(c.field.metadata()) => {
            if marked(&c.expr, schema) {
                Ok(Transformed::yes(*c.expr))
            } else {
                Ok(Transformed::yes(uuid_in(*c.expr)))
            }
        }
        Expr::TryCast(c) if is_uuid(c.field.metadata()) => {
            if marked(&c.expr, schema) {
                Ok(Transformed::yes(*c.expr))
            } else {
                Ok(Transformed::yes(uuid_in(*c.expr)))
            }
        }
        // Text to json: checked; json stays as it is.
        Expr::Cast(c) if quiver_common::json::is_json(c.field.metadata()) => {
            let is_json = c
                .expr
                .to_field(schema)
                .is_ok_and(|(_, f)| quiver_common::json::is_json(f.metadata()));
            Ok(Transformed::yes(if is_json {
                *c.expr
            } else {
                Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(json_in_udf()),
                    vec![*c.expr],
                ))
            }))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison(&op) => {
            let (l, r) = (marked(&left, schema), marked(&right, schema));
            if l == r {
                return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right,
                })));
            }
            let (left, right) = if l {
                let right = as_uuid(*right, schema)?;
                if !right.transformed {
                    return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                        left,
                        op,
                        right: Box::new(right.data),
                    })));
                }
                (left, Box::new(right.data))
            } else {
                let left = as_uuid(*left, schema)?;
                if !left.transformed {
                    return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                        left: Box::new(left.data),
                        op,
                        right,
                    })));
                }
                (Box::new(left.data), right)
            };
            Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                left,
                op,
                right,
            })))
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) if marked(&expr, schema) => {
            let mut changed = false;
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                let t = as_uuid(item, schema)?;
                changed |= t.transformed;
                out.push(t.data);
            }
            let e = Expr::InList(InList {
                expr,
                list: out,
                negated,
            });
            Ok(if changed {
                Transformed::yes(e)
            } else {
                Transformed::no(e)
            })
        }
        e => Ok(Transformed::no(e)),
    })
}

/// Brings what a query compares with a uuid, or casts to one, into the
/// canonical form (see the module's documentation).
#[derive(Debug)]
pub struct UuidRule;

impl AnalyzerRule for UuidRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        crate::vector_sql::rewrite_expressions(plan, rewrite)
    }

    fn name(&self) -> &str {
        "uuid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_compared_with_a_uuid_become_canonical() {
        let schema = DFSchema::try_from(arrow::datatypes::Schema::new(vec![
            uuid_field("id").as_ref().clone(),
        ]))
        .unwrap();
        let e = datafusion::prelude::col("id").eq(datafusion::prelude::lit(
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        ));
        let out = rewrite(e, &schema).unwrap();
        assert!(out.transformed);
        assert_eq!(
            out.data.to_string(),
            "id = Utf8(\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\")"
        );
        let bad = datafusion::prelude::col("id").eq(datafusion::prelude::lit("xyz"));
        assert!(rewrite(bad, &schema).is_err());
    }
}
