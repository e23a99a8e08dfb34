//! Where objects go: every path is made of ids, never of names, so no
//! database, collection or index name a user picks can reach a path.
//!
//! ```text
//! catalog/manifest-<version>.json
//! collections/<collection_id>/segments/<segment_id>/data-0.parquet
//! collections/<collection_id>/segments/<segment_id>/deltas/<ts>.parquet
//! collections/<collection_id>/segments/<segment_id>/index/<index_id>.faiss
//! ```
//!
//! Data directories written before this layout kept collections under
//! `<database>/<collection>/`, where two names could share a folder.
//! [`migrate`] moves such files to their id paths on the first start.

use std::collections::HashMap;

use tracing::info;

use super::manifest::{Manifest, ManifestStore};
use super::objects::ObjectIo;
use super::{Result, StorageError};

pub(crate) fn collection_prefix(collection: u64) -> String {
    format!("collections/{collection}")
}

pub(crate) fn segment_dir(collection: u64, segment: u64) -> String {
    format!("{}/segments/{segment}", collection_prefix(collection))
}

pub(crate) fn data_path(segment_dir: &str) -> String {
    format!("{segment_dir}/data-0.parquet")
}

pub(crate) fn index_path(segment_dir: &str, index: u64) -> String {
    format!("{segment_dir}/index/{index}.faiss")
}

/// Move the files of every collection stored by name to its id paths,
/// and give ids to the databases and indexes of an older catalog. The
/// new manifest names only the new paths; the old files are removed one
/// by one after it is durable (never a whole folder, which another
/// collection of the old layout may share). Returns the manifest in force.
pub(crate) async fn migrate(
    io: &ObjectIo,
    store: &ManifestStore,
    current: Manifest,
) -> Result<Manifest> {
    let mut next = current.clone();
    let ids_assigned = next.catalog.assign_missing_ids();
    // Index ids by (collection, index name), from the catalog.
    let index_ids: HashMap<(u64, String), u64> = next
        .catalog
        .databases
        .values()
        .flat_map(|d| d.collections.values())
        .flat_map(|c| c.indexes.iter().map(|i| ((c.id, i.name.clone()), i.id)))
        .collect();
    let mut moved: Vec<String> = Vec::new();
    for (&collection, entry) in next.collections.iter_mut() {
        for meta in entry.segments.iter_mut() {
            let dir = segment_dir(collection, meta.id);
            if meta.data_file.starts_with(&format!("{dir}/")) {
                continue;
            }
            let to = data_path(&dir);
            copy(io, &meta.data_file, &to).await?;
            moved.push(std::mem::replace(&mut meta.data_file, to));
            if let Some(delta) = meta.delta_file.as_mut() {
                let file = delta.rsplit('/').next().unwrap_or("delta.parquet");
                let to = format!("{dir}/deltas/{file}");
                copy(io, delta, &to).await?;
                moved.push(std::mem::replace(delta, to));
            }
            // An index file whose index is gone is left out: nothing
            // would load it.
            let mut indexes = std::collections::BTreeMap::new();
            for (name, mut file) in std::mem::take(&mut meta.indexes) {
                let Some(&id) = index_ids.get(&(collection, name.clone())) else {
                    moved.push(file.path);
                    continue;
                };
                let to = index_path(&dir, id);
                copy(io, &file.path, &to).await?;
                moved.push(std::mem::replace(&mut file.path, to));
                indexes.insert(name, file);
            }
            meta.indexes = indexes;
        }
    }
    if moved.is_empty() && !ids_assigned {
        return Ok(current);
    }
    info!(
        files = moved.len(),
        "migrating the data directory to id paths"
    );
    let migrated = next.clone();
    store
        .commit(move |m| {
            m.catalog = next.catalog;
            m.collections = next.collections;
        })
        .await?;
    for old in &moved {
        io.delete(old).await;
    }
    info!(files = moved.len(), "data directory migrated");
    Ok(Manifest {
        version: current.version + 1,
        ..migrated
    })
}

async fn copy(io: &ObjectIo, from: &str, to: &str) -> Result<()> {
    let bytes = io.get(from).await.map_err(|e| {
        StorageError::Corrupt(format!(
            "cannot migrate {from} to {to}: {e}; the data directory names a file that is gone"
        ))
    })?;
    io.put(to, bytes.to_vec(), false).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use quiver_catalog::{
        CatalogSnapshot, CollectionDef, DatabaseDef, FieldDef, FieldType, IndexDef,
    };
    use quiver_vector::Metric;
    use quiver_vector::index::IndexSpec;

    use super::*;
    use crate::manifest::CollectionManifest;
    use crate::objects::S3Config;
    use crate::segment::{IndexFile, SegmentMeta, SegmentState};

    fn segment(id: u64, data: &str, delta: Option<&str>) -> SegmentMeta {
        SegmentMeta {
            id,
            state: SegmentState::Flushed,
            rows: 1,
            bytes: 4,
            data_file: data.into(),
            delta_file: delta.map(str::to_string),
            deleted: 0,
            rowid_min: 0,
            rowid_max: 0,
            pk_min: None,
            pk_max: None,
            max_ts: 1,
            indexes: BTreeMap::new(),
        }
    }

    fn collection(id: u64, name: &str, indexes: Vec<IndexDef>) -> Arc<CollectionDef> {
        Arc::new(CollectionDef {
            id,
            database: "default".into(),
            name: name.into(),
            fields: vec![FieldDef::new("v", FieldType::Vector { dim: 2 })],
            primary_key: None,
            owner: None,
            indexes,
        })
    }

    /// A data directory of the old layout, where `t` and
    /// `"t/segments/9999"` shared a folder: each collection's files move
    /// to its own id paths, the index file to its index's id, the
    /// databases and indexes get ids, and nothing of the other is touched.
    #[tokio::test]
    async fn old_layout_moves_to_id_paths() {
        let dir = tempfile::tempdir().unwrap();
        let io =
            Arc::new(ObjectIo::open(dir.path().to_str().unwrap(), &S3Config::default()).unwrap());
        let old = [
            ("default/t/segments/1/data-0.parquet", "t rows"),
            ("default/t/segments/1/deltas/77.parquet", "t deletes"),
            ("default/t/segments/1/index/t_v_idx.faiss", "t index"),
            ("default/t/segments/1/index/gone.faiss", "a dropped index"),
            (
                "default/t/segments/9999/segments/2/data-0.parquet",
                "other rows",
            ),
        ];
        for (path, body) in old {
            io.put(path, body.as_bytes().to_vec(), false).await.unwrap();
        }
        let spec = IndexSpec::parse("hnsw", Metric::L2, 2, &BTreeMap::new()).unwrap();
        let index = IndexDef {
            id: 0,
            name: "t_v_idx".into(),
            field: 0,
            spec,
        };
        let mut t = segment(1, old[0].0, Some(old[1].0));
        for (name, path) in [("t_v_idx", old[2].0), ("gone", old[3].0)] {
            t.indexes.insert(
                name.into(),
                IndexFile {
                    path: path.into(),
                    rows: 1,
                    bytes: 7,
                    build_ms: 1,
                },
            );
        }
        let mut catalog = CatalogSnapshot {
            next_collection_id: 8,
            ..Default::default()
        };
        catalog.databases.insert(
            "default".into(),
            DatabaseDef {
                id: 0,
                name: "default".into(),
                owner: None,
                collections: [
                    ("t".to_string(), collection(5, "t", vec![index])),
                    (
                        "t/segments/9999".to_string(),
                        collection(7, "t/segments/9999", vec![]),
                    ),
                ]
                .into(),
                aliases: Default::default(),
            },
        );
        let (store, _) = ManifestStore::open(io.clone()).await.unwrap();
        store
            .commit(|m| {
                m.catalog = catalog;
                for (id, seg) in [(5, t), (7, segment(2, old[4].0, None))] {
                    m.collections.insert(
                        id,
                        CollectionManifest {
                            segments: vec![seg],
                            ..Default::default()
                        },
                    );
                }
            })
            .await
            .unwrap();
        let (store, current) = ManifestStore::open(io.clone()).await.unwrap();
        let migrated = migrate(&io, &store, current).await.unwrap();

        // The manifest on disk is the migrated one.
        let (_, reread) = ManifestStore::open(io.clone()).await.unwrap();
        assert_eq!(reread.version, migrated.version);
        let db = &reread.catalog.databases["default"];
        assert_eq!(db.id, 8);
        assert_eq!(db.collections["t"].indexes[0].id, 9);
        assert_eq!(reread.catalog.next_collection_id, 10);
        let t = &reread.collections[&5].segments[0];
        assert_eq!(t.data_file, "collections/5/segments/1/data-0.parquet");
        assert_eq!(
            t.delta_file.as_deref(),
            Some("collections/5/segments/1/deltas/77.parquet")
        );
        assert_eq!(
            t.indexes.keys().collect::<Vec<_>>(),
            vec!["t_v_idx"],
            "the dropped index's file is left out"
        );
        assert_eq!(
            t.indexes["t_v_idx"].path,
            "collections/5/segments/1/index/9.faiss"
        );
        let other = &reread.collections[&7].segments[0];
        assert_eq!(other.data_file, "collections/7/segments/2/data-0.parquet");
        let read = async |p: &str| String::from_utf8(io.get(p).await.unwrap().to_vec()).unwrap();
        assert_eq!(read(&t.data_file).await, "t rows");
        assert_eq!(read(t.delta_file.as_ref().unwrap()).await, "t deletes");
        assert_eq!(read(&t.indexes["t_v_idx"].path).await, "t index");
        assert_eq!(read(&other.data_file).await, "other rows");
        for (path, _) in old {
            assert!(io.get(path).await.is_err(), "{path} is left");
        }

        // A second start finds nothing to do.
        let (store, current) = ManifestStore::open(io.clone()).await.unwrap();
        let version = current.version;
        let again = migrate(&io, &store, current).await.unwrap();
        assert_eq!(again.version, version);
    }

    /// A manifest that names a file that is gone is refused with a message
    /// that says so, instead of the server exiting on "not found".
    #[tokio::test]
    async fn a_missing_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let io =
            Arc::new(ObjectIo::open(dir.path().to_str().unwrap(), &S3Config::default()).unwrap());
        let (store, _) = ManifestStore::open(io.clone()).await.unwrap();
        store
            .commit(|m| {
                m.collections.insert(
                    3,
                    CollectionManifest {
                        segments: vec![segment(1, "default/x/segments/1/data-0.parquet", None)],
                        ..Default::default()
                    },
                );
            })
            .await
            .unwrap();
        let (store, current) = ManifestStore::open(io.clone()).await.unwrap();
        let e = migrate(&io, &store, current).await.unwrap_err().to_string();
        assert!(e.contains("default/x/segments/1/data-0.parquet"), "{e}");
        assert!(e.contains("gone"), "{e}");
    }
}
