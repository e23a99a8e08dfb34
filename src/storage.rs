//! Collection data. For now every collection has one in-memory growing
//! segment (Arrow record batches); the WAL, flush to Parquet and compaction
//! plug in behind the same [`Storage`] interface.
//!
//! Data is NOT durable yet: it lives as long as the server process.

pub mod segment;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use thiserror::Error;

use crate::catalog::CollectionDef;
pub use segment::{Chunk, CollectionData, Snapshot};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error(
        "duplicate key value violates unique constraint \"{collection}_pkey\": Key ({field})=({value}) already exists"
    )]
    DuplicateKey {
        collection: String,
        field: String,
        value: String,
    },
    #[error(
        "null value in column \"{field}\" of collection \"{collection}\" violates not-null constraint"
    )]
    NotNull { collection: String, field: String },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// All collections' data, keyed by collection id.
#[derive(Debug, Default)]
pub struct Storage {
    collections: RwLock<HashMap<u64, Arc<CollectionData>>>,
}

impl Storage {
    pub fn new() -> Storage {
        Storage::default()
    }

    /// The data of a collection, created empty the first time it is asked for.
    pub fn open_collection(&self, def: &CollectionDef) -> Arc<CollectionData> {
        if let Some(data) = self.collections.read().get(&def.id) {
            return data.clone();
        }
        self.collections
            .write()
            .entry(def.id)
            .or_insert_with(|| Arc::new(CollectionData::new(def)))
            .clone()
    }

    pub fn drop_collection(&self, id: u64) {
        self.collections.write().remove(&id);
    }
}
