//! The session's transaction as its statements' plans reach it: through
//! the [`TxSlot`] extension of the session config. Outside a transaction
//! reads take the collection's committed snapshot and writes commit at
//! once; inside one, reads take the transaction's view and writes go to
//! its overlay (`storage/txn.rs`).

use std::sync::Arc;

use datafusion::execution::config::SessionConfig;
use quiver_common::interrupt::Interrupt;
use quiver_storage::{CollectionData, Mutation, Snapshot, Transaction, TxSlot};

/// The transaction the session of `config` is in.
pub fn current(config: &SessionConfig) -> Option<Arc<Transaction>> {
    config.get_extension::<TxSlot>().and_then(|s| s.get())
}

/// What a statement reads of `data`.
pub fn snapshot(data: &CollectionData, tx: Option<&Transaction>) -> Arc<Snapshot> {
    match tx {
        Some(tx) => tx.view(data),
        None => data.snapshot(),
    }
}

/// Apply one statement's change: to the transaction's overlay, or
/// committed at once. Returns the rows changed and, with `returning`,
/// those written or deleted.
/// `stop` (the session's) ends a wait for the collection's lock.
pub async fn mutate(
    data: &Arc<CollectionData>,
    tx: Option<&Transaction>,
    mutation: Mutation,
    returning: bool,
    stop: Option<&Interrupt>,
) -> quiver_storage::Result<(usize, Option<arrow::array::RecordBatch>)> {
    match tx {
        Some(tx) => {
            let (n, rows) = tx.mutate(data, mutation, returning).await?;
            Ok((n, returning.then_some(rows)))
        }
        None => {
            let (n, rows) = data.mutate_stoppable(mutation, returning, stop).await?;
            let empty = || arrow::array::RecordBatch::new_empty(data.schema());
            Ok((n, returning.then(|| rows.unwrap_or_else(empty))))
        }
    }
}
