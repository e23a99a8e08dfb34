//! The dialect's statements, parsed.

use super::*;

fn one(sql: &str) -> Statement {
    let mut v = parse(sql).unwrap();
    assert_eq!(v.len(), 1, "{sql}");
    v.remove(0)
}

#[test]
fn splits_statements() {
    assert_eq!(parse("SELECT 1; SELECT 2;;").unwrap().len(), 2);
    assert!(parse("  ;  ").unwrap().is_empty());
}

#[test]
fn collections() {
    assert!(matches!(
        one("CREATE COLLECTION c (id BIGINT PRIMARY KEY, v VECTOR(3))"),
        Statement::CreateCollection(_)
    ));
    assert!(matches!(
        one("drop collection if exists c"),
        Statement::DropCollection {
            if_exists: true,
            ..
        }
    ));
    assert!(matches!(
        one("SHOW COLLECTIONS"),
        Statement::ShowCollections
    ));
    assert!(matches!(
        one("DESCRIBE COLLECTION c"),
        Statement::DescribeCollection { .. }
    ));
}

#[test]
fn l1_operator() {
    let Statement::Query(q) = one("SELECT v <+> '[1,2]' FROM t") else {
        panic!()
    };
    assert!(q.to_string().contains("<+>"), "{q}");
}

#[test]
fn search_becomes_select() {
    let Statement::Query(q) =
        one("SEARCH c NEAREST v TO '[1,2]' METRIC cosine WHERE x > 1 LIMIT 5 RETURN id")
    else {
        panic!()
    };
    let s = q.to_string();
    assert!(
        s.contains("<=>") && s.contains("LIMIT 5") && s.contains("x > 1"),
        "{s}"
    );
}

#[test]
fn syntax_errors_have_positions() {
    match parse("SELECT * FROM t WHERE").unwrap_err() {
        ParseError::Syntax { position, .. } => assert!(position.is_some()),
        other => panic!("{other:?}"),
    }
    match parse("SELEC 1").unwrap_err() {
        ParseError::Syntax { position, .. } => assert_eq!(position, Some(1)),
        other => panic!("{other:?}"),
    }
    assert!(parse("SEARCH c NEAREST v TO '[1]' WITH (foo = 1)").is_err());
}

#[test]
fn set_variables() {
    match one("SET hnsw.ef_search = 100") {
        Statement::Set { name, value, .. } => {
            assert_eq!(name, "hnsw.ef_search");
            assert_eq!(value, "100");
        }
        other => panic!("{other:?}"),
    }
    match one("SET TIME ZONE 'UTC'") {
        Statement::Set { name, value, .. } => {
            assert_eq!((name.as_str(), value.as_str()), ("timezone", "UTC"))
        }
        other => panic!("{other:?}"),
    }
}
