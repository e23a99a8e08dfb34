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
    memory: planner::memory::QueryMemory,
) -> Result<Arc<planner::Engine>, planner::QueryError> {
    let storage = storage::Storage::open(config).await?;
    let catalog = Arc::new(catalog::Catalog::open(storage.meta_store())?);
    storage.recover(catalog.all_collections()).await?;
    Ok(Arc::new(planner::Engine::new(catalog, storage, memory)?))
}

/// Make the data directory private to the server's user, as PostgreSQL
/// keeps its own: new files 0600 and folders 0700 (the process's umask),
/// the directory itself 0700, and what an earlier version left readable
/// (manifests holding the SCRAM verifiers, data files) tightened the same
/// way.
#[cfg(unix)]
pub fn make_data_dir_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    std::fs::create_dir_all(dir)?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        let wanted = if meta.is_dir() {
            mode & 0o700
        } else {
            mode & 0o600
        };
        if mode != wanted {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Allocations of 4 MiB and more get pages of their own, returned to the
/// system when freed. glibc otherwise raises that threshold to the largest
/// block freed so far, and a COPY's or a scan's batches then pile up in its
/// arenas: a 1.4 GB bulk COPY peaked 290 MB above the starting RSS with
/// glibc's default, and 100 MB with this.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a glibc setting, before any thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Hand memory that freed allocations left in the allocator's arenas back
/// to the system, every `every`: after a large statement (a 22 MB VALUES
/// list, a big sort) glibc keeps the freed pages, and the server's RSS
/// would stay at its peak.
pub fn return_freed_memory(every: std::time::Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            // SAFETY: malloc_trim only returns free pages of the heap.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = every;
}
