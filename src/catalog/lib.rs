//! Meta storage: databases and collections with their schemas.
//!
//! The catalog is the single source of truth for what exists. Every change
//! goes through [`Catalog`], which hands the new state to a [`MetaStore`] so
//! that a durable store can persist it (the in-memory store keeps nothing).

pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use quiver_common::sqlstate::{self, SqlState, SqlStateError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use quiver_auth::acl::{AccessError, Scope, SecurityState};
pub use schema::{CollectionDef, FieldDef, FieldType, IndexDef};

/// The database every server starts with.
pub const DEFAULT_DATABASE: &str = "default";

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("collection \"{name}\" does not exist")]
    CollectionNotFound { name: String },
    #[error("collection \"{name}\" already exists")]
    CollectionExists { name: String },
    #[error("database \"{name}\" does not exist")]
    DatabaseNotFound { name: String },
    #[error("database \"{name}\" already exists")]
    DatabaseExists { name: String },
    #[error("database \"{name}\" is not empty: drop its collections first")]
    DatabaseNotEmpty { name: String },
    #[error("cannot drop the current database \"{name}\"")]
    DropCurrentDatabase { name: String },
    #[error("cannot drop the default database")]
    DropDefaultDatabase,
    #[error("invalid collection definition: {0}")]
    InvalidDefinition(String),
    #[error("type \"{name}\" is not supported{hint}")]
    UnsupportedType { name: String, hint: String },
    #[error("metadata store failed: {0}")]
    Store(String),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("index \"{name}\" does not exist")]
    IndexNotFound { name: String },
    #[error("relation \"{name}\" already exists (index names are unique within a database)")]
    IndexExists { name: String },
    #[error(
        "{kind} name \"{name}\" is {len} bytes long: names are limited to {MAX_NAME_BYTES} bytes"
    )]
    NameTooLong {
        kind: &'static str,
        name: String,
        len: usize,
    },
    #[error("column \"{column}\" of relation \"{collection}\" does not exist")]
    ColumnNotFound { column: String, collection: String },
    #[error("alias \"{name}\" does not exist")]
    AliasNotFound { name: String },
    /// A name of one kind of object where another is needed (an alias
    /// dropped as a collection, an alias of an alias).
    #[error("{0}")]
    WrongObjectType(String),
    /// Dropping a collection that aliases still name.
    #[error(
        "cannot drop collection \"{name}\" because aliases name it: {aliases} (DROP ALIAS them first, or ALTER ALIAS them to another collection)"
    )]
    AliasesDependOn { name: String, aliases: String },
    #[error("{kind} name {name:?} is not valid: {why}")]
    InvalidName {
        kind: &'static str,
        name: String,
        why: &'static str,
    },
}

/// The longest name of a database, collection, field or index, in bytes
/// (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;

/// Check a name a user gives a new object. Names never reach storage
/// paths (those use ids); the limits keep them printable and bounded.
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        let mut shown = name.chars().take(MAX_NAME_BYTES).collect::<String>();
        shown.push_str("...");
        return Err(CatalogError::NameTooLong {
            kind,
            name: shown,
            len: name.len(),
        });
    }
    let why = if name.is_empty() {
        "a name cannot be empty"
    } else if name.chars().any(char::is_control) {
        "a name cannot contain control characters"
    } else {
        return Ok(());
    };
    Err(CatalogError::InvalidName {
        kind,
        name: name.to_string(),
        why,
    })
}

impl SqlStateError for CatalogError {
    fn sqlstate(&self) -> SqlState {
        match self {
            CatalogError::CollectionNotFound { .. } => sqlstate::UNDEFINED_TABLE,
            CatalogError::CollectionExists { .. } => sqlstate::DUPLICATE_TABLE,
            CatalogError::DatabaseNotFound { .. } => sqlstate::INVALID_CATALOG_NAME,
            CatalogError::DatabaseExists { .. } => sqlstate::DUPLICATE_DATABASE,
            CatalogError::DatabaseNotEmpty { .. }
            | CatalogError::DropCurrentDatabase { .. }
            | CatalogError::DropDefaultDatabase => sqlstate::OBJECT_IN_USE,
            CatalogError::InvalidDefinition(_) => sqlstate::INVALID_TABLE_DEFINITION,
            // A type PostgreSQL does not have either; one it has that
            // quiver does not comes with a hint.
            CatalogError::UnsupportedType { hint, .. } if hint.is_empty() => {
                sqlstate::UNDEFINED_OBJECT
            }
            CatalogError::UnsupportedType { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            CatalogError::Store(_) => sqlstate::IO_ERROR,
            CatalogError::IndexNotFound { .. } => sqlstate::UNDEFINED_OBJECT,
            CatalogError::IndexExists { .. } => sqlstate::DUPLICATE_TABLE,
            CatalogError::Access(a) => a.sqlstate(),
            CatalogError::NameTooLong { .. } => sqlstate::NAME_TOO_LONG,
            CatalogError::InvalidName { .. } => sqlstate::INVALID_NAME,
            CatalogError::AliasNotFound { .. } => sqlstate::UNDEFINED_OBJECT,
            CatalogError::ColumnNotFound { .. } => sqlstate::UNDEFINED_COLUMN,
            CatalogError::WrongObjectType(_) => sqlstate::WRONG_OBJECT_TYPE,
            CatalogError::AliasesDependOn { .. } => sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
        }
    }
}

impl CatalogError {
    /// DROP COLLECTION of an alias's name.
    pub fn alias_dropped_as_collection(name: &str) -> CatalogError {
        CatalogError::WrongObjectType(format!(
            "\"{name}\" is an alias, not a collection: DROP ALIAS drops it"
        ))
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// A point-in-time copy of everything the catalog knows, as persisted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    pub version: u64,
    /// The next id of a database, collection or index (one sequence).
    pub next_collection_id: u64,
    pub databases: BTreeMap<String, DatabaseDef>,
    /// Users, roles and grants.
    #[serde(default)]
    pub security: SecurityState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseDef {
    /// Assigned by the catalog, never reused (0 in catalogs written before
    /// databases had ids, until [`Catalog::open`] assigns one).
    #[serde(default)]
    pub id: u64,
    pub name: String,
    /// The user who created it (none for `default`).
    #[serde(default)]
    pub owner: Option<String>,
    pub collections: BTreeMap<String, Arc<CollectionDef>>,
    /// Aliases (Milvus's): another name of a collection, by the
    /// collection's id, so that a rename keeps them.
    #[serde(default)]
    pub aliases: BTreeMap<String, u64>,
}

/// [`Catalog::check_droppable`] in `db`.
fn check_droppable_in(db: &DatabaseDef, name: &str) -> Result<()> {
    if db.aliases.contains_key(name) {
        return Err(CatalogError::alias_dropped_as_collection(name));
    }
    if let Some(def) = db.collections.get(name) {
        let aliases: Vec<&str> = db
            .aliases
            .iter()
            .filter(|(_, id)| **id == def.id)
            .map(|(a, _)| a.as_str())
            .collect();
        if !aliases.is_empty() {
            return Err(CatalogError::AliasesDependOn {
                name: name.into(),
                aliases: aliases.join(", "),
            });
        }
    }
    Ok(())
}

impl DatabaseDef {
    /// Whether `name` is taken by a collection, an alias or an index
    /// (they share one namespace, as PostgreSQL's relations do).
    fn name_taken(&self, name: &str) -> bool {
        self.collections.contains_key(name)
            || self.aliases.contains_key(name)
            || self
                .collections
                .values()
                .any(|c| c.indexes.iter().any(|i| i.name == name))
    }

    /// The collection with id `id`.
    fn collection_by_id(&self, id: u64) -> Option<&Arc<CollectionDef>> {
        self.collections.values().find(|c| c.id == id)
    }

    /// The collection `name` names: a collection's own name or an alias.
    pub fn resolve(&self, name: &str) -> Option<&Arc<CollectionDef>> {
        self.collections.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|id| self.collection_by_id(*id))
        })
    }

    /// The collection an alias may name: a collection, never an alias.
    fn alias_target(&self, collection: &str) -> Result<u64> {
        if let Some(c) = self.collections.get(collection) {
            return Ok(c.id);
        }
        if self.aliases.contains_key(collection) {
            return Err(CatalogError::WrongObjectType(format!(
                "\"{collection}\" is an alias: an alias names a collection, not another alias"
            )));
        }
        Err(CatalogError::CollectionNotFound {
            name: collection.into(),
        })
    }
}

impl CatalogSnapshot {
    /// Database `name`, to change.
    pub fn database_mut(&mut self, name: &str) -> Result<&mut DatabaseDef> {
        self.databases
            .get_mut(name)
            .ok_or_else(|| CatalogError::DatabaseNotFound { name: name.into() })
    }

    /// Give an id to every database and index that has none (catalogs
    /// written before they had ids). Returns whether any was assigned.
    pub fn assign_missing_ids(&mut self) -> bool {
        let mut next = self.next_collection_id.max(1);
        for db in self.databases.values() {
            next = next.max(db.id + 1);
            for c in db.collections.values() {
                next = next.max(c.id + 1);
                for i in &c.indexes {
                    next = next.max(i.id + 1);
                }
            }
        }
        let mut assigned = false;
        for db in self.databases.values_mut() {
            if db.id == 0 {
                db.id = next;
                next += 1;
                assigned = true;
            }
            for c in db.collections.values_mut() {
                if c.indexes.iter().any(|i| i.id == 0) {
                    for i in &mut Arc::make_mut(c).indexes {
                        if i.id == 0 {
                            i.id = next;
                            next += 1;
                            assigned = true;
                        }
                    }
                }
            }
        }
        self.next_collection_id = next;
        assigned
    }
}

/// Where catalog state is persisted. The storage layer provides a durable one.
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Load the last persisted state, if any.
    fn load(&self) -> Result<Option<CatalogSnapshot>>;
    /// Persist `snapshot` atomically (all or nothing).
    fn persist(&self, snapshot: &CatalogSnapshot) -> Result<()>;
}

/// A store that keeps nothing: state lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryMetaStore;

impl MetaStore for MemoryMetaStore {
    fn load(&self) -> Result<Option<CatalogSnapshot>> {
        Ok(None)
    }
    fn persist(&self, _snapshot: &CatalogSnapshot) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
pub struct Catalog {
    state: RwLock<CatalogSnapshot>,
    store: Arc<dyn MetaStore>,
    next_id: AtomicU64,
}

impl Catalog {
    /// Open the catalog from `store`, creating the default database if new.
    pub fn open(store: Arc<dyn MetaStore>) -> Result<Catalog> {
        let mut snapshot = store.load()?.unwrap_or_default();
        snapshot
            .databases
            .entry(DEFAULT_DATABASE.to_string())
            .or_insert_with(|| DatabaseDef {
                id: 0,
                name: DEFAULT_DATABASE.to_string(),
                owner: None,
                collections: BTreeMap::new(),
                aliases: BTreeMap::new(),
            });
        snapshot.assign_missing_ids();
        let next_id = snapshot.next_collection_id.max(1);
        Ok(Catalog {
            state: RwLock::new(snapshot),
            store,
            next_id: AtomicU64::new(next_id),
        })
    }

    /// The state's version: it changes with every change of the catalog.
    pub fn version(&self) -> u64 {
        self.state.read().version
    }

    /// Apply `change` to a copy of the state, persist it, then publish it.
    pub fn update<T>(&self, change: impl FnOnce(&mut CatalogSnapshot) -> Result<T>) -> Result<T> {
        let mut state = self.state.write();
        let mut next = state.clone();
        let out = change(&mut next)?;
        next.version += 1;
        next.next_collection_id = self.next_id.load(Ordering::SeqCst);
        self.store.persist(&next)?;
        *state = next;
        Ok(out)
    }

    /// Every collection of every database.
    pub fn all_collections(&self) -> Vec<Arc<CollectionDef>> {
        self.state
            .read()
            .databases
            .values()
            .flat_map(|d| d.collections.values().cloned())
            .collect()
    }

    pub fn database_names(&self) -> Vec<String> {
        self.state.read().databases.keys().cloned().collect()
    }

    /// Every database's id, name and owner, by name.
    pub fn databases(&self) -> Vec<(u64, String, Option<String>)> {
        self.state
            .read()
            .databases
            .values()
            .map(|d| (d.id, d.name.clone(), d.owner.clone()))
            .collect()
    }

    pub fn database_exists(&self, name: &str) -> bool {
        self.state.read().databases.contains_key(name)
    }

    /// Read the users, roles and grants.
    pub fn security<T>(&self, read: impl FnOnce(&SecurityState) -> T) -> T {
        read(&self.state.read().security)
    }

    /// Change the users, roles and grants (persisted like any change).
    pub fn update_security<T>(
        &self,
        change: impl FnOnce(&mut SecurityState) -> Result<T, AccessError>,
    ) -> Result<T> {
        self.update(|s| Ok(change(&mut s.security)?))
    }

    /// Drop a user; what it owned is left to admins.
    pub fn drop_user(&self, name: &str) -> Result<()> {
        self.update(|s| {
            s.security.drop_user(name)?;
            let mine = Some(name.to_string());
            for db in s.databases.values_mut() {
                if db.owner == mine {
                    db.owner = None;
                }
                for def in db.collections.values_mut() {
                    if def.owner == mine {
                        Arc::make_mut(def).owner = None;
                    }
                }
            }
            Ok(())
        })
    }

    /// The owner of a database, if it has one.
    pub fn database_owner(&self, name: &str) -> Option<String> {
        self.state
            .read()
            .databases
            .get(name)
            .and_then(|d| d.owner.clone())
    }

    pub fn create_database(&self, name: &str, if_not_exists: bool) -> Result<bool> {
        self.create_database_owned(name, if_not_exists, None)
    }

    /// Create a database owned by `owner`.
    pub fn create_database_owned(
        &self,
        name: &str,
        if_not_exists: bool,
        owner: Option<&str>,
    ) -> Result<bool> {
        self.update(|s| {
            if s.databases.contains_key(name) {
                return if if_not_exists {
                    Ok(false)
                } else {
                    Err(CatalogError::DatabaseExists { name: name.into() })
                };
            }
            validate_name("database", name)?;
            s.databases.insert(
                name.to_string(),
                DatabaseDef {
                    id: self.next_id.fetch_add(1, Ordering::SeqCst),
                    name: name.to_string(),
                    owner: owner.map(str::to_string),
                    collections: BTreeMap::new(),
                    aliases: BTreeMap::new(),
                },
            );
            Ok(true)
        })
    }

    pub fn drop_database(&self, name: &str, if_exists: bool) -> Result<bool> {
        if name == DEFAULT_DATABASE {
            return Err(CatalogError::DropDefaultDatabase);
        }
        self.update(|s| match s.databases.get(name) {
            None if if_exists => Ok(false),
            None => Err(CatalogError::DatabaseNotFound { name: name.into() }),
            Some(db) if !db.collections.is_empty() => {
                Err(CatalogError::DatabaseNotEmpty { name: name.into() })
            }
            Some(_) => {
                s.databases.remove(name);
                // A database created later under this name starts afresh.
                s.security
                    .forget_scope(|scope| scope.database() == Some(name));
                Ok(true)
            }
        })
    }

    /// Names of the collections in `database`, sorted.
    pub fn collection_names(&self, database: &str) -> Vec<String> {
        self.state
            .read()
            .databases
            .get(database)
            .map(|d| d.collections.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The collection `name` names in `database`: its own name or an alias.
    pub fn collection(&self, database: &str, name: &str) -> Option<Arc<CollectionDef>> {
        self.state
            .read()
            .databases
            .get(database)
            .and_then(|d| d.resolve(name).cloned())
    }

    /// Whether `name` is an alias in `database`.
    pub fn is_alias(&self, database: &str, name: &str) -> bool {
        self.state
            .read()
            .databases
            .get(database)
            .is_some_and(|d| d.aliases.contains_key(name))
    }

    /// Every alias of `database` with the name of its collection, by alias.
    pub fn aliases(&self, database: &str) -> Vec<(String, String)> {
        let state = self.state.read();
        let Some(db) = state.databases.get(database) else {
            return Vec::new();
        };
        db.aliases
            .iter()
            .filter_map(|(alias, id)| {
                db.collection_by_id(*id)
                    .map(|c| (alias.clone(), c.name.clone()))
            })
            .collect()
    }

    /// `CREATE ALIAS alias FOR collection`.
    pub fn create_alias(&self, database: &str, alias: &str, collection: &str) -> Result<()> {
        self.update(|s| {
            let db = s.database_mut(database)?;
            let id = db.alias_target(collection)?;
            if db.name_taken(alias) {
                return Err(CatalogError::CollectionExists { name: alias.into() });
            }
            validate_name("alias", alias)?;
            db.aliases.insert(alias.to_string(), id);
            Ok(())
        })
    }

    /// `ALTER ALIAS alias FOR collection`: one catalog change, so that every
    /// statement sees the old collection or the new one.
    pub fn alter_alias(&self, database: &str, alias: &str, collection: &str) -> Result<()> {
        self.update(|s| {
            let db = s.database_mut(database)?;
            let id = db.alias_target(collection)?;
            match db.aliases.get_mut(alias) {
                Some(target) => {
                    *target = id;
                    Ok(())
                }
                None if db.collections.contains_key(alias) => Err(CatalogError::WrongObjectType(
                    format!("\"{alias}\" is a collection, not an alias"),
                )),
                None => Err(CatalogError::AliasNotFound { name: alias.into() }),
            }
        })
    }

    /// `DROP ALIAS [IF EXISTS] alias`; returns whether it existed.
    pub fn drop_alias(&self, database: &str, alias: &str, if_exists: bool) -> Result<bool> {
        self.update(|s| {
            let db = s.database_mut(database)?;
            if db.aliases.remove(alias).is_some() {
                return Ok(true);
            }
            if db.collections.contains_key(alias) {
                return Err(CatalogError::WrongObjectType(format!(
                    "\"{alias}\" is a collection, not an alias: DROP COLLECTION drops it"
                )));
            }
            if if_exists {
                Ok(false)
            } else {
                Err(CatalogError::AliasNotFound { name: alias.into() })
            }
        })
    }

    /// `ALTER COLUMN column SET DEFAULT text | DROP DEFAULT` (`None`) of
    /// collection `name` (by its own name); returns the collection as it is
    /// now. Rows written before keep their values.
    pub fn set_default(
        &self,
        database: &str,
        name: &str,
        column: &str,
        default: Option<String>,
    ) -> Result<Arc<CollectionDef>> {
        self.update(|s| {
            let db = s.database_mut(database)?;
            let def = db
                .collections
                .get_mut(name)
                .ok_or_else(|| CatalogError::CollectionNotFound { name: name.into() })?;
            let Some(field) = Arc::make_mut(def)
                .fields
                .iter_mut()
                .find(|f| f.name == column)
            else {
                return Err(CatalogError::ColumnNotFound {
                    column: column.into(),
                    collection: name.into(),
                });
            };
            if field.auto_increment && default.is_some() {
                return Err(CatalogError::InvalidDefinition(format!(
                    "column \"{column}\" is numbered by the server (auto_id): it takes no default"
                )));
            }
            field.default = default;
            Ok(def.clone())
        })
    }

    /// `ALTER COLLECTION name RENAME TO new_name`: the collection keeps its
    /// id (its files, indexes and aliases stay), and grants on it follow.
    pub fn rename_collection(
        &self,
        database: &str,
        name: &str,
        new_name: &str,
    ) -> Result<Arc<CollectionDef>> {
        self.update(|s| {
            let db = s.database_mut(database)?;
            if db.aliases.contains_key(name) {
                return Err(CatalogError::WrongObjectType(format!(
                    "\"{name}\" is an alias: rename the collection it names, or ALTER ALIAS"
                )));
            }
            if !db.collections.contains_key(name) {
                return Err(CatalogError::CollectionNotFound { name: name.into() });
            }
            if db.name_taken(new_name) {
                return Err(CatalogError::CollectionExists {
                    name: new_name.into(),
                });
            }
            validate_name("collection", new_name)?;
            let Some(mut def) = db.collections.remove(name) else {
                return Err(CatalogError::CollectionNotFound { name: name.into() });
            };
            Arc::make_mut(&mut def).name = new_name.to_string();
            db.collections.insert(new_name.to_string(), def.clone());
            s.security.rename_scope(
                &Scope::Collection {
                    database: database.into(),
                    name: name.into(),
                },
                Scope::Collection {
                    database: database.into(),
                    name: new_name.into(),
                },
            );
            Ok(def)
        })
    }

    pub fn get_collection(&self, database: &str, name: &str) -> Result<Arc<CollectionDef>> {
        self.collection(database, name)
            .ok_or_else(|| CatalogError::CollectionNotFound { name: name.into() })
    }

    /// Register a new collection; assigns its id. Returns `None` when it
    /// already exists and `if_not_exists` is set.
    pub fn create_collection(
        &self,
        mut def: CollectionDef,
        if_not_exists: bool,
    ) -> Result<Option<Arc<CollectionDef>>> {
        def.validate()?;
        self.update(|s| {
            let db = s.databases.get_mut(&def.database).ok_or_else(|| {
                CatalogError::DatabaseNotFound {
                    name: def.database.clone(),
                }
            })?;
            if db.collections.contains_key(&def.name) || db.aliases.contains_key(&def.name) {
                return if if_not_exists {
                    Ok(None)
                } else {
                    Err(CatalogError::CollectionExists {
                        name: def.name.clone(),
                    })
                };
            }
            def.id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let def = Arc::new(def);
            db.collections.insert(def.name.clone(), def.clone());
            Ok(Some(def))
        })
    }

    /// The collection holding index `name` in `database`, and the index.
    pub fn find_index(&self, database: &str, name: &str) -> Option<(Arc<CollectionDef>, IndexDef)> {
        let state = self.state.read();
        state.databases.get(database).and_then(|db| {
            db.collections.values().find_map(|c| {
                c.indexes
                    .iter()
                    .find(|i| i.name == name)
                    .map(|i| (c.clone(), i.clone()))
            })
        })
    }

    /// Add an index to a collection; `None` if it exists and
    /// `if_not_exists`. Returns the updated collection.
    pub fn create_index(
        &self,
        database: &str,
        collection: &str,
        index: IndexDef,
        if_not_exists: bool,
    ) -> Result<Option<Arc<CollectionDef>>> {
        let mut index = index;
        self.update(|s| {
            let db =
                s.databases
                    .get_mut(database)
                    .ok_or_else(|| CatalogError::DatabaseNotFound {
                        name: database.into(),
                    })?;
            let taken = db.collections.contains_key(&index.name)
                || db.aliases.contains_key(&index.name)
                || db
                    .collections
                    .values()
                    .any(|c| c.indexes.iter().any(|i| i.name == index.name));
            if taken {
                return if if_not_exists {
                    Ok(None)
                } else {
                    Err(CatalogError::IndexExists { name: index.name })
                };
            }
            let def = db.collections.get_mut(collection).ok_or_else(|| {
                CatalogError::CollectionNotFound {
                    name: collection.into(),
                }
            })?;
            validate_name("index", &index.name)?;
            index.id = self.next_id.fetch_add(1, Ordering::SeqCst);
            Arc::make_mut(def).indexes.push(index);
            Ok(Some(def.clone()))
        })
    }

    /// Remove index `name`; returns the updated collection and the index.
    pub fn drop_index(
        &self,
        database: &str,
        name: &str,
    ) -> Result<Option<(Arc<CollectionDef>, IndexDef)>> {
        self.update(|s| {
            let Some(db) = s.databases.get_mut(database) else {
                return Ok(None);
            };
            for def in db.collections.values_mut() {
                if let Some(pos) = def.indexes.iter().position(|i| i.name == name) {
                    let removed = Arc::make_mut(def).indexes.remove(pos);
                    return Ok(Some((def.clone(), removed)));
                }
            }
            Ok(None)
        })
    }

    /// Whether DROP COLLECTION `name` may go ahead: not an alias, and no
    /// alias names it (a missing name is the drop's own business).
    pub fn check_droppable(&self, database: &str, name: &str) -> Result<()> {
        match self.state.read().databases.get(database) {
            Some(db) => check_droppable_in(db, name),
            None => Ok(()),
        }
    }

    /// The name now of the collection with id `id` in `database`.
    pub fn name_of(&self, database: &str, id: u64) -> Option<String> {
        self.state
            .read()
            .databases
            .get(database)
            .and_then(|d| d.collection_by_id(id).map(|c| c.name.clone()))
    }

    /// Undo a block's CREATE: remove the collection with id `id` whatever
    /// its name is now, with any alias another session gave it meanwhile
    /// (the block's DDL is seen at once; its rollback takes all of it).
    pub fn drop_created(&self, database: &str, id: u64) -> Result<Option<Arc<CollectionDef>>> {
        self.update(|s| {
            let Some(db) = s.databases.get_mut(database) else {
                return Ok(None);
            };
            let Some(name) = db.collection_by_id(id).map(|c| c.name.clone()) else {
                return Ok(None);
            };
            db.aliases.retain(|_, target| *target != id);
            let removed = db.collections.remove(&name);
            s.security.forget_scope(|scope| {
                matches!(scope, Scope::Collection { database: d, name: n } if d == database && *n == name)
            });
            Ok(removed)
        })
    }

    /// Remove a collection; returns its definition if it existed.
    pub fn drop_collection(
        &self,
        database: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<Option<Arc<CollectionDef>>> {
        self.update(|s| {
            if let Some(db) = s.databases.get(database) {
                check_droppable_in(db, name)?;
            }
            let removed = s
                .databases
                .get_mut(database)
                .and_then(|db| db.collections.remove(name));
            match removed {
                Some(def) => {
                    s.security.forget_scope(|scope| {
                        matches!(scope, Scope::Collection { database: d, name: n } if d == database && n == name)
                    });
                    Ok(Some(def))
                }
                None if if_exists => Ok(None),
                None => Err(CatalogError::CollectionNotFound { name: name.into() }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_common::sqlstate;

    /// Every variant, with the code it must give.
    #[test]
    fn every_error_variant_has_its_sqlstate() {
        let name = || "n".to_string();
        let cases = [
            (
                CatalogError::CollectionNotFound { name: name() },
                sqlstate::UNDEFINED_TABLE,
            ),
            (
                CatalogError::CollectionExists { name: name() },
                sqlstate::DUPLICATE_TABLE,
            ),
            (
                CatalogError::DatabaseNotFound { name: name() },
                sqlstate::INVALID_CATALOG_NAME,
            ),
            (
                CatalogError::DatabaseExists { name: name() },
                sqlstate::DUPLICATE_DATABASE,
            ),
            (
                CatalogError::DatabaseNotEmpty { name: name() },
                sqlstate::OBJECT_IN_USE,
            ),
            (
                CatalogError::DropCurrentDatabase { name: name() },
                sqlstate::OBJECT_IN_USE,
            ),
            (CatalogError::DropDefaultDatabase, sqlstate::OBJECT_IN_USE),
            (
                CatalogError::InvalidDefinition(name()),
                sqlstate::INVALID_TABLE_DEFINITION,
            ),
            (
                CatalogError::UnsupportedType {
                    name: name(),
                    hint: String::new(),
                },
                sqlstate::UNDEFINED_OBJECT,
            ),
            (
                CatalogError::UnsupportedType {
                    name: name(),
                    hint: ": use text".into(),
                },
                sqlstate::FEATURE_NOT_SUPPORTED,
            ),
            (CatalogError::Store(name()), sqlstate::IO_ERROR),
            (
                CatalogError::Access(AccessError::Denied(name())),
                sqlstate::INSUFFICIENT_PRIVILEGE,
            ),
            (
                CatalogError::IndexNotFound { name: name() },
                sqlstate::UNDEFINED_OBJECT,
            ),
            (
                CatalogError::IndexExists { name: name() },
                sqlstate::DUPLICATE_TABLE,
            ),
            (
                CatalogError::AliasNotFound { name: name() },
                sqlstate::UNDEFINED_OBJECT,
            ),
            (
                CatalogError::ColumnNotFound {
                    column: name(),
                    collection: name(),
                },
                sqlstate::UNDEFINED_COLUMN,
            ),
            (
                CatalogError::WrongObjectType(name()),
                sqlstate::WRONG_OBJECT_TYPE,
            ),
            (
                CatalogError::AliasesDependOn {
                    name: name(),
                    aliases: name(),
                },
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
            ),
            (
                validate_name("collection", &"x".repeat(64)).unwrap_err(),
                sqlstate::NAME_TOO_LONG,
            ),
            (
                validate_name("database", "a\tb").unwrap_err(),
                sqlstate::INVALID_NAME,
            ),
            (
                validate_name("index", "").unwrap_err(),
                sqlstate::INVALID_NAME,
            ),
        ];
        assert!(validate_name("column", &"é".repeat(31)).is_ok());
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code, "{e:?}");
        }
    }

    fn def(name: &str) -> CollectionDef {
        CollectionDef {
            id: 0,
            database: DEFAULT_DATABASE.into(),
            name: name.into(),
            fields: vec![FieldDef::new("v", FieldType::Vector { dim: 3 })],
            primary_key: None,
            owner: None,
            indexes: vec![],
        }
    }

    #[test]
    fn aliases_follow_renames_and_keep_their_collections() {
        use quiver_auth::acl::{Grant, Privilege};
        let c = Catalog::open(Arc::new(MemoryMetaStore)).unwrap();
        let db = DEFAULT_DATABASE;
        let a = c.create_collection(def("a"), false).unwrap().unwrap();
        c.create_collection(def("b"), false).unwrap();
        c.create_alias(db, "prod", "a").unwrap();
        assert_eq!(c.collection(db, "prod").unwrap().id, a.id);
        assert!(c.is_alias(db, "prod") && !c.is_alias(db, "a"));
        // One namespace; no alias of an alias; no drop under an alias.
        assert!(matches!(
            c.create_alias(db, "b", "a"),
            Err(CatalogError::CollectionExists { .. })
        ));
        assert!(matches!(
            c.create_collection(def("prod"), false),
            Err(CatalogError::CollectionExists { .. })
        ));
        assert!(matches!(
            c.create_alias(db, "p2", "prod"),
            Err(CatalogError::WrongObjectType(_))
        ));
        assert!(matches!(
            c.drop_collection(db, "prod", false),
            Err(CatalogError::WrongObjectType(_))
        ));
        assert!(matches!(
            c.drop_collection(db, "a", false),
            Err(CatalogError::AliasesDependOn { .. })
        ));
        // A rename keeps the alias (by id) and moves the grants.
        c.update_security(|s| {
            s.grants.insert(Grant {
                grantee: "u".into(),
                privilege: Privilege::Select,
                scope: Scope::Collection {
                    database: db.into(),
                    name: "a".into(),
                },
                grant_option: false,
                grantor: "quiver".into(),
            });
            Ok(())
        })
        .unwrap();
        let renamed = c.rename_collection(db, "a", "a2").unwrap();
        assert_eq!((renamed.id, renamed.name.as_str()), (a.id, "a2"));
        assert!(c.collection(db, "a").is_none());
        assert_eq!(c.aliases(db), vec![("prod".to_string(), "a2".to_string())]);
        let scopes: Vec<Scope> = c.security(|s| s.grants.iter().map(|g| g.scope.clone()).collect());
        assert_eq!(
            scopes,
            vec![Scope::Collection {
                database: db.into(),
                name: "a2".into()
            }]
        );
        assert!(matches!(
            c.rename_collection(db, "a2", "b"),
            Err(CatalogError::CollectionExists { .. })
        ));
        // The switch, then the alias goes and the collection can.
        c.alter_alias(db, "prod", "b").unwrap();
        assert_eq!(c.collection(db, "prod").unwrap().name, "b");
        assert!(matches!(
            c.alter_alias(db, "nope", "b"),
            Err(CatalogError::AliasNotFound { .. })
        ));
        assert!(c.drop_alias(db, "prod", false).unwrap());
        assert!(!c.drop_alias(db, "prod", true).unwrap());
        c.drop_collection(db, "b", false).unwrap();
        // Catalogs written before aliases existed still load.
        let old: DatabaseDef =
            serde_json::from_str(r#"{"id":1,"name":"x","collections":{}}"#).unwrap();
        assert!(old.aliases.is_empty());
    }

    #[test]
    fn undoing_a_create_takes_its_aliases_and_follows_a_rename() {
        let c = Catalog::open(Arc::new(MemoryMetaStore)).unwrap();
        let db = DEFAULT_DATABASE;
        let a = c.create_collection(def("a"), false).unwrap().unwrap();
        c.create_alias(db, "p", "a").unwrap();
        c.rename_collection(db, "a", "b").unwrap();
        let gone = c.drop_created(db, a.id).unwrap().unwrap();
        assert_eq!(gone.name, "b");
        assert!(c.collection(db, "b").is_none() && c.collection(db, "p").is_none());
        assert!(c.aliases(db).is_empty());
        assert!(c.drop_created(db, a.id).unwrap().is_none());
    }

    #[test]
    fn create_and_drop() {
        let c = Catalog::open(Arc::new(MemoryMetaStore)).unwrap();
        let a = c.create_collection(def("a"), false).unwrap().unwrap();
        assert!(a.id > 0);
        assert!(c.create_collection(def("a"), true).unwrap().is_none());
        assert!(matches!(
            c.create_collection(def("a"), false),
            Err(CatalogError::CollectionExists { .. })
        ));
        assert_eq!(c.collection_names(DEFAULT_DATABASE), vec!["a".to_string()]);
        c.drop_collection(DEFAULT_DATABASE, "a", false).unwrap();
        assert!(c.collection(DEFAULT_DATABASE, "a").is_none());
        assert!(
            c.drop_collection(DEFAULT_DATABASE, "a", true)
                .unwrap()
                .is_none()
        );
    }
}
