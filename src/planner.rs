//! From statements to results: DDL against the catalog, everything else
//! through DataFusion with quiver's vector planning (operators, casts, the
//! ANN rewrite). [`Engine`] is the protocol-neutral interface the server
//! (and tests) call.

pub mod access;
pub mod ann_rule;
pub mod catalog_provider;
pub mod colnames;
pub mod ddl;
pub mod engine;
pub mod index_ddl;
pub mod pg_compat;
pub mod pg_users;
pub mod search_cache;
pub mod session;
pub mod vector_sql;

use arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use thiserror::Error;

use crate::catalog::CatalogError;
use crate::sql::ParseError;
use crate::sql::statement::TransactionKind;
use crate::storage::StorageError;
pub use engine::{Engine, Prepared};
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
    #[error("column \"{column}\" of collection \"{collection}\" does not exist")]
    UnknownColumn { column: String, collection: String },
}

/// The result of one statement.
pub enum Output {
    /// Rows, streamed.
    Rows {
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A command tag such as `INSERT 0 3` or `CREATE TABLE`.
    Command {
        tag: String,
        rows: Option<usize>,
    },
    Transaction(TransactionKind),
    /// The client is to send COPY data next.
    CopyIn(Box<crate::exec::copy::CopyIn>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows { schema, .. } => write!(f, "Rows({schema:?})"),
            Output::Command { tag, rows } => write!(f, "Command({tag}, {rows:?})"),
            Output::Transaction(k) => write!(f, "Transaction({k:?})"),
            Output::CopyIn(c) => write!(f, "CopyIn({} columns)", c.column_count()),
        }
    }
}
