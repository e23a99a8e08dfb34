//! sqlparser with a bound on its work.
//!
//! sqlparser tries alternatives by backtracking (`maybe_parse`), and some
//! of them nest: a statement whose nested calls, casts or arrays do not
//! parse as written (`CAST(CAST(CAST(... x A`) is re-read at every level,
//! so the time grows about threefold per level — 14 levels of `CAST(` took
//! 5 s, 20 would take hours — for a few hundred bytes from any client.
//! Well-formed statements are read in about one attempt per token.
//!
//! [`Bounded`] is PostgreSQL's dialect (sqlparser takes it for
//! `PostgreSqlDialect` everywhere it asks) that counts the expressions the
//! parser starts to read and stops the parse once a budget proportional to
//! the statement's length is spent: with `RecursionLimitExceeded`, the one
//! error no backtracking swallows.

use std::any::TypeId;
use std::cell::Cell;

use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

/// Expressions the parser may start per token of the statement, and on
/// top of that: far above what any well-formed statement needs (the
/// sqllogictest corpus needs at most 1 per token, whitespace counted, see
/// the tests), far below exponential.
pub const STEPS_PER_TOKEN: u64 = 64;
pub const BASE_STEPS: u64 = 10_000;

thread_local! {
    /// Steps left to the parse running on this thread.
    static LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Steps taken by it.
    static TAKEN: Cell<u64> = const { Cell::new(0) };
}

/// The outcome of a bounded parse.
pub struct Budget {
    /// Whether the parse ran out of steps (its error says only "recursion
    /// limit exceeded").
    pub exhausted: bool,
    /// Steps it took.
    pub steps: u64,
}

/// Run `parse` (a sqlparser parse with [`Bounded`]) with the budget of a
/// statement of `tokens` tokens.
pub fn run<T>(tokens: usize, parse: impl FnOnce() -> T) -> (T, Budget) {
    let budget = BASE_STEPS.saturating_add(STEPS_PER_TOKEN.saturating_mul(tokens as u64));
    let outer = (LEFT.get(), TAKEN.get());
    LEFT.set(budget);
    TAKEN.set(0);
    let out = parse();
    let budget = Budget {
        exhausted: LEFT.get() == 0,
        steps: TAKEN.get(),
    };
    LEFT.set(outer.0);
    TAKEN.set(outer.1);
    (out, budget)
}

/// One step of the parse: `Some(error)` once the budget is spent.
fn step() -> Option<ParserError> {
    TAKEN.set(TAKEN.get().saturating_add(1));
    let left = LEFT.get();
    if left == 0 {
        return Some(ParserError::RecursionLimitExceeded);
    }
    LEFT.set(left - 1);
    None
}

const PG: PostgreSqlDialect = PostgreSqlDialect {};

/// PostgreSQL's dialect, counting the parser's steps (see the module).
#[derive(Debug, Default, Clone, Copy)]
pub struct Bounded;

macro_rules! forward {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool { PG.$name() })*
    };
}

impl Dialect for Bounded {
    fn dialect(&self) -> TypeId {
        TypeId::of::<PostgreSqlDialect>()
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if let Some(e) = step() {
            return Some(Err(e));
        }
        PG.parse_prefix(parser)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        if let Some(e) = step() {
            return Some(Err(e));
        }
        PG.get_next_precedence(parser)
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        PG.identifier_quote_style(identifier)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        PG.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        PG.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        PG.is_identifier_part(ch)
    }
    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        PG.is_reserved_for_identifier(kw)
    }
    fn is_custom_operator_part(&self, ch: char) -> bool {
        PG.is_custom_operator_part(ch)
    }
    fn prec_value(&self, prec: Precedence) -> u8 {
        PG.prec_value(prec)
    }

    forward!(
        supports_unicode_string_literal,
        supports_filter_during_aggregation,
        supports_group_by_expr,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_listen_notify,
        supports_factorial_operator,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_colon_operator,
        supports_named_fn_args_with_expr_name,
        supports_empty_projections,
        supports_nested_comments,
        supports_string_escape_constant,
        supports_numeric_literal_underscores,
        supports_array_typedef_with_brackets,
        supports_geometric_types,
        supports_set_names,
        supports_alter_column_type_using,
        supports_notnull_operator,
        supports_interval_options,
        supports_insert_table_alias,
        supports_create_table_like_parenthesized,
        supports_select_wildcard_with_alias,
        supports_comma_separated_trim,
        supports_xml_expressions,
        supports_comment_optimizer_hint,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn parse_both(sql: &str) -> (String, String) {
        let tokens = Tokenizer::new(&PG, sql).tokenize_with_location().unwrap();
        let plain = Parser::new(&PG)
            .with_tokens_with_locations(tokens.clone())
            .parse_statements();
        let (bounded, _) = run(tokens.len(), || {
            Parser::new(&Bounded)
                .with_tokens_with_locations(tokens)
                .parse_statements()
        });
        (format!("{plain:?}"), format!("{bounded:?}"))
    }

    #[test]
    fn parses_as_postgres_does() {
        for sql in [
            "SELECT a::int[], b -> 'x', c @> d, e <-> '[1,2]', f ~ 'g' FROM t WHERE x IS NOT NULL",
            "SELECT INTERVAL '1 day', E'\\n', U&'d\\0061t', $$x$$, 1_000, 5 !, a << 2",
            "SELECT count(*) FILTER (WHERE x > 1), extract(epoch FROM now()), trim(both 'x' from y)",
            "CREATE INDEX i ON t USING hnsw (v vector_l2_ops) WITH (m = 16)",
            "EXPLAIN (ANALYZE, VERBOSE) SELECT * FROM t ORDER BY v <=> $1 LIMIT 5",
            "COMMENT ON TABLE t IS 'x'; LISTEN c; NOTIFY c; SET NAMES 'utf8'",
            "SELECT f(a => 1, b := 2), ARRAY[1,2][1], x NOTNULL, y ISNULL",
            "ALTER TABLE t ALTER COLUMN c TYPE int USING c::int",
            "INSERT INTO t AS x (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = x.a + 1",
        ] {
            let (plain, bounded) = parse_both(sql);
            assert_eq!(plain, bounded, "{sql}");
        }
    }

    /// The statements of the sqllogictest files parse alike with both
    /// dialects, in at most a few steps per token.
    #[test]
    fn golden_statements_parse_alike_and_cheaply() {
        // At run time: a build cache shared by checkouts may hold a test
        // binary built in another one.
        let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
            .join("../../sqllogictest");
        let mut checked = 0;
        let mut worst = 0f64;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "slt") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if !(line.starts_with("statement ") || line.starts_with("query ")) {
                    continue;
                }
                let sql: Vec<&str> = lines
                    .by_ref()
                    .take_while(|l| !l.trim().is_empty() && *l != "----")
                    .collect();
                let sql = sql.join("\n");
                let Ok(tokens) = Tokenizer::new(&PG, &sql).tokenize_with_location() else {
                    continue;
                };
                let (plain, bounded) = parse_both(&sql);
                assert_eq!(plain, bounded, "{}: {sql}", path.display());
                let (_, budget) = run(tokens.len(), || {
                    Parser::new(&Bounded)
                        .with_tokens_with_locations(tokens.clone())
                        .parse_statements()
                });
                assert!(!budget.exhausted, "{sql}");
                worst = worst.max(budget.steps as f64 / tokens.len().max(1) as f64);
                checked += 1;
            }
        }
        assert!(
            checked > 300,
            "only {checked} statements found in {}",
            dir.display()
        );
        eprintln!("{checked} statements, at most {worst:.2} steps per token");
        assert!(
            worst < (STEPS_PER_TOKEN / 4) as f64,
            "{worst} steps per token"
        );
    }

    #[test]
    fn failing_nesting_stops_early() {
        let sql = format!("SELECT {} x A", "CAST(".repeat(40));
        let tokens = Tokenizer::new(&PG, &sql).tokenize_with_location().unwrap();
        let started = std::time::Instant::now();
        let (parsed, budget) = run(tokens.len(), || {
            Parser::new(&Bounded)
                .with_tokens_with_locations(tokens)
                .parse_statements()
        });
        assert!(parsed.is_err());
        assert!(budget.exhausted);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
