//! Postgres drivers against the real server: tokio-postgres with prepared
//! statements and binary parameters, psycopg with server-side prepared
//! statements, concurrency and cancellation.

mod common;

use bytes::{BufMut, BytesMut};
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};

/// A pgvector value in its binary wire form, as pgvector-aware clients send it.
#[derive(Debug)]
struct PgVector(Vec<f32>);

impl ToSql for PgVector {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u16(self.0.len() as u16);
        out.put_u16(0);
        for v in &self.0 {
            out.put_f32(*v);
        }
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        ty.name() == "vector"
    }
    to_sql_checked!();
}

const NEAREST: &[(i64, &str, f64)] = &[
    (1, "red shoe", 0.0),
    (4, "red hat", 0.14142137441313676),
    (2, "blue shoe", std::f64::consts::SQRT_2),
];

async fn load(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE products (id BIGINT PRIMARY KEY, name TEXT, embedding VECTOR(4))",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO products (id, name, embedding) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let rows: &[(i64, &str, [f32; 4])] = &[
        (1, "red shoe", [1.0, 0.0, 0.0, 0.0]),
        (2, "blue shoe", [0.0, 1.0, 0.0, 0.0]),
        (3, "green hat", [0.0, 0.0, 2.0, 0.0]),
        (4, "red hat", [0.9, 0.1, 0.0, 0.0]),
    ];
    // One prepared statement, executed many times.
    for (id, name, v) in rows {
        let n = client
            .execute(&insert, &[id, name, &PgVector(v.to_vec())])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}

#[tokio::test]
async fn tokio_postgres_prepared_statements() {
    let server = common::Server::start();
    let client = server.connect("default").await;
    load(&client).await;

    let query = client
        .prepare("SELECT id, name, embedding <-> $1 AS distance FROM products ORDER BY embedding <-> $1 LIMIT 3")
        .await
        .unwrap();
    assert_eq!(query.params()[0].name(), "vector");
    for _ in 0..3 {
        let rows = client
            .query(&query, &[&PgVector(vec![1.0, 0.0, 0.0, 0.0])])
            .await
            .unwrap();
        let got: Vec<(i64, String, f64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let want: Vec<(i64, String, f64)> = NEAREST
            .iter()
            .map(|(i, n, d)| (*i, n.to_string(), *d))
            .collect();
        assert_eq!(got, want);
    }

    // A vector parameter without a dimension (`$1::vector`), in pgvector's
    // binary form and as text.
    let rows = client
        .query(
            "SELECT id FROM products ORDER BY embedding <-> $1::vector LIMIT 2",
            &[&PgVector(vec![1.0, 0.0, 0.0, 0.0])],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 4]);
    let rows = client
        .simple_query("SELECT id FROM products ORDER BY embedding <-> '[0,1,0,0]'::vector LIMIT 1")
        .await
        .unwrap();
    let first = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(first.as_deref(), Some("2"));
    let err = client
        .query(
            "SELECT id FROM products ORDER BY embedding <-> $1::vector LIMIT 2",
            &[&PgVector(vec![1.0, 0.0])],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22000", "{err:?}");

    // DEALLOCATE ALL forgets every statement the connection prepared:
    // executing one afterwards fails with 26000, and preparing works again.
    let two = client.prepare("SELECT 2::bigint").await.unwrap();
    let row = client.query_one(&two, &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    let err = client.query(&two, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "26000", "{err:?}");
    let err = client
        .query(&query, &[&PgVector(vec![1.0, 0.0, 0.0, 0.0])])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "26000", "{err:?}");
    let query = client
        .prepare("SELECT id, name, embedding <-> $1 AS distance FROM products ORDER BY embedding <-> $1 LIMIT 3")
        .await
        .unwrap();
    let rows = client
        .query(&query, &[&PgVector(vec![1.0, 0.0, 0.0, 0.0])])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);

    // A float4[] parameter works as a vector too.
    let rows = client
        .query(
            "SELECT id FROM products ORDER BY embedding <-> $1::real[] LIMIT 2",
            &[&vec![1.0f32, 0.0, 0.0, 0.0]],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 4]);

    // Scalar parameters in filters.
    let rows = client
        .query(
            "SEARCH products NEAREST embedding TO '[1,0,0,0]' WHERE id > $1 LIMIT 2 RETURN id",
            &[&1i64],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![4, 2]);

    // Errors keep their SQLSTATE and the connection stays usable.
    let err = client
        .execute(
            "INSERT INTO products (id, embedding) VALUES (1, '[0,0,0,0]')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let err = client
        .query(
            "SELECT id FROM products ORDER BY embedding <-> $1 LIMIT 1",
            &[&PgVector(vec![1.0])],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22000", "{err}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);

    // Result columns are named as PostgreSQL names them, in a prepared
    // statement's description and in a simple query's.
    let sql = "SELECT count(*), max(id), 1, 'a'::text, 2::int, p.name, id::text, \
               length(name) AS len, embedding <-> $1 FROM products p GROUP BY id, name, embedding";
    let stmt = client.prepare(sql).await.unwrap();
    let want = [
        "count", "max", "?column?", "text", "int4", "name", "id", "len", "?column?",
    ];
    let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, want);
    let rows = client
        .query(&stmt, &[&PgVector(vec![1.0, 0.0, 0.0, 0.0])])
        .await
        .unwrap();
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, want);
    let messages = client
        .simple_query("SELECT length('x'), 1, *, 2 FROM (SELECT 1 AS a, 2 AS b) s")
        .await
        .unwrap();
    let names: Vec<String> = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                Some(cols.iter().map(|c| c.name().to_string()).collect())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(names, ["length", "?column?", "a", "b", "?column?"]);
}

/// ROLLBACK undoes the block's writes, which no other session saw; COMMIT
/// and ROLLBACK outside a block, and BEGIN inside one, warn as PostgreSQL
/// does (25P01, 25001) and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_undoes_and_misplaced_commands_warn() {
    use futures::StreamExt;
    let server = common::Server::start();
    let (client, mut connection) =
        tokio_postgres::connect(&server.conn_string("default"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                let _ = tx.send((n.code().code().to_string(), n.message().to_string()));
            }
        }
    });
    let other = server.connect("default").await;
    client
        .batch_execute("CREATE TABLE rb (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO rb VALUES (1); INSERT INTO rb VALUES (2)")
        .await
        .unwrap();
    assert_eq!(count(&client).await, 2, "the block sees its own rows");
    assert_eq!(count(&other).await, 0, "no one else does before COMMIT");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&client).await, 0, "ROLLBACK undid them");
    // Several statements in one query string: one transaction.
    let e = client
        .batch_execute("INSERT INTO rb VALUES (5); INSERT INTO rb VALUES (5)")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "23505");
    assert_eq!(
        count(&other).await,
        0,
        "the first INSERT was rolled back too"
    );
    client
        .batch_execute("INSERT INTO rb VALUES (6); INSERT INTO rb VALUES (7)")
        .await
        .unwrap();
    assert_eq!(count(&other).await, 2);
    client.batch_execute("DELETE FROM rb").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    client
        .batch_execute("BEGIN; BEGIN; ROLLBACK")
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), notices.recv()).await
    {
        got.push(n);
    }
    let expected = [
        ("25P01", "there is no transaction in progress"),
        ("25001", "there is already a transaction in progress"),
        ("25P01", "there is no transaction in progress"),
    ];
    assert_eq!(
        got.iter()
            .map(|(c, m)| (c.as_str(), m.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
}

async fn count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM rb", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}

/// Concurrent increments of the same rows, by UPDATE and by ON CONFLICT DO
/// UPDATE, lose none: the read and the write of each are one step for the
/// collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_nothing() {
    let server = common::Server::start();
    let setup = server.connect("default").await;
    setup
        .batch_execute(
            "CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT); \
             INSERT INTO counters VALUES (1, 0), (2, 0)",
        )
        .await
        .unwrap();
    let (clients, rounds) = (8, 25);
    let mut tasks = Vec::new();
    for t in 0..clients {
        let conn = server.conn_string("default");
        tasks.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            for _ in 0..rounds {
                let sql = if t % 2 == 0 {
                    "UPDATE counters SET n = n + 1 WHERE id IN (1, 2)"
                } else {
                    "INSERT INTO counters VALUES (1, 1), (2, 1) ON CONFLICT (id) DO UPDATE SET n = counters.n + 1"
                };
                client.simple_query(sql).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for id in [1i64, 2] {
        let n: i64 = setup
            .query_one("SELECT n FROM counters WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, (clients * rounds) as i64, "counter {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections() {
    let server = common::Server::start();
    let setup = server.connect("default").await;
    setup
        .batch_execute("CREATE TABLE c (id BIGINT PRIMARY KEY, v VECTOR(2))")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..16i64 {
        let conn = server.conn_string("default");
        tasks.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            for i in 0..20i64 {
                let id = t * 100 + i;
                client
                    .execute(&format!("INSERT INTO c VALUES ({id}, '[{t},{i}]')"), &[])
                    .await
                    .unwrap();
                let rows = client
                    .query("SELECT id FROM c ORDER BY v <-> '[0,0]' LIMIT 1", &[])
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = setup
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 320);
}

#[tokio::test]
async fn cancel_request_does_not_break_the_server() {
    let mut server = common::Server::start();
    let client = server.connect("default").await;
    client
        .batch_execute("CREATE TABLE big AS SELECT 1")
        .await
        .unwrap_err();
    client
        .batch_execute("CREATE TABLE big (id BIGINT, v VECTOR(8))")
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO big SELECT value, ARRAY[1,2,3,4,5,6,7,8] FROM generate_series(1, 100000)",
        )
        .await
        .unwrap();
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let r = client
            .query("SELECT count(*) FROM big a JOIN big b ON a.id < b.id", &[])
            .await;
        (client, r)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (client, result) = query.await.unwrap();
    let err = result.expect_err("the query was cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100000);
    assert!(server.is_running());
}

#[test]
fn psycopg_server_side_prepared_statements() {
    run_python("psycopg_check.py");
}

/// psycopg's transactions: commit, rollback on an exception, savepoints,
/// the status byte, REPEATABLE READ, concurrent increments.
#[test]
fn psycopg_transactions() {
    run_python("psycopg_transactions.py");
}

/// psycopg2: implicit transactions, a named cursor, copy_expert.
#[test]
fn psycopg2_transactions_cursors_and_copy() {
    run_python("psycopg2_check.py");
}

/// asyncpg: $1::int, transactions, copy_records_to_table with vectors.
#[test]
fn asyncpg_transactions_and_binary_copy() {
    run_python("asyncpg_check.py");
}

/// SQLAlchemy 2 (psycopg and psycopg2): sessions commit and roll back.
#[test]
fn sqlalchemy_sessions() {
    run_python("sqlalchemy_check.py");
}

/// Alembic: an autogenerated migration of a pgvector model with an HNSW
/// index, applied (in a transaction, as Alembic runs them), compared again
/// with no changes left, and downgraded.
#[test]
fn alembic_migration() {
    run_python("alembic_check.py");
}

/// pgcli: `-c` with a query and `\d`, and the introspection of its
/// completion.
#[test]
fn pgcli_commands_and_completion_metadata() {
    run_python("pgcli_check.py");
}

/// pgjdbc (Debian's `libpostgresql-jdbc-java`): batched INSERT counts,
/// `LIMIT ?`, vectors as PGobject, rollback, getTables and getColumns
/// (`tests/clients/JdbcCheck.java`, run as a single-file program).
#[test]
fn pgjdbc() {
    run_client_with(
        "java",
        &["-cp", "/usr/share/java/postgresql.jar"],
        "JdbcCheck.java",
        &["{port}"],
    );
}

/// langchain-postgres's PGVectorStore: a table with metadata columns,
/// add_texts, similarity search with langchain's filters (metadata
/// columns and JSON keys), MMR, get_by_ids, an HNSW index, upsert and
/// delete (`tests/clients/langchain_check.py`).
#[test]
fn langchain_postgres() {
    run_python("langchain_check.py");
}

/// pgvector-python's psycopg integration: register_vector, numpy
/// parameters, binary COPY of vectors.
#[test]
fn pgvector_python() {
    run_python("pgvector_python_check.py");
}

/// node-postgres with pgvector-node: registerTypes, vector parameters,
/// `LIMIT $2`, RETURNING, transactions, SQLSTATEs, a pool
/// (`tests/clients/node`, installed by `scripts/setup.sh --test`).
#[test]
fn node_postgres() {
    run_client(
        "node",
        "node/node_pg_check.mjs",
        &["127.0.0.1", "{port}", "quiver", "default"],
    );
}

fn run_python(name: &str) {
    run_client("python3", name, &["{port}"]);
}

/// Run `program` on the script `tests/clients/<script>` against a fresh
/// server (`{port}` in `args` is its port); the script must succeed.
/// `make test` installs the programs and their modules.
fn run_client(program: &str, script: &str, args: &[&str]) {
    run_client_with(program, &[], script, args);
}

/// [`run_client`] with arguments for `program` before the script's path
/// (`java -cp <jar> Script.java`).
fn run_client_with(program: &str, before: &[&str], script: &str, args: &[&str]) {
    let server = common::Server::start();
    let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("tests/clients")
        .join(script);
    let port = server.port.to_string();
    let out = std::process::Command::new(program)
        .args(before)
        .arg(path)
        .args(args.iter().map(|a| a.replace("{port}", &port)))
        .env("PGPASSWORD", common::PASSWORD)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (`make test` installs it)"));
    assert!(
        out.status.success(),
        "{script} failed (are its modules installed? `make test` installs them):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
