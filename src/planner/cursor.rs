//! Cursors: `DECLARE ... CURSOR FOR query`, `FETCH`, `MOVE`, `CLOSE`. A
//! cursor holds its query's running stream and hands out rows as FETCH
//! asks for them, so its memory is a batch, not the result. Cursors move
//! forward only (NO SCROLL); a cursor without HOLD ends with its
//! transaction block, one WITH HOLD stays until CLOSE or the session ends
//! (unless the block that declared it rolls back).

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

pub struct Cursor {
    pub schema: SchemaRef,
    stream: SendableRecordBatchStream,
    /// Rows pulled from the stream and not fetched yet.
    pending: Option<RecordBatch>,
    done: bool,
    pub hold: bool,
    /// `DECLARE BINARY`: FETCH in the simple protocol sends binary values.
    pub binary: bool,
    /// Declared in the transaction block now open.
    in_block: bool,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor(hold: {}, done: {})", self.hold, self.done)
    }
}

impl Cursor {
    pub fn new(
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
        hold: bool,
        binary: bool,
        in_block: bool,
    ) -> Cursor {
        Cursor {
            schema,
            stream,
            pending: None,
            done: false,
            hold,
            binary,
            in_block,
        }
    }

    /// The next `count` rows (`None`: all that are left).
    pub async fn fetch(
        &mut self,
        count: Option<u64>,
    ) -> datafusion::error::Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut left = count.unwrap_or(u64::MAX);
        while left > 0 {
            let batch = match self.pending.take() {
                Some(b) => b,
                None if self.done => break,
                None => match self.stream.next().await {
                    Some(b) => b?,
                    None => {
                        self.done = true;
                        break;
                    }
                },
            };
            let n = batch.num_rows() as u64;
            if n <= left {
                left -= n;
                out.push(batch);
            } else {
                let k = left as usize;
                out.push(batch.slice(0, k));
                self.pending = Some(batch.slice(k, batch.num_rows() - k));
                left = 0;
            }
        }
        Ok(out)
    }
}

/// A session's open cursors.
#[derive(Debug, Default)]
pub struct Cursors(parking_lot::Mutex<HashMap<String, Cursor>>);

impl Cursors {
    pub fn contains(&self, name: &str) -> bool {
        self.0.lock().contains_key(name)
    }

    pub fn insert(&self, name: String, cursor: Cursor) {
        self.0.lock().insert(name, cursor);
    }

    /// Take `name` out while it is read (put it back after).
    pub fn take(&self, name: &str) -> Option<Cursor> {
        self.0.lock().remove(name)
    }

    pub fn schema(&self, name: &str) -> Option<SchemaRef> {
        self.0.lock().get(name).map(|c| c.schema.clone())
    }

    /// CLOSE ALL, DISCARD ALL.
    pub fn clear(&self) {
        self.0.lock().clear();
    }

    /// The transaction block ended: cursors without HOLD close, and with a
    /// rollback those it declared too.
    pub fn block_ended(&self, rollback: bool) {
        let mut all = self.0.lock();
        all.retain(|_, c| c.hold && !(rollback && c.in_block));
        for c in all.values_mut() {
            c.in_block = false;
        }
    }
}
