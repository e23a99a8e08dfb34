//! PostgreSQL functions that clients call while connecting, which DataFusion
//! and `datafusion-pg-catalog` lack.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Type names and OIDs `to_regtype` resolves (the builtin types clients ask
/// for, and pgvector's `vector`).
const TYPES: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("bit", 1560),
    ("varbit", 1562),
    ("bit varying", 1562),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("timestamp", 1114),
    ("timestamptz", 1184),
    ("numeric", 1700),
    ("jsonb", 3802),
    ("vector", arrow_pg::datatypes::PG_VECTOR_TYPE_OID as i32),
    ("_vector", crate::pg_users::PG_VECTOR_ARRAY_TYPE_OID),
];

fn lookup(name: &str) -> Option<i32> {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let name = name.strip_prefix("public.").unwrap_or(name);
    TYPES.iter().find(|(n, _)| *n == name).map(|(_, oid)| *oid)
}

/// `to_regtype(name)`: the OID of a type, or NULL if there is none.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToRegtype {
    signature: Signature,
}

impl ScalarUDFImpl for ToRegtype {
    fn name(&self) -> &str {
        "to_regtype"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("to_regtype expects one argument");
        };
        match arg {
            ColumnarValue::Scalar(s) => {
                let name = match s {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                        v.clone()
                    }
                    ScalarValue::Null => None,
                    other => Some(other.to_string()),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                    name.as_deref().and_then(lookup),
                )))
            }
            ColumnarValue::Array(a) => {
                let a = cast(a, &DataType::Utf8)?;
                let strings = a.as_string::<i32>();
                let out: Int32Array = (0..strings.len())
                    .map(|i| {
                        strings
                            .is_valid(i)
                            .then(|| lookup(strings.value(i)))
                            .flatten()
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

/// `version()`: PostgreSQL's form (`PostgreSQL 15.0 ...`), which drivers
/// and ORMs parse for the server's version (SQLAlchemy refuses to connect
/// otherwise), naming quiver.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

/// What `version()` answers.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {} (quiver {}) on {}-unknown-linux-gnu, 64-bit",
        quiver_common::SERVER_VERSION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            version_string(),
        ))))
    }
}

/// The compatibility functions, for registration in a session.
/// `quote_literal(value)`: the value's text as a SQL string literal,
/// quotes doubled; with a backslash, PostgreSQL's `E'...'` form.
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A function of one argument, computed per row from the argument's text
/// (NULL gives NULL).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextFn {
    name: &'static str,
    kind: TextFnKind,
    signature: Signature,
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum TextFnKind {
    QuoteLiteral,
    /// `pg_get_viewdef`, `pg_get_ruledef`: quiver has no views or rules,
    /// so no oid names one, and PostgreSQL gives NULL for such an oid.
    NoDefinition,
    /// `pg_tablespace_location(oid)`: '' for the default tablespaces
    /// (`pg_default` 1663, `pg_global` 1664), the only ones there are.
    TablespaceLocation,
}

impl ScalarUDFImpl for TextFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return exec_err!("{} takes an argument", self.name);
        };
        let values = arg.to_array(args.number_rows)?;
        let text = arrow::compute::cast(&values, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: arrow::array::StringArray = text
            .iter()
            .map(|v| {
                v.and_then(|v| match self.kind {
                    TextFnKind::QuoteLiteral => Some(quote_literal(v)),
                    TextFnKind::NoDefinition => None,
                    TextFnKind::TablespaceLocation => {
                        matches!(v, "1663" | "1664").then(String::new)
                    }
                })
            })
            .collect();
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
        })
    }
}

/// PostgreSQL's `format(fmt, args...)`: `%s` (the value as text, NULL as
/// nothing), `%I` (quoted as an identifier), `%L` (quoted as a literal,
/// NULL as `NULL`), `%%`, and positions (`%2$s`).
pub fn format(fmt: &str, args: &[Option<String>]) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(fmt.len());
    let mut chars = fmt.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        // An optional position `n$`.
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let index = if digits.is_empty() {
            next
        } else {
            if chars.next() != Some('$') {
                return Err("unterminated format() type specifier".into());
            }
            let n: usize = digits
                .parse()
                .map_err(|_| "invalid argument number in format()".to_string())?;
            if n == 0 {
                return Err(
                    "format specifies argument 0, but arguments are numbered from 1".into(),
                );
            }
            n - 1
        };
        let kind = chars
            .next()
            .ok_or_else(|| "unterminated format() type specifier".to_string())?;
        let value = args
            .get(index)
            .ok_or_else(|| "too few arguments for format()".to_string())?;
        next = index + 1;
        match kind {
            's' => out.push_str(value.as_deref().unwrap_or("")),
            'I' => match value {
                Some(v) => out.push_str(&crate::pg_relations::quote_ident(v)),
                None => return Err("null values cannot be formatted as an SQL identifier".into()),
            },
            'L' => match value {
                Some(v) => out.push_str(&quote_literal(v)),
                None => out.push_str("NULL"),
            },
            other => return Err(format!("unrecognized format() type specifier \"{other}\"")),
        }
    }
    Ok(out)
}

/// `format(fmt, args...)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

/// A value's text as PostgreSQL prints it in `format`: Booleans as t / f.
fn text_values(value: &ColumnarValue, rows: usize) -> Result<Vec<Option<String>>> {
    let array = value.to_array(rows)?;
    if let Some(b) = array.as_boolean_opt() {
        return Ok(b
            .iter()
            .map(|v| v.map(|v| if v { "t" } else { "f" }.to_string()))
            .collect());
    }
    let text = cast(&array, &DataType::Utf8)?;
    Ok(text
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let n = if scalar { 1 } else { rows };
        let columns = args
            .args
            .iter()
            .map(|a| text_values(a, n))
            .collect::<Result<Vec<_>>>()?;
        let Some((fmt, values)) = columns.split_first() else {
            return exec_err!("format takes a format string");
        };
        let mut out = arrow::array::StringBuilder::new();
        for r in 0..n {
            match &fmt[r] {
                None => out.append_null(),
                Some(f) => {
                    let row: Vec<Option<String>> = values.iter().map(|c| c[r].clone()).collect();
                    let text =
                        format(f, &row).map_err(datafusion::error::DataFusionError::Execution)?;
                    out.append_value(text);
                }
            }
        }
        let out = out.finish();
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(Arc::new(out))
        })
    }
}

pub fn all_udfs() -> Vec<ScalarUDF> {
    let text_fn = |name, kind, volatility| {
        ScalarUDF::new_from_impl(TextFn {
            name,
            kind,
            signature: Signature::variadic_any(volatility),
        })
    };
    vec![
        ScalarUDF::new_from_impl(ToRegtype {
            signature: Signature::any(1, Volatility::Stable),
        }),
        ScalarUDF::new_from_impl(Version {
            signature: Signature::nullary(Volatility::Stable),
        }),
        text_fn(
            "quote_literal",
            TextFnKind::QuoteLiteral,
            Volatility::Immutable,
        ),
        ScalarUDF::new_from_impl(Format {
            signature: Signature::variadic_any(Volatility::Stable),
        }),
        text_fn(
            "pg_get_viewdef",
            TextFnKind::NoDefinition,
            Volatility::Stable,
        ),
        text_fn(
            "pg_get_ruledef",
            TextFnKind::NoDefinition,
            Volatility::Stable,
        ),
        text_fn(
            "pg_tablespace_location",
            TextFnKind::TablespaceLocation,
            Volatility::Stable,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names() {
        assert_eq!(lookup("vector"), Some(16385));
        assert!(version_string().starts_with("PostgreSQL 15.0 (quiver "));
        assert_eq!(lookup("pg_catalog.int4"), Some(23));
        assert_eq!(lookup("halfvec"), None);
        assert_eq!(quote_literal("a'b"), "'a''b'");
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            format("%s.%I = %L, %%, %2$s", &[s("a"), s("B c"), None]).unwrap(),
            "a.\"B c\" = NULL, %, B c"
        );
        assert!(format("%s %s", &[s("a")]).is_err());
        assert!(format("%x", &[s("a")]).is_err());
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
    }
}
