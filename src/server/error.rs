//! The one place where errors become PostgreSQL errors (SQLSTATE + message).

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};

use quiver_common::sqlstate::{SqlState, SqlStateError};
use quiver_planner::QueryError;
use quiver_sql::ParseError;
use quiver_storage::StorageError;

fn info(code: SqlState, message: String) -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".to_string(),
        code.code().to_string(),
        bounded(tidy(message)),
    )
}

/// Longest message sent whole: an error may quote the client's input (a
/// malformed 10-million-element vector once came back as a 40 MB message).
const MAX_MESSAGE_CHARS: usize = 1000;

fn bounded(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    cut.push_str(&format!(" ... ({} bytes in all)", message.len()));
    cut
}

/// DataFusion appends a request to report a bug to its internal errors,
/// including ones that a query's types cause (`length(bit)`); the client
/// sees what went wrong without it.
fn tidy(message: String) -> String {
    const BOILERPLATE: &str = "This issue was likely caused by a bug in DataFusion's code.";
    match message.find(BOILERPLATE) {
        Some(at) => {
            let rest = &message[at + BOILERPLATE.len()..];
            // The request runs to the end of its sentence (a URL, then a
            // period or a line break).
            let end = rest
                .find("/issues")
                .map(|i| i + "/issues".len())
                .unwrap_or(rest.len());
            let mut out = message[..at].trim_end().to_string();
            let tail = rest[end..].trim_start_matches('.').trim();
            if !tail.is_empty() {
                out.push(' ');
                out.push_str(tail);
            }
            out
        }
        None => message,
    }
}

/// The PostgreSQL error for `e`: the code the error gives for itself
/// (`SqlStateError`), the message without the wrappers DataFusion and Arrow
/// put around quiver's own errors.
pub fn error_info(e: &QueryError) -> ErrorInfo {
    let mut i = info(e.sqlstate(), message(e));
    if let QueryError::Parse(
        ParseError::Syntax { position, .. }
        | ParseError::TooComplex { position }
        | ParseError::TooHardToParse { position },
    ) = e
    {
        i.position = position.map(|p| p.to_string());
    }
    i
}

fn message(e: &QueryError) -> String {
    match e {
        QueryError::Storage(s) => storage_message(s),
        QueryError::DataFusion(d) => datafusion_message(d),
        QueryError::Arrow(a) => arrow_message(a),
        other => other.to_string(),
    }
}

fn storage_message(e: &StorageError) -> String {
    match e {
        StorageError::Expression(d) => datafusion_message(d),
        other => other.to_string(),
    }
}

fn arrow_message(e: &ArrowError) -> String {
    match e {
        ArrowError::ExternalError(inner) => external_message(inner.as_ref()),
        ArrowError::CastError(m) => out_of_range(m).unwrap_or_else(|| m.clone()),
        ArrowError::ParseError(m)
        | ArrowError::ArithmeticOverflow(m)
        | ArrowError::InvalidArgumentError(m)
        | ArrowError::ComputeError(m) => m.clone(),
        ArrowError::DivideByZero => "division by zero".to_string(),
        other => other.to_string(),
    }
}

/// Arrow's "Can't cast value 40000 to type Int16" in PostgreSQL's words,
/// "smallint out of range", with the value.
fn out_of_range(m: &str) -> Option<String> {
    let rest = m.strip_prefix("Can't cast value ")?;
    let (value, to) = rest.split_once(" to type ")?;
    let name = match to {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        _ => return None,
    };
    Some(format!("{name} out of range: {value}"))
}

fn external_message(e: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    if let Some(s) = e.downcast_ref::<StorageError>() {
        storage_message(s)
    } else if let Some(d) = e.downcast_ref::<DataFusionError>() {
        datafusion_message(d)
    } else if let Some(a) = e.downcast_ref::<ArrowError>() {
        arrow_message(a)
    } else {
        e.to_string()
    }
}

fn datafusion_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::External(inner) => external_message(inner.as_ref()),
        DataFusionError::Context(_, inner) => datafusion_message(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_message(inner),
        DataFusionError::Shared(inner) => datafusion_message(inner),
        DataFusionError::ArrowError(a, _) => arrow_message(a),
        DataFusionError::SchemaError(s, _) => s.to_string(),
        DataFusionError::SQL(p, _) => format!("syntax error: {p}"),
        DataFusionError::NotImplemented(m) if m.contains("ScalarSubquery") => {
            SCALAR_SUBQUERY_HERE.to_string()
        }
        DataFusionError::Plan(m) if m.starts_with("Correlated scalar subquery") => {
            SCALAR_SUBQUERY_HERE.to_string()
        }
        DataFusionError::NotImplemented(m)
            if m.starts_with("Physical plan does not support logical expression Exists")
                || m.starts_with("Physical plan does not support logical expression InSubquery") =>
        {
            "EXISTS (...) and IN (subquery) are supported in WHERE, not yet in a select list or another expression: write it in WHERE, as a join, or as a scalar subquery such as (SELECT count(*) > 0 FROM ...)".to_string()
        }
        // PostgreSQL's words for `SELECT $1` in a simple query.
        DataFusionError::Execution(m)
            if m.starts_with("Placeholder '") && m.contains("was not provided a value") =>
        {
            let name = m.split('\'').nth(1).unwrap_or("$1");
            format!("there is no parameter {name}")
        }
        DataFusionError::NotImplemented(m)
        | DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::ResourcesExhausted(m) => m.clone(),
        DataFusionError::Internal(m) if m.contains("ScalarSubquery") => {
            SCALAR_SUBQUERY_HERE.to_string()
        }
        other => other.to_string(),
    }
}

/// What DataFusion's "ScalarSubqueryExpr evaluated before the subquery was
/// executed" (XX000) and "Physical plan does not support logical expression
/// ScalarSubquery" mean for a user.
const SCALAR_SUBQUERY_HERE: &str = "this scalar subquery is not supported yet (quiver runs scalar subqueries in a query's select list, WHERE and HAVING, and in INSERT ... SELECT; not yet in VALUES, in an UPDATE's SET, in an UPDATE or DELETE whose subquery refers to the target, in GROUP BY or ORDER BY, or one that refers to a query two levels out): compute the value first, or write it as a join (UPDATE ... FROM, INSERT ... SELECT)";

/// Wrap `e` for pgwire.
pub fn to_pgwire(e: QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(reported(&e)))
}

/// [`error_info`], logged.
pub fn reported(e: &QueryError) -> ErrorInfo {
    let info = error_info(e);
    // Resource, system and internal errors are the server's to report;
    // the rest concern only the client that caused them.
    if e.sqlstate().is_server_fault() {
        tracing::error!(sqlstate = %info.code, "{}", info.message);
    } else {
        tracing::debug!(sqlstate = %info.code, "{}", info.message);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_common::sqlstate;
    use quiver_vector::VectorError;

    #[test]
    fn maps_wrapped_errors() {
        let e = QueryError::DataFusion(DataFusionError::External(Box::new(
            VectorError::DimensionMismatch {
                expected: 3,
                actual: 2,
            },
        )));
        let i = error_info(&e);
        assert_eq!(i.code, sqlstate::DATA_EXCEPTION.code());
        assert!(i.message.contains("expected 3 dimensions, not 2"));
        let e = QueryError::DataFusion(DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::External(Box::new(
                StorageError::DuplicateKey {
                    collection: "t".into(),
                    field: "id".into(),
                    value: "1".into(),
                },
            ))),
        ));
        assert_eq!(error_info(&e).code, sqlstate::UNIQUE_VIOLATION.code());
    }

    #[test]
    fn narrowing_casts_say_out_of_range() {
        let e = QueryError::DataFusion(DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Can't cast value 2147483648 to type Int32".into(),
            )),
            None,
        ));
        let i = error_info(&e);
        assert_eq!(i.code, sqlstate::NUMERIC_VALUE_OUT_OF_RANGE.code());
        assert_eq!(i.message, "integer out of range: 2147483648");
        assert_eq!(
            out_of_range("Can't cast value 1.5 to type Utf8"),
            None,
            "only integers are PostgreSQL's smallint, integer and bigint"
        );
    }

    #[test]
    fn drops_datafusions_bug_report_request() {
        let m = "Internal error: Unavailable default cast for native type String from physical type FixedSizeBinary(1).\nThis issue was likely caused by a bug in DataFusion's code. Please help us to resolve this by filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues No function matches the given name and argument types 'character_length(FixedSizeBinary(1))'.";
        assert_eq!(
            tidy(m.to_string()),
            "Internal error: Unavailable default cast for native type String from physical type FixedSizeBinary(1). No function matches the given name and argument types 'character_length(FixedSizeBinary(1))'."
        );
        assert_eq!(tidy("plain".to_string()), "plain");
    }
}
