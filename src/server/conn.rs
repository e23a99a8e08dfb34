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
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use crate::limits::Limits;
use pgwire::error::ErrorInfo;
use quiver_common::sqlstate::{self, SqlState};
use quiver_planner::Session;
use quiver_planner::activity::Registered;

/// Buffered output beyond which writes go out without waiting for a read.
const HIGH_WATER: usize = 64 * 1024;

/// How one connection is served.
#[derive(Debug, Clone)]
pub struct Options {
    pub busy_poll: Duration,
    pub limits: Arc<Limits>,
    /// Over `max_connections`: answer the startup message with 53300.
    pub refuse: bool,
}

/// An I/O object whose flushes are deferred until the next read, and
/// that checks each incoming message's length (see [`Framer`]).
pub struct Coalesce<T> {
    inner: T,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    poll: Option<BusyPoll>,
    framer: Framer,
    /// Follows the messages going out once the client is logged in.
    replies: Replies,
}

/// The server's messages as they go out, followed by their headers: a
/// ReadyForQuery's status byte is set from the session's transaction block
/// (pgwire's own cannot leave a failed block for ROLLBACK TO SAVEPOINT,
/// nor end one that a failed COMMIT ended), and an ErrorResponse inside a
/// block marks the block failed, as every error does in PostgreSQL.
#[derive(Debug, Default)]
struct Replies {
    block: Option<Arc<quiver_planner::session::BlockStatus>>,
    header: [u8; 5],
    have: usize,
    body_left: usize,
    patch_status: bool,
}

/// The length a message header (type byte, then length) declares.
fn declared_length(header: &[u8; 5]) -> usize {
    u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize
}

impl Replies {
    /// Follow `bytes`, which continue the stream of whole messages.
    fn follow(&mut self, bytes: &mut [u8]) {
        let Some(block) = self.block.clone() else {
            return;
        };
        let mut i = 0;
        while i < bytes.len() {
            if self.body_left > 0 {
                if self.patch_status {
                    bytes[i] = block.byte();
                    self.patch_status = false;
                }
                let take = self.body_left.min(bytes.len() - i);
                self.body_left -= take;
                i += take;
                continue;
            }
            self.header[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            if self.have == 5 {
                self.have = 0;
                self.body_left = declared_length(&self.header).saturating_sub(4);
                match self.header[0] {
                    b'E' => block.error(),
                    b'Z' => self.patch_status = self.body_left > 0,
                    _ => {}
                }
            }
        }
    }
}

/// Reads the length of every message the client sends from its header,
/// as the bytes arrive, and stops the connection at the first one longer
/// than the limit in force, before its body is buffered: pgwire would
/// hold a message of any length up to 1 GB in memory, even before login.
/// Typed messages only: it starts after the startup message.
#[derive(Debug, Default)]
struct Framer {
    active: bool,
    limit: usize,
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to come.
    skip: usize,
    /// The current message, header included, while it arrives, for the
    /// types whose fields pgwire decodes (see [`decodes_cleanly`]).
    held: Option<Vec<u8>>,
    /// For a simple query: body bytes seen, and where its first NUL was.
    query: Option<(usize, Option<usize>)>,
    /// For a simple query: its text checked as UTF-8 so far.
    utf8: Utf8Check,
    /// The FATAL error sent, once a message broke the limit.
    failed: Option<String>,
    /// For each Query and Parse message read, in order: whether its text
    /// was not UTF-8. The connection answers such a statement with 22021
    /// when pgwire hands it over (pgwire reads text lossily).
    not_utf8: std::collections::VecDeque<bool>,
}

impl Framer {
    /// Follow `bytes`, the next the client sent; `Err` with the message
    /// that says why the connection must end.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), (SqlState, String)> {
        if !self.active {
            return Ok(());
        }
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                if let Some(held) = &mut self.held {
                    held.extend_from_slice(&bytes[..n]);
                }
                if let Some((seen, nul)) = &mut self.query {
                    if nul.is_none() {
                        *nul = memchr::memchr(0, &bytes[..n]).map(|i| *seen + i);
                    }
                    *seen += n;
                    self.utf8.feed(&bytes[..n]);
                }
                bytes = &bytes[n..];
                self.check_held()?;
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let len = declared_length(&self.header);
            if len < 4 {
                return Err((
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid message length {len}"),
                ));
            }
            if len > self.limit {
                return Err((
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "message of {len} bytes is longer than the limit of {} bytes (max_message_size{})",
                        self.limit,
                        if self.limit < (1 << 20) {
                            " before login: max_startup_message_size"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            self.skip = len - 4;
            // COPY data is read whole, whatever it holds; a simple query
            // must be one string ending with the message (checked as it
            // passes: queries are the largest messages); the other types'
            // fields are decoded as pgwire will.
            match self.header[0] {
                b'd' => {}
                b'Q' => {
                    self.query = Some((0, None));
                    self.utf8 = Utf8Check::default();
                }
                _ => {
                    let mut held = Vec::with_capacity(len + 1);
                    held.extend_from_slice(&self.header);
                    self.held = Some(held);
                }
            }
            self.check_held()?;
        }
        Ok(())
    }

    /// Once the message is whole: whether pgwire reads it as one message
    /// of its declared length.
    fn check_held(&mut self) -> Result<(), (SqlState, String)> {
        if self.skip > 0 {
            return Ok(());
        }
        let kind = self.header[0];
        // A query's text must be UTF-8 (pgwire would read it lossily, and
        // the replacement characters were stored as data). PostgreSQL
        // answers 22021; quiver cannot fail only the statement from here,
        // so the connection ends with it.
        let text_ok = match (&self.held, &self.query) {
            (Some(message), _) if kind == b'P' => Some(parse_text_is_utf8(message)),
            (_, Some(_)) => Some(self.utf8.valid()),
            _ => None,
        };
        let bad = match (self.held.take(), self.query.take()) {
            (Some(message), _) => !decodes_cleanly(&message),
            (_, Some((seen, nul))) => nul != seen.checked_sub(1),
            _ => false,
        };
        if let (Some(ok), false) = (text_ok, bad) {
            self.not_utf8.push_back(!ok);
        }
        if bad && !FRONTEND_TYPES.contains(&kind) {
            // PostgreSQL's words.
            return Err((
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {kind}"),
            ));
        }
        if bad {
            return Err((
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "invalid frontend message of type '{}': its fields do not match its length",
                    (kind as char).escape_default()
                ),
            ));
        }
        Ok(())
    }
}

/// The type bytes of the protocol's frontend messages after startup.
const FRONTEND_TYPES: &[u8] = b"BCDEFHPQSXcdfp";

/// UTF-8 validation of text that arrives in pieces.
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character cut by the end of the last piece.
    carry: Vec<u8>,
    bad: bool,
}

impl Utf8Check {
    fn feed(&mut self, piece: &[u8]) {
        if self.bad {
            return;
        }
        let joined: Vec<u8>;
        let bytes = if self.carry.is_empty() {
            piece
        } else {
            let mut j = std::mem::take(&mut self.carry);
            j.extend_from_slice(piece);
            joined = j;
            &joined
        };
        if let Err(e) = std::str::from_utf8(bytes) {
            match e.error_len() {
                Some(_) => self.bad = true,
                // Cut at the end: the rest comes with the next piece.
                None => self.carry = bytes[e.valid_up_to()..].to_vec(),
            }
        }
    }

    fn valid(&self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

/// Whether a Parse message's statement name and query text are UTF-8.
fn parse_text_is_utf8(message: &[u8]) -> bool {
    let mut fields = message.get(5..).unwrap_or_default().splitn(3, |&b| b == 0);
    let name = fields.next().unwrap_or_default();
    let query = fields.next().unwrap_or_default();
    std::str::from_utf8(name).is_ok() && std::str::from_utf8(query).is_ok()
}

/// The messages a logged-in connection reads from `bytes`, checked as the
/// server checks them (length limit, then [`decodes_cleanly`]) and decoded
/// by pgwire; `Err` with the FATAL error that ends the connection. What the
/// fuzzer feeds (tests/fuzz.rs).
pub fn read_messages(
    bytes: &[u8],
    limit: usize,
) -> Result<Vec<PgWireFrontendMessage>, (SqlState, String)> {
    use pgwire::messages::{DecodeContext, ProtocolVersion};
    let mut framer = Framer {
        active: true,
        limit,
        ..Framer::default()
    };
    framer.feed(bytes)?;
    let mut ctx = DecodeContext::new(ProtocolVersion::default());
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    let mut buf = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        match PgWireFrontendMessage::decode(&mut buf, &ctx) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => break,
            Err(e) => {
                return Err((
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid frontend message: {e}"),
                ));
            }
        }
    }
    Ok(out)
}

/// Whether pgwire decodes `message` (one whole message, header included)
/// into exactly its declared length, without panicking. pgwire's decoders
/// of Bind, Parse, Execute and others read their fields from the whole
/// input buffer with `bytes`' getters: a field that runs past the message
/// reads into the next one, or panics at the end of the input; fields that
/// end early leave the rest to be read as the next message. PostgreSQL
/// refuses both ("invalid message format"); so does quiver, before pgwire
/// sees the message. (Found by fuzzing: `fuzz/corpus/wire/found-*`.)
fn decodes_cleanly(message: &[u8]) -> bool {
    use pgwire::messages::{DecodeContext, ProtocolVersion};
    let mut ctx = DecodeContext::new(ProtocolVersion::default());
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    let mut buf = bytes::BytesMut::from(message);
    // An error counts too: pgwire checks a field's length against the
    // whole buffer, so the same message followed by others reads into them
    // without an error.
    std::panic::catch_unwind(move || {
        matches!(PgWireFrontendMessage::decode(&mut buf, &ctx), Ok(Some(_))) && buf.is_empty()
    })
    .unwrap_or(false)
}

/// A FATAL ErrorResponse, encoded.
fn fatal(code: SqlState, message: &str) -> Vec<u8> {
    use pgwire::messages::Message;
    let info = ErrorInfo::new("FATAL".into(), code.code().into(), message.into());
    let mut buf = bytes::BytesMut::new();
    let _ = pgwire::messages::response::ErrorResponse::from(info).encode(&mut buf);
    buf.to_vec()
}

/// Waiting for a client's next message by polling its socket for a short
/// while after a reply, before the thread goes to sleep.
///
/// A client that sends its next query as soon as it has read the last
/// answer (a driver in a loop, a benchmark, a batch job) finds the server
/// asleep in `epoll_wait`, and waking a sleeping thread is slow on virtual
/// machines whose idle CPUs halt: the host must schedule the CPU again.
/// On a 2-CPU VM a loopback round trip between two threads took 250-470
/// us when the receiver slept and 100 us when it polled. So after a reply
/// the connection peeks at its socket, yielding the CPU to any other
/// runnable thread between peeks, until the client speaks or `window`
/// passes. A client that stayed silent for longer than the window last
/// time is not polled for until it answers within the window again, so an
/// idle connection costs one window. Whether it did is judged when this
/// thread reads, after its own (slow) wake-up, so [`WAKE_SLACK`] is
/// allowed on top: without it a client that answers in 50 us, measured
/// through a 300 us wake-up, would never be polled for again.
/// What a sleeping connection's wake-up may add to a client's answer time
/// when [`BusyPoll`] decides whether to poll for it again (wake-ups took up
/// to 470 us on a 2-CPU VM).
const WAKE_SLACK: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub struct BusyPoll {
    fd: RawFd,
    window: Duration,
    /// When the last reply went out, while the client has not spoken since.
    replied: Option<Instant>,
    /// Whether the client's last message came within the window.
    prompt: bool,
}

impl BusyPoll {
    pub fn new(fd: RawFd, window: Duration) -> Option<BusyPoll> {
        (!window.is_zero()).then_some(BusyPoll {
            fd,
            window,
            replied: None,
            prompt: true,
        })
    }

    /// Whether bytes (or the end of the stream) wait on the socket.
    fn readable(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer we own; the descriptor belongs to the
        // connection's socket, open for as long as the connection.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
    }

    /// Poll the socket until the client speaks or the window passes; true
    /// when there is something to read.
    fn wait(&mut self) -> bool {
        let Some(replied) = self.replied.filter(|_| self.prompt) else {
            return false;
        };
        let deadline = replied + self.window;
        loop {
            if self.readable() {
                return true;
            }
            if Instant::now() >= deadline {
                self.prompt = false;
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// The client spoke: note whether it did so within the window (when
    /// this thread slept meanwhile, within the window and a wake-up).
    fn heard(&mut self) {
        if let Some(replied) = self.replied.take() {
            let allowed = if self.prompt {
                self.window
            } else {
                self.window + WAKE_SLACK
            };
            self.prompt = replied.elapsed() <= allowed;
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            out: Vec::new(),
            written: 0,
            poll: None,
            framer: Framer::default(),
            replies: Replies::default(),
        }
    }

    /// From now on (a message boundary: the client has just logged in),
    /// report `block`'s status in ReadyForQuery and mark it failed on errors.
    fn watch(&mut self, block: Arc<quiver_planner::session::BlockStatus>) {
        self.replies = Replies {
            block: Some(block),
            ..Replies::default()
        };
    }

    /// Check every message from now on against `limit`; `pending` are the
    /// bytes already read that the codec has not consumed yet.
    fn start_framing(&mut self, pending: &[u8], limit: usize) -> Result<(), (SqlState, String)> {
        self.framer.active = true;
        self.framer.limit = limit;
        self.framer.feed(pending)
    }

    /// The limit messages are checked against from now on.
    fn set_message_limit(&mut self, limit: usize) {
        self.framer.limit = limit;
    }

    /// Queue a FATAL error (sent before the connection closes).
    fn fail(&mut self, code: SqlState, message: String) {
        let mut bytes = fatal(code, &message);
        self.replies.follow(&mut bytes);
        self.out.extend_from_slice(&bytes);
        self.framer.failed = Some(message);
    }

    /// Poll the socket for the client's next message after each reply
    /// (see [`BusyPoll`]).
    pub fn with_busy_poll(mut self, poll: Option<BusyPoll>) -> Coalesce<T> {
        self.poll = poll;
        self
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
        if let Some(why) = &this.framer.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())));
        }
        // The client may be waiting for what we have to say.
        let replying = !this.out.is_empty();
        ready!(this.poll_drain(cx))?;
        let before = buf.filled().len();
        ready!(this.read_inner(cx, buf, replying))?;
        if let Err((code, why)) = this.framer.feed(&buf.filled()[before..]) {
            this.fail(code, why.clone());
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Coalesce<T> {
    /// Read and drop the client's input until it closes, or for `limit`.
    async fn discard_input(mut self, limit: Duration) {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = self.inner.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    fn read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        replying: bool,
    ) -> Poll<io::Result<()>> {
        let this = self;
        let Some(poll) = &mut this.poll else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if replying {
            poll.replied = Some(Instant::now());
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                // If the client speaks while we poll, the reactor has its
                // readiness by the time this thread would sleep: it does not.
                poll.wait();
                Poll::Pending
            }
            ready => {
                poll.heard();
                ready
            }
        }
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
        let at = this.out.len();
        this.out.extend_from_slice(buf);
        this.replies.follow(&mut this.out[at..]);
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
    options: Options,
) -> io::Result<()>
where
    H: PgWireServerHandlers,
{
    let limits = options.limits.clone();
    let poll = BusyPoll::new(socket.as_raw_fd(), options.busy_poll);
    let startup = tokio::time::sleep(limits.authentication_timeout);
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
    let mut coalesced = FramedParts::new(Coalesce::new(parts.io).with_busy_poll(poll), parts.codec);
    coalesced.read_buf = parts.read_buf;
    coalesced.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(coalesced);

    let startup_handler = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    let mut logged_in = false;
    // The last message ended a transaction's worth of statements (a simple
    // Query, or the Sync that ends an extended-protocol exchange).
    let mut at_boundary = false;
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        if !logging_in && !logged_in {
            logged_in = true;
            socket.get_mut().set_message_limit(limits.max_message_size);
            if let Some(session) = socket.session_extensions().get::<Session>() {
                let block = session.block().clone();
                socket.get_mut().watch(block);
            }
        }
        let msg = if logging_in {
            tokio::select! {
                _ = &mut startup => None,
                msg = socket.next() => msg,
            }
        } else {
            let session = socket.session_extensions().get::<Session>();
            let in_transaction = session.as_ref().is_some_and(|s| s.block().in_block());
            if let Some(r) = socket.session_extensions().get::<Registered>() {
                r.backend.idle(in_transaction);
            }
            let Some(session) = session else { break };
            // A statement outside a block was its own transaction, which
            // ends at the Query's or Sync's ReadyForQuery (and COMMIT's).
            if !in_transaction && at_boundary {
                session.transaction_ended();
            }
            let idle_limit = session
                .idle_in_transaction_timeout()
                .filter(|_| in_transaction);
            let interrupt = session.interrupt().clone();
            let idle = async {
                match idle_limit {
                    Some(limit) => tokio::time::sleep(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = socket.next() => msg,
                () = idle => {
                    socket.get_mut().fail(
                        sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                        "terminating connection due to idle-in-transaction timeout".into(),
                    );
                    break;
                }
                () = interrupt.until_terminated() => {
                    socket.get_mut().fail(
                        sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection due to administrator command".into(),
                    );
                    break;
                }
            }
        };
        let msg = match msg {
            None => break,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                // A frame pgwire cannot read: say so before closing
                // (unless the length check already did).
                if socket.get_ref().framer.failed.is_none() {
                    let why = format!("invalid frontend message: {e}");
                    socket.get_mut().fail(sqlstate::PROTOCOL_VIOLATION, why);
                }
                break;
            }
        };
        // Terminate: the client is leaving; close so that it sees EOF.
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        at_boundary = matches!(
            msg,
            PgWireFrontendMessage::Query(_) | PgWireFrontendMessage::Sync(_)
        );
        let startup_message = matches!(msg, PgWireFrontendMessage::Startup(_));
        if startup_message && options.refuse {
            socket.get_mut().fail(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!(
                    "sorry, too many clients already (max_connections = {})",
                    limits.max_connections
                ),
            );
            break;
        }
        // Query text that was not UTF-8: PostgreSQL fails the statement
        // with 22021 and the connection goes on.
        if matches!(
            msg,
            PgWireFrontendMessage::Query(_) | PgWireFrontendMessage::Parse(_)
        ) && socket
            .get_mut()
            .framer
            .not_utf8
            .pop_front()
            .unwrap_or(false)
        {
            let extended = matches!(msg, PgWireFrontendMessage::Parse(_));
            let info = ErrorInfo::new(
                "ERROR".into(),
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE.code().into(),
                "invalid byte sequence for encoding \"UTF8\": send the statement's text as UTF-8"
                    .into(),
            );
            process_error(
                &mut socket,
                pgwire::error::PgWireError::UserError(Box::new(info)),
                extended,
            )
            .await?;
            continue;
        }
        note_statement_names(&socket, &msg);
        // Describe of a portal that is a cursor (psycopg's named cursors
        // describe the cursor they declared): its row description.
        if let Some(reply) = describe_cursor(&socket, &msg) {
            match reply {
                Ok(description) => {
                    socket
                        .send(PgWireBackendMessage::RowDescription(description))
                        .await?
                }
                Err(mut e) => {
                    errors.on_error(&socket, &mut e);
                    process_error(&mut socket, e, true).await?;
                }
            }
            continue;
        }
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
            // A FATAL error ends the connection: nothing follows it
            // (pgwire's process_error sends ReadyForQuery after it).
            let info: ErrorInfo = e.into();
            if info.is_fatal() {
                socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                break;
            }
            process_error(
                &mut socket,
                pgwire::error::PgWireError::UserError(Box::new(info)),
                extended_query,
            )
            .await?;
        }
        // From the startup message on, every message has a type byte and a
        // length: check each against the limit before it is read.
        if startup_message && !socket.get_ref().framer.active {
            let pending = socket.read_buffer().to_vec();
            let limit = limits.max_startup_message_size;
            if let Err((code, why)) = socket.get_mut().start_framing(&pending, limit) {
                socket.get_mut().fail(code, why);
                break;
            }
        }
    }
    // Whatever is still buffered (a last error, say) goes out.
    let _ = socket.close().await;
    // After a FATAL the client may still be sending (the rest of a message
    // past the limit): closing with its bytes unread would reset the
    // connection, and the reset can reach it before the error. Read and
    // drop what comes, for a moment, first.
    let io = socket.into_inner();
    if io.framer.failed.is_some() {
        io.discard_input(DISCARD_AFTER_FATAL).await;
    }
    Ok(())
}

/// How long a connection that got a FATAL is read (and its input dropped)
/// before it closes.
const DISCARD_AFTER_FATAL: Duration = Duration::from_millis(500);

/// The row description of a cursor the client describes as a portal (a
/// protocol portal of that name comes first).
fn describe_cursor<C>(
    client: &C,
    msg: &PgWireFrontendMessage,
) -> Option<pgwire::error::PgWireResult<pgwire::messages::data::RowDescription>>
where
    C: ClientInfo + pgwire::api::ClientPortalStore,
    C::PortalStore: pgwire::api::store::PortalStore,
{
    let PgWireFrontendMessage::Describe(d) = msg else {
        return None;
    };
    if d.target_type != pgwire::messages::extendedquery::TARGET_TYPE_BYTE_PORTAL {
        return None;
    }
    let name = d.name.as_deref().filter(|n| !n.is_empty())?;
    if pgwire::api::store::PortalStore::get_portal(client.portal_store(), name).is_some() {
        return None;
    }
    let session = client.session_extensions().get::<Session>()?;
    let schema = session.cursors.schema(name)?;
    Some(
        crate::bits::wire_fields(&schema, &pgwire::api::portal::Format::UnifiedText, None).map(
            |fields| {
                pgwire::messages::data::RowDescription::new(fields.iter().map(Into::into).collect())
            },
        ),
    )
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

    #[test]
    fn utf8_is_checked_across_pieces() {
        let text = "héllo ☃ end".as_bytes();
        for cut in 0..text.len() {
            let mut check = Utf8Check::default();
            check.feed(&text[..cut]);
            check.feed(&text[cut..]);
            assert!(check.valid(), "cut at {cut}");
        }
        let mut check = Utf8Check::default();
        check.feed(b"bad \xc3");
        assert!(!check.valid(), "a character cut at the end");
        let mut check = Utf8Check::default();
        check.feed(b"bad \xff\xfe");
        check.feed(b"more");
        assert!(!check.valid());
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn messages_pgwire_would_misread_are_refused() {
        let mut framer = Framer {
            active: true,
            limit: 1 << 20,
            ..Framer::default()
        };
        // A Parse, then a Bind whose declared length (19) ends inside its
        // parameter format codes.
        let mut parse = b"P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17".to_vec();
        let len = (parse.len() as u32 - 1).to_be_bytes();
        parse[1..5].copy_from_slice(&len);
        assert!(framer.feed(&parse).is_ok());
        let bind = b"B\0\0\0\x13\0s1\0\0\x05\0\0\0\0\0\0\0\0\0";
        // Fed a byte at a time, as a slow client sends it.
        let mut refused = None;
        for b in bind.iter() {
            if let Err(e) = framer.feed(std::slice::from_ref(b)) {
                refused = Some(e);
                break;
            }
        }
        let (code, message) = refused.expect("refused");
        assert_eq!(code, sqlstate::PROTOCOL_VIOLATION);
        assert!(message.contains("type 'B'"), "{message}");
        // A query with bytes after its string, and one without its NUL.
        for body in [&b"SELECT 1\0X\0"[..], &b"SELECT 1"[..]] {
            let mut framer = Framer {
                active: true,
                limit: 1 << 20,
                ..Framer::default()
            };
            let mut query = vec![b'Q'];
            query.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            query.extend_from_slice(body);
            assert!(framer.feed(&query).is_err(), "{body:?}");
        }
        let mut framer = Framer {
            active: true,
            limit: 1 << 20,
            ..Framer::default()
        };
        let mut query = b"Q\0\0\0\x0dSELECT 1\0".to_vec();
        query.extend_from_slice(b"S\0\0\0\x04");
        for b in &query {
            assert!(framer.feed(std::slice::from_ref(b)).is_ok());
        }
        // A well-formed Bind passes.
        let mut framer = Framer {
            active: true,
            limit: 1 << 20,
            ..Framer::default()
        };
        let mut good = b"B\0\0\0\0\0s1\0\0\0\0\x01\0\0\0\x011\0\0".to_vec();
        let len = (good.len() as u32 - 1).to_be_bytes();
        good[1..5].copy_from_slice(&len);
        assert!(framer.feed(&good).is_ok());
        assert!(framer.held.is_none());
    }

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

    /// A connected loopback TCP pair: (client, server).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn busy_poll_sees_a_prompt_client_and_stops_for_a_silent_one() {
        let (mut client, server) = tcp_pair().await;
        assert!(BusyPoll::new(server.as_raw_fd(), Duration::ZERO).is_none());
        let mut poll = BusyPoll::new(server.as_raw_fd(), Duration::from_millis(200)).unwrap();
        // Nothing replied yet: nothing to wait for.
        assert!(!poll.wait());
        // A client that answers within the window is seen while polling.
        poll.replied = Some(Instant::now());
        let answer = std::thread::spawn({
            let mut c = client.into_std().unwrap();
            move || {
                std::thread::sleep(Duration::from_millis(2));
                std::io::Write::write_all(&mut c, b"q").unwrap();
                c
            }
        });
        assert!(poll.wait(), "the client's message was not seen");
        poll.heard();
        assert!(poll.prompt);
        client = TcpStream::from_std(answer.join().unwrap()).unwrap();
        // Peeking leaves the byte to be read.
        let mut server = server;
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"q");
        // A silent client: the window passes, and the next reply is not
        // followed by polling at all.
        poll.replied = Some(Instant::now());
        assert!(!poll.wait());
        assert!(!poll.prompt);
        poll.replied = Some(Instant::now());
        client.write_all(b"r").await.unwrap();
        assert!(!poll.wait(), "polled for a client that was silent");
        // It answers within the window again: polling resumes.
        poll.heard();
        assert!(poll.prompt);
        server.read_exact(&mut one).await.unwrap();
        // Not polled for, a client is judged prompt again if it answered
        // within the window plus a wake-up, and not if later than that.
        poll.prompt = false;
        poll.replied = Instant::now().checked_sub(poll.window + WAKE_SLACK / 2);
        poll.heard();
        assert!(poll.prompt, "a prompt client measured through a wake-up");
        poll.prompt = false;
        poll.replied = Instant::now().checked_sub(poll.window + WAKE_SLACK * 2);
        poll.heard();
        assert!(!poll.prompt, "a slow client is polled for again");
        // The end of the stream counts as something to read.
        poll.prompt = true;
        drop(client);
        poll.replied = Some(Instant::now());
        assert!(poll.wait());
    }

    #[tokio::test]
    async fn coalesce_with_busy_poll_delivers_both_ways() {
        let (mut client, server) = tcp_pair().await;
        let poll = BusyPoll::new(server.as_raw_fd(), Duration::from_millis(5));
        let mut server = Coalesce::new(server).with_busy_poll(poll);
        let mut buf = [0u8; 5];
        for round in 0..20u8 {
            client.write_all(&[round; 5]).await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [round; 5]);
            server.write_all(&[round + 1; 5]).await.unwrap();
            server.flush().await.unwrap();
            // The reply goes out when the server next reads, which polls.
            let (read, _) = tokio::join!(client.read_exact(&mut buf), async {
                let mut next = [0u8; 5];
                // Times out while polling/sleeping: the client sends nothing
                // more this round.
                let _ =
                    tokio::time::timeout(Duration::from_millis(1), server.read_exact(&mut next))
                        .await;
            });
            read.unwrap();
            assert_eq!(buf, [round + 1; 5]);
        }
    }
}
