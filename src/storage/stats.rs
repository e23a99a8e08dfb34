//! Counters of the storage layer for `/metrics`: bytes written to the WAL,
//! its fsyncs, and rows written. One set per process.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub wal_bytes: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub rows_written: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub static STATS: Stats = Stats {
    wal_bytes: AtomicU64::new(0),
    wal_fsyncs: AtomicU64::new(0),
    rows_written: AtomicU64::new(0),
};
