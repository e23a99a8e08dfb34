//! quiver: a vector database spoken to in SQL over the PostgreSQL wire
//! protocol.
//!
//! Each layer is a crate of the workspace (see `ARCHITECTURE.md`), and this
//! one puts them together for the `quiver` binary: [`server`] speaks pgwire,
//! [`sql`] parses, [`planner`] plans and executes through DataFusion,
//! [`exec`] holds the execution plans (`AnnSearchExec`), [`catalog`] the
//! metadata, [`storage`] the data, [`vector`] the vector math, [`auth`] the
//! login policy and privileges, and [`common`] the SQLSTATE table. This
//! crate adds the configuration ([`config`]) and opens the engine.

pub mod config;

pub use quiver_auth as auth;
pub use quiver_catalog as catalog;
pub use quiver_common as common;
pub use quiver_exec as exec;
pub use quiver_planner as planner;
pub use quiver_server as server;
pub use quiver_sql as sql;
pub use quiver_storage as storage;
pub use quiver_vector as vector;

pub use quiver_common::SERVER_VERSION;

/// The stack of every thread that runs statements: room for expressions
/// [`sql::depth::MAX_EXPRESSION_DEPTH`] levels deep, which DataFusion plans
/// and evaluates recursively (about 2 KB a level; the pages are only
/// touched by statements that nest that deep).
pub const STATEMENT_STACK_BYTES: usize = 64 << 20;

use std::sync::Arc;

/// Open the data directory (lock, manifest, WAL replay) and build the engine.
pub async fn open_engine(
    config: storage::StorageConfig,
) -> Result<Arc<planner::Engine>, planner::QueryError> {
    let storage = storage::Storage::open(config).await?;
    let catalog = Arc::new(catalog::Catalog::open(storage.meta_store())?);
    storage.recover(catalog.all_collections()).await?;
    Ok(Arc::new(planner::Engine::new(catalog, storage)?))
}
