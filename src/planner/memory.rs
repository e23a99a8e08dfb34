//! Memory for queries: one pool for the server (`[limits]
//! query_memory_total`), and within it one per session (`query_memory`) so
//! that no single statement can take it all. Sorts, aggregates and joins
//! that can spill go to disk (`<data dir>/tmp`) when their share runs out;
//! the others stop with 53200.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// How much memory queries may hold.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMemory {
    /// All sessions' queries together.
    pub total: usize,
    /// One session's running statement.
    pub per_query: usize,
    /// Where operators spill (none: they do not).
    pub spill_dir: Option<std::path::PathBuf>,
}

impl QueryMemory {
    /// The server's pool.
    pub fn server_pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(FairSpillPool::new(self.total))
    }
}

impl Default for QueryMemory {
    fn default() -> QueryMemory {
        QueryMemory {
            total: 4 << 30,
            per_query: 1 << 30,
            spill_dir: None,
        }
    }
}

/// Parsing a statement takes about this many times its text: sqlparser's
/// tokens and tree (measured: a 22 MB multi-row VALUES of literals peaked
/// 1,202 MiB above the starting RSS, 55 times).
pub const PARSE_FACTOR: usize = 64;

/// What each operator (`+`, `||`, `::`, ...) adds to a parse: an
/// expression node and its boxed operands, and the rewrites' copies
/// (measured: a 20.5 MB VALUES of sums, casts and concatenations, 1.6
/// million operators, peaked at 2.58 GB, where 64 times its text is 1.3 GB:
/// 790 bytes each; `INSERT ... SELECT * FROM (VALUES (i+1, i*2), ...)` of
/// 19.8 MB, 2 million operators, peaked at 4.1 GB: 1,430 each).
pub const PARSE_PER_OPERATOR: usize = 1500;

/// Statements shorter than this are not counted.
const PARSE_COUNTED: usize = 1 << 20;

/// What parsing `text` takes: [`PARSE_FACTOR`] times its length, and
/// [`PARSE_PER_OPERATOR`] for each run of operator characters outside
/// quotes.
pub fn parse_cost(text: &str) -> usize {
    let mut operators = 0usize;
    let mut quote: Option<u8> = None;
    let mut in_operator = false;
    for &b in text.as_bytes() {
        match quote {
            Some(q) => {
                if b == q {
                    quote = None;
                }
            }
            None => {
                let op = matches!(
                    b,
                    b'+' | b'-'
                        | b'*'
                        | b'/'
                        | b'|'
                        | b':'
                        | b'<'
                        | b'>'
                        | b'='
                        | b'%'
                        | b'^'
                        | b'&'
                        | b'~'
                        | b'!'
                );
                if op && !in_operator {
                    operators += 1;
                }
                in_operator = op;
                if b == b'\'' || b == b'"' {
                    quote = Some(b);
                }
            }
        }
    }
    text.len()
        .saturating_mul(PARSE_FACTOR)
        .saturating_add(operators.saturating_mul(PARSE_PER_OPERATOR))
}

/// Reserve in `pool` what parsing `text` takes (see [`parse_cost`]);
/// 53200 naming the statement's size when it does not fit.
pub fn reserve_parse(
    pool: &Arc<dyn MemoryPool>,
    text: &str,
) -> Result<Option<MemoryReservation>, super::QueryError> {
    if text.len() < PARSE_COUNTED {
        return Ok(None);
    }
    let reservation = MemoryConsumer::new(format!(
        "parsing a statement of {} (load many rows with COPY instead)",
        mib(text.len())
    ))
    .register(pool);
    reservation.try_grow(parse_cost(text))?;
    Ok(Some(reservation))
}

/// Planning and running a statement DataFusion plans from its syntax tree
/// (an INSERT whose VALUES hold expressions, not plain literals) takes
/// about this many times its text, parsing included (measured: a 13.8 MB
/// VALUES of casts and sums peaked 2.65 GB above the starting RSS, 192
/// times).
pub const PLAN_FACTOR: usize = 200;

/// Reserve in `pool` what planning a statement of `text_len` bytes takes
/// beyond parsing it (see [`PLAN_FACTOR`]); 53200 naming its size when it
/// does not fit.
pub fn reserve_plan(
    pool: &Arc<dyn MemoryPool>,
    text_len: usize,
) -> Result<Option<MemoryReservation>, super::QueryError> {
    if text_len < PARSE_COUNTED {
        return Ok(None);
    }
    let reservation = MemoryConsumer::new(format!(
        "planning a statement of {} (load many rows with COPY, or write VALUES of plain literals)",
        mib(text_len)
    ))
    .register(pool);
    reservation.try_grow(text_len.saturating_mul(PLAN_FACTOR - PARSE_FACTOR))?;
    Ok(Some(reservation))
}

/// One session's share of the server's pool.
#[derive(Debug)]
pub struct SessionPool {
    server: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl SessionPool {
    pub fn new(server: Arc<dyn MemoryPool>, limit: usize) -> SessionPool {
        SessionPool {
            server,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Display for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session pool of {} bytes", self.limit)
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl MemoryPool for SessionPool {
    fn name(&self) -> &str {
        "quiver-session"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.server.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(shrink))
            });
        self.server.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let used = self.used.load(Ordering::SeqCst);
        if used + additional > self.limit {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the statement needs more than its memory limit: {} held, {} more asked for {} (query_memory = {}; raise it in [limits] or make the statement smaller)",
                mib(used),
                mib(additional),
                reservation.consumer().name(),
                mib(self.limit),
            )));
        }
        self.server.try_grow(reservation, additional).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "the server's query memory is in use by other statements: {} more asked for {} ({e})",
                mib(additional),
                reservation.consumer().name(),
            ))
        })?;
        self.used.fetch_add(additional, Ordering::SeqCst);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cost_counts_operators_outside_quotes() {
        let literal = "INSERT INTO t VALUES (1, 'a+b'), (2, 'x||y')";
        assert_eq!(parse_cost(literal), literal.len() * PARSE_FACTOR);
        let expr = "INSERT INTO t VALUES (1 + 2, 'a' || 'b'), (-3, x::int)";
        assert_eq!(
            parse_cost(expr),
            expr.len() * PARSE_FACTOR + 4 * PARSE_PER_OPERATOR
        );
        // A quoted identifier's characters are not operators.
        let quoted = r#"SELECT "a+b" FROM t"#;
        assert_eq!(parse_cost(quoted), quoted.len() * PARSE_FACTOR);
    }
}
