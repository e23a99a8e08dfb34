//! The catalog as DataFusion sees it: one DataFusion catalog per database,
//! schema `public` holding its collections, plus shared system schemas
//! (`pg_catalog`) registered by `datafusion-pg-catalog`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::Expr;
use parking_lot::RwLock;

use quiver_catalog::{Catalog, CollectionDef};
use quiver_exec::CollectionTable;
use quiver_storage::Storage;

pub const PUBLIC_SCHEMA: &str = "public";

type Extra = Arc<RwLock<HashMap<String, Arc<dyn SchemaProvider>>>>;

/// The databases of the catalog as DataFusion catalogs. A session sees only
/// its own database, as in PostgreSQL (see [`QuiverCatalogList::for_database`]).
#[derive(Debug, Clone)]
pub struct QuiverCatalogList {
    catalog: Arc<Catalog>,
    storage: Arc<Storage>,
    /// Schemas shared by every database (`pg_catalog`).
    extra: Extra,
    /// When set, the only database visible.
    only: Option<String>,
    /// Schemas of this list that replace the shared ones (a session's `pg_catalog`).
    overrides: HashMap<String, Arc<dyn SchemaProvider>>,
    /// When set, listings show only the collections this user may see.
    viewer: Option<String>,
}

impl QuiverCatalogList {
    pub fn new(catalog: Arc<Catalog>, storage: Arc<Storage>) -> QuiverCatalogList {
        QuiverCatalogList {
            catalog,
            storage,
            extra: Arc::new(RwLock::new(HashMap::new())),
            only: None,
            overrides: HashMap::new(),
            viewer: None,
        }
    }

    /// The same catalog restricted to `database`, as `user` sees it.
    pub fn for_database(&self, database: &str, user: &str) -> QuiverCatalogList {
        QuiverCatalogList {
            only: Some(database.to_string()),
            overrides: HashMap::new(),
            viewer: Some(user.to_string()),
            ..self.clone()
        }
    }

    /// Use `schema` for `name` in every database of this list.
    pub fn with_schema(mut self, name: &str, schema: Arc<dyn SchemaProvider>) -> QuiverCatalogList {
        self.overrides.insert(name.to_string(), schema);
        self
    }

    fn visible(&self, database: &str) -> bool {
        self.only.as_deref().is_none_or(|d| d == database) && self.catalog.database_exists(database)
    }
}

impl CatalogProviderList for QuiverCatalogList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Databases are created with CREATE DATABASE, through the catalog.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        self.catalog
            .database_names()
            .into_iter()
            .filter(|d| self.visible(d))
            .collect()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.visible(name).then(|| {
            Arc::new(DatabaseProvider {
                database: name.to_string(),
                catalog: self.catalog.clone(),
                storage: self.storage.clone(),
                extra: self.extra.clone(),
                overrides: self.overrides.clone(),
                viewer: self.viewer.clone(),
            }) as Arc<dyn CatalogProvider>
        })
    }
}

#[derive(Debug)]
struct DatabaseProvider {
    database: String,
    catalog: Arc<Catalog>,
    storage: Arc<Storage>,
    extra: Extra,
    overrides: HashMap<String, Arc<dyn SchemaProvider>>,
    viewer: Option<String>,
}

impl CatalogProvider for DatabaseProvider {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![PUBLIC_SCHEMA.to_string()];
        names.extend(self.extra.read().keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == PUBLIC_SCHEMA {
            return Some(Arc::new(CollectionSchema {
                database: self.database.clone(),
                catalog: self.catalog.clone(),
                storage: self.storage.clone(),
                viewer: self.viewer.clone(),
                system: self.overrides.get("pg_catalog").cloned(),
            }));
        }
        if let Some(schema) = self.overrides.get(name) {
            return Some(schema.clone());
        }
        self.extra.read().get(name).cloned()
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if name == PUBLIC_SCHEMA {
            return Err(DataFusionError::Plan(
                "schema \"public\" is managed by quiver".into(),
            ));
        }
        Ok(self.extra.write().insert(name.to_string(), schema))
    }
}

/// Schema `public` of one database: its collections.
#[derive(Debug)]
struct CollectionSchema {
    database: String,
    catalog: Arc<Catalog>,
    storage: Arc<Storage>,
    viewer: Option<String>,
    /// `pg_catalog`, whose tables unqualified names also reach (PostgreSQL
    /// searches it implicitly), after the collections.
    system: Option<Arc<dyn SchemaProvider>>,
}

/// Build the DataFusion table of a collection.
pub fn collection_table(
    def: Arc<CollectionDef>,
    storage: &Storage,
) -> Result<Arc<CollectionTable>> {
    let data = storage
        .open_collection(&def)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let defaults = def
        .fields
        .iter()
        .filter_map(|f| {
            let text = f.default.as_ref()?;
            Some(crate::ddl::default_expr(text, &f.field_type).map(|e| (f.name.clone(), e)))
        })
        .collect::<Result<HashMap<String, Expr>>>()?;
    Ok(Arc::new(CollectionTable::new(def, data, defaults)))
}

#[async_trait]
impl SchemaProvider for CollectionSchema {
    /// The collections the viewer holds some privilege on: what catalog
    /// views (pg_class, information_schema) list. Name lookups still find
    /// the others, so that using one is refused with 42501, not 42P01.
    fn table_names(&self) -> Vec<String> {
        let names = self.catalog.collection_names(&self.database);
        let Some(user) = &self.viewer else {
            return names;
        };
        names
            .into_iter()
            .filter(|n| {
                self.catalog
                    .collection(&self.database, n)
                    .is_some_and(|d| super::access::sees(&self.catalog, user, &d))
            })
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        // PostgreSQL searches pg_catalog first: a collection or alias named
        // `pg_class` must not hide the system table from other sessions'
        // introspection.
        if name.starts_with("pg_")
            && let Some(system) = &self.system
            && system.table_exist(name)
        {
            return system.table(name).await;
        }
        match (self.catalog.collection(&self.database, name), &self.system) {
            (Some(def), _) => Ok(Some(collection_table(def, &self.storage)?)),
            (None, Some(system)) if name.starts_with("pg_") => system.table(name).await,
            (None, _) => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.collection(&self.database, name).is_some()
            || (name.starts_with("pg_")
                && self.system.as_ref().is_some_and(|s| s.table_exist(name)))
    }
}
