//! Indexes over float vectors backed by faiss: build, load, search (through
//! quiver's own HNSW loop where it applies) and range search.

use super::*;

/// A faiss index. HNSW k-NN searches pass their ef per query (see
/// `hnsw_search.cpp`). For range searches, which take no parameters,
/// HNSW's efSearch and IVF's nprobe live in the index, so a search with
/// another setting changes it under the write lock; searches with the
/// settings already in place share the read lock.
pub struct FaissIndex {
    spec: IndexSpec,
    pub(super) index: RwLock<Tuned>,
    rows: usize,
    bytes: usize,
    /// HNSW: rows of an upper level, where filtered walks may start.
    upper: std::sync::OnceLock<Vec<i64>>,
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

/// The bits each query is quantised to by an `ivf_rabitq` index (faiss's
/// `qb`; Milvus's `rbq_query_bits`): 8 keeps the query's ranking of codes
/// (recall within 0.005 of float queries on the recall tests' data) and
/// lets faiss count bits instead of adding floats.
const RABITQ_QUERY_BITS: i32 = 8;

/// Build an index over `vectors` (`rows × dim`, row-major).
pub fn build(spec: &IndexSpec, vectors: &[f32]) -> Result<FaissIndex, IndexError> {
    let rows = vectors.len() / spec.dim.max(1);
    let data = if spec.metric == Metric::Cosine {
        normalized(vectors, spec.dim)
    } else {
        vectors.to_vec()
    };
    let mut index = factory(spec.dim, &spec.method.factory(rows), spec.faiss_metric())?;
    if let Method::IvfRabitq { .. } = spec.method {
        // SAFETY: the pointer is the faiss::Index just made, not shared.
        let code =
            unsafe { quiver_ivf_rabitq_query_bits(index.inner_ptr() as *mut _, RABITQ_QUERY_BITS) };
        if code != 0 {
            return Err(IndexError::Faiss(
                "query bits: the index built is not an IVF-RaBitQ index".into(),
            ));
        }
    }
    if let Method::HnswSq {
        ef_construction, ..
    } = spec.method
    {
        set_parameter(&mut index, "efConstruction", ef_construction as f64)?;
    }
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

/// faiss's index factory, with any of faiss's metrics (the faiss crate's
/// `index_factory` takes L2 and inner product only; L1 is pgvector's
/// `vector_l1_ops`).
fn factory(dim: usize, description: &str, metric: u32) -> Result<IndexImpl, IndexError> {
    use faiss::index::FromInnerPtr;
    let description = std::ffi::CString::new(description)
        .map_err(|_| IndexError::Faiss(format!("index description {description:?}")))?;
    let mut index = std::ptr::null_mut();
    // SAFETY: faiss writes a new index to `index` on success (0), which the
    // IndexImpl then owns and frees.
    unsafe {
        if faiss_sys::faiss_index_factory(
            &mut index,
            i32::try_from(dim).unwrap_or(i32::MAX),
            description.as_ptr(),
            metric,
        ) != 0
        {
            return Err(last_error());
        }
        Ok(IndexImpl::from_inner_ptr(index))
    }
}

pub(super) fn set_parameter(
    index: &mut IndexImpl,
    name: &str,
    value: f64,
) -> Result<(), IndexError> {
    let space = faiss::index::autotune::ParameterSpace::new().map_err(faiss_err)?;
    space
        .set_index_parameter(index, name, value)
        .map_err(faiss_err)
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
pub(super) struct Tuned {
    pub(super) index: IndexImpl,
    pub(super) ef: usize,
    pub(super) nprobe: usize,
}

impl FaissIndex {
    pub(super) fn wrap(spec: IndexSpec, index: IndexImpl, bytes: usize) -> FaissIndex {
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
            upper: std::sync::OnceLock::new(),
        }
    }

    /// Run `f` on the index with `ef` (HNSW) and `nprobe` (IVF, when
    /// `with_nprobe`) set in it.
    pub(super) fn with_settings<T>(
        &self,
        ef: usize,
        nprobe: Option<usize>,
        f: impl Fn(&IndexImpl) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let is_hnsw = self.spec.method.is_hnsw();
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

    pub(super) fn query(&self, query: &[f32]) -> Result<Vec<f32>, IndexError> {
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
pub(super) fn range_one(
    index: &IndexImpl,
    query: &[f32],
    radius: f32,
) -> Result<Vec<(i64, f32)>, IndexError> {
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
pub(super) struct Params<'a> {
    pub(super) params: *mut faiss_sys::FaissSearchParameters,
    pub(super) ivf: bool,
    pub(super) selector: *mut faiss_sys::FaissIDSelector,
    pub(super) _bitmap: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Params<'a> {
    pub(super) fn new(
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
pub(super) fn search_one(
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
    /// `src/vector/hnsw_search.cpp`: the bits an IVF-RaBitQ index
    /// quantises queries to; 1 when `index` is not one.
    fn quiver_ivf_rabitq_query_bits(
        index: *mut std::ffi::c_void,
        bits: std::ffi::c_int,
    ) -> std::ffi::c_int;
    /// `src/vector/hnsw_search.cpp`: back a flat or HNSW index's vectors
    /// and graph with transparent huge pages; the bytes advised.
    pub(super) fn quiver_index_huge_pages(index: *const std::ffi::c_void) -> usize;
    /// `src/vector/hnsw_search.cpp`: the mean level-0 degree of an HNSW
    /// index (-1 for other indexes).
    #[cfg(test)]
    pub(super) fn quiver_hnsw_level0_degree(index: *const std::ffi::c_void) -> f64;
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

unsafe extern "C" {
    /// `src/vector/hnsw_search.cpp`: a filtered walk over an HNSW index
    /// with flat storage; 0 done, 1 not such an index, 2 over budget.
    fn quiver_hnsw_search_filtered(
        index: *const std::ffi::c_void,
        query: *const f32,
        k: i64,
        ef: i32,
        bitmap: *const u8,
        two_hop: i32,
        budget: i64,
        seeds: *const i64,
        nseeds: i64,
        fraction: f64,
        scored: *mut i64,
        distances: *mut f32,
        labels: *mut i64,
        message: *mut std::ffi::c_char,
        message_len: usize,
    ) -> std::ffi::c_int;
    /// `src/vector/hnsw_search.cpp`: the rows of the lowest upper level
    /// with at most `max_rows` rows; -1 when not HNSW.
    fn quiver_hnsw_upper_rows(index: *const std::ffi::c_void, max_rows: i64, out: *mut i64) -> i64;
}

/// How many rows of an upper HNSW level a filtered walk may start from.
const SEED_POOL: usize = 4096;
/// The most starting rows scored by one filtered walk (fewer start as
/// well and cost less: on fashion-mnist with `label = 3`, 128 seeds gave
/// 3,096 QPS at recall 0.956 where 512 gave 2,786 at 0.963).
const MAX_SEEDS: usize = 128;
/// Below this share of passing rows, a filtered walk that has found `ef`
/// of them follows the passing neighbours of a failing neighbour instead
/// of skipping it (ACORN-1's two-hop expansion).
const TWO_HOP_BELOW: f64 = 0.5;

/// One query against an HNSW index, with `ef` for this query only; `None`
/// when `index` is not a faiss HNSW index with stored vectors.
pub(super) fn hnsw_one(
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
            Method::Hnsw { .. } | Method::HnswSq { .. } => {
                hnsw_one(&self.index.read().index, &query, k, ef, &params)?
            }
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

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        knobs: SearchKnobs,
        allowed: &[u8],
        fraction: f64,
        budget: usize,
    ) -> Result<Filtered, IndexError> {
        if !self.spec.method.is_hnsw() {
            return Ok(Filtered::Unsupported);
        }
        if k == 0 || self.rows == 0 {
            return Ok(Filtered::Hits {
                hits: vec![],
                scored: 0,
            });
        }
        if allowed.len() < self.rows.div_ceil(8) {
            return Err(IndexError::Faiss(format!(
                "a filter bitmap of {} bytes for {} rows",
                allowed.len(),
                self.rows
            )));
        }
        let query = self.query(query)?;
        let k = k.min(self.rows);
        let ef = knobs.ef.max(k);
        let mut distances = vec![0f32; k];
        let mut labels = vec![-1i64; k];
        let mut message = [0 as std::ffi::c_char; 256];
        let mut scored = 0i64;
        let guard = self.index.read();
        let pool = self.upper.get_or_init(|| {
            let mut out = vec![0i64; SEED_POOL];
            // SAFETY: the index is only read; `out` has room for SEED_POOL.
            let n = unsafe {
                quiver_hnsw_upper_rows(
                    guard.index.inner_ptr() as *const std::ffi::c_void,
                    SEED_POOL as i64,
                    out.as_mut_ptr(),
                )
            };
            out.truncate(usize::try_from(n).unwrap_or(0));
            out
        });
        let passes = |r: i64| allowed[r as usize / 8] & (1 << (r % 8)) != 0;
        let seeds: Vec<i64> = pool
            .iter()
            .copied()
            .filter(|&r| (r as usize) < self.rows && passes(r))
            .take(MAX_SEEDS)
            .collect();
        // SAFETY: the index pointer is a faiss::Index, only read under the
        // read lock; `query` has the index's dimension; `allowed` holds a
        // bit for every row (checked above) and the seeds are rows of the
        // index; the outputs have room for `k`.
        let code = unsafe {
            quiver_hnsw_search_filtered(
                guard.index.inner_ptr() as *const std::ffi::c_void,
                query.as_ptr(),
                k as i64,
                i32::try_from(ef).unwrap_or(i32::MAX),
                allowed.as_ptr(),
                i32::from(fraction < TWO_HOP_BELOW),
                i64::try_from(budget).unwrap_or(i64::MAX),
                seeds.as_ptr(),
                seeds.len() as i64,
                fraction,
                &mut scored,
                distances.as_mut_ptr(),
                labels.as_mut_ptr(),
                message.as_mut_ptr(),
                message.len(),
            )
        };
        match code {
            0 => Ok(Filtered::Hits {
                hits: labels
                    .into_iter()
                    .zip(distances)
                    .filter(|(label, _)| *label >= 0)
                    .map(|(label, d)| (label as u64, self.spec.distance(d)))
                    .collect(),
                scored: usize::try_from(scored).unwrap_or(0),
            }),
            1 => Ok(Filtered::Unsupported),
            2 => Ok(Filtered::GaveUp {
                scored: usize::try_from(scored).unwrap_or(0),
            }),
            _ => {
                // SAFETY: the shim writes a NUL-terminated message on error.
                let text = unsafe { std::ffi::CStr::from_ptr(message.as_ptr()) };
                Err(IndexError::Faiss(text.to_string_lossy().into_owned()))
            }
        }
    }

    fn filters_in_search(&self) -> bool {
        // faiss's HNSW walks poorly around rows its selector rejects (its
        // recall falls to about the passing fraction).
        !self.spec.method.is_hnsw()
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
