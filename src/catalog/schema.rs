//! Collection schemas: field names, types, nullability, defaults, primary key.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::CatalogError;
use quiver_vector::column::{bit_data_type, bit_metadata, vector_data_type, vector_metadata};

/// The type of a field, in SQL terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldType {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Json,
    /// `UUID`: stored as its canonical text (see `quiver_common::uuid`).
    Uuid,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Array(Box<FieldType>),
    /// `VECTOR(dim)`: `dim` float32 values.
    Vector {
        dim: usize,
    },
    /// `BIT(bits)`: a bit string (Milvus's binary vector), packed in bytes.
    Bit {
        bits: usize,
    },
}

impl FieldType {
    /// The Arrow type that stores this field.
    pub fn arrow_type(&self) -> DataType {
        match self {
            FieldType::Bool => DataType::Boolean,
            FieldType::Int16 => DataType::Int16,
            FieldType::Int32 => DataType::Int32,
            FieldType::Int64 => DataType::Int64,
            FieldType::Float32 => DataType::Float32,
            FieldType::Float64 => DataType::Float64,
            FieldType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            FieldType::Text | FieldType::Json | FieldType::Uuid => DataType::Utf8,
            FieldType::Bytea => DataType::Binary,
            FieldType::Date => DataType::Date32,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            FieldType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("+00:00")))
            }
            FieldType::Array(inner) => {
                DataType::List(Arc::new(Field::new_list_field(inner.arrow_type(), true)))
            }
            FieldType::Vector { dim } => vector_data_type(*dim),
            FieldType::Bit { bits } => bit_data_type(*bits),
        }
    }

    /// The SQL spelling shown by `DESCRIBE COLLECTION`.
    pub fn sql_name(&self) -> String {
        match self {
            FieldType::Bool => "boolean".into(),
            FieldType::Int16 => "smallint".into(),
            FieldType::Int32 => "integer".into(),
            FieldType::Int64 => "bigint".into(),
            FieldType::Float32 => "real".into(),
            FieldType::Float64 => "double precision".into(),
            FieldType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            FieldType::Text => "text".into(),
            FieldType::Json => "json".into(),
            FieldType::Uuid => "uuid".into(),
            FieldType::Bytea => "bytea".into(),
            FieldType::Date => "date".into(),
            FieldType::Timestamp => "timestamp".into(),
            FieldType::TimestampTz => "timestamptz".into(),
            FieldType::Array(inner) => format!("{}[]", inner.sql_name()),
            FieldType::Vector { dim } => format!("vector({dim})"),
            FieldType::Bit { bits } => format!("bit({bits})"),
        }
    }

    /// Whether a primary key may have this type (Milvus: INT64 or VARCHAR).
    pub fn can_be_primary_key(&self) -> bool {
        matches!(
            self,
            FieldType::Int16
                | FieldType::Int32
                | FieldType::Int64
                | FieldType::Text
                | FieldType::Uuid
        )
    }
}

/// One field of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    pub field_type: FieldType,
    pub nullable: bool,
    /// Default value as SQL expression text, evaluated at insert time.
    pub default: Option<String>,
    /// Values are assigned by the server when not given (BIGSERIAL, identity).
    pub auto_increment: bool,
}

impl FieldDef {
    pub fn new(name: &str, field_type: FieldType) -> FieldDef {
        FieldDef {
            name: name.to_string(),
            field_type,
            nullable: true,
            default: None,
            auto_increment: false,
        }
    }

    /// The Arrow field. Server-assigned fields are nullable in Arrow so that
    /// an INSERT may omit them; the storage layer fills them in.
    pub fn arrow_field(&self) -> Field {
        let nullable = self.nullable || self.auto_increment;
        let field = Field::new(&self.name, self.field_type.arrow_type(), nullable);
        match self.field_type {
            FieldType::Vector { .. } => field.with_metadata(vector_metadata()),
            FieldType::Bit { bits } => field.with_metadata(bit_metadata(bits)),
            FieldType::Uuid => field.with_metadata(quiver_common::uuid::uuid_metadata()),
            FieldType::Json => field.with_metadata(quiver_common::json::json_metadata()),
            _ => field,
        }
    }
}

/// A collection: named, typed fields and an optional primary key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionDef {
    /// Unique id assigned by the catalog; storage keys data by it.
    pub id: u64,
    pub database: String,
    pub name: String,
    pub fields: Vec<FieldDef>,
    /// Index into `fields` of the primary key, if one was declared.
    pub primary_key: Option<usize>,
    /// The user who created it; it holds every privilege on it.
    #[serde(default)]
    pub owner: Option<String>,
    /// Vector indexes (built per sealed segment by storage).
    #[serde(default)]
    pub indexes: Vec<IndexDef>,
}

/// A vector index of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Assigned by the catalog when the index is created; storage names
    /// the index's files by it.
    #[serde(default)]
    pub id: u64,
    /// Unique within the database.
    pub name: String,
    /// Index into the collection's fields of the vector column.
    pub field: usize,
    pub spec: quiver_vector::index::IndexSpec,
}

impl CollectionDef {
    /// The index usable by a search on `field` with `metric`, if any.
    pub fn index_for(&self, field: usize, metric: quiver_vector::Metric) -> Option<&IndexDef> {
        self.indexes
            .iter()
            .find(|i| i.field == field && i.spec.metric == metric)
    }

    /// The Arrow schema of the user-visible fields.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|f| f.arrow_field())
                .collect::<Vec<_>>(),
        ))
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Index of the server-assigned field, if any.
    pub fn auto_increment_field(&self) -> Option<usize> {
        self.fields.iter().position(|f| f.auto_increment)
    }

    pub(super) fn validate(&self) -> Result<(), CatalogError> {
        super::validate_name("collection", &self.name)?;
        for f in &self.fields {
            super::validate_name("column", &f.name)?;
        }
        if self.fields.is_empty() {
            return Err(CatalogError::InvalidDefinition(
                "a collection needs at least one field".into(),
            ));
        }
        for (i, f) in self.fields.iter().enumerate() {
            if self.fields[..i].iter().any(|g| g.name == f.name) {
                return Err(CatalogError::InvalidDefinition(format!(
                    "field \"{}\" specified more than once",
                    f.name
                )));
            }
            if let FieldType::Vector { dim } = f.field_type
                && !(1..=16000).contains(&dim)
            {
                return Err(CatalogError::InvalidDefinition(format!(
                    "vector field \"{}\" must have between 1 and 16000 dimensions, not {dim}",
                    f.name
                )));
            }
            if let FieldType::Bit { bits } = f.field_type
                && !(1..=65536).contains(&bits)
            {
                return Err(CatalogError::InvalidDefinition(format!(
                    "bit field \"{}\" must have between 1 and 65536 bits, not {bits}",
                    f.name
                )));
            }
        }
        if let Some(pk) = self.primary_key {
            let f = &self.fields[pk];
            if !f.field_type.can_be_primary_key() {
                return Err(CatalogError::InvalidDefinition(format!(
                    "primary key \"{}\" must be an integer or text field, not {}",
                    f.name,
                    f.field_type.sql_name()
                )));
            }
        }
        if self.fields.iter().filter(|f| f.auto_increment).count() > 1 {
            return Err(CatalogError::InvalidDefinition(
                "at most one field can be server-assigned (SERIAL/BIGSERIAL/IDENTITY)".into(),
            ));
        }
        Ok(())
    }
}
