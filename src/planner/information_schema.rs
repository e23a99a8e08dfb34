//! `information_schema` as PostgreSQL has it where clients read types.
//!
//! DataFusion's `information_schema` serves every view but `columns`,
//! whose rows it derives from Arrow types (`Utf8`, `FixedSizeList(...)`,
//! 0-based positions, 15 of PostgreSQL's 44 columns). quiver's `columns`
//! has PostgreSQL's 44 columns and values: `data_type` as the SQL
//! standard names it (`integer`, `USER-DEFINED` for `vector`, `ARRAY`),
//! `udt_name` (`int4`, `vector`, `_text`), precisions, defaults as
//! `pg_attrdef` prints them, positions from 1. Tools read it to learn a
//! table's columns (langchain-postgres checks that its embedding column is
//! `USER-DEFINED`; DBeaver, Metabase and SQLAlchemy read `udt_name`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, MemTable, SchemaProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::TableProvider;
use quiver_catalog::Catalog;

use crate::pg_relations::{SystemRows, column_default, column_type, pg_type_oid};

/// The `information_schema` of one session's database.
#[derive(Debug)]
pub struct InformationSchema {
    inner: InformationSchemaProvider,
    list: Arc<dyn CatalogProviderList>,
    catalog: Arc<Catalog>,
    database: String,
    system: Arc<SystemRows>,
}

impl InformationSchema {
    pub fn new(
        list: Arc<dyn CatalogProviderList>,
        catalog: Arc<Catalog>,
        database: &str,
        system: Arc<SystemRows>,
    ) -> InformationSchema {
        InformationSchema {
            inner: InformationSchemaProvider::new(list.clone()),
            list,
            catalog,
            database: database.to_string(),
            system,
        }
    }
}

/// One column of one table.
struct Column {
    schema: String,
    table: String,
    name: String,
    position: usize,
    default: Option<String>,
    nullable: bool,
    oid: i64,
    typmod: i64,
}

const TEXT_MAX_OCTETS: i32 = 1_073_741_824;

fn columns_schema() -> Schema {
    let name = |n: &str| Field::new(n, DataType::Utf8, true);
    let int = |n: &str| Field::new(n, DataType::Int32, true);
    Schema::new(vec![
        name("table_catalog"),
        name("table_schema"),
        name("table_name"),
        name("column_name"),
        int("ordinal_position"),
        name("column_default"),
        name("is_nullable"),
        name("data_type"),
        int("character_maximum_length"),
        int("character_octet_length"),
        int("numeric_precision"),
        int("numeric_precision_radix"),
        int("numeric_scale"),
        int("datetime_precision"),
        name("interval_type"),
        int("interval_precision"),
        name("character_set_catalog"),
        name("character_set_schema"),
        name("character_set_name"),
        name("collation_catalog"),
        name("collation_schema"),
        name("collation_name"),
        name("domain_catalog"),
        name("domain_schema"),
        name("domain_name"),
        name("udt_catalog"),
        name("udt_schema"),
        name("udt_name"),
        name("scope_catalog"),
        name("scope_schema"),
        name("scope_name"),
        int("maximum_cardinality"),
        name("dtd_identifier"),
        name("is_self_referencing"),
        name("is_identity"),
        name("identity_generation"),
        name("identity_start"),
        name("identity_increment"),
        name("identity_maximum"),
        name("identity_minimum"),
        name("identity_cycle"),
        name("is_generated"),
        name("generation_expression"),
        name("is_updatable"),
    ])
}

impl InformationSchema {
    /// The values of one row of `columns`, in its order.
    fn row(&self, c: &Column) -> Vec<ScalarValue> {
        let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
        let int = |v: Option<i64>| ScalarValue::Int32(v.map(|v| v as i32));
        let null_text = ScalarValue::Utf8(None);
        let (udt, elem) = self.system.type_row(c.oid).unwrap_or(("unknown", 0));
        let is_array = elem != 0 && udt.starts_with('_');
        let user_defined = udt == "vector";
        let data_type = if is_array {
            "ARRAY".to_string()
        } else if user_defined {
            "USER-DEFINED".to_string()
        } else {
            self.system
                .type_name(c.oid, -1)
                .unwrap_or_else(|| udt.to_string())
        };
        let typmod = (c.typmod >= 0).then_some(c.typmod);
        let (max_chars, octets) = match udt {
            "varchar" | "bpchar" => match typmod {
                Some(m) => (Some(m - 4), Some((m - 4) * 4)),
                None => (None, Some(TEXT_MAX_OCTETS as i64)),
            },
            "text" => (None, Some(TEXT_MAX_OCTETS as i64)),
            "bit" | "varbit" => (typmod, None),
            _ => (None, None),
        };
        let (precision, radix, scale) = match udt {
            "int2" => (Some(16), Some(2), Some(0)),
            "int4" => (Some(32), Some(2), Some(0)),
            "int8" => (Some(64), Some(2), Some(0)),
            "float4" => (Some(24), Some(2), None),
            "float8" => (Some(53), Some(2), None),
            "numeric" => match typmod {
                Some(m) => {
                    let m = m - 4;
                    (Some((m >> 16) & 0xffff), Some(10), Some(m & 0xffff))
                }
                None => (None, Some(10), None),
            },
            _ => (None, None, None),
        };
        let datetime = match udt {
            "date" => Some(0),
            "time" | "timetz" | "timestamp" | "timestamptz" | "interval" => {
                Some(typmod.unwrap_or(6))
            }
            _ => None,
        };
        let udt_schema = if user_defined { "public" } else { "pg_catalog" };
        vec![
            text(&self.database),
            text(&c.schema),
            text(&c.table),
            text(&c.name),
            int(Some(c.position as i64)),
            c.default.as_deref().map_or(null_text.clone(), text),
            text(if c.nullable { "YES" } else { "NO" }),
            text(&data_type),
            int(max_chars),
            int(octets),
            int(precision),
            int(radix),
            int(scale),
            int(datetime),
            null_text.clone(),
            int(None),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            text(&self.database),
            text(udt_schema),
            text(udt),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            int(None),
            text(&c.position.to_string()),
            text("NO"),
            text("NO"),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            null_text.clone(),
            text("NO"),
            text("NEVER"),
            null_text,
            text(if c.schema == "pg_catalog" {
                "NO"
            } else {
                "YES"
            }),
        ]
    }

    /// Every column of every table the session sees: collections from
    /// their definitions, system tables from their Arrow fields.
    async fn collect(&self) -> Result<Vec<Column>> {
        let mut out = Vec::new();
        let Some(db) = self.list.catalog(&self.database) else {
            return Ok(out);
        };
        let mut schemas = db.schema_names();
        schemas.sort();
        for schema_name in schemas {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = db.schema(&schema_name) else {
                continue;
            };
            let mut tables = schema.table_names();
            tables.sort();
            for table in tables {
                if schema_name == crate::catalog_provider::PUBLIC_SCHEMA
                    && let Some(def) = self.catalog.collection(&self.database, &table)
                    && def.name == table
                {
                    for (i, f) in def.fields.iter().enumerate() {
                        let (oid, typmod) = column_type(&f.field_type);
                        out.push(Column {
                            schema: schema_name.clone(),
                            table: table.clone(),
                            name: f.name.clone(),
                            position: i + 1,
                            default: column_default(&def, f),
                            nullable: f.nullable && !f.auto_increment,
                            oid,
                            typmod,
                        });
                    }
                    continue;
                }
                let Some(provider) = schema.table(&table).await? else {
                    continue;
                };
                for (i, f) in provider.schema().fields().iter().enumerate() {
                    out.push(Column {
                        schema: schema_name.clone(),
                        table: table.clone(),
                        name: f.name().clone(),
                        position: i + 1,
                        default: None,
                        nullable: f.is_nullable(),
                        oid: pg_type_oid(f),
                        typmod: -1,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn columns(&self) -> Result<Arc<dyn TableProvider>> {
        let schema = Arc::new(columns_schema());
        let rows: Vec<Vec<ScalarValue>> =
            self.collect().await?.iter().map(|c| self.row(c)).collect();
        let mut arrays = Vec::with_capacity(schema.fields().len());
        for (i, f) in schema.fields().iter().enumerate() {
            let values = rows.iter().map(|r| r[i].clone());
            arrays.push(if rows.is_empty() {
                arrow::array::new_empty_array(f.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            });
        }
        let batch = arrow::array::RecordBatch::try_new(schema.clone(), arrays)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.eq_ignore_ascii_case("columns") {
            return Ok(Some(self.columns().await?));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
