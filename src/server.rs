//! The access layer: the PostgreSQL wire protocol (pgwire) in front of the
//! engine. It turns bytes into statements and results into bytes; nothing else.

pub mod copy;
pub mod error;
pub mod handler;
pub mod startup;

use std::future::Future;
use std::sync::Arc;

use pgwire::tokio::process_socket;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::planner::Engine;
use handler::QuiverHandlers;

/// Serve connections from `listener` until `shutdown` completes.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handlers = Arc::new(QuiverHandlers::new(engine));
    tokio::pin!(shutdown);
    info!(addr = %listener.local_addr()?, "quiver is accepting connections");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    tokio::spawn(async move {
                        if let Err(e) = process_socket(socket, None, handlers).await {
                            warn!(%addr, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = &mut shutdown => {
                info!("shutting down: no longer accepting connections");
                return Ok(());
            }
        }
    }
}
