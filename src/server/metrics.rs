//! The HTTP port (`[http] listen`, off by default): Prometheus `/metrics`,
//! `/healthz` (the process serves) and `/readyz` (it accepts clients; 503
//! while it starts or stops).
//!
//! Only three GETs are answered, one per connection (`Connection: close`),
//! on tokio directly: hyper's server features would change the features of
//! the hyper that object_store's HTTP client already compiles, and so
//! rebuild DataFusion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use quiver_common::sqlstate::SqlState;
use quiver_planner::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct Latency;

impl MetricConstructor<Histogram> for Latency {
    fn new_metric(&self) -> Histogram {
        // 100 us to about 100 s.
        Histogram::new(exponential_buckets(0.0001, 4.0, 11))
    }
}

/// What the server counts, and what it reads at each scrape.
pub struct Metrics {
    registry: Registry,
    statements: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, Latency>,
    connections: Family<Labels, Gauge>,
    segments: Family<Labels, Gauge>,
    segment_rows: Family<Labels, Gauge>,
    collection_rows: Family<Labels, Gauge>,
    index_rows: Family<Labels, Gauge>,
    memory: Family<Labels, Gauge>,
    wal_bytes: Counter,
    wal_fsyncs: Counter,
    rows_written: Counter,
    /// What the storage counters said at the last scrape.
    seen: [AtomicU64; 3],
    uptime: Gauge,
    started: Instant,
    ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("quiver"),
            statements: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(Latency),
            connections: Family::default(),
            segments: Family::default(),
            segment_rows: Family::default(),
            collection_rows: Family::default(),
            index_rows: Family::default(),
            memory: Family::default(),
            wal_bytes: Counter::default(),
            wal_fsyncs: Counter::default(),
            rows_written: Counter::default(),
            seen: Default::default(),
            uptime: Gauge::default(),
            started: Instant::now(),
            ready: AtomicBool::new(false),
        };
        let r = &mut m.registry;
        r.register(
            "statements",
            "Statements run, by kind",
            m.statements.clone(),
        );
        r.register(
            "statement_errors",
            "Statements that failed, by kind and SQLSTATE class",
            m.errors.clone(),
        );
        r.register(
            "statement_duration_seconds",
            "Time to run a statement (until its first result), by kind",
            m.latency.clone(),
        );
        r.register(
            "connections",
            "Client connections, by state",
            m.connections.clone(),
        );
        r.register("segments", "Segments, by state", m.segments.clone());
        r.register(
            "segment_rows",
            "Rows in segments, by state",
            m.segment_rows.clone(),
        );
        r.register(
            "collection_rows",
            "Rows per collection (deleted ones included until compaction), by segment state",
            m.collection_rows.clone(),
        );
        r.register(
            "index_rows",
            "Rows per vector index: indexed and total (build progress)",
            m.index_rows.clone(),
        );
        r.register("memory_bytes", "Memory, by kind", m.memory.clone());
        r.register(
            "wal_written_bytes",
            "Bytes written to the WAL",
            m.wal_bytes.clone(),
        );
        r.register("wal_fsyncs", "fsyncs of the WAL", m.wal_fsyncs.clone());
        r.register(
            "rows_written",
            "Rows inserted or updated",
            m.rows_written.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the server started",
            m.uptime.clone(),
        );
        m
    }

    /// A statement of `kind` ended after `elapsed`, failing with `error`.
    pub fn observe(&self, kind: &'static str, elapsed: Duration, error: Option<SqlState>) {
        let labels = vec![("kind", kind.to_string())];
        self.statements.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            let class = code.code().get(..2).unwrap_or("XX").to_string();
            self.errors
                .get_or_create(&vec![("kind", kind.to_string()), ("class", class)])
                .inc();
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The metrics in Prometheus' text format, read now.
    pub fn render(&self, engine: &Engine) -> String {
        self.uptime.set(self.started.elapsed().as_secs() as i64);
        self.connections.clear();
        for b in engine.activity().all() {
            self.connections
                .get_or_create(&vec![("state", b.running().state.to_string())])
                .inc();
        }
        self.segments.clear();
        self.segment_rows.clear();
        self.collection_rows.clear();
        self.index_rows.clear();
        let storage = engine.storage();
        for c in storage.all_collections() {
            for (_, state, rows, ..) in c.segment_rows() {
                let labels = vec![("state", state.to_string())];
                self.segments.get_or_create(&labels).inc();
                self.segment_rows.get_or_create(&labels).inc_by(rows as i64);
                self.collection_rows
                    .get_or_create(&vec![
                        ("collection", c.name().to_string()),
                        ("state", state.to_string()),
                    ])
                    .inc_by(rows as i64);
            }
            for r in c.index_reports() {
                let labels = |what: &str| {
                    vec![
                        ("collection", c.name().to_string()),
                        ("index", r.def.name.clone()),
                        ("rows", what.to_string()),
                    ]
                };
                self.index_rows
                    .get_or_create(&labels("indexed"))
                    .set(r.rows_indexed as i64);
                self.index_rows
                    .get_or_create(&labels("total"))
                    .set(r.rows_total as i64);
            }
        }
        let memory = [
            ("resident", resident_bytes()),
            ("insert_buffer", storage.shared().buffered_bytes() as u64),
            ("query_operators", engine.query_memory_reserved() as u64),
        ];
        for (kind, bytes) in memory {
            self.memory
                .get_or_create(&vec![("kind", kind.to_string())])
                .set(bytes as i64);
        }
        let stats = &quiver_storage::stats::STATS;
        let now = [
            stats.wal_bytes.load(Ordering::Relaxed),
            stats.wal_fsyncs.load(Ordering::Relaxed),
            stats.rows_written.load(Ordering::Relaxed),
        ];
        for ((counter, seen), now) in [&self.wal_bytes, &self.wal_fsyncs, &self.rows_written]
            .into_iter()
            .zip(&self.seen)
            .zip(now)
        {
            let before = seen.swap(now, Ordering::Relaxed);
            counter.inc_by(now.saturating_sub(before));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out = "# the metrics could not be encoded\n".into();
        }
        out
    }
}

/// Resident memory of this process (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` for ever.
pub async fn serve_http(listener: TcpListener, engine: Arc<Engine>, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics and health on http");
    }
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("http accept failed: {e}");
                continue;
            }
        };
        let engine = engine.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // The request line and headers, bounded in size and time.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            let read = async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let line = String::from_utf8_lossy(&request);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, content_type, body) = match (method, path) {
                ("GET", "/metrics") => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(&engine),
                ),
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                ("GET", "/readyz") if metrics.ready.load(Ordering::SeqCst) => {
                    ("200 OK", "text/plain", "ready\n".to_string())
                }
                ("GET", "/readyz") => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_string(),
                ),
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
