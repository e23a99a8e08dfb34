//! Parsing of the access-control statements: CREATE/ALTER/DROP USER and
//! ROLE, GRANT and REVOKE (privileges and roles), SHOW USERS/ROLES/GRANTS.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::ParseError;
use super::statement::{AccessStatement, GrantObject};
use quiver_auth::Secret;
use quiver_auth::acl::Privilege;

/// A cursor over the statement's tokens, whitespace skipped.
pub(super) struct Cursor<'a> {
    sql: &'a str,
    tokens: Vec<&'a TokenWithSpan>,
    at: usize,
}

pub(super) fn upper(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

impl<'a> Cursor<'a> {
    pub(super) fn new(sql: &'a str, tokens: &'a [TokenWithSpan]) -> Cursor<'a> {
        Cursor {
            sql,
            tokens: tokens
                .iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon))
                .collect(),
            at: 0,
        }
    }

    pub(super) fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.at).map(|t| &t.token)
    }

    /// Take the next token, whatever it is.
    pub(super) fn next(&mut self) -> Option<&'a Token> {
        let t = self.peek();
        if t.is_some() {
            self.at += 1;
        }
        t
    }

    /// Consume `token` if it is next.
    pub(super) fn punct(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn error(&self, expected: &str) -> ParseError {
        let (found, position) = match self.tokens.get(self.at) {
            Some(t) => (
                t.token.to_string(),
                super::parser::char_position(self.sql, t.span.start.line, t.span.start.column),
            ),
            None => (
                "end of statement".to_string(),
                Some(self.sql.chars().count()),
            ),
        };
        ParseError::Syntax {
            message: format!("syntax error: expected {expected}, found {found}"),
            position,
        }
    }

    /// Consume `word` (unquoted, any case) if it is next.
    pub(super) fn word(&mut self, word: &str) -> bool {
        if self.peek().and_then(upper).as_deref() == Some(word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn words(&mut self, words: &[&str]) -> bool {
        let start = self.at;
        for w in words {
            if !self.word(w) {
                self.at = start;
                return false;
            }
        }
        true
    }

    pub(super) fn expect(&mut self, word: &str) -> Result<(), ParseError> {
        if self.word(word) {
            Ok(())
        } else {
            Err(self.error(word))
        }
    }

    /// A user, role or database name: unquoted names fold to lower case.
    pub(super) fn name(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Token::Word(w)) => {
                self.at += 1;
                Ok(if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_ascii_lowercase()
                })
            }
            _ => Err(self.error("a name")),
        }
    }

    /// A possibly qualified collection name (`c` or `db.c`).
    pub(super) fn qualified(&mut self) -> Result<Vec<String>, ParseError> {
        let mut parts = vec![self.name()?];
        while matches!(self.peek(), Some(Token::Period)) {
            self.at += 1;
            parts.push(self.name()?);
        }
        Ok(parts)
    }

    pub(super) fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut out = vec![item(self)?];
        while matches!(self.peek(), Some(Token::Comma)) {
            self.at += 1;
            out.push(item(self)?);
        }
        Ok(out)
    }

    pub(super) fn string(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Token::SingleQuotedString(s))
            | Some(Token::EscapedStringLiteral(s))
            | Some(Token::DollarQuotedString(
                datafusion::sql::sqlparser::ast::DollarQuotedString { value: s, .. },
            )) => {
                self.at += 1;
                Ok(s.clone())
            }
            _ => Err(self.error("a quoted string")),
        }
    }

    pub(super) fn end(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("end of statement")),
        }
    }
}

/// Whether the statement starting with `w0 w1` is one of ours.
pub fn is_access_statement(w0: &str, w1: &str) -> bool {
    matches!(
        (w0, w1),
        ("CREATE", "USER")
            | ("CREATE", "ROLE")
            | ("ALTER", "USER")
            | ("ALTER", "ROLE")
            | ("DROP", "USER")
            | ("DROP", "ROLE")
            | ("GRANT", _)
            | ("REVOKE", _)
            | ("SHOW", "USERS")
            | ("SHOW", "ROLES")
            | ("SHOW", "GRANTS")
    )
}

pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Result<AccessStatement, ParseError> {
    let mut c = Cursor::new(sql, tokens);
    let stmt = if c.word("CREATE") {
        let user = c.word("USER");
        if !user {
            c.expect("ROLE")?;
        }
        let if_not_exists = c.words(&["IF", "NOT", "EXISTS"]);
        let name = c.name()?;
        let (password, login) = role_options(&mut c)?;
        if user || login || password.is_some() {
            AccessStatement::CreateUser {
                name,
                password: password.flatten(),
                if_not_exists,
            }
        } else {
            AccessStatement::CreateRole {
                name,
                if_not_exists,
            }
        }
    } else if c.word("ALTER") {
        if !c.word("USER") {
            c.expect("ROLE")?;
        }
        let name = c.name()?;
        let (password, _) = role_options(&mut c)?;
        match password {
            Some(password) => AccessStatement::AlterUser { name, password },
            None => return Err(c.error("PASSWORD")),
        }
    } else if c.word("DROP") {
        let user = c.word("USER");
        if !user {
            c.expect("ROLE")?;
        }
        let if_exists = c.words(&["IF", "EXISTS"]);
        let names = c.list(Cursor::name)?;
        if user {
            AccessStatement::DropUser { names, if_exists }
        } else {
            AccessStatement::DropRole { names, if_exists }
        }
    } else if c.word("GRANT") {
        parse_grant(&mut c, true)?
    } else if c.word("REVOKE") {
        parse_grant(&mut c, false)?
    } else {
        c.expect("SHOW")?;
        if c.word("USERS") {
            AccessStatement::ShowUsers
        } else if c.word("ROLES") {
            AccessStatement::ShowRoles
        } else {
            c.expect("GRANTS")?;
            let name = if c.word("FOR") { Some(c.name()?) } else { None };
            AccessStatement::ShowGrants { name }
        }
    };
    c.end()?;
    Ok(stmt)
}

/// `[WITH] [LOGIN | NOLOGIN | PASSWORD 'x' | PASSWORD NULL] ...`; returns
/// the password (`Some(None)` for NULL) and whether LOGIN was given.
#[allow(clippy::type_complexity)]
fn role_options(c: &mut Cursor) -> Result<(Option<Option<Secret>>, bool), ParseError> {
    c.word("WITH");
    let mut password = None;
    let mut login = false;
    loop {
        if c.word("LOGIN") {
            login = true;
        } else if c.word("NOLOGIN") {
            login = false;
        } else if c.word("PASSWORD") || c.words(&["ENCRYPTED", "PASSWORD"]) {
            password = Some(if c.word("NULL") {
                None
            } else {
                Some(Secret(c.string()?))
            });
        } else if c.peek().is_none() {
            return Ok((password, login));
        } else {
            return Err(c.error("LOGIN, NOLOGIN or PASSWORD 'password'"));
        }
    }
}

fn privilege(c: &mut Cursor) -> Result<Privilege, ParseError> {
    let word = c.peek().and_then(upper).unwrap_or_default();
    match Privilege::parse(&word) {
        Some(p) => {
            c.at += 1;
            Ok(p)
        }
        None => Err(c.error(
            "a privilege (SELECT, SEARCH, INSERT, UPDATE, DELETE, INDEX, MAINTAIN, CREATE, DROP, ALTER or ALL)",
        )),
    }
}

fn parse_grant(c: &mut Cursor, grant: bool) -> Result<AccessStatement, ParseError> {
    let option_for = !grant && c.words(&["GRANT", "OPTION", "FOR"]);
    // Privileges are followed by ON; role names by TO/FROM.
    let has_on = c.tokens[c.at..]
        .iter()
        .any(|t| upper(&t.token).as_deref() == Some("ON"));
    if !has_on {
        let roles = c.list(Cursor::name)?;
        c.expect(if grant { "TO" } else { "FROM" })?;
        let users = c.list(Cursor::name)?;
        return Ok(if grant {
            AccessStatement::GrantRole { roles, users }
        } else {
            AccessStatement::RevokeRole { roles, users }
        });
    }
    let privileges = if c.word("ALL") {
        c.word("PRIVILEGES");
        None
    } else {
        Some(c.list(privilege)?)
    };
    c.expect("ON")?;
    let object = if c.word("DATABASE") {
        GrantObject::Database(c.name()?)
    } else if c.words(&["ALL", "COLLECTIONS", "IN", "DATABASE"]) {
        GrantObject::AllCollections(Some(c.name()?))
    } else if c.words(&["ALL", "TABLES", "IN", "SCHEMA"]) {
        c.name()?;
        GrantObject::AllCollections(None)
    } else if c.words(&["ALL", "DATABASES"]) || c.word("GLOBAL") {
        GrantObject::Global
    } else {
        if !c.word("COLLECTION") {
            c.word("TABLE");
        }
        GrantObject::Collections(c.list(Cursor::qualified)?)
    };
    c.expect(if grant { "TO" } else { "FROM" })?;
    let grantees = c.list(Cursor::name)?;
    let with_grant_option = grant && c.words(&["WITH", "GRANT", "OPTION"]);
    if !grant && !c.word("RESTRICT") {
        c.word("CASCADE");
    }
    Ok(if grant {
        AccessStatement::Grant {
            privileges,
            object,
            grantees,
            with_grant_option,
        }
    } else {
        AccessStatement::Revoke {
            privileges,
            object,
            grantees,
            grant_option_for: option_for,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::statement::Statement;
    use super::*;

    fn one(sql: &str) -> AccessStatement {
        match crate::parse(sql).unwrap().remove(0) {
            Statement::Access(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn users_and_roles() {
        match one("CREATE USER Alice WITH PASSWORD 'pw'") {
            AccessStatement::CreateUser { name, password, .. } => {
                assert_eq!(name, "alice");
                assert_eq!(password, Some(Secret("pw".into())));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("CREATE ROLE reader"),
            AccessStatement::CreateRole { .. }
        ));
        assert!(matches!(
            one("CREATE ROLE bob LOGIN PASSWORD 'x'"),
            AccessStatement::CreateUser { .. }
        ));
        assert!(matches!(
            one("ALTER USER \"Bob\" PASSWORD 'x'"),
            AccessStatement::AlterUser { name, .. } if name == "Bob"
        ));
        assert!(matches!(
            one("DROP ROLE IF EXISTS a, b"),
            AccessStatement::DropRole { names, if_exists: true } if names.len() == 2
        ));
        assert!(matches!(one("SHOW USERS"), AccessStatement::ShowUsers));
        assert!(matches!(
            one("SHOW GRANTS FOR reader"),
            AccessStatement::ShowGrants { name: Some(n) } if n == "reader"
        ));
        assert!(matches!(
            one("GRANT reader TO alice, bob"),
            AccessStatement::GrantRole { .. }
        ));
        // The password never shows in debug output.
        assert!(!format!("{:?}", one("CREATE USER a PASSWORD 'hunter2'")).contains("hunter2"));
    }

    #[test]
    fn grants() {
        match one(
            "GRANT SELECT, search ON COLLECTION products, shop.items TO reader WITH GRANT OPTION",
        ) {
            AccessStatement::Grant {
                privileges,
                object: GrantObject::Collections(names),
                grantees,
                with_grant_option,
            } => {
                assert_eq!(privileges, Some(vec![Privilege::Select, Privilege::Search]));
                assert_eq!(names[1], vec!["shop".to_string(), "items".to_string()]);
                assert_eq!(grantees, vec!["reader".to_string()]);
                assert!(with_grant_option);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one("GRANT ALL PRIVILEGES ON DATABASE shop TO admin_role"),
            AccessStatement::Grant { privileges: None, object: GrantObject::Database(d), .. } if d == "shop"
        ));
        assert!(matches!(
            one("REVOKE GRANT OPTION FOR INSERT ON ALL COLLECTIONS IN DATABASE shop FROM w"),
            AccessStatement::Revoke {
                grant_option_for: true,
                object: GrantObject::AllCollections(Some(_)),
                ..
            }
        ));
        assert!(matches!(
            one("GRANT CREATE ON ALL DATABASES TO ops"),
            AccessStatement::Grant {
                object: GrantObject::Global,
                ..
            }
        ));
        let err = crate::parse("GRANT FLY ON COLLECTION t TO r").unwrap_err();
        assert!(err.to_string().contains("SEARCH"), "{err}");
        assert!(crate::parse("GRANT SELECT ON COLLECTION t TO").is_err());
    }
}
