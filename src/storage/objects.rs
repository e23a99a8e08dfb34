//! Object storage: where flushed segments, delete logs and the catalog
//! manifest live. A local directory by default, or any S3-compatible
//! service (`s3://bucket/prefix`, MinIO by setting the endpoint).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use datafusion::parquet::arrow::ArrowSchemaConverter;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tracing::warn;

use super::{Result, StorageError};

/// Rows per Parquet row group (also the unit of a scan's parallelism).
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Parquet leaf columns of `schema`'s lists of floats (vectors).
fn float_list_leaves(schema: &SchemaRef) -> Result<Vec<ColumnPath>> {
    use arrow::datatypes::DataType;
    let lists: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| match f.data_type() {
            DataType::FixedSizeList(item, _) | DataType::List(item) => {
                matches!(item.data_type(), DataType::Float32 | DataType::Float16)
            }
            _ => false,
        })
        .map(|f| f.name().as_str())
        .collect();
    if lists.is_empty() {
        return Ok(Vec::new());
    }
    let descr = ArrowSchemaConverter::new().convert(schema)?;
    Ok(descr
        .columns()
        .iter()
        .map(|c| c.path().clone())
        .filter(|p| {
            p.parts()
                .first()
                .is_some_and(|n| lists.contains(&n.as_str()))
        })
        .collect())
}

/// The URL under which the engine registers the store with DataFusion, so
/// that scans of flushed segments go through its Parquet reader.
pub const SCAN_URL: &str = "quiver://objects";

/// Settings of an S3-compatible store.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (MinIO on a private network, tests).
    pub allow_http: Option<bool>,
}

/// The object store and where quiver's objects are under it.
#[derive(Debug)]
pub struct ObjectIo {
    store: Arc<dyn ObjectStore>,
    /// `file:///` or `s3://bucket`, for registering with DataFusion.
    url: String,
    prefix: Path,
    /// The local directory when the store is the local file system.
    local_root: Option<PathBuf>,
}

fn obj_err(e: object_store::Error) -> StorageError {
    // The file system's own error, when the store is local, says whether
    // the disk is full.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut disk_full = false;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            disk_full |= super::io_disk_full(io);
        }
        source = err.source();
    }
    StorageError::ObjectStore {
        message: e.to_string(),
        disk_full,
    }
}

impl ObjectIo {
    /// Open `root`: a local path or `file://` URL, or `s3://bucket[/prefix]`.
    pub fn open(root: &str, s3: &S3Config) -> Result<ObjectIo> {
        if let Some(rest) = root.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StorageError::Config(format!(
                    "storage root \"{root}\" names no bucket: expected s3://bucket/prefix"
                )));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(e) = &s3.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &s3.region {
                b = b.with_region(r);
            }
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = &s3.secret_access_key {
                b = b.with_secret_access_key(k);
            }
            if let Some(h) = s3.allow_http {
                b = b.with_allow_http(h);
            }
            let store = b
                .build()
                .map_err(|e| StorageError::Config(format!("S3 store {root}: {e}")))?;
            return Ok(ObjectIo {
                store: Arc::new(store),
                url: format!("s3://{bucket}"),
                prefix: Path::from(prefix.trim_matches('/')),
                local_root: None,
            });
        }
        let dir = PathBuf::from(root.strip_prefix("file://").unwrap_or(root));
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        let dir = std::fs::canonicalize(&dir).map_err(|e| StorageError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(obj_err)?
            .with_automatic_cleanup(true);
        Ok(ObjectIo {
            store: Arc::new(store),
            url: "file:///".into(),
            prefix: Path::default(),
            local_root: Some(dir),
        })
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// The store's path of the object `rel` (relative to the root).
    pub fn path(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Where the local store keeps object `rel`: its path's encoded form
    /// (`#` as `%23`, ...) under the root, as `LocalFileSystem` names files.
    fn local_file(&self, root: &std::path::Path, rel: &str) -> PathBuf {
        root.join(self.path(rel).as_ref())
    }

    /// Write an object; with `create`, fail if it exists. On a local disk
    /// the file and its directory are fsync'd before this returns.
    pub async fn put(&self, rel: &str, bytes: Vec<u8>, create: bool) -> Result<u64> {
        let len = bytes.len() as u64;
        let opts = PutOptions {
            mode: if create {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            ..Default::default()
        };
        self.store
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await
            .map_err(obj_err)?;
        if let Some(root) = &self.local_root {
            let file = self.local_file(root, rel);
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::File::open(&file)?.sync_all()?;
                if let Some(dir) = file.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| StorageError::ObjectStore {
                message: e.to_string(),
                disk_full: false,
            })?
            .map_err(|e| StorageError::Io {
                path: rel.to_string(),
                source: e,
            })?;
        }
        Ok(len)
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        let r = self.store.get(&self.path(rel)).await.map_err(obj_err)?;
        r.bytes().await.map_err(obj_err)
    }

    /// Object names (relative to the root) under `rel_prefix`.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<String>> {
        let prefix = self.path(rel_prefix);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(obj_err)?;
        let strip = if self.prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(metas
            .into_iter()
            .map(|m| {
                let p = m.location.to_string();
                p.strip_prefix(&strip).map(str::to_string).unwrap_or(p)
            })
            .collect())
    }

    /// Names of the folders right under `rel_prefix` (`collections` ->
    /// `["1", "7"]`).
    pub async fn list_folders(&self, rel_prefix: &str) -> Result<Vec<String>> {
        let prefix = self.path(rel_prefix);
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(obj_err)?;
        Ok(listed
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Delete an object; a missing one is not an error.
    pub async fn delete(&self, rel: &str) {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => warn!(object = rel, "cannot delete obsolete object: {e}"),
        }
    }

    /// Delete every object under `rel_prefix`.
    pub async fn delete_prefix(&self, rel_prefix: &str) {
        match self.list(rel_prefix).await {
            Ok(names) => {
                for n in names {
                    self.delete(&n).await;
                }
            }
            Err(e) => warn!(prefix = rel_prefix, "cannot list obsolete objects: {e}"),
        }
        if let Some(root) = &self.local_root {
            // Empty directories left behind by the deletes.
            let _ = std::fs::remove_dir_all(self.local_file(root, rel_prefix));
        }
    }

    /// Write batches as one Parquet object; returns its size in bytes.
    pub async fn write_parquet(
        &self,
        rel: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        bloom_column: Option<&str>,
    ) -> Result<u64> {
        // Vectors as fixed-size binary values (`stored.rs`).
        let stored = super::stored::stored_schema(schema);
        let batches = batches
            .iter()
            .map(|b| super::stored::to_stored(b, &stored))
            .collect::<Result<Vec<_>>>()?;
        let (schema, batches) = (&stored, &batches[..]);
        let mut props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()));
        if let Some(col) = bloom_column {
            props = props.set_column_bloom_filter_enabled(ColumnPath::from(col), true);
        }
        // Columns whose values hardly repeat (the primary key, row ids,
        // floats): a dictionary is built for each page and thrown away.
        for field in schema.fields() {
            use arrow::datatypes::DataType;
            let unique = Some(field.name().as_str()) == bloom_column
                || field.name() == crate::segment::ROWID
                || matches!(field.data_type(), DataType::Float32 | DataType::Float64);
            if unique {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
        // Vector elements: floats that neither a dictionary nor zstd
        // shrinks much (7% on random vectors) and whose min/max says
        // nothing; trying took a quarter of a bulk load's CPU.
        for field in schema.fields() {
            if super::stored::is_stored_vector(field) {
                let path = ColumnPath::from(field.name().as_str());
                props = props
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_statistics_enabled(path.clone(), EnabledStatistics::None)
                    .set_column_compression(path, Compression::UNCOMPRESSED);
            }
        }
        for path in float_list_leaves(schema)? {
            props = props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_statistics_enabled(path.clone(), EnabledStatistics::None)
                .set_column_compression(path, Compression::UNCOMPRESSED);
        }
        let props = props.build();
        if let Some(root) = &self.local_root {
            // Straight to the file, through a small buffer: a segment's
            // worth of fresh memory cost a page fault per 4 KiB.
            let file = self.local_file(root, rel);
            let schema = schema.clone();
            let batches = batches.to_vec();
            let rel_owned = rel.to_string();
            return tokio::task::spawn_blocking(move || {
                write_local_parquet(&file, &schema, &batches, props).map_err(|e| match e {
                    LocalWriteError::Io(source) => StorageError::Io {
                        path: rel_owned,
                        source,
                    },
                    LocalWriteError::Parquet(e) => e.into(),
                })
            })
            .await
            .map_err(|e| StorageError::ObjectStore {
                message: e.to_string(),
                disk_full: false,
            })?;
        }
        let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let mut buf = Vec::with_capacity(size + size / 8 + 4096);
        {
            let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        self.put(rel, buf, true).await
    }

    /// Read a Parquet object, optionally only some columns (by name).
    pub async fn read_parquet(
        &self,
        rel: &str,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let bytes = self.get(rel).await?;
        let rel = rel.to_string();
        let columns: Option<Vec<String>> =
            columns.map(|c| c.iter().map(|s| s.to_string()).collect());
        tokio::task::spawn_blocking(move || -> Result<Vec<RecordBatch>> {
            let mut builder =
                ParquetRecordBatchReaderBuilder::try_new(bytes)?.with_batch_size(8192);
            if let Some(cols) = columns {
                let schema = builder.parquet_schema();
                let roots: Vec<usize> = cols
                    .iter()
                    .filter_map(|c| {
                        (0..schema.root_schema().get_fields().len())
                            .find(|&i| schema.root_schema().get_fields()[i].name() == c)
                    })
                    .collect();
                let mask = datafusion::parquet::arrow::ProjectionMask::roots(schema, roots);
                builder = builder.with_projection(mask);
            }
            let reader = builder.build()?;
            let mut out = Vec::new();
            for b in reader {
                out.push(super::stored::from_stored(b?)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("{rel}: {e}")))?
    }
}

enum LocalWriteError {
    Io(std::io::Error),
    Parquet(datafusion::parquet::errors::ParquetError),
}

impl From<std::io::Error> for LocalWriteError {
    fn from(e: std::io::Error) -> Self {
        LocalWriteError::Io(e)
    }
}

impl From<datafusion::parquet::errors::ParquetError> for LocalWriteError {
    /// The file system's own error (a full disk, say) stays one, also when
    /// the writer met it.
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        use datafusion::parquet::errors::ParquetError;
        match e {
            ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
                Ok(io) => LocalWriteError::Io(*io),
                Err(other) => LocalWriteError::Parquet(ParquetError::External(other)),
            },
            other => LocalWriteError::Parquet(other),
        }
    }
}

/// Write `batches` as a new Parquet file at `path` (an error if it
/// exists), fsync'd with its directory; returns its size. It is written
/// under a staging name and linked into place, so that a crash never
/// leaves a partial file under the final name.
fn write_local_parquet(
    path: &std::path::Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> std::result::Result<u64, LocalWriteError> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("an object path without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut staging = path.as_os_str().to_owned();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    staging.push(format!(".{}-{n}.staging", std::process::id()));
    let staging = PathBuf::from(staging);
    let result = (|| -> std::result::Result<u64, LocalWriteError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staging)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        {
            let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        out.flush()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        // Fails when the object exists, as a create-only put does.
        std::fs::hard_link(&staging, path)?;
        Ok(len)
    })();
    let _ = std::fs::remove_file(&staging);
    let len = result?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(len)
}
