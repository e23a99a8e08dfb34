//! The SQLSTATE of DataFusion's and Arrow's errors. They carry quiver's own
//! errors inside (`External`: a vector function's, a sink's); this is the
//! lowest layer that knows DataFusion and every quiver error that can travel
//! that way (vector, index, catalog, access, storage), so the downcasts live
//! here and each found error answers with its own code.

use std::error::Error;

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use quiver_catalog::CatalogError;
use quiver_common::sqlstate::{self, SqlState, SqlStateError};
use quiver_vector::VectorError;
use quiver_vector::index::IndexError;

use crate::StorageError;

/// The code of a DataFusion error: its own kind's, or the wrapped error's.
pub fn datafusion(e: &DataFusionError) -> SqlState {
    match e {
        DataFusionError::External(inner) => external(inner.as_ref()),
        DataFusionError::Context(_, inner) => datafusion(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion(inner),
        DataFusionError::Shared(inner) => datafusion(inner),
        DataFusionError::ArrowError(a, _) => arrow(a),
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => sqlstate::UNDEFINED_COLUMN,
            SchemaError::AmbiguousReference { .. } => sqlstate::AMBIGUOUS_COLUMN,
            _ => sqlstate::DUPLICATE_COLUMN,
        },
        DataFusionError::SQL(..) => sqlstate::SYNTAX_ERROR,
        DataFusionError::NotImplemented(_) => sqlstate::FEATURE_NOT_SUPPORTED,
        DataFusionError::Plan(m) => plan(m),
        DataFusionError::Execution(m) => execution(m),
        DataFusionError::ResourcesExhausted(_) => sqlstate::OUT_OF_MEMORY,
        // A scalar subquery where DataFusion's physical planner cannot
        // run one (in VALUES): not quiver's bug, a missing feature.
        DataFusionError::Internal(m) if m.contains("ScalarSubquery") => {
            sqlstate::FEATURE_NOT_SUPPORTED
        }
        // `sum(vector)`: no signature of the function takes the argument
        // types, which DataFusion reports as its own fault; PostgreSQL says
        // the function does not exist.
        DataFusionError::Internal(m) if m.contains("No function matches") => {
            sqlstate::UNDEFINED_FUNCTION
        }
        _ => sqlstate::INTERNAL_ERROR,
    }
}

/// The code of an Arrow error: its own kind's, or the wrapped error's.
pub fn arrow(e: &ArrowError) -> SqlState {
    match e {
        ArrowError::ExternalError(inner) => external(inner.as_ref()),
        other => quiver_vector::arrow_sqlstate(other),
    }
}

/// The code of an error that travelled boxed inside DataFusion or Arrow.
pub fn external(e: &(dyn Error + Send + Sync + 'static)) -> SqlState {
    if let Some(c) = e.downcast_ref::<quiver_common::interrupt::Canceled>() {
        c.sqlstate()
    } else if let Some(v) = e.downcast_ref::<VectorError>() {
        v.sqlstate()
    } else if let Some(s) = e.downcast_ref::<StorageError>() {
        s.sqlstate()
    } else if let Some(c) = e.downcast_ref::<CatalogError>() {
        c.sqlstate()
    } else if let Some(i) = e.downcast_ref::<IndexError>() {
        i.sqlstate()
    } else if let Some(d) = e.downcast_ref::<DataFusionError>() {
        datafusion(d)
    } else if let Some(a) = e.downcast_ref::<ArrowError>() {
        arrow(a)
    } else {
        sqlstate::INTERNAL_ERROR
    }
}

/// DataFusion reports unknown tables and functions, and mismatched
/// argument types, as plan errors whose kind only their text tells. (An
/// unknown table cannot be answered by the planner's schema instead:
/// DataFusion asks it for every name in FROM, table functions such as
/// `generate_series` among them, and takes "none" to mean "try a function".)
fn plan(message: &str) -> SqlState {
    if message.contains("not found") && message.starts_with("table") {
        sqlstate::UNDEFINED_TABLE
    } else if message.starts_with("Invalid function") {
        sqlstate::UNDEFINED_FUNCTION
    } else if message.contains("No function matches") {
        // No signature of the function takes these argument types:
        // PostgreSQL says `function f(types) does not exist`.
        sqlstate::UNDEFINED_FUNCTION
    } else if message.contains("Cannot infer common") {
        sqlstate::DATATYPE_MISMATCH
    } else if message.starts_with("Correlated scalar subquery") {
        // PostgreSQL answers it (or 21000 for more than one row); DataFusion
        // plans it only with an aggregate.
        sqlstate::FEATURE_NOT_SUPPORTED
    } else if message.starts_with("LIMIT must be >= 0") {
        sqlstate::INVALID_ROW_COUNT_IN_LIMIT_CLAUSE
    } else if message.starts_with("OFFSET must be >=") {
        sqlstate::INVALID_ROW_COUNT_IN_RESULT_OFFSET_CLAUSE
    } else if message.starts_with("Inconsistent data length across values list") {
        // PostgreSQL: "VALUES lists must all be the same length".
        sqlstate::SYNTAX_ERROR
    } else {
        sqlstate::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION
    }
}

/// DataFusion reports a NULL written into a non-nullable column as an
/// execution error whose kind only its text tells.
fn execution(message: &str) -> SqlState {
    if message.contains("non-nullable") || message.contains("not-null") {
        sqlstate::NOT_NULL_VIOLATION
    } else if message.contains("subquery returned more than one row")
        || message.contains("more than one row returned by a subquery")
    {
        sqlstate::CARDINALITY_VIOLATION
    } else if message.starts_with("argument list must have even number of elements")
        || (message.starts_with("argument ") && message.contains(" cannot be null"))
    {
        // json_build_object's arguments, as PostgreSQL words them.
        sqlstate::INVALID_PARAMETER_VALUE
    } else if message.starts_with("null values cannot be formatted") {
        sqlstate::NULL_VALUE_NOT_ALLOWED
    } else if message.starts_with("invalid regular expression option")
        || message.contains("does not support the \"global\" option")
    {
        // regexp_split_to_array's flags, as PostgreSQL words them.
        sqlstate::INVALID_PARAMETER_VALUE
    } else if message.starts_with("invalid regular expression") {
        sqlstate::INVALID_REGULAR_EXPRESSION
    } else if message.contains("format()") {
        // format()'s own errors, as PostgreSQL words them.
        sqlstate::INVALID_PARAMETER_VALUE
    } else if message.starts_with("Placeholder '") && message.contains("was not provided a value") {
        // `SELECT $1` in a simple query, which has no parameters.
        sqlstate::UNDEFINED_PARAMETER
    } else {
        sqlstate::DATA_EXCEPTION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_errors_by_their_words() {
        assert_eq!(
            execution("Placeholder '$1' was not provided a value for execution."),
            sqlstate::UNDEFINED_PARAMETER
        );
        assert_eq!(
            execution("Invalid batch column at '2' has null but schema specifies non-nullable"),
            sqlstate::NOT_NULL_VIOLATION
        );
        assert_eq!(execution("anything else"), sqlstate::DATA_EXCEPTION);
        assert_eq!(
            execution("invalid regular expression: parentheses () not balanced"),
            sqlstate::INVALID_REGULAR_EXPRESSION
        );
        assert_eq!(
            execution("invalid regular expression option: \"z\""),
            sqlstate::INVALID_PARAMETER_VALUE
        );
    }

    #[test]
    fn no_matching_signature_is_an_undefined_function() {
        let e = DataFusionError::Internal(
            "Function 'sum' failed to match any signature ... No function matches the given name and argument types 'sum(FixedSizeList(2 x Float32))'.".into(),
        );
        assert_eq!(datafusion(&e), sqlstate::UNDEFINED_FUNCTION);
    }
}
