//! ANN indexes over one segment's vectors, behind [`VectorIndex`], built
//! with faiss. An index answers with row offsets within its segment and
//! with distances in pgvector's terms (`<->` L2, `<#>` negative inner
//! product, `<=>` cosine distance), so results merge with exact search.
//!
//! Methods: `flat`, `ivf_flat (lists)`, `ivf_sq8 (lists)`, `ivf_pq (lists,
//! m, nbits)`, `hnsw (m, ef_construction)`. Cosine indexes store
//! normalised vectors and search by inner product.

use std::collections::BTreeMap;
use std::fmt;

use faiss::index::IndexImpl;
use faiss::{Index, MetricType};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Metric;

pub mod binary;

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

fn faiss_err(e: faiss::error::Error) -> IndexError {
    IndexError::Faiss(e.to_string())
}

/// The index method and its build parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Flat,
    IvfFlat {
        lists: usize,
    },
    IvfSq8 {
        lists: usize,
    },
    IvfPq {
        lists: usize,
        m: usize,
        nbits: usize,
    },
    Hnsw {
        m: usize,
        ef_construction: usize,
        /// Fill each node's level-0 neighbour list up to its 2·m slots
        /// with the nearest candidates the diversity heuristic pruned, as
        /// pgvector does (the paper's keepPrunedConnections). The graph
        /// costs about twice as long to build. On fashion-mnist and a
        /// generated 1M x 128 set it answers with the same recall at a
        /// smaller ef; on tightly clustered data its recall at ef 64 is
        /// lower and varies more between builds, so it is off by default.
        #[serde(default)]
        keep_pruned: bool,
    },
    /// Exhaustive search over bit strings (faiss `IndexBinaryFlat`).
    BinFlat,
    /// Inverted lists over bit strings (faiss `IndexBinaryIVF`).
    BinIvfFlat {
        lists: usize,
    },
}

impl Method {
    /// Whether the distances a search returns are computed from the
    /// vectors themselves (not from quantised codes): equal, up to float
    /// rounding, to the exact distances of the rows.
    pub fn exact_distances(&self) -> bool {
        matches!(
            self,
            Method::Flat | Method::IvfFlat { .. } | Method::Hnsw { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Flat => "flat",
            Method::IvfFlat { .. } => "ivf_flat",
            Method::IvfSq8 { .. } => "ivf_sq8",
            Method::IvfPq { .. } => "ivf_pq",
            Method::Hnsw { .. } => "hnsw",
            Method::BinFlat => "bin_flat",
            Method::BinIvfFlat { .. } => "bin_ivf_flat",
        }
    }

    /// The build parameters as `WITH (...)` would name them.
    pub fn params(&self) -> String {
        match self {
            Method::Flat | Method::BinFlat => String::new(),
            Method::IvfFlat { lists } | Method::IvfSq8 { lists } | Method::BinIvfFlat { lists } => {
                format!("lists={lists}")
            }
            Method::IvfPq { lists, m, nbits } => format!("lists={lists}, m={m}, nbits={nbits}"),
            Method::Hnsw {
                m,
                ef_construction,
                keep_pruned,
            } => {
                format!("m={m}, ef_construction={ef_construction}, keep_pruned={keep_pruned}")
            }
        }
    }

    /// IVF lists are capped by the rows a segment has to train on.
    fn factory(&self, rows: usize) -> String {
        let lists = |l: usize| l.min((rows / 39).max(1)).max(1);
        match self {
            Method::Flat => "Flat".into(),
            Method::IvfFlat { lists: l } => format!("IVF{},Flat", lists(*l)),
            Method::IvfSq8 { lists: l } => format!("IVF{},SQ8", lists(*l)),
            Method::IvfPq { lists: l, m, nbits } => format!("IVF{},PQ{m}x{nbits}", lists(*l)),
            Method::Hnsw { m, .. } => format!("HNSW{m},Flat"),
            Method::BinFlat => "BFlat".into(),
            Method::BinIvfFlat { lists: l } => format!("BIVF{}", lists(*l)),
        }
    }

    fn is_ivf(&self) -> bool {
        matches!(
            self,
            Method::IvfFlat { .. } | Method::IvfSq8 { .. } | Method::IvfPq { .. }
        )
    }

    /// Whether the method indexes bit strings.
    pub fn is_binary(&self) -> bool {
        matches!(self, Method::BinFlat | Method::BinIvfFlat { .. })
    }
}

/// What an index is: its method, metric and dimension (stored in the
/// catalog; the factory is keyed by the method name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    pub method: Method,
    pub metric: Metric,
    pub dim: usize,
}

const METHODS: &str = "flat, ivf_flat, ivf_sq8, ivf_pq, hnsw, bin_flat, bin_ivf_flat";

/// The metric of a pgvector operator class.
pub fn metric_of_opclass(opclass: &str) -> Result<Metric, IndexError> {
    match opclass.to_ascii_lowercase().as_str() {
        "vector_l2_ops" => Ok(Metric::L2),
        "vector_ip_ops" => Ok(Metric::NegativeInnerProduct),
        "vector_cosine_ops" => Ok(Metric::Cosine),
        "bit_hamming_ops" => Ok(Metric::Hamming),
        "bit_jaccard_ops" => Ok(Metric::Jaccard),
        other => Err(IndexError::Unknown(format!(
            "operator class \"{other}\" does not exist for vector indexes: use vector_l2_ops, vector_ip_ops or vector_cosine_ops (vector columns), bit_hamming_ops or bit_jaccard_ops (bit columns)"
        ))),
    }
}

impl IndexSpec {
    /// Check a `CREATE INDEX ... USING method (col opclass) WITH (options)`.
    /// Options not about the build (e.g. `wait`) must be removed first.
    pub fn parse(
        method: &str,
        metric: Metric,
        dim: usize,
        options: &BTreeMap<String, String>,
    ) -> Result<IndexSpec, IndexError> {
        let allowed: &[&str] = match method {
            "flat" => &[],
            "ivf_flat" | "ivfflat" | "ivf_sq8" => &["lists"],
            "ivf_pq" => &["lists", "m", "nbits"],
            "hnsw" => &["m", "ef_construction", "keep_pruned"],
            "bin_flat" => &[],
            "bin_ivf_flat" => &["lists"],
            other => {
                return Err(IndexError::UnknownMethod(format!(
                    "access method \"{other}\" does not exist: use one of {METHODS}"
                )));
            }
        };
        if let Some(k) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(IndexError::InvalidParameter(format!(
                "unrecognized parameter \"{k}\" for {method}: allowed are {}",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let int = |name: &str,
                   default: usize,
                   min: usize,
                   max: usize|
         -> Result<usize, IndexError> {
            let Some(v) = options.get(name) else {
                return Ok(default);
            };
            match v.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(IndexError::InvalidParameter(format!(
                    "value {v} out of bounds for option \"{name}\": must be an integer from {min} to {max}"
                ))),
            }
        };
        if metric == Metric::L1 {
            return Err(IndexError::InvalidParameter(
                "vector indexes support vector_l2_ops, vector_ip_ops and vector_cosine_ops".into(),
            ));
        }
        // pgvector's spelling on bit columns: ivfflat (and flat) with a bit
        // operator class are the binary methods.
        let method = match (method, metric.is_binary()) {
            ("flat", true) => "bin_flat",
            ("ivf_flat" | "ivfflat", true) => "bin_ivf_flat",
            ("bin_flat" | "bin_ivf_flat", false) => {
                return Err(IndexError::WrongType(format!(
                    "{method} indexes bit columns, with bit_hamming_ops or bit_jaccard_ops"
                )));
            }
            ("bin_flat" | "bin_ivf_flat", true) => method,
            (_, true) => {
                return Err(IndexError::WrongType(format!(
                    "{method} does not index bit columns: use bin_flat or bin_ivf_flat"
                )));
            }
            (m, false) => m,
        };
        let method = match method {
            "flat" => Method::Flat,
            "bin_flat" => Method::BinFlat,
            "bin_ivf_flat" => Method::BinIvfFlat {
                lists: int("lists", 100, 1, 32768)?,
            },
            "ivf_flat" | "ivfflat" => Method::IvfFlat {
                lists: int("lists", 100, 1, 32768)?,
            },
            "ivf_sq8" => Method::IvfSq8 {
                lists: int("lists", 100, 1, 32768)?,
            },
            "ivf_pq" => {
                let m = int("m", (dim / 4).max(1), 1, dim)?;
                if !dim.is_multiple_of(m) {
                    return Err(IndexError::InvalidParameter(format!(
                        "ivf_pq: m = {m} must divide the dimension {dim}"
                    )));
                }
                Method::IvfPq {
                    lists: int("lists", 100, 1, 32768)?,
                    m,
                    nbits: int("nbits", 8, 1, 16)?,
                }
            }
            _ => Method::Hnsw {
                m: int("m", 16, 2, 100)?,
                ef_construction: int("ef_construction", 64, 4, 1000)?,
                keep_pruned: match options.get("keep_pruned") {
                    None => false,
                    Some(v) => bool_option("keep_pruned", v)?,
                },
            },
        };
        Ok(IndexSpec {
            method,
            metric,
            dim,
        })
    }

    fn faiss_metric(&self) -> MetricType {
        match self.metric {
            Metric::L2 => MetricType::L2,
            _ => MetricType::InnerProduct,
        }
    }

    /// The faiss range-search radius (squared L2: rows below it; inner
    /// product: rows above it) that takes in every row within `distance`,
    /// with a little to spare for rounding.
    fn faiss_radius(&self, distance: f32) -> f32 {
        let slack = 1e-4 * distance.abs() + 1e-6;
        match self.metric {
            Metric::L2 => (distance.max(0.0) * distance.max(0.0)) * (1.0 + 1e-4) + 1e-6,
            Metric::NegativeInnerProduct => -distance - slack,
            Metric::Cosine => 1.0 - distance - slack,
            Metric::L1 | Metric::Hamming | Metric::Jaccard => distance + slack,
        }
    }

    /// A faiss score as the pgvector distance of this metric.
    pub fn distance(&self, score: f32) -> f32 {
        match self.metric {
            Metric::L2 => score.max(0.0).sqrt(),
            Metric::NegativeInnerProduct => -score,
            Metric::Cosine => 1.0 - score,
            Metric::L1 | Metric::Hamming | Metric::Jaccard => score,
        }
    }
}

/// A boolean `WITH (...)` option, spelled as PostgreSQL accepts it.
pub fn bool_option(name: &str, value: &str) -> Result<bool, IndexError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(IndexError::InvalidParameter(format!(
            "invalid value for option \"{name}\": \"{value}\" (true or false)"
        ))),
    }
}

fn normalized(vectors: &[f32], dim: usize) -> Vec<f32> {
    let mut out = vectors.to_vec();
    for v in out.chunks_mut(dim) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    out
}

/// How hard a search works: HNSW's ef, IVF's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchKnobs {
    pub ef: usize,
    pub nprobe: usize,
}

impl Default for SearchKnobs {
    fn default() -> Self {
        SearchKnobs { ef: 40, nprobe: 1 }
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

/// A faiss index. HNSW k-NN searches pass their ef per query (see
/// `hnsw_search.cpp`). For range searches, which take no parameters,
/// HNSW's efSearch and IVF's nprobe live in the index, so a search with
/// another setting changes it under the write lock; searches with the
/// settings already in place share the read lock.
pub struct FaissIndex {
    spec: IndexSpec,
    index: RwLock<Tuned>,
    rows: usize,
    bytes: usize,
}

impl fmt::Debug for FaissIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FaissIndex({} {} dim={} rows={})",
            self.spec.method.name(),
            self.spec.metric.name(),
            self.spec.dim,
            self.rows
        )
    }
}

/// Build an index over `vectors` (`rows × dim`, row-major).
pub fn build(spec: &IndexSpec, vectors: &[f32]) -> Result<FaissIndex, IndexError> {
    let rows = vectors.len() / spec.dim.max(1);
    let data = if spec.metric == Metric::Cosine {
        normalized(vectors, spec.dim)
    } else {
        vectors.to_vec()
    };
    let mut index = faiss::index_factory(
        spec.dim as u32,
        spec.method.factory(rows),
        spec.faiss_metric(),
    )
    .map_err(faiss_err)?;
    if let Method::Hnsw {
        ef_construction,
        keep_pruned,
        ..
    } = spec.method
    {
        set_parameter(&mut index, "efConstruction", ef_construction as f64)?;
        if keep_pruned {
            // SAFETY: the pointer is the faiss::Index just made, not shared.
            let code = unsafe { quiver_hnsw_keep_pruned(index.inner_ptr() as *mut _, 1) };
            if code != 0 {
                return Err(IndexError::Faiss(
                    "keep_pruned: the index built is not an HNSW index".into(),
                ));
            }
        }
    }
    if rows > 0 {
        if !index.is_trained() {
            index.train(&data).map_err(faiss_err)?;
        }
        index.add(&data).map_err(faiss_err)?;
    }
    Ok(FaissIndex::wrap(spec.clone(), index, vectors.len() * 4))
}

fn set_parameter(index: &mut IndexImpl, name: &str, value: f64) -> Result<(), IndexError> {
    let space = faiss::index::autotune::ParameterSpace::new().map_err(faiss_err)?;
    space
        .set_index_parameter(index, name, value)
        .map_err(faiss_err)
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

/// Read a float-vector index written by [`VectorIndex::serialize`].
pub fn deserialize(spec: &IndexSpec, bytes: &[u8]) -> Result<FaissIndex, IndexError> {
    let tmp = tempfile_path()?;
    std::fs::write(&tmp, bytes)?;
    let read = faiss::read_index(tmp.to_string_lossy().as_ref());
    let _ = std::fs::remove_file(&tmp);
    let index = read.map_err(faiss_err)?;
    if index.d() as usize != spec.dim {
        return Err(IndexError::Faiss(format!(
            "index file has dimension {}, expected {}",
            index.d(),
            spec.dim
        )));
    }
    let bytes_len = bytes.len();
    Ok(FaissIndex::wrap(spec.clone(), index, bytes_len))
}

pub(crate) fn tempfile_path() -> Result<std::path::PathBuf, IndexError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(std::env::temp_dir().join(format!("quiver-index-{}-{n}.faiss", std::process::id())))
}

/// A faiss index and the search settings it holds now (0: not set yet).
struct Tuned {
    index: IndexImpl,
    ef: usize,
    nprobe: usize,
}

impl FaissIndex {
    fn wrap(spec: IndexSpec, index: IndexImpl, bytes: usize) -> FaissIndex {
        let rows = index.ntotal() as usize;
        // SAFETY: a faiss::Index, only read; madvise does not move memory.
        let huge = unsafe { quiver_index_huge_pages(index.inner_ptr() as *const _) };
        tracing::debug!(
            method = spec.method.name(),
            rows,
            huge,
            "index memory advised for huge pages"
        );
        FaissIndex {
            spec,
            index: RwLock::new(Tuned {
                index,
                ef: 0,
                nprobe: 0,
            }),
            rows,
            bytes,
        }
    }

    /// Run `f` on the index with `ef` (HNSW) and `nprobe` (IVF, when
    /// `with_nprobe`) set in it.
    fn with_settings<T>(
        &self,
        ef: usize,
        nprobe: Option<usize>,
        f: impl Fn(&IndexImpl) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let is_hnsw = matches!(self.spec.method, Method::Hnsw { .. });
        let wants = |t: &Tuned| {
            (is_hnsw && t.ef != ef)
                || nprobe.is_some_and(|n| self.spec.method.is_ivf() && t.nprobe != n)
        };
        {
            let guard = self.index.read();
            if !wants(&guard) {
                return f(&guard.index);
            }
        }
        let mut guard = self.index.write();
        if is_hnsw && guard.ef != ef {
            set_parameter(&mut guard.index, "efSearch", ef as f64)?;
            guard.ef = ef;
        }
        if let Some(n) = nprobe
            && self.spec.method.is_ivf()
            && guard.nprobe != n
        {
            set_parameter(&mut guard.index, "nprobe", n as f64)?;
            guard.nprobe = n;
        }
        f(&guard.index)
    }

    fn query(&self, query: &[f32]) -> Result<Vec<f32>, IndexError> {
        if query.len() != self.spec.dim {
            return Err(IndexError::InvalidParameter(format!(
                "expected {} dimensions, not {}",
                self.spec.dim,
                query.len()
            )));
        }
        Ok(if self.spec.metric == Metric::Cosine {
            normalized(query, self.spec.dim)
        } else {
            query.to_vec()
        })
    }
}

/// One range query against `index`: (label, faiss score) pairs.
fn range_one(index: &IndexImpl, query: &[f32], radius: f32) -> Result<Vec<(i64, f32)>, IndexError> {
    // SAFETY: the result is made, read and freed here; `query` has `d`
    // floats; faiss fills `lims` (nq + 1 entries) and the label and
    // distance arrays (lims[nq] entries) it owns.
    unsafe {
        let mut result: *mut faiss_sys::FaissRangeSearchResult = std::ptr::null_mut();
        if faiss_sys::faiss_RangeSearchResult_new(&mut result, 1) != 0 {
            return Err(last_error());
        }
        let code = faiss_sys::faiss_Index_range_search(
            index.inner_ptr(),
            1,
            query.as_ptr(),
            radius,
            result,
        );
        let out = if code != 0 {
            Err(last_error())
        } else {
            let mut lims: *mut usize = std::ptr::null_mut();
            faiss_sys::faiss_RangeSearchResult_lims(result, &mut lims);
            let mut labels: *mut faiss_sys::idx_t = std::ptr::null_mut();
            let mut distances: *mut f32 = std::ptr::null_mut();
            faiss_sys::faiss_RangeSearchResult_labels(result, &mut labels, &mut distances);
            let n = if lims.is_null() {
                0
            } else {
                *lims.add(1) - *lims
            };
            let first = if lims.is_null() { 0 } else { *lims };
            Ok((0..n)
                .map(|i| (*labels.add(first + i), *distances.add(first + i)))
                .collect())
        };
        faiss_sys::faiss_RangeSearchResult_free(result);
        out
    }
}

pub(crate) fn last_error() -> IndexError {
    // SAFETY: faiss returns a NUL-terminated message (or null) owned by the
    // calling thread.
    let message = unsafe {
        let p = faiss_sys::faiss_get_last_error();
        if p.is_null() {
            "unknown error".to_string()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    IndexError::Faiss(message)
}

/// Search parameters for one search (selector, probes), freed on drop.
/// The selector reads `bitmap` in place, so it must outlive the search.
struct Params<'a> {
    params: *mut faiss_sys::FaissSearchParameters,
    ivf: bool,
    selector: *mut faiss_sys::FaissIDSelector,
    _bitmap: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Params<'a> {
    fn new(
        ivf: bool,
        nprobe: usize,
        rows: usize,
        bitmap: Option<&'a [u8]>,
    ) -> Result<Params<'a>, IndexError> {
        let mut out = Params {
            params: std::ptr::null_mut(),
            ivf,
            selector: std::ptr::null_mut(),
            _bitmap: std::marker::PhantomData,
        };
        // SAFETY: out-pointers are written by faiss on success; what they
        // point to is freed in Drop, parameters before the selector.
        unsafe {
            if let Some(bitmap) = bitmap {
                let mut sel: *mut faiss_sys::FaissIDSelectorBitmap = std::ptr::null_mut();
                // faiss takes the bitmap's length in bytes.
                let n = bitmap.len().min(rows.div_ceil(8));
                if faiss_sys::faiss_IDSelectorBitmap_new(&mut sel, n, bitmap.as_ptr()) != 0 {
                    return Err(last_error());
                }
                out.selector = sel as *mut faiss_sys::FaissIDSelector;
            }
            if ivf {
                let mut p: *mut faiss_sys::FaissSearchParametersIVF = std::ptr::null_mut();
                if faiss_sys::faiss_SearchParametersIVF_new_with(
                    &mut p,
                    out.selector,
                    nprobe.max(1),
                    0,
                ) != 0
                {
                    return Err(last_error());
                }
                out.params = p as *mut faiss_sys::FaissSearchParameters;
            } else if !out.selector.is_null() {
                let mut p = std::ptr::null_mut();
                if faiss_sys::faiss_SearchParameters_new(&mut p, out.selector) != 0 {
                    return Err(last_error());
                }
                out.params = p;
            }
        }
        Ok(out)
    }
}

impl Drop for Params<'_> {
    fn drop(&mut self) {
        // SAFETY: each pointer was made by faiss in `new` and is freed once.
        unsafe {
            if !self.params.is_null() {
                if self.ivf {
                    faiss_sys::faiss_SearchParametersIVF_free(
                        self.params as *mut faiss_sys::FaissSearchParametersIVF,
                    );
                } else {
                    faiss_sys::faiss_SearchParameters_free(self.params);
                }
            }
            if !self.selector.is_null() {
                faiss_sys::faiss_IDSelector_free(self.selector);
            }
        }
    }
}

/// One query against `index` (faiss searches are const: shared access is
/// safe while nothing changes the index).
fn search_one(
    index: &IndexImpl,
    query: &[f32],
    k: usize,
    params: &Params,
) -> Result<Vec<(i64, f32)>, IndexError> {
    let mut distances = vec![0f32; k];
    let mut labels = vec![-1 as faiss_sys::idx_t; k];
    // SAFETY: `query` has `d` floats, the outputs have room for `k`
    // results, and the parameters live until after the call.
    let code = unsafe {
        faiss_sys::faiss_Index_search_with_params(
            index.inner_ptr(),
            1,
            query.as_ptr(),
            k as faiss_sys::idx_t,
            params.params,
            distances.as_mut_ptr(),
            labels.as_mut_ptr(),
        )
    };
    if code != 0 {
        return Err(last_error());
    }
    Ok(labels.into_iter().zip(distances).collect())
}

unsafe extern "C" {
    /// `src/vector/hnsw_search.cpp`: whether adding rows to an HNSW index
    /// fills level-0 neighbour lists with pruned candidates; 1 when `index`
    /// is not an HNSW index.
    fn quiver_hnsw_keep_pruned(
        index: *mut std::ffi::c_void,
        keep: std::ffi::c_int,
    ) -> std::ffi::c_int;
    /// `src/vector/hnsw_search.cpp`: back a flat or HNSW index's vectors
    /// and graph with transparent huge pages; the bytes advised.
    fn quiver_index_huge_pages(index: *const std::ffi::c_void) -> usize;
    /// `src/vector/hnsw_search.cpp`: the mean level-0 degree of an HNSW
    /// index (-1 for other indexes).
    #[cfg(test)]
    fn quiver_hnsw_level0_degree(index: *const std::ffi::c_void) -> f64;
    /// `src/vector/hnsw_search.cpp`: one query against an HNSW index with
    /// its own efSearch and a visited table kept per thread.
    fn quiver_hnsw_search(
        index: *const std::ffi::c_void,
        query: *const f32,
        k: i64,
        ef: i32,
        selector: *const std::ffi::c_void,
        distances: *mut f32,
        labels: *mut i64,
        message: *mut std::ffi::c_char,
        message_len: usize,
    ) -> std::ffi::c_int;
}

/// One query against an HNSW index, with `ef` for this query only; `None`
/// when `index` is not a faiss HNSW index with stored vectors.
fn hnsw_one(
    index: &IndexImpl,
    query: &[f32],
    k: usize,
    ef: usize,
    params: &Params,
) -> Result<Option<Vec<(i64, f32)>>, IndexError> {
    let mut distances = vec![0f32; k];
    let mut labels = vec![-1i64; k];
    let mut message = [0 as std::ffi::c_char; 256];
    // SAFETY: the index pointer is a faiss::Index, only read; `query` has
    // the index's dimension (checked by `FaissIndex::query`); the outputs
    // have room for `k` results; the selector (or null) outlives the call.
    let code = unsafe {
        quiver_hnsw_search(
            index.inner_ptr() as *const std::ffi::c_void,
            query.as_ptr(),
            k as i64,
            i32::try_from(ef).unwrap_or(i32::MAX),
            params.selector as *const std::ffi::c_void,
            distances.as_mut_ptr(),
            labels.as_mut_ptr(),
            message.as_mut_ptr(),
            message.len(),
        )
    };
    match code {
        0 => Ok(Some(labels.into_iter().zip(distances).collect())),
        1 => Ok(None),
        _ => {
            // SAFETY: the shim writes a NUL-terminated message on error.
            let text = unsafe { std::ffi::CStr::from_ptr(message.as_ptr()) };
            Err(IndexError::Faiss(text.to_string_lossy().into_owned()))
        }
    }
}

impl VectorIndex for FaissIndex {
    fn spec(&self) -> &IndexSpec {
        &self.spec
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        knobs: SearchKnobs,
        allowed: Option<&[u8]>,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if k == 0 || self.rows == 0 {
            return Ok(vec![]);
        }
        let query = self.query(query)?;
        let params = Params::new(self.spec.method.is_ivf(), knobs.nprobe, self.rows, allowed)?;
        let k = k.min(self.rows);
        let ef = knobs.ef.max(k);
        let hnsw = match self.spec.method {
            Method::Hnsw { .. } => hnsw_one(&self.index.read().index, &query, k, ef, &params)?,
            _ => None,
        };
        let result = match hnsw {
            Some(result) => result,
            None => self.with_settings(ef, None, |index| search_one(index, &query, k, &params))?,
        };
        Ok(result
            .into_iter()
            .filter(|(label, _)| *label >= 0)
            .map(|(label, d)| (label as u64, self.spec.distance(d)))
            .collect())
    }

    fn filters_in_search(&self) -> bool {
        // faiss's HNSW walks poorly around rows its selector rejects (its
        // recall falls to about the passing fraction).
        !matches!(self.spec.method, Method::Hnsw { .. })
    }

    fn range_search(
        &self,
        query: &[f32],
        radius: f32,
        knobs: SearchKnobs,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if self.rows == 0 || radius.is_nan() {
            return Ok(vec![]);
        }
        let query = self.query(query)?;
        let faiss_radius = self.spec.faiss_radius(radius);
        let result = self.with_settings(knobs.ef, Some(knobs.nprobe.max(1)), |index| {
            range_one(index, &query, faiss_radius)
        })?;
        Ok(result
            .into_iter()
            .filter(|(label, _)| *label >= 0)
            .map(|(label, d)| (label as u64, self.spec.distance(d)))
            .collect())
    }

    fn serialize(&self) -> Result<Vec<u8>, IndexError> {
        let tmp = tempfile_path()?;
        let written = faiss::write_index(&self.index.read().index, tmp.to_string_lossy().as_ref());
        let bytes = written
            .map_err(faiss_err)
            .and_then(|_| Ok(std::fs::read(&tmp)?));
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    fn memory_size(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::distance::distance;

    /// `n` vectors around `clusters` centres, deterministic. Each cluster
    /// varies along 4 directions of its own plus small noise, so the data
    /// has the low intrinsic dimension of real embeddings.
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres: Vec<f32> = (0..clusters * dim).map(|_| next() * 10.0).collect();
        let axes: Vec<f32> = (0..clusters * 4 * dim).map(|_| next()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = i % clusters;
            let w: Vec<f32> = (0..4).map(|_| next() * 6.0).collect();
            for j in 0..dim {
                let along: f32 = (0..4).map(|a| w[a] * axes[(c * 4 + a) * dim + j]).sum();
                out.push(centres[c * dim + j] + along + next() * 0.2);
            }
        }
        out
    }

    fn exact(
        data: &[f32],
        dim: usize,
        metric: Metric,
        q: &[f32],
        k: usize,
        allowed: &dyn Fn(usize) -> bool,
    ) -> Vec<u64> {
        let mut all: Vec<(f64, u64)> = data
            .chunks(dim)
            .enumerate()
            .filter(|(i, _)| allowed(*i))
            .map(|(i, v)| (distance(metric, q, v), i as u64))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    fn recall(
        method: &str,
        options: &[(&str, &str)],
        metric: Metric,
        knobs: SearchKnobs,
        keep: usize,
    ) -> f64 {
        let (n, dim, k) = (4000, 32, 10);
        // Queries come from the same distribution: held-out points.
        let all = clustered(n + 50, dim, 20, 7);
        let (data, queries) = all.split_at(n * dim);
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = IndexSpec::parse(method, metric, dim, &options).unwrap();
        let index = build(&spec, data).unwrap();
        let allowed = |i: usize| i % 100 < keep;
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for i in (0..n).filter(|i| allowed(*i)) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        let mut hits = 0;
        for q in queries.chunks(dim) {
            let truth = exact(data, dim, metric, q, k, &allowed);
            let got = index
                .search(q, k, knobs, (keep < 100).then_some(&bitmap[..]))
                .unwrap();
            assert!(
                got.iter().all(|(r, _)| allowed(*r as usize)),
                "filtered row returned"
            );
            // Distances are pgvector's: they match exact ones (quantised
            // codes give approximate distances).
            let lossy = matches!(spec.method, Method::IvfSq8 { .. } | Method::IvfPq { .. });
            if let Some((row, d)) = got.first().filter(|_| !lossy) {
                let v = &data[*row as usize * dim..(*row as usize + 1) * dim];
                assert!((distance(metric, q, v) as f32 - d).abs() < 1e-2 * (1.0 + d.abs()));
            }
            hits += got.iter().filter(|(r, _)| truth.contains(r)).count();
        }
        hits as f64 / (50 * k) as f64
    }

    #[test]
    fn recall_per_method_and_metric() {
        let knobs = SearchKnobs { ef: 64, nprobe: 8 };
        for metric in [Metric::L2, Metric::NegativeInnerProduct, Metric::Cosine] {
            assert_eq!(recall("flat", &[], metric, knobs, 100), 1.0);
            let r = recall(
                "hnsw",
                &[("m", "16"), ("ef_construction", "64")],
                metric,
                knobs,
                100,
            );
            assert!(r >= 0.95, "hnsw {metric:?}: {r}");
            let r = recall(
                "hnsw",
                &[
                    ("m", "16"),
                    ("ef_construction", "64"),
                    ("keep_pruned", "on"),
                ],
                metric,
                knobs,
                100,
            );
            // Full level-0 lists do less well on tight clusters like these
            // (see `Method::Hnsw::keep_pruned`).
            assert!(r >= 0.9, "hnsw {metric:?} with pruned links kept: {r}");
            let r = recall("ivf_flat", &[("lists", "32")], metric, knobs, 100);
            assert!(r >= 0.9, "ivf_flat {metric:?}: {r}");
        }
        let r = recall("ivf_sq8", &[("lists", "32")], Metric::L2, knobs, 100);
        assert!(r >= 0.85, "ivf_sq8: {r}");
        let r = recall(
            "ivf_pq",
            &[("lists", "32"), ("m", "8"), ("nbits", "6")],
            Metric::L2,
            knobs,
            100,
        );
        assert!(r >= 0.3, "ivf_pq: {r}");
    }

    #[test]
    fn filtered_search_keeps_to_the_selector() {
        // HNSW walks through filtered-out nodes, so at low selectivity the
        // executor searches the survivors exactly instead; here half remain.
        let r = recall(
            "hnsw",
            &[],
            Metric::L2,
            SearchKnobs { ef: 128, nprobe: 8 },
            50,
        );
        assert!(r >= 0.9, "hnsw with 50% kept: {r}");
        for keep in [1, 10, 50] {
            let r = recall(
                "ivf_flat",
                &[("lists", "32")],
                Metric::L2,
                SearchKnobs { ef: 64, nprobe: 32 },
                keep,
            );
            assert!(r >= 0.95, "ivf_flat with {keep}% kept: {r}");
        }
    }

    #[test]
    fn range_search_finds_the_rows_within_the_radius() {
        let dim = 16;
        let data = clustered(3000, dim, 10, 5);
        for metric in [Metric::L2, Metric::NegativeInnerProduct, Metric::Cosine] {
            for (method, knobs) in [
                ("flat", SearchKnobs::default()),
                ("ivf_flat", SearchKnobs { ef: 40, nprobe: 16 }),
            ] {
                let opts: BTreeMap<String, String> = if method == "ivf_flat" {
                    [("lists".to_string(), "16".to_string())].into()
                } else {
                    BTreeMap::new()
                };
                let spec = IndexSpec::parse(method, metric, dim, &opts).unwrap();
                let index = build(&spec, &data).unwrap();
                let q = &data[7 * dim..8 * dim];
                let mut all: Vec<f32> = data
                    .chunks(dim)
                    .map(|v| distance(metric, q, v) as f32)
                    .collect();
                all.sort_by(f32::total_cmp);
                // The 50th neighbour's distance, halfway to the 51st.
                let radius = (all[49] + all[50]) / 2.0;
                let got = index.range_search(q, radius, knobs).unwrap();
                let within = got.iter().filter(|(_, d)| *d <= radius + 1e-4).count();
                assert!(
                    within >= 48 && got.len() <= 52,
                    "{method} {metric:?}: {} rows, {within} within {radius}",
                    got.len()
                );
            }
        }
    }

    /// quiver's HNSW search loop over flat storage (`search_flat` in
    /// hnsw_search.cpp) walks the graph as faiss's `HNSW::search` does:
    /// the same neighbours, the same distances, with and without a
    /// selector, for each metric.
    #[test]
    fn own_hnsw_loop_answers_as_faiss_does() {
        let (n, dim, k, ef) = (3000, 24, 10, 40);
        let all = clustered(n + 40, dim, 12, 11);
        let (data, queries) = all.split_at(n * dim);
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for i in (0..n).filter(|i| i % 3 != 0) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        for metric in [Metric::L2, Metric::NegativeInnerProduct, Metric::Cosine] {
            let spec = IndexSpec::parse("hnsw", metric, dim, &BTreeMap::new()).unwrap();
            let index = build(&spec, data).unwrap();
            let (mut same, mut total) = (0, 0);
            for filter in [None, Some(&bitmap[..])] {
                let params = Params::new(false, 1, n, filter).unwrap();
                for q in queries.chunks(dim) {
                    let q = index.query(q).unwrap();
                    let ours = hnsw_one(&index.index.read().index, &q, k, ef, &params)
                        .unwrap()
                        .expect("an HNSW index over flat storage");
                    let theirs = index
                        .with_settings(ef, None, |i| search_one(i, &q, k, &params))
                        .unwrap();
                    assert_eq!(ours.len(), theirs.len());
                    for ((a, da), (b, db)) in ours.iter().zip(&theirs) {
                        total += 1;
                        if a == b {
                            same += 1;
                            assert!((da - db).abs() <= 1e-3 * (1.0 + db.abs()), "{da} vs {db}");
                        }
                        if filter.is_some() {
                            assert!(*a < 0 || *a % 3 != 0, "filtered row {a} returned");
                        }
                    }
                }
            }
            // Rounding in the distance kernels may swap near-ties.
            assert!(
                same * 100 >= total * 98,
                "{metric:?}: {same} of {total} the same"
            );
        }
    }

    /// keep_pruned fills level-0 lists to their 2·m slots; without it the
    /// diversity heuristic leaves them much shorter on clustered data.
    #[test]
    fn keep_pruned_fills_level_0_neighbour_lists() {
        let (n, dim) = (3000, 16);
        let data = clustered(n, dim, 10, 5);
        let degree = |keep: &str| {
            let options = [
                ("m".to_string(), "8".to_string()),
                ("keep_pruned".to_string(), keep.to_string()),
            ]
            .into();
            let spec = IndexSpec::parse("hnsw", Metric::L2, dim, &options).unwrap();
            let index = build(&spec, &data).unwrap();
            let guard = index.index.read();
            // SAFETY: a faiss::Index, only read.
            unsafe { quiver_hnsw_level0_degree(guard.index.inner_ptr() as *const _) }
        };
        let (kept, pruned) = (degree("true"), degree("false"));
        assert!(kept > 15.5, "level-0 degree with keep_pruned: {kept}");
        assert!(
            pruned < kept - 2.0,
            "level-0 degree without: {pruned}, with: {kept}"
        );
        let defaults = IndexSpec::parse("hnsw", Metric::L2, dim, &BTreeMap::new()).unwrap();
        assert!(defaults.method.params().ends_with("keep_pruned=false"));
    }

    /// A flat index of 8 MiB of vectors asks for huge pages over at least
    /// 4 MiB of them, wherever the kernel has transparent huge pages.
    #[test]
    fn large_indexes_ask_for_huge_pages() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let (n, dim) = (16_384, 128);
        let data = clustered(n, dim, 4, 9);
        let spec = IndexSpec::parse("flat", Metric::L2, dim, &BTreeMap::new()).unwrap();
        let index = build(&spec, &data).unwrap();
        let guard = index.index.read();
        // SAFETY: a faiss::Index, only read.
        let huge = unsafe { quiver_index_huge_pages(guard.index.inner_ptr() as *const _) };
        if thp.contains("[never]") || thp.is_empty() {
            return;
        }
        assert!(huge >= 4 << 20, "{huge} bytes advised");
        drop(guard);
        let q = &data[5 * dim..6 * dim];
        assert_eq!(
            index.search(q, 1, SearchKnobs::default(), None).unwrap()[0].0,
            5
        );
    }

    #[test]
    fn serialized_index_answers_the_same() {
        let data = clustered(1000, 16, 10, 3);
        let spec = IndexSpec::parse("hnsw", Metric::Cosine, 16, &BTreeMap::new()).unwrap();
        let index = build(&spec, &data).unwrap();
        let bytes = index.serialize().unwrap();
        let back = deserialize(&spec, &bytes).unwrap();
        let q = &data[..16];
        let knobs = SearchKnobs::default();
        assert_eq!(
            index.search(q, 5, knobs, None).unwrap(),
            back.search(q, 5, knobs, None).unwrap()
        );
        assert_eq!(back.len(), 1000);
        assert!(deserialize(&spec, b"garbage").is_err());
    }

    #[test]
    fn bad_parameters_say_what_is_allowed() {
        let opts = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let err = |m: &str, o: &[(&str, &str)]| {
            IndexSpec::parse(m, Metric::L2, 128, &opts(o))
                .unwrap_err()
                .to_string()
        };
        assert!(err("diskann", &[]).contains("hnsw"));
        assert!(err("ivf_pq", &[("m", "7")]).contains("divide"));
        assert!(err("ivf_flat", &[("lists", "0")]).contains("from 1"));
        assert!(err("hnsw", &[("lists", "4")]).contains("m, ef_construction, keep_pruned"));
        assert!(err("hnsw", &[("keep_pruned", "maybe")]).contains("true or false"));
        assert!(metric_of_opclass("vector_l1_ops").is_err());
    }
}
