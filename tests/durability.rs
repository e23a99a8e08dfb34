//! Durability against the real server binary: kill -9 while clients write
//! (with flushes and compactions running), a torn WAL tail, restarts,
//! segment files on disk, the data-directory lock, and back-pressure.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use tokio::sync::Mutex;

/// A config file with small segments so that flush and compaction happen
/// all the time during a short test.
fn config(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiver.toml");
    // `extra` lines replace the defaults with the same key.
    let mut lines: Vec<String> = extra.lines().map(str::to_string).collect();
    for default in [
        "seal_idle_ms = 100",
        "segment_max_rows = 400",
        "compact_min_segments = 3",
    ] {
        let key = default.split(" =").next().unwrap_or_default();
        if !lines.iter().any(|l| l.starts_with(&format!("{key} "))) {
            lines.push(default.to_string());
        }
    }
    std::fs::write(&path, format!("[storage]\n{}\n", lines.join("\n"))).unwrap();
    (dir, path.display().to_string())
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<(i64, i64)> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .collect()
}

/// What clients were told: key -> value (None = deleted). Keys whose last
/// operation failed (the server died mid-way) may be in either state.
#[derive(Default)]
struct Model {
    acked: HashMap<i64, Option<i64>>,
    uncertain: HashSet<i64>,
}

/// Keys of the transactional writer of the crash loop start here (per round).
const TX_KEYS: i64 = 500_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_loses_no_acknowledged_write() {
    let (_cfg_dir, cfg) = config("");
    let mut server = Server::start_with(&["--config", &cfg]);
    let setup = server.connect("default").await;
    setup
        .batch_execute(
            "CREATE COLLECTION items (id BIGINT PRIMARY KEY, val BIGINT NOT NULL, v VECTOR(4)); \
             CREATE COLLECTION ledger (id BIGINT PRIMARY KEY, item BIGINT NOT NULL)",
        )
        .await
        .unwrap();
    drop(setup);
    let model = Arc::new(Mutex::new(Model::default()));
    let kills = 12;
    let mut acked_ops = 0usize;
    for round in 0..kills {
        let port = server.port;
        let mut workers = Vec::new();
        for w in 0..3i64 {
            let model = model.clone();
            workers.push(tokio::spawn(async move {
                let conn = format!(
                    "host=127.0.0.1 port={port} user=quiver password={} dbname=default",
                    common::PASSWORD
                );
                let Ok((client, connection)) =
                    tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
                else {
                    return 0usize;
                };
                tokio::spawn(connection);
                let base = (round as i64) * 1_000_000 + w * 100_000;
                let mut mine: Vec<i64> = Vec::new();
                let mut ops = 0;
                for i in 0..100_000i64 {
                    // insert, insert, update one of mine, delete one of mine
                    let (sql, key, after): (String, i64, Option<i64>) = match i % 4 {
                        2 if !mine.is_empty() => {
                            let k = mine[(i as usize * 7) % mine.len()];
                            (
                                format!("UPDATE items SET val = {i} WHERE id = {k}"),
                                k,
                                Some(i),
                            )
                        }
                        3 if !mine.is_empty() => {
                            let k = mine.swap_remove((i as usize * 13) % mine.len());
                            (format!("DELETE FROM items WHERE id = {k}"), k, None)
                        }
                        _ => {
                            let k = base + i;
                            mine.push(k);
                            (
                                format!("INSERT INTO items VALUES ({k}, {i}, '[{i},1,2,3]')"),
                                k,
                                Some(i),
                            )
                        }
                    };
                    model.lock().await.uncertain.insert(key);
                    match client.batch_execute(&sql).await {
                        Ok(()) => {
                            let mut m = model.lock().await;
                            m.uncertain.remove(&key);
                            m.acked.insert(key, after);
                            ops += 1;
                        }
                        Err(_) => return ops,
                    }
                }
                ops
            }));
        }
        // A fourth client writes in transactions over both collections:
        // each inserts a key into both, updates the previous one's row and
        // deletes the one before in both, and upserts; after a crash each
        // transaction is there whole (both collections) or not at all.
        let model_tx = model.clone();
        workers.push(tokio::spawn(async move {
            let conn = format!(
                "host=127.0.0.1 port={port} user=quiver password={} dbname=default",
                common::PASSWORD
            );
            let Ok((client, connection)) =
                tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
            else {
                return 0usize;
            };
            tokio::spawn(connection);
            let base = (round as i64) * 1_000_000 + TX_KEYS;
            let mut ops = 0;
            for j in 0..100_000i64 {
                let k = base + j;
                let mut sql = format!(
                    "BEGIN; INSERT INTO items VALUES ({k}, {j}, '[{j},0,0,1]'); \
                     INSERT INTO ledger VALUES ({k}, 0); \
                     INSERT INTO ledger VALUES ({k}, {j}) ON CONFLICT (id) DO UPDATE SET item = excluded.item + 1;"
                );
                let mut changes = vec![(k, Some(j))];
                if j >= 1 {
                    sql += &format!("UPDATE items SET val = {j} WHERE id = {};", k - 1);
                    changes.push((k - 1, Some(j)));
                }
                if j >= 2 && j % 3 == 0 {
                    sql += &format!(
                        "DELETE FROM items WHERE id = {0}; DELETE FROM ledger WHERE id = {0};",
                        k - 2
                    );
                    changes.push((k - 2, None));
                }
                if client.batch_execute(&sql).await.is_err() {
                    return ops;
                }
                {
                    let mut m = model_tx.lock().await;
                    for (key, _) in &changes {
                        m.uncertain.insert(*key);
                    }
                }
                if client.batch_execute("COMMIT").await.is_err() {
                    return ops;
                }
                let mut m = model_tx.lock().await;
                for (key, after) in changes {
                    m.uncertain.remove(&key);
                    m.acked.insert(key, after);
                }
                ops += 1;
            }
            ops
        }));
        // Let them write for a while (flushes and compactions run meanwhile).
        let ms = 300 + (round as u64 * 137) % 900;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        server.kill_and_restart();
        for w in workers {
            acked_ops += w.await.unwrap();
        }
        // Check every key the model knows.
        let client = server.connect("default").await;
        let dup = rows(
            &client,
            "SELECT id, count(*) FROM items GROUP BY id HAVING count(*) > 1",
        )
        .await;
        assert!(dup.is_empty(), "round {round}: duplicated rows {dup:?}");
        let present: HashMap<i64, i64> = rows(&client, "SELECT id, val FROM items")
            .await
            .into_iter()
            .collect();
        // Each transaction whole: its key in both collections or neither,
        // the upsert applied.
        let ledger: HashMap<i64, i64> = rows(&client, "SELECT id, item FROM ledger")
            .await
            .into_iter()
            .collect();
        for (k, v) in present.iter().filter(|(k, _)| *k % 1_000_000 >= TX_KEYS) {
            let j = k % 1_000_000 - TX_KEYS;
            assert_eq!(
                ledger.get(k),
                Some(&(j + 1)),
                "round {round}: transaction {k} (items val {v}) is not whole"
            );
        }
        for k in ledger.keys() {
            assert!(
                present.contains_key(k),
                "round {round}: transaction {k} is in ledger only"
            );
        }
        let mut m = model.lock().await;
        for (k, v) in &m.acked {
            if m.uncertain.contains(k) {
                continue;
            }
            assert_eq!(
                present.get(k),
                v.as_ref(),
                "round {round}: key {k} (acknowledged {v:?})"
            );
        }
        // Settle the uncertain keys to what survived.
        let uncertain: Vec<i64> = m.uncertain.drain().collect();
        for k in uncertain {
            m.acked.insert(k, present.get(&k).copied());
        }
        assert_eq!(
            present.len(),
            m.acked.values().filter(|v| v.is_some()).count(),
            "round {round}: rows nobody wrote"
        );
    }
    let client = server.connect("default").await;
    let segs = client.query("SHOW SEGMENTS FROM items", &[]).await.unwrap();
    let committed: i64 = client
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert!(committed > 10, "too few transactions to mean anything");
    eprintln!(
        "crash loop: {kills} kill -9 rounds, {acked_ops} acknowledged writes checked, {committed} transactions' rows, {} segments now",
        segs.len()
    );
    assert!(acked_ops > 100, "too few writes to mean anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_wal_tail_is_cut_and_earlier_records_survive() {
    let (_cfg_dir, cfg) = config("seal_idle_ms = 600000\n");
    let mut server = Server::start_with(&["--config", &cfg]);
    let client = server.connect("default").await;
    client
        .batch_execute("CREATE COLLECTION t (id INT PRIMARY KEY, v VECTOR(2))")
        .await
        .unwrap();
    for i in 0..10 {
        client
            .batch_execute(&format!("INSERT INTO t VALUES ({i}, '[{i},0]')"))
            .await
            .unwrap();
    }
    drop(client);
    // Kill, then garble the last record of the collection's log.
    let _ = std::process::Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(200));
    let mut logs: Vec<std::path::PathBuf> = walk(&server.dir.join("wal"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let last = logs
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .expect("a WAL file with records");
    let mut bytes = std::fs::read(last).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x5a;
    std::fs::write(last, bytes).unwrap();
    server.kill_and_restart();
    let client = server.connect("default").await;
    let ids: Vec<i32> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, (0..9).collect::<Vec<_>>());
    assert!(server.logs_soon("WAL damaged"), "the damage is reported");
    // Writes continue after the cut.
    client
        .batch_execute("INSERT INTO t VALUES (9, '[9,0]')")
        .await
        .unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_segments_survive_restart_in_the_documented_layout() {
    let (_cfg_dir, cfg) = config("seal_idle_ms = 600000\ncompact_min_segments = 100\n");
    let mut server = Server::start_with(&["--config", &cfg]);
    let client = server.connect("default").await;
    client
        .batch_execute(
            "CREATE COLLECTION docs (id BIGINT PRIMARY KEY, tag TEXT, v VECTOR(3));
             INSERT INTO docs SELECT i, 'a', '[1,2,3]'::vector(3) FROM generate_series(1, 500) AS s(i);
             FLUSH docs;
             INSERT INTO docs SELECT i, 'b', '[3,2,1]'::vector(3) FROM generate_series(501, 900) AS s(i);
             FLUSH docs;
             DELETE FROM docs WHERE id % 10 = 0;
             UPDATE docs SET tag = 'c' WHERE id <= 5;
             INSERT INTO docs VALUES (1000, 'growing', '[0,0,1]');",
        )
        .await
        .unwrap();
    let segs = client.query("SHOW SEGMENTS FROM docs", &[]).await.unwrap();
    let states: Vec<String> = segs.iter().map(|r| r.get::<_, String>(1)).collect();
    assert!(
        states.iter().filter(|s| *s == "flushed").count() >= 2,
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "growing"), "{states:?}");
    let files = walk(&server.dir);
    let rel = |p: &std::path::Path| p.strip_prefix(&server.dir).unwrap().display().to_string();
    assert!(
        files
            .iter()
            .any(|p| rel(p).starts_with("catalog/manifest-") && rel(p).ends_with(".json")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|p| rel(p).starts_with("collections/")
            && rel(p).contains("/segments/")
            && rel(p).ends_with("/data-0.parquet")),
        "{files:?}"
    );
    let check = async |client: &tokio_postgres::Client| {
        let r = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE tag = 'c'), max(id) FROM docs",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.get::<_, i64>(0), 900 - 90 + 1);
        assert_eq!(r.get::<_, i64>(1), 5);
        assert_eq!(r.get::<_, i64>(2), 1000);
        let nearest: i64 = client
            .query_one("SELECT id FROM docs ORDER BY v <-> '[0,0,1]' LIMIT 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(nearest, 1000);
    };
    check(&client).await;
    drop(client);
    server.stop_and_restart();
    let client = server.connect("default").await;
    check(&client).await;
    drop(client);
    server.kill_and_restart();
    let client = server.connect("default").await;
    check(&client).await;
    // Compaction merges the flushed segments and drops deleted rows.
    client.batch_execute("COMPACT docs").await.unwrap();
    let segs = client.query("SHOW SEGMENTS FROM docs", &[]).await.unwrap();
    let compacted: Vec<(String, i64, i64)> = segs
        .iter()
        .map(|r| (r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(compacted.len(), 1, "{compacted:?}");
    assert_eq!(compacted[0], ("compacted".to_string(), 811, 0));
    check(&client).await;
    drop(client);
    server.kill_and_restart();
    let client = server.connect("default").await;
    check(&client).await;
    // A duplicate key is still refused after all that.
    let err = client
        .batch_execute("INSERT INTO docs VALUES (1, 'x', '[1,1,1]')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    // Dropping the collection removes its segments and its log.
    client.batch_execute("DROP COLLECTION docs").await.unwrap();
    let segments = server.dir.join("collections");
    let deadline = Instant::now() + Duration::from_secs(10);
    while walk(&segments)
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        assert!(Instant::now() < deadline, "segment files left after DROP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The commit log of multi-collection transactions is the server's.)
    let wal_logs = walk(&server.dir.join("wal"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "commits"))
        .count();
    assert_eq!(wal_logs, 0, "WAL files left after DROP");
}

#[test]
fn a_second_server_cannot_open_the_same_data_directory() {
    let server = Server::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another quiver server"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_keeps_memory_bounded_and_loses_nothing() {
    let (_cfg_dir, cfg) = config(
        "insert_buffer_size = 2097152\nsegment_max_bytes = 1048576\nsegment_max_rows = 1000000\ncompact_min_segments = 1000\n",
    );
    let server = Server::start_with(&["--config", &cfg]);
    let client = server.connect("default").await;
    client
        .batch_execute("CREATE COLLECTION big (id BIGINT PRIMARY KEY, v VECTOR(128))")
        .await
        .unwrap();
    let baseline = common::rss_peak_kb(server.pid());
    let dim = 128;
    let batches = 200;
    let per = 1000;
    let started = Instant::now();
    for b in 0..batches {
        let mut text = String::new();
        for i in 0..per {
            let id = b * per + i;
            let v: Vec<String> = (0..dim).map(|d| format!("{}", (id + d) % 97)).collect();
            text.push_str(&format!("{id}\t[{}]\n", v.join(",")));
        }
        let sink = client
            .copy_in::<_, bytes::Bytes>("COPY big FROM STDIN")
            .await
            .unwrap();
        use futures::SinkExt;
        let mut sink = Box::pin(sink);
        sink.send(bytes::Bytes::from(text)).await.unwrap();
        sink.as_mut().finish().await.unwrap();
    }
    let ingested_mb = (batches * per * dim * 4) as f64 / 1e6;
    let peak = common::rss_peak_kb(server.pid());
    let count: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "back-pressure: {ingested_mb:.0} MB of vectors in {:.1} s with a 2 MB buffer; peak RSS {} MB (at start {} MB)",
        started.elapsed().as_secs_f64(),
        peak / 1024,
        baseline / 1024
    );
    assert_eq!(count, (batches * per) as i64);
    // Nothing is lost, and memory does not grow with what was ingested.
    assert!(
        ((peak - baseline) as f64 / 1024.0) < ingested_mb * 0.5,
        "peak RSS grew by {} MB for {ingested_mb:.0} MB ingested",
        (peak - baseline) / 1024
    );
}

/// Whether this machine lets a process mount a file system in its own user
/// and mount namespaces (the disk-full test needs a small tmpfs).
fn private_mounts_work() -> bool {
    std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A server whose data directory `dir` is a tmpfs of `size` in its own user
/// and mount namespaces; `prepare` runs there first (`$0` is the directory).
fn on_private_tmpfs(dir: &std::path::Path, size: &str, prepare: &str) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!("mount -t tmpfs -o size={size} tmpfs \"$0\" && {prepare} && exec \"$@\"");
    let wrapper: Vec<String> = ["unshare", "-rm", "sh", "-c", &script, dir.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let launched = common::launch_wrapped(
        &wrapper,
        dir,
        &[],
        &[("QUIVER_PASSWORD", Some(common::PASSWORD))],
    )
    .expect("quiver did not start on a tmpfs");
    Server::from_launched(launched, dir)
}

/// Run `sh -c script` inside the mount namespace of process `pid`.
fn in_namespace_of(pid: u32, script: &str) {
    let status = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-U", "-m", "--preserve-credentials"])
        .args(["sh", "-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "nsenter {script}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_with_53100_and_reads_go_on() {
    if !private_mounts_work() {
        eprintln!("SKIPPED: this machine allows no private tmpfs mounts (unshare -rm)");
        return;
    }
    // The data directory is an 8 MB tmpfs, private to the server, with a
    // 3 MB ballast file that the test removes later to free space.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = on_private_tmpfs(&dir, "8m", "head -c 3145728 /dev/zero > \"$0/ballast\"");
    let client = server.connect("default").await;
    client
        .batch_execute("CREATE COLLECTION docs (id BIGINT PRIMARY KEY, v VECTOR(64))")
        .await
        .unwrap();
    let insert = |from: i64, n: i64| {
        let rows: Vec<String> = (from..from + n)
            .map(|id| {
                let v: Vec<String> = (0..64).map(|d| format!("{}.25", (id + d) % 89)).collect();
                format!("({id}, '[{}]')", v.join(","))
            })
            .collect();
        format!("INSERT INTO docs VALUES {}", rows.join(","))
    };
    // Fill the disk: each statement adds about 170 kB to the WAL.
    let mut acked = 0i64;
    let mut failure = None;
    for _ in 0..200 {
        match client.batch_execute(&insert(acked, 500)).await {
            Ok(()) => acked += 500,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("8 MB never filled up");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53100", "{db:?}");
    assert!(db.message().contains("No space left"), "{}", db.message());
    assert!(acked > 0);
    // Reads go on, and see every acknowledged row.
    let count: i64 = client
        .query_one("SELECT count(*) FROM docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, acked);
    let near: i64 = client
        .query_one(
            &format!(
                "SELECT id FROM docs ORDER BY v <-> '[{}]' LIMIT 1",
                (0..64)
                    .map(|d| format!("{}.25", (7 + d) % 89))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(near % 89, 7);
    // Other sessions are served too.
    let other = server.connect("default").await;
    let again: i64 = other
        .query_one("SELECT count(*) FROM docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, acked);
    // Once space is freed, writes succeed again without a restart.
    in_namespace_of(server.pid(), &format!("rm {}/ballast", dir.display()));
    client.batch_execute(&insert(acked, 100)).await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, acked + 100);
    assert!(
        server.logs_soon("No space left"),
        "the failure is in the server log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_fails_writes_with_58030_and_reads_go_on() {
    if !private_mounts_work() {
        eprintln!("SKIPPED: this machine allows no private tmpfs mounts (unshare -rm)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = on_private_tmpfs(&dir, "64m", "true");
    let client = server.connect("default").await;
    client
        .batch_execute(
            "CREATE COLLECTION docs (id BIGINT PRIMARY KEY, v VECTOR(2)); \
             INSERT INTO docs VALUES (1, '[1,0]'), (2, '[0,1]'); FLUSH docs; \
             INSERT INTO docs VALUES (3, '[1,1]')",
        )
        .await
        .unwrap();
    // The data directory turns read-only (files already open stay writable,
    // as on a file system remounted read-only under a running server).
    let d = dir.display();
    in_namespace_of(
        server.pid(),
        &format!("mount --bind {d} {d} && mount -o remount,bind,ro {d}"),
    );
    for statement in [
        "FLUSH docs",
        "CREATE COLLECTION more (id BIGINT PRIMARY KEY)",
    ] {
        let e = client.batch_execute(statement).await.unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "58030", "{statement}: {db:?}");
        assert!(
            db.message().contains("Read-only file system"),
            "{}",
            db.message()
        );
    }
    // Reads go on, over flushed and unflushed rows.
    let ids: Vec<i64> = client
        .query("SELECT id FROM docs ORDER BY v <-> '[1,0]' LIMIT 3", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 3, 2]);
    // Writable again: the same statements succeed without a restart.
    in_namespace_of(server.pid(), &format!("mount -o remount,bind,rw {d}"));
    client.batch_execute("FLUSH docs").await.unwrap();
    client
        .batch_execute("CREATE COLLECTION more (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM docs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
}

/// Segment directories of every collection (bulk loads write their own).
fn segment_dirs(data: &std::path::Path) -> usize {
    let Ok(collections) = std::fs::read_dir(data.join("collections")) else {
        return 0;
    };
    collections
        .flatten()
        .filter_map(|c| std::fs::read_dir(c.path().join("segments")).ok())
        .map(|s| s.count())
        .sum()
}

fn bulk_rows(from: i64, to: i64) -> String {
    (from..to)
        .map(|i| format!("{i}\t[{i},1,2,3,4,5,6,7]\n"))
        .collect()
}

/// Send rows `from..to` as COPY data, 5,000 rows a message.
async fn send_rows<S>(sink: &mut std::pin::Pin<&mut S>, from: i64, to: i64)
where
    S: futures::Sink<bytes::Bytes, Error = tokio_postgres::Error>,
{
    use futures::SinkExt;
    let mut at = from;
    while at < to {
        let end = (at + 5_000).min(to);
        sink.send(bytes::Bytes::from(bulk_rows(at, end)))
            .await
            .unwrap();
        at = end;
    }
}

/// A COPY larger than a segment is a bulk load: its segments are written
/// while the data arrives and attached with one WAL record at the end. An
/// acknowledged one survives kill -9 before any flush; one that fails (a
/// duplicate key in its last row) or is cut by kill -9 leaves no row and,
/// once it is over or the server restarted, no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_copy_is_all_or_nothing_across_kill_nine() {
    use futures::SinkExt;
    // 64 KiB segments: each 8,192-row chunk converted by the time the next
    // data arrives is written as one.
    let (_cfg_dir, cfg) = config(
        "segment_max_bytes = 65536\nsegment_max_rows = 1000000\ncompact_min_segments = 1000\nseal_idle_ms = 60000",
    );
    let mut server = Server::start_with(&["--config", &cfg]);
    let c = server.connect("default").await;
    c.batch_execute("CREATE TABLE bk (id bigint primary key, v vector(8))")
        .await
        .unwrap();
    let sink = c.copy_in("COPY bk FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 0, 50_000).await;
    assert_eq!(sink.finish().await.unwrap(), 50_000);
    let staged = segment_dirs(&server.dir);
    assert!(staged >= 2, "{staged} segments");
    // Before the flusher names them in a manifest: the WAL record does.
    server.kill_and_restart();
    let c = server.connect("default").await;
    let count = |c: tokio_postgres::Client| async move {
        let row = c
            .query_one("SELECT count(*), sum(id) FROM bk", &[])
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1).to_string(), c)
    };
    let (n, sum, c) = count(c).await;
    assert_eq!((n, sum.as_str()), (50_000, "1249975000"));
    let nearest: i64 = c
        .query_one(
            "SELECT id FROM bk ORDER BY v <-> '[31337,1,2,3,4,5,6,7]' LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nearest, 31337);
    // The key index knows the loaded rows.
    let dup = c
        .batch_execute("INSERT INTO bk VALUES (49999, '[0,0,0,0,0,0,0,0]')")
        .await
        .unwrap_err();
    assert_eq!(dup.code().map(|s| s.code()), Some("23505"));

    // A duplicate in the last row: 23505, nothing attached, files gone.
    let before = segment_dirs(&server.dir);
    let sink = c.copy_in("COPY bk FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 50_000, 90_000).await;
    sink.send(bytes::Bytes::from("7\t[7,1,2,3,4,5,6,7]\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(err.code().map(|s| s.code()), Some("23505"), "{err}");
    let (n, _, c) = count(c).await;
    assert_eq!(n, 50_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while segment_dirs(&server.dir) != before {
        assert!(Instant::now() < deadline, "the failed load's files stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 in the middle of one: its staged segments go at the restart.
    let sink = c.copy_in("COPY bk FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 100_000, 140_000).await;
    sink.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while segment_dirs(&server.dir) < before + 1 {
        assert!(Instant::now() < deadline, "no segment was staged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill_and_restart();
    let c = server.connect("default").await;
    let (n, sum, c) = count(c).await;
    assert_eq!((n, sum.as_str()), (50_000, "1249975000"));
    assert_eq!(segment_dirs(&server.dir), before);
    // And a load after all that still works.
    let sink = c.copy_in("COPY bk FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 100_000, 130_000).await;
    assert_eq!(sink.finish().await.unwrap(), 30_000);
    c.batch_execute("FLUSH bk").await.unwrap();
    server.stop_and_restart();
    let c = server.connect("default").await;
    let (n, _, _) = count(c).await;
    assert_eq!(n, 80_000);
}

/// Found by a hostile review of bulk loads: a bulk load's row ids are
/// reserved while other rows are inserted, so a compaction that merged its
/// segment with others made a segment whose row ids are out of order, and
/// DELETE, UPDATE and upserts then missed rows (an upsert wrote a second row
/// with the same key). And kill -9 during the first bulk load into a table
/// never flushed left its files, whose segment ids the next flush reused
/// ("already exists", for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loads_mixed_with_inserts_compact_and_recover() {
    use futures::SinkExt;
    let (_cfg_dir, cfg) = config(
        "segment_max_bytes = 65536\nsegment_max_rows = 1000000\ncompact_min_segments = 1000\nseal_idle_ms = 600000",
    );
    let mut server = Server::start_with(&["--config", &cfg]);
    let c = server.connect("default").await;
    c.batch_execute(
        "CREATE TABLE mix (id bigint primary key, v vector(8));
         INSERT INTO mix VALUES (-1, '[0,0,0,0,0,0,0,0]')",
    )
    .await
    .unwrap();
    let sink = c.copy_in("COPY mix FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 0, 30_000).await;
    assert_eq!(sink.finish().await.unwrap(), 30_000);
    c.batch_execute("INSERT INTO mix VALUES (-2, '[0,0,0,0,0,0,0,0]'); FLUSH mix; COMPACT mix")
        .await
        .unwrap();
    let deleted = c
        .execute("DELETE FROM mix WHERE id < 29990", &[])
        .await
        .unwrap();
    assert_eq!(deleted, 29_992);
    c.batch_execute(
        "INSERT INTO mix VALUES (29999, '[1,1,1,1,1,1,1,1]') ON CONFLICT (id) DO UPDATE SET v = excluded.v",
    )
    .await
    .unwrap();
    let row = c
        .query_one("SELECT count(*), count(DISTINCT id) FROM mix", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (10, 10));

    // kill -9 in the first bulk load of a table never flushed.
    c.batch_execute("CREATE TABLE fresh (id bigint primary key, v vector(8))")
        .await
        .unwrap();
    // Data files of fresh (the newest collection) once it has a folder.
    let newest = |data: &std::path::Path| {
        std::fs::read_dir(data.join("collections"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap()
    };
    let files_of = |data: &std::path::Path, id: u64| {
        walk(&data.join(format!("collections/{id}/segments")))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    let mix = newest(&server.dir);
    let sink = c.copy_in("COPY fresh FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 0, 40_000).await;
    sink.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fresh = newest(&server.dir);
    while fresh == mix || files_of(&server.dir, fresh) < 1 {
        assert!(Instant::now() < deadline, "no segment was staged");
        tokio::time::sleep(Duration::from_millis(50)).await;
        fresh = newest(&server.dir);
    }
    server.kill_and_restart();
    let c = server.connect("default").await;
    assert_eq!(files_of(&server.dir, fresh), 0, "staged files survived");
    c.batch_execute("INSERT INTO fresh VALUES (1, '[1,1,1,1,1,1,1,1]'); FLUSH fresh")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM fresh", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// A cancel request (psql's Ctrl-C) or the statement_timeout stops a COPY
/// FROM STDIN (it committed before): 57014 when the client ends the COPY,
/// no row loaded, and a bulk load's staged files removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_timed_out_copy_loads_nothing() {
    let (_cfg_dir, cfg) = config(
        "segment_max_bytes = 65536\nsegment_max_rows = 1000000\ncompact_min_segments = 1000\nseal_idle_ms = 60000",
    );
    let server = Server::start_with(&["--config", &cfg]);
    let c = server.connect("default").await;
    c.batch_execute("CREATE TABLE cc (id bigint primary key, v vector(8))")
        .await
        .unwrap();
    let before = segment_dirs(&server.dir);

    // Cancelled in the middle, after segments were staged.
    let sink = c.copy_in("COPY cc FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 0, 30_000).await;
    c.cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_rows(&mut sink, 30_000, 40_000).await;
    let err = sink.finish().await.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(db.code().code(), "57014", "{db:?}");
    assert_eq!(db.message(), "canceling statement due to user request");
    assert_eq!(count_of(&c, "cc").await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while segment_dirs(&server.dir) != before {
        assert!(
            Instant::now() < deadline,
            "the cancelled load's files stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Past statement_timeout, small (held in memory) and large alike.
    c.batch_execute("SET statement_timeout = 300")
        .await
        .unwrap();
    for rows in [100, 30_000] {
        let sink = c.copy_in("COPY cc FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        send_rows(&mut sink, 0, rows).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        send_rows(&mut sink, rows, rows + 10).await;
        let err = sink.finish().await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(db.code().code(), "57014", "{db:?}");
        assert_eq!(db.message(), "canceling statement due to statement timeout");
        assert_eq!(count_of(&c, "cc").await, 0);
    }
    // Within the timeout a COPY loads as before.
    c.batch_execute("SET statement_timeout = 60000")
        .await
        .unwrap();
    let sink = c.copy_in("COPY cc FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    send_rows(&mut sink, 0, 30_000).await;
    assert_eq!(sink.finish().await.unwrap(), 30_000);
    assert_eq!(count_of(&c, "cc").await, 30_000);
}

/// Found by a hostile review of bulk loads: rows inserted by another
/// session while a bulk COPY ran, and the COPY's own rows, must all survive
/// kill -9 before any flush; and a serial column (not the key) goes on
/// after the values a bulk load assigned, across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loads_beside_inserts_survive_kill_nine_with_their_serials() {
    let (_cfg_dir, cfg) = config(
        "segment_max_bytes = 65536\nsegment_max_rows = 1000000\ncompact_min_segments = 1000\nseal_idle_ms = 600000",
    );
    let mut server = Server::start_with(&["--config", &cfg]);
    let c = server.connect("default").await;
    let other = server.connect("default").await;
    c.batch_execute(
        "CREATE TABLE ser (id bigint primary key, v vector(8), n bigserial);
         CREATE TABLE side (id bigint primary key)",
    )
    .await
    .unwrap();
    let sink = c.copy_in("COPY ser (id, v) FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    let mut inserted = 0;
    for part in 0..8 {
        send_rows(&mut sink, part * 5_000, (part + 1) * 5_000).await;
        // Another session writes to the same table and to another one.
        other
            .batch_execute(&format!(
                "INSERT INTO ser (id, v) VALUES ({}, '[9,9,9,9,9,9,9,9]'); INSERT INTO side VALUES ({part})",
                -1 - part
            ))
            .await
            .unwrap();
        inserted += 1;
    }
    assert_eq!(sink.finish().await.unwrap(), 40_000);
    other
        .batch_execute("INSERT INTO ser (id, v) VALUES (-100, '[1,1,1,1,1,1,1,1]')")
        .await
        .unwrap();
    let max_before: i64 = c
        .query_one("SELECT max(n) FROM ser", &[])
        .await
        .unwrap()
        .get(0);
    server.kill_and_restart();
    let c = server.connect("default").await;
    let row = c
        .query_one("SELECT count(*), count(DISTINCT n), max(n) FROM ser", &[])
        .await
        .unwrap();
    let total = 40_000 + inserted + 1;
    assert_eq!(row.get::<_, i64>(0), total);
    assert_eq!(row.get::<_, i64>(1), total, "serial values were repeated");
    assert_eq!(row.get::<_, i64>(2), max_before);
    let side: i64 = c
        .query_one("SELECT count(*) FROM side", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(side, 8);
    // The next serial value is past all of them.
    let n: i64 = c
        .query_one(
            "INSERT INTO ser (id, v) VALUES (-200, '[2,2,2,2,2,2,2,2]') RETURNING n",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n > max_before, "{n} <= {max_before}");
}

async fn count_of(c: &tokio_postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// TRUNCATE emptied a table but kept its files until its next write; a
/// DROP removes a collection's files in the background, and kill -9 right
/// after it left them for good. Now the flusher names no segment soon
/// after a TRUNCATE (its files go), and a start removes the objects and
/// logs of collections the catalog no longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_dropped_collections_leave_no_files() {
    let mut server = Server::start();
    let c = server.connect("default").await;
    c.batch_execute(
        "CREATE TABLE keep (id bigint primary key);
         INSERT INTO keep VALUES (1), (2);
         CREATE TABLE emptied (id bigint primary key);
         INSERT INTO emptied SELECT x FROM generate_series(1, 1000) AS t(x);
         FLUSH keep; FLUSH emptied",
    )
    .await
    .unwrap();
    let parquet = |data: &std::path::Path| {
        walk(&data.join("collections"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count()
    };
    assert_eq!(parquet(&server.dir), 2);
    c.batch_execute("TRUNCATE emptied").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while parquet(&server.dir) != 1 {
        assert!(
            Instant::now() < deadline,
            "the truncated table's files stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_of(&c, "emptied").await, 0);

    // kill -9 right after a DROP; and what a crash in the middle of a
    // DROP's cleanup leaves: a folder and a log of an id the catalog lacks.
    c.batch_execute(
        "CREATE TABLE gone (id bigint primary key); INSERT INTO gone VALUES (1); FLUSH gone; DROP TABLE gone",
    )
    .await
    .unwrap();
    server.kill_and_restart();
    let c = server.connect("default").await;
    c.batch_execute("SELECT 1").await.unwrap();
    server.kill_and_restart();
    let orphan = server.dir.join("collections/987654/segments/3");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("data-0.parquet"), b"left over").unwrap();
    let log = server.dir.join("wal/987654/0");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("00000000000000000001.log"), b"left over").unwrap();
    server.kill_and_restart();
    let c = server.connect("default").await;
    assert!(!server.dir.join("collections/987654").exists());
    assert!(!server.dir.join("wal/987654").exists());
    assert_eq!(
        parquet(&server.dir),
        1,
        "{:?}",
        walk(&server.dir.join("collections"))
    );
    let logs: Vec<String> = std::fs::read_dir(server.dir.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs.len(), 3, "{logs:?}"); // keep, emptied, commits
    assert_eq!(count_of(&c, "keep").await, 2);
    assert_eq!(count_of(&c, "emptied").await, 0);
}

/// The catalog after kill -9 in the middle of alias switches and renames:
/// the state of the last acknowledged statement or of the one in flight,
/// never a mix, and each collection's rows intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_switches_and_renames_survive_kill_nine() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut server = Server::start();
    let c = server.connect("default").await;
    c.batch_execute(
        "CREATE COLLECTION av1 (id bigint primary key, v vector(2));
         CREATE COLLECTION av2 (id bigint primary key, v vector(2));
         INSERT INTO av1 SELECT i, '[1,1]'::vector FROM generate_series(1, 10) AS g(i);
         INSERT INTO av2 SELECT i, '[2,2]'::vector FROM generate_series(1, 20) AS g(i);
         FLUSH av1;
         CREATE ALIAS aprod FOR av1;",
    )
    .await
    .unwrap();
    // Op i: even ones switch the alias, odd ones rename av2 back and forth.
    // The state after op i: (the alias names av2, av2's name).
    let op = |i: usize| -> String {
        let switch = i / 2;
        if i.is_multiple_of(2) {
            let v2 = if switch.is_multiple_of(2) {
                "av2"
            } else {
                "av2x"
            };
            let target = if switch.is_multiple_of(2) { v2 } else { "av1" };
            format!("ALTER ALIAS aprod FOR {target}")
        } else if switch.is_multiple_of(2) {
            "ALTER COLLECTION av2 RENAME TO av2x".to_string()
        } else {
            "ALTER COLLECTION av2x RENAME TO av2".to_string()
        }
    };
    let state_after = |n: usize| -> (bool, &'static str) {
        // n ops done: switches done = ceil(n / 2), renames = floor(n / 2).
        let switches = n.div_ceil(2);
        let renames = n / 2;
        (
            switches % 2 == 1,
            if renames % 2 == 1 { "av2x" } else { "av2" },
        )
    };
    let mut done_total = 0usize;
    for round in 0..4 {
        let c = server.connect("default").await;
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = acked.clone();
        let start = done_total;
        let task = tokio::spawn(async move {
            let mut i = start;
            while c.batch_execute(&op(i)).await.is_ok() {
                i += 1;
                counter.store(i - start, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(150 + 70 * round)).await;
        server.kill_and_restart();
        let _ = task.await;
        let acked = start + acked.load(Ordering::SeqCst);
        let c = server.connect("default").await;
        let aliases = c.simple_query("SHOW ALIASES").await.unwrap();
        let target: Vec<String> = aliases
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    assert_eq!(r.get(0), Some("aprod"));
                    r.get(1).map(str::to_string)
                }
                _ => None,
            })
            .collect();
        assert_eq!(target.len(), 1, "{target:?}");
        let names: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_name LIKE 'av%' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let v2 = names
            .iter()
            .find(|n| n.starts_with("av2"))
            .cloned()
            .unwrap();
        let seen = (
            target[0] != "av1",
            if v2 == "av2x" { "av2x" } else { "av2" },
        );
        assert!(
            seen == state_after(acked) || seen == state_after(acked + 1),
            "round {round}: {acked} ops acknowledged, catalog {seen:?}"
        );
        // Each collection's rows, through its name and through the alias.
        assert_eq!(count_of(&c, "av1").await, 10);
        assert_eq!(count_of(&c, &v2).await, 20);
        let expected = if seen.0 { 20 } else { 10 };
        assert_eq!(count_of(&c, "aprod").await, expected);
        // The next round goes on from what the catalog holds.
        done_total = if seen == state_after(acked) {
            acked
        } else {
            acked + 1
        };
        eprintln!("round {round}: {acked} ops acknowledged, catalog after {done_total}");
        assert!(
            acked > start,
            "round {round}: no statement ran before the kill"
        );
    }
}
