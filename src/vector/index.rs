//! ANN indexes over one segment's vectors, behind [`VectorIndex`], built
//! with faiss. An index answers with row offsets within its segment and
//! with distances in pgvector's terms (`<->` L2, `<#>` negative inner
//! product, `<=>` cosine distance), so results merge with exact search.
//!
//! Methods: `flat`, `ivf_flat (lists)`, `ivf_sq8 (lists)`, `ivf_pq (lists,
//! m, nbits)`, `ivf_rabitq (lists)`, `hnsw (m, ef_construction)`, `hnsw_sq
//! (m, ef_construction, sq_type)`. Cosine indexes store normalised vectors
//! and search by inner product.

use std::collections::BTreeMap;
use std::fmt;

use faiss::index::IndexImpl;
use faiss::{Index, MetricType};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Metric;

pub mod binary;
mod faiss_index;
mod spec;

pub use faiss_index::*;
pub use spec::*;

#[derive(Debug, Error)]
pub enum IndexError {
    /// A parameter the user gave is wrong (22023).
    #[error("{0}")]
    InvalidParameter(String),
    /// An index method that does not exist (42601).
    #[error("{0}")]
    UnknownMethod(String),
    /// An operator class that does not exist (42704).
    #[error("{0}")]
    Unknown(String),
    /// An operator class or method for another column type (42804).
    #[error("{0}")]
    WrongType(String),
    #[error("faiss: {0}")]
    Faiss(String),
    #[error("index file: {0}")]
    Io(#[from] std::io::Error),
}

impl quiver_common::sqlstate::SqlStateError for IndexError {
    fn sqlstate(&self) -> quiver_common::sqlstate::SqlState {
        use quiver_common::sqlstate;
        match self {
            IndexError::InvalidParameter(_) => sqlstate::INVALID_PARAMETER_VALUE,
            IndexError::UnknownMethod(_) => sqlstate::SYNTAX_ERROR,
            IndexError::Unknown(_) => sqlstate::UNDEFINED_OBJECT,
            IndexError::WrongType(_) => sqlstate::DATATYPE_MISMATCH,
            IndexError::Faiss(_) | IndexError::Io(_) => sqlstate::INTERNAL_ERROR,
        }
    }
}

fn faiss_err(e: faiss::error::Error) -> IndexError {
    IndexError::Faiss(e.to_string())
}

/// How hard a search works: HNSW's ef, IVF's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchKnobs {
    pub ef: usize,
    pub nprobe: usize,
    /// Candidates per row asked for that a search over quantised codes
    /// ranks again by exact distance (0: the method's default, see
    /// [`Method::default_refine`]).
    pub refine: usize,
}

impl Default for SearchKnobs {
    fn default() -> Self {
        SearchKnobs {
            ef: 40,
            nprobe: 1,
            refine: 0,
        }
    }
}

unsafe extern "C" {
    /// OpenMP (linked with faiss): threads for this thread's parallel regions.
    fn omp_set_num_threads(n: std::os::raw::c_int);
}

/// Let index builds on the calling thread use `threads` threads. Searches
/// run single-threaded: faiss parallelises over queries, and a query
/// carries one.
pub fn set_build_threads(threads: usize) {
    // SAFETY: sets an OpenMP setting of the calling thread.
    unsafe { omp_set_num_threads(threads.clamp(1, 256) as std::os::raw::c_int) }
}

/// One ANN index over the rows `0..len` of a segment.
pub trait VectorIndex: Send + Sync + fmt::Debug {
    fn spec(&self) -> &IndexSpec;
    /// Rows indexed.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `k` nearest rows among those `allowed` marks (one bit per row,
    /// least significant bit first), as (row, distance), nearest first.
    fn search(
        &self,
        _query: &[f32],
        _k: usize,
        _knobs: SearchKnobs,
        _allowed: Option<&[u8]>,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        Err(IndexError::WrongType(
            "this index searches bit strings, not vectors".into(),
        ))
    }
    /// The `k` nearest rows among those `allowed` marks (one bit per row,
    /// least significant first), found by a graph walk that crosses rows
    /// that fail and counts only passing rows towards its `ef` (HNSW over
    /// float storage). `fraction` is the share of rows `allowed` marks.
    /// [`Filtered::Unsupported`] where the index has no such walk,
    /// [`Filtered::GaveUp`] when it scored more than `budget` rows.
    fn search_filtered(
        &self,
        _query: &[f32],
        _k: usize,
        _knobs: SearchKnobs,
        _allowed: &[u8],
        _fraction: f64,
        _budget: usize,
    ) -> Result<Filtered, IndexError> {
        Ok(Filtered::Unsupported)
    }
    /// Every row within `radius` (a distance of the index's metric) of
    /// `query`, as (row, distance) in no order. As approximate as the
    /// index; it may include rows just beyond the radius, so callers check
    /// the exact distance.
    fn range_search(
        &self,
        _query: &[f32],
        _radius: f32,
        _knobs: SearchKnobs,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        Err(IndexError::WrongType(
            "this index searches bit strings, not vectors".into(),
        ))
    }
    /// The nearest rows to a bit string, for indexes over `BIT(n)`, as
    /// (row, distance). Rows are not filtered: callers filter and fetch
    /// more. For Jaccard the distances are Hamming's, for candidates the
    /// caller re-scores.
    fn search_bits(
        &self,
        _query: &[u8],
        _k: usize,
        _knobs: SearchKnobs,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        Err(IndexError::WrongType(
            "this index searches vectors, not bit strings".into(),
        ))
    }
    /// Whether `search` honours its `allowed` rows as faiss's ID selector
    /// does (IVF, flat); otherwise callers fetch unfiltered candidates and
    /// filter them.
    fn filters_in_search(&self) -> bool;
    /// The index as bytes, for an index file.
    fn serialize(&self) -> Result<Vec<u8>, IndexError>;
    /// Approximate bytes of memory held.
    fn memory_size(&self) -> usize;
}

/// What a filtered graph walk ([`VectorIndex::search_filtered`]) found.
#[derive(Debug, Clone, PartialEq)]
pub enum Filtered {
    /// (row, distance), nearest first, and how many rows the walk scored.
    Hits {
        hits: Vec<(u64, f32)>,
        scored: usize,
    },
    /// The index has no filtered walk.
    Unsupported,
    /// The walk scored more rows than its budget allowed.
    GaveUp { scored: usize },
}

/// Read an index written by [`VectorIndex::serialize`].
pub fn load(spec: &IndexSpec, bytes: &[u8]) -> Result<Box<dyn VectorIndex>, IndexError> {
    if spec.method.is_binary() {
        Ok(Box::new(binary::deserialize(spec, bytes)?))
    } else {
        Ok(Box::new(deserialize(spec, bytes)?))
    }
}

/// Build an index over `rows` rows of `data`: row-major f32 vectors, or
/// for bit-string methods the packed bytes of each row.
pub fn build_any(spec: &IndexSpec, data: IndexData) -> Result<Box<dyn VectorIndex>, IndexError> {
    match data {
        IndexData::Vectors(v) if !spec.method.is_binary() => Ok(Box::new(build(spec, &v)?)),
        IndexData::Bits(b) if spec.method.is_binary() => Ok(Box::new(binary::build(spec, &b)?)),
        _ => Err(IndexError::WrongType(format!(
            "{} cannot index this column's type",
            spec.method.name()
        ))),
    }
}

/// The rows an index is built over.
pub enum IndexData {
    /// `rows × dim` floats, row-major.
    Vectors(Vec<f32>),
    /// `rows × ceil(dim / 8)` bytes of bit strings.
    Bits(Vec<u8>),
}

#[cfg(test)]
mod tests;
