//! Tokenise once with sqlparser's PostgreSQL dialect, split into statements,
//! recognise quiver's own statements by their leading keywords, and hand the
//! rest to sqlparser (plus `datafusion-pg-catalog`'s compatibility rewrites,
//! which make the catalog queries of psql and drivers plannable).

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::SqlStatementRewriteRule;

use super::ParseError;
use super::statement::{
    ConflictAction, CopyFrom, CopyOptions, IsolationLevel, Knob, MaintainVerb, SearchOptions,
    Statement, TransactionKind, TransactionModes,
};
use quiver_vector::Metric;

/// A catalog query through the compatibility parser's rewrite rules,
/// keeping its correlated subqueries. Its rules replace a correlated
/// subquery that is a whole select item with NULL (psql's column
/// defaults), which quiver runs per outer row (`planner::correlated`);
/// wrapped in parentheses they are left alone.
///
/// The parser's table of known client queries is not used: it answers
/// them with constant empty rows (pgcli's data types and foreign keys,
/// psql's policies, DBeaver's relation sizes, ...), where quiver runs them.
fn compat_rewrite(stmt: ast::Statement) -> ast::Statement {
    let mut stmt = stmt;
    super::array_subquery::regproc_names(&mut stmt);
    protect_select_subqueries(&mut stmt);
    COMPAT.rewrite(stmt)
}

/// `(subquery)` select items as `((subquery))`.
fn protect_select_subqueries(stmt: &mut ast::Statement) {
    use ast::{Expr, SelectItem, SetExpr, VisitMut, VisitorMut};
    use std::ops::ControlFlow;
    struct Wrap;
    impl VisitorMut for Wrap {
        type Break = ();
        fn post_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) =
                        item
                    else {
                        continue;
                    };
                    if matches!(e, Expr::Subquery(_)) {
                        let inner = std::mem::replace(e, Expr::value(ast::Value::Null));
                        *e = Expr::Nested(Box::new(inner));
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Wrap);
}

static COMPAT: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// The compatibility rewrites for queries that do not read the system
/// catalogs: all of the compatibility parser's but two that change what a
/// user's query means. `RemoveSubqueryFromProjection` answers a correlated
/// scalar subquery with NULL and stops an uncorrelated one at its first row
/// (PostgreSQL errors with 21000); `CurrentUserVariableToSessionUserFunctionCall`
/// renames `current_user` to `session_user`, so that `SELECT current_user,
/// session_user` named two columns alike. quiver has its own `current_user`.
static USER_RULES: LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| {
    use datafusion_pg_catalog::sql::rules::*;
    vec![
        Box::new(AliasDuplicatedProjectionRewrite),
        Box::new(ResolveUnqualifiedIdentifier),
        Box::new(RewriteArrayAnyAllOperation),
        Box::new(PrependUnqualifiedPgTableName),
        Box::new(StripCallableQualifier),
        Box::new(FixArrayLiteral),
        Box::new(StripCollate),
        Box::new(RewritePgCatalogOperator),
        Box::new(RewriteRegCastToSubquery::new()),
        Box::new(FixVersionColumnName),
    ]
});

/// Whether a query's text names a system catalog (psql's, drivers' and BI
/// tools' introspection): those take the compatibility parser whole.
fn reads_system_catalogs(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("pg_") || lower.contains("information_schema")
}

fn rewrite_user_query(mut stmt: ast::Statement) -> ast::Statement {
    for rule in USER_RULES.iter() {
        stmt = rule.rewrite(stmt);
    }
    stmt
}

/// Parse a query string (one or more `;`-separated statements).
pub fn parse(sql: &str) -> Result<Vec<Statement>, ParseError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| ParseError::Syntax {
            message: e.message.clone(),
            position: char_position(sql, e.location.line, e.location.column),
        })?;
    let tokens = merge_l1_operator(tokens);
    let mut out = Vec::new();
    for stmt_tokens in split_statements(tokens) {
        if let Err(at) = super::depth::check(&stmt_tokens) {
            let start = stmt_tokens[at].span.start;
            return Err(ParseError::TooComplex {
                position: char_position(sql, start.line, start.column),
            });
        }
        let start = stmt_tokens.first().map(|t| t.span.start);
        let (parsed, budget) =
            super::bounded::run(stmt_tokens.len(), || parse_one(sql, stmt_tokens));
        if budget.exhausted {
            // sqlparser backtracked too much (see `bounded`).
            return Err(ParseError::TooHardToParse {
                position: start.and_then(|s| char_position(sql, s.line, s.column)),
            });
        }
        out.push(parsed?);
    }
    Ok(out)
}

/// sqlparser does not know pgvector's `<+>` (L1 distance); it arrives as `<`
/// followed by `+>` or `+`,`>`. Merge those into one custom operator token.
fn merge_l1_operator(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].token == Token::Lt {
            let next = tokens.get(i + 1).map(|t| &t.token);
            let after = tokens.get(i + 2).map(|t| &t.token);
            let merged = match (next, after) {
                (Some(Token::CustomBinaryOperator(s)), _) if s == "+>" => Some(2),
                (Some(Token::Plus), Some(Token::Gt)) => Some(3),
                _ => None,
            };
            if let Some(n) = merged {
                let span = tokens[i].span.union(&tokens[i + n - 1].span);
                out.push(TokenWithSpan::new(
                    Token::CustomBinaryOperator("<+>".into()),
                    span,
                ));
                i += n;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for t in tokens {
        match t.token {
            Token::SemiColon => {
                if has_content(&current) {
                    out.push(std::mem::take(&mut current));
                } else {
                    current.clear();
                }
            }
            Token::EOF => {}
            _ => current.push(t),
        }
    }
    if has_content(&current) {
        out.push(current);
    }
    out
}

fn has_content(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .any(|t| !matches!(t.token, Token::Whitespace(_)))
}

fn is_trivia(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

/// Upper-cased leading words of a statement (up to `n`).
fn leading_words(tokens: &[TokenWithSpan], n: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|t| !is_trivia(&t.token))
        .take(n)
        .map(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            _ => String::new(),
        })
        .collect()
}

fn tokens_to_sql(tokens: &[TokenWithSpan]) -> String {
    tokens
        .iter()
        .map(|t| match &t.token {
            Token::Whitespace(Whitespace::SingleLineComment { .. }) => "\n".to_string(),
            Token::Whitespace(Whitespace::MultiLineComment(_)) => " ".to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// Replace the first word equal to `from` (case-insensitive) with `to`.
fn replace_word(tokens: &mut [TokenWithSpan], from: &str, to: &str) {
    if let Some(t) = tokens
        .iter_mut()
        .find(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(from)))
    {
        t.token = Token::make_keyword(to);
    }
}

fn syntax(sql: &str, e: ParserError) -> ParseError {
    syntax_at(sql, e, None)
}

/// Like [`syntax`], with `fallback` as the position when sqlparser gives
/// none (errors at the end of the statement).
fn syntax_at(sql: &str, e: ParserError, fallback: Option<usize>) -> ParseError {
    let message = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "statement is nested too deeply".to_string(),
    };
    let position = locate(&message)
        .and_then(|(l, c)| char_position(sql, l, c))
        .or(fallback);
    let message = match message.find(" at Line: ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    ParseError::Syntax {
        message: format!("syntax error: {message}"),
        position,
    }
}

/// Find "Line: l, Column: c" in a sqlparser error message.
fn locate(message: &str) -> Option<(u64, u64)> {
    let i = message.find("Line: ")?;
    let rest = &message[i + 6..];
    let (line, rest) = rest.split_once(',')?;
    let col = rest.trim().strip_prefix("Column: ")?;
    let col: String = col.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

/// 1-based character offset of (line, column) in `sql`.
pub(super) fn char_position(sql: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut pos = 0usize;
    for (i, l) in sql.split('\n').enumerate() {
        if i as u64 + 1 == line {
            return Some(pos + column as usize);
        }
        pos += l.chars().count() + 1;
    }
    None
}

fn new_parser(tokens: Vec<TokenWithSpan>) -> Parser<'static> {
    static DIALECT: super::bounded::Bounded = super::bounded::Bounded;
    Parser::new(&DIALECT).with_tokens_with_locations(tokens)
}

/// Parse exactly one sqlparser statement from `tokens`.
fn parse_sqlparser(sql: &str, tokens: Vec<TokenWithSpan>) -> Result<ast::Statement, ParseError> {
    let end = tokens
        .iter()
        .rev()
        .find(|t| !is_trivia(&t.token))
        .and_then(|t| char_position(sql, t.span.end.line, t.span.end.column));
    let mut parser = new_parser(tokens);
    let stmt = parser
        .parse_statement()
        .map_err(|e| syntax_at(sql, e, end))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(syntax(
            sql,
            ParserError::ParserError(format!(
                "Expected: end of statement, found: {}{}",
                next.token, next.span.start
            )),
        ));
    }
    Ok(stmt)
}

fn parse_one(sql: &str, mut tokens: Vec<TokenWithSpan>) -> Result<Statement, ParseError> {
    // Text search is not implemented: say so before DataFusion fails on it
    // (an internal Parquet error once, XX000, on flushed rows).
    if tokens.iter().any(|t| t.token == Token::AtAt) {
        return Err(ParseError::Unsupported(
            "the text search operator @@ is not supported: use LIKE / ILIKE, or a vector search"
                .into(),
        ));
    }
    let words = leading_words(&tokens, 3);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    if super::index_ddl::is_index_statement(w(0), w(1), w(2)) {
        return Ok(Statement::Index(super::index_ddl::parse(sql, &tokens)?));
    }
    if super::alias::is_alias_statement(w(0), w(1)) {
        return Ok(Statement::Alias(super::alias::parse(sql, &tokens)?));
    }
    if w(0) == "ALTER" && (w(1) == "COLLECTION" || w(1) == "TABLE") {
        // Only the word after ALTER: a column may be named `collection`.
        if w(1) == "COLLECTION" {
            replace_word(&mut tokens, "COLLECTION", "TABLE");
        }
        return parse_alter_table(parse_sqlparser(sql, tokens)?);
    }
    if super::access::is_access_statement(w(0), w(1)) {
        return Ok(Statement::Access(super::access::parse(sql, &tokens)?));
    }
    match (w(0), w(1)) {
        ("CREATE", "COLLECTION") => {
            replace_word(&mut tokens, "COLLECTION", "TABLE");
        }
        ("DROP", "COLLECTION") => {
            replace_word(&mut tokens, "COLLECTION", "TABLE");
        }
        ("SHOW", "COLLECTIONS") | ("SHOW", "TABLES") if words.len() == 2 => {
            return Ok(Statement::ShowCollections);
        }
        ("DESCRIBE", _) | ("DESC", _) => return parse_describe(sql, tokens),
        ("FLUSH", _) | ("COMPACT", _) | ("LOAD", "COLLECTION") | ("RELEASE", "COLLECTION") => {
            let (verb, skip) = match w(0) {
                "FLUSH" => (MaintainVerb::Flush, 1),
                "COMPACT" => (MaintainVerb::Compact, 1),
                "LOAD" => (MaintainVerb::Load, 2),
                _ => (MaintainVerb::Release, 2),
            };
            let name = parse_name_after(sql, tokens, skip)?;
            return Ok(Statement::Maintain { verb, name });
        }
        ("SHOW", "SEGMENTS") if w(2) == "FROM" || w(2) == "IN" => {
            let name = parse_name_after(sql, tokens, 3)?;
            return Ok(Statement::ShowSegments { name });
        }
        ("UPSERT", "INTO") => {
            replace_word(&mut tokens, "UPSERT", "INSERT");
            let stmt = parse_sqlparser(sql, tokens)?;
            return match stmt {
                ast::Statement::Insert(mut ins) if ins.on.is_none() => {
                    ins.on = None;
                    Ok(Statement::Upsert {
                        insert: Box::new(ast::Statement::Insert(ins)),
                        action: ConflictAction::Replace,
                        target: None,
                    })
                }
                _ => Err(ParseError::Unsupported(
                    "UPSERT INTO takes VALUES or a query, without ON CONFLICT".into(),
                )),
            };
        }
        ("SEARCH", _) => {
            let (select, options) = parse_search(sql, tokens)?;
            return Ok(tuned(parse_generated(&select)?, &options));
        }
        ("EXPLAIN", "SEARCH") | ("EXPLAIN", "ANALYZE") if w(1) == "SEARCH" || w(2) == "SEARCH" => {
            let analyze = w(1) == "ANALYZE";
            let start = tokens
                .iter()
                .position(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("SEARCH")))
                .unwrap_or(0);
            let (select, options) = parse_search(sql, tokens.split_off(start))?;
            let prefix = if analyze {
                "EXPLAIN ANALYZE "
            } else {
                "EXPLAIN "
            };
            return Ok(tuned(
                parse_generated(&format!("{prefix}{select}"))?,
                &options,
            ));
        }
        ("SET", _) => return parse_set(sql, &tokens),
        ("RESET", _) => {
            let name = tokens_to_sql(&tokens)
                .trim()
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .trim()
                .trim_end_matches(';')
                .trim()
                .to_ascii_lowercase();
            if name.is_empty() {
                return Err(ParseError::Syntax {
                    message: "syntax error: expected RESET name or RESET ALL".into(),
                    position: None,
                });
            }
            return Ok(Statement::Reset {
                name: (name != "all").then_some(name),
                tag: "RESET".into(),
            });
        }
        ("SHOW", _) => {
            let name = tokens_to_sql(&tokens)
                .trim()
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .trim()
                .trim_end_matches(';')
                .trim()
                .to_ascii_lowercase();
            // PostgreSQL's spellings of two settings.
            let name = match name.split_whitespace().collect::<Vec<_>>()[..] {
                ["transaction", "isolation", "level"] => "transaction_isolation".into(),
                ["time", "zone"] => "timezone".into(),
                _ => name,
            };
            return Ok(Statement::Show { name });
        }
        ("ABORT", _) => {
            return Ok(Statement::Transaction(TransactionKind::Rollback));
        }
        ("DECLARE" | "CLOSE", _) => return cursor(parse_sqlparser(sql, tokens)?, false),
        ("FETCH" | "MOVE", _) => {
            let move_only = w(0) == "MOVE";
            if tokens.iter().any(|t| matches!(t.token, Token::Minus)) {
                return Err(ParseError::Unsupported(format!(
                    "{} with a negative count is not supported: quiver's cursors move forward only",
                    w(0)
                )));
            }
            replace_word(&mut tokens, "MOVE", "FETCH");
            cursor_from(&mut tokens);
            return cursor(parse_sqlparser(sql, tokens)?, move_only);
        }
        ("BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE", _)
        | ("START", "TRANSACTION") => {
            drop_deferrable(&mut tokens);
            return transaction(sql, parse_sqlparser(sql, tokens)?);
        }
        ("DISCARD", "ALL") => {
            return Ok(Statement::Reset {
                name: None,
                tag: "DISCARD ALL".into(),
            });
        }
        // LISTEN is not supported, so a session listens to no channel:
        // UNLISTEN (connection pools send `UNLISTEN *` on release) has
        // nothing to stop. LISTEN and NOTIFY stay refused.
        ("UNLISTEN", _) => {
            let mut p = new_parser(tokens);
            p.next_token();
            if !p.consume_token(&Token::Mul) {
                p.parse_identifier().map_err(|e| syntax(sql, e))?;
            }
            expect_end(sql, &p)?;
            return Ok(Statement::NoOp {
                tag: "UNLISTEN".into(),
            });
        }
        // No temporary tables, sequences or plans a session could drop.
        ("DISCARD", what @ ("PLANS" | "SEQUENCES" | "TEMP" | "TEMPORARY")) => {
            return Ok(Statement::NoOp {
                tag: format!(
                    "DISCARD {}",
                    if what == "TEMPORARY" { "TEMP" } else { what }
                ),
            });
        }
        _ => {}
    }
    call_bare_functions(&mut tokens);
    let text = tokens_to_sql(&tokens);
    let has_l1 = tokens
        .iter()
        .any(|t| matches!(&t.token, Token::CustomBinaryOperator(s) if s == "<+>"));
    let stmt = parse_sqlparser(sql, tokens)?;
    classify(stmt, &text, has_l1)
}

/// `current_role` and `current_catalog`, functions PostgreSQL calls
/// without parentheses (as `current_user`, which sqlparser knows):
/// sqlparser reads them as columns. `current_catalog` is
/// `current_database()` (pgjdbc's `getCatalog()` asks for it).
fn call_bare_functions(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        let catalog = matches!(&tokens[i].token, Token::Word(w)
            if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("current_catalog"));
        let bare = catalog
            || matches!(&tokens[i].token, Token::Word(w)
            if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("current_role"));
        let qualified = || {
            tokens[..i]
                .iter()
                .rev()
                .find(|t| !is_trivia(&t.token))
                .is_some_and(|t| t.token == Token::Period)
        };
        let called = || {
            tokens[i + 1..]
                .iter()
                .find(|t| !is_trivia(&t.token))
                .is_some_and(|t| t.token == Token::LParen)
        };
        if bare && !qualified() && !called() {
            let span = tokens[i].span;
            if catalog && let Token::Word(w) = &mut tokens[i].token {
                w.value = "current_database".into();
                w.keyword = Keyword::NoKeyword;
            }
            tokens.insert(i + 1, TokenWithSpan::new(Token::RParen, span));
            tokens.insert(i + 1, TokenWithSpan::new(Token::LParen, span));
            i += 2;
        }
        i += 1;
    }
}

/// Parse SQL that quiver generated from another statement (e.g. SEARCH).
fn parse_generated(text: &str) -> Result<Statement, ParseError> {
    let mut stmts = parse(text)?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        _ => Err(ParseError::Syntax {
            message: "syntax error: expected one statement".into(),
            position: None,
        }),
    }
}

fn classify(stmt: ast::Statement, text: &str, has_l1: bool) -> Result<Statement, ParseError> {
    use ast::Statement as S;
    Ok(match stmt {
        S::Insert(mut ins) if ins.on.is_some() => {
            let (action, target) = match ins.on.take() {
                Some(ast::OnInsert::OnConflict(c)) => match c.action {
                    ast::OnConflictAction::DoNothing => {
                        (ConflictAction::Nothing, c.conflict_target)
                    }
                    ast::OnConflictAction::DoUpdate(_) if c.conflict_target.is_none() => {
                        // PostgreSQL's words and code.
                        return Err(ParseError::Syntax {
                            message: "ON CONFLICT DO UPDATE requires inference specification or constraint name".into(),
                            position: None,
                        });
                    }
                    ast::OnConflictAction::DoUpdate(u) => (
                        ConflictAction::Update {
                            assignments: u.assignments,
                            selection: u.selection.map(Box::new),
                        },
                        c.conflict_target,
                    ),
                },
                _ => {
                    return Err(ParseError::Unsupported(
                        "ON DUPLICATE KEY UPDATE is MySQL syntax: use ON CONFLICT (key) DO UPDATE SET ..."
                            .into(),
                    ));
                }
            };
            Statement::Upsert {
                insert: Box::new(S::Insert(ins)),
                action,
                target,
            }
        }
        S::CreateTable(ct) => Statement::CreateCollection(Box::new(ct)),
        S::Drop {
            object_type: ast::ObjectType::Table,
            if_exists,
            names,
            ..
        } => Statement::DropCollection { names, if_exists },
        S::Drop {
            object_type: ast::ObjectType::Database,
            if_exists,
            names,
            ..
        } => Statement::DropDatabase {
            name: single_name(&names)?,
            if_exists,
        },
        S::CreateDatabase {
            db_name,
            if_not_exists,
            ..
        } => Statement::CreateDatabase {
            name: object_name(&db_name),
            if_not_exists,
        },
        S::CreateExtension(ext) => Statement::CreateExtension {
            name: ext.name.value.clone(),
        },
        S::Query(_) if !reads_system_catalogs(text) => {
            let mut stmt = rewrite_user_query(stmt);
            super::array_subquery::rewrite(&mut stmt);
            super::array_subquery::name_unnest_columns(&mut stmt);
            super::array_subquery::scalar_functions_in_from(&mut stmt);
            super::array_subquery::order_by_subqueries(&mut stmt);
            super::array_subquery::in_subqueries_in_select_lists(&mut stmt);
            super::array_subquery::catalog_array_literals(&mut stmt);
            super::array_subquery::quoted_oid_arguments(&mut stmt);
            super::array_subquery::generate_subscripts(&mut stmt);
            super::array_subquery::zero_based_catalog_vectors(&mut stmt);
            super::array_subquery::regtype_text(&mut stmt);
            super::array_subquery::like_escapes(&mut stmt)?;
            super::array_subquery::regclass_casts(&mut stmt);
            super::array_subquery::regexp_split_to_table(&mut stmt);
            super::timestamp_literals::rewrite(&mut stmt);
            Statement::Query(Box::new(stmt))
        }
        S::Query(_) if !has_l1 => {
            // The compatibility parser's rules rewrite catalog queries of
            // psql and drivers into forms DataFusion plans.
            let mut stmt = compat_rewrite(stmt);
            super::array_subquery::rewrite(&mut stmt);
            super::array_subquery::name_unnest_columns(&mut stmt);
            super::array_subquery::scalar_functions_in_from(&mut stmt);
            super::array_subquery::order_by_subqueries(&mut stmt);
            super::array_subquery::in_subqueries_in_select_lists(&mut stmt);
            super::array_subquery::catalog_array_literals(&mut stmt);
            super::array_subquery::quoted_oid_arguments(&mut stmt);
            super::array_subquery::generate_subscripts(&mut stmt);
            super::array_subquery::zero_based_catalog_vectors(&mut stmt);
            super::array_subquery::regtype_text(&mut stmt);
            super::array_subquery::like_escapes(&mut stmt)?;
            super::array_subquery::regclass_casts(&mut stmt);
            super::array_subquery::regexp_split_to_table(&mut stmt);
            super::timestamp_literals::rewrite(&mut stmt);
            Statement::Query(Box::new(stmt))
        }
        S::Copy {
            source:
                ast::CopySource::Table {
                    table_name,
                    columns,
                },
            to: false,
            target: ast::CopyTarget::Stdin,
            options,
            legacy_options,
            ..
        } => Statement::CopyFrom(copy_from(table_name, columns, &options, &legacy_options)?),
        S::Copy {
            source,
            to: true,
            target: ast::CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } => copy_to(source, &options, &legacy_options)?,
        S::Copy { to, .. } => {
            return Err(ParseError::Unsupported(format!(
                "COPY {} a file or a program is not supported: use COPY ... {} (psql's \\copy)",
                if to { "TO" } else { "FROM" },
                if to { "TO STDOUT" } else { "FROM STDIN" },
            )));
        }
        // INSERT ... SELECT, UPDATE, DELETE, EXPLAIN: as a query, the
        // compatibility parser's rules that change meaning only where the
        // statement reads the system catalogs.
        other if !reads_system_catalogs(text) => {
            let mut stmt = rewrite_user_query(other);
            super::timestamp_literals::rewrite(&mut stmt);
            Statement::Query(Box::new(stmt))
        }
        other => Statement::Query(Box::new(COMPAT.rewrite(other))),
    })
}

fn copy_from(
    table: ast::ObjectName,
    columns: Vec<ast::Ident>,
    options: &[ast::CopyOption],
    legacy: &[ast::CopyLegacyOption],
) -> Result<CopyFrom, ParseError> {
    Ok(CopyFrom {
        table,
        columns,
        options: copy_options(options, legacy)?,
    })
}

/// `COPY c [(cols)] TO STDOUT` reads `SELECT cols FROM c`; `COPY (query)
/// TO STDOUT` reads the query.
fn copy_to(
    source: ast::CopySource,
    options: &[ast::CopyOption],
    legacy: &[ast::CopyLegacyOption],
) -> Result<Statement, ParseError> {
    let query = match source {
        ast::CopySource::Query(q) => q,
        ast::CopySource::Table {
            table_name,
            columns,
        } => {
            let list = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let text = format!("SELECT {list} FROM {table_name}");
            let tokens = Tokenizer::new(&PostgreSqlDialect {}, &text)
                .tokenize_with_location()
                .map_err(|e| ParseError::Syntax {
                    message: e.message,
                    position: None,
                })?;
            new_parser(tokens)
                .parse_query()
                .map_err(|e| syntax(&text, e))?
        }
    };
    Ok(Statement::CopyTo {
        query: Box::new(rewrite_user_query(ast::Statement::Query(query))),
        options: copy_options(options, legacy)?,
    })
}

/// The format options of a COPY; those quiver does not implement are
/// refused, naming them.
fn copy_options(
    options: &[ast::CopyOption],
    legacy: &[ast::CopyLegacyOption],
) -> Result<CopyOptions, ParseError> {
    let csv = options
        .iter()
        .any(|o| matches!(o, ast::CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv")))
        || legacy
            .iter()
            .any(|o| matches!(o, ast::CopyLegacyOption::Csv(_)));
    let mut opts = if csv {
        CopyOptions::csv()
    } else {
        CopyOptions::text()
    };
    let mut text_options = Vec::new();
    for o in options {
        match o {
            ast::CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" | "text" => {}
                "binary" => opts.binary = true,
                other => {
                    return Err(ParseError::Unsupported(format!(
                        "COPY format {other} is not supported: use text, csv or binary"
                    )));
                }
            },
            ast::CopyOption::Delimiter(c) => {
                text_options.push("DELIMITER");
                opts.delimiter = *c
            }
            ast::CopyOption::Null(n) => {
                text_options.push("NULL");
                opts.null = n.clone()
            }
            ast::CopyOption::Header(h) => {
                text_options.push("HEADER");
                opts.header = *h
            }
            ast::CopyOption::Quote(q) => {
                text_options.push("QUOTE");
                opts.quote = *q
            }
            other => {
                return Err(ParseError::Unsupported(format!(
                    "COPY option {other} is not supported yet"
                )));
            }
        }
    }
    for o in legacy {
        match o {
            ast::CopyLegacyOption::Delimiter(c) => {
                text_options.push("DELIMITER");
                opts.delimiter = *c
            }
            ast::CopyLegacyOption::Null(n) => {
                text_options.push("NULL");
                opts.null = n.clone()
            }
            ast::CopyLegacyOption::Csv(_) => {}
            ast::CopyLegacyOption::Binary => opts.binary = true,
            ast::CopyLegacyOption::Header => {
                text_options.push("HEADER");
                opts.header = true
            }
            other => {
                return Err(ParseError::Unsupported(format!(
                    "COPY option {other} is not supported yet"
                )));
            }
        }
    }
    if opts.binary && (csv || !text_options.is_empty()) {
        // PostgreSQL's words and code.
        return Err(ParseError::Syntax {
            message: match text_options.first() {
                Some(o) => format!("cannot specify {o} in BINARY mode"),
                None => "cannot specify both CSV and BINARY formats".into(),
            },
            position: None,
        });
    }
    Ok(opts)
}

fn object_name(name: &ast::ObjectName) -> String {
    name.0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.clone())
        .collect::<Vec<_>>()
        .join(".")
}

fn single_name(names: &[ast::ObjectName]) -> Result<String, ParseError> {
    match names {
        [one] => Ok(object_name(one)),
        _ => Err(ParseError::Unsupported(
            "drop one database at a time".into(),
        )),
    }
}

/// An object name after `skip` leading words, and nothing else.
fn parse_name_after(
    sql: &str,
    tokens: Vec<TokenWithSpan>,
    skip: usize,
) -> Result<ast::ObjectName, ParseError> {
    let mut p = new_parser(tokens);
    for _ in 0..skip {
        p.next_token();
    }
    let name = p.parse_object_name(false).map_err(|e| syntax(sql, e))?;
    expect_end(sql, &p)?;
    Ok(name)
}

/// `ALTER TABLE`: renaming is what quiver does so far; anything else is
/// refused by name.
fn parse_alter_table(stmt: ast::Statement) -> Result<Statement, ParseError> {
    let ast::Statement::AlterTable(alter) = stmt else {
        return Err(ParseError::Unsupported(format!("{stmt}")));
    };
    match alter.operations.as_slice() {
        [
            ast::AlterTableOperation::RenameTable {
                table_name: ast::RenameTableNameKind::To(new),
            },
        ] => {
            let [part] = new.0.as_slice() else {
                return Err(ParseError::Syntax {
                    message: format!(
                        "syntax error: RENAME TO {new}: the new name cannot be qualified (a collection stays in its schema and database)"
                    ),
                    position: None,
                });
            };
            let Some(ident) = part.as_ident() else {
                return Err(ParseError::Unsupported(format!("RENAME TO {new}")));
            };
            Ok(Statement::RenameCollection {
                name: alter.name.clone(),
                new_name: fold_ident(ident),
                if_exists: alter.if_exists,
            })
        }
        [
            ast::AlterTableOperation::AlterColumn {
                column_name,
                op:
                    op @ (ast::AlterColumnOperation::SetDefault { .. }
                    | ast::AlterColumnOperation::DropDefault),
            },
        ] => Ok(Statement::AlterColumnDefault {
            name: alter.name.clone(),
            column: fold_ident(column_name),
            default: match op {
                ast::AlterColumnOperation::SetDefault { value } => Some(Box::new(value.clone())),
                _ => None,
            },
            if_exists: alter.if_exists,
        }),
        [op] => Err(ParseError::Unsupported(format!(
            "ALTER TABLE ... {op} is not supported (RENAME TO and ALTER COLUMN ... SET / DROP DEFAULT are)"
        ))),
        _ => Err(ParseError::Unsupported(
            "ALTER TABLE with several actions is not supported: one RENAME TO at a time".into(),
        )),
    }
}

/// An identifier as PostgreSQL names it: unquoted ones fold to lower case.
fn fold_ident(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn parse_describe(sql: &str, tokens: Vec<TokenWithSpan>) -> Result<Statement, ParseError> {
    let mut p = new_parser(tokens);
    p.next_token(); // DESCRIBE
    if matches!(&p.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case("COLLECTION") || w.keyword == Keyword::TABLE)
    {
        p.next_token();
    }
    let name = p.parse_object_name(false).map_err(|e| syntax(sql, e))?;
    expect_end(sql, &p)?;
    Ok(Statement::DescribeCollection { name })
}

fn expect_end(sql: &str, p: &Parser) -> Result<(), ParseError> {
    let next = p.peek_token();
    if next.token == Token::EOF {
        Ok(())
    } else {
        Err(syntax(
            sql,
            ParserError::ParserError(format!(
                "Expected: end of statement, found: {}{}",
                next.token, next.span.start
            )),
        ))
    }
}

/// `SET [SESSION|LOCAL] name {=|TO} value` and `SET TIME ZONE value`.
fn parse_set(sql: &str, tokens: &[TokenWithSpan]) -> Result<Statement, ParseError> {
    let toks: Vec<&TokenWithSpan> = tokens.iter().filter(|t| !is_trivia(&t.token)).collect();
    let word = |j: usize| match toks.get(j).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    if word(1).as_deref() == Some("transaction")
        || (word(1).as_deref() == Some("session") && word(2).as_deref() == Some("characteristics"))
    {
        return transaction(sql, parse_sqlparser(sql, tokens.to_vec())?);
    }
    let mut i = 1;
    let local = word(1).as_deref() == Some("local");
    if local || word(1).as_deref() == Some("session") {
        i += 1;
    }
    // `SET ROLE NONE` (Metabase sends it after each query) leaves the
    // session's role, the only one quiver has: the `role` setting is
    // `none`. Switching to another role is not supported.
    if word(i).as_deref() == Some("role")
        && !matches!(toks.get(i + 1).map(|t| &t.token), Some(Token::Eq))
    {
        let rest: Vec<&Token> = toks[i + 1..]
            .iter()
            .map(|t| &t.token)
            .filter(|t| **t != Token::SemiColon)
            .collect();
        if matches!(rest.as_slice(), [Token::Word(w)] if w.value.eq_ignore_ascii_case("none")) {
            return Ok(Statement::Set {
                name: "role".into(),
                value: "none".into(),
                local,
            });
        }
        return Err(ParseError::Unsupported(
            "SET ROLE is not supported: quiver sessions keep the role they connected as (connect as that role instead)".into(),
        ));
    }
    let (name, value_start) =
        if word(i).as_deref() == Some("time") && word(i + 1).as_deref() == Some("zone") {
            ("timezone".to_string(), i + 2)
        } else {
            let mut name = String::new();
            let mut j = i;
            while let Some(t) = toks.get(j) {
                match &t.token {
                    Token::Eq => break,
                    Token::Word(w) if w.keyword == Keyword::TO && !name.is_empty() => break,
                    Token::Word(w) => name.push_str(&w.value.to_ascii_lowercase()),
                    Token::Period => name.push('.'),
                    other => {
                        return Err(syntax(
                            sql,
                            ParserError::ParserError(format!(
                                "Expected: a variable name, found: {other}{}",
                                t.span.start
                            )),
                        ));
                    }
                }
                j += 1;
            }
            if toks.get(j).is_none() || name.is_empty() {
                return Err(ParseError::Syntax {
                    message: "syntax error: expected SET name = value".into(),
                    position: toks
                        .last()
                        .and_then(|t| char_position(sql, t.span.end.line, t.span.end.column)),
                });
            }
            (name, j + 1)
        };
    let rest = &toks[value_start.min(toks.len())..];
    if let [t] = rest
        && matches!(&t.token, Token::Word(w) if w.keyword == Keyword::DEFAULT)
    {
        if local {
            return Err(ParseError::Unsupported(
                "SET LOCAL ... TO DEFAULT is not supported: use SET LOCAL name = value".into(),
            ));
        }
        return Ok(Statement::Reset {
            name: Some(name),
            tag: "SET".into(),
        });
    }
    let value = rest
        .iter()
        .map(|t| match &t.token {
            Token::SingleQuotedString(s) => s.clone(),
            // A quoted name is its text: `SET TIME ZONE "Etc/UTC"` (pgcli).
            Token::Word(w) if w.quote_style == Some('"') => w.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Statement::Set { name, value, local })
}

/// PostgreSQL's FETCH takes its direction and FROM/IN as optional
/// (`FETCH c`, `FETCH 5 c`); sqlparser wants both: add them.
fn cursor_from(tokens: &mut Vec<TokenWithSpan>) {
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&i| !is_trivia(&tokens[i].token) && tokens[i].token != Token::SemiColon)
        .collect();
    let Some(&last) = words.last() else { return };
    let from = |t: &Token| matches!(t, Token::Word(w) if w.keyword == Keyword::FROM || w.keyword == Keyword::IN);
    if words.len() >= 2 && from(&tokens[words[words.len() - 2]].token) {
        return;
    }
    let mut insert = vec![
        Token::make_keyword("FROM"),
        Token::Whitespace(Whitespace::Space),
    ];
    if words.len() == 2 {
        insert.splice(
            0..0,
            [
                Token::make_keyword("NEXT"),
                Token::Whitespace(Whitespace::Space),
            ],
        );
    }
    let span = tokens[last].span;
    for (k, t) in insert.into_iter().enumerate() {
        tokens.insert(last + k, TokenWithSpan::new(t, span));
    }
}

/// DECLARE, FETCH, MOVE (`move_only`) or CLOSE as sqlparser read it.
fn cursor(stmt: ast::Statement, move_only: bool) -> Result<Statement, ParseError> {
    use ast::Statement as S;
    let count = |v: &ast::ValueWithSpan| -> Result<u64, ParseError> {
        match &v.value {
            ast::Value::Number(n, _) => {
                n.parse::<i32>()
                    .map(|v| v as u64)
                    .map_err(|_| ParseError::Syntax {
                        message: format!("syntax error: FETCH count {n} is out of range"),
                        position: None,
                    })
            }
            other => Err(ParseError::Unsupported(format!(
                "FETCH {other}: a row count must be a number"
            ))),
        }
    };
    Ok(match stmt {
        S::Declare { mut stmts } if stmts.len() == 1 => {
            let d = stmts.remove(0);
            let (Some(name), Some(query)) = (d.names.first(), d.for_query) else {
                return Err(ParseError::Unsupported(
                    "DECLARE declares a cursor: DECLARE name CURSOR FOR query".into(),
                ));
            };
            if d.scroll == Some(true) {
                return Err(ParseError::Unsupported(
                    "SCROLL cursors are not supported: cursors move forward only (NO SCROLL)"
                        .into(),
                ));
            }
            if d.sensitive == Some(true) {
                return Err(ParseError::Unsupported(
                    "SENSITIVE cursors are not supported".into(),
                ));
            }
            Statement::DeclareCursor {
                name: fold(name),
                query: Box::new(S::Query(query)),
                hold: d.hold == Some(true),
                binary: d.binary == Some(true),
            }
        }
        S::Fetch {
            name,
            direction,
            into: None,
            ..
        } => {
            use ast::FetchDirection as F;
            let count = match &direction {
                F::Next | F::Forward { limit: None } => Some(1),
                F::Count { limit } | F::Forward { limit: Some(limit) } => Some(count(limit)?),
                F::All | F::ForwardAll => None,
                other => {
                    return Err(ParseError::Unsupported(format!(
                        "FETCH {other} is not supported: quiver's cursors move forward only (NEXT, FORWARD n, ALL)"
                    )));
                }
            };
            Statement::Fetch {
                name: fold(&name),
                count,
                move_only,
            }
        }
        S::Close { cursor } => Statement::CloseCursor {
            name: match cursor {
                ast::CloseCursor::All => None,
                ast::CloseCursor::Specific { name } => Some(fold(&name)),
            },
        },
        other => return Err(not_supported(&other, 2)),
    })
}

/// 0A000 naming a statement by its first `words` words.
fn not_supported(stmt: &ast::Statement, words: usize) -> ParseError {
    let text = stmt.to_string();
    let head: Vec<&str> = text.split_whitespace().take(words).collect();
    ParseError::Unsupported(format!("{} is not supported", head.join(" ")))
}

/// `[NOT] DEFERRABLE` matters only to SERIALIZABLE READ ONLY transactions,
/// which quiver does not run; PostgreSQL accepts it everywhere, sqlparser
/// nowhere: it is dropped.
fn drop_deferrable(tokens: &mut Vec<TokenWithSpan>) {
    let word = |t: &TokenWithSpan, w: &str| matches!(&t.token, Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    let Some(at) = tokens.iter().position(|t| word(t, "DEFERRABLE")) else {
        return;
    };
    let mut from = at;
    let before = tokens[..at].iter().rposition(|t| !is_trivia(&t.token));
    if let Some(b) = before
        && word(&tokens[b], "NOT")
    {
        from = b;
    }
    tokens.drain(from..=at);
    // A comma left dangling before the end, or doubled.
    let kept: Vec<usize> = (0..tokens.len())
        .filter(|&i| !is_trivia(&tokens[i].token) && tokens[i].token != Token::SemiColon)
        .collect();
    if let Some(&last) = kept.last()
        && tokens[last].token == Token::Comma
    {
        tokens.remove(last);
    }
}

/// A transaction-control statement as sqlparser read it.
fn transaction(sql: &str, stmt: ast::Statement) -> Result<Statement, ParseError> {
    use ast::Statement as S;
    let chain = || {
        Err(ParseError::Unsupported(
            "AND CHAIN is not supported: end the transaction, then BEGIN another".into(),
        ))
    };
    let kind = match stmt {
        S::StartTransaction { modes, begin, .. } => TransactionKind::Begin(TransactionModes {
            start: !begin,
            ..transaction_modes(&modes)?
        }),
        S::Commit { chain: true, .. } | S::Rollback { chain: true, .. } => return chain(),
        S::Commit { .. } => TransactionKind::Commit,
        S::Rollback {
            savepoint: Some(name),
            ..
        } => TransactionKind::RollbackTo(fold(&name)),
        S::Rollback { .. } => TransactionKind::Rollback,
        S::Savepoint { name } => TransactionKind::Savepoint(fold(&name)),
        S::ReleaseSavepoint { name } => TransactionKind::Release(fold(&name)),
        S::Set(ast::Set::SetTransaction {
            modes,
            snapshot,
            session,
        }) => {
            if snapshot.is_some() {
                return Err(ParseError::Unsupported(
                    "SET TRANSACTION SNAPSHOT is not supported".into(),
                ));
            }
            TransactionKind::SetTransaction {
                modes: transaction_modes(&modes)?,
                session,
            }
        }
        other => return Err(not_supported(&other, 3)),
    };
    let _ = sql;
    Ok(Statement::Transaction(kind))
}

/// An identifier as PostgreSQL folds it: unquoted ones to lower case, and
/// cut to 63 bytes.
fn fold(name: &ast::Ident) -> String {
    let mut s = match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_ascii_lowercase(),
    };
    if s.len() > 63 {
        let mut end = 63;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn transaction_modes(modes: &[ast::TransactionMode]) -> Result<TransactionModes, ParseError> {
    let mut out = TransactionModes::default();
    for m in modes {
        match m {
            ast::TransactionMode::AccessMode(a) => {
                out.read_only = Some(matches!(a, ast::TransactionAccessMode::ReadOnly));
            }
            ast::TransactionMode::IsolationLevel(l) => {
                out.isolation = Some(match l {
                    ast::TransactionIsolationLevel::ReadUncommitted => {
                        IsolationLevel::ReadUncommitted
                    }
                    ast::TransactionIsolationLevel::ReadCommitted => IsolationLevel::ReadCommitted,
                    ast::TransactionIsolationLevel::RepeatableRead => {
                        IsolationLevel::RepeatableRead
                    }
                    ast::TransactionIsolationLevel::Serializable => IsolationLevel::Serializable,
                    other => {
                        return Err(ParseError::Unsupported(format!(
                            "isolation level {other} is not supported"
                        )));
                    }
                });
            }
        }
    }
    Ok(out)
}

/// Parse `SEARCH c NEAREST col TO vec [METRIC m] [WHERE ..] [LIMIT k]
/// [OFFSET o] [WITH (..)] [RETURN ..]` and return the equivalent SELECT.
fn parse_search(
    sql: &str,
    tokens: Vec<TokenWithSpan>,
) -> Result<(String, SearchOptions), ParseError> {
    let err = |e: ParserError| syntax(sql, e);
    let mut p = new_parser(tokens);
    p.next_token(); // SEARCH
    let collection = p.parse_object_name(false).map_err(err)?;
    if p.parse_keyword(Keyword::PARTITION) {
        return Err(ParseError::Unsupported(
            "partitions are not supported yet".into(),
        ));
    }
    let nearest = p.next_token();
    if !matches!(&nearest.token, Token::Word(w) if w.value.eq_ignore_ascii_case("NEAREST")) {
        return p.expected("NEAREST", nearest).map_err(err);
    }
    let column = p.parse_identifier().map_err(err)?;
    p.expect_keyword_is(Keyword::TO).map_err(err)?;
    let vector = p.parse_expr().map_err(err)?;
    let mut metric = Metric::L2;
    let mut filter: Option<ast::Expr> = None;
    let mut limit = "10".to_string();
    let mut offset: Option<String> = None;
    let mut options = SearchOptions::default();
    let mut returning: Option<Vec<ast::SelectItem>> = None;
    loop {
        let t = p.peek_token();
        let Token::Word(w) = &t.token else { break };
        match w.value.to_ascii_uppercase().as_str() {
            "METRIC" => {
                p.next_token();
                let name = p.parse_identifier().map_err(err)?;
                metric = Metric::from_name(&name.value).ok_or_else(|| ParseError::Syntax {
                    message: format!(
                        "unknown metric \"{}\": use l2, ip, cosine or l1",
                        name.value
                    ),
                    position: char_position(sql, name.span.start.line, name.span.start.column),
                })?;
            }
            "WHERE" => {
                p.next_token();
                filter = Some(p.parse_expr().map_err(err)?);
            }
            "LIMIT" => {
                p.next_token();
                limit = count_or_param(&mut p).map_err(err)?;
            }
            "OFFSET" => {
                p.next_token();
                offset = Some(count_or_param(&mut p).map_err(err)?);
            }
            "WITH" => {
                p.next_token();
                options = parse_search_options(sql, &mut p)?;
            }
            "RETURN" => {
                p.next_token();
                returning = Some(
                    p.parse_comma_separated(|p| p.parse_select_item())
                        .map_err(err)?,
                );
            }
            _ => break,
        }
    }
    expect_end(sql, &p)?;

    let op = metric.operator();
    let distance = format!("({column} {op} {vector})");
    let items = match returning {
        Some(items) => items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        None => "*".to_string(),
    };
    let mut conditions: Vec<String> = filter.iter().map(|f| format!("({f})")).collect();
    if let Some(r) = &options.radius {
        conditions.push(format!("{distance} <= {r}"));
    }
    if let Some(r) = &options.range_filter {
        conditions.push(format!("{distance} >= {r}"));
    }
    let mut select = format!("SELECT {items}, {distance} AS distance FROM {collection}");
    if !conditions.is_empty() {
        select.push_str(" WHERE ");
        select.push_str(&conditions.join(" AND "));
    }
    select.push_str(&format!(" ORDER BY distance LIMIT {limit}"));
    if let Some(o) = offset {
        select.push_str(&format!(" OFFSET {o}"));
    }
    Ok((select, options))
}

/// The statement, run with the search settings of `options` if it has any.
fn tuned(statement: Statement, options: &SearchOptions) -> Statement {
    if options.ef.is_none() && options.nprobe.is_none() && options.refine_k.is_none() {
        return statement;
    }
    Statement::Tuned {
        ef: options.ef,
        nprobe: options.nprobe,
        refine_k: options.refine_k,
        inner: Box::new(statement),
    }
}

/// A LIMIT or OFFSET of SEARCH: a count, or a parameter (`$2`).
fn count_or_param(p: &mut Parser) -> Result<String, ParserError> {
    if let Token::Placeholder(s) = &p.peek_token().token {
        let s = s.clone();
        p.next_token();
        return Ok(s);
    }
    Ok(p.parse_literal_uint()?.to_string())
}

fn parse_search_options(sql: &str, p: &mut Parser) -> Result<SearchOptions, ParseError> {
    let err = |e: ParserError| syntax(sql, e);
    p.expect_token(&Token::LParen).map_err(err)?;
    let mut options = SearchOptions::default();
    loop {
        let name = p.parse_identifier().map_err(err)?;
        p.expect_token(&Token::Eq).map_err(err)?;
        let param = match &p.peek_token().token {
            Token::Placeholder(s) => Some(s.clone()),
            _ => None,
        };
        let text = match &param {
            Some(s) => {
                p.next_token();
                s.clone()
            }
            None => p.parse_number_value().map_err(err)?.to_string(),
        };
        let bad = || ParseError::Syntax {
            message: format!("invalid value {text} for SEARCH option \"{}\"", name.value),
            position: char_position(sql, name.span.start.line, name.span.start.column),
        };
        let knob = || -> Result<Knob, ParseError> {
            match &param {
                Some(s) => s
                    .trim_start_matches('$')
                    .parse()
                    .map(Knob::Param)
                    .map_err(|_| bad()),
                None => text.parse().map(Knob::Value).map_err(|_| bad()),
            }
        };
        let number = || -> Result<String, ParseError> {
            match &param {
                Some(s) => Ok(format!("{s}::double precision")),
                None => text
                    .parse::<f64>()
                    .map(|v| v.to_string())
                    .map_err(|_| bad()),
            }
        };
        match name.value.to_ascii_lowercase().as_str() {
            "ef" => options.ef = Some(knob()?),
            "nprobe" => options.nprobe = Some(knob()?),
            "refine_k" => options.refine_k = Some(knob()?),
            "radius" => options.radius = Some(number()?),
            "range_filter" => options.range_filter = Some(number()?),
            other => {
                return Err(ParseError::Syntax {
                    message: format!(
                        "unknown SEARCH option \"{other}\": use ef, nprobe, refine_k, radius or range_filter"
                    ),
                    position: char_position(sql, name.span.start.line, name.span.start.column),
                });
            }
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen).map_err(err)?;
    Ok(options)
}

#[cfg(test)]
mod tests;
