//! Vector types and math: the pgvector text form, distance kernels, and the
//! SQL functions (`l2_distance`, `<->`, ...) that expose them.

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
}

impl Metric {
    /// The SQL operator for this metric.
    pub fn operator(self) -> &'static str {
        match self {
            Metric::L2 => "<->",
            Metric::NegativeInnerProduct => "<#>",
            Metric::Cosine => "<=>",
            Metric::L1 => "<+>",
        }
    }

    /// The name of the SQL function that computes this metric's distance.
    pub fn function_name(self) -> &'static str {
        match self {
            Metric::L2 => "l2_distance",
            Metric::NegativeInnerProduct => "vector_negative_inner_product",
            Metric::Cosine => "cosine_distance",
            Metric::L1 => "l1_distance",
        }
    }

    /// Parse a metric name as used by `SEARCH ... METRIC m` (Milvus names too).
    pub fn from_name(name: &str) -> Option<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" => Some(Metric::L2),
            "ip" | "inner_product" | "dot" => Some(Metric::NegativeInnerProduct),
            "cosine" => Some(Metric::Cosine),
            "l1" | "taxicab" | "manhattan" => Some(Metric::L1),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::NegativeInnerProduct => "ip",
            Metric::Cosine => "cosine",
            Metric::L1 => "l1",
        }
    }
}
