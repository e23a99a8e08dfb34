//! CREATE COLLECTION and CREATE INDEX inside a transaction block: they take
//! effect at once (the block's own statements need the collection), and a
//! ROLLBACK, a ROLLBACK TO a savepoint before them, a failed COMMIT or the
//! client leaving mid-block drops what they created.

use quiver_catalog::Catalog;
use quiver_storage::Storage;

/// What one CREATE inside a block made, to drop if the block does not commit.
#[derive(Debug, Clone)]
pub enum Undo {
    Collection { db: String, name: String, id: u64 },
    Index { db: String, name: String },
}

/// Drop what `undo` lists, newest first; failures are logged (what is left
/// is an ordinary object its owner can drop).
pub async fn undo(catalog: &Catalog, storage: &Storage, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        match u {
            // By id: renamed or aliased since, it goes all the same.
            Undo::Collection { db, name, id } => match catalog.drop_created(&db, id) {
                Ok(Some(def)) => storage.drop_collection(def.id),
                Ok(None) => {}
                Err(e) => tracing::warn!(%db, %name, "rolling back CREATE failed: {e}"),
            },
            Undo::Index { db, name } => match catalog.drop_index(&db, &name) {
                Ok(Some((updated, _))) => {
                    if let Ok(data) = storage.open_collection(&updated) {
                        data.set_indexes(updated.indexes.clone());
                        if let Err(e) = data.remove_index_files(&name).await {
                            tracing::warn!(%db, %name, "rolling back CREATE INDEX: {e}");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%db, %name, "rolling back CREATE INDEX failed: {e}"),
            },
        }
    }
}
