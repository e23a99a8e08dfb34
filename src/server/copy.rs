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
use quiver_common::sqlstate;
use quiver_exec::copy::CopyIn;
use quiver_planner::QueryError;
use quiver_planner::activity::{CopyProgress, Registered};

/// The COPY in progress on a connection, and the first error it met.
#[derive(Default)]
pub struct CopyState {
    inner: Mutex<Option<Result<Box<CopyIn>, QueryError>>>,
}

/// Start a COPY: keep its state on the connection and ask for the data.
pub fn start<C: ClientInfo + ?Sized>(client: &C, copy: Box<CopyIn>) -> Response {
    let columns = copy.column_count();
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
    Response::CopyIn(CopyResponse::new(0, columns, futures::stream::empty()))
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

pub struct QuiverCopy;

#[async_trait]
impl CopyHandler for QuiverCopy {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(state) = client.session_extensions().get::<CopyState>() {
            let mut guard = state.inner.lock();
            // After an error the rest of the data is ignored; CopyDone reports it.
            if let Some(Ok(copy)) = guard.as_mut() {
                match copy.push(&copy_data.data) {
                    Err(e) => *guard = Some(Err(e.into())),
                    Ok(()) => {
                        if let Some(r) = client.session_extensions().get::<Registered>() {
                            let mut now = r.backend.copy_progress().unwrap_or_default();
                            now.bytes_processed += copy_data.data.len() as u64;
                            now.tuples_processed = copy.rows_read() as u64;
                            r.backend.set_copy_progress(Some(now));
                        }
                    }
                }
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
        let rows = copy.finish().await.map_err(|e| to_pgwire(e.into()))?;
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
