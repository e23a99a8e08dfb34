//! Execution plans over collections: the table provider with its scan,
//! insert and delete paths, and the `AnnSearchExec` top-k vector search.

pub mod ann_search;
pub mod copy;
pub mod dml;
pub mod stored_vectors;
pub mod table;
pub mod txn;

use datafusion::common::DataFusionError;
use thiserror::Error;

pub use ann_search::AnnSearchExec;
pub use table::CollectionTable;

/// What can go wrong in the execution layer outside a DataFusion stream
/// (COPY's conversion and append).
#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A value that does not fit its column (COPY data, INSERT literals).
    #[error("{message}")]
    Data {
        message: String,
        code: quiver_common::sqlstate::SqlState,
    },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Storage(#[from] quiver_storage::StorageError),
}

impl quiver_common::sqlstate::SqlStateError for ExecError {
    fn sqlstate(&self) -> quiver_common::sqlstate::SqlState {
        match self {
            ExecError::DataFusion(d) => quiver_storage::sqlstate_of::datafusion(d),
            ExecError::Arrow(a) => quiver_storage::sqlstate_of::arrow(a),
            ExecError::Storage(s) => s.sqlstate(),
            ExecError::Data { code, .. } => *code,
        }
    }
}
