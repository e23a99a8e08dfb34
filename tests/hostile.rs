//! Hostile clients against the real server: whatever they send, the server
//! answers with an error that says what is wrong and keeps serving.

mod common;

use common::Server;
use tokio_postgres::SimpleQueryMessage;

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

async fn first(c: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    match c.simple_query(sql).await {
        Ok(messages) => Ok(messages
            .into_iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
                _ => None,
            })
            .unwrap_or_default()),
        Err(e) => Err(e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or(e.to_string())),
    }
}

/// Chains of operators thousands long (`1+1+...`, `||`, AND, OR) once
/// overflowed a worker thread's stack and aborted the server, for any
/// user, in both protocols. Up to the documented depth they are answered;
/// past it they are refused with 54001; the server goes on either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_expressions_are_answered_or_refused_never_crash() {
    let mut server = Server::start();
    let c = server.connect("default").await;
    // The issue's repro: about 1,900 terms (3.7 KB).
    let sum = format!("SELECT {}", chain("1", "+", 1900));
    assert_eq!(first(&c, &sum).await.unwrap(), "1900");
    let concat = format!("SELECT length({})", chain("'ab'", " || ", 2000));
    assert_eq!(first(&c, &concat).await.unwrap(), "4000");
    first(&c, "CREATE COLLECTION t (id bigint primary key, name text)")
        .await
        .unwrap();
    first(&c, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let ands = format!(
        "SELECT count(*) FROM t WHERE {}",
        chain("id > 0", " AND ", 2000)
    );
    assert_eq!(first(&c, &ands).await.unwrap(), "2");
    let ors = format!(
        "SELECT count(*) FROM t WHERE {}",
        (0..1500)
            .map(|i| format!("id = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    );
    assert_eq!(first(&c, &ors).await.unwrap(), "2");
    // Past the limit, in both protocols, and far past it (a 400 KB chain).
    for n in [5_000, 200_000] {
        let deep = format!("SELECT {}", chain("1", "+", n));
        assert_eq!(first(&c, &deep).await, Err("54001".to_string()), "{n}");
        let e = c.prepare(&deep).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("54001"));
        let e = c
            .query(
                &format!("SELECT $1::int + {}", chain("1", "+", n)),
                &[&1i32],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("54001"));
    }
    let deep_where = format!(
        "UPDATE t SET name = 'x' WHERE {}",
        chain("id > 0", " AND ", 5_000)
    );
    assert_eq!(first(&c, &deep_where).await, Err("54001".to_string()));
    assert!(server.is_running());
    assert_eq!(first(&c, "SELECT count(*) FROM t").await.unwrap(), "2");
}

/// The data directory holds the SCRAM verifiers (in the manifests) and
/// every row: like PostgreSQL's, it is the server user's alone (folders
/// 0700, files 0600), and a directory an earlier version left readable is
/// tightened at start.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Server::start();
    let c = server.connect("default").await;
    first(
        &c,
        "CREATE COLLECTION t (id bigint primary key, v vector(2))",
    )
    .await
    .unwrap();
    first(&c, "INSERT INTO t VALUES (1, '[1,2]')")
        .await
        .unwrap();
    first(&c, "FLUSH t").await.unwrap();
    let modes = |dir: &std::path::Path| {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(p) = pending.pop() {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            out.push((p.clone(), meta.is_dir(), meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        out
    };
    let all = modes(&server.dir);
    assert!(all.iter().filter(|(_, d, _)| !d).count() >= 3, "{all:?}");
    for (path, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode & !want, 0, "{} is {mode:o}", path.display());
    }
    // Loosen everything, as an older version left it; a restart tightens it.
    for (path, is_dir, _) in &all {
        let loose = if *is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    server.stop_and_restart();
    for (path, _, mode) in modes(&server.dir) {
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
}

/// A user name is the client's to choose: one with a line break once wrote
/// forged lines into the log before the login was even checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_cannot_forge_log_lines() {
    let server = Server::start();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(server.port)
        .user("evil\nFORGED quiver: superuser logged in")
        .password("wrong")
        .dbname("default");
    assert!(config.connect(tokio_postgres::NoTls).await.is_err());
    assert!(server.logs_soon("login failed"));
    let log = server.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| !l.starts_with("FORGED")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains(r"evil\nFORGED")), "{log:#?}");
}
