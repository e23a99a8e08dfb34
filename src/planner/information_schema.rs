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

use arrow::array::AsArray;
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
        let rows = self.collect().await?.iter().map(|c| self.row(c)).collect();
        rows_table(Arc::new(columns_schema()), rows)
    }
}

/// A table of `Utf8` columns named `names` holding `rows` (`None`: NULL).
fn text_table(names: &[&str], rows: &[Vec<Option<String>>]) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<arrow::array::ArrayRef> = (0..names.len())
        .map(|i| {
            Arc::new(arrow::array::StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as arrow::array::ArrayRef
        })
        .collect();
    let batch = arrow::array::RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

impl InformationSchema {
    /// The collections the session sees, with their table oids and the
    /// oid of schema public (as `pg_class` and `pg_namespace` give them).
    async fn collections(&self) -> Result<(i64, Vec<(i64, Arc<quiver_catalog::CollectionDef>)>)> {
        let mut out = Vec::new();
        let mut public = 0;
        let Some(db) = self.list.catalog(&self.database) else {
            return Ok((public, out));
        };
        let Some(system) = db.schema("pg_catalog") else {
            return Ok((public, out));
        };
        if let Some(ns) = system.table("pg_namespace").await? {
            for batch in crate::pg_users::rows_of(&ns).await? {
                let names = arrow::compute::cast(
                    batch.column_by_name("nspname").unwrap_or(batch.column(0)),
                    &DataType::Utf8,
                )?;
                let oids = arrow::compute::cast(
                    batch.column_by_name("oid").unwrap_or(batch.column(0)),
                    &DataType::Int64,
                )?;
                let names = names.as_string::<i32>();
                let oids = oids.as_primitive::<arrow::datatypes::Int64Type>();
                for r in 0..batch.num_rows() {
                    if names.value(r) == crate::catalog_provider::PUBLIC_SCHEMA {
                        public = oids.value(r);
                    }
                }
            }
        }
        let Some(class) = system.table("pg_class").await? else {
            return Ok((public, out));
        };
        for batch in crate::pg_users::rows_of(&class).await? {
            let (Some(names), Some(oids), Some(ns)) = (
                batch.column_by_name("relname"),
                batch.column_by_name("oid"),
                batch.column_by_name("relnamespace"),
            ) else {
                continue;
            };
            let names = arrow::compute::cast(names, &DataType::Utf8)?;
            let oids = arrow::compute::cast(oids, &DataType::Int64)?;
            let ns = arrow::compute::cast(ns, &DataType::Int64)?;
            let names = names.as_string::<i32>();
            let oids = oids.as_primitive::<arrow::datatypes::Int64Type>();
            let ns = ns.as_primitive::<arrow::datatypes::Int64Type>();
            for r in 0..batch.num_rows() {
                if ns.value(r) != public {
                    continue;
                }
                if let Some(def) = self.catalog.collection(&self.database, names.value(r))
                    && def.name == names.value(r)
                {
                    out.push((oids.value(r), def));
                }
            }
        }
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Ok((public, out))
    }

    /// Primary keys, and a CHECK constraint per NOT NULL column named as
    /// PostgreSQL names it (`<schema oid>_<table oid>_<attnum>_not_null`).
    async fn table_constraints(&self) -> Result<Arc<dyn TableProvider>> {
        let (public, collections) = self.collections().await?;
        let db = Some(self.database.clone());
        let schema = Some(crate::catalog_provider::PUBLIC_SCHEMA.to_string());
        let mut rows = Vec::new();
        let row = |name: String, table: &str, kind: &str| {
            vec![
                db.clone(),
                schema.clone(),
                Some(name),
                db.clone(),
                schema.clone(),
                Some(table.to_string()),
                Some(kind.to_string()),
                Some("NO".into()),
                Some("NO".into()),
                Some("YES".into()),
                None,
            ]
        };
        for (oid, def) in &collections {
            if def.primary_key.is_some() {
                rows.push(row(
                    crate::pg_relations::pkey_name(def),
                    &def.name,
                    "PRIMARY KEY",
                ));
            }
            for (i, f) in def.fields.iter().enumerate() {
                if !f.nullable || f.auto_increment || def.primary_key == Some(i) {
                    rows.push(row(
                        format!("{public}_{oid}_{}_not_null", i + 1),
                        &def.name,
                        "CHECK",
                    ));
                }
            }
        }
        text_table(
            &[
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "constraint_type",
                "is_deferrable",
                "initially_deferred",
                "enforced",
                "nulls_distinct",
            ],
            &rows,
        )
    }

    /// The columns of primary keys.
    async fn key_column_usage(&self) -> Result<Arc<dyn TableProvider>> {
        let (_, collections) = self.collections().await?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("constraint_catalog", DataType::Utf8, true),
            Field::new("constraint_schema", DataType::Utf8, true),
            Field::new("constraint_name", DataType::Utf8, true),
            Field::new("table_catalog", DataType::Utf8, true),
            Field::new("table_schema", DataType::Utf8, true),
            Field::new("table_name", DataType::Utf8, true),
            Field::new("column_name", DataType::Utf8, true),
            Field::new("ordinal_position", DataType::Int32, true),
            Field::new("position_in_unique_constraint", DataType::Int32, true),
        ]));
        let mut rows: Vec<Vec<ScalarValue>> = Vec::new();
        let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
        for (_, def) in &collections {
            let Some(key) = def.primary_key.and_then(|k| def.fields.get(k)) else {
                continue;
            };
            rows.push(vec![
                text(&self.database),
                text(crate::catalog_provider::PUBLIC_SCHEMA),
                text(&crate::pg_relations::pkey_name(def)),
                text(&self.database),
                text(crate::catalog_provider::PUBLIC_SCHEMA),
                text(&def.name),
                text(&key.name),
                ScalarValue::Int32(Some(1)),
                ScalarValue::Int32(None),
            ]);
        }
        rows_table(schema, rows)
    }
}

/// A table of `schema` holding `rows`.
fn rows_table(schema: Arc<Schema>, rows: Vec<Vec<ScalarValue>>) -> Result<Arc<dyn TableProvider>> {
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        arrays.push(if rows.is_empty() {
            arrow::array::new_empty_array(f.data_type())
        } else {
            ScalarValue::iter_to_array(rows.iter().map(|r| r[i].clone()))?
        });
    }
    let batch = arrow::array::RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// The views quiver adds to DataFusion's `information_schema`.
const OWN_VIEWS: [&str; 5] = [
    "table_constraints",
    "key_column_usage",
    "referential_constraints",
    "character_sets",
    "views",
];

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        for own in OWN_VIEWS {
            if !names.iter().any(|n| n == own) {
                names.push(own.to_string());
            }
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let db = Some(self.database.clone());
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "columns" => self.columns().await?,
            "table_constraints" => self.table_constraints().await?,
            "key_column_usage" => self.key_column_usage().await?,
            // quiver has no foreign keys.
            "referential_constraints" => text_table(
                &[
                    "constraint_catalog",
                    "constraint_schema",
                    "constraint_name",
                    "unique_constraint_catalog",
                    "unique_constraint_schema",
                    "unique_constraint_name",
                    "match_option",
                    "update_rule",
                    "delete_rule",
                ],
                &[],
            )?,
            // The server's one encoding.
            "character_sets" => text_table(
                &[
                    "character_set_catalog",
                    "character_set_schema",
                    "character_set_name",
                    "character_repertoire",
                    "form_of_use",
                    "default_collate_catalog",
                    "default_collate_schema",
                    "default_collate_name",
                ],
                &[vec![
                    None,
                    None,
                    Some("UTF8".into()),
                    Some("UCS".into()),
                    Some("UTF8".into()),
                    db,
                    None,
                    None,
                ]],
            )?,
            // quiver has no views (DataFusion's lists every table).
            "views" => text_table(
                &[
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "view_definition",
                    "check_option",
                    "is_updatable",
                    "is_insertable_into",
                    "is_trigger_updatable",
                    "is_trigger_deletable",
                    "is_trigger_insertable_into",
                ],
                &[],
            )?,
            _ => return self.inner.table(name).await,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        OWN_VIEWS.contains(&name) || self.inner.table_exist(name)
    }
}
