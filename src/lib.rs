//! quiver: a vector database spoken to in SQL over the PostgreSQL wire
//! protocol.
//!
//! Layers (see `ARCHITECTURE.md`): [`server`] speaks pgwire, [`sql`] parses,
//! [`planner`] plans and executes through DataFusion, [`exec`] holds the
//! execution plans (`AnnSearchExec`), [`catalog`] the metadata, [`storage`]
//! the data, [`vector`] the vector math, and [`auth`] the login policy.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod exec;
pub mod planner;
pub mod server;
pub mod sql;
pub mod storage;
pub mod vector;

/// The PostgreSQL version quiver reports to clients (they pick their
/// catalog queries by it).
pub const SERVER_VERSION: &str = "15.0";

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
