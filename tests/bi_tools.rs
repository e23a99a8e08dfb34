//! The introspection queries BI and database tools send on connect and
//! while browsing (DBeaver, Metabase, Grafana, Superset through SQLAlchemy,
//! Power BI through Npgsql, Tableau and every JDBC tool through pgjdbc),
//! replayed against the real server. The queries are in `tests/bi/*.sql`,
//! taken from the tools' public source and from recordings of their
//! traffic (`tests/bi/SOURCES.txt` says where each comes from); each was
//! run against PostgreSQL 15 + pgvector 0.8 first.
//!
//! Each query is sent as the tools send it, through the extended protocol
//! (prepared, then executed), or as one simple query when it is a batch of
//! statements; and then as a simple query to read its rows. A tool's
//! queries together must list the database, the schema, the collection,
//! its columns and their types. The few that quiver does not answer are
//! listed below with their reason; one of them that starts to work fails
//! the test too, so the list stays true.

mod common;

use tokio_postgres::SimpleQueryMessage;

/// Queries quiver does not answer yet: (file, words of the entry's
/// header, why).
const KNOWN_FAILURES: &[(&str, &str, &str)] = &[];

/// The entries of a query file: (header line, query text).
fn entries(text: &str) -> Vec<(String, String)> {
    let body = if text.starts_with("--") {
        text.split_once("\n\n").map_or("", |(_, b)| b)
    } else {
        text
    };
    body.split("\n;\n")
        .map(|chunk| chunk.trim_matches('\n'))
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let (header, sql) = chunk.split_once('\n').unwrap_or((chunk, ""));
            (header.to_string(), sql.to_string())
        })
        .collect()
}

/// Whether `sql` holds more than one statement, or none (only comments):
/// such a text is sent as a simple query.
fn simple_only(sql: &str) -> bool {
    let code: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.trim().trim_end_matches(';');
    code.is_empty() || code.contains(";\n") || code.contains("; ")
}

/// The known failure that names this entry, if any.
fn known(file: &str, header: &str, sql: &str) -> Option<&'static str> {
    KNOWN_FAILURES
        .iter()
        .find(|(f, words, _)| *f == file && (sql.contains(words) || header.contains(words)))
        .map(|(_, _, why)| *why)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_tools_introspection_queries() {
    let server = common::Server::start();
    let admin = server.connect("default").await;
    // The files name the database `postgres` and a table `items`.
    admin
        .batch_execute("CREATE DATABASE postgres")
        .await
        .unwrap();
    let client = server.connect("postgres").await;
    client
        .batch_execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL DEFAULT 'x', \
             category text, price numeric(10,2), created_at timestamp, embedding vector(3)); \
             CREATE INDEX items_embedding_idx ON items USING hnsw (embedding vector_l2_ops); \
             INSERT INTO items (name, category, price, embedding) VALUES ('a', 'c', 1.50, '[1,2,3]')",
        )
        .await
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bi");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "the query files are missing from {dir:?}");
    let mut problems = Vec::new();
    let mut total = 0;
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let mut cells = std::collections::HashSet::new();
        for (header, sql) in entries(&text) {
            total += 1;
            let expected = known(&file, &header, &sql);
            let describe = |e: tokio_postgres::Error| {
                e.as_db_error()
                    .map(|d| format!("{}: {}", d.code().code(), d.message()))
                    .unwrap_or_else(|| e.to_string())
            };
            let prepared = if simple_only(&sql) {
                Ok(())
            } else {
                match client.prepare(&sql).await {
                    Ok(stmt) => client.query(&stmt, &[]).await.map(|_| ()).map_err(describe),
                    Err(e) => Err(describe(e)),
                }
            };
            let simple = client.simple_query(&sql).await;
            let outcome = match (&prepared, &simple) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), Err(e)) => Err(e
                    .as_db_error()
                    .map(|d| format!("{}: {}", d.code().code(), d.message()))
                    .unwrap_or_else(|| e.to_string())),
                (Ok(()), Ok(_)) => Ok(()),
            };
            match (outcome, expected) {
                (Ok(()), None) => {}
                (Ok(()), Some(why)) => problems.push(format!(
                    "{file}: {header}\n  now works; remove it from KNOWN_FAILURES ({why})"
                )),
                (Err(msg), None) => problems.push(format!("{file}: {header}\n  {msg}\n  {sql}")),
                (Err(_), Some(_)) => {}
            }
            if let Ok(messages) = simple {
                for m in messages {
                    if let SimpleQueryMessage::Row(row) = m {
                        for i in 0..row.len() {
                            if let Some(v) = row.get(i) {
                                cells.insert(v.to_string());
                            }
                        }
                    }
                }
            }
        }
        // What a user browsing with the tool sees: the database (through
        // JDBC's catalog for the JDBC tools), the schema, the collection,
        // its columns and the vector type.
        // Grafana connects to one database and lists none; Tableau's file
        // holds its table and column lookups only.
        let wanted: &[&str] = match file.as_str() {
            "tableau.sql" => &["public", "items", "embedding"],
            "grafana.sql" => &["public", "items", "embedding", "vector"],
            _ => &["postgres", "public", "items", "embedding", "vector"],
        };
        for w in wanted {
            // A type may come with its typmod (`vector(3)`).
            let listed = cells
                .iter()
                .any(|c| c == w || (*w == "vector" && c.starts_with("vector(")));
            if !listed {
                problems.push(format!("{file}: no query listed {w:?}"));
            }
        }
    }
    assert!(total >= 190, "only {total} queries read");
    assert!(
        problems.is_empty(),
        "{} of {total} queries:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
