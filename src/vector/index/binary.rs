//! Indexes over bit strings (`BIT(n)`): faiss's `IndexBinaryFlat`
//! (`bin_flat`) and `IndexBinaryIVF` (`bin_ivf_flat`), both Hamming.
//!
//! faiss's binary indexes know only Hamming distance and take no ID
//! selector. A Jaccard search on `bin_ivf_flat` probes the lists nearest by
//! Hamming and returns every row in them for the caller to re-score by
//! Jaccard: inverted lists with another metric for the scan. Filters are
//! applied by the caller to the candidates.

use std::fmt;

use super::{IndexError, IndexSpec, Method, SearchKnobs, VectorIndex, last_error, tempfile_path};
use crate::Metric;
use crate::bits::bytes_for;

/// A faiss binary index. Searches are `const` in faiss and share it.
pub struct BinaryIndex {
    spec: IndexSpec,
    index: *mut faiss_sys::FaissIndexBinary,
    rows: usize,
    code_size: usize,
}

// SAFETY: the index is changed only while being built, before it is
// shared; faiss's binary searches only read it.
unsafe impl Send for BinaryIndex {}
unsafe impl Sync for BinaryIndex {}

impl Drop for BinaryIndex {
    fn drop(&mut self) {
        // SAFETY: made by faiss in `build`/`deserialize`, freed once.
        unsafe { faiss_sys::faiss_IndexBinary_free(self.index) }
    }
}

impl fmt::Debug for BinaryIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BinaryIndex({} {} bits={} rows={})",
            self.spec.method.name(),
            self.spec.metric.name(),
            self.spec.dim,
            self.rows
        )
    }
}

fn check(code: std::os::raw::c_int) -> Result<(), IndexError> {
    if code != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// Build over `codes`: `rows × ceil(bits / 8)` bytes.
pub fn build(spec: &IndexSpec, codes: &[u8]) -> Result<BinaryIndex, IndexError> {
    let code_size = bytes_for(spec.dim).max(1);
    let rows = codes.len() / code_size;
    let description = std::ffi::CString::new(spec.method.factory(rows))
        .map_err(|e| IndexError::Faiss(e.to_string()))?;
    let mut index: *mut faiss_sys::FaissIndexBinary = std::ptr::null_mut();
    // SAFETY: faiss writes the new index on success; `codes` holds `rows`
    // codes of `code_size` bytes, faiss's `d / 8`.
    unsafe {
        check(faiss_sys::faiss_index_binary_factory(
            &mut index,
            (code_size * 8) as i32,
            description.as_ptr(),
        ))?;
        let mut built = BinaryIndex {
            spec: spec.clone(),
            index,
            rows: 0,
            code_size,
        };
        if rows > 0 {
            if faiss_sys::faiss_IndexBinary_is_trained(index) == 0 {
                check(faiss_sys::faiss_IndexBinary_train(
                    index,
                    rows as i64,
                    codes.as_ptr(),
                ))?;
            }
            check(faiss_sys::faiss_IndexBinary_add(
                index,
                rows as i64,
                codes.as_ptr(),
            ))?;
        }
        built.rows = rows;
        Ok(built)
    }
}

/// Read an index written by [`VectorIndex::serialize`].
pub fn deserialize(spec: &IndexSpec, bytes: &[u8]) -> Result<BinaryIndex, IndexError> {
    let tmp = tempfile_path()?;
    std::fs::write(&tmp, bytes)?;
    let path = std::ffi::CString::new(tmp.to_string_lossy().as_bytes().to_vec())
        .map_err(|e| IndexError::Faiss(e.to_string()));
    let mut index: *mut faiss_sys::FaissIndexBinary = std::ptr::null_mut();
    // SAFETY: faiss reads the file and writes the new index on success.
    let code = path
        .map(|p| unsafe { faiss_sys::faiss_read_index_binary_fname(p.as_ptr(), 0, &mut index) });
    let _ = std::fs::remove_file(&tmp);
    check(code?)?;
    let code_size = bytes_for(spec.dim).max(1);
    let out = BinaryIndex {
        spec: spec.clone(),
        index,
        // SAFETY: the index was read above.
        rows: unsafe { faiss_sys::faiss_IndexBinary_ntotal(index) } as usize,
        code_size,
    };
    // SAFETY: as above.
    let d = unsafe { faiss_sys::faiss_IndexBinary_d(index) } as usize;
    if d != code_size * 8 {
        return Err(IndexError::Faiss(format!(
            "index file has {d} bits, expected {}",
            code_size * 8
        )));
    }
    Ok(out)
}

impl BinaryIndex {
    /// The IVF view of the index, if it is one.
    fn ivf(&self) -> Option<*mut faiss_sys::FaissIndexBinaryIVF> {
        if !matches!(self.spec.method, Method::BinIvfFlat { .. }) {
            return None;
        }
        // SAFETY: a checked downcast; null when it is not an IVF index.
        let ivf = unsafe { faiss_sys::faiss_IndexBinaryIVF_cast(self.index) };
        (!ivf.is_null()).then_some(ivf)
    }

    /// Search the `nprobe` nearest lists: `k` results, or with `all` every
    /// row of those lists.
    fn search_ivf(
        &self,
        ivf: *mut faiss_sys::FaissIndexBinaryIVF,
        query: &[u8],
        k: usize,
        nprobe: usize,
        all: bool,
    ) -> Result<Vec<(i64, i32)>, IndexError> {
        // SAFETY: the quantizer belongs to the index; outputs are sized for
        // the counts passed; the parameters live until after the search.
        unsafe {
            let nlist = faiss_sys::faiss_IndexBinaryIVF_nlist(ivf).max(1);
            let nprobe = nprobe.clamp(1, nlist);
            let quantizer = faiss_sys::faiss_IndexBinaryIVF_quantizer(ivf);
            let mut cdis = vec![0i32; nprobe];
            let mut cidx = vec![-1i64; nprobe];
            check(faiss_sys::faiss_IndexBinary_search(
                quantizer,
                1,
                query.as_ptr(),
                nprobe as i64,
                cdis.as_mut_ptr(),
                cidx.as_mut_ptr(),
            ))?;
            let k = if all {
                cidx.iter()
                    .filter(|l| **l >= 0)
                    .map(|l| faiss_sys::faiss_IndexBinaryIVF_get_list_size(ivf, *l as usize))
                    .sum::<usize>()
            } else {
                k
            }
            .clamp(1, self.rows.max(1));
            let mut params: *mut faiss_sys::FaissSearchParametersIVF = std::ptr::null_mut();
            check(faiss_sys::faiss_SearchParametersIVF_new_with(
                &mut params,
                std::ptr::null_mut(),
                nprobe,
                0,
            ))?;
            let mut dis = vec![0i32; k];
            let mut labels = vec![-1i64; k];
            let code = faiss_sys::faiss_IndexBinaryIVF_search_preassigned(
                ivf,
                1,
                query.as_ptr(),
                k as i64,
                cidx.as_ptr(),
                cdis.as_ptr(),
                dis.as_mut_ptr(),
                labels.as_mut_ptr(),
                0,
                params,
            );
            faiss_sys::faiss_SearchParametersIVF_free(params);
            check(code)?;
            Ok(labels.into_iter().zip(dis).collect())
        }
    }
}

impl VectorIndex for BinaryIndex {
    fn spec(&self) -> &IndexSpec {
        &self.spec
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn search_bits(
        &self,
        query: &[u8],
        k: usize,
        knobs: SearchKnobs,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if query.len() != self.code_size {
            return Err(IndexError::InvalidParameter(format!(
                "expected {} bits, not {}",
                self.spec.dim,
                query.len() * 8
            )));
        }
        if k == 0 || self.rows == 0 {
            return Ok(vec![]);
        }
        let jaccard = self.spec.metric == Metric::Jaccard;
        let found = match self.ivf() {
            Some(ivf) => self.search_ivf(ivf, query, k, knobs.nprobe, jaccard)?,
            None if jaccard => {
                return Err(IndexError::WrongType(
                    "bin_flat answers Jaccard searches by a scan of every row".into(),
                ));
            }
            None => {
                let k = k.min(self.rows);
                let mut dis = vec![0i32; k];
                let mut labels = vec![-1i64; k];
                // SAFETY: the query has `code_size` bytes; outputs hold k.
                check(unsafe {
                    faiss_sys::faiss_IndexBinary_search(
                        self.index,
                        1,
                        query.as_ptr(),
                        k as i64,
                        dis.as_mut_ptr(),
                        labels.as_mut_ptr(),
                    )
                })?;
                labels.into_iter().zip(dis).collect()
            }
        };
        Ok(found
            .into_iter()
            .filter(|(label, _)| *label >= 0)
            .map(|(label, d)| (label as u64, d as f32))
            .collect())
    }

    fn filters_in_search(&self) -> bool {
        false
    }

    fn serialize(&self) -> Result<Vec<u8>, IndexError> {
        let tmp = tempfile_path()?;
        let path = std::ffi::CString::new(tmp.to_string_lossy().as_bytes().to_vec())
            .map_err(|e| IndexError::Faiss(e.to_string()))?;
        // SAFETY: faiss writes the index to the file.
        let code = unsafe { faiss_sys::faiss_write_index_binary_fname(self.index, path.as_ptr()) };
        let bytes = check(code).and_then(|_| Ok(std::fs::read(&tmp)?));
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    fn memory_size(&self) -> usize {
        self.rows * self.code_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bits;
    use std::collections::BTreeMap;

    /// `n` bit strings of `bits` bits around `clusters` centres: each bit of
    /// the centre flipped with probability 1/10.
    fn clustered(n: usize, nbits: usize, clusters: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let width = bytes_for(nbits);
        let centres: Vec<u8> = (0..clusters * width).map(|_| next() as u8).collect();
        let mut out = Vec::with_capacity(n * width);
        for i in 0..n {
            let c = i % clusters;
            for j in 0..width {
                let mut byte = centres[c * width + j];
                for b in 0..8 {
                    if next() % 10 == 0 {
                        byte ^= 1 << b;
                    }
                }
                out.push(byte);
            }
        }
        out
    }

    fn recall(method: &str, metric: Metric, nprobe: usize) -> f64 {
        let (n, nbits, k) = (4000, 256, 10);
        let width = bytes_for(nbits);
        let all = clustered(n + 50, nbits, 20, 11);
        let (data, queries) = all.split_at(n * width);
        let options: BTreeMap<String, String> = if method == "bin_ivf_flat" {
            [("lists".to_string(), "32".to_string())].into()
        } else {
            BTreeMap::new()
        };
        let spec = IndexSpec::parse(method, metric, nbits, &options).unwrap();
        let index = build(&spec, data).unwrap();
        let knobs = SearchKnobs {
            ef: 40,
            nprobe,
            refine: 0,
        };
        let mut hits = 0;
        for q in queries.chunks(width) {
            let mut truth: Vec<(f64, u64)> = data
                .chunks(width)
                .enumerate()
                .map(|(i, v)| (bits::distance(metric, q, v), i as u64))
                .collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0));
            let kth = truth[k - 1].0;
            // As the executor does: re-score the candidates exactly.
            let mut got: Vec<(f64, u64)> = index
                .search_bits(q, k, knobs)
                .unwrap()
                .into_iter()
                .map(|(r, _)| {
                    let v = &data[r as usize * width..(r as usize + 1) * width];
                    (bits::distance(metric, q, v), r)
                })
                .collect();
            got.sort_by(|a, b| a.0.total_cmp(&b.0));
            got.truncate(k);
            // Ties at the k-th distance count as hits.
            hits += got.iter().filter(|(d, _)| *d <= kth).count();
        }
        hits as f64 / (50 * k) as f64
    }

    #[test]
    fn binary_recall() {
        assert_eq!(recall("bin_flat", Metric::Hamming, 1), 1.0);
        let r = recall("bin_ivf_flat", Metric::Hamming, 4);
        assert!(r >= 0.9, "bin_ivf_flat hamming: {r}");
        let r = recall("bin_ivf_flat", Metric::Jaccard, 4);
        assert!(r >= 0.9, "bin_ivf_flat jaccard: {r}");
        // pgvector's spelling.
        let spec = IndexSpec::parse("ivfflat", Metric::Hamming, 64, &BTreeMap::new()).unwrap();
        assert_eq!(spec.method, Method::BinIvfFlat { lists: 100 });
        assert!(IndexSpec::parse("hnsw", Metric::Jaccard, 64, &BTreeMap::new()).is_err());
        assert!(IndexSpec::parse("bin_flat", Metric::L2, 64, &BTreeMap::new()).is_err());
    }

    #[test]
    fn serialized_binary_index_answers_the_same() {
        let data = clustered(2000, 100, 10, 3);
        let options = [("lists".to_string(), "16".to_string())].into();
        let spec = IndexSpec::parse("bin_ivf_flat", Metric::Hamming, 100, &options).unwrap();
        let index = build(&spec, &data).unwrap();
        let back = deserialize(&spec, &index.serialize().unwrap()).unwrap();
        let q = &data[..bytes_for(100)];
        let knobs = SearchKnobs {
            ef: 40,
            nprobe: 4,
            refine: 0,
        };
        assert_eq!(
            index.search_bits(q, 5, knobs).unwrap(),
            back.search_bits(q, 5, knobs).unwrap()
        );
        assert_eq!(back.len(), 2000);
        assert!(deserialize(&spec, b"garbage").is_err());
    }
}
