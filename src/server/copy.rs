//! The COPY-in sub-protocol: CopyData messages feed the statement's
//! [`CopyIn`]; CopyDone applies it and answers `COPY n`.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};

use super::error::{error_info, to_pgwire};
use quiver_common::interrupt::Canceled;
use quiver_common::sqlstate;
use quiver_exec::copy::CopyIn;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow_pg::datatypes::encode_recordbatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::types::format::FormatOptions;
use quiver_planner::QueryError;
use quiver_planner::activity::{CopyProgress, Registered};
use quiver_sql::statement::CopyOptions;

/// The COPY in progress on a connection, and the first error it met.
#[derive(Default)]
pub struct CopyState {
    inner: Mutex<Option<Result<Box<CopyIn>, QueryError>>>,
}

/// Start a COPY: keep its state on the connection and ask for the data.
pub fn start<C: ClientInfo + ?Sized>(client: &C, copy: Box<CopyIn>) -> Response {
    let columns = copy.column_count();
    let binary = copy.binary();
    progress(
        client,
        Some(CopyProgress {
            relname: copy.collection().to_string(),
            ..CopyProgress::default()
        }),
    );
    let state = client
        .session_extensions()
        .get_or_insert_with(CopyState::default);
    *state.inner.lock() = Some(Ok(copy));
    let format = if binary { 1 } else { 0 };
    Response::CopyIn(CopyResponse::new(format, columns, futures::stream::empty()))
}

/// Show the COPY's progress in `pg_stat_progress_copy` (or end it).
fn progress<C: ClientInfo + ?Sized>(client: &C, now: Option<CopyProgress>) {
    if let Some(r) = client.session_extensions().get::<Registered>() {
        r.backend.set_copy_progress(now);
    }
}

fn take<C: ClientInfo + ?Sized>(client: &C) -> Option<Result<Box<CopyIn>, QueryError>> {
    progress(client, None);
    client
        .session_extensions()
        .get::<CopyState>()
        .and_then(|s| s.inner.lock().take())
}

/// Whether the session's COPY must stop (a cancel request, the
/// statement_timeout set when the COPY statement began, or a termination).
fn interrupted<C: ClientInfo + ?Sized>(client: &C) -> Result<(), Canceled> {
    match client.session_extensions().get::<quiver_planner::Session>() {
        Some(session) => session.interrupt().check(),
        None => Ok(()),
    }
}

pub struct QuiverCopy;

#[async_trait]
impl CopyHandler for QuiverCopy {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(state) = client.session_extensions().get::<CopyState>() else {
            return Ok(());
        };
        // After an error the rest of the data is ignored; CopyDone reports it.
        // (Taken first: the guard must not live through the match.)
        let taken = state.inner.lock().take();
        let mut copy = match taken {
            Some(Ok(copy)) => copy,
            other => {
                *state.inner.lock() = other;
                return Ok(());
            }
        };
        // A cancel request or statement_timeout stops the COPY here; its
        // staged files go with it, and CopyDone reports 57014.
        if let Err(c) = interrupted(client) {
            drop(copy);
            progress(client, None);
            *state.inner.lock() = Some(Err(c.into()));
            return Ok(());
        }
        let pushed = match copy.push(&copy_data.data) {
            // A large COPY writes what fills a segment now.
            Ok(()) => copy.stage_if_large().await,
            Err(e) => Err(e),
        };
        match pushed {
            Err(e) => *state.inner.lock() = Some(Err(e.into())),
            Ok(()) => {
                if let Some(r) = client.session_extensions().get::<Registered>() {
                    let mut now = r.backend.copy_progress().unwrap_or_default();
                    now.bytes_processed += copy_data.data.len() as u64;
                    now.tuples_processed = copy.rows_read() as u64;
                    r.backend.set_copy_progress(Some(now));
                }
                *state.inner.lock() = Some(Ok(copy));
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let copy = match take(client) {
            Some(Ok(copy)) => copy,
            Some(Err(e)) => return Err(to_pgwire(e)),
            None => {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    sqlstate::PROTOCOL_VIOLATION.code().into(),
                    "COPY data received without a COPY statement".into(),
                ))));
            }
        };
        if let Err(c) = interrupted(client) {
            drop(copy);
            return Err(to_pgwire(c.into()));
        }
        let tx = client
            .session_extensions()
            .get::<quiver_planner::Session>()
            .and_then(|s| s.transaction());
        let rows = copy
            .finish(tx.as_deref())
            .await
            .map_err(|e| to_pgwire(e.into()))?;
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(rows).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _ = take(client);
        let mut info = error_info(&QueryError::Unsupported(String::new()));
        info.code = sqlstate::QUERY_CANCELED.code().into();
        info.message = format!("COPY from stdin failed: {}", fail.message);
        PgWireError::UserError(Box::new(info))
    }
}

/// `COPY ... TO STDOUT`: the rows of `stream` as COPY data in `options`'
/// format (PostgreSQL's text or csv), one CopyData message per row. Values
/// are written as a query's text results are (arrow-pg's encoders), then
/// escaped or quoted as the format wants.
pub fn copy_out(
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    options: CopyOptions,
    format: Arc<FormatOptions>,
) -> Result<CopyResponse, QueryError> {
    let wire = if options.binary {
        Format::UnifiedBinary
    } else {
        Format::UnifiedText
    };
    let fields = Arc::new(
        super::bits::wire_fields(&schema, &wire, Some(format))
            .map_err(|e| QueryError::Unsupported(e.to_string()))?,
    );
    let columns = fields.len();
    if options.binary {
        return Ok(binary_out(fields, stream));
    }
    let mut header = options.header.then(|| {
        let names: Vec<Option<&[u8]>> = fields.iter().map(|f| Some(f.name().as_bytes())).collect();
        let mut line = Vec::new();
        write_line(&mut line, &names, &options);
        line
    });
    let rows = copy_rows(stream, fields, move |data| {
        let mut line = header.take().unwrap_or_default();
        write_line(&mut line, &split_row(data), &options);
        line
    });
    Ok(CopyResponse::new(0, columns, rows))
}

/// One CopyData message per row of `stream`: `message` makes it from the
/// row's fields as a DataRow holds them (in `fields`' formats).
fn copy_rows(
    stream: SendableRecordBatchStream,
    fields: Arc<Vec<pgwire::api::results::FieldInfo>>,
    mut message: impl FnMut(&[u8]) -> Vec<u8> + Send + 'static,
) -> impl futures::Stream<Item = PgWireResult<CopyData>> + Send + 'static {
    let fields = Arc::new(super::bits::encoding_fields(&fields));
    stream
        .map(move |batch| {
            let out: Vec<PgWireResult<CopyData>> =
                match batch.map_err(QueryError::DataFusion).and_then(|b| {
                    super::bits::wire_batch(b, &fields)
                        .map_err(|e| QueryError::DataFusion(e.into()))
                }) {
                    Ok(b) => until_error(encode_recordbatch(fields.clone(), b))
                        .map(|row| Ok(CopyData::new(message(&row?.data).into())))
                        .collect(),
                    Err(e) => vec![Err(to_pgwire(e))],
                };
            futures::stream::iter(out)
        })
        .flatten()
}

/// pgwire's `send_copy_out_response` without its CopyFail: a row that
/// cannot be written ends the copy as PostgreSQL ends one, with the
/// ErrorResponse the caller sends (CopyFail is a message only clients
/// send; psql answered it with "unexpected response"). The outer error is
/// the socket's; the inner one the data's, after which nothing more of
/// the copy has been sent. On success CopyDone is sent and the rows are
/// counted for the caller's CommandComplete.
pub async fn send_copy_out<C>(
    client: &mut C,
    resp: CopyResponse,
) -> PgWireResult<Result<usize, PgWireError>>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let column_formats = resp.column_formats();
    let CopyResponse {
        format,
        columns,
        mut data_stream,
        ..
    } = resp;
    client
        .send(PgWireBackendMessage::CopyOutResponse(
            pgwire::messages::copy::CopyOutResponse::new(format, columns as i16, column_formats),
        ))
        .await?;
    let mut rows = 0;
    while let Some(data) = data_stream.next().await {
        match data {
            Ok(data) if data.data.is_empty() => {}
            Ok(data) => {
                // The binary trailer is no row.
                if data.data.as_ref() != [0xFF, 0xFF] {
                    rows += 1;
                }
                client.feed(PgWireBackendMessage::CopyData(data)).await?;
            }
            Err(e) => {
                client.flush().await?;
                return Ok(Err(e));
            }
        }
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Ok(rows))
}

/// `rows` up to and with the first error: arrow-pg's row encoder repeats
/// an error for ever (it does not move past the row), which collected
/// without end once took all memory.
pub fn until_error<T, E>(
    rows: impl Iterator<Item = Result<T, E>>,
) -> impl Iterator<Item = Result<T, E>> {
    let mut failed = false;
    rows.map_while(move |row| {
        if failed {
            return None;
        }
        failed = row.is_err();
        Some(row)
    })
}

/// COPY TO in the binary format: the header, then per row its field count
/// and the fields as a binary DataRow holds them (pgwire's `CopyResponse`
/// adds the trailer).
fn binary_out(
    fields: Arc<Vec<pgwire::api::results::FieldInfo>>,
    stream: SendableRecordBatchStream,
) -> CopyResponse {
    use std::sync::atomic::{AtomicBool, Ordering};
    let columns = fields.len();
    let sent = Arc::new(AtomicBool::new(false));
    let header = |sent: &AtomicBool| {
        let mut h = Vec::new();
        if !sent.swap(true, Ordering::Relaxed) {
            h.extend_from_slice(quiver_exec::copy::binary::SIGNATURE);
            h.extend_from_slice(&0u32.to_be_bytes());
            h.extend_from_slice(&0u32.to_be_bytes());
        }
        h
    };
    let first = sent.clone();
    let rows = copy_rows(stream, fields, move |data| {
        let mut bytes = header(&first);
        bytes.extend_from_slice(&(columns as i16).to_be_bytes());
        bytes.extend_from_slice(data);
        bytes
    })
    // The header alone when there were no rows (pgwire sends the
    // trailer, and skips an empty message).
    .chain(futures::stream::once(async move {
        Ok(CopyData::new(header(&sent).into()))
    }));
    CopyResponse::new(1, columns, rows)
}

/// The values of a DataRow's body: each a length (-1 for NULL) and bytes.
fn split_row(data: &[u8]) -> Vec<Option<&[u8]>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let len = i32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let end = (at + len as usize).min(data.len());
            out.push(Some(&data[at..end]));
            at = end;
        }
    }
    out
}

/// One line of COPY data: the values, NULL as `options.null`, escaped
/// (text) or quoted (csv) as PostgreSQL writes them.
fn write_line(line: &mut Vec<u8>, values: &[Option<&[u8]>], options: &CopyOptions) {
    let mut delimiter = [0u8; 4];
    let delimiter = options.delimiter.encode_utf8(&mut delimiter).as_bytes();
    let quote = options.quote as u8;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(delimiter);
        }
        let Some(value) = value else {
            line.extend_from_slice(options.null.as_bytes());
            continue;
        };
        if options.csv {
            let needs_quotes = *value == options.null.as_bytes()
                || value
                    .iter()
                    .any(|&b| b == quote || b == b'\n' || b == b'\r')
                || value.windows(delimiter.len()).any(|w| w == delimiter)
                || (values.len() == 1 && *value == b"\\.");
            if needs_quotes {
                line.push(quote);
                for &b in value.iter() {
                    if b == quote {
                        line.push(quote);
                    }
                    line.push(b);
                }
                line.push(quote);
            } else {
                line.extend_from_slice(value);
            }
        } else {
            for &b in value.iter() {
                match b {
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    b'\n' => line.extend_from_slice(b"\\n"),
                    b'\r' => line.extend_from_slice(b"\\r"),
                    b'\t' => line.extend_from_slice(b"\\t"),
                    _ if delimiter.len() == 1 && b == delimiter[0] => {
                        line.push(b'\\');
                        line.push(b);
                    }
                    _ => line.push(b),
                }
            }
        }
    }
    line.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(values: &[Option<&str>], options: &CopyOptions) -> String {
        let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
        let mut out = Vec::new();
        write_line(&mut out, &values, options);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_as_postgres_writes_them() {
        let text = CopyOptions::text();
        assert_eq!(
            line(&[Some("a\tb"), None, Some("c\\d\ne")], &text),
            "a\\tb\t\\N\tc\\\\d\\ne\n"
        );
        let csv = CopyOptions::csv();
        assert_eq!(
            line(
                &[
                    Some("a,b"),
                    None,
                    Some(""),
                    Some("say \"hi\""),
                    Some("[1,2]")
                ],
                &csv
            ),
            "\"a,b\",,\"\",\"say \"\"hi\"\"\",\"[1,2]\"\n"
        );
        assert_eq!(line(&[Some("plain"), Some("1")], &csv), "plain,1\n");
        let mut pipe = CopyOptions::text();
        pipe.delimiter = '|';
        assert_eq!(line(&[Some("a|b\tc"), Some("d")], &pipe), "a\\|b\\tc|d\n");
    }

    #[test]
    fn rows_split_into_values() {
        let mut data = Vec::new();
        data.extend_from_slice(&2i32.to_be_bytes());
        data.extend_from_slice(b"ab");
        data.extend_from_slice(&(-1i32).to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            split_row(&data),
            vec![Some(&b"ab"[..]), None, Some(&b""[..])]
        );
    }
}
