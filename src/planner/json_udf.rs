//! PostgreSQL's JSON operators on quiver's JSON columns (stored as text,
//! checked to be JSON on write): `->` (the member or element, as JSON),
//! `->>` (the same as text), `#>` and `#>>` (by a path, `'{a,0,b}'`).
//!
//! As for PostgreSQL's `json` type the value returned by `->` is the exact
//! text of the member in the document; `->>` unescapes a string and gives
//! SQL NULL for a JSON `null`. A missing key, an index out of range or a
//! document of the wrong kind gives NULL, as in PostgreSQL; negative
//! indexes count from the end.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// One step of a path: an object's key, or an array's index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(i64),
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonGet {
    name: &'static str,
    /// `->>` / `#>>`: the value as text.
    as_text: bool,
    /// `#>` / `#>>`: the second argument is a path (a text array).
    path: bool,
    signature: Signature,
}

impl ScalarUDFImpl for JsonGet {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    /// `->` and `#>` give json, `->>` and `#>>` text.
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        let field = Field::new(self.name, DataType::Utf8, true);
        Ok(Arc::new(if self.as_text {
            field
        } else {
            field.with_metadata(quiver_common::json::json_metadata())
        }))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [doc, key] = args.args.as_slice() else {
            return exec_err!("{} expects a JSON value and a key", self.name);
        };
        let docs = doc.to_array(rows)?;
        let docs = arrow::compute::cast(&docs, &DataType::Utf8)?;
        let docs = docs.as_string::<i32>();
        let keys = key.to_array(rows)?;
        let mut out = StringBuilder::new();
        for row in 0..rows {
            let Some(doc) = docs.is_valid(row).then(|| docs.value(row)) else {
                out.append_null();
                continue;
            };
            let Some(path) = self.steps(&keys, row)? else {
                out.append_null();
                continue;
            };
            match get_path(doc, &path) {
                Some(found) if self.as_text => match as_text(found) {
                    Some(text) => out.append_value(text),
                    None => out.append_null(),
                },
                Some(found) => out.append_value(found),
                None => out.append_null(),
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(if rows == 1 && matches!(doc, ColumnarValue::Scalar(_)) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    }
}

impl JsonGet {
    /// The path of `row`: one key or index, or a text array; `None` for NULL.
    fn steps(&self, keys: &ArrayRef, row: usize) -> Result<Option<Vec<Step>>> {
        if keys.is_null(row) {
            return Ok(None);
        }
        if self.path {
            let list = match keys.data_type() {
                DataType::List(_) => keys.as_list::<i32>().value(row),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    let text = arrow::compute::cast(keys, &DataType::Utf8)?;
                    let text = text.as_string::<i32>().value(row).to_string();
                    let items = quiver_common::pg_array::parse(&text).map_err(|e| {
                        datafusion::common::DataFusionError::Execution(format!(
                            "malformed array literal: \"{text}\": {e}"
                        ))
                    })?;
                    let Some(items) = items.into_iter().collect::<Option<Vec<String>>>() else {
                        return Ok(None);
                    };
                    return Ok(Some(items.into_iter().map(Step::Key).collect()));
                }
                other => return exec_err!("{}: a path is a text array, not {other}", self.name),
            };
            let list = arrow::compute::cast(&list, &DataType::Utf8)?;
            let list = list.as_string::<i32>();
            if list.null_count() > 0 {
                return Ok(None);
            }
            return Ok(Some(
                list.iter()
                    .flatten()
                    .map(|s| Step::Key(s.to_string()))
                    .collect(),
            ));
        }
        let step = match keys.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let text = arrow::compute::cast(keys, &DataType::Utf8)?;
                Step::Key(text.as_string::<i32>().value(row).to_string())
            }
            t if t.is_integer() => {
                let ints = arrow::compute::cast(keys, &DataType::Int64)?;
                Step::Index(
                    ints.as_primitive::<arrow::datatypes::Int64Type>()
                        .value(row),
                )
            }
            other => {
                return exec_err!(
                    "operator does not exist: json {} {other}",
                    if self.as_text { "->>" } else { "->" }
                );
            }
        };
        Ok(Some(vec![step]))
    }
}

/// The text of the value at `path` in `doc`, if there is one.
fn get_path<'a>(doc: &'a str, path: &[Step]) -> Option<&'a str> {
    let mut value = doc.trim_matches(is_json_space);
    for step in path {
        value = match step {
            Step::Key(k) if value.starts_with('{') => member(value, k)?,
            // A path's text step reads an array's index, as in PostgreSQL.
            Step::Key(k) if value.starts_with('[') => element(value, k.trim().parse().ok()?)?,
            Step::Index(i) if value.starts_with('[') => element(value, *i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// What `->>` gives for the JSON text `value`: a string unescaped, `null`
/// as NULL, anything else as written.
fn as_text(value: &str) -> Option<String> {
    if value.starts_with('"') {
        serde_json::from_str::<String>(value).ok()
    } else if value == "null" {
        None
    } else {
        Some(value.to_string())
    }
}

fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// How deeply the JSON scanned may nest (serde_json, which checks JSON
/// columns on write, allows 128).
const MAX_DEPTH: usize = 512;

/// A scanner over JSON text that is known to be valid (checked on write);
/// on anything else it gives up (`None`).
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    fn space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start_matches(is_json_space).len();
    }

    fn eat(&mut self, c: u8) -> bool {
        self.space();
        if self.text.as_bytes().get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Skip one value; its text.
    fn value(&mut self) -> Option<&'a str> {
        self.value_within(0)
    }

    /// [`Self::value`] nested `depth` deep: past [`MAX_DEPTH`] it gives up
    /// (a literal cast to json is not checked on write, and a few MB of
    /// `[` would otherwise exhaust the stack).
    fn value_within(&mut self, depth: usize) -> Option<&'a str> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.space();
        let start = self.at;
        let bytes = self.text.as_bytes();
        match *bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                loop {
                    match *bytes.get(self.at)? {
                        b'\\' => self.at += 2,
                        b'"' => {
                            self.at += 1;
                            break;
                        }
                        _ => self.at += 1,
                    }
                }
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.at += 1;
                if !self.eat(close) {
                    loop {
                        if open == b'{' {
                            self.value_within(depth + 1)?;
                            if !self.eat(b':') {
                                return None;
                            }
                        }
                        self.value_within(depth + 1)?;
                        if self.eat(close) {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
            }
            _ => {
                while self.at < bytes.len()
                    && !matches!(
                        bytes[self.at],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.at += 1;
                }
                if self.at == start {
                    return None;
                }
            }
        }
        Some(&self.text[start..self.at])
    }
}

/// The value of `key` in the object `object` (the last one, as PostgreSQL's
/// `json` keeps duplicate keys and `->` finds the last).
fn member<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let mut scan = Scan {
        text: object,
        at: 0,
    };
    if !scan.eat(b'{') || scan.eat(b'}') {
        return None;
    }
    let mut found = None;
    loop {
        let name = scan.value()?;
        if !scan.eat(b':') {
            return None;
        }
        let value = scan.value()?;
        if serde_json::from_str::<String>(name).ok().as_deref() == Some(key) {
            found = Some(value);
        }
        if scan.eat(b'}') {
            return found;
        }
        if !scan.eat(b',') {
            return None;
        }
    }
}

/// Element `index` of the array `array` (negative: from the end).
fn element(array: &str, index: i64) -> Option<&str> {
    let mut scan = Scan { text: array, at: 0 };
    if !scan.eat(b'[') || scan.eat(b']') {
        return None;
    }
    let mut items = Vec::new();
    loop {
        items.push(scan.value()?);
        if scan.eat(b']') {
            break;
        }
        if !scan.eat(b',') {
            return None;
        }
    }
    let i = if index < 0 {
        items.len() as i64 + index
    } else {
        index
    };
    usize::try_from(i).ok().and_then(|i| items.get(i).copied())
}

fn udf(name: &'static str, as_text: bool, path: bool) -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonGet {
        name,
        as_text,
        path,
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// The functions behind `->`, `->>`, `#>` and `#>>` (PostgreSQL's own
/// names for them).
/// `json_build_object(key, value, ...)`: a JSON object of the pairs, in
/// PostgreSQL's spelling (`{"a" : 1, "b" : "x"}`). Keys are text (NULL is
/// 22004, as there); values keep their JSON kind: numbers, Booleans,
/// `null`, strings for the rest.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BuildObject {
    signature: Signature,
}

fn json_value(v: &ScalarValue) -> String {
    use ScalarValue as S;
    match v {
        v if v.is_null() => "null".to_string(),
        S::Boolean(Some(b)) => b.to_string(),
        S::Int8(_)
        | S::Int16(_)
        | S::Int32(_)
        | S::Int64(_)
        | S::UInt8(_)
        | S::UInt16(_)
        | S::UInt32(_)
        | S::UInt64(_)
        | S::Decimal128(..) => v.to_string(),
        S::Float32(Some(f)) if f.is_finite() => v.to_string(),
        S::Float64(Some(f)) if f.is_finite() => v.to_string(),
        S::Utf8(Some(t)) | S::LargeUtf8(Some(t)) | S::Utf8View(Some(t)) => {
            serde_json::Value::String(t.clone()).to_string()
        }
        other => serde_json::Value::String(other.to_string()).to_string(),
    }
}

impl ScalarUDFImpl for BuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(
            Field::new("json_build_object", DataType::Utf8, true)
                .with_metadata(quiver_common::json::json_metadata()),
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return exec_err!(
                "argument list must have even number of elements: json_build_object() takes key, value pairs"
            );
        }
        if let Some(k) = (0..args.args.len())
            .step_by(2)
            .find(|&k| matches!(&args.args[k], ColumnarValue::Scalar(v) if v.is_null()))
        {
            return exec_err!(
                "argument {} cannot be null: an object key must be a value",
                k + 1
            );
        }
        let n = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::new();
        for row in 0..n {
            let mut pairs = Vec::with_capacity(arrays.len() / 2);
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return exec_err!("argument cannot be null: an object key must be a value");
                }
                let key = match key {
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::LargeUtf8(Some(k))
                    | ScalarValue::Utf8View(Some(k)) => k,
                    other => other.to_string(),
                };
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                pairs.push(format!(
                    "{} : {}",
                    serde_json::Value::String(key),
                    json_value(&value)
                ));
            }
            out.append_value(format!("{{{}}}", pairs.join(", ")));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

pub fn all_udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(BuildObject {
            signature: Signature::variadic_any(Volatility::Immutable),
        }),
        udf("json_object_field", false, false),
        udf("json_object_field_text", true, false),
        udf("json_extract_path", false, true),
        udf("json_extract_path_text", true, true),
    ]
}

/// The function of a JSON operator: `(name, by path)`.
pub fn operator_function(
    op: &datafusion::sql::sqlparser::ast::BinaryOperator,
) -> Option<ScalarUDF> {
    use datafusion::sql::sqlparser::ast::BinaryOperator as B;
    Some(match op {
        B::Arrow => udf("json_object_field", false, false),
        B::LongArrow => udf("json_object_field_text", true, false),
        B::HashArrow => udf("json_extract_path", false, true),
        B::HashLongArrow => udf("json_extract_path_text", true, true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(doc: &str, path: &[Step]) -> Option<&'static str> {
        get_path(doc, path).map(|s| &*s.to_string().leak())
    }

    #[test]
    fn members_and_elements_as_written() {
        let doc = r#" {"a": {"b": [1, "two", {"c": null}]}, "s": "x\"y", "a2": 2} "#;
        let key = |k: &str| Step::Key(k.into());
        assert_eq!(get(doc, &[key("s")]), Some(r#""x\"y""#));
        assert_eq!(get(doc, &[key("a2")]), Some("2"));
        assert_eq!(
            get(doc, &[key("a"), key("b")]),
            Some(r#"[1, "two", {"c": null}]"#)
        );
        assert_eq!(
            get(doc, &[key("a"), key("b"), Step::Index(1)]),
            Some(r#""two""#)
        );
        assert_eq!(
            get(doc, &[key("a"), key("b"), Step::Index(-1)]),
            Some(r#"{"c": null}"#)
        );
        assert_eq!(get(doc, &[key("a"), key("b"), key("0")]), Some("1"));
        assert_eq!(get(doc, &[key("a"), key("b"), Step::Index(3)]), None);
        assert_eq!(get(doc, &[key("nope")]), None);
        assert_eq!(get(doc, &[Step::Index(0)]), None);
        assert_eq!(get("[]", &[Step::Index(0)]), None);
        assert_eq!(get("{}", &[key("a")]), None);
        // The last of duplicate keys.
        assert_eq!(get(r#"{"k":1,"k":2}"#, &[key("k")]), Some("2"));
        assert_eq!(as_text(r#""x\"y""#).as_deref(), Some("x\"y"));
        assert_eq!(as_text("null"), None);
        assert_eq!(as_text("[1]").as_deref(), Some("[1]"));
        // Deep nesting is not followed past MAX_DEPTH (no stack overflow).
        let deep = format!("[{}1{}, 2]", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert_eq!(get(&deep, &[Step::Index(1)]), None);
        let fine = format!("[{}1{}, 2]", "[".repeat(100), "]".repeat(100));
        assert_eq!(get(&fine, &[Step::Index(1)]), Some("2"));
    }
}
