//! Simple and extended query protocol handlers.

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use arrow_pg::datatypes::{encode_recordbatch, field_into_pg_type, pg_vector_type};
use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use tracing::debug;

use super::copy::QuiverCopy;
use super::error::{reported, to_pgwire};
use super::startup::QuiverStartup;
use quiver_common::interrupt::Interrupt;
use quiver_common::sqlstate;
use quiver_planner::activity::Registered;
use quiver_planner::{Engine, Output, Prepared, QueryError, Session};
use quiver_sql::Statement;
use quiver_sql::statement::TransactionKind;
use quiver_vector::column::{VECTOR_METADATA_KEY, bit_length_of, vector_dim_of};

pub struct QuiverHandlers {
    service: Arc<QuiverService>,
    startup: Arc<QuiverStartup>,
    cancel: Arc<QuiverCancel>,
}

/// Cancel requests: the running statement of the connection with that
/// process id and key is asked to stop (see [`quiver_common::interrupt`]).
pub struct QuiverCancel {
    engine: Arc<Engine>,
}

#[async_trait]
impl CancelHandler for QuiverCancel {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        let found = self
            .engine
            .activity()
            .cancel_request(request.pid, &request.secret_key.to_bytes());
        debug!(pid = request.pid, found, "cancel request");
    }
}

impl QuiverHandlers {
    pub fn new(
        engine: Arc<Engine>,
        auth: Arc<super::startup::Logins>,
        metrics: Arc<super::metrics::Metrics>,
    ) -> QuiverHandlers {
        QuiverHandlers {
            service: Arc::new(QuiverService {
                metrics,
                engine: engine.clone(),
                parser: Arc::new(QuiverQueryParser {
                    engine: engine.clone(),
                }),
            }),
            cancel: Arc::new(QuiverCancel {
                engine: engine.clone(),
            }),
            startup: Arc::new(QuiverStartup {
                engine,
                pids: Default::default(),
                auth,
            }),
        }
    }
}

impl PgWireServerHandlers for QuiverHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::new(QuiverCopy)
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        debug!(%error, "statement failed");
    }
}

pub struct QuiverService {
    metrics: Arc<super::metrics::Metrics>,
    engine: Arc<Engine>,
    parser: Arc<QuiverQueryParser>,
}

/// Rows that stop with the statement's cancel or timeout (57014), checked
/// as each batch is awaited.
fn interruptible(
    stream: datafusion::execution::SendableRecordBatchStream,
    interrupt: Arc<Interrupt>,
) -> datafusion::execution::SendableRecordBatchStream {
    let schema = stream.schema();
    let stop = Box::pin(async move { interrupt.cancelled().await });
    let rows = stream::unfold((stream, Some(stop)), |(mut rows, stop)| async move {
        let mut stop = stop?;
        tokio::select! {
            biased;
            c = &mut stop => Some((
                Err(datafusion::error::DataFusionError::External(Box::new(c))),
                (rows, None),
            )),
            next = rows.next() => next.map(|b| (b, (rows, Some(stop)))),
        }
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows))
}

/// Whether a statement only reads, so that stopping it anywhere (dropping
/// its future) leaves nothing half done. Writes stop only where they
/// check (an INSERT while it gathers its rows).
fn only_reads(statement: &Statement) -> bool {
    match statement {
        Statement::Query(q) => matches!(**q, datafusion::sql::sqlparser::ast::Statement::Query(_)),
        Statement::Tuned { inner, .. } => only_reads(inner),
        Statement::Show { .. }
        | Statement::CopyTo { .. }
        | Statement::ShowCollections
        | Statement::DescribeCollection { .. } => true,
        _ => false,
    }
}

/// Run one statement of `session` within its statement_timeout; a cancel
/// request stops it as [`only_reads`] allows.
async fn run_statement(
    session: &Session,
    reads: bool,
    run: impl std::future::Future<Output = Result<Output, QueryError>>,
) -> Result<Output, QueryError> {
    run_interruptible(session, reads, run).await
}

/// What a statement sends before its result: the NOTICEs it raised
/// (`DROP TABLE IF EXISTS` of a missing table), and the WARNING of a
/// transaction-control statement (BEGIN inside a block, COMMIT outside one).
/// `client_min_messages` above NOTICE (or WARNING) holds them back.
fn notices_of(session: &Session, output: &Result<Output, QueryError>) -> Vec<PgWireBackendMessage> {
    let level = session
        .var("client_min_messages")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let notices = session.take_notices();
    let mut out = Vec::new();
    if level == "error" {
        return out;
    }
    let notices = if level == "warning" { vec![] } else { notices };
    out.extend(notices.into_iter().map(|(code, message)| {
        let info = ErrorInfo::new("NOTICE".into(), code.into(), message);
        PgWireBackendMessage::NoticeResponse(info.into())
    }));
    if let Ok(Output::Transaction {
        warning: Some((code, message)),
        ..
    }) = output
    {
        let info = ErrorInfo::new("WARNING".into(), code.code().into(), message.clone());
        out.push(PgWireBackendMessage::NoticeResponse(info.into()));
    }
    out
}

/// Count a statement that ended (its first rows included) with `result`.
fn count<T>(
    metrics: &super::metrics::Metrics,
    kind: &'static str,
    started: std::time::Instant,
    result: &Result<T, QueryError>,
) {
    let error = result
        .as_ref()
        .err()
        .map(quiver_common::sqlstate::SqlStateError::sqlstate);
    metrics.observe(kind, started.elapsed(), error);
}

/// The kind of statement, for metrics.
fn statement_kind(statement: &Statement) -> &'static str {
    use datafusion::sql::sqlparser::ast::Statement as S;
    match statement {
        Statement::Query(q) => match q.as_ref() {
            S::Query(_) => "select",
            S::Insert(_) => "insert",
            S::Update { .. } => "update",
            S::Delete(_) => "delete",
            S::Explain { .. } | S::ExplainTable { .. } => "explain",
            _ => "other",
        },
        Statement::Tuned { inner, .. } => statement_kind(inner),
        Statement::Upsert { .. } => "insert",
        Statement::CopyFrom(_) | Statement::CopyTo { .. } => "copy",
        Statement::CreateCollection(_)
        | Statement::DropCollection { .. }
        | Statement::CreateDatabase { .. }
        | Statement::DropDatabase { .. }
        | Statement::Index(_) => "ddl",
        Statement::Access(_) => "access",
        Statement::Maintain { .. } => "maintenance",
        Statement::Set { .. } | Statement::Reset { .. } | Statement::Show { .. } => "setting",
        Statement::Transaction(_) => "transaction",
        _ => "other",
    }
}

async fn run_interruptible(
    session: &Session,
    reads: bool,
    run: impl std::future::Future<Output = Result<Output, QueryError>>,
) -> Result<Output, QueryError> {
    use futures::FutureExt;
    let interrupt = session.interrupt().clone();
    interrupt.start(session.statement_timeout());
    interrupt.set_lock_timeout(session.lock_timeout());
    // The last resort against a bug: a panic fails the statement (XX000),
    // not the connection or the server.
    let run = std::panic::AssertUnwindSafe(run)
        .catch_unwind()
        .map(|r| r.unwrap_or_else(|panic| Err(QueryError::Panicked(panic_message(&panic)))));
    if reads {
        tokio::select! {
            r = run => r,
            c = interrupt.cancelled() => Err(c.into()),
        }
    } else {
        run.await
    }
}

/// What a panic said.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    tracing::error!("statement panicked: {message}");
    message
}

/// How text results are written: the client's startup parameters, with
/// the session's `extra_float_digits` (SET after startup included).
fn format_options<C: ClientInfo + ?Sized>(client: &C, session: &Session) -> Arc<FormatOptions> {
    let mut options = FormatOptions::from_client_metadata(client.metadata());
    if let Some(digits) = session
        .var("extra_float_digits")
        .and_then(|v| v.trim().parse::<i8>().ok())
    {
        options.extra_float_digits = digits.clamp(-15, 3);
    }
    Arc::new(options)
}

/// Show the statement in pg_stat_activity.
fn show_active<C: ClientInfo + ?Sized>(client: &C, text: &str) {
    if let Some(r) = client.session_extensions().get::<Registered>() {
        r.backend.active(text);
    }
}

fn session_of<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Session>> {
    client.session_extensions().get::<Session>().ok_or_else(|| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            sqlstate::CONNECTION_DOES_NOT_EXIST.code().into(),
            "connection has no session".into(),
        )))
    })
}

/// Encode rows for the wire. The first batch is pulled before answering so
/// that an error at the start of execution is reported cleanly.
async fn rows_response(
    schema: SchemaRef,
    stream: datafusion::execution::SendableRecordBatchStream,
    format: &Format,
    options: Arc<FormatOptions>,
    interrupt: Arc<Interrupt>,
) -> Result<QueryResponse, QueryError> {
    let mut stream = interruptible(stream, interrupt);
    let fields = Arc::new(
        super::bits::wire_fields(&schema, format, Some(options))
            .map_err(|e| QueryError::Unsupported(e.to_string()))?,
    );
    let first = match stream.next().await {
        Some(Err(e)) => return Err(QueryError::DataFusion(e)),
        other => other,
    };
    let fields_ref = Arc::new(super::bits::encoding_fields(&fields));
    let batches = stream::iter(first).chain(stream);
    let rows = batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match batch {
                Ok(b) => match super::bits::wire_batch(b, &fields_ref) {
                    Ok(b) => Box::new(super::copy::until_error(encode_recordbatch(
                        fields_ref.clone(),
                        b,
                    ))),
                    Err(e) => Box::new(std::iter::once(Err(to_pgwire(QueryError::DataFusion(
                        e.into(),
                    ))))),
                },
                Err(e) => Box::new(std::iter::once(Err(to_pgwire(QueryError::DataFusion(e))))),
            };
            stream::iter(rows)
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

async fn output_response(
    output: Output,
    format: &Format,
    options: Arc<FormatOptions>,
    interrupt: Arc<Interrupt>,
) -> Result<Response, QueryError> {
    Ok(match output {
        Output::Rows { schema, stream } => {
            Response::Query(rows_response(schema, stream, format, options, interrupt).await?)
        }
        Output::Command { tag, rows } => {
            let mut t = Tag::new(&tag);
            if tag == "INSERT" {
                t = t.with_oid(0);
            }
            if let Some(n) = rows {
                t = t.with_rows(n);
            }
            Response::Execution(t)
        }
        // The status byte of ReadyForQuery is the session's own (see
        // conn.rs); these responses keep pgwire's portals in step.
        Output::Transaction { tag, .. } => match tag {
            "BEGIN" | "START TRANSACTION" => Response::TransactionStart(Tag::new(tag)),
            "COMMIT" | "ROLLBACK" => Response::TransactionEnd(Tag::new(tag)),
            _ => Response::Execution(Tag::new(tag)),
        },
        Output::CopyIn(_) => {
            return Err(QueryError::Unsupported(
                "COPY must be started by the connection handler".into(),
            ));
        }
        Output::Returning {
            schema,
            batches,
            tag,
            rows: _,
        } => {
            let stream: datafusion::execution::SendableRecordBatchStream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    schema.clone(),
                    stream::iter(batches.into_iter().map(Ok)),
                ),
            );
            let mut response = rows_response(schema, stream, format, options, interrupt).await?;
            response.set_command_tag(tag);
            Response::Query(response)
        }
        Output::Fetched {
            schema,
            stream,
            binary,
        } => {
            // A BINARY cursor's rows go out in binary unless the client
            // asked for formats (the extended protocol's Bind).
            let format = match format {
                Format::UnifiedText if binary => &Format::UnifiedBinary,
                other => other,
            };
            let mut response = rows_response(schema, stream, format, options, interrupt).await?;
            response.set_command_tag("FETCH");
            Response::Query(response)
        }
        Output::CopyOut {
            schema,
            stream,
            options: copy,
        } => Response::CopyOut(super::copy::copy_out(
            schema,
            interruptible(stream, interrupt),
            copy,
            options,
        )?),
    })
}

#[async_trait]
impl SimpleQueryHandler for QuiverService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        show_active(client, query);
        // Held while the parsed statements are.
        let _parsing = match session.reserve_parse(query) {
            Ok(r) => r,
            Err(e) => return Ok(vec![Response::Error(Box::new(reported(&e)))]),
        };
        let statements = match quiver_sql::parse(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(reported(&e.into())))]),
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let options = format_options(client, &session);
        let mut responses = Vec::with_capacity(statements.len());
        // Several statements outside a block run as one transaction, as in
        // PostgreSQL: all or nothing.
        let implicit = !session.block().in_block() && Engine::implicit_block(&statements);
        let control = |kind: TransactionKind| Statement::Transaction(kind);
        if implicit {
            let begin = control(TransactionKind::Begin(Default::default()));
            if let Err(e) = self.engine.execute(&session, begin).await {
                return Ok(vec![Response::Error(Box::new(reported(&e)))]);
            }
        }
        let mut failed = false;
        let total = statements.len();
        for (i, statement) in statements.into_iter().enumerate() {
            if let Some(tag) = deallocate(client, &statement) {
                responses.push(Response::Execution(Tag::new(tag)));
                continue;
            }
            let interrupt = session.interrupt().clone();
            let (kind, reads) = (statement_kind(&statement), only_reads(&statement));
            let started = std::time::Instant::now();
            let executed =
                run_statement(&session, reads, self.engine.execute(&session, statement)).await;
            for notice in notices_of(&session, &executed) {
                client.send(notice).await?;
            }
            let result = match executed {
                Ok(Output::CopyIn(copy)) => {
                    // The client sends the data next; nothing else runs until then.
                    responses.push(super::copy::start(client, copy));
                    break;
                }
                // Rows go out after the whole string ran: a FETCH's cursor
                // is lent to its stream until then, so a FETCH followed by
                // more statements (another FETCH of it) reads its rows now.
                Ok(Output::Fetched {
                    schema,
                    stream,
                    binary,
                }) if i + 1 < total => {
                    match datafusion::physical_plan::common::collect(stream).await {
                        Ok(batches) => {
                            let stream: datafusion::execution::SendableRecordBatchStream = Box::pin(
                                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                                    schema.clone(),
                                    stream::iter(batches.into_iter().map(Ok)),
                                ),
                            );
                            let output = Output::Fetched {
                                schema,
                                stream,
                                binary,
                            };
                            output_response(
                                output,
                                &Format::UnifiedText,
                                options.clone(),
                                interrupt,
                            )
                            .await
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                // COPY TO as the query's only statement (psql's \copy,
                // psycopg's copy(), pgjdbc's copyOut) is sent here, so that
                // an error ends it as in PostgreSQL (pgwire would send a
                // CopyFail). Otherwise the responses before it would follow
                // its data.
                Ok(output @ Output::CopyOut { .. }) if responses.is_empty() && i + 1 == total => {
                    match output_response(output, &Format::UnifiedText, options.clone(), interrupt)
                        .await
                    {
                        Ok(Response::CopyOut(copy)) => {
                            match super::copy::send_copy_out(client, copy).await? {
                                Ok(rows) => {
                                    Ok(Response::Execution(Tag::new("COPY").with_rows(rows)))
                                }
                                Err(e) => {
                                    let info = match e {
                                        PgWireError::UserError(info) => info,
                                        other => Box::new(ErrorInfo::from(other)),
                                    };
                                    let code = if info.code == sqlstate::QUERY_CANCELED.code() {
                                        sqlstate::QUERY_CANCELED
                                    } else {
                                        sqlstate::DATA_EXCEPTION
                                    };
                                    self.metrics.observe(kind, started.elapsed(), Some(code));
                                    responses.push(Response::Error(info));
                                    failed = true;
                                    break;
                                }
                            }
                        }
                        other => other,
                    }
                }
                Ok(output) => {
                    output_response(output, &Format::UnifiedText, options.clone(), interrupt).await
                }
                Err(e) => Err(e),
            };
            count(&self.metrics, kind, started, &result);
            match result {
                Ok(r) => responses.push(r),
                Err(e) => {
                    // Later statements of the query string are not run, as in PostgreSQL.
                    responses.push(Response::Error(Box::new(reported(&e))));
                    failed = true;
                    break;
                }
            }
        }
        if implicit {
            let end = if failed {
                TransactionKind::Rollback
            } else {
                TransactionKind::Commit
            };
            if let Err(e) = self.engine.execute(&session, control(end)).await {
                responses.push(Response::Error(Box::new(reported(&e))));
            }
        }
        Ok(responses)
    }
}

/// The values of a portal's parameters. Vector parameters without a
/// declared dimension (`$1::vector`) are decoded here into one Float32
/// list: arrow-pg builds such a list one scalar per element, which costs
/// more than the rest of a search's planning.
fn parameters<S: Clone>(
    portal: &Portal<S>,
    inferred: &[Option<&DataType>],
    server: &[Option<&Type>],
    bit_lengths: &[Option<usize>],
    uuids: &[bool],
) -> PgWireResult<datafusion::common::ParamValues> {
    let mut params = decode_parameters(portal, inferred, server, bit_lengths, uuids)?;
    // As PostgreSQL coerces a parameter to the type its use gives it:
    // psycopg sends `[2019, 2020]` as int2[], which `year = ANY($1)`
    // compares with an integer column.
    if let datafusion::common::ParamValues::List(values) = &mut params {
        for (value, want) in values.iter_mut().zip(inferred) {
            let Some(want) = want else { continue };
            let have = value.value.data_type();
            let widen = match (&have, *want) {
                (DataType::List(a), DataType::List(b)) => {
                    a.data_type().is_integer() && b.data_type().is_integer()
                        || a.data_type().is_floating() && b.data_type().is_floating()
                }
                (a, b) => a.is_integer() && b.is_integer(),
            };
            if widen
                && have != **want
                && let Ok(cast) = value.value.cast_to(want)
            {
                *value = cast.into();
            }
        }
    }
    Ok(params)
}

fn decode_parameters<S: Clone>(
    portal: &Portal<S>,
    inferred: &[Option<&DataType>],
    server: &[Option<&Type>],
    bit_lengths: &[Option<usize>],
    uuids: &[bool],
) -> PgWireResult<datafusion::common::ParamValues> {
    let vector = pg_vector_type();
    let mut decoded = Vec::new();
    for (i, raw) in portal.parameters.iter().enumerate() {
        // `uuid` parameters: text in any form PostgreSQL reads, or the 16
        // bytes; the query sees the canonical text.
        let declared = portal.statement.parameter_types.get(i).cloned().flatten();
        if uuids.get(i).copied().unwrap_or(false) {
            let value = match raw {
                None => None,
                Some(raw) => Some(uuid_parameter(
                    raw,
                    portal.parameter_format.format_for(i),
                    declared,
                )?),
            };
            decoded.push((i, datafusion::common::ScalarValue::Utf8(value)));
            continue;
        }
        // json and jsonb (psycopg's `Json`, `Jsonb`), and text for a json
        // column: the text; jsonb's binary form has a version byte (1)
        // first.
        let json_declared =
            matches!(declared, Some(ref t) if *t == Type::JSON || *t == Type::JSONB);
        let json_column = server.get(i).copied().flatten() == Some(&Type::JSON)
            && matches!(
                declared,
                None | Some(Type::UNKNOWN) | Some(Type::TEXT) | Some(Type::VARCHAR)
            );
        if json_declared || json_column {
            let value = match raw {
                None => None,
                Some(raw) => {
                    let body = match portal.parameter_format.format_for(i) {
                        pgwire::api::results::FieldFormat::Binary
                            if declared == Some(Type::JSONB) =>
                        {
                            match raw.split_first() {
                                Some((1, rest)) => rest,
                                _ => {
                                    return Err(invalid_parameter(
                                        i,
                                        "unsupported jsonb version number",
                                    ));
                                }
                            }
                        }
                        _ => raw,
                    };
                    Some(
                        std::str::from_utf8(body)
                            .map_err(|_| invalid_parameter(i, "json is not UTF-8"))?
                            .to_string(),
                    )
                }
            };
            decoded.push((i, datafusion::common::ScalarValue::Utf8(value)));
            continue;
        }
        // `bit(n)` parameters: text `0101` or PostgreSQL's binary form.
        if let Some(Some(n)) = bit_lengths.get(i) {
            let width = quiver_vector::bits::bytes_for(*n).max(1) as i32;
            let Some(raw) = raw else {
                decoded.push((
                    i,
                    datafusion::common::ScalarValue::FixedSizeBinary(width, None),
                ));
                continue;
            };
            let format = portal.parameter_format.format_for(i);
            let Some(bytes) = super::bits::parameter(raw, format, *n) else {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    sqlstate::INVALID_TEXT_REPRESENTATION.code().into(),
                    format!("parameter ${}: not a bit string of length {n}", i + 1),
                ))));
            };
            decoded.push((
                i,
                datafusion::common::ScalarValue::FixedSizeBinary(width, Some(bytes)),
            ));
            continue;
        }
        let (Some(Some(list)), Some(Some(ty)), Some(raw)) = (inferred.get(i), server.get(i), raw)
        else {
            continue;
        };
        // `vector(n)`: a dimension to check (arrow-pg's 22023 where
        // pgvector says 22000), else any.
        let (field, dim) = match list {
            DataType::List(field) => (field, None),
            DataType::FixedSizeList(field, n) => (field, Some(*n as usize)),
            _ => continue,
        };
        if **ty != vector || field.data_type() != &DataType::Float32 {
            continue;
        }
        let values = match portal.parameter_format.format_for(i) {
            pgwire::api::results::FieldFormat::Text => std::str::from_utf8(raw)
                .ok()
                .and_then(|t| quiver_vector::text::parse_vector(t).ok()),
            pgwire::api::results::FieldFormat::Binary => vector_from_binary(raw),
        };
        // Anything unusual is left to arrow-pg, with its error messages.
        let Some(values) = values else { continue };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                sqlstate::DATA_EXCEPTION.code().into(),
                format!(
                    "parameter ${}: NaN or infinity is not allowed in a vector",
                    i + 1
                ),
            ))));
        }
        if let Some(dim) = dim {
            if values.len() != dim {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    sqlstate::DATA_EXCEPTION.code().into(),
                    format!(
                        "parameter ${}: expected {dim} dimensions, not {}",
                        i + 1,
                        values.len()
                    ),
                ))));
            }
            let list = arrow::array::FixedSizeListArray::try_new(
                field.clone(),
                dim as i32,
                Arc::new(arrow::array::Float32Array::from(values)),
                None,
            )
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            decoded.push((
                i,
                datafusion::common::ScalarValue::FixedSizeList(Arc::new(list)),
            ));
            continue;
        }
        let list = arrow::array::ListArray::new(
            field.clone(),
            arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
            Arc::new(arrow::array::Float32Array::from(values)),
            None,
        );
        decoded.push((i, datafusion::common::ScalarValue::List(Arc::new(list))));
    }
    if decoded.is_empty() {
        return deserialize_parameters_with_server_types(portal, inferred, server);
    }
    // The other parameters go to arrow-pg, from a copy of the portal with
    // the decoded ones NULL.
    let mut parameters = portal.parameters.clone();
    for (i, _) in &decoded {
        parameters[*i] = None;
    }
    let codes = |f: &Format| match f {
        Format::UnifiedText => vec![],
        Format::UnifiedBinary => vec![1],
        Format::Individual(codes) => codes.clone(),
    };
    let bind = pgwire::messages::extendedquery::Bind::new(
        Some(portal.name.clone()),
        None,
        codes(&portal.parameter_format),
        parameters,
        codes(&portal.result_column_format),
    );
    // ... typed as text there, whatever the client or the plan said they
    // are (arrow-pg would refuse a `bit`, even a NULL one).
    let mut statement = pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        portal.statement.statement.clone(),
        portal.statement.parameter_types.clone(),
    );
    let mut inferred = inferred.to_vec();
    let mut server = server.to_vec();
    for (i, _) in &decoded {
        if let Some(t) = statement.parameter_types.get_mut(*i) {
            *t = Some(Type::TEXT);
        }
        if let Some(t) = inferred.get_mut(*i) {
            *t = Some(&DataType::Utf8);
        }
        if let Some(t) = server.get_mut(*i) {
            *t = Some(&Type::TEXT);
        }
    }
    let rest = Portal::try_new(&bind, Arc::new(statement))?;
    let mut params = deserialize_parameters_with_server_types(&rest, &inferred, &server)?;
    if let datafusion::common::ParamValues::List(values) = &mut params {
        for (i, value) in decoded {
            if let Some(slot) = values.get_mut(i) {
                *slot = value.into();
            }
        }
    }
    Ok(params)
}

/// 22P02 for parameter `i` (0-based) that cannot be read.
fn invalid_parameter(i: usize, what: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        sqlstate::INVALID_TEXT_REPRESENTATION.code().into(),
        format!("parameter ${}: {what}", i + 1),
    )))
}

/// A uuid parameter as canonical text: in the text format any form
/// PostgreSQL reads; in the binary format the 16 bytes (or, when the
/// client declared it text, the text).
fn uuid_parameter(
    raw: &[u8],
    format: pgwire::api::results::FieldFormat,
    declared: Option<Type>,
) -> PgWireResult<String> {
    let textual = matches!(
        declared,
        Some(ref t) if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::BPCHAR || *t == Type::NAME
    );
    let value = match format {
        pgwire::api::results::FieldFormat::Binary if !textual => <[u8; 16]>::try_from(raw)
            .ok()
            .map(|b| quiver_common::uuid::format(&b)),
        _ => std::str::from_utf8(raw)
            .ok()
            .and_then(quiver_common::uuid::canonical),
    };
    value.ok_or_else(|| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            sqlstate::INVALID_TEXT_REPRESENTATION.code().into(),
            quiver_common::uuid::invalid_message(&String::from_utf8_lossy(raw)),
        )))
    })
}

/// pgvector's binary form: dimension (u16), unused (u16), then the floats,
/// all big-endian.
fn vector_from_binary(raw: &[u8]) -> Option<Vec<f32>> {
    let dim = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]) as usize;
    let body = raw.get(4..)?;
    if dim == 0 || body.len() != dim * 4 {
        return None;
    }
    Some(
        body.chunks_exact(4)
            .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// `DEALLOCATE [PREPARE] name | ALL`: forget prepared statements of the
/// connection (drivers such as psycopg send `DEALLOCATE ALL` after DDL).
/// Returns the command tag, or `None` for any other statement.
fn deallocate<C>(client: &C, statement: &quiver_sql::Statement) -> Option<&'static str>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let quiver_sql::Statement::Query(q) = statement else {
        return None;
    };
    let datafusion::sql::sqlparser::ast::Statement::Deallocate { name, .. } = q.as_ref() else {
        return None;
    };
    let store = client.portal_store();
    let names = client
        .session_extensions()
        .get_or_insert_with(super::conn::StatementNames::default);
    if name.value.eq_ignore_ascii_case("all") && name.quote_style.is_none() {
        // Every statement the connection prepared by name (the connection
        // loop notes them), and every portal.
        let all = std::mem::take(&mut *names.0.lock());
        for statement in &all {
            store.rm_statement(statement);
        }
        store.clear_portals();
        Some("DEALLOCATE ALL")
    } else {
        store.rm_statement(&name.value);
        names.0.lock().remove(&name.value);
        Some("DEALLOCATE")
    }
}

/// Parses statements for the extended protocol and describes them.
pub struct QuiverQueryParser {
    engine: Arc<Engine>,
}

fn wire_type(field: Option<&FieldRef>) -> PgWireResult<Type> {
    match field {
        None => Ok(Type::UNKNOWN),
        Some(f)
            if matches!(vector_dim_of(f.data_type()), Some(Some(_)))
                || f.metadata().contains_key(VECTOR_METADATA_KEY) =>
        {
            Ok(pg_vector_type())
        }
        Some(f) if bit_length_of(f).is_some() => Ok(Type::BIT),
        Some(f)
            if quiver_common::uuid::is_uuid(f.metadata()) && f.data_type() == &DataType::Utf8 =>
        {
            Ok(Type::UUID)
        }
        Some(f)
            if quiver_common::json::is_json(f.metadata()) && f.data_type() == &DataType::Utf8 =>
        {
            Ok(Type::JSON)
        }
        Some(f) if f.data_type() == &DataType::Null => Ok(Type::UNKNOWN),
        Some(f) => field_into_pg_type(f),
    }
}

#[async_trait]
impl QueryParser for QuiverQueryParser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session_of(client)?;
        let _parsing = session.reserve_parse(sql).map_err(to_pgwire)?;
        let mut statements = quiver_sql::parse(sql).map_err(|e| to_pgwire(e.into()))?;
        if statements.is_empty() {
            return Ok(None);
        }
        if statements.len() > 1 {
            return Err(to_pgwire(QueryError::Parse(
                quiver_sql::ParseError::Syntax {
                    message: "cannot insert multiple commands into a prepared statement".into(),
                    position: None,
                },
            )));
        }
        let mut prepared = self
            .engine
            .prepare(&session, statements.remove(0))
            .await
            .map_err(to_pgwire)?;
        prepared.text = sql.to_string();
        Ok(Some(Arc::new(prepared)))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        let fields = stmt.parameter_fields().map_err(to_pgwire)?;
        fields.iter().map(|f| wire_type(f.as_ref())).collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt.result_schema() {
            Some(schema) => super::bits::wire_fields(
                &schema,
                column_format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            None => Ok(vec![]),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for QuiverService {
    type Statement = Arc<Prepared>;
    type QueryParser = QuiverQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// Describe as PostgreSQL answers it: a statement that returns no rows
    /// (an INSERT) gets its ParameterDescription and then NoData. pgwire
    /// sends NoData only when there are no parameters either, and an empty
    /// RowDescription otherwise, which pgjdbc takes for a query: its
    /// `executeBatch()` then reported 0 rows for each INSERT.
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        use pgwire::messages::data::{NoData, ParameterDescription};
        if message.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(stmt)) =
                client.portal_store().get_statement(name)
            {
                let described = self.do_describe_statement(client, &stmt).await?;
                if described.fields.is_empty() {
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(
                                described.parameters.iter().map(|t| t.oid()).collect(),
                            ),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let prepared = portal.statement.statement.clone();
        let fields = prepared.parameter_fields().map_err(to_pgwire)?;
        let inferred: Vec<Option<DataType>> = fields
            .iter()
            .map(|f| f.as_ref().map(|f| f.data_type().clone()))
            .collect();
        let inferred_refs: Vec<Option<&DataType>> = inferred.iter().map(|t| t.as_ref()).collect();
        let server_types = fields
            .iter()
            .map(|f| wire_type(f.as_ref()))
            .collect::<PgWireResult<Vec<Type>>>()?;
        let server_refs: Vec<Option<&Type>> = server_types.iter().map(Some).collect();
        let bit_lengths: Vec<Option<usize>> = fields
            .iter()
            .map(|f| f.as_ref().and_then(|f| bit_length_of(f)))
            .collect();
        let uuids: Vec<bool> = fields
            .iter()
            .map(|f| {
                f.as_ref()
                    .is_some_and(|f| quiver_common::uuid::is_uuid(f.metadata()))
            })
            .collect();
        let params = parameters(portal, &inferred_refs, &server_refs, &bit_lengths, &uuids)?;
        let options = format_options(client, &session);
        show_active(client, &prepared.text);
        let kind = statement_kind(&prepared.statement);
        let started = std::time::Instant::now();
        let reads = only_reads(&prepared.statement);
        let output = run_statement(
            &session,
            reads,
            self.engine.execute_prepared(&session, &prepared, params),
        )
        .await;
        for notice in notices_of(&session, &output) {
            client.send(notice).await?;
        }
        let result = match output {
            Ok(Output::CopyIn(copy)) => return Ok(super::copy::start(client, copy)),
            Ok(output) => {
                let interrupt = session.interrupt().clone();
                output_response(output, &portal.result_column_format, options, interrupt).await
            }
            Err(e) => Err(e),
        };
        count(&self.metrics, kind, started, &result);
        match result.map_err(to_pgwire)? {
            // Sent here so that an error ends it with an ErrorResponse, as
            // in PostgreSQL (pgwire would send a CopyFail).
            Response::CopyOut(copy) => match super::copy::send_copy_out(client, copy).await? {
                Ok(rows) => Ok(Response::Execution(Tag::new("COPY").with_rows(rows))),
                Err(e) => Err(e),
            },
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::vector_from_binary;

    /// pgvector's binary form of `values`.
    fn binary(dim: u16, values: &[f32]) -> Vec<u8> {
        let mut raw = dim.to_be_bytes().to_vec();
        raw.extend_from_slice(&[0, 0]);
        for v in values {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        raw
    }

    #[test]
    fn binary_vectors_decode_in_order() {
        let values: Vec<f32> = (0..37).map(|i| i as f32 * -0.5 + 0.25).collect();
        assert_eq!(vector_from_binary(&binary(37, &values)), Some(values));
    }

    #[test]
    fn malformed_binary_vectors_are_refused() {
        assert_eq!(vector_from_binary(&[]), None);
        assert_eq!(vector_from_binary(&binary(0, &[])), None);
        // The dimension says 3, the body holds 2 floats.
        assert_eq!(vector_from_binary(&binary(3, &[1.0, 2.0])), None);
        // A body that is not a whole number of floats.
        let mut raw = binary(1, &[1.0]);
        raw.push(0);
        assert_eq!(vector_from_binary(&raw), None);
    }
}
