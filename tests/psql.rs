//! Drives the real `quiver` binary with the real `psql` client.

mod common;

use std::process::Command;

fn psql(server: &common::Server, args: &[&str]) -> (bool, String, String) {
    psql_with(server, &[], args)
}

/// [`psql`] with environment variables (`PGOPTIONS`).
fn psql_with(
    server: &common::Server,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new("psql")
        .envs(env.iter().copied())
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "quiver",
            "-d",
            "default",
        ])
        .args(args)
        .env("PGPASSWORD", common::PASSWORD)
        .output()
        .expect("psql must be installed (apt-get install postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn psql_session() {
    let server = common::Server::start();
    let script = "
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE products (id bigint PRIMARY KEY, name text, embedding vector(4));
INSERT INTO products VALUES (1, 'red shoe', '[1,0,0,0]'), (2, 'blue shoe', '[0,1,0,0]'),
  (3, 'green hat', '[0,0,2,0]'), (4, 'red hat', '[0.9,0.1,0,0]');
SELECT id, name, embedding <-> '[1,0,0,0]' AS distance FROM products ORDER BY embedding <-> '[1,0,0,0]' LIMIT 3;
SEARCH products NEAREST embedding TO '[1,0,0,0]' LIMIT 3 RETURN id, name;
";
    let (ok, out, err) = psql(
        &server,
        &["-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", script],
    );
    assert!(ok, "psql failed: {err}\n{out}");
    // Both spellings of a search return the exact nearest rows with distances.
    for query in [
        "SELECT id, name, embedding <-> '[1,0,0,0]' AS distance FROM products ORDER BY embedding <-> '[1,0,0,0]' LIMIT 3",
        "SEARCH products NEAREST embedding TO '[1,0,0,0]' LIMIT 3 RETURN id, name",
    ] {
        let (ok, out, err) = psql(&server, &["-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", query]);
        assert!(ok, "{query}: {err}");
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            vec![
                "1|red shoe|0",
                "4|red hat|0.14142137441313676",
                "2|blue shoe|1.4142135623730951"
            ],
            "{query}"
        );
    }

    let (ok, out, err) = psql(&server, &["-c", "\\dt"]);
    assert!(ok, "\\dt failed: {err}");
    assert!(out.contains("products"), "\\dt output: {out}");

    // \du reads role memberships with ARRAY(subquery).
    let (ok, out, err) = psql(&server, &["-c", "\\du"]);
    assert!(ok, "\\du failed: {err}");
    assert!(out.contains("Superuser"), "\\du output: {out}");
    let (ok, out, err) = psql(&server, &["-c", "\\d products"]);
    assert!(ok, "\\d products failed: {err}");
    assert!(
        out.contains("embedding") && out.contains("name"),
        "\\d output: {out}"
    );

    let (ok, out, err) = psql(
        &server,
        &[
            "-A",
            "-t",
            "-c",
            "EXPLAIN SELECT id FROM products ORDER BY embedding <-> '[1,0,0,0]' LIMIT 3",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("AnnSearchExec"), "EXPLAIN output: {out}");

    // COPY FROM STDIN in the text and csv formats (psql's \copy).
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("rows.tsv");
    std::fs::write(&tsv, "10\tteal scarf\t[0,0,0,1]\n11\t\\N\t[0,0,0,2]\n").unwrap();
    let csv = dir.path().join("rows.csv");
    std::fs::write(&csv, "id,name,embedding\n12,\"pink, hat\",\"[0,0,0,3]\"\n").unwrap();
    let (ok, out, err) = psql(
        &server,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("\\copy products FROM '{}'", tsv.display()),
            "-c",
            &format!(
                "\\copy products FROM '{}' WITH (FORMAT csv, HEADER true)",
                csv.display()
            ),
        ],
    );
    assert!(ok, "COPY failed: {err}");
    assert!(out.contains("COPY 2") && out.contains("COPY 1"), "{out}");
    let (ok, out, err) = psql(
        &server,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT id, name FROM products WHERE id >= 10 ORDER BY id",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["10|teal scarf", "11|", "12|pink, hat"]
    );
    // A bad row rejects the whole COPY.
    std::fs::write(&tsv, "20\tok\t[0,0,0,1]\n21\tshort\t[0,1]\n").unwrap();
    let (ok, _, err) = psql(
        &server,
        &["-c", &format!("\\copy products FROM '{}'", tsv.display())],
    );
    assert!(!ok || err.contains("ERROR"), "a bad row was accepted");
    assert!(err.contains("expected 4 dimensions, not 2"), "{err}");
    let (_, out, _) = psql(
        &server,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM products WHERE id >= 20",
        ],
    );
    assert_eq!(out.trim(), "0");
    let (_, out, _) = psql(
        &server,
        &["-A", "-t", "-c", "DELETE FROM products WHERE id >= 10"],
    );
    assert!(out.contains("DELETE 3") || out.is_empty(), "{out}");

    // An inline COPY in a psql script, csv format: psql passes the `\.`
    // end line on, and it once was read as a row.
    let script = dir.path().join("load.sql");
    std::fs::write(
        &script,
        "COPY products (id, name, embedding) FROM STDIN WITH (FORMAT csv);\n\
         30,inline one,\"[0,0,1,0]\"\n\
         31,inline two,\"[0,0,2,0]\"\n\
         \\.\n\
         SELECT count(*) FROM products WHERE id >= 30;\n",
    )
    .unwrap();
    let (ok, out, err) = psql(
        &server,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-A",
            "-t",
            "-f",
            &script.display().to_string(),
        ],
    );
    assert!(ok, "inline COPY failed: {err}");
    assert_eq!(out.lines().last(), Some("2"), "{out}");
    psql(&server, &["-c", "DELETE FROM products WHERE id >= 30"]);

    // An error leaves the session and the server usable.
    let (ok, _, err) = psql(
        &server,
        &["-v", "ON_ERROR_STOP=1", "-c", "SELECT * FROM nowhere"],
    );
    assert!(!ok && err.contains("nowhere"), "{err}");
    let (ok, out, err) = psql(
        &server,
        &["-A", "-t", "-c", "SELECT count(*) FROM products"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "4");
}

/// Values in text results as PostgreSQL 15 writes them (each expected line
/// is what PostgreSQL printed for the same query): floats in their
/// shortest form with PostgreSQL's exponent rule, `Infinity`, `-0`; float
/// arrays; timestamps and times without trailing zeros. arrow-pg wrote
/// `2.0`, `1e20`, `inf` and `03:04:05.500000`.
#[test]
fn psql_shows_values_as_postgres_writes_them() {
    let server = common::Server::start();
    let cases = [
        (
            "SELECT 2::float8, 1.5::float4, 1e20::float8, 1e15::float8, 1e14::float8, 0.0001::float8, 0.00001::float8",
            "2|1.5|1e+20|1e+15|100000000000000|0.0001|1e-05",
        ),
        (
            "SELECT '-0'::float8, 'inf'::float8, '-inf'::float4, 'nan'::float8, 1000000::float4, 100000::float4, 1/3.0::float8",
            "-0|Infinity|-Infinity|NaN|1e+06|100000|0.3333333333333333",
        ),
        (
            "SELECT ARRAY[1.5::float8, 2, NULL], ARRAY['NaN'::float4, 1e20]",
            "{1.5,2,NULL}|{NaN,1e+20}",
        ),
        (
            "SELECT '2024-01-02 03:04:05.5'::timestamp, '2024-01-02 03:04:05'::timestamp, '03:04:05.25'::time",
            "2024-01-02 03:04:05.5|2024-01-02 03:04:05|03:04:05.25",
        ),
    ];
    for (query, want) in cases {
        let (ok, out, err) = psql(&server, &["-A", "-t", "-c", query]);
        assert!(ok, "{query}: {err}");
        assert_eq!(out.trim_end(), want, "{query}");
    }
    // SET extra_float_digits applies, as in PostgreSQL (%.15g below 1).
    let (ok, out, err) = psql(
        &server,
        &[
            "-A",
            "-t",
            "-c",
            "SET extra_float_digits = 0",
            "-c",
            "SELECT 1/3.0::float8, 0.1::float4 + 0.2::float4, 1e20::float8",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "SET\n0.333333333333333|0.3|1e+20");
    // COPY TO writes them alike.
    let (ok, out, err) = psql(
        &server,
        &[
            "-c",
            "CREATE TABLE f (x float8, a float8[]); INSERT INTO f VALUES (2, '{1,2.5}'), (1e-7, NULL)",
            "-c",
            "COPY f TO STDOUT",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.ends_with("2\t{1,2.5}\n1e-07\t\\N\n"), "{out}");
}

/// `IF EXISTS` / `IF NOT EXISTS` that skip say so with a NOTICE, as
/// PostgreSQL 15 does (the expected lines are what it printed for the same
/// script); `client_min_messages = warning` holds them back.
#[test]
fn skipped_ddl_sends_postgres_notices() {
    let server = common::Server::start();
    let script = "CREATE TABLE a (id int);
CREATE TABLE IF NOT EXISTS a (id int);
DROP TABLE IF EXISTS nosuch, a2;
DROP INDEX IF EXISTS nosuch_idx;
DROP DATABASE IF EXISTS nosuchdb;
DROP ROLE IF EXISTS nosuchrole;
BEGIN;
DROP TABLE IF EXISTS nosuch;
COMMIT;
DROP TABLE a;
SET client_min_messages = warning;
DROP TABLE IF EXISTS held_back;
RESET client_min_messages;";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("skips.sql");
    std::fs::write(&file, format!("\\set VERBOSITY verbose\n{script}\n")).unwrap();
    let (ok, _out, err) = psql(&server, &["-q", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    // psql writes `psql:FILE:LINE: NOTICE:  ...`.
    let notices: Vec<&str> = err
        .lines()
        .filter_map(|l| l.find("NOTICE:").map(|i| &l[i..]))
        .collect();
    assert_eq!(
        notices,
        [
            "NOTICE:  42P07: relation \"a\" already exists, skipping",
            "NOTICE:  00000: table \"nosuch\" does not exist, skipping",
            "NOTICE:  00000: table \"a2\" does not exist, skipping",
            "NOTICE:  00000: index \"nosuch_idx\" does not exist, skipping",
            "NOTICE:  00000: database \"nosuchdb\" does not exist, skipping",
            "NOTICE:  00000: role \"nosuchrole\" does not exist, skipping",
            "NOTICE:  00000: table \"nosuch\" does not exist, skipping",
        ],
        "{err}"
    );
}

/// Settings given at startup apply as SET would: PGOPTIONS's `-c` and
/// `--name=value` (psql and libpq send them in the `options` parameter),
/// and parameters such as `client_encoding`. One that PostgreSQL would
/// refuse ends the connection with FATAL, as there; so does one quiver
/// does not implement.
#[test]
fn startup_options_apply_or_end_the_connection() {
    let server = common::Server::start();
    let (ok, out, err) = psql_with(
        &server,
        &[(
            "PGOPTIONS",
            "-c statement-timeout=5s --extra-float-digits=0",
        )],
        &[
            "-A",
            "-t",
            "-c",
            "SHOW statement_timeout",
            "-c",
            "SHOW extra_float_digits",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "5s\n0\n");
    for (options, want) in [
        (
            "-c nonsense=1",
            "FATAL:  unrecognized configuration parameter \"nonsense\"",
        ),
        (
            "-c work_mem=1MB",
            "FATAL:  parameter \"work_mem\" is not supported",
        ),
        (
            "-x",
            "FATAL:  invalid command-line argument for server process: -x",
        ),
        (
            "-c extra_float_digits=99",
            "FATAL:  invalid value for parameter \"extra_float_digits\"",
        ),
    ] {
        let (ok, _, err) = psql_with(&server, &[("PGOPTIONS", options)], &["-c", "SELECT 1"]);
        assert!(!ok && err.contains(want), "{options}: {err}");
    }
    let (ok, _, err) = psql_with(
        &server,
        &[("PGCLIENTENCODING", "LATIN1")],
        &["-c", "SELECT 1"],
    );
    assert!(
        !ok && err.contains("FATAL:  SET client_encoding = 'LATIN1' is not supported"),
        "{err}"
    );
    // The server still serves.
    let (ok, out, err) = psql(&server, &["-A", "-t", "-c", "SHOW statement_timeout"]);
    assert!(ok, "{err}");
    assert_eq!(out, "0\n");
}

/// `now()` is the statement's start, not the server's: two statements a
/// second apart differ, and each is within seconds of the clock (every
/// `now()` returned the moment the server started).
#[test]
fn now_is_the_time_of_the_statement() {
    let server = common::Server::start();
    let epoch = |out: &str| out.trim().parse::<f64>().unwrap();
    let ask = || {
        let (ok, out, err) = psql(
            &server,
            &["-A", "-t", "-c", "SELECT extract(epoch FROM now())"],
        );
        assert!(ok, "{err}");
        epoch(&out)
    };
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let first = ask();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = ask();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(second - first >= 1.0, "{first} then {second}");
    assert!(
        (clock - second).abs() < 5.0,
        "now() {second}, clock {clock}"
    );
}

/// Result columns named as PostgreSQL 15 names them when names repeat
/// (DataFusion refuses two columns of one name, and named `SELECT *, id`'s
/// second `id` `__alias_id`); the expected headers are PostgreSQL's.
#[test]
fn repeated_column_names_are_postgres_names() {
    let server = common::Server::start();
    let (ok, _, err) = psql(
        &server,
        &[
            "-c",
            "CREATE TABLE a (id int, k int)",
            "-c",
            "INSERT INTO a VALUES (1, 2)",
        ],
    );
    assert!(ok, "{err}");
    let cases = [
        ("SELECT id, id FROM a", "id|id\n1|1"),
        ("SELECT a.id, 5 AS id FROM a", "id|id\n1|5"),
        (
            "SELECT id, id::text, k::bigint, k FROM a",
            "id|id|k|k\n1|1|2|2",
        ),
        ("SELECT *, id FROM a", "id|k|id\n1|2|1"),
        ("SELECT 1::int, 1::bigint", "int4|int8\n1|1"),
        ("SELECT id, +id FROM a", "id|?column?\n1|1"),
        (
            "SELECT a.id, (SELECT b.id FROM a AS b WHERE b.k = a.k) FROM a",
            "id|id\n1|1",
        ),
        (
            "SELECT id, EXISTS (SELECT 1), NOT EXISTS (SELECT 1), 1 IN (SELECT 1), CASE WHEN 1 IN (SELECT 1) THEN 1 END FROM a",
            "id|exists|?column?|?column?|case\n1|t|f|t|1",
        ),
    ];
    for (query, want) in cases {
        let (ok, out, err) = psql(&server, &["-A", "-P", "footer=off", "-c", query]);
        assert!(ok, "{query}: {err}");
        assert_eq!(out.trim_end(), want, "{query}");
    }
}

/// `\d`, `\d+`, `\dt`, `\di`, `\dx`, `\df` and `\dT` print what PostgreSQL 15 + pgvector 0.8
/// print for the same script (checked there; PostgreSQL's owner is
/// `postgres` where quiver's is the user who created the collection):
/// vector and numeric typmods, NOT NULL, defaults, the primary key and
/// vector indexes with their parameters, quoted names.
#[test]
fn psql_describes_collections_as_postgresql_does() {
    let server = common::Server::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("describe.sql");
    std::fs::write(
        &script,
        r#"CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, price numeric(10,2), score real DEFAULT 0.5, tags text[], embedding vector(3));
CREATE INDEX docs_embedding_idx ON docs USING hnsw (embedding vector_cosine_ops) WITH (m = 8);
CREATE TABLE "Notes" (body text);
\d docs
\d+ docs
\d "Notes"
\dt
\di
\dx
\df vector_norm
\df vector_concat
\df hnswhandler
\dT vector
"#,
    )
    .unwrap();
    let (ok, out, err) = psql(
        &server,
        &["-v", "ON_ERROR_STOP=1", "-f", &script.display().to_string()],
    );
    assert!(ok, "psql failed: {err}\n{out}");
    assert_eq!(
        out,
        r#"CREATE EXTENSION
CREATE TABLE
CREATE INDEX
CREATE TABLE
                    Table "public.docs"
  Column   |     Type      | Collation | Nullable | Default 
-----------+---------------+-----------+----------+---------
 id        | bigint        |           | not null | 
 title     | text          |           | not null | 
 price     | numeric(10,2) |           |          | 
 score     | real          |           |          | 0.5
 tags      | text[]        |           |          | 
 embedding | vector(3)     |           |          | 
Indexes:
    "docs_pkey" PRIMARY KEY, btree (id)
    "docs_embedding_idx" hnsw (embedding vector_cosine_ops) WITH (m='8')

                                               Table "public.docs"
  Column   |     Type      | Collation | Nullable | Default | Storage  | Compression | Stats target | Description 
-----------+---------------+-----------+----------+---------+----------+-------------+--------------+-------------
 id        | bigint        |           | not null |         | plain    |             |              | 
 title     | text          |           | not null |         | extended |             |              | 
 price     | numeric(10,2) |           |          |         | main     |             |              | 
 score     | real          |           |          | 0.5     | plain    |             |              | 
 tags      | text[]        |           |          |         | extended |             |              | 
 embedding | vector(3)     |           |          |         | external |             |              | 
Indexes:
    "docs_pkey" PRIMARY KEY, btree (id)
    "docs_embedding_idx" hnsw (embedding vector_cosine_ops) WITH (m='8')
Access method: heap

              Table "public.Notes"
 Column | Type | Collation | Nullable | Default 
--------+------+-----------+----------+---------
 body   | text |           |          | 

        List of relations
 Schema | Name  | Type  | Owner  
--------+-------+-------+--------
 public | Notes | table | quiver
 public | docs  | table | quiver
(2 rows)

                  List of relations
 Schema |        Name        | Type  | Owner  | Table 
--------+--------------------+-------+--------+-------
 public | docs_embedding_idx | index | quiver | docs
 public | docs_pkey          | index | quiver | docs
(2 rows)

                             List of installed extensions
  Name   | Version |   Schema   |                     Description                      
---------+---------+------------+------------------------------------------------------
 plpgsql | 1.0     | pg_catalog | PL/pgSQL procedural language
 vector  | 0.8.0   | public     | vector data type and ivfflat and hnsw access methods
(2 rows)

                          List of functions
 Schema |    Name     | Result data type | Argument data types | Type 
--------+-------------+------------------+---------------------+------
 public | vector_norm | double precision | vector              | func
(1 row)

                           List of functions
 Schema |     Name      | Result data type | Argument data types | Type 
--------+---------------+------------------+---------------------+------
 public | vector_concat | vector           | vector, vector      | func
(1 row)

                          List of functions
 Schema |    Name     | Result data type | Argument data types | Type 
--------+-------------+------------------+---------------------+------
 public | hnswhandler | index_am_handler | internal            | func
(1 row)

      List of data types
 Schema |  Name  | Description 
--------+--------+-------------
 public | vector | 
(1 row)

"#
    );
}
