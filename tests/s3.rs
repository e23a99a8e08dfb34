//! Segments and the manifest on a real S3-compatible server on loopback
//! (moto's S3 server, installed by `make test`'s setup), with the WAL on
//! local disk: write, flush, kill -9, restart, read back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

struct S3Server {
    child: Child,
    port: u16,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP request; returns the response (status line and body).
fn http(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn start_s3() -> S3Server {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (make test installs moto)");
    let server = S3Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto's S3 server did not start (is moto installed? `make test` installs it)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_and_manifest_live_on_s3() {
    let s3 = start_s3();
    let created = http(s3.port, "PUT", "/quiver-test");
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("quiver.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nroot = \"s3://quiver-test/prod\"\nseal_idle_ms = 600000\n\
             [storage.s3]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n",
            s3.port
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let mut server = Server::start_with(&["--config", &cfg]);
    let client = server.connect("default").await;
    client
        .batch_execute(
            "CREATE COLLECTION t (id BIGINT PRIMARY KEY, v VECTOR(2));
             INSERT INTO t SELECT i, '[1,1]'::vector(2) FROM generate_series(1, 100) AS s(i);
             FLUSH t;
             DELETE FROM t WHERE id > 90;
             INSERT INTO t VALUES (500, '[0,0]');",
        )
        .await
        .unwrap();
    let listing = http(s3.port, "GET", "/quiver-test?list-type=2&prefix=prod/");
    assert!(listing.contains("prod/catalog/manifest-"), "{listing}");
    assert!(listing.contains("prod/collections/"), "{listing}");
    assert!(listing.contains("data-0.parquet"), "{listing}");
    // Nothing but the WAL and the lock is on local disk.
    let local: Vec<String> = std::fs::read_dir(&server.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !local.iter().any(|n| n == "catalog" || n == "default"),
        "{local:?}"
    );
    drop(client);
    server.kill_and_restart();
    let client = server.connect("default").await;
    let r = client
        .query_one("SELECT count(*), max(id) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 91);
    assert_eq!(r.get::<_, i64>(1), 500);
    let nearest: i64 = client
        .query_one("SELECT id FROM t ORDER BY v <-> '[0,0]' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nearest, 500);
}
