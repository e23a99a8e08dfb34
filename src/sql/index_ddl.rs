//! Parsing of the index statements: CREATE INDEX, DROP INDEX, REINDEX and
//! SHOW INDEXES.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::ParseError;
use super::access::{Cursor, upper};
use super::statement::IndexStatement;

/// Whether the statement starting with `w0 w1 w2` is one of ours.
pub fn is_index_statement(w0: &str, w1: &str, w2: &str) -> bool {
    matches!(
        (w0, w1),
        ("CREATE", "INDEX")
            | ("CREATE", "UNIQUE")
            | ("DROP", "INDEX")
            | ("REINDEX", _)
            | ("SHOW", "INDEXES")
            | ("SHOW", "INDEX")
    ) && !(w0 == "CREATE" && w1 == "UNIQUE" && w2 != "INDEX")
}

pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Result<IndexStatement, ParseError> {
    let mut c = Cursor::new(sql, tokens);
    let stmt = if c.word("CREATE") {
        if c.word("UNIQUE") {
            return Err(ParseError::Unsupported(
                "unique indexes are not supported: declare a PRIMARY KEY".into(),
            ));
        }
        c.expect("INDEX")?;
        c.word("CONCURRENTLY");
        let if_not_exists = c.words(&["IF", "NOT", "EXISTS"]);
        let name = if c.word("ON") {
            None
        } else {
            let n = c.name()?;
            c.expect("ON")?;
            Some(n)
        };
        c.word("ONLY");
        let collection = c.qualified()?;
        let method = if c.word("USING") {
            c.name()?
        } else {
            "hnsw".to_string()
        };
        if !c.punct(&Token::LParen) {
            return Err(c.error("( column [operator class] )"));
        }
        let column = c.name()?;
        let opclass = match c.peek() {
            Some(Token::Word(_)) => Some(c.name()?),
            _ => None,
        };
        if !c.punct(&Token::RParen) {
            return Err(c.error(") (an index covers one vector column)"));
        }
        let options = if c.word("WITH") {
            options(&mut c)?
        } else {
            BTreeMap::new()
        };
        IndexStatement::Create {
            name,
            if_not_exists,
            collection,
            method: method.to_ascii_lowercase(),
            column,
            opclass,
            options,
        }
    } else if c.word("DROP") {
        c.expect("INDEX")?;
        c.word("CONCURRENTLY");
        let if_exists = c.words(&["IF", "EXISTS"]);
        let names = c.list(index_name)?;
        if !c.word("RESTRICT") {
            c.word("CASCADE");
        }
        IndexStatement::Drop { names, if_exists }
    } else if c.word("REINDEX") {
        if c.word("TABLE") || c.word("COLLECTION") {
            IndexStatement::ReindexCollection {
                collection: c.qualified()?,
            }
        } else {
            c.expect("INDEX")?;
            IndexStatement::Reindex {
                name: index_name(&mut c)?,
            }
        }
    } else {
        c.expect("SHOW")?;
        if !c.word("INDEXES") {
            c.expect("INDEX")?;
        }
        if !c.word("FROM") {
            c.expect("ON")?;
        }
        IndexStatement::Show {
            collection: c.qualified()?,
        }
    };
    c.end()?;
    Ok(stmt)
}

/// An index's name, optionally in schema `public` (`"public"."ix"`, as
/// tools write it): indexes live in their collection's schema.
fn index_name(c: &mut Cursor) -> Result<String, ParseError> {
    let mut parts = c.qualified()?;
    match parts.len() {
        1 => Ok(parts.remove(0)),
        2 if parts[0] == "public" => Ok(parts.remove(1)),
        _ => Err(ParseError::Unsupported(format!(
            "index name {}: indexes are in schema public",
            parts.join(".")
        ))),
    }
}

/// `( name = value [, ...] )`; values are numbers, words or strings.
fn options(c: &mut Cursor) -> Result<BTreeMap<String, String>, ParseError> {
    if !c.punct(&Token::LParen) {
        return Err(c.error("( option = value, ... )"));
    }
    let mut out = BTreeMap::new();
    loop {
        let name = c.name()?;
        if !c.punct(&Token::Eq) {
            return Err(c.error("="));
        }
        let value = match c.next() {
            Some(Token::Number(n, _)) => n.clone(),
            Some(Token::SingleQuotedString(s)) => s.clone(),
            Some(t @ Token::Word(_)) => upper(t).unwrap_or_default().to_ascii_lowercase(),
            _ => return Err(c.error("a value")),
        };
        out.insert(name, value);
        if c.punct(&Token::RParen) {
            return Ok(out);
        }
        if !c.punct(&Token::Comma) {
            return Err(c.error(", or )"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::statement::Statement;
    use super::*;

    fn one(sql: &str) -> IndexStatement {
        match crate::parse(sql).unwrap().remove(0) {
            Statement::Index(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_index() {
        match one(
            "CREATE INDEX items_v ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64, wait = true)",
        ) {
            IndexStatement::Create {
                name,
                collection,
                method,
                column,
                opclass,
                options,
                ..
            } => {
                assert_eq!(name.as_deref(), Some("items_v"));
                assert_eq!(collection, vec!["items".to_string()]);
                assert_eq!(method, "hnsw");
                assert_eq!(column, "embedding");
                assert_eq!(opclass.as_deref(), Some("vector_cosine_ops"));
                assert_eq!(options.get("m").map(String::as_str), Some("16"));
                assert_eq!(options.get("wait").map(String::as_str), Some("true"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("CREATE INDEX ON t USING ivfflat (v)"),
            IndexStatement::Create {
                name: None,
                opclass: None,
                ..
            }
        ));
        assert!(matches!(
            one("DROP INDEX IF EXISTS a, b"),
            IndexStatement::Drop {
                if_exists: true,
                ..
            }
        ));
        assert!(matches!(
            one("REINDEX INDEX a"),
            IndexStatement::Reindex { .. }
        ));
        assert!(matches!(
            one("SHOW INDEXES FROM t"),
            IndexStatement::Show { .. }
        ));
        assert!(crate::parse("CREATE INDEX i ON t USING hnsw (a, b)").is_err());
        assert!(crate::parse("CREATE INDEX i ON t USING hnsw (v) WITH (m)").is_err());
    }
}
