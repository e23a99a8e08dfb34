//! Vector types and math: the pgvector text form, distance kernels, and the
//! SQL functions (`l2_distance`, `<->`, ...) that expose them.

pub mod bits;
pub mod distance;
pub mod index;
pub mod text;
pub mod udf;

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
