//! Cursors: `DECLARE ... CURSOR FOR query`, `FETCH`, `MOVE`, `CLOSE`. A
//! cursor holds its query's running stream and hands out rows as FETCH
//! asks for them, so its memory is a batch, not the result. Cursors move
//! forward only (NO SCROLL); a cursor without HOLD ends with its
//! transaction block, one WITH HOLD stays until CLOSE or the session ends
//! (unless the block that declared it rolls back).

use std::collections::HashMap;
use std::sync::Arc;

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

    /// The next piece of at most `left` rows (`left` > 0), `None` at the
    /// end of the query.
    pub async fn next_piece(
        &mut self,
        left: u64,
    ) -> datafusion::error::Result<Option<RecordBatch>> {
        let batch = match self.pending.take() {
            Some(b) => b,
            None if self.done => return Ok(None),
            None => match self.stream.next().await {
                Some(b) => b?,
                None => {
                    self.done = true;
                    return Ok(None);
                }
            },
        };
        if batch.num_rows() as u64 <= left {
            return Ok(Some(batch));
        }
        let k = left as usize;
        self.pending = Some(batch.slice(k, batch.num_rows() - k));
        Ok(Some(batch.slice(0, k)))
    }

    /// MOVE: skip up to `count` rows (`None`: all); returns how many.
    pub async fn skip(&mut self, count: Option<u64>) -> datafusion::error::Result<u64> {
        let mut left = count.unwrap_or(u64::MAX);
        let mut moved = 0;
        while left > 0 {
            let Some(b) = self.next_piece(left).await? else {
                break;
            };
            left -= b.num_rows() as u64;
            moved += b.num_rows() as u64;
        }
        Ok(moved)
    }
}

/// A cursor lent to a FETCH's rows as they stream out; it goes back to
/// the session's cursors when they end or are dropped.
struct Lent {
    cursor: Option<Cursor>,
    name: String,
    home: Arc<Cursors>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(c) = self.cursor.take() {
            self.home.insert(std::mem::take(&mut self.name), c);
        }
    }
}

/// FETCH: the next `count` rows of `cursor` (`None`: all that are left)
/// as a stream, a batch at a time: the result is never held whole.
pub fn fetch_stream(
    cursor: Cursor,
    name: String,
    home: Arc<Cursors>,
    count: Option<u64>,
) -> SendableRecordBatchStream {
    let schema = cursor.schema.clone();
    let lent = Lent {
        cursor: Some(cursor),
        name,
        home,
    };
    let pieces = futures::stream::unfold(
        (lent, count.unwrap_or(u64::MAX)),
        |(mut lent, left)| async move {
            if left == 0 {
                return None;
            }
            let cursor = lent.cursor.as_mut()?;
            match cursor.next_piece(left).await {
                Ok(Some(b)) => {
                    let n = b.num_rows() as u64;
                    Some((Ok(b), (lent, left - n)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e), (lent, 0))),
            }
        },
    );
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, pieces))
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
