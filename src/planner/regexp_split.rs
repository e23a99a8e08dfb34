//! `regexp_split_to_array(string, pattern [, flags])`, and through it
//! `regexp_split_to_table` (the parser rewrites a call of it into
//! `unnest(regexp_split_to_array(...))`). pgcli's name-casing query splits
//! function sources with it.
//!
//! The pieces are PostgreSQL's: a zero-length match at the start or the end
//! of the string, or right after another match, does not split, so
//! `regexp_split_to_array('abc', '')` gives `{a,b,c}`. Patterns are Rust
//! `regex` syntax, which agrees with PostgreSQL's for the usual classes and
//! quantifiers; one it cannot read (a back reference) is refused as an
//! invalid regular expression (2201B).

use std::sync::Arc;

use arrow::array::{Array, AsArray, ListBuilder, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The name the parser rewrites `regexp_split_to_table` to call.
pub const REGEXP_SPLIT_TO_ARRAY: &str = "regexp_split_to_array";

/// `regex` for a PostgreSQL pattern and flags.
fn compile(pattern: &str, flags: &str) -> std::result::Result<regex::Regex, String> {
    // `q`: the pattern is a literal string.
    let literal;
    let pattern = if flags.contains('q') {
        literal = regex::escape(pattern);
        literal.as_str()
    } else {
        pattern
    };
    let mut b = regex::RegexBuilder::new(pattern);
    for f in flags.chars() {
        match f {
            'i' => b.case_insensitive(true),
            'c' => b.case_insensitive(false),
            'x' => b.ignore_whitespace(true),
            // PostgreSQL's `n`/`m`: newline-sensitive matching.
            'n' | 'm' => b.multi_line(true).dot_matches_new_line(false),
            's' => b.dot_matches_new_line(true),
            'q' => &mut b,
            'g' => {
                return Err(format!(
                    "{REGEXP_SPLIT_TO_ARRAY}() does not support the \"global\" option"
                ));
            }
            other => return Err(format!("invalid regular expression option: \"{other}\"")),
        };
    }
    b.size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression: {e}"))
}

/// The pieces of `text` between the matches of `re`, as PostgreSQL's
/// `regexp_split_to_array` cuts them.
pub fn split<'a>(text: &'a str, re: &regex::Regex) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_end = None;
    for m in re.find_iter(text) {
        let empty = m.start() == m.end();
        if empty && (m.start() == 0 || m.start() == text.len() || previous_end == Some(m.start())) {
            continue;
        }
        pieces.push(&text[start..m.start()]);
        start = m.end();
        previous_end = Some(m.end());
    }
    pieces.push(&text[start..]);
    pieces
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpSplit {
    signature: Signature,
}

impl ScalarUDFImpl for RegexpSplit {
    fn name(&self) -> &str {
        REGEXP_SPLIT_TO_ARRAY
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new_list_field(
            DataType::Utf8,
            true,
        ))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !(2..=3).contains(&args.args.len()) {
            return exec_err!(
                "{REGEXP_SPLIT_TO_ARRAY} takes a string, a pattern and optional flags"
            );
        }
        let n = args.number_rows;
        let texts = args
            .args
            .iter()
            .map(|a| Ok(cast(&a.to_array(n)?, &DataType::Utf8)?))
            .collect::<Result<Vec<_>>>()?;
        let text = texts[0].as_string::<i32>();
        let pattern = texts[1].as_string::<i32>();
        let flags = texts.get(2).map(|f| f.as_string::<i32>());
        let mut out = ListBuilder::new(StringBuilder::new());
        // Most calls have one pattern for every row: compile it once.
        let mut compiled: Option<(String, String, regex::Regex)> = None;
        for row in 0..n {
            let flag = match flags {
                Some(f) if f.is_null(row) => {
                    out.append_null();
                    continue;
                }
                Some(f) => f.value(row),
                None => "",
            };
            if text.is_null(row) || pattern.is_null(row) {
                out.append_null();
                continue;
            }
            let p = pattern.value(row);
            let fresh = !matches!(&compiled, Some((cp, cf, _)) if cp == p && cf == flag);
            if fresh {
                let re = compile(p, flag).map_err(datafusion::error::DataFusionError::Execution)?;
                compiled = Some((p.to_string(), flag.to_string(), re));
            }
            let Some((_, _, re)) = &compiled else {
                unreachable!("compiled above")
            };
            for piece in split(text.value(row), re) {
                out.values().append_value(piece);
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(RegexpSplit {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str, pattern: &str) -> Vec<String> {
        let re = compile(pattern, "").unwrap();
        split(text, &re).into_iter().map(String::from).collect()
    }

    #[test]
    fn splits_as_postgresql_does() {
        // SELECT regexp_split_to_array('hello world', '\s+') and friends,
        // in PostgreSQL 15.
        assert_eq!(pieces("hello world", r"\s+"), ["hello", "world"]);
        assert_eq!(pieces("abc", ""), ["a", "b", "c"]);
        assert_eq!(
            pieces("hello world", r"\s*"),
            ["h", "e", "l", "l", "o", "w", "o", "r", "l", "d"]
        );
        assert_eq!(pieces("a,b,,c", ","), ["a", "b", "", "c"]);
        assert_eq!(pieces(",a,", ","), ["", "a", ""]);
        assert_eq!(pieces("", ","), [""]);
        assert_eq!(pieces("x1y22z", r"\d*"), ["x", "y", "z"]);
    }

    #[test]
    fn flags() {
        let re = compile("B", "i").unwrap();
        assert_eq!(split("abc", &re), ["a", "c"]);
        assert!(compile("a", "g").unwrap_err().contains("global"));
        assert!(compile("a", "z").unwrap_err().contains("option"));
        let re = compile("a.", "q").unwrap();
        assert_eq!(split("ba.c", &re), ["b", "c"]);
        assert!(
            compile(r"(a)\1", "")
                .unwrap_err()
                .contains("invalid regular expression")
        );
    }
}
