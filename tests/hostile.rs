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
    // The repro: about 1,900 terms (3.7 KB).
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
