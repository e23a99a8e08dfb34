//! `'2024-01-01 10:00'::timestamp` and `TIMESTAMP '2024-01-01 10:00'`:
//! PostgreSQL reads a time without seconds, Arrow's parser does not; the
//! literal gets `:00` (see `quiver_common::timestamp_text`). A string
//! compared with a timestamp column is cast by DataFusion, which this does
//! not reach.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, DataType, Expr, Value};
use quiver_common::timestamp_text::with_seconds;

/// Rewrite the timestamp literals of `stmt` that lack seconds.
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |e| {
        match e {
            Expr::Cast {
                expr, data_type, ..
            } if is_timestamp(data_type) => {
                if let Expr::Value(v) = expr.as_mut() {
                    fix(&mut v.value);
                }
            }
            Expr::TypedString(t) if is_timestamp(&t.data_type) => fix(&mut t.value.value),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

fn is_timestamp(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(..) | DataType::TimestampNtz(..))
}

fn fix(v: &mut Value) {
    if let Value::SingleQuotedString(s) = v
        && let Some(fixed) = with_seconds(s)
    {
        *s = fixed;
    }
}
