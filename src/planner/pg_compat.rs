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
pub fn all_udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(ToRegtype {
            signature: Signature::any(1, Volatility::Stable),
        }),
        ScalarUDF::new_from_impl(Version {
            signature: Signature::nullary(Volatility::Stable),
        }),
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
    }
}
