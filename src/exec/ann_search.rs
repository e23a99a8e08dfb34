//! `AnnSearchExec`: top-k nearest neighbours of one query vector over a
//! collection snapshot, with the filter and deletes applied before ranking.
//!
//! Without an index the search is exact: every live row that passes the
//! filter is scored with the SIMD kernel and kept in a bounded max-heap of
//! size k, so memory is O(k) and no full sort happens. Rows whose vector is
//! NULL have a NULL distance and come after every other row.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{and, interleave};
use arrow::datatypes::{Float32Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

use crate::catalog::IndexDef;
use crate::storage::segment::{LoadedIndex, SegmentData};
use crate::storage::{CollectionData, StorageError};
use crate::vector::index::{Method, SearchKnobs};
use crate::vector::{Metric, Query, VectorError, bits, distance};

/// What to search and how.
#[derive(Debug, Clone)]
pub struct AnnSearchSpec {
    pub collection: String,
    pub data: Arc<CollectionData>,
    /// Index of the vector field in the collection schema.
    pub vector_column: usize,
    pub vector_name: String,
    /// Collection-schema indices of the output columns.
    pub projection: Vec<usize>,
    /// Evaluated on batches in the collection schema.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub metric: Metric,
    pub query: Query,
    pub k: usize,
    /// Bounds on the distance (`SEARCH ... WITH (radius, range_filter)` or
    /// a WHERE on the ordering distance): a range search.
    pub range: Option<DistanceRange>,
    /// The index this search may use, as known at planning (EXPLAIN).
    pub index: Option<IndexDef>,
}

/// Bounds on the distance of the rows a search returns; each is a value
/// and whether it is inclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DistanceRange {
    pub upper: Option<(f64, bool)>,
    pub lower: Option<(f64, bool)>,
}

impl DistanceRange {
    /// Whether `d`, a distance as the SQL operator returns it, is in range.
    pub fn contains(&self, d: f64) -> bool {
        let below = match self.upper {
            Some((u, true)) => d <= u,
            Some((u, false)) => d < u,
            None => !d.is_nan(),
        };
        let above = match self.lower {
            Some((l, true)) => d >= l,
            Some((l, false)) => d > l,
            None => true,
        };
        below && above
    }
}

impl DistanceRange {
    /// [`Self::contains`] with bounds widened for an index's rounding; the
    /// exact distance decides later.
    fn roughly_contains(&self, d: f32) -> bool {
        let d = d as f64;
        let widen = |b: f64| 1e-4 * b.abs() + 1e-6;
        DistanceRange {
            upper: self.upper.map(|(u, _)| (u + widen(u), true)),
            lower: self.lower.map(|(l, _)| (l - widen(l), true)),
        }
        .contains(d)
    }
}

impl fmt::Display for DistanceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some((l, inclusive)) = self.lower {
            parts.push(format!(
                "distance {} {l}",
                if inclusive { ">=" } else { ">" }
            ));
        }
        if let Some((u, inclusive)) = self.upper {
            parts.push(format!(
                "distance {} {u}",
                if inclusive { "<=" } else { "<" }
            ));
        }
        write!(f, "{}", parts.join(" AND "))
    }
}

/// The search settings of a session (`SET hnsw.ef_search`, `SET
/// ivfflat.probes`), kept in its DataFusion config for execution.
#[derive(Debug, Default)]
pub struct SearchSettings(pub parking_lot::Mutex<SearchKnobs>);

/// The most candidates one HNSW search fetches to filter them.
const MAX_FETCH: usize = 16384;
/// Below this many surviving rows a segment is searched exactly.
const EXACT_BELOW_ROWS: usize = 2048;
/// ... and when fewer than one row in this many survive the filter.
const EXACT_BELOW_FRACTION: usize = 20;

#[derive(Debug)]
pub struct AnnSearchExec {
    spec: AnnSearchSpec,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// How each segment was searched by the last execution.
    reports: Arc<parking_lot::Mutex<Vec<SegmentReport>>>,
}

impl AnnSearchExec {
    pub fn new(spec: AnnSearchSpec, schema: SchemaRef) -> AnnSearchExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        AnnSearchExec {
            spec,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            reports: Arc::default(),
        }
    }

    pub fn spec(&self) -> &AnnSearchSpec {
        &self.spec
    }

    /// The same search returning only the output columns `keep` (indexes
    /// into this search's output, ascending), or `None` if one is out of
    /// range.
    pub fn narrowed(&self, keep: &[usize]) -> Option<AnnSearchExec> {
        let mut spec = self.spec.clone();
        spec.projection = keep
            .iter()
            .map(|&i| self.spec.projection.get(i).copied())
            .collect::<Option<_>>()?;
        let schema = Arc::new(self.schema.project(keep).ok()?);
        Some(AnnSearchExec::new(spec, schema))
    }

    /// The same search for another query vector (a prepared search's next
    /// execution).
    pub fn with_query(&self, query: Query) -> AnnSearchExec {
        let mut spec = self.spec.clone();
        spec.query = query;
        AnnSearchExec::new(spec, self.schema.clone())
    }
}

impl DisplayAs for AnnSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        write!(
            f,
            "AnnSearchExec: collection={}, column={}, metric={}, k={}",
            s.collection,
            s.vector_name,
            s.metric.name(),
            s.k
        )?;
        match &s.index {
            // faiss's binary indexes know no Jaccard: a flat one is a scan.
            Some(i) if i.spec.method == Method::BinFlat && s.metric == Metric::Jaccard => write!(
                f,
                ", index={} (bin_flat), strategy=exact (bin_flat scans every row for jaccard)",
                i.name
            )?,
            Some(i) => write!(
                f,
                ", index={} ({} {}), strategy=index per sealed segment, filter and deletes applied {} (exact below {} passing rows or 1/{} of a segment, and for growing segments)",
                i.name,
                i.spec.method.name(),
                i.spec.method.params(),
                if matches!(i.spec.method, Method::Hnsw { .. }) || i.spec.method.is_binary() {
                    "to fetched candidates"
                } else {
                    "by ID selector"
                },
                EXACT_BELOW_ROWS,
                EXACT_BELOW_FRACTION
            )?,
            None => write!(f, ", strategy=exact")?,
        }
        if let Some(range) = &s.range {
            write!(f, ", range={range}")?;
            if s.index.is_some() && range.upper.is_some() {
                write!(f, " (index range search)")?;
            }
        }
        if let Some(filter) = &s.filter {
            write!(f, ", filter={filter}")?;
        }
        // After execution (EXPLAIN ANALYZE): each segment's strategy.
        let reports = self.reports.lock();
        if !reports.is_empty() {
            let lines: Vec<String> = reports.iter().map(ToString::to_string).collect();
            write!(f, ", segments=[{}]", lines.join("; "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for AnnSearchExec {
    fn name(&self) -> &str {
        "AnnSearchExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.spec.filter {
            Some(filter) => f(filter),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }
    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
    /// At most k rows: the physical optimizer then adds no repartitioning
    /// above the search (its threads and channels cost more than the few
    /// rows are worth).
    fn partition_statistics(
        &self,
        _partition: Option<usize>,
    ) -> Result<Arc<datafusion::common::Statistics>> {
        let mut stats = datafusion::common::Statistics::new_unknown(&self.schema);
        stats.num_rows = datafusion::common::stats::Precision::Inexact(self.spec.k);
        Ok(Arc::new(stats))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let spec = self.spec.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let knobs = context
            .session_config()
            .get_extension::<SearchSettings>()
            .map(|s| *s.0.lock())
            .unwrap_or_default();
        let metrics = SearchMetrics::new(&self.metrics, partition);
        let time = MetricBuilder::new(&self.metrics).elapsed_compute(partition);
        let reports = self.reports.clone();
        let stream = futures::stream::once(async move {
            let (batch, segment_reports) = run(&spec, knobs, &metrics, Some(&time), schema).await?;
            *reports.lock() = segment_reports;
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

impl AnnSearchExec {
    /// Run this search for `query` outside a DataFusion stream (a cached
    /// prepared search): the rows in this node's schema.
    pub async fn run_with(&self, query: Query, knobs: SearchKnobs) -> Result<RecordBatch> {
        let mut spec = self.spec.clone();
        spec.query = query;
        let set = ExecutionPlanMetricsSet::new();
        let metrics = SearchMetrics::new(&set, 0);
        Ok(run(&spec, knobs, &metrics, None, self.schema.clone())
            .await?
            .0)
    }
}

/// Search the collection's current snapshot.
async fn run(
    spec: &AnnSearchSpec,
    knobs: SearchKnobs,
    metrics: &SearchMetrics,
    time: Option<&datafusion::physical_plan::metrics::Time>,
    schema: SchemaRef,
) -> Result<(RecordBatch, Vec<SegmentReport>)> {
    let snapshot = spec.data.snapshot();
    // The index in force now (it may have been created after planning).
    let index = spec
        .data
        .index_defs()
        .into_iter()
        .find(|d| d.field == spec.vector_column && d.spec.metric == spec.metric);
    // Each segment's batches, held here so that the chunks can borrow them.
    let mut held = Vec::with_capacity(snapshot.segments.len());
    for seg in &snapshot.segments {
        held.push(
            seg.batches()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
        );
    }
    let mut chunks = Vec::new();
    let mut segments = Vec::with_capacity(held.len());
    for (seg, batches) in snapshot.segments.iter().zip(&held) {
        let loaded = match (&seg.data, &index) {
            (SegmentData::Flushed(f), Some(def)) => f.index(&def.name),
            _ => None,
        };
        segments.push(SegmentPlan {
            id: seg.id,
            state: seg.state.name(),
            first_chunk: chunks.len(),
            chunks: batches.len(),
            index: loaded,
        });
        let mut start = 0;
        for batch in batches.iter() {
            let n = batch.num_rows();
            chunks.push(Chunk {
                batch,
                live: seg.deletes.live_mask(start, n),
            });
            start += n;
        }
    }
    let _timer = time.map(|t| t.timer());
    search(spec, &chunks, &segments, knobs, metrics, schema)
}

/// A batch of one segment and which of its rows are live (borrowed from
/// the segment for the length of one search).
struct Chunk<'a> {
    batch: &'a RecordBatch,
    /// `None` when every row is live.
    live: Option<BooleanArray>,
}

/// Counters shown by EXPLAIN ANALYZE.
struct SearchMetrics {
    scored: datafusion::physical_plan::metrics::Count,
    index_segments: datafusion::physical_plan::metrics::Count,
    exact_segments: datafusion::physical_plan::metrics::Count,
    index_candidates: datafusion::physical_plan::metrics::Count,
    widened: datafusion::physical_plan::metrics::Count,
}

impl SearchMetrics {
    fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> SearchMetrics {
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
struct SegmentPlan {
    id: u64,
    state: &'static str,
    first_chunk: usize,
    chunks: usize,
    index: Option<LoadedIndex>,
}

/// How one segment was searched, for EXPLAIN ANALYZE.
#[derive(Debug, Clone)]
struct SegmentReport {
    id: u64,
    state: &'static str,
    strategy: &'static str,
    rows: usize,
    /// Rows that pass the deletes and the filter.
    passing: usize,
    /// Rows scored exactly (index hits are re-scored).
    scored: usize,
    micros: u128,
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
struct Candidate {
    score: f32,
    chunk: usize,
    row: usize,
}

impl Candidate {
    fn key(&self) -> (f32, usize, usize) {
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

/// Which rows of `chunk` pass the deletes and the filter (`None`: all).
fn chunk_mask(spec: &AnnSearchSpec, chunk: &Chunk<'_>) -> Result<Option<BooleanArray>> {
    let batch = &chunk.batch;
    let n = batch.num_rows();
    let mut mask: Option<BooleanArray> = chunk.live.clone();
    if let Some(filter) = &spec.filter {
        let value = filter.evaluate(batch)?.into_array(n)?;
        let value = value.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Plan("argument of WHERE must be type boolean".into())
        })?;
        // NULL filter results count as false.
        let value = match value.nulls() {
            Some(nulls) => BooleanArray::new(value.values() & nulls.inner(), None),
            None => value.clone(),
        };
        mask = Some(match mask {
            Some(m) => and(&m, &value)?,
            None => value,
        });
    }
    Ok(mask)
}

/// One chunk's searched column, ready to score against the query.
enum ChunkColumn<'a> {
    Float {
        values: &'a [f32],
        base: usize,
        dim: usize,
    },
    Bits(&'a arrow::array::FixedSizeBinaryArray),
}

/// The query with what scoring needs precomputed.
struct Scorer<'a> {
    metric: Metric,
    query: &'a Query,
    /// |query| for cosine.
    norm: f32,
}

impl<'a> Scorer<'a> {
    fn new(spec: &'a AnnSearchSpec) -> Scorer<'a> {
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
    fn score(&self, column: &ChunkColumn, row: usize) -> f32 {
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
    fn distance(&self, column: &ChunkColumn, row: usize) -> f64 {
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

fn not_searchable(spec: &AnnSearchSpec, what: &str) -> DataFusionError {
    DataFusionError::External(Box::new(StorageError::InvalidBatch(format!(
        "{} is not {what}",
        spec.vector_name
    ))))
}

/// The searched column of `chunk` and its null rows, checked against the
/// query's dimension.
fn column_of<'a>(
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
                .get(crate::vector::udf::BIT_METADATA_KEY)
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
struct TopK {
    k: usize,
    heap: BinaryHeap<Candidate>,
    null_rows: Vec<(usize, usize)>,
}

impl TopK {
    fn offer(&mut self, cand: Candidate) {
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
fn exact(
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
        let mask = &masks[ci];
        for row in 0..chunks[ci].batch.num_rows() {
            if let Some(m) = mask
                && !m.value(row)
            {
                continue;
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

/// What every segment's search shares.
#[derive(Clone, Copy)]
struct SearchCtx<'a> {
    spec: &'a AnnSearchSpec,
    chunks: &'a [Chunk<'a>],
    masks: &'a [Option<BooleanArray>],
    knobs: SearchKnobs,
    metrics: &'a SearchMetrics,
}

/// Search one sealed segment through its index: the rows that pass go to
/// faiss as an ID selector; the search widens (ef, nprobe ×2) until it
/// returns every row it should, and falls back to exact search if it
/// cannot. Returns `None` when the segment is better searched exactly.
fn by_index(
    ctx: &SearchCtx,
    seg: &SegmentPlan,
    index: &LoadedIndex,
    top: &mut TopK,
) -> Result<std::result::Result<usize, &'static str>> {
    let SearchCtx {
        spec,
        chunks,
        masks,
        knobs,
        metrics,
    } = *ctx;
    let range = seg.first_chunk..seg.first_chunk + seg.chunks;
    let total: usize = range.clone().map(|c| chunks[c].batch.num_rows()).sum();
    if total != index.index.len() {
        return Ok(Err("exact: the index covers other rows"));
    }
    // Nothing deleted, filtered out or NULL: search the index as it is.
    let untouched = range.clone().all(|ci| {
        masks[ci].is_none()
            && chunks[ci]
                .batch
                .column(spec.vector_column)
                .logical_null_count()
                == 0
    });
    // Otherwise: the passing rows with a vector, as a bitmap over the segment.
    let mut bitmap = Vec::new();
    let mut passing = total;
    let mut offset = 0usize;
    if !untouched {
        bitmap = vec![0u8; total.div_ceil(8)];
        passing = 0;
    }
    for ci in range.clone().filter(|_| !untouched) {
        let n = chunks[ci].batch.num_rows();
        let (_, nulls) = column_of(spec, &chunks[ci])?;
        for row in 0..n {
            let pass = masks[ci].as_ref().is_none_or(|m| m.value(row))
                && nulls.as_ref().is_none_or(|nb| nb.is_valid(row));
            if pass {
                let at = offset + row;
                bitmap[at / 8] |= 1 << (at % 8);
                passing += 1;
            } else if masks[ci].as_ref().is_none_or(|m| m.value(row)) && top.null_rows.len() < top.k
            {
                top.null_rows.push((ci, row));
            }
        }
        offset += n;
    }
    if passing == 0 {
        return Ok(Ok(0));
    }
    if passing < EXACT_BELOW_ROWS || passing * EXACT_BELOW_FRACTION < total {
        return Ok(Err("exact: few rows pass the filter"));
    }
    let selector = (passing < total).then_some(&bitmap[..]);
    let want = top.k.min(passing);
    let passes = |row: u64| selector.is_none() || bitmap[row as usize / 8] & (1 << (row % 8)) != 0;
    let is_hnsw = matches!(index.index.spec().method, Method::Hnsw { .. });
    if let Query::Bits { .. } = spec.query {
        if spec.range.is_some() {
            return Ok(Err("exact: range search over bit strings"));
        }
        if spec.metric == Metric::Jaccard && index.index.spec().method == Method::BinFlat {
            return Ok(Err("exact: bin_flat scans every row for jaccard"));
        }
    }
    let Query::Float(query) = &spec.query else {
        let filter: Option<&dyn Fn(u64) -> bool> =
            selector.map(|_| &passes as &dyn Fn(u64) -> bool);
        return by_bit_index(ctx, seg, index, top, filter, passing, total);
    };
    if let Some(range) = spec.range {
        let hits = if is_hnsw {
            // faiss's HNSW range search keeps to its ef nearest candidates:
            // fetch the nearest instead, more until k pass or the farthest
            // fetched lies beyond the radius.
            let mut fetch = first_fetch(top.k, passing, total);
            let mut found = None;
            for _ in 0..12 {
                fetch = fetch.min(total);
                let raw = nearest(index, query, fetch, knobs)?;
                let beyond = range.upper.is_some_and(|(u, _)| {
                    raw.last()
                        .is_some_and(|(_, d)| !range.roughly_contains(*d) && *d as f64 > u)
                });
                let exhausted = raw.len() < fetch || fetch >= total;
                let hits: Vec<(u64, f32)> = raw
                    .into_iter()
                    .filter(|(r, d)| passes(*r) && range.roughly_contains(*d))
                    .collect();
                let inside = hits
                    .iter()
                    .filter(|(_, d)| range.contains(*d as f64))
                    .count();
                if inside >= want || beyond || exhausted {
                    found = Some(hits);
                    break;
                }
                if fetch >= MAX_FETCH {
                    break;
                }
                metrics.widened.add(1);
                fetch *= 2;
            }
            match found {
                Some(hits) => hits,
                None => return Ok(Err("exact: too few candidates within range")),
            }
        } else if let Some((radius, _)) = range.upper {
            // IVF and flat: faiss finds every row within the radius in the
            // lists it probes; rows failing the filter are dropped here.
            index
                .index
                .range_search(query, radius as f32, knobs)
                .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?
                .into_iter()
                .filter(|(r, _)| passes(*r))
                .collect()
        } else {
            // Only a lower bound: the index offers nothing better.
            return Ok(Err("exact: a lower bound only"));
        };
        metrics.index_candidates.add(hits.len());
        offer_hits(ctx, seg, index, &hits, top)?;
        return Ok(Ok(hits.len()));
    }
    let mut knobs = knobs;
    let mut hits = Vec::new();
    if !index.index.filters_in_search() && selector.is_some() {
        // faiss's HNSW walks poorly around rows its selector rejects (its
        // recall drops to about the passing fraction), so HNSW searches
        // unfiltered for enough candidates and filters them here, fetching
        // more until k pass.
        let mut fetch = first_fetch(top.k, passing, total);
        for attempt in 0..12 {
            fetch = fetch.min(total);
            let raw = nearest(index, query, fetch, knobs)?;
            hits = raw.into_iter().filter(|(r, _)| passes(*r)).collect();
            if hits.len() >= want || fetch >= total || fetch >= MAX_FETCH {
                break;
            }
            if attempt == 0 {
                metrics.widened.add(1);
            }
            fetch *= 2;
        }
        hits.truncate(top.k);
    } else {
        for attempt in 0..12 {
            hits = index
                .index
                .search(query, top.k, knobs, selector)
                .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?;
            if hits.len() >= want {
                break;
            }
            if attempt == 0 {
                metrics.widened.add(1);
            }
            if knobs.ef >= total && knobs.nprobe >= 65536 {
                break;
            }
            knobs.ef = (knobs.ef * 2).min(total.max(1));
            knobs.nprobe = (knobs.nprobe * 2).min(65536);
        }
    }
    if hits.len() < want {
        return Ok(Err("exact: the index found too few rows"));
    }
    metrics.index_candidates.add(hits.len());
    offer_hits(ctx, seg, index, &hits, top)?;
    Ok(Ok(want))
}

/// Search one sealed segment through a bit-string index. faiss's binary
/// indexes take no ID selector: with a filter, unfiltered candidates are
/// fetched and filtered here, more (and more lists probed) until k pass.
fn by_bit_index(
    ctx: &SearchCtx,
    seg: &SegmentPlan,
    index: &LoadedIndex,
    top: &mut TopK,
    passes: Option<&dyn Fn(u64) -> bool>,
    passing: usize,
    total: usize,
) -> Result<std::result::Result<usize, &'static str>> {
    let Query::Bits { bytes, .. } = &ctx.spec.query else {
        return Ok(Err("exact"));
    };
    let want = top.k.min(passing);
    let mut knobs = ctx.knobs;
    let mut fetch = match passes {
        Some(_) => first_fetch(top.k, passing, total),
        None => top.k,
    };
    let mut hits: Vec<(u64, f32)> = Vec::new();
    for attempt in 0..12 {
        fetch = fetch.min(total);
        hits = index
            .index
            .search_bits(bytes, fetch, knobs)
            .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))?;
        if let Some(passes) = passes {
            hits.retain(|(r, _)| passes(*r));
        }
        if hits.len() >= want || (fetch >= total && knobs.nprobe >= 65536) {
            break;
        }
        if attempt == 0 {
            ctx.metrics.widened.add(1);
        }
        fetch = (fetch * 2).min(MAX_FETCH.max(top.k));
        knobs.nprobe = (knobs.nprobe * 2).min(65536);
    }
    if hits.len() < want {
        return Ok(Err("exact: the index found too few rows"));
    }
    ctx.metrics.index_candidates.add(hits.len());
    offer_hits(ctx, seg, index, &hits, top)?;
    Ok(Ok(hits.len()))
}

/// How many unfiltered candidates an HNSW search fetches first so that
/// about `k` of them pass when `passing` of `total` rows do.
fn first_fetch(k: usize, passing: usize, total: usize) -> usize {
    let fraction = passing as f64 / total as f64;
    ((k as f64 / fraction) * 2.0).ceil() as usize + 10
}

/// The `fetch` nearest rows of the index, unfiltered, with an ef of at
/// least `fetch`.
fn nearest(
    index: &LoadedIndex,
    query: &[f32],
    fetch: usize,
    knobs: SearchKnobs,
) -> Result<Vec<(u64, f32)>> {
    let knobs = SearchKnobs {
        ef: knobs.ef.max(fetch),
        nprobe: knobs.nprobe,
    };
    index
        .index
        .search(query, fetch, knobs, None)
        .map_err(|e| DataFusionError::External(Box::new(StorageError::Index(e))))
}

/// Offer index hits (segment offsets, with the index's distances) to
/// `top`. Hits of an index whose distances are exact (flat, IVF-flat, HNSW
/// over float vectors) for L2 or inner product keep those distances as
/// their score; others are scored again from the rows (quantised codes give
/// approximate distances, cosine scores a zero vector as NaN where the
/// index sees a normalised one, and a range is checked on exact distances).
fn offer_hits(
    ctx: &SearchCtx,
    seg: &SegmentPlan,
    index: &LoadedIndex,
    hits: &[(u64, f32)],
    top: &mut TopK,
) -> Result<()> {
    let trusted = ctx.spec.range.is_none()
        && index.index.spec().method.exact_distances()
        && index.index.spec().metric == ctx.spec.metric;
    let score_of: Option<fn(f32) -> f32> = match ctx.spec.metric {
        Metric::L2 if trusted => Some(|d| d * d),
        Metric::NegativeInnerProduct if trusted => Some(|d| d),
        _ => None,
    };
    let range = seg.first_chunk..seg.first_chunk + seg.chunks;
    let starts: Vec<usize> = range
        .clone()
        .scan(0usize, |acc, c| {
            let s = *acc;
            *acc += ctx.chunks[c].batch.num_rows();
            Some(s)
        })
        .collect();
    let scorer = Scorer::new(ctx.spec);
    for &(row, distance) in hits {
        let row = row as usize;
        let local = starts.partition_point(|s| *s <= row) - 1;
        let ci = seg.first_chunk + local;
        let r = row - starts[local];
        if let Some(score_of) = score_of {
            top.offer(Candidate {
                score: score_of(distance),
                chunk: ci,
                row: r,
            });
            continue;
        }
        let (column, _) = column_of(ctx.spec, &ctx.chunks[ci])?;
        let score = scorer.score(&column, r);
        if ctx
            .spec
            .range
            .is_some_and(|range| !range.contains(scorer.distance(&column, r)))
        {
            continue;
        }
        top.offer(Candidate {
            score,
            chunk: ci,
            row: r,
        });
    }
    Ok(())
}

/// Run the search over every segment and merge the per-segment top-k.
fn search(
    spec: &AnnSearchSpec,
    chunks: &[Chunk<'_>],
    segments: &[SegmentPlan],
    knobs: SearchKnobs,
    metrics: &SearchMetrics,
    schema: SchemaRef,
) -> Result<(RecordBatch, Vec<SegmentReport>)> {
    let k = spec.k;
    let mut reports = Vec::with_capacity(segments.len());
    let masks = chunks
        .iter()
        .map(|c| chunk_mask(spec, c))
        .collect::<Result<Vec<_>>>()?;
    let mut top = TopK {
        k,
        heap: BinaryHeap::with_capacity(k + 1),
        null_rows: Vec::new(),
    };
    for seg in segments {
        let started = std::time::Instant::now();
        let range = seg.first_chunk..seg.first_chunk + seg.chunks;
        let searched = match &seg.index {
            Some(index) if k > 0 => {
                let ctx = SearchCtx {
                    spec,
                    chunks,
                    masks: &masks,
                    knobs,
                    metrics,
                };
                by_index(&ctx, seg, index, &mut top)?
            }
            Some(_) => Err("exact"),
            None if spec.index.is_none() => Err("exact"),
            None if seg.state == "growing" => Err("exact"),
            None => Err("exact: index not built yet"),
        };
        let (strategy, scored) = match searched {
            Ok(n) => {
                metrics.index_segments.add(1);
                let strategy = if spec.range.is_some() {
                    "index range search"
                } else {
                    "index"
                };
                (strategy, n)
            }
            Err(strategy) => {
                metrics.exact_segments.add(1);
                // Rows with NULL vectors may have been noted already.
                top.null_rows.retain(|(c, _)| !range.contains(c));
                let n = exact(spec, chunks, &masks, range.clone(), &mut top)?;
                (strategy, n)
            }
        };
        metrics.scored.add(scored);
        let rows: usize = range.clone().map(|c| chunks[c].batch.num_rows()).sum();
        let passing = range
            .map(|c| {
                masks[c]
                    .as_ref()
                    .map_or(chunks[c].batch.num_rows(), |m| m.true_count())
            })
            .sum();
        reports.push(SegmentReport {
            id: seg.id,
            state: seg.state,
            strategy,
            rows,
            passing,
            scored,
            micros: started.elapsed().as_micros(),
        });
    }
    let TopK {
        heap,
        mut null_rows,
        ..
    } = top;
    if spec.range.is_some() {
        // A NULL distance is in no range.
        null_rows.clear();
    }
    null_rows.sort_unstable();
    let mut picked: Vec<(usize, usize)> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|c| (c.chunk, c.row))
        .collect();
    for r in null_rows {
        if picked.len() >= k {
            break;
        }
        picked.push(r);
    }
    if chunks.is_empty() {
        return Ok((RecordBatch::new_empty(schema), reports));
    }
    // Interleave from the chunks that hold picked rows only.
    let mut used: Vec<usize> = picked.iter().map(|(c, _)| *c).collect();
    used.sort_unstable();
    used.dedup();
    let picked: Vec<(usize, usize)> = picked
        .into_iter()
        .map(|(c, r)| (used.partition_point(|u| *u < c), r))
        .collect();
    let columns = spec
        .projection
        .iter()
        .map(|&col| {
            let arrays: Vec<&dyn Array> = used
                .iter()
                .map(|&c| chunks[c].batch.column(col).as_ref())
                .collect();
            if arrays.is_empty() {
                return Ok(arrow::array::new_empty_array(
                    chunks[0].batch.schema_ref().field(col).data_type(),
                ));
            }
            interleave(&arrays, &picked).map_err(DataFusionError::from)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let batch = if chunks.is_empty() {
        RecordBatch::new_empty(schema)
    } else {
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(picked.len())),
        )?
    };
    Ok((batch, reports))
}
