//! CREATE INDEX, DROP INDEX, REINDEX and SHOW INDEXES: the catalog keeps
//! the definitions, storage builds one index per sealed segment in the
//! background.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::QueryError;
use super::access::{self, Need};
use super::session::Session;
use quiver_auth::acl::Privilege;
use quiver_catalog::{Catalog, CatalogError, CollectionDef, FieldType, IndexDef};
use quiver_sql::statement::IndexStatement;
use quiver_storage::{Storage, StorageError};
use quiver_vector::index::{IndexError, IndexSpec, bool_option, metric_of_opclass};

pub fn indexes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("index_name", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("params", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("rows_indexed", DataType::Int64, false),
        Field::new("rows_total", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("build_ms", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

pub enum IndexOutput {
    Tag(&'static str),
    Rows(RecordBatch),
}

fn resolve(parts: &[String], session: &Session) -> Result<(String, String), QueryError> {
    match parts {
        [n] => Ok((session.database(), n.clone())),
        // `public.items`: the schema, as in PostgreSQL.
        [s, n] if s == crate::catalog_provider::PUBLIC_SCHEMA => {
            Ok((session.database(), n.clone()))
        }
        [d, n] | [d, _, n] => Ok((d.clone(), n.clone())),
        _ => Err(QueryError::Unsupported(format!(
            "invalid collection name {}",
            parts.join(".")
        ))),
    }
}

fn index_err(e: IndexError) -> QueryError {
    QueryError::Storage(StorageError::Index(e))
}

pub(crate) fn opclass_name(def: &IndexDef) -> &'static str {
    match def.spec.metric {
        quiver_vector::Metric::L2 => "vector_l2_ops",
        quiver_vector::Metric::NegativeInnerProduct => "vector_ip_ops",
        quiver_vector::Metric::Cosine => "vector_cosine_ops",
        quiver_vector::Metric::L1 => "vector_l1_ops",
        quiver_vector::Metric::Hamming => "bit_hamming_ops",
        quiver_vector::Metric::Jaccard => "bit_jaccard_ops",
    }
}

pub async fn execute(
    catalog: &Catalog,
    storage: &Storage,
    session: &Session,
    stmt: IndexStatement,
) -> Result<IndexOutput, QueryError> {
    let need = |def: &CollectionDef| -> Result<(), QueryError> {
        access::authorize(catalog, session, &[Need::on(Privilege::Index, def)].into())
    };
    match stmt {
        IndexStatement::Create {
            name,
            if_not_exists,
            collection,
            method,
            column,
            opclass,
            mut options,
        } => {
            let (db, coll) = resolve(&collection, session)?;
            let def = catalog.get_collection(&db, &coll)?;
            need(&def)?;
            let field = def
                .field_index(&column)
                .ok_or_else(|| QueryError::UnknownColumn {
                    column: column.clone(),
                    collection: def.name.clone(),
                })?;
            let (dim, default_opclass, is_bit) = match def.fields[field].field_type {
                FieldType::Vector { dim } => (dim, "vector_l2_ops", false),
                FieldType::Bit { bits } => (bits, "bit_hamming_ops", true),
                _ => {
                    return Err(index_err(IndexError::InvalidParameter(format!(
                        "column \"{column}\" is not a vector: vector indexes cover VECTOR(n) and BIT(n) columns"
                    ))));
                }
            };
            let opclass = opclass.as_deref().unwrap_or(default_opclass);
            let metric = metric_of_opclass(opclass).map_err(index_err)?;
            if metric.is_binary() != is_bit {
                return Err(index_err(IndexError::WrongType(format!(
                    "operator class \"{opclass}\" does not accept data type {}",
                    def.fields[field].field_type.sql_name()
                ))));
            }
            let wait = match options.remove("wait") {
                None => false,
                Some(v) => bool_option("wait", &v).map_err(index_err)?,
            };
            let spec = IndexSpec::parse(&method, metric, dim, &options).map_err(index_err)?;
            let name = match name {
                Some(name) => name,
                None => free_index_name(catalog, &db, &def.name, &column),
            };
            let index = IndexDef {
                id: 0,
                name: name.clone(),
                field,
                spec,
            };
            let Some(updated) = catalog.create_index(&db, &def.name, index, if_not_exists)? else {
                session.notice(
                    "42P07",
                    format!("relation \"{name}\" already exists, skipping"),
                );
                return Ok(IndexOutput::Tag("CREATE INDEX"));
            };
            let data = storage.open_collection(&updated)?;
            data.set_indexes(updated.indexes.clone());
            if wait {
                data.wait_for_index(&name).await?;
            }
            Ok(IndexOutput::Tag("CREATE INDEX"))
        }
        IndexStatement::Drop { names, if_exists } => {
            let db = session.database();
            let mut found = Vec::new();
            for name in &names {
                match catalog.find_index(&db, name) {
                    Some((def, _)) => {
                        need(&def)?;
                        found.push(name.clone());
                    }
                    None if if_exists => session.notice(
                        "00000",
                        format!("index \"{name}\" does not exist, skipping"),
                    ),
                    None => return Err(CatalogError::IndexNotFound { name: name.clone() }.into()),
                }
            }
            if session.block().in_block() {
                // Inside a block the drop waits for COMMIT (and vanishes
                // with ROLLBACK), as a DROP TABLE does there.
                for name in found {
                    if let Some((_, index)) = catalog.find_index(&db, &name) {
                        session.drop_at_commit(db.clone(), name, index.id);
                    }
                }
                return Ok(IndexOutput::Tag("DROP INDEX"));
            }
            for name in found {
                drop_now(catalog, storage, &db, &name).await?;
            }
            Ok(IndexOutput::Tag("DROP INDEX"))
        }
        IndexStatement::Reindex { name } => {
            let db = session.database();
            let (def, _) = catalog
                .find_index(&db, &name)
                .ok_or_else(|| CatalogError::IndexNotFound { name: name.clone() })?;
            need(&def)?;
            let data = storage.open_collection(&def)?;
            data.remove_index_files(&name).await?;
            data.set_indexes(def.indexes.clone());
            data.wait_for_index(&name).await?;
            Ok(IndexOutput::Tag("REINDEX"))
        }
        IndexStatement::ReindexCollection { collection } => {
            let (db, coll) = resolve(&collection, session)?;
            let def = catalog.get_collection(&db, &coll)?;
            need(&def)?;
            let data = storage.open_collection(&def)?;
            for index in &def.indexes {
                data.remove_index_files(&index.name).await?;
            }
            data.set_indexes(def.indexes.clone());
            for index in &def.indexes {
                data.wait_for_index(&index.name).await?;
            }
            Ok(IndexOutput::Tag("REINDEX"))
        }
        IndexStatement::Show { collection } => {
            let (db, coll) = resolve(&collection, session)?;
            let def = catalog.get_collection(&db, &coll)?;
            if !access::sees(catalog, session.user(), &def) {
                return Err(
                    CatalogError::from(quiver_auth::acl::AccessError::Denied(format!(
                        "{} holds no privilege on collection {}",
                        session.user(),
                        def.name
                    )))
                    .into(),
                );
            }
            let data = storage.open_collection(&def)?;
            let reports = data.index_reports();
            let col = |f: &dyn Fn(&quiver_storage::collection::IndexReport) -> String| {
                StringArray::from_iter_values(reports.iter().map(f))
            };
            let batch = RecordBatch::try_new(
                indexes_schema(),
                vec![
                    Arc::new(col(&|r| r.def.name.clone())),
                    Arc::new(col(&|r| def.fields[r.def.field].name.clone())),
                    Arc::new(col(&|r| r.def.spec.method.name().to_string())),
                    Arc::new(col(&|r| r.def.spec.method.params())),
                    Arc::new(col(&|r| opclass_name(&r.def).to_string())),
                    Arc::new(Int64Array::from_iter_values(
                        reports.iter().map(|r| r.rows_indexed as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        reports.iter().map(|r| r.rows_total as i64),
                    )),
                    Arc::new(col(&|r| r.state.to_string())),
                    Arc::new(Int64Array::from_iter_values(
                        reports.iter().map(|r| r.build_ms as i64),
                    )),
                    Arc::new(StringArray::from_iter(
                        reports.iter().map(|r| r.error.clone()),
                    )),
                ],
            )?;
            Ok(IndexOutput::Rows(batch))
        }
    }
}

/// Drop index `name` of `database` from the catalog and its files.
pub async fn drop_now(
    catalog: &Catalog,
    storage: &Storage,
    database: &str,
    name: &str,
) -> Result<(), QueryError> {
    if let Some((updated, _)) = catalog.drop_index(database, name)? {
        let data = storage.open_collection(&updated)?;
        data.set_indexes(updated.indexes.clone());
        data.remove_index_files(name).await?;
    }
    Ok(())
}

/// The name of the index with catalog id `id` in `database`, if it still
/// exists (it may have been renamed).
pub fn index_name_of(catalog: &Catalog, database: &str, id: u64) -> Option<String> {
    catalog
        .collection_names(database)
        .into_iter()
        .filter_map(|c| catalog.collection(database, &c))
        .find_map(|def| {
            def.indexes
                .iter()
                .find(|i| i.id == id)
                .map(|i| i.name.clone())
        })
}

/// The name PostgreSQL gives an unnamed index: `<table>_<column>_idx`,
/// the longer of the two names cut first so that it fits the name limit
/// with its `_idx` and `suffix`.
fn index_name(table: &str, column: &str, suffix: &str) -> String {
    let (mut t, mut c) = (table.to_string(), column.to_string());
    while t.len() + c.len() + "__idx".len() + suffix.len() > quiver_catalog::MAX_NAME_BYTES {
        if t.len() >= c.len() {
            t.pop()
        } else {
            c.pop()
        };
    }
    format!("{t}_{c}_idx{suffix}")
}

/// The first of `<table>_<column>_idx`, `..._idx1`, `..._idx2`, ... that
/// no index or collection of `database` has, as PostgreSQL chooses an
/// unnamed index's name.
fn free_index_name(catalog: &Catalog, database: &str, table: &str, column: &str) -> String {
    let mut n = 0u32;
    loop {
        let suffix = if n == 0 { String::new() } else { n.to_string() };
        let name = index_name(table, column, &suffix);
        if catalog.find_index(database, &name).is_none()
            && catalog.collection(database, &name).is_none()
        {
            return name;
        }
        n += 1;
    }
}
