//! The one place where errors become PostgreSQL errors (SQLSTATE + message).

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use pgwire::error::{ErrorInfo, PgWireError};

use crate::auth::acl::AccessError;
use crate::catalog::CatalogError;
use crate::planner::QueryError;
use crate::sql::ParseError;
use crate::storage::StorageError;
use crate::vector::VectorError;
use crate::vector::index::IndexError;

fn info(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), code.to_string(), tidy(message.into()))
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

/// The PostgreSQL error for `e`.
pub fn error_info(e: &QueryError) -> ErrorInfo {
    match e {
        QueryError::Parse(ParseError::Syntax { message, position }) => {
            let mut i = info("42601", message.clone());
            i.position = position.map(|p| p.to_string());
            i
        }
        QueryError::Parse(ParseError::Unsupported(m)) => info("0A000", m.clone()),
        QueryError::Catalog(c) => catalog_info(c),
        QueryError::Storage(s) => storage_info(s),
        QueryError::DataFusion(d) => datafusion_info(d),
        QueryError::Arrow(a) => arrow_info(a),
        QueryError::Unsupported(m) => info("0A000", m.clone()),
        QueryError::InvalidParameter(m) => info("22023", m.clone()),
        QueryError::UnknownDatabase(_) => info("3D000", e.to_string()),
        QueryError::UnknownColumn { .. } => info("42703", e.to_string()),
        QueryError::NoConflictTarget(_) => info("42P10", e.to_string()),
    }
}

fn catalog_info(e: &CatalogError) -> ErrorInfo {
    let code = match e {
        CatalogError::CollectionNotFound { .. } => "42P01",
        CatalogError::CollectionExists { .. } => "42P07",
        CatalogError::DatabaseNotFound { .. } => "3D000",
        CatalogError::DatabaseExists { .. } => "42P04",
        CatalogError::DatabaseNotEmpty { .. }
        | CatalogError::DropCurrentDatabase { .. }
        | CatalogError::DropDefaultDatabase => "55006",
        CatalogError::InvalidDefinition(_) => "42P16",
        CatalogError::UnsupportedType { hint, .. } if hint.is_empty() => "42704",
        CatalogError::UnsupportedType { .. } => "0A000",
        CatalogError::Store(_) => "58030",
        CatalogError::IndexNotFound { .. } => "42704",
        CatalogError::IndexExists { .. } => "42P07",
        CatalogError::Access(a) => match a {
            AccessError::Denied(_) | AccessError::Protected(_) => "42501",
            AccessError::RoleNotFound(_) => "42704",
            AccessError::RoleExists(_) => "42710",
            AccessError::InvalidGrant(_) | AccessError::InvalidPrivilege(_) => "0LP01",
        },
    };
    info(code, e.to_string())
}

fn storage_info(e: &StorageError) -> ErrorInfo {
    if let StorageError::Expression(d) = e {
        return datafusion_info(d);
    }
    let code = match e {
        StorageError::DuplicateKey { .. } => "23505",
        StorageError::NotNull { .. } => "23502",
        StorageError::BitLength { .. } => "22026",
        _ if e.is_disk_full() => "53100",
        StorageError::Io { .. } | StorageError::ObjectStore(_) | StorageError::WalFailed(_) => {
            "58030"
        }
        StorageError::Corrupt(_) => "XX001",
        StorageError::Config(_) | StorageError::Locked(_) => "55000",
        StorageError::Dropped(_) => "42P01",
        StorageError::Index(i) => match i {
            IndexError::InvalidParameter(_) => "22023",
            IndexError::UnknownMethod(_) => "42601",
            IndexError::Unknown(_) => "42704",
            IndexError::WrongType(_) => "42804",
            IndexError::Faiss(_) | IndexError::Io(_) => "XX000",
        },
        StorageError::Expression(_) => "XX000",
        StorageError::InvalidBatch(_) | StorageError::Arrow(_) | StorageError::Parquet(_) => {
            "XX000"
        }
    };
    info(code, e.to_string())
}

fn vector_info(e: &VectorError) -> ErrorInfo {
    let code = match e {
        VectorError::InvalidText { .. } | VectorError::InvalidBit { .. } => "22P02",
        VectorError::NotAVector { .. }
        | VectorError::NotABitString { .. }
        | VectorError::WrongOperandType { .. } => "42804",
        VectorError::BitLengthMismatch { .. } => "22026",
        _ => "22000",
    };
    info(code, e.to_string())
}

fn arrow_info(e: &ArrowError) -> ErrorInfo {
    match e {
        ArrowError::ExternalError(inner) => external_info(inner.as_ref()),
        ArrowError::CastError(m) | ArrowError::ParseError(m) => info("22P02", m.clone()),
        ArrowError::DivideByZero => info("22012", "division by zero"),
        ArrowError::ArithmeticOverflow(m) => info("22003", m.clone()),
        ArrowError::InvalidArgumentError(m) | ArrowError::ComputeError(m) => {
            info("22000", m.clone())
        }
        other => info("XX000", other.to_string()),
    }
}

fn external_info(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorInfo {
    if let Some(v) = e.downcast_ref::<VectorError>() {
        vector_info(v)
    } else if let Some(s) = e.downcast_ref::<StorageError>() {
        storage_info(s)
    } else if let Some(c) = e.downcast_ref::<CatalogError>() {
        catalog_info(c)
    } else if let Some(d) = e.downcast_ref::<DataFusionError>() {
        datafusion_info(d)
    } else if let Some(a) = e.downcast_ref::<ArrowError>() {
        arrow_info(a)
    } else {
        info("XX000", e.to_string())
    }
}

fn datafusion_info(e: &DataFusionError) -> ErrorInfo {
    match e {
        DataFusionError::External(inner) => external_info(inner.as_ref()),
        DataFusionError::Context(_, inner) => datafusion_info(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_info(inner),
        DataFusionError::Shared(inner) => datafusion_info(inner),
        DataFusionError::ArrowError(a, _) => arrow_info(a),
        DataFusionError::SchemaError(s, _) => {
            let code = match s.as_ref() {
                SchemaError::FieldNotFound { .. } => "42703",
                SchemaError::AmbiguousReference { .. } => "42702",
                _ => "42701",
            };
            info(code, s.to_string())
        }
        DataFusionError::SQL(p, _) => info("42601", format!("syntax error: {p}")),
        DataFusionError::NotImplemented(m) => info("0A000", m.clone()),
        DataFusionError::Plan(m) => {
            // DataFusion reports unknown tables and functions as plan errors.
            let code = if m.contains("not found") && m.starts_with("table") {
                "42P01"
            } else if m.starts_with("Invalid function") {
                "42883"
            } else if m.contains("Cannot infer common") || m.contains("No function matches") {
                "42804"
            } else {
                "42000"
            };
            info(code, m.clone())
        }
        DataFusionError::Execution(m) => {
            let code = if m.contains("non-nullable") || m.contains("not-null") {
                "23502"
            } else {
                "22000"
            };
            info(code, m.clone())
        }
        DataFusionError::ResourcesExhausted(m) => info("53200", m.clone()),
        other => info("XX000", other.to_string()),
    }
}

/// Wrap `e` for pgwire.
pub fn to_pgwire(e: QueryError) -> PgWireError {
    PgWireError::UserError(Box::new(reported(&e)))
}

/// [`error_info`], logged.
pub fn reported(e: &QueryError) -> ErrorInfo {
    let info = error_info(e);
    // Resource, system and internal errors are the server's to report;
    // the rest concern only the client that caused them.
    if ["53", "58", "XX"]
        .iter()
        .any(|class| info.code.starts_with(class))
    {
        tracing::error!(sqlstate = %info.code, "{}", info.message);
    } else {
        tracing::debug!(sqlstate = %info.code, "{}", info.message);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_wrapped_errors() {
        let e = QueryError::DataFusion(DataFusionError::External(Box::new(
            VectorError::DimensionMismatch {
                expected: 3,
                actual: 2,
            },
        )));
        let i = error_info(&e);
        assert_eq!(i.code, "22000");
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
        assert_eq!(error_info(&e).code, "23505");
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
