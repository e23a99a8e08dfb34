//! A bound on how deeply a statement's expressions nest, checked on its
//! tokens before it is parsed.
//!
//! sqlparser parses a chain of infix operators (`1+1+1...`, `a AND b AND
//! ...`, `x::a::b...`) in a loop, so its recursion limit does not see it,
//! but the tree it builds is as deep as the chain is long, and planning,
//! evaluating and dropping that tree recurse once per level. Parentheses,
//! function calls and subqueries are already bounded by the parser's
//! recursion limit. So the depth of a statement's expressions is at most the
//! number of operators that can enclose a point of it: at each level of
//! parentheses, the operators since the last comma (a comma ends an
//! expression), summed over the levels open there. That sum, over every
//! point, is what this file bounds; it over-counts (`BETWEEN a AND b` counts
//! two), never under-counts.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

/// The deepest expression nesting quiver plans. PostgreSQL's limit is its
/// stack (`max_stack_depth`, 2 MB); this one leaves every thread that plans
/// or evaluates an expression room for it (see the server's stack size).
pub const MAX_EXPRESSION_DEPTH: usize = 4096;

/// The estimated depth of the statement's expressions, or the first point
/// where it passes [`MAX_EXPRESSION_DEPTH`] (a token index).
pub fn check(tokens: &[TokenWithSpan]) -> Result<usize, usize> {
    // Operators since the last comma, per open parenthesis or bracket.
    let mut levels: Vec<usize> = vec![0];
    let mut total = 0usize;
    let mut deepest = 0usize;
    for (at, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen | Token::LBrace => levels.push(0),
            Token::RParen | Token::RBrace if levels.len() > 1 => {
                total -= levels.pop().unwrap_or(0);
            }
            Token::Comma => {
                if let Some(last) = levels.last_mut() {
                    total -= *last;
                    *last = 0;
                }
            }
            t if counts(t) => {
                if let Some(last) = levels.last_mut() {
                    *last += 1;
                    total += 1;
                }
                let depth = total + levels.len();
                deepest = deepest.max(depth);
                if depth > MAX_EXPRESSION_DEPTH {
                    return Err(at);
                }
            }
            _ => {}
        }
    }
    Ok(deepest)
}

/// Whether a token may join two expressions into one (or prefix one).
fn counts(t: &Token) -> bool {
    match t {
        Token::Word(w) => {
            w.quote_style.is_none()
                && matches!(
                    w.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::XOR
                        | Keyword::NOT
                        | Keyword::IS
                        | Keyword::LIKE
                        | Keyword::ILIKE
                        | Keyword::SIMILAR
                        | Keyword::BETWEEN
                        | Keyword::IN
                        | Keyword::COLLATE
                        | Keyword::AT
                        | Keyword::OPERATOR
                        | Keyword::OVERLAPS
                        | Keyword::DIV
                        | Keyword::CASE
                        | Keyword::WHEN
                )
        }
        Token::EOF
        | Token::Comma
        | Token::Whitespace(_)
        | Token::LParen
        | Token::RParen
        | Token::LBrace
        | Token::RBrace
        | Token::Period
        | Token::SemiColon
        | Token::Colon
        | Token::Placeholder(_)
        | Token::Number(..)
        | Token::Char(_) => false,
        t => !is_literal(t),
    }
}

fn is_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;

    fn depth(sql: &str) -> Result<usize, usize> {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        check(&tokens)
    }

    #[test]
    fn chains_count_and_commas_end_expressions() {
        assert_eq!(depth("SELECT 1"), Ok(0));
        // Two operators, one level.
        assert_eq!(depth("SELECT 1 + 2 + 3"), Ok(3));
        // Each row of a VALUES list is its own expression.
        let rows: Vec<String> = (0..10_000).map(|i| format!("(-{i}, 'x' || 'y')")).collect();
        let many = format!("INSERT INTO t VALUES {}", rows.join(", "));
        assert!(depth(&many).unwrap() < 10);
        // A chain inside parentheses adds to the chain around it.
        assert_eq!(depth("SELECT a + (b * c - d)"), Ok(5));
        assert_eq!(depth("SELECT f(a + b, c + d) + 1"), Ok(3));
    }

    #[test]
    fn long_chains_are_refused() {
        let chain = vec!["1"; MAX_EXPRESSION_DEPTH + 10].join("+");
        assert!(depth(&format!("SELECT {chain}")).is_err());
        let ors = vec!["a = 1"; MAX_EXPRESSION_DEPTH].join(" OR ");
        assert!(depth(&format!("SELECT * FROM t WHERE {ors}")).is_err());
        let concat = vec!["'x'"; MAX_EXPRESSION_DEPTH + 10].join(" || ");
        assert!(depth(&format!("SELECT {concat}")).is_err());
        let fine = vec!["1"; MAX_EXPRESSION_DEPTH / 2].join("+");
        assert!(depth(&format!("SELECT {fine}")).is_ok());
    }
}
