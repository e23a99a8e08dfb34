//! Vector types and math: the pgvector text form, vectors and bit strings
//! as Arrow columns, distance kernels, and ANN indexes (faiss and quiver's
//! own HNSW search). Arrow only: the SQL functions that expose these live in
//! the planner.

pub mod bits;
pub mod column;
pub mod distance;
pub mod index;
pub mod text;

use quiver_common::sqlstate::{self, SqlState, SqlStateError};
use thiserror::Error;

/// Errors raised while parsing or combining vectors.
#[derive(Debug, Error)]
pub enum VectorError {
    #[error("expected {expected} dimensions, not {actual}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("different vector dimensions {left} and {right}")]
    DifferentDimensions { left: usize, right: usize },
    #[error("invalid input syntax for type vector: \"{text}\" ({reason})")]
    InvalidText { text: String, reason: String },
    #[error("vector must have at least 1 dimension")]
    Empty,
    #[error("NaN and infinity are not allowed in vector values")]
    NotFinite,
    #[error("cannot use {type_name} as a vector")]
    NotAVector { type_name: String },
    #[error("\"{digit}\" is not a valid binary digit")]
    InvalidBit { digit: char },
    #[error("bit string length {actual} does not match type bit({expected})")]
    BitLengthMismatch { expected: usize, actual: usize },
    #[error("different bit lengths {left} and {right}")]
    DifferentBitLengths { left: usize, right: usize },
    #[error("cannot use {type_name} as a bit string")]
    NotABitString { type_name: String },
    #[error("operator {operator} compares {expected}, not {actual}")]
    WrongOperandType {
        operator: &'static str,
        expected: &'static str,
        actual: &'static str,
    },
    /// A result element past `real`'s range (`'[1e38]'::vector * '[10]'`).
    #[error("value out of range: overflow")]
    Overflow,
    #[error("vector cannot have more than {max} dimensions")]
    TooManyDimensions { max: usize },
    /// An Arrow kernel (a cast, an array's construction) failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl SqlStateError for VectorError {
    fn sqlstate(&self) -> SqlState {
        match self {
            VectorError::InvalidText { .. } | VectorError::InvalidBit { .. } => {
                sqlstate::INVALID_TEXT_REPRESENTATION
            }
            VectorError::NotAVector { .. }
            | VectorError::NotABitString { .. }
            | VectorError::WrongOperandType { .. } => sqlstate::DATATYPE_MISMATCH,
            VectorError::BitLengthMismatch { .. } => sqlstate::STRING_DATA_LENGTH_MISMATCH,
            VectorError::DimensionMismatch { .. }
            | VectorError::DifferentDimensions { .. }
            | VectorError::Empty
            | VectorError::NotFinite
            | VectorError::DifferentBitLengths { .. } => sqlstate::DATA_EXCEPTION,
            VectorError::Overflow => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            VectorError::TooManyDimensions { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            VectorError::Arrow(a) => arrow_sqlstate(a),
        }
    }
}

/// The SQLSTATE of an Arrow error that carries no other error inside
/// (`ExternalError` is resolved where the errors it may carry are known:
/// `quiver_storage::sqlstate`).
pub fn arrow_sqlstate(e: &arrow::error::ArrowError) -> SqlState {
    use arrow::error::ArrowError;
    match e {
        // A number that does not fit the narrower type ("Can't cast value
        // 40000 to type Int16"): PostgreSQL's "smallint out of range".
        ArrowError::CastError(m) if m.starts_with("Can't cast value") => {
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        }
        ArrowError::CastError(_) | ArrowError::ParseError(_) => {
            sqlstate::INVALID_TEXT_REPRESENTATION
        }
        ArrowError::DivideByZero => sqlstate::DIVISION_BY_ZERO,
        ArrowError::ArithmeticOverflow(_) => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        ArrowError::InvalidArgumentError(_) | ArrowError::ComputeError(_) => {
            sqlstate::DATA_EXCEPTION
        }
        _ => sqlstate::INTERNAL_ERROR,
    }
}

/// The distance metrics quiver understands, named after their pgvector operators.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Metric {
    /// `<->`: Euclidean distance.
    L2,
    /// `<#>`: negative inner product (smaller is closer, as in pgvector).
    NegativeInnerProduct,
    /// `<=>`: cosine distance, `1 - cos(a, b)`.
    Cosine,
    /// `<+>`: taxicab distance.
    L1,
    /// `<~>`: Hamming distance between bit strings.
    Hamming,
    /// `<%>`: Jaccard distance between bit strings.
    Jaccard,
}

impl Metric {
    /// The SQL operator for this metric.
    pub fn operator(self) -> &'static str {
        match self {
            Metric::L2 => "<->",
            Metric::NegativeInnerProduct => "<#>",
            Metric::Cosine => "<=>",
            Metric::L1 => "<+>",
            Metric::Hamming => "<~>",
            Metric::Jaccard => "<%>",
        }
    }

    /// The name of the SQL function that computes this metric's distance.
    pub fn function_name(self) -> &'static str {
        match self {
            Metric::L2 => "l2_distance",
            Metric::NegativeInnerProduct => "vector_negative_inner_product",
            Metric::Cosine => "cosine_distance",
            Metric::L1 => "l1_distance",
            Metric::Hamming => "hamming_distance",
            Metric::Jaccard => "jaccard_distance",
        }
    }

    /// Parse a metric name as used by `SEARCH ... METRIC m` (Milvus names too).
    pub fn from_name(name: &str) -> Option<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Some(Metric::L2),
            "ip" | "inner_product" | "dot" => Some(Metric::NegativeInnerProduct),
            "cosine" => Some(Metric::Cosine),
            "l1" | "taxicab" | "manhattan" => Some(Metric::L1),
            "hamming" => Some(Metric::Hamming),
            "jaccard" => Some(Metric::Jaccard),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::NegativeInnerProduct => "ip",
            Metric::Cosine => "cosine",
            Metric::L1 => "l1",
            Metric::Hamming => "hamming",
            Metric::Jaccard => "jaccard",
        }
    }

    /// Whether this metric compares bit strings (`BIT(n)`), not vectors.
    pub fn is_binary(self) -> bool {
        matches!(self, Metric::Hamming | Metric::Jaccard)
    }
}

/// The query of a search: a vector, or a bit string for the binary metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Float(Vec<f32>),
    /// Packed bits; the length in bits when known.
    Bits {
        bits: Option<usize>,
        bytes: Vec<u8>,
    },
}

impl Query {
    /// The query as words, for hashing and equality of plans.
    pub fn key(&self) -> Vec<u32> {
        match self {
            Query::Float(v) => v.iter().map(|x| x.to_bits()).collect(),
            Query::Bits { bits, bytes } => std::iter::once(u32::MAX)
                .chain(std::iter::once(bits.map_or(u32::MAX - 1, |b| b as u32)))
                .chain(bytes.iter().map(|b| *b as u32))
                .collect(),
        }
    }
}

#[cfg(test)]
mod sqlstate_tests {
    use super::*;
    use crate::index::IndexError;
    use quiver_common::sqlstate;

    /// Every variant, with the code it must give.
    #[test]
    fn every_error_variant_has_its_sqlstate() {
        let vector = [
            (
                VectorError::DimensionMismatch {
                    expected: 3,
                    actual: 2,
                },
                sqlstate::DATA_EXCEPTION,
            ),
            (
                VectorError::DifferentDimensions { left: 1, right: 2 },
                sqlstate::DATA_EXCEPTION,
            ),
            (
                VectorError::InvalidText {
                    text: "x".into(),
                    reason: "y".into(),
                },
                sqlstate::INVALID_TEXT_REPRESENTATION,
            ),
            (VectorError::Empty, sqlstate::DATA_EXCEPTION),
            (VectorError::NotFinite, sqlstate::DATA_EXCEPTION),
            (
                VectorError::NotAVector {
                    type_name: "t".into(),
                },
                sqlstate::DATATYPE_MISMATCH,
            ),
            (
                VectorError::InvalidBit { digit: '2' },
                sqlstate::INVALID_TEXT_REPRESENTATION,
            ),
            (
                VectorError::BitLengthMismatch {
                    expected: 3,
                    actual: 2,
                },
                sqlstate::STRING_DATA_LENGTH_MISMATCH,
            ),
            (
                VectorError::DifferentBitLengths { left: 1, right: 2 },
                sqlstate::DATA_EXCEPTION,
            ),
            (
                VectorError::NotABitString {
                    type_name: "t".into(),
                },
                sqlstate::DATATYPE_MISMATCH,
            ),
            (
                VectorError::WrongOperandType {
                    operator: "<->",
                    expected: "vector",
                    actual: "bit",
                },
                sqlstate::DATATYPE_MISMATCH,
            ),
            (
                VectorError::Arrow(arrow::error::ArrowError::CastError("c".into())),
                sqlstate::INVALID_TEXT_REPRESENTATION,
            ),
            (
                VectorError::Arrow(arrow::error::ArrowError::DivideByZero),
                sqlstate::DIVISION_BY_ZERO,
            ),
            (
                VectorError::Arrow(arrow::error::ArrowError::ArithmeticOverflow("o".into())),
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            ),
            (
                VectorError::Arrow(arrow::error::ArrowError::ComputeError("c".into())),
                sqlstate::DATA_EXCEPTION,
            ),
            (
                VectorError::Arrow(arrow::error::ArrowError::MemoryError("m".into())),
                sqlstate::INTERNAL_ERROR,
            ),
        ];
        for (e, code) in vector {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
        let index = [
            (
                IndexError::InvalidParameter("p".into()),
                sqlstate::INVALID_PARAMETER_VALUE,
            ),
            (
                IndexError::UnknownMethod("m".into()),
                sqlstate::SYNTAX_ERROR,
            ),
            (IndexError::Unknown("u".into()), sqlstate::UNDEFINED_OBJECT),
            (
                IndexError::WrongType("w".into()),
                sqlstate::DATATYPE_MISMATCH,
            ),
            (IndexError::Faiss("f".into()), sqlstate::INTERNAL_ERROR),
            (
                IndexError::Io(std::io::Error::other("io")),
                sqlstate::INTERNAL_ERROR,
            ),
        ];
        for (e, code) in index {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
    }
}
