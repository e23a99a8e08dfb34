//! The access layer: the PostgreSQL wire protocol (pgwire) in front of the
//! engine. It turns bytes into statements and results into bytes; nothing else.

pub mod bits;
pub mod bootstrap;
pub mod conn;
pub mod copy;
pub mod error;
pub mod handler;
pub mod limits;
pub mod metrics;
pub mod startup;
pub mod text_out;

use std::future::Future;
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpListener;
use tracing::{info, warn};

use handler::QuiverHandlers;
pub use limits::Limits;
use quiver_auth::AuthConfig;
use quiver_planner::Engine;

pub use bootstrap::bootstrap;
use startup::Logins;

/// The TLS acceptor for the configured certificate and key (PEM).
pub fn tls_acceptor(auth: &AuthConfig) -> Result<Option<TlsAcceptor>, String> {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&auth.tls_cert, &auth.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err("TLS needs both tls.cert and tls.key".into()),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read TLS key {}: {e}", key.display()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key: {e}"))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Serve connections from `listener` until `shutdown` completes. After a
/// reply each connection polls its socket for `busy_poll` before sleeping
/// (zero: never; see [`conn::BusyPoll`]).
pub async fn serve(
    engine: Arc<Engine>,
    auth: AuthConfig,
    busy_poll: std::time::Duration,
    limits: Limits,
    http: Option<std::net::SocketAddr>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = tls_acceptor(&auth).map_err(std::io::Error::other)?;
    if tls.is_some() {
        info!("TLS is enabled");
    }
    for (name, value) in [
        ("statement_timeout", limits.statement_timeout),
        (
            "idle_in_transaction_session_timeout",
            limits.idle_in_transaction_session_timeout,
        ),
    ] {
        engine
            .set_session_default(name, &value.as_millis().to_string())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = http {
        let http = TcpListener::bind(addr).await?;
        tokio::spawn(metrics::serve_http(http, engine.clone(), metrics.clone()));
    }
    let handlers = Arc::new(QuiverHandlers::new(
        engine,
        Arc::new(Logins::new(auth)),
        metrics.clone(),
    ));
    metrics.set_ready(true);
    tokio::pin!(shutdown);
    info!(addr = %listener.local_addr()?, "quiver is accepting connections");
    let connections = Arc::new(limits::Connections::default());
    let limits = Arc::new(limits);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    // Past the limit a client is still told why (53300,
                    // after its startup message); far past it, a flood is
                    // not even read.
                    let open = connections.open();
                    if open >= limits.max_connections.saturating_mul(2).max(limits.max_connections + 16) {
                        warn!(%addr, open, "connection dropped: far more clients than max_connections");
                        continue;
                    }
                    let slot = connections.take();
                    let refuse = open >= limits.max_connections;
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    let tls = tls.clone();
                    let limits = limits.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let options = conn::Options { busy_poll, limits, refuse };
                        if let Err(e) = conn::process(socket, tls, handlers, options).await {
                            warn!(%addr, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = &mut shutdown => {
                metrics.set_ready(false);
                info!("shutting down: no longer accepting connections");
                return Ok(());
            }
        }
    }
}
