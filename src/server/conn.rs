//! One client connection: pgwire's message handling over a socket whose
//! writes are coalesced.
//!
//! pgwire flushes after most messages (BindComplete, CommandComplete,
//! ReadyForQuery, ...), which costs one `send` system call each: three to
//! four for a prepared query, about a quarter of the server's time on a
//! small query. PostgreSQL writes its replies when it is about to wait for
//! the client. [`Coalesce`] does the same: flushes are deferred, and what
//! is buffered is written before the connection reads again, before it
//! closes, or when more than [`HIGH_WATER`] bytes wait.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

/// Buffered output beyond which writes go out without waiting for a read.
const HIGH_WATER: usize = 64 * 1024;

/// How long a client has to finish logging in.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// An I/O object whose flushes are deferred until the next read.
pub struct Coalesce<T> {
    inner: T,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            out: Vec::new(),
            written: 0,
        }
    }

    /// Write out everything buffered, then flush the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The client may be waiting for what we have to say.
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Deferred to the next read (or to shutdown).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Serve one TCP connection until the client leaves.
pub async fn process<H>(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Arc<H>,
) -> io::Result<()>
where
    H: PgWireServerHandlers,
{
    let startup = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup);
    let negotiated = tokio::select! {
        _ = &mut startup => return Ok(()),
        negotiated = negotiate_tls(socket, tls) => negotiated?,
    };
    let Some(framed) = negotiated else {
        // A direct TLS handshake without TLS configured.
        return Ok(());
    };
    let parts = framed.into_parts();
    let mut coalesced = FramedParts::new(Coalesce::new(parts.io), parts.codec);
    coalesced.read_buf = parts.read_buf;
    coalesced.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(coalesced);

    let startup_handler = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if logging_in {
            tokio::select! {
                _ = &mut startup => None,
                msg = socket.next() => msg,
            }
        } else {
            socket.next().await
        };
        let Some(Ok(msg)) = msg else { break };
        // Terminate: the client is leaving; close so that it sees EOF.
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        note_statement_names(&socket, &msg);
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            msg,
            &mut socket,
            startup_handler.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
    }
    // Whatever is still buffered (a last error, say) goes out.
    let _ = socket.close().await;
    Ok(())
}

/// The names of a connection's prepared statements, so that `DEALLOCATE
/// ALL` can forget each (pgwire's statement store cannot list them).
#[derive(Debug, Default)]
pub struct StatementNames(pub parking_lot::Mutex<std::collections::BTreeSet<String>>);

fn note_statement_names<C: ClientInfo>(client: &C, msg: &PgWireFrontendMessage) {
    let (name, add) = match msg {
        PgWireFrontendMessage::Parse(p) => (&p.name, true),
        PgWireFrontendMessage::Close(c)
            if c.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT =>
        {
            (&c.name, false)
        }
        _ => return,
    };
    let Some(name) = name.as_ref().filter(|n| !n.is_empty()) else {
        return;
    };
    let names = client
        .session_extensions()
        .get_or_insert_with(StatementNames::default);
    let mut names = names.0.lock();
    if add {
        names.insert(name.clone());
    } else {
        names.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_wait_for_the_next_read() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut server = Coalesce::new(server);
        let mut client = client;
        server.write_all(b"one ").await.unwrap();
        server.flush().await.unwrap();
        server.write_all(b"two").await.unwrap();
        server.flush().await.unwrap();
        // Nothing has gone out yet: a read on the server side sends it.
        let mut got = [0u8; 7];
        let pending =
            tokio::time::timeout(Duration::from_millis(50), client.read_exact(&mut got)).await;
        assert!(pending.is_err(), "output went out before a read");
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
        // Large output goes out without a read; shutdown sends the rest.
        let big = vec![7u8; HIGH_WATER * 3];
        server.write_all(&big).await.unwrap();
        server.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, big);
    }
}
