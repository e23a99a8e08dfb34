//! Scans of segment files whose vectors are stored as fixed-size binary
//! values (`quiver_storage::stored`): DataFusion adapts each file's
//! expressions (projection and pushed-down filters) to the file's schema,
//! and would cast such a column to the table's list type, which Arrow cannot.
//! [`StoredVectorAdapterFactory`] lets DataFusion's own adapter do the rest
//! and reads each stored vector column through [`StoredVectors`], which turns
//! the binary values back into the list without copying the floats.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use quiver_storage::stored::{binary_to_vectors, is_stored_vector};

/// Adapts a scan's expressions to a segment file whose vectors are stored
/// as binary values; files without any get DataFusion's default adapter.
#[derive(Debug)]
pub struct StoredVectorAdapterFactory;

impl PhysicalExprAdapterFactory for StoredVectorAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let stored: HashSet<String> = physical_file_schema
            .fields()
            .iter()
            .filter(|f| is_stored_vector(f))
            .map(|f| f.name().clone())
            .collect();
        if stored.is_empty() {
            return DefaultPhysicalExprAdapterFactory
                .create(logical_file_schema, physical_file_schema);
        }
        // The file's schema as the default adapter is to see it: the stored
        // columns with the table's type, so that it leaves them uncast.
        let fields: Vec<Field> = physical_file_schema
            .fields()
            .iter()
            .map(|f| {
                if !stored.contains(f.name()) {
                    return f.as_ref().clone();
                }
                let width = match f.data_type() {
                    DataType::FixedSizeBinary(w) => *w as usize,
                    _ => 0,
                };
                match logical_file_schema.field_with_name(f.name()) {
                    Ok(logical) => logical.clone(),
                    Err(_) => Field::new(
                        f.name(),
                        quiver_vector::column::vector_data_type(width / 4),
                        f.is_nullable(),
                    ),
                }
            })
            .collect();
        let as_lists = Arc::new(Schema::new_with_metadata(
            fields,
            physical_file_schema.metadata().clone(),
        ));
        let inner =
            DefaultPhysicalExprAdapterFactory.create(logical_file_schema, as_lists.clone())?;
        Ok(Arc::new(StoredVectorAdapter {
            inner,
            stored,
            as_lists,
        }))
    }
}

#[derive(Debug)]
struct StoredVectorAdapter {
    inner: Arc<dyn PhysicalExprAdapter>,
    stored: HashSet<String>,
    as_lists: SchemaRef,
}

impl PhysicalExprAdapter for StoredVectorAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = self.inner.rewrite(expr)?;
        expr.transform_up(|e| {
            let Some(column) = e.downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            if !self.stored.contains(column.name()) {
                return Ok(Transformed::no(e));
            }
            let field = self.as_lists.field(column.index()).clone();
            Ok(Transformed::yes(Arc::new(StoredVectors {
                column: e.clone(),
                field: Arc::new(field),
            }) as Arc<dyn PhysicalExpr>))
        })
        .data()
    }
}

/// A stored vector column read as the list of floats it holds.
#[derive(Debug, Eq)]
pub struct StoredVectors {
    column: Arc<dyn PhysicalExpr>,
    /// The table's field: its name, list type and nullability.
    field: Arc<Field>,
}

impl PartialEq for StoredVectors {
    fn eq(&self, other: &Self) -> bool {
        self.column.eq(&other.column) && self.field == other.field
    }
}

impl Hash for StoredVectors {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        self.field.hash(state);
    }
}

impl fmt::Display for StoredVectors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "stored_vectors({})", self.column)
    }
}

impl PhysicalExpr for StoredVectors {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(self.field.data_type().clone())
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(self.field.is_nullable())
    }

    fn return_field(&self, _input_schema: &Schema) -> Result<arrow::datatypes::FieldRef> {
        Ok(self.field.clone())
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        let Some(binary) = array.as_fixed_size_binary_opt() else {
            // Already a list (a file written before vectors were stored
            // as binary values never gets here, but costs nothing).
            return Ok(ColumnarValue::Array(array));
        };
        let list = binary_to_vectors(binary)?;
        if list.data_type() != self.field.data_type() {
            return Err(DataFusionError::Internal(format!(
                "stored vectors of {} read as {}",
                list.data_type(),
                self.field.data_type()
            )));
        }
        Ok(ColumnarValue::Array(Arc::new(list) as Arc<dyn Array>))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(StoredVectors {
            column: children[0].clone(),
            field: self.field.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.column.fmt_sql(f)
    }
}
