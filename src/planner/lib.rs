//! From statements to results: DDL against the catalog, everything else
//! through DataFusion with quiver's vector planning (operators, casts, the
//! ANN rewrite). [`Engine`] is the protocol-neutral interface the server
//! (and tests) call.

pub mod access;
pub mod activity;
pub mod advisory;
pub mod alter_ddl;
pub mod ann_rule;
pub mod array_udf;
pub mod backends;
pub mod catalog_provider;
pub mod colnames;
pub mod correlated;
pub mod cursor;
pub mod ddl;
pub mod ddl_undo;
pub mod engine;
pub mod index_ddl;
pub mod information_schema;
mod insert_values;
mod int_types;
pub mod json_udf;
pub mod memory;
pub mod origins;
pub mod pg_compat;
pub mod pg_functions;
pub mod pg_proc;
pub mod pg_relations;
pub mod pg_settings;
pub mod pg_users;
pub mod regexp_split;
pub mod returning;
pub mod search_cache;
pub mod session;
pub mod settings_fn;
pub mod uuid_sql;
pub mod vector_agg;
pub mod vector_ops;
pub mod vector_sql;
pub mod vector_udf;

use arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use quiver_common::sqlstate::{self, SqlState, SqlStateError};
use thiserror::Error;

pub use engine::{Engine, Prepared};
use quiver_catalog::CatalogError;
use quiver_sql::ParseError;
use quiver_storage::StorageError;
pub use session::Session;

/// Everything that can go wrong while running a statement.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error(
        "there is no unique or exclusion constraint matching the ON CONFLICT specification: collection \"{0}\" has no primary key"
    )]
    NoConflictTarget(String),
    #[error(
        "there is no unique or exclusion constraint matching the ON CONFLICT specification: the only unique key of \"{collection}\" is its primary key ({key})"
    )]
    ConflictTargetMismatch { collection: String, key: String },
    #[error("constraint \"{constraint}\" for table \"{collection}\" does not exist")]
    UnknownConstraint {
        constraint: String,
        collection: String,
    },
    #[error(
        "ON CONFLICT DO UPDATE command cannot affect row a second time: key {0} is proposed twice; ensure that no rows proposed for insertion within the same command have duplicate constrained values"
    )]
    ConflictTwice(String),
    #[error("column \"{column}\" of collection \"{collection}\" does not exist")]
    UnknownColumn { column: String, collection: String },
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    #[error("parameter \"{0}\" cannot be changed")]
    ReadOnlySetting(String),
    #[error(transparent)]
    Canceled(#[from] quiver_common::interrupt::Canceled),
    /// A value that does not fit its column.
    #[error("{message}")]
    Data { message: String, code: SqlState },
    /// A statement the transaction block's state does not allow (25P02,
    /// 25001, 25006, 25P01).
    #[error("{message}")]
    Transaction { message: String, code: SqlState },
    /// A bug: the statement panicked. The session and the server go on.
    #[error("internal error: the statement failed unexpectedly ({0}); the server goes on")]
    Panicked(String),
}

impl SqlStateError for QueryError {
    fn sqlstate(&self) -> SqlState {
        match self {
            QueryError::Parse(p) => p.sqlstate(),
            QueryError::Catalog(c) => c.sqlstate(),
            QueryError::Storage(s) => s.sqlstate(),
            QueryError::DataFusion(d) => quiver_storage::sqlstate_of::datafusion(d),
            QueryError::Arrow(a) => quiver_storage::sqlstate_of::arrow(a),
            QueryError::Unsupported(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            QueryError::InvalidParameter(_) => sqlstate::INVALID_PARAMETER_VALUE,
            QueryError::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            QueryError::UnknownColumn { .. } => sqlstate::UNDEFINED_COLUMN,
            QueryError::NoConflictTarget(_) | QueryError::ConflictTargetMismatch { .. } => {
                sqlstate::INVALID_COLUMN_REFERENCE
            }
            QueryError::UnknownConstraint { .. } => sqlstate::UNDEFINED_OBJECT,
            QueryError::ConflictTwice(_) => sqlstate::CARDINALITY_VIOLATION,
            QueryError::UnknownSetting(_) => sqlstate::UNDEFINED_OBJECT,
            QueryError::ReadOnlySetting(_) => sqlstate::CANT_CHANGE_RUNTIME_PARAM,
            QueryError::Canceled(c) => c.sqlstate(),
            QueryError::Panicked(_) => sqlstate::INTERNAL_ERROR,
            QueryError::Data { code, .. } | QueryError::Transaction { code, .. } => *code,
        }
    }
}

impl From<quiver_exec::ExecError> for QueryError {
    fn from(e: quiver_exec::ExecError) -> QueryError {
        match e {
            quiver_exec::ExecError::DataFusion(d) => QueryError::DataFusion(d),
            quiver_exec::ExecError::Arrow(a) => QueryError::Arrow(a),
            quiver_exec::ExecError::Storage(s) => QueryError::Storage(s),
            quiver_exec::ExecError::Data { message, code } => QueryError::Data { message, code },
        }
    }
}

/// The result of one statement.
pub enum Output {
    /// Rows, streamed.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A command tag such as `INSERT 0 3` or `CREATE TABLE`.
    Command { tag: String, rows: Option<usize> },
    /// A transaction-control statement's tag; `warning` goes to the client
    /// first (BEGIN inside a block, COMMIT outside one, as PostgreSQL).
    Transaction {
        tag: &'static str,
        warning: Option<(SqlState, String)>,
    },
    /// The client is to send COPY data next.
    CopyIn(Box<quiver_exec::copy::CopyIn>),
    /// The rows of a RETURNING clause, with the statement's own command
    /// tag (`INSERT 0`, `UPDATE`, `DELETE`) and row count.
    Returning {
        schema: SchemaRef,
        batches: Vec<arrow::array::RecordBatch>,
        tag: &'static str,
        rows: usize,
    },
    /// Rows a FETCH takes from a cursor, streamed (tag `FETCH n`);
    /// `binary`: a BINARY cursor's, sent in binary in the simple protocol.
    Fetched {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        binary: bool,
    },
    /// Rows to send as COPY data (`COPY ... TO STDOUT`).
    CopyOut {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        options: quiver_sql::statement::CopyOptions,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows { schema, .. } => write!(f, "Rows({schema:?})"),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::Transaction { tag, .. } => write!(f, "Transaction({tag})"),
            Output::CopyIn(c) => write!(f, "CopyIn({} columns)", c.column_count()),
            Output::CopyOut { schema, .. } => write!(f, "CopyOut({schema:?})"),
            Output::Returning { tag, rows, .. } => write!(f, "Returning({tag} {rows})"),
            Output::Fetched { schema, .. } => write!(f, "Fetched({schema:?})"),
        }
    }
}

#[cfg(test)]
mod sqlstate_tests {
    use super::*;
    use quiver_common::sqlstate;

    /// Every variant, with the code it must give; wrapped errors give theirs.
    #[test]
    fn every_error_variant_has_its_sqlstate() {
        let s = || "s".to_string();
        let cases = [
            (
                QueryError::Parse(ParseError::Unsupported(s())),
                sqlstate::FEATURE_NOT_SUPPORTED,
            ),
            (
                QueryError::Catalog(CatalogError::CollectionNotFound { name: s() }),
                sqlstate::UNDEFINED_TABLE,
            ),
            (
                QueryError::Storage(StorageError::Corrupt(s())),
                sqlstate::DATA_CORRUPTED,
            ),
            (
                QueryError::DataFusion(DataFusionError::Plan(s())),
                sqlstate::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
            ),
            (
                QueryError::Arrow(arrow::error::ArrowError::DivideByZero),
                sqlstate::DIVISION_BY_ZERO,
            ),
            (
                QueryError::Unsupported(s()),
                sqlstate::FEATURE_NOT_SUPPORTED,
            ),
            (
                QueryError::InvalidParameter(s()),
                sqlstate::INVALID_PARAMETER_VALUE,
            ),
            (
                QueryError::UnknownDatabase(s()),
                sqlstate::INVALID_CATALOG_NAME,
            ),
            (
                QueryError::UnknownColumn {
                    column: s(),
                    collection: s(),
                },
                sqlstate::UNDEFINED_COLUMN,
            ),
            (
                QueryError::NoConflictTarget(s()),
                sqlstate::INVALID_COLUMN_REFERENCE,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
        let exec = quiver_exec::ExecError::Storage(StorageError::NotNull {
            collection: s(),
            field: s(),
        });
        assert_eq!(exec.sqlstate(), sqlstate::NOT_NULL_VIOLATION);
        assert_eq!(
            QueryError::from(exec).sqlstate(),
            sqlstate::NOT_NULL_VIOLATION
        );
    }
}
