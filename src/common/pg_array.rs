//! PostgreSQL's text form of a one-dimensional array: `{a,"b c",NULL}`.

/// Field metadata marking an array column as one of PostgreSQL's vector
/// types of the catalog, `int2vector` or `oidvector` (`pg_index.indkey`):
/// arrays in queries (`unnest(indkey)`), sent with that type and, as text,
/// in its form `1 2`.
pub const CATALOG_VECTOR_KEY: &str = "quiver.catalog_vector";

/// The elements of `text` as text (`None` for an unquoted NULL), or why
/// it is not an array literal (PostgreSQL: 22P02 "malformed array literal").
pub fn parse(text: &str) -> Result<Vec<Option<String>>, String> {
    let malformed = |why: &str| format!("malformed array literal: \"{text}\": {why}");
    let body = text.trim();
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| malformed("an array must start with \"{\" and end with \"}\""))?;
    let mut out = Vec::new();
    if body.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        let element = match chars.peek() {
            Some('"') => {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => {
                            value.push(chars.next().ok_or_else(|| malformed("unexpected end"))?)
                        }
                        Some(c) => value.push(c),
                        None => return Err(malformed("unterminated quoted element")),
                    }
                }
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                Some(value)
            }
            Some('{') => return Err(malformed("multidimensional arrays are not supported")),
            _ => {
                let mut escaped = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        ',' => break,
                        '"' | '{' | '}' => return Err(malformed("unexpected character")),
                        '\\' => {
                            chars.next();
                            value.push(chars.next().ok_or_else(|| malformed("unexpected end"))?);
                            escaped = true;
                            continue;
                        }
                        _ => value.push(c),
                    }
                    chars.next();
                }
                let trimmed = value.trim_end().to_string();
                if trimmed.is_empty() {
                    return Err(malformed("empty element"));
                }
                (escaped || !trimmed.eq_ignore_ascii_case("null")).then_some(trimmed)
            }
        };
        out.push(element);
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(_) => return Err(malformed("expected \",\" or \"}\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn arrays_as_postgresql_reads_them() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(parse("{a,b}").unwrap(), vec![s("a"), s("b")]);
        assert_eq!(parse(" { a , b c } ").unwrap(), vec![s("a"), s("b c")]);
        assert_eq!(parse("{}").unwrap(), vec![]);
        assert_eq!(
            parse("{NULL,null,\"NULL\",x}").unwrap(),
            vec![None, None, s("NULL"), s("x")]
        );
        assert_eq!(
            parse(r#"{"a,b","c\"d",e\,f}"#).unwrap(),
            vec![s("a,b"), s("c\"d"), s("e,f")]
        );
        assert_eq!(parse("{4,5}").unwrap(), vec![s("4"), s("5")]);
        for bad in ["a,b", "{a,b", "{{1,2},{3,4}}", "{a,,b}", "{\"a}", "{a\"b}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
