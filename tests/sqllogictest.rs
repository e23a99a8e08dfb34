//! Runs every `sqllogictest/*.slt` file against the real server over pgwire,
//! once with the simple query protocol and once with the extended protocol
//! (prepared statements, binary results). Each file gets its own server and
//! its own database per protocol.

mod common;

use std::path::PathBuf;

use async_trait::async_trait;
use postgres_types::{FromSql, Type};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{Client, SimpleQueryMessage};

#[derive(Debug)]
struct PgError(String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PgError {}

fn pg_error(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) => PgError(format!("{}: {}", db.code().code(), db.message())),
        None => PgError(e.to_string()),
    }
}

struct Quiver {
    client: Client,
    extended: bool,
}

/// Any value, as raw wire bytes.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// Text form of a binary value, matching what the simple protocol shows.
fn decode(ty: &Type, raw: &[u8]) -> String {
    match ty.oid() {
        16 => if raw[0] != 0 { "t" } else { "f" }.to_string(),
        20 => i64::from_be_bytes(be(raw)).to_string(),
        21 => i16::from_be_bytes(be(raw)).to_string(),
        23 => i32::from_be_bytes(be(raw)).to_string(),
        26 => u32::from_be_bytes(be(raw)).to_string(),
        // regproc: an oid in binary, the function's name in text.
        24 => {
            static NAMES: std::sync::Once = std::sync::Once::new();
            NAMES.call_once(|| quiver_planner::pg_proc::register_names().unwrap());
            quiver_common::regproc::display(i32::from_be_bytes(be(raw)))
        }
        // As PostgreSQL's float4out/float8out write them (text results).
        700 => quiver_server::text_out::float4(f32::from_be_bytes(be(raw)), 1),
        701 => quiver_server::text_out::float8(f64::from_be_bytes(be(raw)), 1),
        1000 | 1005 | 1007 | 1016 | 1021 | 1022 | 1009 | 1015 | 2951 => decode_array(raw),
        2950 => quiver_common::uuid::format(&be(raw)),
        // bit: the length in bits, then the bits, first in the high bit.
        1560 => {
            let n = i32::from_be_bytes(be(raw)) as usize;
            (0..n)
                .map(|i| {
                    if raw[4 + i / 8] & (0x80 >> (i % 8)) != 0 {
                        '1'
                    } else {
                        '0'
                    }
                })
                .collect()
        }
        _ if ty.name() == "vector" => {
            let dim = u16::from_be_bytes(be(raw)) as usize;
            let values: Vec<f32> = (0..dim)
                .map(|i| f32::from_be_bytes(be(&raw[4 + i * 4..])))
                .collect();
            quiver_vector::text::format_vector(&values)
        }
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

fn decode_array(raw: &[u8]) -> String {
    let ndim = i32::from_be_bytes(be(raw));
    if ndim == 0 {
        return "{}".into();
    }
    let elem = u32::from_be_bytes(be(&raw[8..]));
    let len = i32::from_be_bytes(be(&raw[12..])) as usize;
    let mut pos = 12 + 8 * ndim as usize;
    let elem_ty = Type::from_oid(elem).unwrap_or(Type::TEXT);
    let mut items = Vec::new();
    for _ in 0..len {
        let n = i32::from_be_bytes(be(&raw[pos..]));
        pos += 4;
        if n < 0 {
            items.push("NULL".to_string());
        } else {
            items.push(decode(&elem_ty, &raw[pos..pos + n as usize]));
            pos += n as usize;
        }
    }
    format!("{{{}}}", items.join(","))
}

fn cell(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some("") => "(empty)".into(),
        Some(s) => s.to_string(),
    }
}

#[async_trait]
impl AsyncDB for Quiver {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        if !self.extended {
            let messages = self.client.simple_query(sql).await.map_err(pg_error)?;
            let mut rows = Vec::new();
            let mut columns = None;
            let mut count = 0;
            for m in messages {
                match m {
                    SimpleQueryMessage::RowDescription(cols) => columns = Some(cols.len()),
                    SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| cell(r.get(i))).collect());
                    }
                    SimpleQueryMessage::CommandComplete(n) => count = n,
                    _ => {}
                }
            }
            return Ok(match columns {
                Some(n) => DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; n],
                    rows,
                },
                None => DBOutput::StatementComplete(count),
            });
        }
        let stmt = self.client.prepare(sql).await.map_err(pg_error)?;
        if stmt.columns().is_empty() {
            let n = self.client.execute(&stmt, &[]).await.map_err(pg_error)?;
            return Ok(DBOutput::StatementComplete(n));
        }
        let result = self.client.query(&stmt, &[]).await.map_err(pg_error)?;
        let rows = result
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let ty = row.columns()[i].type_();
                        let v: Option<Raw> = row.get(i);
                        match v {
                            None => "NULL".to_string(),
                            Some(raw) => {
                                let s = decode(ty, &raw.0);
                                if s.is_empty() { "(empty)".into() } else { s }
                            }
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; stmt.columns().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        if self.extended {
            "quiver-extended"
        } else {
            "quiver-simple"
        }
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("sqllogictest");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("sqllogictest directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let filter = std::env::var("SLT").ok();
    let mut failures = Vec::new();
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let server = common::Server::start();
        for extended in [false, true] {
            let mode = if extended { "extended" } else { "simple" };
            let db = format!("slt_{}_{mode}", name.replace('-', "_"));
            let admin = server.connect("default").await;
            admin
                .simple_query(&format!("CREATE DATABASE {db}"))
                .await
                .expect("create database");
            let conn = server.conn_string(&db);
            let mut runner = sqllogictest::Runner::new(move || {
                let conn = conn.clone();
                async move {
                    let (client, connection) =
                        tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                            .await
                            .map_err(pg_error)?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok(Quiver { client, extended })
                }
            });
            runner.add_label(mode);
            match runner.run_file_async(&file).await {
                Ok(()) => eprintln!("ok   {name} ({mode})"),
                Err(e) => {
                    eprintln!("FAIL {name} ({mode}):\n{e}");
                    failures.push(format!("{name} ({mode}): {e}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} sqllogictest file run(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
