//! A client session: who is connected, to which database, its variables and
//! its DataFusion state.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use quiver_storage::{Transaction, TxSlot};

use datafusion::execution::{SessionState, TaskContext};
use parking_lot::{Mutex, RwLock};

use super::QueryError;
use quiver_common::interrupt::Interrupt;

pub struct Session {
    user: String,
    database: RwLock<String>,
    state: Arc<SessionState>,
    /// `state` without physical optimizer rules: plain vector searches
    /// (projection, limit, `AnnSearchExec`) need none of them, and running
    /// them costs as much as the search on small data.
    search_state: Arc<SessionState>,
    /// Built once: making a task context copies every function registry.
    task: Arc<TaskContext>,
    vars: Mutex<BTreeMap<String, String>>,
    /// Defaults set for the server (e.g. `statement_timeout`).
    defaults: Arc<BTreeMap<String, String>>,
    interrupt: Arc<Interrupt>,
    /// The transaction the session is in (also an extension of `state`'s
    /// config, where its statements' plans find it).
    tx: Arc<TxSlot>,
    /// Idle, in a transaction block, or in a failed one: what
    /// ReadyForQuery reports (the connection reads it).
    block: Arc<BlockStatus>,
    txn: Mutex<BlockState>,
    /// Open cursors (DECLARE).
    pub cursors: Arc<crate::cursor::Cursors>,
    /// The length of the text last parsed ([`Self::reserve_parse`]).
    parsed_len: std::sync::atomic::AtomicUsize,
    /// NOTICEs the running statement raised (SQLSTATE, message), sent
    /// before its result.
    notices: Mutex<Vec<(&'static str, String)>>,
    /// Where a block's CREATEs are dropped if the client leaves mid-block.
    undo_in: Option<(Arc<quiver_catalog::Catalog>, Arc<quiver_storage::Storage>)>,
    /// The advisory locks it holds (also an extension of `state`'s config,
    /// where its functions find them).
    advisory: Option<Arc<crate::advisory::SessionLocks>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(locks) = &self.advisory {
            locks.release_all();
        }
        let undo = self.abandoned();
        if let (false, Some((catalog, storage))) = (undo.is_empty(), self.undo_in.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { crate::ddl_undo::undo(&catalog, &storage, undo).await });
        }
    }
}

/// What a transaction block keeps besides its writes.
#[derive(Debug, Default)]
struct BlockState {
    read_only: bool,
    /// The isolation level as the client named it (`SHOW`).
    isolation: Option<String>,
    /// The settings at BEGIN, restored by ROLLBACK.
    vars_at_begin: Option<BTreeMap<String, String>>,
    /// SET LOCAL: the values to restore when the block ends.
    local: BTreeMap<String, Option<String>>,
    /// What the block's CREATEs made (dropped unless it commits).
    undo: Vec<crate::ddl_undo::Undo>,
    /// What the block's DROPs drop at COMMIT: database, name, id.
    drops: Vec<(String, String, u64)>,
    /// Savepoints: the undo list's length and the settings at each.
    savepoints: Vec<(String, usize, BTreeMap<String, String>)>,
    /// The drops list's length at each savepoint.
    drop_marks: Vec<usize>,
}

/// A session's transaction status, as the ReadyForQuery message reports
/// it: `I` idle, `T` in a transaction block, `E` in a failed one (every
/// statement but ROLLBACK refused with 25P02). The connection marks a
/// block failed when an error goes out to the client inside it.
#[derive(Debug, Default)]
pub struct BlockStatus(AtomicU8);

const IDLE: u8 = 0;
const IN_BLOCK: u8 = 1;
const FAILED: u8 = 2;

impl BlockStatus {
    /// The ReadyForQuery status byte.
    pub fn byte(&self) -> u8 {
        match self.0.load(Ordering::SeqCst) {
            IN_BLOCK => b'T',
            FAILED => b'E',
            _ => b'I',
        }
    }

    /// An error was sent to the client: a block in progress fails.
    pub fn error(&self) {
        let _ = self
            .0
            .compare_exchange(IN_BLOCK, FAILED, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn in_block(&self) -> bool {
        self.0.load(Ordering::SeqCst) != IDLE
    }

    pub fn failed(&self) -> bool {
        self.0.load(Ordering::SeqCst) == FAILED
    }

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({}@{})", self.user, self.database.read())
    }
}

/// What values a setting takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Any text (kept as given).
    Text,
    /// One of these (compared without case); any other is refused with
    /// 0A000: quiver implements only these.
    OneOf(&'static [&'static str]),
    /// One of these, all that PostgreSQL takes (kept in lower case, as
    /// PostgreSQL shows them); any other is invalid (22023).
    Enum(&'static [&'static str]),
    /// PostgreSQL's DateStyle: the output style must be ISO.
    DateStyle,
    /// An integer in this range.
    Int(i64, i64),
    /// A duration in milliseconds (`50`, `'5s'`, `'1min'`); 0 is off.
    Millis,
    /// A Boolean, in any of PostgreSQL's spellings, shown as on or off.
    Bool,
    /// Reported, never changed (55P02).
    ReadOnly,
}

/// Every setting a session has, with its default as `SHOW` reports it (the
/// search knobs `hnsw.ef_search` and `ivfflat.probes` default to
/// `quiver_vector::index::SearchKnobs::default()`). A name PostgreSQL would
/// not know either is refused with 42704; a name with a dot is a custom
/// setting, kept as text, as in PostgreSQL.
const SETTINGS: &[(&str, &str, Kind)] = &[
    ("application_name", "", Kind::Text),
    ("client_encoding", "UTF8", Kind::OneOf(&["utf8", "unicode"])),
    (
        "client_min_messages",
        "notice",
        Kind::Enum(&[
            "debug5", "debug4", "debug3", "debug2", "debug1", "debug", "log", "notice", "warning",
            "error",
        ]),
    ),
    // Settings of features quiver does not have (function bodies, row
    // security policies, XML, tablespaces, table access methods), which
    // every value leaves as they are: pg_dump's scripts set them first.
    ("check_function_bodies", "on", Kind::Bool),
    ("datestyle", "ISO, MDY", Kind::DateStyle),
    ("default_table_access_method", "heap", Kind::Enum(&["heap"])),
    ("default_tablespace", "", Kind::OneOf(&[""])),
    (
        "default_transaction_isolation",
        "read committed",
        Kind::OneOf(&["read committed", "read uncommitted", "repeatable read"]),
    ),
    (
        "default_transaction_read_only",
        "off",
        Kind::OneOf(&["on", "off", "true", "false"]),
    ),
    ("extra_float_digits", "1", Kind::Int(-15, 3)),
    ("idle_in_transaction_session_timeout", "0", Kind::Millis),
    ("integer_datetimes", "on", Kind::ReadOnly),
    // quiver compiles no expressions: off, and a SET changes nothing
    // (asyncpg reads it before its type introspection).
    ("jit", "off", Kind::Bool),
    ("intervalstyle", "postgres", Kind::OneOf(&["postgres"])),
    ("max_identifier_length", "63", Kind::ReadOnly),
    // `SET ROLE NONE`: the session's own role (SET ROLE to another one is
    // refused when parsed).
    ("role", "none", Kind::OneOf(&["none"])),
    ("search_path", "\"$user\", public", Kind::Text),
    ("server_encoding", "UTF8", Kind::ReadOnly),
    (
        "server_version",
        quiver_common::SERVER_VERSION,
        Kind::ReadOnly,
    ),
    (
        "server_version_num",
        quiver_common::SERVER_VERSION_NUM,
        Kind::ReadOnly,
    ),
    (
        "standard_conforming_strings",
        "on",
        Kind::OneOf(&["on", "true", "1"]),
    ),
    ("row_security", "on", Kind::Bool),
    ("statement_timeout", "0", Kind::Millis),
    ("lock_timeout", "0", Kind::Millis),
    ("xmloption", "content", Kind::Enum(&["content", "document"])),
    (
        "timezone",
        "UTC",
        Kind::OneOf(&[
            "utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "utc0", "+00:00",
        ]),
    ),
    (
        "transaction_isolation",
        "read committed",
        Kind::OneOf(&["read committed", "read uncommitted", "repeatable read"]),
    ),
    (
        "transaction_read_only",
        "off",
        Kind::OneOf(&["on", "off", "true", "false"]),
    ),
    ("hnsw.ef_search", "", Kind::Int(1, 1000)),
    ("ivfflat.probes", "", Kind::Int(1, 1000)),
    ("quiver.refine_k", "", Kind::Int(0, 1000)),
];

fn setting(name: &str) -> Option<(&'static str, Kind)> {
    SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, d, k)| (*d, *k))
}

/// Milliseconds of a duration setting: an integer (milliseconds) or a
/// number with a unit (`ms`, `s`, `min`, `h`, `d`), as PostgreSQL reads it.
pub fn parse_millis(value: &str) -> Option<u64> {
    let v = value.trim().trim_matches('\'').trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1e3,
        "min" => 60e3,
        "h" => 3600e3,
        "d" => 86400e3,
        _ => return None,
    };
    let ms = (number * scale).round();
    (ms.is_finite() && (0.0..=i32::MAX as f64).contains(&ms)).then_some(ms as u64)
}

/// A duration as PostgreSQL's SHOW writes it: the largest whole unit.
fn show_millis(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Why `name` (lower case, no dot), which is no setting of quiver's, is
/// refused: 0A000 for one of PostgreSQL's (`work_mem`), 42704 for a name
/// PostgreSQL does not know either.
pub fn unknown_setting(name: &str) -> QueryError {
    if super::pg_settings::is_postgres_setting(name) {
        QueryError::Unsupported(format!(
            "parameter \"{name}\" is not supported: quiver does not implement this PostgreSQL setting"
        ))
    } else {
        QueryError::UnknownSetting(name.to_string())
    }
}

/// The value of `name` to store, or why `value` is refused.
fn check_setting(name: &str, value: &str) -> Result<String, QueryError> {
    let v = value.trim();
    let Some((_, kind)) = setting(name) else {
        if name.contains('.') {
            return Ok(v.to_string());
        }
        return Err(unknown_setting(name));
    };
    let invalid = |expected: &str| {
        QueryError::InvalidParameter(format!(
            "invalid value for parameter \"{name}\": \"{v}\" ({expected})"
        ))
    };
    // PostgreSQL reads encoding names without case, dashes or underscores
    // (asyncpg sends 'utf-8').
    if name == "client_encoding" {
        let bare: String = v.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        if bare.eq_ignore_ascii_case("utf8") || bare.eq_ignore_ascii_case("unicode") {
            return Ok("UTF8".to_string());
        }
    }
    match kind {
        Kind::Text => Ok(v.to_string()),
        Kind::Bool => {
            let b = v.trim_matches('\'').to_ascii_lowercase();
            let prefix = |word: &str, min: usize| b.len() >= min && word.starts_with(b.as_str());
            if prefix("true", 1) || prefix("yes", 1) || b == "on" || b == "1" {
                Ok("on".to_string())
            } else if prefix("false", 1) || prefix("no", 1) || prefix("off", 2) || b == "0" {
                Ok("off".to_string())
            } else {
                Err(QueryError::InvalidParameter(format!(
                    "parameter \"{name}\" requires a Boolean value"
                )))
            }
        }
        Kind::ReadOnly => Err(QueryError::ReadOnlySetting(name.to_string())),
        Kind::Enum(allowed) => {
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) {
                Ok(v.to_ascii_lowercase())
            } else {
                Err(invalid(&format!(
                    "one of {}",
                    allowed
                        .iter()
                        .map(|a| format!("'{a}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
        Kind::OneOf(allowed) => {
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) {
                Ok(v.to_string())
            } else {
                Err(QueryError::Unsupported(format!(
                    "SET {name} = '{v}' is not supported: quiver implements {name} {}",
                    allowed
                        .iter()
                        .map(|a| format!("'{a}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
        Kind::DateStyle => {
            if v.split(',').any(|p| p.trim().eq_ignore_ascii_case("iso")) {
                Ok(v.to_string())
            } else {
                Err(QueryError::Unsupported(format!(
                    "SET datestyle = '{v}' is not supported: quiver writes dates in the ISO style"
                )))
            }
        }
        Kind::Int(lo, hi) => match v.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid(&format!("an integer from {lo} to {hi}"))),
        },
        Kind::Millis => parse_millis(v)
            .map(show_millis)
            .ok_or_else(|| invalid("a duration such as 500, '5s' or '1min'; 0 turns it off")),
    }
}

impl Session {
    pub fn new(
        user: &str,
        database: &str,
        state: SessionState,
        defaults: Arc<BTreeMap<String, String>>,
    ) -> Session {
        let interrupt = state
            .config()
            .get_extension::<Interrupt>()
            .unwrap_or_default();
        let tx = state.config().get_extension::<TxSlot>().unwrap_or_default();
        let advisory = state
            .config()
            .get_extension::<crate::advisory::SessionLocks>();
        let search_state =
            datafusion::execution::SessionStateBuilder::new_from_existing(state.clone())
                .with_physical_optimizer_rules(vec![])
                .build();
        Session {
            user: user.to_string(),
            database: RwLock::new(database.to_string()),
            task: state.task_ctx(),
            state: Arc::new(state),
            search_state: Arc::new(search_state),
            vars: Mutex::new(BTreeMap::new()),
            defaults,
            interrupt,
            tx,
            block: Arc::new(BlockStatus::default()),
            txn: Mutex::new(BlockState::default()),
            cursors: Default::default(),
            parsed_len: Default::default(),
            notices: Default::default(),
            undo_in: None,
            advisory,
        }
    }

    /// Where what a block's CREATEs made is dropped if the client leaves
    /// mid-block.
    pub fn with_catalog(
        mut self,
        catalog: Arc<quiver_catalog::Catalog>,
        storage: Arc<quiver_storage::Storage>,
    ) -> Session {
        self.undo_in = Some((catalog, storage));
        self
    }

    /// The session's transaction status (shared with its connection).
    pub fn block(&self) -> &Arc<BlockStatus> {
        &self.block
    }

    /// The transaction the session is in.
    pub fn transaction(&self) -> Option<Arc<Transaction>> {
        self.tx.get()
    }

    /// BEGIN: `tx` is the session's transaction from now on.
    pub fn begin(&self, tx: Arc<Transaction>, read_only: bool, isolation: &str) {
        self.tx.set(Some(tx));
        *self.txn.lock() = BlockState {
            read_only,
            isolation: Some(isolation.to_string()),
            vars_at_begin: Some(self.vars.lock().clone()),
            ..BlockState::default()
        };
        self.block.set(IN_BLOCK);
    }

    /// The settings become `before` again.
    fn restore_vars(&self, before: &BTreeMap<String, String>) {
        let now = self.vars.lock().clone();
        let mut names: Vec<String> = now.keys().chain(before.keys()).cloned().collect();
        names.sort();
        names.dedup();
        for name in names {
            let value = before.get(&name).cloned();
            self.apply_search_knob(&name, value.as_deref());
            let mut vars = self.vars.lock();
            match value {
                Some(v) => vars.insert(name, v),
                None => vars.remove(&name),
            };
        }
    }

    /// The block ends (COMMIT or ROLLBACK): its transaction is handed
    /// back, with what its CREATEs made if it rolls back (to drop);
    /// settings made with SET LOCAL, and with `rollback` every setting made
    /// in it, return to what they were.
    pub fn end(&self, rollback: bool) -> (Option<Arc<Transaction>>, Vec<crate::ddl_undo::Undo>) {
        let state = std::mem::take(&mut *self.txn.lock());
        match (rollback, &state.vars_at_begin) {
            (true, Some(before)) => self.restore_vars(before),
            _ => {
                for (name, value) in state.local {
                    self.apply_search_knob(&name, value.as_deref());
                    let mut vars = self.vars.lock();
                    match value {
                        Some(v) => vars.insert(name, v),
                        None => vars.remove(&name),
                    };
                }
            }
        }
        let undo = if rollback { state.undo } else { Vec::new() };
        // Transaction-scoped advisory locks stay until the commit is
        // durable: the connection releases them once the session is idle
        // outside a block (`transaction_ended`).
        self.block.set(IDLE);
        self.cursors.block_ended(rollback);
        let tx = self.tx.get();
        self.tx.set(None);
        (tx, undo)
    }

    /// A transaction ended (a block, or a statement outside one): its
    /// transaction-scoped advisory locks go.
    pub fn transaction_ended(&self) {
        if let Some(locks) = &self.advisory {
            locks.transaction_ended();
        }
    }

    /// `DISCARD ALL`: the session's advisory locks go too (it runs
    /// outside blocks, so all are session-scoped).
    pub fn discard_advisory_locks(&self) {
        if let Some(locks) = &self.advisory {
            locks.release_all();
        }
    }

    /// What the block's CREATEs made so far.
    pub fn txn_undo(&self) -> Vec<crate::ddl_undo::Undo> {
        self.txn.lock().undo.clone()
    }

    /// DROP TABLE or DROP INDEX inside the block (`id`: the collection's or
    /// the index's): done at COMMIT.
    pub fn drop_at_commit(&self, db: String, name: String, id: u64) {
        let mut state = self.txn.lock();
        if !state.drops.iter().any(|(_, _, i)| *i == id) {
            state.drops.push((db, name, id));
        }
    }

    /// The drops a committing block makes now.
    pub fn take_drops(&self) -> Vec<(String, String, u64)> {
        std::mem::take(&mut self.txn.lock().drops)
    }

    /// A CREATE inside the block made `what`.
    pub fn created(&self, what: crate::ddl_undo::Undo) {
        self.txn.lock().undo.push(what);
    }

    /// SAVEPOINT `name`: where ROLLBACK TO returns the settings and drops
    /// later CREATEs.
    pub fn savepoint(&self, name: &str) {
        let vars = self.vars.lock().clone();
        let mut state = self.txn.lock();
        let at = state.undo.len();
        let drops = state.drops.len();
        state.savepoints.push((name.to_string(), at, vars));
        state.drop_marks.push(drops);
    }

    /// ROLLBACK TO SAVEPOINT `name`: the settings as they were there; what
    /// CREATEs made since, to drop.
    pub fn rollback_to(&self, name: &str) -> Vec<crate::ddl_undo::Undo> {
        let (undo, vars) = {
            let mut state = self.txn.lock();
            let Some(i) = state.savepoints.iter().rposition(|(n, _, _)| n == name) else {
                return Vec::new();
            };
            state.savepoints.truncate(i + 1);
            state.drop_marks.truncate(i + 1);
            if let Some(&mark) = state.drop_marks.get(i) {
                state.drops.truncate(mark);
            }
            let (_, at, vars) = state.savepoints[i].clone();
            let at = at.min(state.undo.len());
            (state.undo.split_off(at), vars)
        };
        self.restore_vars(&vars);
        undo
    }

    /// Whether a savepoint is open (a subtransaction, in PostgreSQL's words).
    pub fn in_savepoint(&self) -> bool {
        !self.txn.lock().savepoints.is_empty()
    }

    /// RELEASE SAVEPOINT `name`.
    pub fn release(&self, name: &str) {
        let mut state = self.txn.lock();
        if let Some(i) = state.savepoints.iter().rposition(|(n, _, _)| n == name) {
            state.savepoints.truncate(i);
            state.drop_marks.truncate(i);
        }
    }

    /// The client left inside a block: what its CREATEs made, to drop.
    pub fn abandoned(&self) -> Vec<crate::ddl_undo::Undo> {
        if !self.block.in_block() {
            return Vec::new();
        }
        self.end(true).1
    }

    /// ROLLBACK TO SAVEPOINT: a failed block is usable again.
    pub fn recovered(&self) {
        if self.block.failed() {
            self.block.set(IN_BLOCK);
        }
    }

    /// BEGIN READ ONLY, SET TRANSACTION READ ONLY.
    pub fn read_only(&self) -> bool {
        self.txn.lock().read_only
    }

    /// SET TRANSACTION: the block's access mode and isolation (as named).
    pub fn set_transaction(&self, read_only: Option<bool>, isolation: Option<&str>) {
        let mut state = self.txn.lock();
        if let Some(r) = read_only {
            state.read_only = r;
        }
        if let Some(i) = isolation {
            state.isolation = Some(i.to_string());
        }
    }

    /// `SET LOCAL name = value`: until the block ends (outside one, as
    /// PostgreSQL, it has no effect beyond the statement; the caller warns).
    pub fn set_local(&self, name: &str, value: &str) -> Result<(), QueryError> {
        let name = name.to_ascii_lowercase();
        let previous = self.vars.lock().get(&name).cloned();
        self.set_var(&name, value)?;
        self.txn.lock().local.entry(name).or_insert(previous);
        Ok(())
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn database(&self) -> String {
        self.database.read().clone()
    }

    /// Reserve, in the session's query memory, what parsing `text` takes
    /// (sqlparser's tokens and tree: see [`super::memory::parse_cost`]);
    /// 53200 when that is more than the session's share or the server's
    /// pool has free. Text under 1 MiB is not counted. Hold the
    /// reservation while the parsed statements are.
    pub fn reserve_parse(
        &self,
        text: &str,
    ) -> Result<Option<datafusion::execution::memory_pool::MemoryReservation>, QueryError> {
        self.parsed_len
            .store(text.len(), std::sync::atomic::Ordering::Relaxed);
        super::memory::reserve_parse(&self.state.runtime_env().memory_pool, text)
    }

    /// Raise a NOTICE (`DROP TABLE IF EXISTS` of a missing table), sent to
    /// the client before the statement's result.
    pub fn notice(&self, code: &'static str, message: String) {
        self.notices.lock().push((code, message));
    }

    /// The NOTICEs raised since the last call.
    pub fn take_notices(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.notices.lock())
    }

    /// Reserve what DataFusion's planning of the statement last parsed
    /// takes beyond its parse ([`super::memory::PLAN_FACTOR`]); hold it
    /// while the plan runs.
    pub fn reserve_plan(
        &self,
    ) -> Result<Option<datafusion::execution::memory_pool::MemoryReservation>, QueryError> {
        let len = self.parsed_len.load(std::sync::atomic::Ordering::Relaxed);
        super::memory::reserve_plan(&self.state.runtime_env().memory_pool, len)
    }

    /// The DataFusion state statements are planned with.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The state plain vector searches are planned with (no physical
    /// optimizer rules).
    pub fn search_state(&self) -> &SessionState {
        &self.search_state
    }

    /// The context physical plans execute in.
    pub fn task_ctx(&self) -> Arc<TaskContext> {
        self.task.clone()
    }

    /// Check `SET name = value` without applying it.
    pub fn check_var(name: &str, value: &str) -> Result<(), QueryError> {
        check_setting(name, value).map(|_| ())
    }

    /// The value `SET name = value` would store (`on` for `true`, ...).
    pub fn normalize_var(name: &str, value: &str) -> Result<String, QueryError> {
        check_setting(&name.to_ascii_lowercase(), value)
    }

    /// `SET name = value`, checked as PostgreSQL does.
    pub fn set_var(&self, name: &str, value: &str) -> Result<(), QueryError> {
        let name = name.to_ascii_lowercase();
        let value = check_setting(&name, value)?;
        self.apply_search_knob(&name, Some(&value));
        self.vars.lock().insert(name, value);
        Ok(())
    }

    /// `RESET name` (`None`: `RESET ALL`, `DISCARD ALL`): back to the
    /// default.
    pub fn reset_var(&self, name: Option<&str>) -> Result<(), QueryError> {
        match name {
            None => {
                let names: Vec<String> = self.vars.lock().keys().cloned().collect();
                for n in names {
                    self.apply_search_knob(&n, None);
                }
                self.vars.lock().clear();
            }
            Some(name) => {
                let name = name.to_ascii_lowercase();
                match setting(&name) {
                    Some((_, Kind::ReadOnly)) => {
                        return Err(QueryError::ReadOnlySetting(name));
                    }
                    None if !name.contains('.') => return Err(unknown_setting(&name)),
                    _ => {}
                }
                self.apply_search_knob(&name, None);
                self.vars.lock().remove(&name);
            }
        }
        Ok(())
    }

    /// A search knob's value in the DataFusion state (`None`: its default).
    fn apply_search_knob(&self, name: &str, value: Option<&str>) {
        let Some(settings) = self
            .state
            .config()
            .get_extension::<quiver_exec::ann_search::SearchSettings>()
        else {
            return;
        };
        let defaults = quiver_vector::index::SearchKnobs::default();
        let mut knobs = settings.0.lock();
        let parsed = value.and_then(|v| v.parse::<usize>().ok());
        match name {
            "hnsw.ef_search" => knobs.ef = parsed.unwrap_or(defaults.ef),
            "ivfflat.probes" => knobs.nprobe = parsed.unwrap_or(defaults.nprobe),
            "quiver.refine_k" => knobs.refine = parsed.unwrap_or(defaults.refine),
            _ => {}
        }
    }

    /// `statement_timeout` in force (`None`: off).
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.millis_var("statement_timeout")
    }

    /// `lock_timeout` in force (`None`: off): how long a statement waits
    /// for a lock (a collection's, or an advisory one) before 55P03.
    pub fn lock_timeout(&self) -> Option<std::time::Duration> {
        self.millis_var("lock_timeout")
    }

    /// `idle_in_transaction_session_timeout` in force (`None`: off).
    pub fn idle_in_transaction_timeout(&self) -> Option<std::time::Duration> {
        self.millis_var("idle_in_transaction_session_timeout")
    }

    fn millis_var(&self, name: &str) -> Option<std::time::Duration> {
        self.var(name)
            .and_then(|v| parse_millis(&v))
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    }

    /// The session's stop signal (cancel requests, timeouts).
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The search settings in force (`SET hnsw.ef_search`, ...).
    pub fn search_knobs(&self) -> quiver_vector::index::SearchKnobs {
        self.state
            .config()
            .get_extension::<quiver_exec::ann_search::SearchSettings>()
            .map(|s| *s.0.lock())
            .unwrap_or_default()
    }

    /// Use these search settings until the guard is dropped.
    pub fn tune(
        &self,
        ef: Option<u64>,
        nprobe: Option<u64>,
        refine: Option<u64>,
    ) -> Option<TuneGuard> {
        let settings = self
            .state
            .config()
            .get_extension::<quiver_exec::ann_search::SearchSettings>()?;
        let previous = *settings.0.lock();
        {
            let mut knobs = settings.0.lock();
            if let Some(ef) = ef {
                knobs.ef = ef.clamp(1, 100_000) as usize;
            }
            if let Some(n) = nprobe {
                knobs.nprobe = n.clamp(1, 65_536) as usize;
            }
            if let Some(n) = refine {
                knobs.refine = n.min(1000) as usize;
            }
        }
        Some(TuneGuard { settings, previous })
    }

    pub fn var(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if self.block.in_block() {
            let state = self.txn.lock();
            match name.as_str() {
                "transaction_isolation" => return state.isolation.clone(),
                "transaction_read_only" => {
                    return Some(if state.read_only { "on" } else { "off" }.into());
                }
                _ => {}
            }
        }
        match name.as_str() {
            "transaction_isolation" => return self.var("default_transaction_isolation"),
            "transaction_read_only" => {
                let on = matches!(
                    self.var("default_transaction_read_only").as_deref(),
                    Some("on" | "true")
                );
                return Some(if on { "on" } else { "off" }.into());
            }
            _ => {}
        }
        if let Some(v) = self.vars.lock().get(&name) {
            return Some(v.clone());
        }
        let knobs = quiver_vector::index::SearchKnobs::default();
        match name.as_str() {
            "hnsw.ef_search" => return Some(knobs.ef.to_string()),
            "ivfflat.probes" => return Some(knobs.nprobe.to_string()),
            "quiver.refine_k" => return Some(knobs.refine.to_string()),
            _ => {}
        }
        if let Some(v) = self.defaults.get(&name) {
            return Some(v.clone());
        }
        setting(&name).map(|(d, _)| d.to_string())
    }

    /// Whether `name` is a setting (SHOW of another is 42704).
    pub fn knows_var(name: &str) -> bool {
        setting(&name.to_ascii_lowercase()).is_some()
    }
}

/// Server-wide defaults of session settings (`[limits]`): checked like a
/// SET, so a bad value stops the server at start.
pub fn check_default(name: &str, value: &str) -> Result<String, QueryError> {
    check_setting(name, value)
}

/// Restores a session's search settings when dropped.
pub struct TuneGuard {
    settings: Arc<quiver_exec::ann_search::SearchSettings>,
    previous: quiver_vector::index::SearchKnobs,
}

impl Drop for TuneGuard {
    fn drop(&mut self) {
        *self.settings.0.lock() = self.previous;
    }
}

/// The optimizer's view of a session at one statement's start: `now()`,
/// `current_date` and the like are folded to this statement's start time.
/// (The session's state keeps the time it was built at, which was the
/// server's start: every `now()` returned it.)
struct AtStart<'a> {
    state: &'a SessionState,
    now: chrono::DateTime<chrono::Utc>,
}

impl datafusion::optimizer::OptimizerConfig for AtStart<'_> {
    fn query_execution_start_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        Some(self.now)
    }
    fn alias_generator(&self) -> &Arc<datafusion::common::alias::AliasGenerator> {
        datafusion::optimizer::OptimizerConfig::alias_generator(self.state)
    }
    fn options(&self) -> Arc<datafusion::config::ConfigOptions> {
        datafusion::optimizer::OptimizerConfig::options(self.state)
    }
    fn function_registry(&self) -> Option<&dyn datafusion::execution::FunctionRegistry> {
        Some(self.state)
    }
}

/// `state.optimize(plan)`, with the current time as the statement's start.
pub fn optimize(
    state: &SessionState,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
    if matches!(plan, datafusion::logical_expr::LogicalPlan::Explain(_)) {
        return state.optimize(plan);
    }
    let analyzed =
        state
            .analyzer()
            .execute_and_check(plan.clone(), state.config_options(), |_, _| {})?;
    let at = AtStart {
        state,
        now: chrono::Utc::now(),
    };
    state.optimizer().optimize(analyzed, &at, |_, _| {})
}

/// Whether `plan` reads the clock (`now()`, `current_date`, ...), whose
/// value an optimised plan holds as a constant.
pub fn reads_clock(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::logical_expr::Expr;
    const CLOCK: &[&str] = &[
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "today",
        "localtimestamp",
        "localtime",
    ];
    any_expr(plan, &mut |e| {
        matches!(e, Expr::ScalarFunction(f)
            if CLOCK.contains(&f.func.name())
                || f.func.aliases().iter().any(|a| CLOCK.contains(&a.as_str())))
    })
}

/// Whether an expression of `plan`, or of its subqueries, or inside either,
/// is one `found` is looking for.
pub fn any_expr(
    plan: &datafusion::logical_expr::LogicalPlan,
    found: &mut dyn FnMut(&datafusion::logical_expr::Expr) -> bool,
) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut hit = false;
    let _ = plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            let _ = e.apply(|e| {
                hit = hit || found(e);
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(if hit {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    hit
}
