//! The write-ahead log (Milvus's "message storage" for one node).
//!
//! Every change to a collection is one [`WalRecord`], appended to the
//! collection's log before the client is told it succeeded. A record is framed
//! as `length (u32 LE) | crc32 (u32 LE) | payload`; the payload carries the
//! hybrid timestamp, the row ids deleted and the rows inserted (Arrow IPC, so
//! it describes itself). On recovery a record whose frame is short or whose
//! checksum does not match ends the log: the file is cut there and the damage
//! is reported, and every record before it is replayed.
//!
//! Group commit: appends are written under one lock and a caller then waits
//! for durability up to its own record; whoever gets the sync lock first
//! fsyncs for every record written so far, so concurrent writers share one
//! fsync. With `wal.sync = batch(ms)` a background thread syncs on a timer and
//! appends are acknowledged once written.
//!
//! The log of a collection is a directory of files named by the timestamp of
//! their first record; it is rotated when a segment seals and files wholly
//! covered by a durable flush are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parking_lot::Mutex;
use tracing::{error, warn};

use super::segment::SegmentMeta;
use super::{Result, StorageError};

/// How appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// fsync (group commit) before a write is acknowledged.
    Always,
    /// fsync on a timer; a crash may lose the last interval of acknowledged
    /// writes (never corrupt earlier ones).
    Batch(Duration),
}

impl std::str::FromStr for WalSync {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<WalSync, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "always" {
            return Ok(WalSync::Always);
        }
        let inner = t
            .strip_prefix("batch(")
            .and_then(|r| r.strip_suffix(')'))
            .or_else(|| t.strip_prefix("batch:"));
        if let Some(ms) = inner {
            let ms = ms.trim().trim_end_matches("ms");
            if let Ok(ms) = ms.parse::<u64>()
                && ms > 0
            {
                return Ok(WalSync::Batch(Duration::from_millis(ms)));
            }
        }
        Err(format!(
            "invalid wal.sync \"{s}\": expected \"always\" or \"batch(<ms>)\", e.g. batch(10)"
        ))
    }
}

/// One logged change: deletes and inserts applied atomically at `ts`.
#[derive(Debug, Clone, Default)]
pub struct WalRecord {
    pub ts: u64,
    /// Remove every row (TRUNCATE) before applying the rest.
    pub truncate: bool,
    /// Row ids deleted.
    pub deletes: Vec<u64>,
    /// Rows inserted, in the collection's storage schema (row ids included).
    pub insert: Option<RecordBatch>,
    /// Part of a transaction that wrote several collections: replayed only
    /// if the commit log holds `ts` (see `txn.rs`).
    pub multi: bool,
    /// Segments a bulk load wrote (`collection/bulk.rs`), attached at `ts`.
    pub attach: Vec<SegmentMeta>,
}

const HEADER: usize = 8;
/// Refuse absurd frame lengths on recovery (a garbled length field).
const MAX_RECORD: usize = 1 << 31;

impl WalRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut frame = Vec::new();
        self.encode_into(&mut frame)?;
        Ok(frame)
    }

    /// [`Self::encode`] into `frame` (cleared first), whose memory is
    /// reused: a large insert's frame, allocated afresh, was a fifth of a
    /// binary COPY's page faults.
    pub fn encode_into(&self, frame: &mut Vec<u8>) -> Result<()> {
        // The frame is built in one buffer sized up front: the length and
        // checksum are filled in at the end. (Grown by doubling, and then
        // copied into a frame, a large insert's encoding was a tenth of a
        // bulk COPY's time.)
        // The rows' own bytes (a slice of a larger batch counts only its
        // part), and room for the stream's messages and padding.
        let rows = self.insert.as_ref().map_or(0, |b| {
            let data: usize = b
                .columns()
                .iter()
                .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                .sum();
            data + 128 * (b.num_columns() + 1) + 1024
        });
        frame.clear();
        frame.reserve(HEADER + 64 + self.deletes.len() * 8 + rows);
        frame.extend_from_slice(&[0; HEADER]);
        frame.extend_from_slice(&self.ts.to_le_bytes());
        let attach = !self.attach.is_empty();
        frame.push(self.truncate as u8 | (self.multi as u8) << 1 | (attach as u8) << 2);
        frame.extend_from_slice(&(self.deletes.len() as u64).to_le_bytes());
        for d in &self.deletes {
            frame.extend_from_slice(&d.to_le_bytes());
        }
        if attach {
            let metas = serde_json::to_vec(&self.attach)
                .map_err(|e| StorageError::Corrupt(format!("segment list: {e}")))?;
            frame.extend_from_slice(&(metas.len() as u32).to_le_bytes());
            frame.extend_from_slice(&metas);
        }
        match &self.insert {
            Some(batch) => {
                frame.push(1);
                let mut writer = StreamWriter::try_new(&mut *frame, &batch.schema())?;
                writer.write(batch)?;
                writer.finish()?;
            }
            None => frame.push(0),
        }
        let len = u32::try_from(frame.len() - HEADER)
            .ok()
            .filter(|len| *len as usize <= MAX_RECORD)
            .ok_or_else(|| {
                StorageError::InvalidBatch(format!(
                    "one statement's change takes {} MiB in the write-ahead log, more than its {} MiB a record: split it",
                    (frame.len() - HEADER) >> 20,
                    MAX_RECORD >> 20
                ))
            })?;
        let crc = crc32fast::hash(&frame[HEADER..]);
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Read a record back from its payload (a frame without its length and
    /// checksum); damage is an error, never a panic (fuzzed: tests/fuzz.rs).
    pub fn decode(payload: &[u8]) -> Result<WalRecord> {
        let bad = || StorageError::Corrupt("malformed WAL record".into());
        let take = |at: usize, n: usize| payload.get(at..at + n).ok_or_else(bad);
        let ts = u64::from_le_bytes(take(0, 8)?.try_into().map_err(|_| bad())?);
        let flags = take(8, 1)?[0];
        let (truncate, multi, attach) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        let n = u64::from_le_bytes(take(9, 8)?.try_into().map_err(|_| bad())?) as usize;
        let mut at = 17;
        let mut deletes = Vec::with_capacity(n.min(payload.len() / 8));
        for _ in 0..n {
            deletes.push(u64::from_le_bytes(
                take(at, 8)?.try_into().map_err(|_| bad())?,
            ));
            at += 8;
        }
        let attach = if attach {
            let len = u32::from_le_bytes(take(at, 4)?.try_into().map_err(|_| bad())?) as usize;
            let metas: Vec<SegmentMeta> =
                serde_json::from_slice(take(at + 4, len)?).map_err(|_| bad())?;
            at += 4 + len;
            metas
        } else {
            Vec::new()
        };
        let insert = if take(at, 1)?[0] == 1 {
            let stream = &payload[at + 1..];
            if !ipc_lengths_fit(stream) {
                return Err(bad());
            }
            let reader = StreamReader::try_new(stream, None)?;
            let mut batches = Vec::new();
            for b in reader {
                batches.push(b?);
            }
            match batches.len() {
                1 => batches.pop(),
                _ => return Err(bad()),
            }
        } else {
            None
        };
        Ok(WalRecord {
            ts,
            truncate,
            deletes,
            insert,
            multi,
            attach,
        })
    }
}

/// Whether every message of the Arrow IPC stream `stream` declares a
/// metadata and a body length within the bytes there are. Arrow's reader
/// allocates (and zeroes) what a message declares before it reads it: a
/// garbled record that passes its checksum could ask for gigabytes, or for
/// more than can be allocated, which aborts the process.
fn ipc_lengths_fit(stream: &[u8]) -> bool {
    let mut at = 0usize;
    loop {
        let Some(word) = stream.get(at..at + 4) else {
            // The end of the stream without its end marker.
            return at == stream.len();
        };
        let mut len = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        at += 4;
        if len == u32::MAX {
            let Some(word) = stream.get(at..at + 4) else {
                return false;
            };
            len = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            at += 4;
        }
        if len == 0 {
            return true;
        }
        let Some(meta) = stream.get(at..at.saturating_add(len as usize)) else {
            return false;
        };
        let Ok(message) = arrow::ipc::root_as_message(meta) else {
            return false;
        };
        at += len as usize;
        let Ok(body) = usize::try_from(message.bodyLength()) else {
            return false;
        };
        if body > stream.len() - at {
            return false;
        }
        at += body;
    }
}

/// Where records go. The local log below is the default; a log on Kafka or
/// object storage can implement the same trait.
pub trait Wal: Send + Sync + std::fmt::Debug {
    /// Append one encoded record; returns its sequence number.
    fn append(&self, frame: &[u8]) -> Result<u64>;
    /// Block until every record up to `lsn` is durable.
    fn sync(&self, lsn: u64) -> Result<()>;
    /// Start a new file whose records all have timestamps >= `first_ts`.
    fn rotate(&self, first_ts: u64) -> Result<()>;
    /// Remove files whose records all have timestamps <= `checkpoint`.
    fn trim(&self, checkpoint: u64) -> Result<()>;
    /// Remove the whole log (the collection was dropped).
    fn destroy(&self) -> Result<()>;
    /// A timestamp no record still in the log is older than.
    fn oldest(&self) -> Result<u64>;
}

#[derive(Debug)]
struct Active {
    file: File,
    /// Sequence number of the last record written.
    written: u64,
    /// Length of the file after the last complete record.
    len: u64,
}

/// A log in a local directory.
#[derive(Debug)]
pub struct LocalWal {
    dir: PathBuf,
    mode: WalSync,
    active: Mutex<Active>,
    /// Held while syncing; guards `durable`.
    synced: Mutex<u64>,
    /// A handle on the active file for fsync outside the append lock.
    sync_handle: Mutex<Arc<File>>,
    failed: AtomicBool,
}

fn file_name(first_ts: u64) -> String {
    format!("{first_ts:020}.log")
}

fn io_err(path: &Path, e: io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// The log files of a directory, oldest first, with their first timestamps.
fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(ts) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((ts, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl LocalWal {
    /// Open (creating) the log in `dir`, read back every intact record, and
    /// cut a damaged tail. Returns the log, ready to append, and the records.
    pub fn open(
        dir: &Path,
        mode: WalSync,
        first_ts: u64,
    ) -> Result<(Arc<LocalWal>, Vec<WalRecord>)> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut records = Vec::new();
        let files = list_files(dir)?;
        for (_, path) in &files {
            records.extend(read_file(path)?);
        }
        let path = dir.join(file_name(
            first_ts.max(files.last().map(|(ts, _)| *ts).unwrap_or(0)),
        ));
        let file = open_append(&path)?;
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        sync_dir(dir);
        let handle = Arc::new(file.try_clone().map_err(|e| io_err(&path, e))?);
        let wal = Arc::new(LocalWal {
            dir: dir.to_path_buf(),
            mode,
            active: Mutex::new(Active {
                file,
                written: 0,
                len,
            }),
            synced: Mutex::new(0),
            sync_handle: Mutex::new(handle),
            failed: AtomicBool::new(false),
        });
        if let WalSync::Batch(every) = mode {
            let weak = Arc::downgrade(&wal);
            std::thread::Builder::new()
                .name("quiver-wal-sync".into())
                .spawn(move || {
                    while let Some(wal) = weak.upgrade() {
                        let written = wal.active.lock().written;
                        if let Err(e) = wal.sync_to(written) {
                            error!("WAL sync failed: {e}");
                        }
                        drop(wal);
                        std::thread::sleep(every);
                    }
                })
                .map_err(|e| io_err(dir, e))?;
        }
        Ok((wal, records))
    }

    fn check_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StorageError::WalFailed(self.dir.display().to_string()));
        }
        Ok(())
    }

    fn sync_to(&self, lsn: u64) -> Result<()> {
        let mut durable = self.synced.lock();
        if *durable >= lsn {
            return Ok(());
        }
        // Everything written so far is covered by this fsync.
        let (target, handle) = {
            let active = self.active.lock();
            (active.written, self.sync_handle.lock().clone())
        };
        crate::stats::Stats::add(&crate::stats::STATS.wal_fsyncs, 1);
        if let Err(e) = handle.sync_data() {
            self.failed.store(true, Ordering::Relaxed);
            return Err(io_err(&self.dir, e));
        }
        *durable = target;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

/// Read every intact record of one file; cut the file after the last one.
fn read_file(path: &Path) -> Result<Vec<WalRecord>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_err(path, e))?;
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut damage: Option<String> = None;
    while at < bytes.len() {
        if bytes.len() - at < HEADER {
            damage = Some(format!(
                "{} trailing bytes shorter than a header",
                bytes.len() - at
            ));
            break;
        }
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD || at + HEADER + len > bytes.len() {
            damage = Some(format!(
                "a record of {len} bytes runs past the end of the file"
            ));
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            damage = Some("checksum mismatch".into());
            break;
        }
        match WalRecord::decode(payload) {
            Ok(r) => records.push(r),
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        }
        at += HEADER + len;
    }
    if let Some(what) = damage {
        warn!(
            file = %path.display(),
            offset = at,
            dropped_bytes = bytes.len() - at,
            records_kept = records.len(),
            "WAL damaged ({what}); cutting it after the last intact record"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        f.set_len(at as u64).map_err(|e| io_err(path, e))?;
        f.sync_all().map_err(|e| io_err(path, e))?;
    }
    Ok(records)
}

impl Wal for LocalWal {
    fn append(&self, frame: &[u8]) -> Result<u64> {
        self.check_failed()?;
        let mut active = self.active.lock();
        crate::stats::Stats::add(&crate::stats::STATS.wal_bytes, frame.len() as u64);
        if let Err(e) = active.file.write_all(frame) {
            // A partial frame may be on disk: cut it so later records follow
            // a clean boundary.
            let len = active.len;
            let _ = active.file.set_len(len);
            return Err(io_err(&self.dir, e));
        }
        active.len += frame.len() as u64;
        active.written += 1;
        Ok(active.written)
    }

    fn sync(&self, lsn: u64) -> Result<()> {
        self.check_failed()?;
        match self.mode {
            WalSync::Always => self.sync_to(lsn),
            WalSync::Batch(_) => Ok(()),
        }
    }

    fn rotate(&self, first_ts: u64) -> Result<()> {
        self.check_failed()?;
        let mut active = self.active.lock();
        let path = self.dir.join(file_name(first_ts));
        let file = open_append(&path)?;
        // The old file must be durable before records go elsewhere.
        crate::stats::Stats::add(&crate::stats::STATS.wal_fsyncs, 1);
        active.file.sync_data().map_err(|e| io_err(&path, e))?;
        let handle = Arc::new(file.try_clone().map_err(|e| io_err(&path, e))?);
        active.len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        active.file = file;
        *self.sync_handle.lock() = handle;
        sync_dir(&self.dir);
        Ok(())
    }

    fn trim(&self, checkpoint: u64) -> Result<()> {
        let files = list_files(&self.dir)?;
        // A file ends where the next begins; the active (last) one stays.
        for pair in files.windows(2) {
            let (_, path) = &pair[0];
            let (next_first, _) = pair[1];
            if next_first <= checkpoint.saturating_add(1) {
                fs::remove_file(path).map_err(|e| io_err(path, e))?;
            }
        }
        sync_dir(&self.dir);
        Ok(())
    }

    fn oldest(&self) -> Result<u64> {
        Ok(list_files(&self.dir)?.first().map_or(0, |(ts, _)| *ts))
    }

    fn destroy(&self) -> Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.dir, e)),
        }
    }
}

#[cfg(test)]
mod ipc_tests {
    use super::*;

    /// Found by fuzzing (`fuzz/corpus/wal/found-huge-ipc-length`): a record
    /// whose Arrow stream declares a 2 GB message took 10 s and 2 GB to be
    /// refused; it is refused at once now, and real records still decode.
    #[test]
    fn declared_lengths_past_the_record_are_refused() {
        let found = include_bytes!("../../fuzz/corpus/wal/found-huge-ipc-length");
        let started = std::time::Instant::now();
        assert!(WalRecord::decode(found).is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("x", arrow::datatypes::DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let rec = WalRecord {
            ts: 7,
            truncate: false,
            deletes: vec![1, 2],
            insert: Some(batch.clone()),
            multi: true,
            attach: Vec::new(),
        };
        let frame = rec.encode().unwrap();
        let back = WalRecord::decode(&frame[HEADER..]).unwrap();
        assert_eq!(back.insert, Some(batch));
        assert_eq!(back.deletes, vec![1, 2]);
        assert!(back.multi && !back.truncate);
        assert!(back.attach.is_empty());
    }

    /// A bulk load's record names its segments; they come back whole, with
    /// the rows after them.
    #[test]
    fn attached_segments_round_trip() {
        let meta = SegmentMeta {
            id: 12,
            state: crate::segment::SegmentState::Flushed,
            rows: 100,
            bytes: 4096,
            data_file: "collections/3/segments/12/data.parquet".into(),
            delta_file: None,
            deleted: 0,
            rowid_min: 1000,
            rowid_max: 1099,
            pk_min: Some(serde_json::json!(1)),
            pk_max: Some(serde_json::json!(100)),
            max_ts: 9,
            indexes: Default::default(),
        };
        let rec = WalRecord {
            ts: 9,
            deletes: vec![5],
            attach: vec![meta.clone(), SegmentMeta { id: 13, ..meta }],
            ..WalRecord::default()
        };
        let frame = rec.encode().unwrap();
        let back = WalRecord::decode(&frame[HEADER..]).unwrap();
        assert_eq!(back.attach.len(), 2);
        assert_eq!(back.attach[1].id, 13);
        assert_eq!(back.attach[0].rowid_max, 1099);
        assert_eq!(back.deletes, vec![5]);
        assert!(back.insert.is_none());
        // A cut segment list is damage, not a panic.
        for cut in [HEADER + 22, frame.len() - 3] {
            assert!(WalRecord::decode(&frame[HEADER..cut]).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn record(ts: u64) -> WalRecord {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![ts as i64]))])
            .unwrap();
        WalRecord {
            ts,
            truncate: false,
            deletes: vec![ts * 10],
            insert: Some(batch),
            multi: false,
            attach: Vec::new(),
        }
    }

    #[test]
    fn append_replay_and_cut_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, recs) = LocalWal::open(dir.path(), WalSync::Always, 1).unwrap();
            assert!(recs.is_empty());
            for ts in 1..=3 {
                let lsn = wal.append(&record(ts).encode().unwrap()).unwrap();
                wal.sync(lsn).unwrap();
            }
        }
        let (_, path) = list_files(dir.path()).unwrap().pop().unwrap();
        // Garble the last record's payload.
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (wal, recs) = LocalWal::open(dir.path(), WalSync::Always, 1).unwrap();
        assert_eq!(recs.iter().map(|r| r.ts).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(recs[1].deletes, vec![20]);
        assert_eq!(recs[1].insert.as_ref().unwrap().num_rows(), 1);
        // Appends continue after the cut.
        wal.append(&record(4).encode().unwrap()).unwrap();
        wal.rotate(5).unwrap();
        wal.append(&record(5).encode().unwrap()).unwrap();
        wal.sync(2).unwrap();
        wal.trim(4).unwrap();
        drop(wal);
        let (_, recs) = LocalWal::open(dir.path(), WalSync::Always, 1).unwrap();
        assert_eq!(recs.iter().map(|r| r.ts).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn sync_modes_parse() {
        assert_eq!("always".parse::<WalSync>().unwrap(), WalSync::Always);
        assert_eq!(
            "batch(10)".parse::<WalSync>().unwrap(),
            WalSync::Batch(Duration::from_millis(10))
        );
        assert!("sometimes".parse::<WalSync>().is_err());
    }
}
