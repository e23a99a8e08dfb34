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
use arrow::buffer::BooleanBuffer;
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Float32Type, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
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

use quiver_catalog::IndexDef;
use quiver_storage::segment::{LoadedIndex, SegmentData};
use quiver_storage::{CollectionData, StorageError};
use quiver_vector::index::{Filtered, Method, SearchKnobs};
use quiver_vector::{Metric, Query, VectorError, bits, distance};

mod scoring;
mod strategy;

use scoring::*;
use strategy::*;

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
/// The same for a segment an HNSW index searches with a filtered walk.
const WALK_BELOW_ROWS: usize = 512;
const WALK_BELOW_FRACTION: usize = 50;

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
                if i.spec.method.is_hnsw() {
                    "by a filtered graph walk"
                } else if i.spec.method.is_binary() {
                    "to fetched candidates"
                } else {
                    "by ID selector"
                },
                if i.spec.method.is_hnsw() && s.range.is_none() {
                    WALK_BELOW_ROWS
                } else {
                    EXACT_BELOW_ROWS
                },
                if i.spec.method.is_hnsw() && s.range.is_none() {
                    WALK_BELOW_FRACTION
                } else {
                    EXACT_BELOW_FRACTION
                }
            )
            .and_then(|_| {
                if i.spec.method.exact_distances() {
                    return Ok(());
                }
                write!(
                    f,
                    ", candidates ranked by exact distance (refine_k = {} by default)",
                    i.spec.method.default_refine()
                )
            })?,
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
        let tx = crate::txn::current(context.session_config());
        let stream = futures::stream::once(async move {
            let (batch, segment_reports) =
                run(&spec, knobs, &metrics, Some(&time), schema, tx.as_deref()).await?;
            *reports.lock() = segment_reports;
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

impl AnnSearchExec {
    /// Run this search for `query` outside a DataFusion stream (a cached
    /// prepared search, never inside a transaction): the rows in this
    /// node's schema.
    pub async fn run_with(&self, query: Query, knobs: SearchKnobs) -> Result<RecordBatch> {
        let mut spec = self.spec.clone();
        spec.query = query;
        let set = ExecutionPlanMetricsSet::new();
        let metrics = SearchMetrics::new(&set, 0);
        Ok(run(&spec, knobs, &metrics, None, self.schema.clone(), None)
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
    tx: Option<&quiver_storage::Transaction>,
) -> Result<(RecordBatch, Vec<SegmentReport>)> {
    spec.data
        .readable()
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    // The query must fit the column whether or not there are rows to
    // compare it with (an empty collection once answered with no rows).
    if let (Query::Float(q), DataType::FixedSizeList(_, dim)) = (
        &spec.query,
        spec.data.schema().field(spec.vector_column).data_type(),
    ) && q.len() != *dim as usize
    {
        return Err(datafusion::error::DataFusionError::External(Box::new(
            VectorError::DimensionMismatch {
                expected: *dim as usize,
                actual: q.len(),
            },
        )));
    }
    let snapshot = crate::txn::snapshot(&spec.data, tx);
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
            flushed: match &seg.data {
                SegmentData::Flushed(f) => Some(f.clone()),
                SegmentData::Memory(_) => None,
            },
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
