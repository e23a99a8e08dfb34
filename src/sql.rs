//! The SQL front end: PostgreSQL syntax (via sqlparser), pgvector's operators,
//! and quiver's Milvus-style extensions, parsed into one [`Statement`] enum.

pub mod access;
pub mod index_ddl;
pub mod parser;
pub mod statement;

use thiserror::Error;

pub use parser::parse;
pub use statement::{SearchOptions, Statement};

/// A statement that could not be parsed.
#[derive(Debug, Error)]
pub enum ParseError {
    /// Malformed SQL; `position` is the 1-based character offset in the query text.
    #[error("{message}")]
    Syntax {
        message: String,
        position: Option<usize>,
    },
    /// Valid SQL that quiver does not support yet.
    #[error("{0}")]
    Unsupported(String),
}
