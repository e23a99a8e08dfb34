//! Recall, filtering, range search and serialisation of every index method,
//! and quiver's own HNSW loop against faiss's.

use super::*;
use crate::distance::distance;

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

/// 4,000 clustered rows of 32 dimensions, 50 held-out queries from the
/// same distribution, an index over the rows, and a filter keeping `keep`
/// rows in 100 (as a bitmap too).
struct Fixture {
    data: Vec<f32>,
    queries: Vec<f32>,
    spec: IndexSpec,
    index: FaissIndex,
    keep: usize,
    bitmap: Vec<u8>,
}

const FIXTURE_ROWS: usize = 4000;
const FIXTURE_DIM: usize = 32;

impl Fixture {
    fn new(method: &str, options: &[(&str, &str)], metric: Metric, keep: usize) -> Fixture {
        let (n, dim) = (FIXTURE_ROWS, FIXTURE_DIM);
        let mut data = clustered(n + 50, dim, 20, 7);
        let queries = data.split_off(n * dim);
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = IndexSpec::parse(method, metric, dim, &options).unwrap();
        let index = build(&spec, &data).unwrap();
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for i in (0..n).filter(|i| i % 100 < keep) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        Fixture {
            data,
            queries,
            spec,
            index,
            keep,
            bitmap,
        }
    }

    fn allowed(&self, row: usize) -> bool {
        row % 100 < self.keep
    }
}

fn recall(
    method: &str,
    options: &[(&str, &str)],
    metric: Metric,
    knobs: SearchKnobs,
    keep: usize,
) -> f64 {
    let (dim, k) = (FIXTURE_DIM, 10);
    let f = Fixture::new(method, options, metric, keep);
    let (data, spec, index, bitmap) = (&f.data, &f.spec, &f.index, &f.bitmap);
    let allowed = |i: usize| f.allowed(i);
    let mut hits = 0;
    for q in f.queries.chunks(dim) {
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
        let lossy = !spec.method.exact_distances();
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
    let knobs = SearchKnobs {
        ef: 64,
        nprobe: 8,
        refine: 0,
    };
    // L1 (pgvector's vector_l1_ops): flat and HNSW, through faiss's
    // generic distance computer.
    assert_eq!(recall("flat", &[], Metric::L1, knobs, 100), 1.0);
    let r = recall("hnsw", &[("m", "16")], Metric::L1, knobs, 100);
    assert!(r >= 0.95, "hnsw L1: {r}");
    let r = recall("hnsw", &[("m", "16")], Metric::L1, knobs, 50);
    assert!(r >= 0.9, "hnsw L1 with half the rows kept: {r}");
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

/// Recall@10 of a quantised index as the executor searches it: `refine`
/// × 10 candidates, ranked again by their exact distances. Returns it with
/// the recall of the index's own first 10 (no re-ranking).
fn reranked_recall(
    method: &str,
    options: &[(&str, &str)],
    metric: Metric,
    knobs: SearchKnobs,
    keep: usize,
) -> (f64, f64) {
    let (dim, k) = (FIXTURE_DIM, 10);
    let f = Fixture::new(method, options, metric, keep);
    let (data, spec, index, bitmap) = (&f.data, &f.spec, &f.index, &f.bitmap);
    assert!(!spec.method.exact_distances(), "{method} is not quantised");
    let allowed = |i: usize| f.allowed(i);
    let fetch = k * spec.method.refine(knobs);
    let (mut hits, mut raw_hits) = (0, 0);
    for q in f.queries.chunks(dim) {
        let truth = exact(data, dim, metric, q, k, &allowed);
        let selector = (keep < 100 && !spec.method.is_hnsw()).then_some(&bitmap[..]);
        let mut got = index.search(q, fetch.max(k), knobs, selector).unwrap();
        // HNSW fetches unfiltered candidates; the executor filters them.
        got.retain(|(r, _)| allowed(*r as usize));
        raw_hits += got
            .iter()
            .take(k)
            .filter(|(r, _)| truth.contains(r))
            .count();
        let mut ranked: Vec<(f64, u64)> = got
            .iter()
            .map(|(r, _)| {
                let v = &data[*r as usize * dim..(*r as usize + 1) * dim];
                (distance(metric, q, v), *r)
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        hits += ranked
            .iter()
            .take(k)
            .filter(|(_, r)| truth.contains(r))
            .count();
    }
    let total = (50 * k) as f64;
    (hits as f64 / total, raw_hits as f64 / total)
}

#[test]
fn quantized_indexes_reach_recall_with_reranking() {
    let knobs = SearchKnobs {
        ef: 64,
        nprobe: 8,
        refine: 0,
    };
    for metric in [Metric::L2, Metric::NegativeInnerProduct, Metric::Cosine] {
        for sq in ["sq8", "fp16", "bf16", "sq6"] {
            let options = [("m", "16"), ("ef_construction", "64"), ("sq_type", sq)];
            let (r, raw) = reranked_recall("hnsw_sq", &options, metric, knobs, 100);
            eprintln!("hnsw_sq {sq} {metric:?}: {r} (codes alone {raw})");
            assert!(
                r >= 0.95,
                "hnsw_sq {sq} {metric:?}: {r} (codes alone {raw})"
            );
        }
        let (r, raw) = reranked_recall("ivf_rabitq", &[("lists", "32")], metric, knobs, 100);
        eprintln!("ivf_rabitq {metric:?}: {r} (codes alone {raw})");
        assert!(r >= 0.95, "ivf_rabitq {metric:?}: {r} (codes alone {raw})");
    }
    // Filtered: IVF takes the bitmap as its selector; HNSW's candidates
    // are fetched unfiltered, more of them as fewer rows pass.
    // (With a tenth of the rows passing, the nearest passing ones spread
    // over more lists: 16 probes of 32, as ivf_flat would need.)
    for keep in [10, 50] {
        let probes = SearchKnobs {
            nprobe: 16,
            ..knobs
        };
        let (r, _) = reranked_recall("ivf_rabitq", &[("lists", "32")], Metric::L2, probes, keep);
        assert!(r >= 0.95, "ivf_rabitq with {keep}% kept: {r}");
    }
    // One bit per dimension ranks poorly by itself: re-ranking is what
    // lifts it.
    let (r, raw) = reranked_recall("ivf_rabitq", &[("lists", "32")], Metric::L2, knobs, 100);
    assert!(r > raw, "re-ranked {r}, codes alone {raw}");
    let no_rerank = SearchKnobs { refine: 1, ..knobs };
    let (r1, _) = reranked_recall("ivf_rabitq", &[("lists", "32")], Metric::L2, no_rerank, 100);
    assert!(r1 < r, "refine_k = 1: {r1}, default: {r}");
}

#[test]
fn quantized_index_options() {
    let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let spec = IndexSpec::parse("hnsw_sq", Metric::L2, 8, &opts(&[])).unwrap();
    assert_eq!(spec.method.name(), "hnsw_sq");
    assert_eq!(
        spec.method.params(),
        "m=16, ef_construction=64, sq_type=sq8"
    );
    assert_eq!(spec.method.factory(1000), "HNSW16,SQ8");
    let spec = IndexSpec::parse("hnsw_sq", Metric::L2, 8, &opts(&[("sq_type", "BF16")])).unwrap();
    assert_eq!(spec.method.factory(1000), "HNSW16,SQbf16");
    let err = IndexSpec::parse("hnsw_sq", Metric::L2, 8, &opts(&[("sq_type", "sq3")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sq6, sq8, fp16 or bf16"), "{err}");
    let spec = IndexSpec::parse("ivf_rabitq", Metric::L2, 8, &opts(&[("lists", "64")])).unwrap();
    assert_eq!(spec.method.factory(100_000), "IVF64,RaBitQ");
    assert_eq!(spec.method.params(), "lists=64");
    let err = IndexSpec::parse("ivf_rabitq", Metric::L2, 8, &opts(&[("m", "4")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("allowed are lists"), "{err}");
    // The catalog keeps the spec as JSON: it reads back the same.
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<IndexSpec>(&json).unwrap(), spec);
}

#[test]
fn filtered_search_keeps_to_the_selector() {
    // HNSW walks through filtered-out nodes, so at low selectivity the
    // executor searches the survivors exactly instead; here half remain.
    let r = recall(
        "hnsw",
        &[],
        Metric::L2,
        SearchKnobs {
            ef: 128,
            nprobe: 8,
            refine: 0,
        },
        50,
    );
    assert!(r >= 0.9, "hnsw with 50% kept: {r}");
    for keep in [1, 10, 50] {
        let r = recall(
            "ivf_flat",
            &[("lists", "32")],
            Metric::L2,
            SearchKnobs {
                ef: 64,
                nprobe: 32,
                refine: 0,
            },
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
            (
                "ivf_flat",
                SearchKnobs {
                    ef: 40,
                    nprobe: 16,
                    refine: 0,
                },
            ),
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
    // Flat storage, and HNSW_SQ's codes that quiver's loop decodes itself.
    let storages: [(&str, Option<&str>); 4] = [
        ("hnsw", None),
        ("hnsw_sq", Some("sq8")),
        ("hnsw_sq", Some("fp16")),
        ("hnsw_sq", Some("bf16")),
    ];
    for (metric, (method, sq)) in [Metric::L2, Metric::NegativeInnerProduct, Metric::Cosine]
        .into_iter()
        .flat_map(|m| storages.map(|s| (m, s)))
    {
        let options: BTreeMap<String, String> = sq
            .map(|t| [("sq_type".to_string(), t.to_string())].into())
            .unwrap_or_default();
        let spec = IndexSpec::parse(method, metric, dim, &options).unwrap();
        let index = build(&spec, data).unwrap();
        let (mut same, mut total) = (0, 0);
        for filter in [None, Some(&bitmap[..])] {
            let params = Params::new(false, 1, n, filter).unwrap();
            for q in queries.chunks(dim) {
                let q = index.query(q).unwrap();
                let ours = hnsw_one(&index.index.read().index, &q, k, ef, &params)
                    .unwrap()
                    .expect("an HNSW index over storage quiver's loop reads");
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
            "{method} {sq:?} {metric:?}: {same} of {total} the same"
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
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
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
    assert_eq!(metric_of_opclass("vector_l1_ops").unwrap(), Metric::L1);
    // L1 as pgvector has it: HNSW only.
    let l1 = IndexSpec::parse("ivfflat", Metric::L1, 8, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert_eq!(
        l1,
        "operator class \"vector_l1_ops\" does not exist for access method \"ivfflat\""
    );
}

/// `ivf_pq` trains 2^nbits centroids and once failed the index of every
/// segment with fewer rows (a fresh collection's first segments): such a
/// segment keeps its vectors whole, and answers exactly.
#[test]
fn ivf_pq_on_fewer_rows_than_centroids() {
    let (n, dim) = (100, 16);
    let data = clustered(n, dim, 4, 11);
    let options = [("lists", "4"), ("m", "4"), ("nbits", "8")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let spec = IndexSpec::parse("ivf_pq", Metric::L2, dim, &options).unwrap();
    let index = build(&spec, &data).unwrap();
    let knobs = SearchKnobs {
        ef: 40,
        nprobe: 4,
        refine: 0,
    };
    for (i, q) in data.chunks(dim).enumerate().take(10) {
        let got = index.search(q, 1, knobs, None).unwrap();
        assert_eq!(got.first().map(|(r, _)| *r), Some(i as u64));
    }
    let bytes = index.serialize().unwrap();
    assert_eq!(load(&spec, &bytes).unwrap().len(), n);
}

/// Recall of the filtered HNSW walk against exact search over the rows
/// `allowed` keeps, and the rows it scored per query.
fn walk_recall(allowed: &dyn Fn(usize) -> bool, ef: usize) -> (f64, f64) {
    let (n, dim, k, clusters) = (6000, 32, 10, 20);
    let all = clustered(n + 60, dim, clusters, 5);
    let (data, queries) = all.split_at(n * dim);
    let spec = IndexSpec::parse("hnsw", Metric::L2, dim, &BTreeMap::new()).unwrap();
    let index = build(&spec, data).unwrap();
    let mut bitmap = vec![0u8; n.div_ceil(8)];
    let mut passing = 0;
    for i in (0..n).filter(|i| allowed(*i)) {
        bitmap[i / 8] |= 1 << (i % 8);
        passing += 1;
    }
    let fraction = passing as f64 / n as f64;
    let knobs = SearchKnobs {
        ef,
        nprobe: 1,
        refine: 0,
    };
    let (mut hits, mut scored) = (0, 0);
    for q in queries.chunks(dim) {
        let truth = exact(data, dim, Metric::L2, q, k, allowed);
        let Filtered::Hits {
            hits: got,
            scored: s,
        } = index
            .search_filtered(q, k, knobs, &bitmap, fraction, usize::MAX)
            .unwrap()
        else {
            panic!("the walk gave up without a budget");
        };
        assert!(
            got.iter().all(|(r, _)| allowed(*r as usize)),
            "a failing row returned"
        );
        assert!(
            got.windows(2).all(|w| w[0].1 <= w[1].1),
            "not nearest first"
        );
        hits += got.iter().filter(|(r, _)| truth.contains(r)).count();
        scored += s;
    }
    let queries = queries.len() / dim;
    (
        hits as f64 / (queries * k) as f64,
        scored as f64 / queries as f64,
    )
}

#[test]
fn filtered_walk_finds_the_nearest_passing_rows() {
    // Rows passing independently of where they lie (a tenant, a date).
    for keep in [5usize, 10, 50] {
        let (r, scored) = walk_recall(&|i| i * 7 % 100 < keep, 40);
        eprintln!("filtered walk, {keep}% passing: recall {r:.3}, {scored:.0} rows scored");
        assert!(r >= 0.95, "{keep}% passing: recall {r}");
        // At 5 % (300 rows) the executor scans exactly instead.
        if keep >= 10 {
            assert!(
                scored < 6000.0 * keep as f64 / 100.0,
                "{keep}%: scored {scored}"
            );
        }
    }
    // One cluster of twenty passing (a category): queries from the other
    // clusters find its rows nearest to them.
    let (r, scored) = walk_recall(&|i| i % 20 == 3, 40);
    eprintln!("filtered walk, one cluster of 20 passing: recall {r:.3}, {scored:.0} rows scored");
    assert!(r >= 0.9, "one cluster passing: recall {r}");
}

#[test]
fn filtered_walk_gives_up_past_its_budget_and_only_hnsw_has_one() {
    let (n, dim) = (2000, 16);
    let data = clustered(n, dim, 10, 9);
    let spec = IndexSpec::parse("hnsw", Metric::L2, dim, &BTreeMap::new()).unwrap();
    let index = build(&spec, &data).unwrap();
    let bitmap: Vec<u8> = (0..n.div_ceil(8))
        .map(|i| if i % 10 == 0 { 0xff } else { 0 })
        .collect();
    let knobs = SearchKnobs {
        ef: 40,
        nprobe: 1,
        refine: 0,
    };
    let q = &data[..dim];
    assert!(matches!(
        index
            .search_filtered(q, 10, knobs, &bitmap, 0.1, 50)
            .unwrap(),
        Filtered::GaveUp { .. }
    ));
    // A bitmap too short for the index is refused, not read past its end.
    assert!(
        index
            .search_filtered(q, 10, knobs, &bitmap[..10], 0.1, 1000)
            .is_err()
    );
    let spec = IndexSpec::parse("ivf_flat", Metric::L2, dim, &BTreeMap::new()).unwrap();
    let ivf = build(&spec, &data).unwrap();
    assert_eq!(
        ivf.search_filtered(q, 10, knobs, &bitmap, 0.1, 1000)
            .unwrap(),
        Filtered::Unsupported
    );
}
