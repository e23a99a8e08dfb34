//! `CollectionTable`: a collection as a DataFusion table. Scans read one
//! consistent snapshot; INSERT, DELETE and TRUNCATE go to the storage layer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::{and, concat_batches};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DataFusionError, Result};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::StreamExt;

use super::dml::DmlExec;
use quiver_catalog::CollectionDef;
use quiver_storage::segment::Segment;
use quiver_storage::{
    CollectionData, FlushedSegment, Mutation, ObjectIo, SCAN_URL, SegmentData, StorageError,
};

/// A collection seen by DataFusion.
pub struct CollectionTable {
    def: Arc<CollectionDef>,
    data: Arc<CollectionData>,
    schema: SchemaRef,
    defaults: HashMap<String, Expr>,
}

impl fmt::Debug for CollectionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CollectionTable({}.{})",
            self.def.database, self.def.name
        )
    }
}

fn storage_err(e: StorageError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl CollectionTable {
    pub fn new(
        def: Arc<CollectionDef>,
        data: Arc<CollectionData>,
        defaults: HashMap<String, Expr>,
    ) -> CollectionTable {
        CollectionTable {
            schema: def.arrow_schema(),
            def,
            data,
            defaults,
        }
    }

    pub fn def(&self) -> &Arc<CollectionDef> {
        &self.def
    }

    pub fn data(&self) -> &Arc<CollectionData> {
        &self.data
    }
}

impl CollectionTable {
    fn physical_filters(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<Vec<Arc<dyn PhysicalExpr>>>> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        Ok(Arc::new(
            filters
                .into_iter()
                .map(|f| state.create_physical_expr(unqualify(f)?, &df_schema))
                .collect::<Result<Vec<_>>>()?,
        ))
    }
}

/// Rows for which every predicate is true (NULL counts as false).
fn filter_mask(
    predicates: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> quiver_storage::Result<BooleanArray> {
    let mut mask = BooleanArray::from(vec![true; batch.num_rows()]);
    for p in predicates {
        let value = p
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| StorageError::Expression(Box::new(e)))?;
        let Some(b) = value.as_any().downcast_ref::<BooleanArray>() else {
            return Err(StorageError::Expression(Box::new(DataFusionError::Plan(
                "argument of WHERE must be type boolean".into(),
            ))));
        };
        mask = and(&mask, b)?;
    }
    Ok(mask)
}

/// Remove table qualifiers so an expression can be evaluated on our batches.
pub fn unqualify(expr: Expr) -> Result<Expr> {
    Ok(expr
        .transform(|e| match e {
            Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
                Column::new_unqualified(c.name),
            ))),
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

#[async_trait]
impl TableProvider for CollectionTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.defaults.get(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The physical plan's filters reach the Parquet scan of flushed
        // segments (DataFusion's filter pushdown), which prunes row groups
        // and pages with them and evaluates them while decoding.
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.data.readable().map_err(storage_err)?;
        let tx = crate::txn::current(state.config());
        let snapshot = crate::txn::snapshot(&self.data, tx.as_deref());
        let parts = state.config().target_partitions().max(1);
        let mut memory: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
        let mut files: Vec<Vec<PartitionedFile>> = vec![Vec::new(); parts];
        let fields: Vec<usize> = (0..self.schema.fields().len()).collect();
        let (mut m, mut f) = (0, 0);
        for seg in &snapshot.segments {
            match &seg.data {
                SegmentData::Flushed(flushed) => {
                    files[f % parts].push(segment_file(self.data.io(), flushed, seg)?);
                    f += 1;
                }
                SegmentData::Memory(_) => {
                    for chunk in seg.chunks().await.map_err(storage_err)? {
                        let batch = chunk.live_batch().map_err(storage_err)?.project(&fields)?;
                        memory[m % parts].push(RecordBatch::try_new(
                            self.schema.clone(),
                            batch.columns().to_vec(),
                        )?);
                        m += 1;
                    }
                }
            }
        }
        memory.retain(|p| !p.is_empty());
        files.retain(|g| !g.is_empty());
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            inputs.push(self.parquet_scan(files, projection, limit)?);
        }
        if !memory.is_empty() || inputs.is_empty() {
            if memory.is_empty() {
                memory.push(Vec::new());
            }
            let source =
                MemorySourceConfig::try_new(&memory, self.schema.clone(), projection.cloned())?
                    .with_limit(limit);
            inputs.push(DataSourceExec::from_data_source(source));
        }
        if inputs.len() == 1 {
            return Ok(inputs.remove(0));
        }
        UnionExec::try_new(inputs)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} is not supported yet"
            )));
        }
        let sink = CollectionSink {
            data: self.data.clone(),
            schema: self.schema.clone(),
            name: self.def.name.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicates = self.physical_filters(state, filters)?;
        let data = self.data.clone();
        let name = format!("delete from {}", self.def.name);
        Ok(Arc::new(DmlExec::new(
            name,
            Arc::new(move |context| {
                let data = data.clone();
                let predicates = predicates.clone();
                Box::pin(async move {
                    let filter =
                        Box::new(move |batch: &RecordBatch| filter_mask(&predicates, batch));
                    let n = apply(&data, &context, Mutation::Delete { filter }).await?;
                    Ok(n as u64)
                })
            }),
        )))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicates = self.physical_filters(state, filters)?;
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let mut exprs: Vec<Option<Arc<dyn PhysicalExpr>>> = vec![None; self.schema.fields().len()];
        for (name, expr) in assignments {
            let Some(i) = self.def.field_index(&name) else {
                return Err(DataFusionError::Plan(format!(
                    "column \"{name}\" of collection \"{}\" does not exist",
                    self.def.name
                )));
            };
            let expr = unqualify(expr)?;
            if matches!(&expr, Expr::Column(c) if c.name == name) {
                continue;
            }
            let target = self.schema.field(i).data_type().clone();
            let expr = state.create_physical_expr(expr, &df_schema)?;
            let expr = datafusion::physical_expr::expressions::CastExpr::new(expr, target, None);
            exprs[i] = Some(Arc::new(expr));
        }
        let data = self.data.clone();
        // The storage schema: NOT NULL is checked by storage, with its SQLSTATE.
        let schema = self.data.schema();
        let exprs = Arc::new(exprs);
        Ok(Arc::new(DmlExec::new(
            format!("update {}", self.def.name),
            Arc::new(move |context| {
                let data = data.clone();
                let predicates = predicates.clone();
                let exprs = exprs.clone();
                let schema = schema.clone();
                Box::pin(async move {
                    let change = move |batch: &RecordBatch| -> quiver_storage::Result<RecordBatch> {
                        let mut columns = batch.columns().to_vec();
                        for (i, e) in exprs.iter().enumerate() {
                            if let Some(e) = e {
                                columns[i] = e
                                    .evaluate(batch)
                                    .and_then(|v| v.into_array(batch.num_rows()))
                                    .map_err(|e| StorageError::Expression(Box::new(e)))?;
                            }
                        }
                        Ok(RecordBatch::try_new(schema.clone(), columns)?)
                    };
                    let filter =
                        Box::new(move |batch: &RecordBatch| filter_mask(&predicates, batch));
                    let update = Mutation::Update {
                        filter,
                        change: Box::new(change),
                    };
                    let n = apply(&data, &context, update).await?;
                    Ok(n as u64)
                })
            }),
        )))
    }

    async fn truncate(&self, _state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let data = self.data.clone();
        Ok(Arc::new(DmlExec::new(
            format!("truncate {}", self.def.name),
            Arc::new(move |context| {
                let data = data.clone();
                Box::pin(
                    async move { Ok(apply(&data, &context, Mutation::Truncate).await? as u64) },
                )
            }),
        )))
    }
}

impl CollectionTable {
    /// DataFusion's Parquet scan of flushed segments: only the projected
    /// columns are read; filters pushed down by the physical optimizer
    /// prune row groups and pages by their statistics (and the primary
    /// key's bloom filter) and are evaluated while decoding; deleted rows
    /// are skipped by a row selection built from each segment's delete
    /// bitmap.
    fn parquet_scan(
        &self,
        groups: Vec<Vec<PartitionedFile>>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let source = ParquetSource::new(self.schema.clone()).with_pushdown_filters(true);
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(SCAN_URL)?, Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            // Vectors stored as binary values are read as lists.
            .with_expr_adapter(Some(Arc::new(
                crate::stored_vectors::StoredVectorAdapterFactory,
            )))
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// A flushed segment's data file as a scan input, with the row selection
/// that leaves its deleted rows out.
fn segment_file(
    io: &ObjectIo,
    flushed: &Arc<FlushedSegment>,
    seg: &Segment,
) -> Result<PartitionedFile> {
    // The store's own path: a string would be percent-encoded again.
    let mut file = PartitionedFile::new_from_meta(object_store::ObjectMeta {
        location: io.path(&flushed.meta.data_file),
        last_modified: Default::default(),
        size: flushed.meta.bytes,
        e_tag: None,
        version: None,
    })
    // Holds the segment while the plan lives: compaction removes the
    // files of a replaced segment only once no snapshot refers to it.
    .with_extension(flushed.clone());
    if let Some(mask) = seg.deletes.live_mask(0, seg.rows()) {
        file = file.with_extension(ParquetRowSelection::new(RowSelection::from_filters(&[
            mask,
        ])));
    }
    Ok(file)
}

/// Apply `mutation` in the session's transaction, if any; keep the rows it
/// wrote or deleted for a RETURNING clause, if the statement has one.
async fn apply(
    data: &Arc<CollectionData>,
    context: &TaskContext,
    mutation: Mutation,
) -> Result<usize> {
    let returned = crate::dml::Returned::of(context);
    let tx = crate::txn::current(context.session_config());
    let stop = context
        .session_config()
        .get_extension::<quiver_common::interrupt::Interrupt>();
    let (n, rows) = crate::txn::mutate(
        data,
        tx.as_deref(),
        mutation,
        returned.is_some(),
        stop.as_deref(),
    )
    .await
    .map_err(storage_err)?;
    if let (Some(r), Some(rows)) = (returned, rows) {
        r.push(rows);
    }
    Ok(n)
}

/// Receives the rows of an INSERT and appends them in one storage call, so a
/// statement is applied entirely or not at all.
struct CollectionSink {
    data: Arc<CollectionData>,
    schema: SchemaRef,
    name: String,
}

impl fmt::Debug for CollectionSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CollectionSink({})", self.name)
    }
}

impl DisplayAs for CollectionSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CollectionSink: {}", self.name)
    }
}

#[async_trait]
impl DataSink for CollectionSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let storage_schema = self.data.schema();
        let interrupt = context
            .session_config()
            .get_extension::<quiver_common::interrupt::Interrupt>();
        // A cancel or a timeout stops the statement while its rows are
        // gathered; once they are handed to storage it completes (one
        // atomic write).
        let check = || match &interrupt {
            Some(i) => i
                .check()
                .map_err(|c| datafusion::error::DataFusionError::External(Box::new(c))),
            None => Ok(()),
        };
        let mut batches = Vec::new();
        while let Some(batch) = data.next().await {
            check()?;
            let batch = batch?;
            batches.push(RecordBatch::try_new(
                storage_schema.clone(),
                batch.columns().to_vec(),
            )?);
        }
        let batch = concat_batches(&storage_schema, &batches)?;
        check()?;
        let rows = apply(&self.data, context, Mutation::insert(batch)).await?;
        Ok(rows as u64)
    }
}
