//! `DmlExec`: runs a data-changing action when executed (not when planned,
//! so `EXPLAIN DELETE` changes nothing) and reports the row count.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};

/// The action of a DML statement, given its task context (where a
/// RETURNING clause's [`Returned`] and the session's transaction are).
pub type Action =
    Arc<dyn Fn(Arc<TaskContext>) -> futures::future::BoxFuture<'static, Result<u64>> + Send + Sync>;

/// The rows a DML statement wrote or deleted, for its RETURNING clause: a
/// session config extension set for the statement, filled by the
/// collection's sink or DML action.
#[derive(Debug, Default)]
pub struct Returned {
    batches: parking_lot::Mutex<Vec<RecordBatch>>,
}

impl Returned {
    pub fn push(&self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.lock().push(batch);
        }
    }

    pub fn take(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.batches.lock())
    }

    /// The extension of `context`, if its statement returns rows.
    pub fn of(context: &TaskContext) -> Option<Arc<Returned>> {
        context.session_config().get_extension::<Returned>()
    }
}

pub struct DmlExec {
    name: String,
    action: Action,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for DmlExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DmlExec({})", self.name)
    }
}

impl DmlExec {
    /// `name` is shown by EXPLAIN; `action` returns the number of rows changed.
    pub fn new(name: impl Into<String>, action: Action) -> DmlExec {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        DmlExec {
            name: name.into(),
            action,
            schema,
            properties,
        }
    }
}

impl DisplayAs for DmlExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DmlExec: {}", self.name)
    }
}

impl ExecutionPlan for DmlExec {
    fn name(&self) -> &str {
        "DmlExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
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
    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let action = self.action.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let stream = futures::stream::once(async move {
            let n = action(context).await?;
            Ok(RecordBatch::try_new(
                schema,
                vec![Arc::new(UInt64Array::from(vec![n]))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}
