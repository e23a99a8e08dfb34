//! The `quiver` binary: `quiver serve` runs the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver::config::{Config, Overrides};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "A vector database spoken to in SQL over the PostgreSQL wire protocol",
    long_about = "A vector database spoken to in SQL over the PostgreSQL wire protocol.\n\n\
Settings are layered: defaults < quiver.toml (--config) < QUIVER_* environment variables < flags.\n\
Logging is controlled with RUST_LOG (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on [default: 127.0.0.1:5433].
        #[arg(long, env = "QUIVER_LISTEN", value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Data directory [default: ./data].
        #[arg(long, env = "QUIVER_DATA_DIR", value_name = "PATH")]
        data_dir: Option<PathBuf>,
        /// Microseconds a connection polls for the client's next message
        /// after a reply before sleeping; 0 turns polling off [default: 300].
        #[arg(long, env = "QUIVER_BUSY_POLL_US", value_name = "MICROSECONDS")]
        busy_poll_us: Option<u64>,
        /// Path of a quiver.toml configuration file.
        #[arg(long, env = "QUIVER_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Object storage root: a local path or s3://bucket/prefix
        /// [default: the data directory].
        #[arg(long, env = "QUIVER_STORAGE_ROOT", value_name = "URL")]
        storage_root: Option<String>,
        /// WAL durability: always (fsync before acknowledging) or batch(<ms>).
        #[arg(long, env = "QUIVER_WAL_SYNC", value_name = "MODE")]
        wal_sync: Option<String>,
        /// Bytes of unflushed rows before writers wait [default: 268435456].
        #[arg(long, env = "QUIVER_INSERT_BUFFER_SIZE", value_name = "BYTES")]
        insert_buffer_size: Option<usize>,
        /// Password of the superuser created on first start [default: random,
        /// printed once and written to <data dir>/initial-password].
        #[arg(
            long,
            env = "QUIVER_PASSWORD",
            value_name = "PASSWORD",
            hide_env_values = true
        )]
        password: Option<String>,
        /// Let loopback clients log in without a password (development only).
        #[arg(long, env = "QUIVER_LOOPBACK_TRUST", value_name = "BOOL")]
        loopback_trust: Option<bool>,
        /// Refuse connections without TLS from non-loopback addresses.
        #[arg(long, env = "QUIVER_REQUIRE_TLS", value_name = "BOOL")]
        require_tls: Option<bool>,
        /// TLS certificate chain (PEM).
        #[arg(long, env = "QUIVER_TLS_CERT", value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, env = "QUIVER_TLS_KEY", value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// Serve /metrics, /healthz and /readyz over HTTP here
        /// (host:port) [default: off].
        #[arg(long, env = "QUIVER_HTTP_LISTEN", value_name = "ADDR")]
        http_listen: Option<String>,
    },
}

/// Rust's allocations go to jemalloc, which reuses freed pages: with
/// glibc, every large buffer (a COPY's columns, a WAL frame, a Parquet
/// page) was mapped fresh and faulted in page by page, and that was 40 % of
/// a binary COPY's server CPU. (C++ code, faiss, still uses glibc's.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (`_RJEM_MALLOC_CONF` in the
/// environment overrides them):
/// - `oversize_threshold:0`: large blocks are reused like the others.
///   (By default those of 8 MiB and more go to an arena that returns them
///   to the system at once, and are faulted in afresh each time.)
/// - `background_thread:true`, `dirty_decay_ms:1000`, `muzzy_decay_ms:0`:
///   a thread returns pages that stayed free for about a second, so an
///   idle server's RSS falls back to what it uses.
/// - `narenas:1`: one arena, so that a page one thread frees is reused by
///   the next that allocates. (With an arena per thread, a 660 MB text COPY
///   raised the peak RSS by 230 MiB instead of 140; one binary COPY of
///   1,000,000 vector rows peaked at 630 MB instead of 350.)
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &u8 = &b"oversize_threshold:0,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0"[0];

fn main() -> ExitCode {
    quiver::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            busy_poll_us,
            config,
            storage_root,
            wal_sync,
            insert_buffer_size,
            password,
            loopback_trust,
            require_tls,
            tls_cert,
            tls_key,
            http_listen,
        } => {
            let overrides = Overrides {
                listen,
                data_dir,
                busy_poll_us,
                storage_root,
                wal_sync,
                insert_buffer_size,
                password: password.map(quiver::auth::Secret),
                loopback_trust,
                require_tls,
                tls_cert,
                tls_key,
                http_listen,
            };
            let config = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    error!("{e}");
                    return ExitCode::from(2);
                }
            };
            // Planning and evaluating an expression recurse once per level
            // of it; statements are refused past MAX_EXPRESSION_DEPTH, and
            // every runtime thread has room for that many levels.
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(quiver::STATEMENT_STACK_BYTES)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    error!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(serve(config));
            // An index build still running on a blocking thread is not
            // waited for: its segment is indexed again after the next start.
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    #[cfg(unix)]
    quiver::make_data_dir_private(&config.data_dir).map_err(|e| {
        format!(
            "cannot make the data directory {} private: {e}",
            config.data_dir.display()
        )
    })?;
    quiver::return_freed_memory(std::time::Duration::from_secs(5));
    if let Some(dir) = &config.memory.spill_dir {
        // Spill files of a server that stopped are of no use.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the spill directory {}: {e}", dir.display()))?;
    }
    let engine = quiver::open_engine(config.storage.clone(), config.memory.clone())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(password) =
        quiver::server::bootstrap(engine.catalog(), &config.auth, &config.data_dir)
            .map_err(|e| e.to_string())?
    {
        let file = config.data_dir.join(quiver::auth::INITIAL_PASSWORD_FILE);
        info!(file = %file.display(), user = %config.auth.superuser, "created the superuser with a generated password (shown once on stdout)");
        show_once(&config.auth.superuser, &password, &file);
    }
    // Fail before listening if the certificate cannot be used.
    quiver::server::tls_acceptor(&config.auth)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    info!(data_dir = %config.data_dir.display(), "quiver {} starting", env!("CARGO_PKG_VERSION"));
    quiver::server::serve(
        engine.clone(),
        config.auth.clone(),
        config.busy_poll,
        config.limits.clone(),
        config.http_listen,
        listener,
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())?;
    // Fast shutdown, as PostgreSQL's: every connection is told (FATAL
    // 57P01) and running queries stop; writes finish what they applied.
    let connections = engine.activity().all();
    if !connections.is_empty() {
        info!(connections = connections.len(), "ending connections");
    }
    for c in &connections {
        c.interrupt
            .request(quiver::common::interrupt::Canceled::Terminated);
    }
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    while !engine.activity().all().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    info!("flushing before exit");
    engine.storage().flush_all().await;
    Ok(())
}

/// How long a shutdown waits for connections to end and for background
/// work to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Tell the operator the generated superuser password, once.
#[allow(clippy::print_stdout)]
fn show_once(user: &str, password: &str, file: &std::path::Path) {
    println!(
        "superuser \"{user}\" created with password: {password}\n(also in {}, readable by this user only; change it with ALTER USER {user} PASSWORD '...')",
        file.display()
    );
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
