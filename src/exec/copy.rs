//! `COPY ... FROM STDIN`: parses PostgreSQL's text, csv and binary formats
//! as the data arrives and converts each chunk of rows to Arrow. A COPY is
//! applied entirely or not at all: a small one (or one in a transaction
//! block) in one storage call at the end; one larger than a segment, outside
//! a block, as a bulk load whose segments are written while the data
//! arrives and attached at the end.

use std::sync::Arc;

pub mod binary;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options, concat_batches};
use arrow::util::display::FormatOptions;
use datafusion::common::{DataFusionError, ScalarValue};

use crate::ExecError;
use quiver_catalog::{CollectionDef, FieldType};
use quiver_common::sqlstate::{self, SqlState, SqlStateError};
use quiver_sql::statement::CopyOptions;
use quiver_storage::{BulkLoad, CollectionData, Mutation};
use quiver_vector::VectorError;
use quiver_vector::column::{BitColumn, VectorColumn};

/// Rows are converted to Arrow in chunks of this many.
const CHUNK: usize = 8192;

/// Binary rows are decoded into Arrow buffers as they arrive, and taken as
/// a batch once this many rows (or [`BINARY_BATCH_BYTES`]) are there: a
/// COPY statement of up to that many becomes one batch, which is logged and
/// kept as it is, never copied into another.
/// (`binary.rs` reserves room for vectors by them.)
const BINARY_BATCH_ROWS: usize = 65_536;
const BINARY_BATCH_BYTES: usize = 48 << 20;

/// Chunks one COPY converts on blocking threads at once; past that, the
/// connection converts the next chunk itself (the machine's cores are
/// shared with every other session and the WAL's fsyncs).
const IN_FLIGHT: usize = 2;

/// Longest row (or binary field) a COPY buffers while its end has not
/// arrived: the default `max_message_size`. PostgreSQL's is 1 GB.
pub const MAX_ROW_BYTES: usize = 256 << 20;

/// A chunk of a COPY as Arrow: being converted, or done.
enum Converted {
    Pending(tokio::task::JoinHandle<Result<RecordBatch, ExecError>>),
    Done(RecordBatch),
}

pub struct CopyIn {
    def: Arc<CollectionDef>,
    data: Arc<CollectionData>,
    /// Field index of each input column.
    targets: Vec<usize>,
    options: CopyOptions,
    pending: Vec<u8>,
    /// One buffer of raw values per input column.
    columns: Vec<Vec<Option<String>>>,
    /// Chunks converted to Arrow, in order: on blocking threads while more
    /// data arrives (at most [`IN_FLIGHT`] at once), or at hand.
    batches: Vec<Converted>,
    line: usize,
    done: bool,
    /// Binary format: the header was read.
    header_read: bool,
    /// Binary format: one buffer of raw values per input column.
    /// Binary format: one buffer per input column, filled as rows arrive.
    bin: Vec<binary::ColumnBuffer>,
    /// Outside a transaction block, a COPY larger than a segment is a bulk
    /// load: its rows are written as segments while they arrive.
    bulk_allowed: bool,
    bulk: Option<BulkLoad>,
    /// csv: the pending bytes end inside a quoted value.
    in_quotes: bool,
    /// Defaults of the fields not copied.
    defaults: Arc<Vec<(usize, ScalarValue)>>,
}

fn data_error(line: usize, message: impl std::fmt::Display, code: SqlState) -> ExecError {
    ExecError::Data {
        message: format!("COPY, line {line}: {message}"),
        code,
    }
}

impl CopyIn {
    pub fn new(
        def: Arc<CollectionDef>,
        data: Arc<CollectionData>,
        targets: Vec<usize>,
        options: CopyOptions,
    ) -> CopyIn {
        CopyIn {
            columns: vec![Vec::new(); targets.len()],
            def,
            data,
            targets,
            options,
            pending: Vec::new(),
            batches: Vec::new(),
            line: 0,
            done: false,
            header_read: false,
            bin: Vec::new(),
            bulk_allowed: false,
            bulk: None,
            in_quotes: false,
            defaults: Arc::new(Vec::new()),
        }
    }

    /// Values of the fields the COPY leaves out that have a default.
    pub fn with_defaults(mut self, defaults: Vec<(usize, ScalarValue)>) -> CopyIn {
        self.defaults = Arc::new(defaults);
        self
    }

    /// Let a large COPY be a bulk load (`quiver_storage::BulkLoad`): it is
    /// not in a transaction block, whose rows stay in the transaction.
    pub fn allow_bulk(mut self) -> CopyIn {
        self.bulk_allowed = true;
        self
    }

    /// Once the rows converted so far fill a segment, write them as one
    /// (a bulk load), so that a COPY holds about a segment at a time.
    pub async fn stage_if_large(&mut self) -> Result<(), ExecError> {
        if !self.bulk_allowed {
            return Ok(());
        }
        let threshold = self.data.bulk_segment_bytes();
        // Converted chunks at the front of the queue, and their size.
        let mut ready = 0;
        let mut bytes = 0;
        for converted in &mut self.batches {
            if let Converted::Pending(handle) = converted {
                if !handle.is_finished() {
                    break;
                }
                *converted = Converted::Done(join(handle).await?);
            }
            if let Converted::Done(batch) = converted {
                ready += 1;
                bytes += batch.get_array_memory_size();
            }
        }
        if bytes < threshold {
            return Ok(());
        }
        let batches: Vec<RecordBatch> = self
            .batches
            .drain(..ready)
            .filter_map(|c| match c {
                Converted::Done(b) => Some(b),
                Converted::Pending(_) => None,
            })
            .collect();
        let data = self.data.clone();
        self.bulk
            .get_or_insert_with(|| data.bulk_load())
            .stage(batches)
            .await?;
        Ok(())
    }

    /// Number of columns the client sends.
    pub fn column_count(&self) -> usize {
        self.targets.len()
    }

    /// The collection copied into.
    pub fn collection(&self) -> &str {
        &self.def.name
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> usize {
        self.line
    }

    /// Whether the client sends PostgreSQL's binary COPY format.
    pub fn binary(&self) -> bool {
        self.options.binary
    }

    /// Take the next chunk of the client's data.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ExecError> {
        let mut pending = std::mem::take(&mut self.pending);
        // What was pending holds no end of row: only the new bytes are
        // searched (a long row arriving in many messages is read once).
        let from = pending.len();
        pending.extend_from_slice(bytes);
        let mut start = 0;
        if self.options.binary {
            start = self.binary_rows(&pending)?;
        } else if self.options.csv {
            let mut in_quotes = self.in_quotes;
            let quote = self.options.quote as u8;
            for i in from..pending.len() {
                let b = pending[i];
                if b == quote {
                    in_quotes = !in_quotes;
                } else if b == b'\n' && !in_quotes {
                    self.record(&pending[start..i])?;
                    start = i + 1;
                }
            }
            self.in_quotes = in_quotes;
        } else {
            let mut at = from;
            while let Some(n) = memchr::memchr(b'\n', &pending[at..]) {
                self.record(&pending[start..at + n])?;
                start = at + n + 1;
                at = start;
            }
        }
        pending.drain(..start);
        if pending.len() > MAX_ROW_BYTES {
            return Err(data_error(
                self.line + 1,
                format!(
                    "a row of more than {} MiB (the data has no end of row, or a binary field declares more)",
                    MAX_ROW_BYTES >> 20
                ),
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
            ));
        }
        self.pending = pending;
        Ok(())
    }

    /// Read the complete binary rows of `buf`; returns the bytes used.
    fn binary_rows(&mut self, buf: &[u8]) -> Result<usize, ExecError> {
        let bad = |line: usize, m: String| data_error(line, m, sqlstate::BAD_COPY_FILE_FORMAT);
        let mut at = 0;
        if !self.header_read {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != binary::SIGNATURE {
                return Err(bad(1, "COPY file signature not recognized".into()));
            }
            let flags = u32::from_be_bytes([buf[11], buf[12], buf[13], buf[14]]);
            if flags & (1 << 16) != 0 {
                return Err(bad(1, "COPY with OIDs is not supported".into()));
            }
            if flags >> 17 != 0 {
                return Err(bad(
                    1,
                    "unrecognized critical flags in COPY file header".into(),
                ));
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            if buf.len() - 19 < ext {
                return Ok(0);
            }
            at = 19 + ext;
            self.header_read = true;
            let schema = self.data.schema();
            self.bin = self
                .targets
                .iter()
                .map(|&t| {
                    let kind = &self.def.fields[t].field_type;
                    binary::ColumnBuffer::new(kind, schema.field(t).data_type(), CHUNK)
                })
                .collect();
            for &t in &self.targets {
                let field = &self.def.fields[t];
                if matches!(
                    field.field_type,
                    FieldType::Decimal { .. } | FieldType::Array(_)
                ) {
                    return Err(data_error(
                        1,
                        format!(
                            "binary COPY of {} columns (\"{}\") is not supported: use the text or csv format",
                            field.field_type.sql_name(),
                            field.name
                        ),
                        sqlstate::FEATURE_NOT_SUPPORTED,
                    ));
                }
            }
        }
        if self.done && at < buf.len() {
            return Err(bad(
                self.line + 1,
                "received copy data after EOF marker".into(),
            ));
        }
        while !self.done {
            let line = self.line + 1;
            let Some((count, end)) = binary::row_end(buf, at).map_err(|m| bad(line, m))? else {
                break;
            };
            let Some(count) = count else {
                at = end;
                self.done = true;
                break;
            };
            if count != self.targets.len() {
                return Err(bad(
                    line,
                    format!(
                        "row field count is {count}, expected {}",
                        self.targets.len()
                    ),
                ));
            }
            self.line = line;
            let mut p = at + 2;
            for (i, column) in self.bin.iter_mut().enumerate() {
                let (value, next) = binary::field_at(buf, p);
                p = next;
                if let Err(m) = column.push(value) {
                    let code = if m.starts_with(binary::BAD_TEXT) {
                        sqlstate::CHARACTER_NOT_IN_REPERTOIRE
                    } else {
                        sqlstate::INVALID_BINARY_REPRESENTATION
                    };
                    let name = &self.def.fields[self.targets[i]].name;
                    return Err(data_error(line, format!("column \"{name}\": {m}"), code));
                }
            }
            at = end;
            let rows = self.bin.first().map_or(0, binary::ColumnBuffer::len);
            if rows >= BINARY_BATCH_ROWS
                || self
                    .bin
                    .iter()
                    .map(binary::ColumnBuffer::bytes)
                    .sum::<usize>()
                    >= BINARY_BATCH_BYTES
            {
                self.convert()?;
            }
        }
        if self.done && at < buf.len() {
            return Err(bad(
                self.line + 1,
                "received copy data after EOF marker".into(),
            ));
        }
        Ok(at)
    }

    fn record(&mut self, raw: &[u8]) -> Result<(), ExecError> {
        self.line += 1;
        let line = self.line;
        let text = std::str::from_utf8(raw).map_err(|_| {
            data_error(
                line,
                "invalid byte sequence for encoding UTF8",
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
            )
        })?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        // `\.` alone ends the data in both formats (psql sends it after
        // an inline COPY in a script).
        if self.done || text == "\\." {
            self.done = true;
            return Ok(());
        }
        if self.options.header && line == 1 {
            return Ok(());
        }
        let fields = split_line(text, &self.options);
        if fields.len() != self.targets.len() {
            return Err(data_error(
                line,
                format!(
                    "expected {} columns, found {}",
                    self.targets.len(),
                    fields.len()
                ),
                sqlstate::BAD_COPY_FILE_FORMAT,
            ));
        }
        for (buffer, value) in self.columns.iter_mut().zip(fields) {
            buffer.push(value);
        }
        if self.columns[0].len() >= CHUNK {
            self.convert()?;
        }
        Ok(())
    }

    /// Hand the buffered rows to a blocking thread that turns them into a
    /// batch in the collection's storage schema.
    fn convert(&mut self) -> Result<(), ExecError> {
        let rows = if self.options.binary {
            self.bin.first().map_or(0, binary::ColumnBuffer::len)
        } else {
            self.columns.first().map_or(0, Vec::len)
        };
        if rows == 0 {
            return Ok(());
        }
        let columns = if self.options.binary {
            let schema = self.data.schema();
            let taken: Vec<binary::Taken> = self
                .bin
                .iter_mut()
                .zip(&self.targets)
                .map(|(column, &t)| {
                    let kind = &self.def.fields[t].field_type;
                    column.take(kind, schema.field(t).data_type(), CHUNK)
                })
                .collect();
            Values::Binary(taken)
        } else {
            Values::Text(self.columns.iter_mut().map(std::mem::take).collect())
        };
        let chunk = Chunk {
            def: self.def.clone(),
            schema: self.data.schema(),
            targets: self.targets.clone(),
            defaults: self.defaults.clone(),
            first_line: self.line + 1 - rows,
            rows,
        };
        let busy = self
            .batches
            .iter()
            .filter(|b| matches!(b, Converted::Pending(h) if !h.is_finished()))
            .count();
        // Binary values were decoded as they came: at most the types read
        // through their text form are left to convert.
        let decoded = matches!(&columns, Values::Binary(taken)
            if taken.iter().all(|t| matches!(t, binary::Taken::Array(_))));
        let converted = if busy < IN_FLIGHT && !decoded {
            Converted::Pending(tokio::task::spawn_blocking(move || chunk.convert(columns)))
        } else {
            // An error here is reported now, with its line.
            Converted::Done(chunk.convert(columns)?)
        };
        self.batches.push(converted);
        Ok(())
    }

    /// Append everything received, in the session's transaction `tx` if
    /// any; returns the number of rows.
    pub async fn finish(
        mut self,
        tx: Option<&quiver_storage::Transaction>,
    ) -> Result<usize, ExecError> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            if self.options.binary {
                return Err(data_error(
                    self.line + 1,
                    format!(
                        "unexpected end of binary COPY data ({} bytes of a row)",
                        rest.len()
                    ),
                    sqlstate::BAD_COPY_FILE_FORMAT,
                ));
            }
            self.record(&rest)?;
        }
        self.convert()?;
        let schema = self.data.schema();
        let mut batches = Vec::with_capacity(self.batches.len());
        for converted in self.batches.drain(..) {
            let batch = match converted {
                Converted::Done(batch) => batch,
                Converted::Pending(mut handle) => join(&mut handle).await?,
            };
            batches.push(batch);
        }
        if let Some(mut bulk) = self.bulk.take() {
            if tx.is_some() {
                return Err(ExecError::DataFusion(DataFusionError::Internal(
                    "a bulk COPY inside a transaction block".into(),
                )));
            }
            bulk.stage(batches).await?;
            return Ok(bulk.attach().await?);
        }
        // One part (a COPY of up to [`BINARY_BATCH_ROWS`] binary rows) is
        // taken as it is, without a copy.
        let batch = if batches.len() == 1 {
            batches.remove(0)
        } else {
            concat_batches(&schema, &batches)?
        };
        Ok(
            crate::txn::mutate(&self.data, tx, Mutation::insert(batch), false, None)
                .await?
                .0,
        )
    }
}

/// The batch a conversion thread made.
async fn join(
    handle: &mut tokio::task::JoinHandle<Result<RecordBatch, ExecError>>,
) -> Result<RecordBatch, ExecError> {
    handle
        .await
        .map_err(|e| ExecError::DataFusion(DataFusionError::Execution(format!("COPY: {e}"))))?
}

/// Rows of a COPY to convert to Arrow.
#[derive(Clone)]
struct Chunk {
    def: Arc<CollectionDef>,
    schema: arrow::datatypes::SchemaRef,
    targets: Vec<usize>,
    defaults: Arc<Vec<(usize, ScalarValue)>>,
    /// Line number of the first row, for messages.
    first_line: usize,
    rows: usize,
}

/// A chunk's values as the client sent them.
enum Values {
    Text(Vec<Vec<Option<String>>>),
    /// Binary COPY: each column decoded, or its values in their type's
    /// binary form.
    Binary(Vec<binary::Taken>),
}

impl Chunk {
    fn convert(self, values: Values) -> Result<RecordBatch, ExecError> {
        let first_line = self.first_line;
        let error = |m, code| data_error(first_line, m, code);
        let batch = match values {
            Values::Text(columns) => {
                let mut columns = columns;
                match text_to_batch(
                    &self.def,
                    self.schema.clone(),
                    &self.targets,
                    &mut columns,
                    self.rows,
                    error,
                ) {
                    Ok(batch) => batch,
                    Err(e) => return Err(self.line_of_error(&columns).unwrap_or(e)),
                }
            }
            Values::Binary(columns) => {
                // Fields the COPY names are filled below; the others are NULL.
                let mut arrays: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
                for (values, &field) in columns.into_iter().zip(&self.targets) {
                    let def = &self.def.fields[field];
                    // The line of the row with the bad value.
                    let bad = |(row, m): (usize, String)| {
                        let code = if m.starts_with(binary::BAD_TEXT) {
                            sqlstate::CHARACTER_NOT_IN_REPERTOIRE
                        } else {
                            sqlstate::INVALID_BINARY_REPRESENTATION
                        };
                        data_error(
                            first_line + row,
                            format!("column \"{}\": {m}", def.name),
                            code,
                        )
                    };
                    arrays[field] = Some(match values {
                        binary::Taken::Array(array) => array.map_err(|m| bad((0, m)))?,
                        // Other types go through their text form.
                        binary::Taken::Raw(values) => {
                            let text = values
                                .iter()
                                .enumerate()
                                .map(|(i, v)| {
                                    v.map(|b| binary::to_text(&def.field_type, b))
                                        .transpose()
                                        .map_err(|m| (i, m))
                                })
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(bad)?;
                            let mut text = [text];
                            let batch = match text_to_batch(
                                &self.def,
                                self.schema.clone(),
                                &[field],
                                &mut text,
                                self.rows,
                                error,
                            ) {
                                Ok(batch) => batch,
                                Err(e) => {
                                    let one = Chunk {
                                        targets: vec![field],
                                        ..self.clone()
                                    };
                                    return Err(one.line_of_error(&text).unwrap_or(e));
                                }
                            };
                            batch.column(field).clone()
                        }
                    });
                }
                let arrays = arrays
                    .into_iter()
                    .zip(self.schema.fields())
                    .map(|(a, f)| a.unwrap_or_else(|| new_null_array(f.data_type(), self.rows)))
                    .collect();
                RecordBatch::try_new(self.schema.clone(), arrays)?
            }
        };
        let batch = self.with_defaults(batch)?;
        self.check_not_null(&batch)?;
        Ok(batch)
    }

    /// `batch` with the defaults of the fields not copied filled in.
    fn with_defaults(&self, batch: RecordBatch) -> Result<RecordBatch, ExecError> {
        if self.defaults.is_empty() {
            return Ok(batch);
        }
        let mut arrays = batch.columns().to_vec();
        for (i, value) in self.defaults.iter() {
            let array = value.to_array_of_size(self.rows)?;
            let want = self.schema.field(*i).data_type();
            arrays[*i] = if array.data_type() == want {
                array
            } else {
                arrow::compute::cast(&array, want)?
            };
        }
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    /// The error of the first row of `columns` that does not convert alone,
    /// named by its line (a chunk converts as a whole; this runs only once
    /// it failed).
    fn line_of_error(&self, columns: &[Vec<Option<String>>]) -> Option<ExecError> {
        (0..self.rows).find_map(|row| {
            // Columns converted before the failing one were let go of (and
            // were fine): only the others are tried.
            let (targets, mut one): (Vec<usize>, Vec<Vec<Option<String>>>) = columns
                .iter()
                .zip(&self.targets)
                .filter(|(c, _)| c.len() == self.rows)
                .map(|(c, &t)| (t, vec![c[row].clone()]))
                .unzip();
            text_to_batch(
                &self.def,
                self.schema.clone(),
                &targets,
                &mut one,
                1,
                |m, code| data_error(self.first_line + row, m, code),
            )
            .err()
        })
    }

    /// 23502 naming the line of the first NULL in a NOT NULL field (storage
    /// checks again, but cannot name the line).
    fn check_not_null(&self, batch: &RecordBatch) -> Result<(), ExecError> {
        for (i, field) in self.def.fields.iter().enumerate() {
            let key = self.def.primary_key == Some(i);
            if (field.nullable && !key) || field.auto_increment {
                continue;
            }
            let column = batch.column(i);
            if column.null_count() == 0 {
                continue;
            }
            let row = (0..column.len()).find(|&r| column.is_null(r)).unwrap_or(0);
            return Err(data_error(
                self.first_line + row,
                format!(
                    "null value in column \"{}\" of collection \"{}\" violates not-null constraint",
                    field.name, self.def.name
                ),
                sqlstate::NOT_NULL_VIOLATION,
            ));
        }
        Ok(())
    }
}

/// Rows given as text (COPY's fields, or the literals of an INSERT ...
/// VALUES) as a batch of the collection's `schema`: each column of
/// `columns` read as the type of its field in `targets`, the other fields
/// NULL. `error` words a value that does not fit.
pub fn text_to_batch(
    def: &CollectionDef,
    schema: arrow::datatypes::SchemaRef,
    targets: &[usize],
    columns: &mut [Vec<Option<String>>],
    rows: usize,
    error: impl Fn(String, SqlState) -> ExecError,
) -> Result<RecordBatch, ExecError> {
    let mut arrays: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    for (column, &field) in columns.iter_mut().zip(targets) {
        // A column's strings are let go of as soon as they are copied into
        // an Arrow array, before it is parsed (holding them through the
        // parse raised a large COPY's peak memory by about 25 MiB); a
        // failing column is put back, for the line of its bad row.
        let buffer = std::mem::take(column);
        // Sized exactly: a builder grown by doubling held up to twice the
        // text of each chunk in flight.
        let bytes: usize = buffer.iter().flatten().map(String::len).sum();
        let mut builder = arrow::array::StringBuilder::with_capacity(buffer.len(), bytes);
        for v in &buffer {
            builder.append_option(v.as_deref());
        }
        drop(buffer);
        let strings: ArrayRef = Arc::new(builder.finish());
        let text = strings.as_string::<i32>();
        let def = &def.fields[field];
        let bad = |e: VectorError| error(format!("column {}: {e}", def.name), e.sqlstate());
        let converted = || -> Result<ArrayRef, ExecError> {
            Ok(match def.field_type {
                FieldType::Vector { dim } => {
                    let column = VectorColumn::try_from_array(&strings).map_err(bad)?;
                    Arc::new(column.to_fixed(dim).map_err(bad)?)
                }
                FieldType::Bit { bits } => {
                    let column = BitColumn::try_from_array(&strings, None).map_err(bad)?;
                    Arc::new(column.to_fixed(bits as i64).map_err(bad)?)
                }
                FieldType::Bytea => {
                    let mut values = Vec::with_capacity(rows);
                    for v in text.iter() {
                        values.push(v.map(bytea_from_text).transpose().map_err(|m| {
                            error(
                                format!("column {}: {m}", def.name),
                                sqlstate::INVALID_TEXT_REPRESENTATION,
                            )
                        })?);
                    }
                    Arc::new(arrow::array::BinaryArray::from_iter(values))
                }
                FieldType::Array(_) => {
                    let arrow::datatypes::DataType::List(item) = schema.field(field).data_type()
                    else {
                        return Err(error(
                            format!("column {}: not a list", def.name),
                            sqlstate::DATATYPE_MISMATCH,
                        ));
                    };
                    Arc::new(text_to_list(text, item).map_err(|m| {
                        error(
                            format!("column {}: {m}", def.name),
                            sqlstate::INVALID_TEXT_REPRESENTATION,
                        )
                    })?)
                }
                _ => cast_with_options(&strings, schema.field(field).data_type(), &options)
                    .or_else(|e| match schema.field(field).data_type() {
                        // PostgreSQL takes `2024-01-01 10:00`; Arrow wants
                        // seconds. Tried only once the plain cast failed.
                        arrow::datatypes::DataType::Timestamp(..) => {
                            let fixed: arrow::array::StringArray = text
                                .iter()
                                .map(|v| {
                                    v.map(|v| {
                                        quiver_common::timestamp_text::with_seconds(v)
                                            .unwrap_or_else(|| v.to_string())
                                    })
                                })
                                .collect();
                            cast_with_options(&fixed, schema.field(field).data_type(), &options)
                                .map_err(|_| e)
                        }
                        _ => Err(e),
                    })
                    .map_err(|e| {
                        error(
                            format!("column {}: {e}", def.name),
                            sqlstate::INVALID_TEXT_REPRESENTATION,
                        )
                    })?,
            })
        };
        match converted() {
            Ok(array) => arrays[field] = Some(array),
            Err(e) => {
                // The failing column stays, for the line of its bad row.
                *column = text.iter().map(|v| v.map(str::to_string)).collect();
                return Err(e);
            }
        }
    }
    // The fields not given are NULL (made only for them: a vector
    // column's nulls are a zeroed buffer of its whole size).
    let arrays = arrays
        .into_iter()
        .zip(schema.fields())
        .map(|(a, f)| a.unwrap_or_else(|| new_null_array(f.data_type(), rows)))
        .collect();
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// PostgreSQL's bytea input: `\x` and hex digits, or the escape format
/// (`\\` for a backslash, `\nnn` octal, other bytes as they are).
pub fn bytea_from_text(text: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("invalid input syntax for type bytea: \"{text}\"");
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(bad());
        }
        return digits
            .chunks(2)
            .map(|p| {
                std::str::from_utf8(p)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or_else(bad)
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
                .ok_or_else(bad)?;
            let v = (octal[0] - b'0') as u32 * 64
                + (octal[1] - b'0') as u32 * 8
                + (octal[2] - b'0') as u32;
            out.push(u8::try_from(v).map_err(|_| bad())?);
            i += 4;
        }
    }
    Ok(out)
}

/// PostgreSQL array literals (`{a,"b c",NULL}`), one per row, as a list
/// of `item`s; a NULL row is a NULL list.
pub fn text_to_list(
    strings: &StringArray,
    item: &arrow::datatypes::FieldRef,
) -> Result<arrow::array::ListArray, String> {
    use arrow::array::Array;
    let mut elements: Vec<Option<String>> = Vec::new();
    let mut lengths = Vec::with_capacity(strings.len());
    for i in 0..strings.len() {
        if strings.is_null(i) {
            lengths.push(0);
            continue;
        }
        let parsed = quiver_common::pg_array::parse(strings.value(i))?;
        lengths.push(parsed.len());
        elements.extend(parsed);
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let values = cast_with_options(&StringArray::from(elements), item.data_type(), &options)
        .map_err(|e| e.to_string())?;
    arrow::array::ListArray::try_new(
        item.clone(),
        arrow::buffer::OffsetBuffer::from_lengths(lengths),
        values,
        strings.nulls().cloned(),
    )
    .map_err(|e| e.to_string())
}

/// The fields of one line of COPY data in `options`' format (`None`: the
/// NULL marker).
pub fn split_line(line: &str, options: &CopyOptions) -> Vec<Option<String>> {
    if options.csv {
        split_csv(line, options)
    } else {
        split_text(line, options)
    }
}

fn split_text(line: &str, options: &CopyOptions) -> Vec<Option<String>> {
    line.split(options.delimiter)
        .map(|raw| {
            if raw == options.null {
                return None;
            }
            if !raw.contains('\\') {
                return Some(raw.to_owned());
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            }
            Some(out)
        })
        .collect()
}

/// Split one record of the csv format; an unquoted empty field is NULL.
fn split_csv(line: &str, options: &CopyOptions) -> Vec<Option<String>> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == options.quote {
                if chars.peek() == Some(&options.quote) {
                    current.push(c);
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                current.push(c);
            }
        } else if c == options.quote {
            in_quotes = true;
            quoted = true;
        } else if c == options.delimiter {
            fields.push(csv_value(std::mem::take(&mut current), quoted, options));
            quoted = false;
        } else {
            current.push(c);
        }
    }
    fields.push(csv_value(current, quoted, options));
    fields
}

fn csv_value(value: String, quoted: bool, options: &CopyOptions) -> Option<String> {
    (quoted || value != options.null).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_csv_fields() {
        let t = CopyOptions::text();
        assert_eq!(
            split_text("1\t\\N\ta\\tb\t[1,2]", &t),
            vec![
                Some("1".into()),
                None,
                Some("a\tb".into()),
                Some("[1,2]".into())
            ]
        );
        let c = CopyOptions::csv();
        assert_eq!(
            split_csv("1,,\"\",\"[1,2]\",\"say \"\"hi\"\"\"", &c),
            vec![
                Some("1".into()),
                None,
                Some(String::new()),
                Some("[1,2]".into()),
                Some("say \"hi\"".into())
            ]
        );
    }
}
