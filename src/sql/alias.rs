//! Parsing of the alias statements (Milvus's aliases): CREATE ALIAS, ALTER
//! ALIAS, DROP ALIAS and SHOW ALIASES.

use datafusion::sql::sqlparser::tokenizer::TokenWithSpan;

use super::ParseError;
use super::access::Cursor;
use super::statement::AliasStatement;

/// Whether the statement starting with `w0 w1` is one of ours.
pub fn is_alias_statement(w0: &str, w1: &str) -> bool {
    matches!(
        (w0, w1),
        ("CREATE", "ALIAS") | ("ALTER", "ALIAS") | ("DROP", "ALIAS") | ("SHOW", "ALIASES")
    )
}

pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Result<AliasStatement, ParseError> {
    let mut c = Cursor::new(sql, tokens);
    let create = c.word("CREATE");
    let stmt = if create || c.word("ALTER") {
        c.expect("ALIAS")?;
        let alias = c.qualified()?;
        c.expect("FOR")?;
        if !c.word("COLLECTION") {
            c.word("TABLE");
        }
        let collection = c.qualified()?;
        if create {
            AliasStatement::Create { alias, collection }
        } else {
            AliasStatement::Alter { alias, collection }
        }
    } else if c.word("DROP") {
        c.expect("ALIAS")?;
        let if_exists = c.words(&["IF", "EXISTS"]);
        AliasStatement::Drop {
            alias: c.qualified()?,
            if_exists,
        }
    } else {
        c.expect("SHOW")?;
        c.expect("ALIASES")?;
        let collection = if c.word("FROM") || c.word("IN") || c.word("FOR") {
            Some(c.qualified()?)
        } else {
            None
        };
        AliasStatement::Show { collection }
    };
    c.end()?;
    Ok(stmt)
}

#[cfg(test)]
mod tests {
    use super::super::statement::{AliasStatement, Statement};
    use super::super::{ParseError, parse};

    fn one(sql: &str) -> Result<AliasStatement, ParseError> {
        match parse(sql)?.pop() {
            Some(Statement::Alias(a)) => Ok(a),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn alias_statements() {
        assert!(matches!(
            one("CREATE ALIAS prod FOR items_v2").unwrap(),
            AliasStatement::Create { alias, collection } if alias == ["prod"] && collection == ["items_v2"]
        ));
        assert!(matches!(
            one("alter alias \"Prod\" for collection db.items").unwrap(),
            AliasStatement::Alter { alias, collection } if alias == ["Prod"] && collection == ["db", "items"]
        ));
        assert!(matches!(
            one("ALTER ALIAS prod FOR items").unwrap(),
            AliasStatement::Alter { alias, .. } if alias == ["prod"]
        ));
        assert!(matches!(
            one("DROP ALIAS IF EXISTS prod;").unwrap(),
            AliasStatement::Drop { alias, if_exists: true } if alias == ["prod"]
        ));
        assert!(matches!(
            one("SHOW ALIASES").unwrap(),
            AliasStatement::Show { collection: None }
        ));
        assert!(matches!(
            one("SHOW ALIASES FROM items").unwrap(),
            AliasStatement::Show { collection: Some(c) } if c == ["items"]
        ));
        for bad in [
            "CREATE ALIAS prod",
            "CREATE ALIAS prod FOR",
            "DROP ALIAS",
            "ALTER ALIAS a FOR b c",
        ] {
            assert!(matches!(one(bad), Err(ParseError::Syntax { .. })), "{bad}");
        }
    }
}
