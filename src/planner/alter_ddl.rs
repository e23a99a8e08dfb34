//! Aliases (Milvus's): CREATE / ALTER / DROP ALIAS and SHOW ALIASES, and
//! `ALTER COLLECTION`: `RENAME TO`, `ALTER COLUMN ... SET / DROP DEFAULT`. An alias is another name of a
//! collection wherever a collection name is read (queries, SEARCH, INSERT,
//! COPY, DESCRIBE); it resolves in the catalog, so that privileges are the
//! collection's and a switch (`ALTER ALIAS`) is one catalog change.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::QueryError;
use super::access::{self, Need};
use super::ddl::resolve_parts;
use super::session::Session;
use quiver_auth::acl::Privilege;
use quiver_catalog::{Catalog, CatalogError, CollectionDef};
use quiver_sql::statement::AliasStatement;
use quiver_storage::Storage;

pub fn aliases_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("alias", DataType::Utf8, false),
        Field::new("collection", DataType::Utf8, false),
    ]))
}

/// What an alias statement answers.
pub enum AliasOutput {
    Tag(&'static str),
    Rows(RecordBatch),
}

/// The collection `parts` names (through an alias too), or 42P01.
fn target(
    catalog: &Catalog,
    parts: &[String],
    session: &Session,
) -> Result<(String, Arc<CollectionDef>), QueryError> {
    let (db, name) = resolve_parts(parts, &session.database())?;
    let def = catalog
        .collection(&db, &name)
        .ok_or(CatalogError::CollectionNotFound { name })?;
    Ok((db, def))
}

/// An alias lives in the database of the collection it names.
fn same_database(alias_db: &str, db: &str) -> Result<(), QueryError> {
    if alias_db == db {
        Ok(())
    } else {
        Err(QueryError::Unsupported(format!(
            "an alias in database \"{alias_db}\" cannot name a collection of database \"{db}\""
        )))
    }
}

pub fn execute(
    catalog: &Catalog,
    session: &Session,
    stmt: AliasStatement,
) -> Result<AliasOutput, QueryError> {
    let alter = |def: &CollectionDef| BTreeSet::from([Need::on(Privilege::Alter, def)]);
    match stmt {
        AliasStatement::Create { alias, collection } => {
            let (alias_db, alias) = resolve_parts(&alias, &session.database())?;
            let (db, def) = target(catalog, &collection, session)?;
            same_database(&alias_db, &db)?;
            access::authorize(catalog, session, &alter(&def))?;
            // The catalog refuses an alias of an alias by the name given.
            let (_, named) = resolve_parts(&collection, &session.database())?;
            catalog.create_alias(&db, &alias, &named)?;
            Ok(AliasOutput::Tag("CREATE ALIAS"))
        }
        AliasStatement::Alter { alias, collection } => {
            let (alias_db, alias) = resolve_parts(&alias, &session.database())?;
            let (db, def) = target(catalog, &collection, session)?;
            same_database(&alias_db, &db)?;
            let mut needs = alter(&def);
            // Moving an alias away from a collection changes what its
            // users read: ALTER on that one too.
            if catalog.is_alias(&db, &alias)
                && let Some(old) = catalog.collection(&db, &alias)
            {
                needs.insert(Need::on(Privilege::Alter, &old));
            }
            access::authorize(catalog, session, &needs)?;
            let (_, named) = resolve_parts(&collection, &session.database())?;
            catalog.alter_alias(&db, &alias, &named)?;
            Ok(AliasOutput::Tag("ALTER ALIAS"))
        }
        AliasStatement::Drop { alias, if_exists } => {
            let (db, alias) = resolve_parts(&alias, &session.database())?;
            if catalog.is_alias(&db, &alias)
                && let Some(def) = catalog.collection(&db, &alias)
            {
                access::authorize(catalog, session, &alter(&def))?;
            }
            if !catalog.drop_alias(&db, &alias, if_exists)? {
                session.notice(
                    "00000",
                    format!("alias \"{alias}\" does not exist, skipping"),
                );
            }
            Ok(AliasOutput::Tag("DROP ALIAS"))
        }
        AliasStatement::Show { collection } => {
            let db = session.database();
            let only = match &collection {
                Some(parts) => Some(target(catalog, parts, session)?.1.id),
                None => None,
            };
            let (aliases, collections): (Vec<String>, Vec<String>) = catalog
                .aliases(&db)
                .into_iter()
                .filter(|(_, c)| {
                    catalog.collection(&db, c).is_some_and(|def| {
                        only.is_none_or(|id| id == def.id)
                            && access::sees(catalog, session.user(), &def)
                    })
                })
                .unzip();
            Ok(AliasOutput::Rows(RecordBatch::try_new(
                aliases_schema(),
                vec![
                    Arc::new(StringArray::from(aliases)),
                    Arc::new(StringArray::from(collections)),
                ],
            )?))
        }
    }
}

/// The collection an ALTER names, once the session may alter it; `None`
/// (with PostgreSQL's notice) when it does not exist and `if_exists`.
fn altered(
    catalog: &Catalog,
    session: &Session,
    db: &str,
    name: &str,
    if_exists: bool,
) -> Result<Option<Arc<CollectionDef>>, QueryError> {
    let Some(def) = catalog.collection(db, name) else {
        if if_exists {
            session.notice(
                "00000",
                format!("relation \"{name}\" does not exist, skipping"),
            );
            return Ok(None);
        }
        return Err(CatalogError::CollectionNotFound { name: name.into() }.into());
    };
    access::authorize(
        catalog,
        session,
        &BTreeSet::from([Need::on(Privilege::Alter, &def)]),
    )?;
    Ok(Some(def))
}

/// `ALTER COLLECTION | TABLE [IF EXISTS] name RENAME TO new_name`: a
/// catalog change only (storage is keyed by id); indexes, aliases and
/// grants follow. Returns false when it did not exist and `if_exists`.
pub fn rename(
    catalog: &Catalog,
    storage: &Storage,
    session: &Session,
    db: &str,
    name: &str,
    new_name: &str,
    if_exists: bool,
) -> Result<bool, QueryError> {
    if catalog.is_alias(db, name) {
        // Told apart from a missing name by the catalog's own error.
        return Err(catalog
            .rename_collection(db, name, new_name)
            .err()
            .map(QueryError::from)
            .unwrap_or_else(|| QueryError::Unsupported("renaming an alias".into())));
    }
    if altered(catalog, session, db, name, if_exists)?.is_none() {
        return Ok(false);
    }
    let renamed = catalog.rename_collection(db, name, new_name)?;
    if let Some(data) = storage.collection(renamed.id) {
        data.set_name(&renamed.name);
    }
    Ok(true)
}

/// `ALTER COLLECTION | TABLE [IF EXISTS] name ALTER COLUMN column SET
/// DEFAULT expr | DROP DEFAULT`: a catalog change; rows written before keep
/// their values, later INSERTs and COPYs that leave the column out take
/// the new default. Through an alias it changes the collection. Returns
/// false when it did not exist and `if_exists`.
#[allow(clippy::too_many_arguments)]
pub fn set_default(
    catalog: &Catalog,
    session: &Session,
    db: &str,
    name: &str,
    column: &str,
    default: Option<&datafusion::sql::sqlparser::ast::Expr>,
    if_exists: bool,
) -> Result<bool, QueryError> {
    let Some(def) = altered(catalog, session, db, name, if_exists)? else {
        return Ok(false);
    };
    let Some(field) = def.fields.iter().find(|f| f.name == column) else {
        return Err(CatalogError::ColumnNotFound {
            column: column.into(),
            collection: def.name.clone(),
        }
        .into());
    };
    let text = default
        .map(|e| super::ddl::default_text(e, &field.field_type))
        .transpose()?;
    catalog.set_default(db, &def.name, column, text)?;
    Ok(true)
}
