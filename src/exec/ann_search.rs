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

use crate::storage::{Chunk, CollectionData, StorageError};
use crate::vector::{Metric, distance};

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
    pub query: Vec<f32>,
    pub k: usize,
}

#[derive(Debug)]
pub struct AnnSearchExec {
    spec: AnnSearchSpec,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
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
        }
    }

    pub fn spec(&self) -> &AnnSearchSpec {
        &self.spec
    }
}

impl DisplayAs for AnnSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        write!(
            f,
            "AnnSearchExec: collection={}, column={}, metric={}, k={}, strategy=exact",
            s.collection,
            s.vector_name,
            s.metric.name(),
            s.k
        )?;
        if let Some(filter) = &s.filter {
            write!(f, ", filter={filter}")?;
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
    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let spec = self.spec.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let scanned = MetricBuilder::new(&self.metrics).counter("rows_scored", partition);
        let time = MetricBuilder::new(&self.metrics).elapsed_compute(partition);
        let stream = futures::stream::once(async move {
            let snapshot = spec.data.snapshot();
            let chunks = snapshot
                .chunks()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let _timer = time.timer();
            let (batch, rows) = search(&spec, &chunks, schema)?;
            scanned.add(rows);
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
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

/// Run the search; returns the result batch and the number of rows scored.
fn search(
    spec: &AnnSearchSpec,
    chunks: &[Chunk],
    schema: SchemaRef,
) -> Result<(RecordBatch, usize)> {
    let k = spec.k;
    let query = &spec.query;
    let query_norm = distance::dot(query, query).sqrt();
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
    let mut null_rows: Vec<(usize, usize)> = Vec::new();
    let mut scored = 0usize;
    for (ci, chunk) in chunks.iter().enumerate() {
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
        let column = batch.column(spec.vector_column);
        let list = column.as_fixed_size_list_opt().ok_or_else(|| {
            DataFusionError::External(Box::new(StorageError::InvalidBatch(format!(
                "{} is not a vector column",
                spec.vector_name
            ))))
        })?;
        let dim = list.value_length() as usize;
        if dim != query.len() {
            return Err(DataFusionError::External(Box::new(
                crate::vector::VectorError::DifferentDimensions {
                    left: dim,
                    right: query.len(),
                },
            )));
        }
        let values = list.values().as_primitive::<Float32Type>().values();
        let base = list.offset() * dim;
        let nulls = list.logical_nulls();
        for row in 0..n {
            if let Some(m) = &mask
                && !m.value(row)
            {
                continue;
            }
            if nulls.as_ref().is_some_and(|nb| nb.is_null(row)) {
                if null_rows.len() < k {
                    null_rows.push((ci, row));
                }
                continue;
            }
            let v = &values[base + row * dim..base + (row + 1) * dim];
            let score = distance::score(spec.metric, v, query, query_norm);
            scored += 1;
            let cand = Candidate {
                score,
                chunk: ci,
                row,
            };
            if heap.len() < k {
                heap.push(cand);
            } else if let Some(top) = heap.peek()
                && cand < *top
            {
                heap.pop();
                heap.push(cand);
            }
        }
    }
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
        return Ok((RecordBatch::new_empty(schema), scored));
    }
    let columns = spec
        .projection
        .iter()
        .map(|&col| {
            let arrays: Vec<&dyn Array> = chunks
                .iter()
                .map(|c| c.batch.column(col).as_ref())
                .collect();
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
    Ok((batch, scored))
}
