//! The SQL front end: PostgreSQL syntax (via sqlparser), pgvector's operators,
//! and quiver's Milvus-style extensions, parsed into one [`Statement`] enum.

pub mod access;
pub mod alias;
mod array_subquery;
pub use array_subquery::REGTYPE_NAMES;
pub mod bounded;
pub mod depth;
pub mod index_ddl;
pub mod parser;
pub mod statement;
mod timestamp_literals;

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
    /// Expressions nested deeper than [`depth::MAX_EXPRESSION_DEPTH`].
    #[error(
        "statement too complex: its expressions nest more than {} levels deep (a chain of operators counts one level per operator); split it up",
        depth::MAX_EXPRESSION_DEPTH
    )]
    TooComplex { position: Option<usize> },
    /// A statement the parser gave up on after its budget of steps (see
    /// [`bounded`]): nesting that does not parse as written.
    #[error(
        "statement too complex: the parser gave up on its nesting after {} steps per token; check its parentheses, brackets and casts, or split it up",
        bounded::STEPS_PER_TOKEN
    )]
    TooHardToParse { position: Option<usize> },
}

impl quiver_common::sqlstate::SqlStateError for ParseError {
    fn sqlstate(&self) -> quiver_common::sqlstate::SqlState {
        use quiver_common::sqlstate;
        match self {
            ParseError::Syntax { .. } => sqlstate::SYNTAX_ERROR,
            ParseError::Unsupported(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            ParseError::TooComplex { .. } | ParseError::TooHardToParse { .. } => {
                sqlstate::STATEMENT_TOO_COMPLEX
            }
        }
    }
}

#[cfg(test)]
mod sqlstate_tests {
    use super::*;
    use quiver_common::sqlstate;
    use quiver_common::sqlstate::SqlStateError;

    #[test]
    fn every_error_variant_has_its_sqlstate() {
        let cases = [
            (
                ParseError::Syntax {
                    message: "m".into(),
                    position: Some(1),
                },
                sqlstate::SYNTAX_ERROR,
            ),
            (
                ParseError::Unsupported("u".into()),
                sqlstate::FEATURE_NOT_SUPPORTED,
            ),
            (
                ParseError::TooComplex { position: None },
                sqlstate::STATEMENT_TOO_COMPLEX,
            ),
            (
                ParseError::TooHardToParse { position: None },
                sqlstate::STATEMENT_TOO_COMPLEX,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
    }
}
