//! PostgreSQL's advisory locks (`pg_advisory_lock` and its family), which
//! migration tools and connection pools call: locks on application-chosen
//! keys, per database, held by a session until it unlocks them or ends
//! (`pg_advisory_lock`), or until its transaction ends
//! (`pg_advisory_xact_lock`); exclusive or shared; re-entrant within a
//! session. A wait ends when the lock is granted, or with the statement
//! (cancel, `statement_timeout`); deadlocks between sessions are not
//! detected (PostgreSQL reports 40P01): a timeout ends them.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use parking_lot::{Condvar, Mutex};
use quiver_common::interrupt::Interrupt;

/// A lock's key: the database, whether it was given as one bigint or two
/// integers (PostgreSQL keeps the two key spaces apart), and the key.
type Key = (String, bool, i64);

/// The most advisory-lock acquisitions one session may hold at once.
const MAX_HELD: usize = 65_536;

/// Who holds a lock, and how many times.
#[derive(Debug, Default)]
struct Holders {
    /// Session id -> times held exclusively (session and transaction scope).
    exclusive: HashMap<u64, u32>,
    shared: HashMap<u64, u32>,
}

impl Holders {
    fn grantable(&self, session: u64, exclusive: bool) -> bool {
        let others_exclusive = self.exclusive.keys().any(|s| *s != session);
        let others_shared = self.shared.keys().any(|s| *s != session);
        !(others_exclusive || (exclusive && others_shared))
    }

    fn is_empty(&self) -> bool {
        self.exclusive.is_empty() && self.shared.is_empty()
    }
}

/// The server's advisory locks.
#[derive(Debug, Default)]
pub struct AdvisoryLocks {
    held: Mutex<HashMap<Key, Holders>>,
    released: Condvar,
    next_session: AtomicU64,
}

/// One lock a session holds: its key, mode and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    key: Key,
    exclusive: bool,
    transaction: bool,
}

/// A session's side of the advisory locks: what it holds.
#[derive(Debug)]
pub struct SessionLocks {
    locks: Arc<AdvisoryLocks>,
    id: u64,
    database: String,
    interrupt: Arc<Interrupt>,
    /// One entry per acquisition (re-entrant locks appear as often as they
    /// were taken).
    mine: Mutex<Vec<Held>>,
}

impl SessionLocks {
    pub fn new(
        locks: Arc<AdvisoryLocks>,
        database: &str,
        interrupt: Arc<Interrupt>,
    ) -> Arc<SessionLocks> {
        let id = locks.next_session.fetch_add(1, Ordering::Relaxed);
        Arc::new(SessionLocks {
            locks,
            id,
            database: database.to_string(),
            interrupt,
            mine: Mutex::new(Vec::new()),
        })
    }

    /// Take the lock; with `wait`, until it is granted or the statement
    /// is stopped. Returns whether it was taken.
    fn lock(&self, key: Key, exclusive: bool, transaction: bool, wait: bool) -> Result<bool> {
        // Bounded, as PostgreSQL's lock table is (53200 there too): a
        // query locking a key per row of a huge table must not grow the
        // server without end.
        if self.mine.lock().len() >= MAX_HELD {
            return Err(datafusion::error::DataFusionError::ResourcesExhausted(
                format!(
                    "out of shared memory: a session holds at most {MAX_HELD} advisory locks; release some (pg_advisory_unlock, pg_advisory_unlock_all)"
                ),
            ));
        }
        let since = std::time::Instant::now();
        let mut held = self.locks.held.lock();
        loop {
            let holders = held.entry(key.clone()).or_default();
            if holders.grantable(self.id, exclusive) {
                let counts = if exclusive {
                    &mut holders.exclusive
                } else {
                    &mut holders.shared
                };
                *counts.entry(self.id).or_default() += 1;
                self.mine.lock().push(Held {
                    key,
                    exclusive,
                    transaction,
                });
                return Ok(true);
            }
            if holders.is_empty() {
                held.remove(&key);
            }
            if !wait {
                return Ok(false);
            }
            if let Err(stop) = self.interrupt.check_lock_wait(since) {
                return Err(datafusion::error::DataFusionError::External(Box::new(stop)));
            }
            let wait = |held: &mut parking_lot::MutexGuard<'_, HashMap<Key, Holders>>| {
                self.locks
                    .released
                    .wait_for(held, Duration::from_millis(50));
            };
            // The worker thread waits: let the runtime move its other
            // tasks (the holder's unlock may be one of them).
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| wait(&mut held))
                }
                _ => wait(&mut held),
            }
        }
    }

    /// Give back one acquisition matching `keep` is false for; returns
    /// whether there was one.
    fn release(&self, mut matches: impl FnMut(&Held) -> bool, all: bool) -> bool {
        let mut mine = self.mine.lock();
        let mut gone = Vec::new();
        while let Some(at) = mine.iter().rposition(&mut matches) {
            gone.push(mine.remove(at));
            if !all {
                break;
            }
        }
        drop(mine);
        if gone.is_empty() {
            return false;
        }
        let mut held = self.locks.held.lock();
        for h in gone {
            if let Some(holders) = held.get_mut(&h.key) {
                let counts = if h.exclusive {
                    &mut holders.exclusive
                } else {
                    &mut holders.shared
                };
                if let Some(n) = counts.get_mut(&self.id) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&self.id);
                    }
                }
                if holders.is_empty() {
                    held.remove(&h.key);
                }
            }
        }
        self.locks.released.notify_all();
        true
    }

    /// The transaction ended (or a statement outside a block did): its
    /// transaction-scoped locks go.
    pub fn transaction_ended(&self) {
        if self.mine.lock().iter().any(|h| h.transaction) {
            self.release(|h| h.transaction, true);
        }
    }

    /// The session ends: everything goes.
    pub fn release_all(&self) {
        self.release(|_| true, true);
    }
}

impl Drop for SessionLocks {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Which function of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Lock {
        shared: bool,
        xact: bool,
        try_: bool,
    },
    Unlock {
        shared: bool,
    },
    UnlockAll,
}

#[derive(Debug)]
struct AdvisoryFn {
    name: &'static str,
    op: Op,
    session: Arc<SessionLocks>,
    signature: Signature,
}

impl PartialEq for AdvisoryFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.session, &other.session)
    }
}
impl Eq for AdvisoryFn {}
impl Hash for AdvisoryFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// The keys of the arguments, row by row: one bigint, or two integers
/// (`None` where one is NULL: the functions are strict).
fn keys_of(
    database: &str,
    args: &[ColumnarValue],
    rows: usize,
    name: &str,
) -> Result<Vec<Option<Key>>> {
    use arrow::array::{Array, AsArray};
    let ints = args
        .iter()
        .map(|a| {
            let a = a.to_array(rows)?;
            Ok(arrow::compute::cast(&a, &DataType::Int64)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let ints: Vec<_> = ints
        .iter()
        .map(|a| a.as_primitive::<arrow::datatypes::Int64Type>())
        .collect();
    (0..rows)
        .map(|i| {
            let value = |a: &arrow::array::Int64Array| (!a.is_null(i)).then(|| a.value(i));
            Ok(match ints.as_slice() {
                [k] => value(k).map(|k| (database.to_string(), false, k)),
                [a, b] => match value(a).zip(value(b)) {
                    None => None,
                    Some((a, b)) => {
                        let (Ok(a), Ok(b)) = (i32::try_from(a), i32::try_from(b)) else {
                            // 22003, as PostgreSQL's int4 argument says.
                            return Err(datafusion::error::DataFusionError::ArrowError(
                                Box::new(arrow::error::ArrowError::ArithmeticOverflow(format!(
                                    "integer out of range: the keys of {name}(integer, integer) are integers"
                                ))),
                                None,
                            ));
                        };
                        Some((
                            database.to_string(),
                            true,
                            ((a as u32 as i64) << 32) | (b as u32 as i64),
                        ))
                    }
                },
                _ => return exec_err!("{name} takes one bigint or two integers"),
            })
        })
        .collect()
}

impl ScalarUDFImpl for AdvisoryFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::Lock { try_: true, .. } | Op::Unlock { .. } => DataType::Boolean,
            // PostgreSQL's `void`: an empty value.
            _ => DataType::Utf8,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use arrow::array::{BooleanArray, StringArray};
        let s = &self.session;
        let void = || Some(String::new());
        let out: arrow::array::ArrayRef = match self.op {
            Op::UnlockAll => {
                s.release(|h| !h.transaction, true);
                Arc::new(StringArray::from(vec![void(); args.number_rows]))
            }
            Op::Lock { shared, xact, try_ } => {
                let keys = keys_of(&s.database, &args.args, args.number_rows, self.name)?;
                let taken = keys
                    .into_iter()
                    .map(|k| k.map(|k| s.lock(k, !shared, xact, !try_)).transpose())
                    .collect::<Result<Vec<Option<bool>>>>()?;
                if try_ {
                    Arc::new(BooleanArray::from(taken))
                } else {
                    Arc::new(StringArray::from(
                        taken.iter().map(|t| t.and(void())).collect::<Vec<_>>(),
                    ))
                }
            }
            Op::Unlock { shared } => {
                let keys = keys_of(&s.database, &args.args, args.number_rows, self.name)?;
                Arc::new(BooleanArray::from(
                    keys.into_iter()
                        .map(|k| {
                            k.map(|k| {
                                s.release(
                                    |h| !h.transaction && h.exclusive != shared && h.key == k,
                                    false,
                                )
                            })
                        })
                        .collect::<Vec<_>>(),
                ))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The advisory-lock functions of one session.
pub fn udfs(session: &Arc<SessionLocks>) -> Vec<ScalarUDF> {
    let keyed = || {
        Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Int64]),
                TypeSignature::Exact(vec![DataType::Int32, DataType::Int32]),
                TypeSignature::Exact(vec![DataType::Int64, DataType::Int64]),
            ],
            Volatility::Volatile,
        )
    };
    let f = |name: &'static str, op: Op| {
        ScalarUDF::new_from_impl(AdvisoryFn {
            name,
            op,
            session: session.clone(),
            signature: if op == Op::UnlockAll {
                Signature::exact(vec![], Volatility::Volatile)
            } else {
                keyed()
            },
        })
    };
    let lock = |shared, xact, try_| Op::Lock { shared, xact, try_ };
    vec![
        f("pg_advisory_lock", lock(false, false, false)),
        f("pg_advisory_lock_shared", lock(true, false, false)),
        f("pg_try_advisory_lock", lock(false, false, true)),
        f("pg_try_advisory_lock_shared", lock(true, false, true)),
        f("pg_advisory_xact_lock", lock(false, true, false)),
        f("pg_advisory_xact_lock_shared", lock(true, true, false)),
        f("pg_try_advisory_xact_lock", lock(false, true, true)),
        f("pg_try_advisory_xact_lock_shared", lock(true, true, true)),
        f("pg_advisory_unlock", Op::Unlock { shared: false }),
        f("pg_advisory_unlock_shared", Op::Unlock { shared: true }),
        f("pg_advisory_unlock_all", Op::UnlockAll),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(locks: &Arc<AdvisoryLocks>, db: &str) -> Arc<SessionLocks> {
        SessionLocks::new(locks.clone(), db, Arc::new(Interrupt::default()))
    }

    fn key(k: i64) -> Key {
        ("d".into(), false, k)
    }

    #[test]
    fn exclusive_shared_reentrant_and_scoped() {
        let locks = Arc::new(AdvisoryLocks::default());
        let (a, b) = (session(&locks, "d"), session(&locks, "d"));
        assert!(a.lock(key(1), true, false, false).unwrap());
        // Re-entrant for its holder, refused to others.
        assert!(a.lock(key(1), true, false, false).unwrap());
        assert!(!b.lock(key(1), true, false, false).unwrap());
        assert!(!b.lock(key(1), false, false, false).unwrap());
        // Another key, another database, the two-integer key space: free.
        assert!(b.lock(key(2), true, false, false).unwrap());
        assert!(
            session(&locks, "e")
                .lock(("e".into(), false, 1), true, false, false)
                .unwrap()
        );
        assert!(b.lock(("d".into(), true, 1), true, false, false).unwrap());
        // Held twice: one unlock is not enough.
        assert!(a.release(|h| !h.transaction && h.exclusive && h.key == key(1), false));
        assert!(!b.lock(key(1), false, false, false).unwrap());
        assert!(a.release(|h| !h.transaction && h.exclusive && h.key == key(1), false));
        assert!(!a.release(|h| !h.transaction && h.exclusive && h.key == key(1), false));
        // Shared with shared, not with exclusive.
        assert!(b.lock(key(1), false, false, false).unwrap());
        assert!(a.lock(key(1), false, false, false).unwrap());
        assert!(
            !session(&locks, "d")
                .lock(key(1), true, false, false)
                .unwrap()
        );
        // Transaction locks go when the transaction ends; session ones stay.
        let c = session(&locks, "d");
        assert!(c.lock(key(9), true, true, false).unwrap());
        assert!(c.lock(key(10), true, false, false).unwrap());
        c.transaction_ended();
        assert!(a.lock(key(9), true, false, false).unwrap());
        assert!(!a.lock(key(10), true, false, false).unwrap());
        // A session that ends gives everything back.
        drop(c);
        assert!(a.lock(key(10), true, false, false).unwrap());
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released_or_stops_when_told() {
        let locks = Arc::new(AdvisoryLocks::default());
        let a = session(&locks, "d");
        assert!(a.lock(key(1), true, false, false).unwrap());
        let interrupt = Arc::new(Interrupt::default());
        let b = SessionLocks::new(locks.clone(), "d", interrupt.clone());
        let waiter = std::thread::spawn(move || b.lock(key(1), true, false, true).map(|_| b));
        std::thread::sleep(Duration::from_millis(100));
        a.release_all();
        let b = waiter.join().unwrap().unwrap();
        // Now a waits, and is stopped.
        let stop = Arc::new(Interrupt::default());
        let a2 = SessionLocks::new(locks.clone(), "d", stop.clone());
        let waiter = std::thread::spawn(move || a2.lock(key(1), true, false, true));
        std::thread::sleep(Duration::from_millis(100));
        stop.request(quiver_common::interrupt::Canceled::UserRequest);
        assert!(waiter.join().unwrap().is_err());
        drop(b);
    }
}
