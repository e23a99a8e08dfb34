//! ANN indexes against the real server: recall against exact search (with
//! and without filters, after deletes), filtered searches that never come
//! back short, EXPLAIN, and index files loaded (not rebuilt) on restart.

mod common;

use common::Server;
use tokio_postgres::SimpleQueryMessage;

const DIM: usize = 64;
const ROWS: usize = 20_000;
const K: usize = 10;

/// Deterministic clustered vectors: 40 centres, each cluster spread along
/// 6 directions of its own plus small noise (the low intrinsic dimension
/// of real embeddings). Row `i` has `cat = i % 100`.
fn dataset(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let clusters = 40;
    let centres: Vec<f32> = (0..clusters * DIM).map(|_| next() * 10.0).collect();
    let axes: Vec<f32> = (0..clusters * 6 * DIM).map(|_| next()).collect();
    (0..n)
        .map(|i| {
            let c = i % clusters;
            let w: Vec<f32> = (0..6).map(|_| next() * 6.0).collect();
            (0..DIM)
                .map(|j| {
                    let along: f32 = (0..6).map(|a| w[a] * axes[(c * 6 + a) * DIM + j]).sum();
                    centres[c * DIM + j] + along + next() * 0.2
                })
                .collect()
        })
        .collect()
}

fn text(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(","))
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    1.0 - dot / (na * nb)
}

/// Exact top-k ids among rows `keep` accepts.
fn truth(
    data: &[Vec<f32>],
    q: &[f32],
    dist: fn(&[f32], &[f32]) -> f32,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<i64> {
    let mut all: Vec<(f32, i64)> = data
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| (dist(q, v), i as i64))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().take(K).map(|x| x.1).collect()
}

async fn ids(c: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .collect()
}

async fn text_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// `EXPLAIN [ANALYZE] SELECT id FROM items ORDER BY v <-> q LIMIT 10`, as
/// one text.
async fn explain_knn(c: &tokio_postgres::Client, analyze: bool, q: &[f32]) -> String {
    let sql = format!(
        "EXPLAIN {}SELECT id FROM items ORDER BY v <-> '{}' LIMIT 10",
        if analyze { "ANALYZE " } else { "" },
        text(q)
    );
    text_rows(c, &sql).await.join("\n")
}

async fn load(c: &tokio_postgres::Client, data: &[Vec<f32>]) {
    use futures::SinkExt;
    c.simple_query("CREATE COLLECTION items (id BIGINT PRIMARY KEY, cat INT, v VECTOR(64))")
        .await
        .unwrap();
    let sink = c
        .copy_in("COPY items (id, cat, v) FROM STDIN")
        .await
        .unwrap();
    let mut sink = Box::pin(sink);
    let mut buf = String::new();
    for (i, v) in data.iter().enumerate() {
        buf.push_str(&format!("{i}\t{}\t{}\n", i % 100, text(v)));
        if buf.len() > 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                .await
                .unwrap();
        }
    }
    sink.send(bytes::Bytes::from(buf)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    c.simple_query("FLUSH items").await.unwrap();
}

/// Mean recall@10 of `sql_for(query)` against the exact answer.
async fn recall(
    c: &tokio_postgres::Client,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    dist: fn(&[f32], &[f32]) -> f32,
    keep: &dyn Fn(usize) -> bool,
    sql_for: &dyn Fn(&str) -> String,
) -> f64 {
    let mut hits = 0;
    let mut expected = 0;
    for q in queries {
        let want = truth(data, q, dist, keep);
        let got = ids(c, &sql_for(&text(q))).await;
        assert_eq!(got.len(), want.len(), "a search came back short");
        assert!(
            got.iter().all(|i| keep(*i as usize)),
            "a filtered-out row came back"
        );
        hits += got.iter().filter(|i| want.contains(i)).count();
        expected += want.len();
    }
    hits as f64 / expected.max(1) as f64
}

fn l2_distance(a: &[f32], b: &[f32]) -> f32 {
    l2(a, b).sqrt()
}

/// Range searches `SEARCH ... METRIC metric WITH (radius, range_filter)`:
/// per query the rows between the 10th and the 30th neighbour's distance.
/// Returns the fraction of those rows found; every row returned must be in
/// the range.
async fn range_recall(
    c: &tokio_postgres::Client,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    dist: fn(&[f32], &[f32]) -> f32,
    metric: &str,
    filter: &str,
    keep: &dyn Fn(usize) -> bool,
) -> f64 {
    let (mut found, mut expected) = (0, 0);
    for q in queries.iter().take(20) {
        let mut d: Vec<(f32, i64)> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(i, v)| (dist(q, v), i as i64))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (lower, upper) = (d[9].0, d[29].0);
        // The server sums in another order: leave room for rounding at the
        // two boundary rows.
        let (low_q, high_q) = (lower - lower.abs() * 1e-4, upper + upper.abs() * 1e-4);
        let want: Vec<i64> = d
            .iter()
            .filter(|(x, _)| *x >= lower && *x <= upper)
            .map(|x| x.1)
            .collect();
        let got = ids(
            c,
            &format!(
                "SEARCH items NEAREST v TO '{}' METRIC {metric} {filter} WITH (radius = {high_q}, range_filter = {low_q}) LIMIT 1000 RETURN id",
                text(q)
            ),
        )
        .await;
        for i in &got {
            let x = dist(q, &data[*i as usize]);
            assert!(
                keep(*i as usize) && x >= low_q - 1e-5 && x <= high_q + 1e-5,
                "row {i} at {x} is outside [{lower}, {upper}]"
            );
        }
        found += got.iter().filter(|i| want.contains(i)).count();
        expected += want.len();
    }
    found as f64 / expected.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_and_ivf_recall_with_filters_and_deletes() {
    let server = Server::start();
    let c = server.connect("default").await;
    let all = dataset(ROWS + 50, 11);
    let (data, queries) = all.split_at(ROWS);
    load(&c, data).await;
    c.simple_query(
        "CREATE INDEX items_hnsw ON items USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64, wait = true)",
    )
    .await
    .unwrap();
    let show = text_rows(&c, "SHOW INDEXES FROM items").await;
    assert!(
        show[0].starts_with(
            "items_hnsw|v|hnsw|m=16, ef_construction=64, keep_pruned=false|vector_l2_ops|20000|20000|ready|"
        ),
        "{show:?}"
    );
    let plan = explain_knn(&c, false, &queries[0]).await;
    assert!(plan.contains("index=items_hnsw (hnsw"), "{plan}");
    c.simple_query("SET hnsw.ef_search = 64").await.unwrap();
    let knn = |extra: &'static str| {
        move |q: &str| format!("SELECT id FROM items {extra} ORDER BY v <-> '{q}' LIMIT 10")
    };
    let analyzed = explain_knn(&c, true, &queries[0]).await;
    assert!(
        analyzed.contains(" flushed index: 20000 rows, 20000 passing, 10 scored, "),
        "{analyzed}"
    );
    let r = recall(&c, data, queries, l2, &|_| true, &knn("")).await;
    eprintln!("hnsw recall@10 (ef=64, 20k x 64): {r:.3}");
    assert!(r >= 0.95, "hnsw recall {r}");
    for (pct, keep) in [(1usize, 1usize), (10, 10), (50, 50)] {
        let sql = match pct {
            1 => knn("WHERE cat < 1"),
            10 => knn("WHERE cat < 10"),
            _ => knn("WHERE cat < 50"),
        };
        let r = recall(&c, data, queries, l2, &move |i| i % 100 < keep, &sql).await;
        eprintln!("hnsw recall@10 with {pct}% of rows passing the filter: {r:.3}");
        assert!(r >= 0.95, "filtered ({pct}%) recall {r}");
    }
    // Range search through the index: every row between two distances.
    let plan = text_rows(
        &c,
        &format!(
            "EXPLAIN SEARCH items NEAREST v TO '{}' WITH (radius = 9, range_filter = 2) LIMIT 1000",
            text(&queries[0])
        ),
    )
    .await;
    assert!(
        plan.join("\n")
            .contains("range=distance >= 2 AND distance <= 9 (index range search)"),
        "{plan:?}"
    );
    let r = range_recall(&c, data, queries, l2_distance, "l2", "", &|_| true).await;
    eprintln!("hnsw range search, rows between the 10th and 30th neighbour: {r:.3} found");
    assert!(r >= 0.95, "hnsw range recall {r}");
    // A filtered range search: rows failing the filter never come back.
    let r = range_recall(
        &c,
        data,
        queries,
        l2_distance,
        "l2",
        "WHERE cat < 50",
        &|i| i % 100 < 50,
    )
    .await;
    eprintln!("hnsw range search with 50% passing the filter: {r:.3} found");
    assert!(r >= 0.95, "filtered hnsw range recall {r}");
    let filtered = ids(
        &c,
        &format!(
            "SEARCH items NEAREST v TO '{}' WHERE cat < 50 WITH (radius = 1000) LIMIT 100 RETURN id, cat",
            text(&queries[0])
        ),
    )
    .await;
    assert_eq!(filtered.len(), 100);
    assert!(filtered.iter().all(|i| i % 100 < 50));
    // A filter that matches exactly k rows: all k come back.
    let exact_k = ids(
        &c,
        &format!(
            "SELECT id FROM items WHERE id % 2000 = 7 ORDER BY v <-> '{}' LIMIT 10",
            text(&queries[1])
        ),
    )
    .await;
    assert_eq!(exact_k.len(), 10);
    // ... and when the filter passes many rows the index never ranks first
    // (the search widens rather than return fewer than k).
    let far = ids(
        &c,
        &format!(
            "SELECT id FROM items WHERE cat = 3 OR cat = 77 ORDER BY v <-> '{}' LIMIT 50",
            text(&queries[2])
        ),
    )
    .await;
    assert_eq!(far.len(), 50);
    // After deletes: deleted rows never come back, recall holds.
    c.simple_query("DELETE FROM items WHERE id % 10 = 3")
        .await
        .unwrap();
    let r = recall(&c, data, queries, l2, &|i| i % 10 != 3, &knn("")).await;
    eprintln!("hnsw recall@10 after deleting 10%: {r:.3}");
    assert!(r >= 0.95, "recall after deletes {r}");
    // A cosine IVF index for `<=>`; the L2 index does not serve it.
    c.simple_query("CREATE INDEX items_ivf ON items USING ivf_flat (v vector_cosine_ops) WITH (lists = 50, wait = true)")
        .await
        .unwrap();
    c.simple_query("SET ivfflat.probes = 10").await.unwrap();
    let cos = |q: &str| format!("SELECT id FROM items ORDER BY v <=> '{q}' LIMIT 10");
    let r = recall(&c, data, queries, cosine, &|i| i % 10 != 3, &cos).await;
    eprintln!("ivf_flat (lists=50, probes=10) cosine recall@10: {r:.3}");
    assert!(r >= 0.9, "ivf recall {r}");
    let r = range_recall(&c, data, queries, cosine, "cosine", "", &|i| i % 10 != 3).await;
    eprintln!("ivf_flat cosine range search (faiss range_search): {r:.3} found");
    assert!(r >= 0.9, "ivf range recall {r}");
    let plan = text_rows(
        &c,
        &format!(
            "EXPLAIN SELECT id FROM items ORDER BY v <#> '{}' LIMIT 10",
            text(&queries[0])
        ),
    )
    .await;
    assert!(plan.join("\n").contains("strategy=exact"), "{plan:?}");
    // Rows inserted after the index are found at once (growing segment,
    // exact), and indexed once sealed.
    c.simple_query(&format!(
        "INSERT INTO items VALUES (999999, 5, '{}')",
        text(&queries[3])
    ))
    .await
    .unwrap();
    assert_eq!(ids(&c, &knn("")(&text(&queries[3]))).await[0], 999999);
}

/// The quantised indexes (`hnsw_sq`, Milvus's HNSW_SQ; `ivf_rabitq`,
/// Milvus's IVF_RABITQ) rank `refine_k` × k candidates again by their
/// exact distances from the stored rows: recall against exact search,
/// filtered and unfiltered, exact distances in the answer, and the index
/// files read back after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantized_indexes_rerank_by_exact_distance() {
    let mut server = Server::start();
    let all = dataset(ROWS + 50, 13);
    let (data, queries) = all.split_at(ROWS);
    let c = server.connect("default").await;
    load(&c, data).await;
    drop(c);
    let knn = |extra: &'static str| {
        move |q: &str| format!("SELECT id FROM items {extra} ORDER BY v <-> '{q}' LIMIT 10")
    };
    for (name, method, with, params) in [
        (
            "items_sq",
            "hnsw_sq",
            "m = 16, ef_construction = 64, sq_type = sq8",
            "m=16, ef_construction=64, sq_type=sq8",
        ),
        ("items_rbq", "ivf_rabitq", "lists = 50", "lists=50"),
    ] {
        let c = server.connect("default").await;
        c.simple_query("SET hnsw.ef_search = 64; SET ivfflat.probes = 10")
            .await
            .unwrap();
        c.simple_query(&format!(
            "CREATE INDEX {name} ON items USING {method} (v vector_l2_ops) WITH ({with}, wait = true)"
        ))
        .await
        .unwrap();
        let show = text_rows(&c, "SHOW INDEXES FROM items").await;
        assert!(
            show[0].starts_with(&format!(
                "{name}|v|{method}|{params}|vector_l2_ops|20000|20000|ready|"
            )),
            "{show:?}"
        );
        let plan = explain_knn(&c, false, &queries[0]).await;
        assert!(
            plan.contains(&format!("index={name} ({method}"))
                && plan.contains("candidates ranked by exact distance"),
            "{plan}"
        );
        let r = recall(&c, data, queries, l2, &|_| true, &knn("")).await;
        eprintln!("{method} recall@10 (20k x 64): {r:.3}");
        assert!(r >= 0.95, "{method} recall {r}");
        for (pct, sql) in [(10, knn("WHERE cat < 10")), (50, knn("WHERE cat < 50"))] {
            let r = recall(&c, data, queries, l2, &move |i| i % 100 < pct, &sql).await;
            eprintln!("{method} recall@10 with {pct}% of rows passing the filter: {r:.3}");
            assert!(r >= 0.95, "{method} filtered ({pct}%) recall {r}");
        }
        // The distances are the rows' own, not the codes' estimates.
        let q = &queries[4];
        let rows = text_rows(
            &c,
            &format!(
                "SELECT id, v <-> '{0}' FROM items ORDER BY v <-> '{0}' LIMIT 3",
                text(q)
            ),
        )
        .await;
        for row in rows {
            let (id, d) = row.split_once('|').unwrap();
            let want = l2_distance(q, &data[id.parse::<usize>().unwrap()]);
            let got: f32 = d.parse().unwrap();
            assert!((got - want).abs() <= 1e-4 * want.max(1.0), "{row}: {want}");
        }
        // Without re-ranking (refine_k = 1) the codes alone rank.
        let sql = |q: &str| {
            format!("SEARCH items NEAREST v TO '{q}' WITH (refine_k = 1) LIMIT 10 RETURN id")
        };
        let alone = recall(&c, data, queries, l2, &|_| true, &sql).await;
        eprintln!("{method} recall@10 with refine_k = 1: {alone:.3}");
        c.simple_query("SET quiver.refine_k = 1").await.unwrap();
        let set = recall(&c, data, queries, l2, &|_| true, &knn("")).await;
        assert_eq!(set, alone, "SET quiver.refine_k and WITH (refine_k) differ");
        c.simple_query("RESET quiver.refine_k").await.unwrap();
        // The index file is read back after a crash, not rebuilt.
        let before = ids(&c, &knn("")(&text(&queries[5]))).await;
        drop(c);
        server.kill_and_restart();
        let c = server.connect("default").await;
        c.simple_query("LOAD COLLECTION items").await.unwrap();
        wait_ready(&c).await;
        assert!(server.logs_soon("index loaded"), "{method}: not loaded");
        c.simple_query("SET hnsw.ef_search = 64; SET ivfflat.probes = 10")
            .await
            .unwrap();
        assert_eq!(ids(&c, &knn("")(&text(&queries[5]))).await, before);
        c.simple_query(&format!("DROP INDEX {name}")).await.unwrap();
    }
}

fn l1(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
}

/// pgvector's `vector_l1_ops`: an HNSW index ordered by L1 distance (`<+>`),
/// filtered and not; IVF refuses the class as pgvector does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_distance_through_hnsw() {
    let server = Server::start();
    let all = dataset(ROWS + 50, 17);
    let (data, queries) = all.split_at(ROWS);
    let c = server.connect("default").await;
    load(&c, data).await;
    c.simple_query(
        "CREATE INDEX items_l1 ON items USING hnsw (v vector_l1_ops) WITH (m = 16, ef_construction = 64, wait = true)",
    )
    .await
    .unwrap();
    c.simple_query("SET hnsw.ef_search = 64").await.unwrap();
    let plan = text_rows(
        &c,
        &format!(
            "EXPLAIN SELECT id FROM items ORDER BY v <+> '{}' LIMIT 10",
            text(&queries[0])
        ),
    )
    .await
    .join("\n");
    assert!(
        plan.contains("metric=l1, k=10, index=items_l1 (hnsw"),
        "{plan}"
    );
    let knn = |extra: &'static str| {
        move |q: &str| format!("SELECT id FROM items {extra} ORDER BY v <+> '{q}' LIMIT 10")
    };
    let r = recall(&c, data, queries, l1, &|_| true, &knn("")).await;
    eprintln!("hnsw vector_l1_ops recall@10: {r:.3}");
    assert!(r >= 0.95, "L1 recall {r}");
    let r = recall(
        &c,
        data,
        queries,
        l1,
        &|i| i % 100 < 50,
        &knn("WHERE cat < 50"),
    )
    .await;
    eprintln!("hnsw vector_l1_ops recall@10, half the rows passing: {r:.3}");
    assert!(r >= 0.95, "filtered L1 recall {r}");
    let err = c
        .simple_query("CREATE INDEX bad ON items USING ivfflat (v vector_l1_ops)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_files_are_loaded_on_restart_and_rebuilt_when_damaged() {
    let mut server = Server::start();
    let all = dataset(5050, 5);
    let (data, queries) = all.split_at(5000);
    let c = server.connect("default").await;
    load(&c, data).await;
    c.simple_query("CREATE INDEX items_v ON items USING hnsw (v) WITH (wait = true)")
        .await
        .unwrap();
    let query = |q: &[f32]| format!("SELECT id FROM items ORDER BY v <-> '{}' LIMIT 10", text(q));
    let mut before = Vec::new();
    for q in queries.iter().take(10) {
        before.push(ids(&c, &query(q)).await);
    }
    drop(c);
    let files: Vec<_> = glob_faiss(&server.dir);
    assert_eq!(
        files.len(),
        1,
        "one index file next to the segment: {files:?}"
    );
    assert!(files[0].to_string_lossy().contains("/collections/"));
    for crash in [false, true] {
        if crash {
            server.kill_and_restart();
        } else {
            server.stop_and_restart();
        }
        let c = server.connect("default").await;
        c.simple_query("LOAD COLLECTION items").await.unwrap();
        wait_ready(&c).await;
        assert!(
            server.logs_soon("index loaded"),
            "index not loaded after restart"
        );
        assert!(!server.logged("index built"), "index rebuilt after restart");
        for (q, want) in queries.iter().take(10).zip(&before) {
            assert_eq!(&ids(&c, &query(q)).await, want);
        }
    }
    // A damaged file is rebuilt, and said so.
    std::fs::write(&files[0], b"not an index").unwrap();
    server.stop_and_restart();
    let c = server.connect("default").await;
    wait_ready(&c).await;
    assert!(server.logs_soon("is unusable"));
    assert!(server.logs_soon("index built"));
    for (q, want) in queries.iter().take(10).zip(&before) {
        let got = ids(&c, &query(q)).await;
        let same = got.iter().filter(|i| want.contains(i)).count();
        assert!(same >= 9, "{got:?} vs {want:?}");
    }
}

fn glob_faiss(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "faiss") {
                out.push(p);
            }
        }
    }
    out
}

async fn wait_ready(c: &tokio_postgres::Client) {
    for _ in 0..300 {
        let rows = text_rows(c, "SHOW INDEXES FROM items").await;
        if rows.iter().all(|r| r.contains("|ready|")) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("index not ready");
}

const BITS: usize = 256;

/// Deterministic clustered bit strings: 100 centres, each bit flipped with
/// probability 1/5. Row `i` has `cat = i % 100`.
fn bit_dataset(n: usize, seed: u64) -> Vec<Vec<bool>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let centres: Vec<Vec<bool>> = (0..100)
        .map(|_| (0..BITS).map(|_| next() % 2 == 0).collect())
        .collect();
    (0..n)
        .map(|i| {
            centres[(i / 7) % 100]
                .iter()
                .map(|b| b ^ (next() % 5 == 0))
                .collect()
        })
        .collect()
}

fn bit_text(v: &[bool]) -> String {
    v.iter().map(|b| if *b { '1' } else { '0' }).collect()
}

fn hamming(a: &[bool], b: &[bool]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64
}

fn jaccard(a: &[bool], b: &[bool]) -> f64 {
    let and = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let or = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if and == 0 {
        1.0
    } else {
        1.0 - and as f64 / or as f64
    }
}

/// Recall@10 of `op` searches over bit strings, counting ties at the 10th
/// distance as hits; every search must return k rows that pass `keep`, each
/// with its exact distance.
async fn bit_recall(
    c: &tokio_postgres::Client,
    data: &[Vec<bool>],
    queries: &[Vec<bool>],
    op: &str,
    dist: fn(&[bool], &[bool]) -> f64,
    filter: (&str, &dyn Fn(usize) -> bool),
) -> f64 {
    let (where_clause, keep) = filter;
    let mut hits = 0;
    let mut expected = 0;
    for q in queries {
        let mut all: Vec<f64> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, v)| dist(q, v))
            .collect();
        all.sort_by(f64::total_cmp);
        let want = all.len().min(K);
        let kth = all.get(want.saturating_sub(1)).copied().unwrap_or(0.0);
        let q = bit_text(q);
        let sql = format!(
            "SELECT id, b {op} '{q}' FROM codes {where_clause} ORDER BY b {op} '{q}' LIMIT {K}"
        );
        let rows = text_rows(c, &sql).await;
        assert_eq!(rows.len(), want, "a search came back short: {sql}");
        for row in rows {
            let (id, d) = row.split_once('|').unwrap();
            let id: usize = id.parse().unwrap();
            let d: f64 = d.parse().unwrap();
            assert!(keep(id), "a filtered-out row came back");
            let exact = dist(&data[id], &bit_text_to_bools(&q));
            assert!((d - exact).abs() < 1e-9, "row {id}: {d} vs {exact}");
            if d <= kth + 1e-12 {
                hits += 1;
            }
        }
        expected += want;
    }
    hits as f64 / expected.max(1) as f64
}

fn bit_text_to_bools(s: &str) -> Vec<bool> {
    s.chars().map(|c| c == '1').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_indexes_search_by_hamming_and_jaccard() {
    use futures::SinkExt;
    let server = Server::start();
    let c = server.connect("default").await;
    let all = bit_dataset(ROWS + 30, 3);
    let (data, queries) = all.split_at(ROWS);
    c.simple_query("CREATE COLLECTION codes (id BIGINT PRIMARY KEY, cat INT, b BIT(256))")
        .await
        .unwrap();
    let sink = c
        .copy_in("COPY codes (id, cat, b) FROM STDIN")
        .await
        .unwrap();
    let mut sink = Box::pin(sink);
    let mut buf = String::new();
    for (i, v) in data.iter().enumerate() {
        buf.push_str(&format!("{i}\t{}\t{}\n", i % 100, bit_text(v)));
    }
    sink.send(bytes::Bytes::from(buf)).await.unwrap();
    sink.as_mut().finish().await.unwrap();
    c.simple_query("FLUSH codes").await.unwrap();
    c.simple_query(
        "CREATE INDEX codes_hamming ON codes USING bin_ivf_flat (b bit_hamming_ops) WITH (lists = 64, wait = true)",
    )
    .await
    .unwrap();
    // pgvector's spelling: ivfflat with a bit operator class.
    c.simple_query(
        "CREATE INDEX codes_jaccard ON codes USING ivfflat (b bit_jaccard_ops) WITH (lists = 64, wait = true)",
    )
    .await
    .unwrap();
    let show = text_rows(&c, "SHOW INDEXES FROM codes").await;
    assert!(
        show[0].starts_with(
            "codes_hamming|b|bin_ivf_flat|lists=64|bit_hamming_ops|20000|20000|ready|"
        ),
        "{show:?}"
    );
    assert!(
        show[1].starts_with(
            "codes_jaccard|b|bin_ivf_flat|lists=64|bit_jaccard_ops|20000|20000|ready|"
        ),
        "{show:?}"
    );
    let q0 = bit_text(&queries[0]);
    let plan = text_rows(
        &c,
        &format!("EXPLAIN ANALYZE SELECT id FROM codes ORDER BY b <~> '{q0}' LIMIT 10"),
    )
    .await
    .join("\n");
    assert!(plan.contains("index=codes_hamming (bin_ivf_flat"), "{plan}");
    assert!(plan.contains(" flushed index: 20000 rows"), "{plan}");
    c.simple_query("SET ivfflat.probes = 8").await.unwrap();
    let everything: (&str, &dyn Fn(usize) -> bool) = ("", &|_| true);
    for (op, dist, name) in [
        ("<~>", hamming as fn(&[bool], &[bool]) -> f64, "hamming"),
        ("<%>", jaccard, "jaccard"),
    ] {
        let r = bit_recall(&c, data, queries, op, dist, everything).await;
        eprintln!("bin_ivf_flat {name} recall@10 (probes=8, 20k x 256 bits): {r:.3}");
        assert!(r >= 0.9, "{name} recall {r}");
        for (pct, clause) in [
            (1usize, "WHERE cat < 1"),
            (10, "WHERE cat < 10"),
            (50, "WHERE cat < 50"),
        ] {
            let keep = move |i: usize| i % 100 < pct;
            let r = bit_recall(&c, data, &queries[..10], op, dist, (clause, &keep)).await;
            eprintln!("  {name} with {pct}% passing: {r:.3}");
            assert!(r >= 0.9, "{name} recall {r} with {pct}% passing");
        }
    }
    // A filter matching exactly k rows returns all k.
    let exactly_k = text_rows(
        &c,
        &format!("SELECT id FROM codes WHERE id % 2000 = 7 ORDER BY b <~> '{q0}' LIMIT 10"),
    )
    .await;
    assert_eq!(exactly_k.len(), 10);
    // A prepared search with the bit string as a text parameter.
    let stmt = c
        .prepare("SELECT id FROM codes ORDER BY b <~> $1 LIMIT 10")
        .await
        .unwrap();
    let rows = c.query(&stmt, &[&q0]).await.unwrap();
    assert_eq!(rows.len(), 10);
    // bin_flat is exact for Hamming.
    c.simple_query("DROP INDEX codes_hamming").await.unwrap();
    c.simple_query("CREATE INDEX codes_flat ON codes USING bin_flat (b) WITH (wait = true)")
        .await
        .unwrap();
    let r = bit_recall(&c, data, &queries[..10], "<~>", hamming, everything).await;
    assert_eq!(r, 1.0, "bin_flat recall");
    let plan = text_rows(
        &c,
        &format!("EXPLAIN SELECT id FROM codes ORDER BY b <~> '{q0}' LIMIT 10"),
    )
    .await
    .join("\n");
    assert!(plan.contains("index=codes_flat (bin_flat"), "{plan}");
}
