//! The pieces a search is made of: the snapshot's chunks and their filter
//! masks, exact scoring of rows, the bounded top-k heap, and the per-segment
//! report EXPLAIN ANALYZE prints.

use super::*;

/// A batch of one segment and which of its rows are live (borrowed from
/// the segment for the length of one search).
pub(super) struct Chunk<'a> {
    pub(super) batch: &'a RecordBatch,
    /// `None` when every row is live.
    pub(super) live: Option<BooleanArray>,
}

/// Counters shown by EXPLAIN ANALYZE.
pub(super) struct SearchMetrics {
    pub(super) scored: datafusion::physical_plan::metrics::Count,
    pub(super) index_segments: datafusion::physical_plan::metrics::Count,
    pub(super) exact_segments: datafusion::physical_plan::metrics::Count,
    pub(super) index_candidates: datafusion::physical_plan::metrics::Count,
    pub(super) widened: datafusion::physical_plan::metrics::Count,
}

impl SearchMetrics {
    pub(super) fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> SearchMetrics {
        SearchMetrics {
            scored: MetricBuilder::new(set).counter("rows_scored", partition),
            index_segments: MetricBuilder::new(set)
                .counter("segments_searched_by_index", partition),
            exact_segments: MetricBuilder::new(set).counter("segments_searched_exactly", partition),
            index_candidates: MetricBuilder::new(set).counter("index_candidates", partition),
            widened: MetricBuilder::new(set).counter("searches_widened", partition),
        }
    }
}

/// One segment's chunks and its loaded index, if any.
pub(super) struct SegmentPlan {
    pub(super) id: u64,
    pub(super) state: &'static str,
    pub(super) first_chunk: usize,
    pub(super) chunks: usize,
    pub(super) index: Option<LoadedIndex>,
    /// The sealed segment, where its filter results are kept.
    pub(super) flushed: Option<Arc<quiver_storage::segment::FlushedSegment>>,
}

/// How one segment was searched, for EXPLAIN ANALYZE.
#[derive(Debug, Clone)]
pub(super) struct SegmentReport {
    pub(super) id: u64,
    pub(super) state: &'static str,
    pub(super) strategy: &'static str,
    pub(super) rows: usize,
    /// Rows that pass the deletes and the filter.
    pub(super) passing: usize,
    /// Rows scored: by an exact scan, by a filtered graph walk, or index
    /// hits scored again.
    pub(super) scored: usize,
    pub(super) micros: u128,
}

impl fmt::Display for SegmentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {}: {} rows, {} passing, {} scored, {:.3} ms",
            self.id,
            self.state,
            self.strategy,
            self.rows,
            self.passing,
            self.scored,
            self.micros as f64 / 1000.0
        )
    }
}

/// A heap entry: score, chunk, row. Ordered by score (NaN last), then position.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) score: f32,
    pub(super) chunk: usize,
    pub(super) row: usize,
}

impl Candidate {
    pub(super) fn key(&self) -> (f32, usize, usize) {
        let s = if self.score.is_nan() {
            f32::INFINITY
        } else {
            self.score
        };
        (s, self.chunk, self.row)
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
    }
}

/// Which rows of `batch` pass `filter` (NULL counts as false).
fn filter_values(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanBuffer> {
    let n = batch.num_rows();
    let value = filter.evaluate(batch)?.into_array(n)?;
    let value = value
        .as_boolean_opt()
        .ok_or_else(|| DataFusionError::Plan("argument of WHERE must be type boolean".into()))?;
    Ok(match value.nulls() {
        Some(nulls) => value.values() & nulls.inner(),
        None => value.values().clone(),
    })
}

/// The longest filter text whose results a sealed segment keeps.
const MAX_FILTER_KEY: usize = 4096;

/// The key a filter's results are kept under in a sealed segment, or
/// `None` when they may change between runs (a volatile function) or the
/// filter is too long to be worth keeping.
fn filter_key(filter: &Arc<dyn PhysicalExpr>) -> Option<String> {
    let mut volatile = false;
    let _ = filter.apply(|e| {
        if let Some(f) = e.downcast_ref::<datafusion::physical_expr::ScalarFunctionExpr>()
            && f.fun().signature().volatility == datafusion::logical_expr::Volatility::Volatile
        {
            volatile = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if volatile {
        return None;
    }
    // A filter's text is its key: one with a huge IN list or literal is
    // not kept (a segment holds 32 keys, and each search builds one).
    let key = format!("ann filter {filter:?}");
    (key.len() <= MAX_FILTER_KEY).then_some(key)
}

/// Which rows of each chunk pass the deletes and the filter (`None`: all).
/// A sealed segment keeps its filter's results (by the filter's text, its
/// parameters bound), so a search repeated with the same filter only
/// combines them with the deletes; growing segments evaluate it each time.
pub(super) fn masks_of(
    spec: &AnnSearchSpec,
    chunks: &[Chunk<'_>],
    segments: &[SegmentPlan],
) -> Result<Vec<Option<BooleanArray>>> {
    let mut masks = Vec::with_capacity(chunks.len());
    for seg in segments {
        let range = seg.first_chunk..seg.first_chunk + seg.chunks;
        let Some(filter) = &spec.filter else {
            masks.extend(range.map(|ci| chunks[ci].live.clone()));
            continue;
        };
        let kept = match (&seg.flushed, filter_key(filter)) {
            (Some(flushed), Some(key)) => Some(flushed.derived(&key, || -> Result<_> {
                let total = range.clone().map(|ci| chunks[ci].batch.num_rows()).sum();
                let mut all = arrow::array::BooleanBufferBuilder::new(total);
                for ci in range.clone() {
                    all.append_buffer(&filter_values(filter, chunks[ci].batch)?);
                }
                Ok(all.finish())
            })?),
            _ => None,
        };
        let mut offset = 0;
        for ci in range {
            let n = chunks[ci].batch.num_rows();
            let values = match &kept {
                Some(all) if offset + n <= all.len() => all.slice(offset, n),
                _ => filter_values(filter, chunks[ci].batch)?,
            };
            offset += n;
            let values = match &chunks[ci].live {
                Some(live) => live.values() & &values,
                None => values,
            };
            masks.push(Some(BooleanArray::new(values, None)));
        }
    }
    Ok(masks)
}

/// One chunk's searched column, ready to score against the query.
pub(super) enum ChunkColumn<'a> {
    Float {
        values: &'a [f32],
        base: usize,
        dim: usize,
    },
    Bits(&'a arrow::array::FixedSizeBinaryArray),
}

/// The query with what scoring needs precomputed.
pub(super) struct Scorer<'a> {
    pub(super) metric: Metric,
    pub(super) query: &'a Query,
    /// |query| for cosine.
    pub(super) norm: f32,
}

impl<'a> Scorer<'a> {
    pub(super) fn new(spec: &'a AnnSearchSpec) -> Scorer<'a> {
        let norm = match &spec.query {
            Query::Float(q) => distance::dot(q, q).sqrt(),
            Query::Bits { .. } => 0.0,
        };
        Scorer {
            metric: spec.metric,
            query: &spec.query,
            norm,
        }
    }

    /// The order-preserving score of `row` (smaller is closer) and, when
    /// `exact` is asked for, the SQL distance.
    #[inline]
    pub(super) fn score(&self, column: &ChunkColumn, row: usize) -> f32 {
        match (column, self.query) {
            (ChunkColumn::Float { values, base, dim }, Query::Float(q)) => {
                let v = &values[base + row * dim..base + (row + 1) * dim];
                distance::score(self.metric, v, q, self.norm)
            }
            (ChunkColumn::Bits(a), Query::Bits { bytes, .. }) => {
                bits::distance(self.metric, a.value(row), bytes) as f32
            }
            _ => f32::NAN,
        }
    }

    #[inline]
    pub(super) fn distance(&self, column: &ChunkColumn, row: usize) -> f64 {
        match (column, self.query) {
            (ChunkColumn::Float { values, base, dim }, Query::Float(q)) => {
                let v = &values[base + row * dim..base + (row + 1) * dim];
                distance::distance(self.metric, v, q)
            }
            (ChunkColumn::Bits(a), Query::Bits { bytes, .. }) => {
                bits::distance(self.metric, a.value(row), bytes)
            }
            _ => f64::NAN,
        }
    }
}

pub(super) fn not_searchable(spec: &AnnSearchSpec, what: &str) -> DataFusionError {
    DataFusionError::External(Box::new(StorageError::InvalidBatch(format!(
        "{} is not {what}",
        spec.vector_name
    ))))
}

/// The searched column of `chunk` and its null rows, checked against the
/// query's dimension.
pub(super) fn column_of<'a>(
    spec: &AnnSearchSpec,
    chunk: &Chunk<'a>,
) -> Result<(ChunkColumn<'a>, Option<arrow::buffer::NullBuffer>)> {
    let column = chunk.batch.column(spec.vector_column);
    match &spec.query {
        Query::Float(query) => {
            let list = column
                .as_fixed_size_list_opt()
                .ok_or_else(|| not_searchable(spec, "a vector column"))?;
            let dim = list.value_length() as usize;
            if dim != query.len() {
                return Err(DataFusionError::External(Box::new(
                    VectorError::DifferentDimensions {
                        left: dim,
                        right: query.len(),
                    },
                )));
            }
            let values = list.values().as_primitive::<Float32Type>().values();
            Ok((
                ChunkColumn::Float {
                    values,
                    base: list.offset() * dim,
                    dim,
                },
                list.logical_nulls(),
            ))
        }
        Query::Bits { bits: n, bytes } => {
            let array = column
                .as_fixed_size_binary_opt()
                .ok_or_else(|| not_searchable(spec, "a bit column"))?;
            let width = array.value_length() as usize;
            let column_bits = chunk
                .batch
                .schema()
                .field(spec.vector_column)
                .metadata()
                .get(quiver_vector::column::BIT_METADATA_KEY)
                .and_then(|b| b.parse::<usize>().ok());
            let differ =
                width != bytes.len() || matches!((column_bits, n), (Some(a), Some(b)) if a != *b);
            if differ {
                return Err(DataFusionError::External(Box::new(
                    VectorError::DifferentBitLengths {
                        left: column_bits.unwrap_or(width * 8),
                        right: n.unwrap_or(bytes.len() * 8),
                    },
                )));
            }
            Ok((ChunkColumn::Bits(array), array.logical_nulls()))
        }
    }
}

/// The top-k so far, plus up to k rows with a NULL vector for the tail.
pub(super) struct TopK {
    pub(super) k: usize,
    pub(super) heap: BinaryHeap<Candidate>,
    pub(super) null_rows: Vec<(usize, usize)>,
}

impl TopK {
    pub(super) fn offer(&mut self, cand: Candidate) {
        if self.heap.len() < self.k {
            self.heap.push(cand);
        } else if let Some(top) = self.heap.peek()
            && cand < *top
        {
            self.heap.pop();
            self.heap.push(cand);
        }
    }
}

/// Score every passing row of chunks `range`; returns the rows scored.
pub(super) fn exact(
    spec: &AnnSearchSpec,
    chunks: &[Chunk<'_>],
    masks: &[Option<BooleanArray>],
    range: std::ops::Range<usize>,
    top: &mut TopK,
) -> Result<usize> {
    let scorer = Scorer::new(spec);
    let mut scored = 0;
    for ci in range {
        let (column, nulls) = column_of(spec, &chunks[ci])?;
        let n = chunks[ci].batch.num_rows();
        let mut rows = match &masks[ci] {
            Some(m) => Box::new(m.values().set_indices()) as Box<dyn Iterator<Item = usize>>,
            None => Box::new(0..n),
        }
        .peekable();
        while let Some(row) = rows.next() {
            // The passing rows lie scattered: ask for the next one while
            // this one is scored.
            if let (Some(&next), ChunkColumn::Float { values, base, dim }) = (rows.peek(), &column)
                && let Some(v) = values.get(base + next * dim..base + (next + 1) * dim)
            {
                distance::prefetch(v);
            }
            if nulls.as_ref().is_some_and(|nb| nb.is_null(row)) {
                if top.null_rows.len() < top.k {
                    top.null_rows.push((ci, row));
                }
                continue;
            }
            scored += 1;
            let score = scorer.score(&column, row);
            if spec
                .range
                .is_some_and(|r| !r.contains(scorer.distance(&column, row)))
            {
                continue;
            }
            top.offer(Candidate {
                score,
                chunk: ci,
                row,
            });
        }
    }
    Ok(scored)
}
