//! Execution plans over collections: the table provider with its scan,
//! insert and delete paths, and the `AnnSearchExec` top-k vector search.

pub mod ann_search;
pub mod copy;
pub mod dml;
pub mod table;

pub use ann_search::AnnSearchExec;
pub use table::CollectionTable;
