//! The catalog manifest: databases, collections, schemas and each
//! collection's flushed segments, as one JSON object per version under
//! `catalog/manifest-<version>.json`. A new version is written under a new
//! name (create-only), so a reader sees either the old or the new state;
//! older versions are removed after the new one is durable.
//!
//! Recovery = the newest manifest that parses, then the WAL of each
//! collection from the manifest's checkpoint on.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::objects::ObjectIo;
use super::segment::SegmentMeta;
use super::{Result, StorageError};
use quiver_catalog::CatalogSnapshot;

const DIR: &str = "catalog";
/// Versions kept besides the current one (for inspection after a failure).
const KEEP: u64 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CollectionManifest {
    /// Every WAL record with a timestamp at or below this is in the segments.
    pub checkpoint_ts: u64,
    pub next_rowid: u64,
    pub next_auto: i64,
    pub segments: Vec<SegmentMeta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub catalog: CatalogSnapshot,
    pub next_segment_id: u64,
    /// By collection id.
    pub collections: BTreeMap<u64, CollectionManifest>,
}

fn name(version: u64) -> String {
    format!("{DIR}/manifest-{version:020}.json")
}

/// Reads and writes manifest versions; one writer at a time.
#[derive(Debug)]
pub struct ManifestStore {
    io: Arc<ObjectIo>,
    current: tokio::sync::Mutex<Manifest>,
}

impl ManifestStore {
    /// Load the newest readable manifest (or start empty).
    pub async fn open(io: Arc<ObjectIo>) -> Result<(ManifestStore, Manifest)> {
        let mut names = io.list(DIR).await?;
        names.sort();
        let mut found: Option<Manifest> = None;
        for n in names.iter().rev() {
            if !n.ends_with(".json") {
                continue;
            }
            match io.get(n).await {
                Ok(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
                    Ok(m) => {
                        info!(manifest = %n, version = m.version, "catalog loaded");
                        found = Some(m);
                        break;
                    }
                    Err(e) => warn!(manifest = %n, "unreadable manifest skipped: {e}"),
                },
                Err(e) => warn!(manifest = %n, "unreadable manifest skipped: {e}"),
            }
        }
        let m = found.unwrap_or_default();
        Ok((
            ManifestStore {
                io,
                current: tokio::sync::Mutex::new(m.clone()),
            },
            m,
        ))
    }

    /// Apply `change` to the current manifest and write it as a new version.
    /// Returns what `change` returned, once the new version is durable.
    pub async fn commit<T>(&self, change: impl FnOnce(&mut Manifest) -> T) -> Result<T> {
        let mut current = self.current.lock().await;
        let mut next = current.clone();
        let out = change(&mut next);
        next.version = current.version + 1;
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| StorageError::Corrupt(format!("manifest: {e}")))?;
        self.io.put(&name(next.version), bytes, true).await?;
        let old = current.version;
        *current = next;
        drop(current);
        if old > KEEP {
            self.io.delete(&name(old - KEEP)).await;
        }
        Ok(out)
    }

    pub async fn snapshot(&self) -> Manifest {
        self.current.lock().await.clone()
    }
}
