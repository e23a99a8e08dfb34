//! `to_array(text, item)`: PostgreSQL array literals (`'{a,b}'`,
//! `'{4,5}'`) as lists. Arrow's cast from text to a list makes a list of
//! one element, the whole text (`{"{a,b}"}`), and fails for numbers; the
//! analyzer rule in `vector_sql` rewrites such casts into this function.

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToArray {
    signature: Signature,
}

impl ScalarUDFImpl for ToArray {
    fn name(&self) -> &str {
        "to_array"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    /// The second argument is a NULL of the element type.
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [_, item] => Ok(DataType::List(Arc::new(Field::new(
                "item",
                item.clone(),
                true,
            )))),
            _ => exec_err!("to_array expects text and an element type"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let DataType::List(item) = args.return_field.data_type() else {
            return exec_err!("to_array returns a list");
        };
        let text = args.args[0].to_array(rows)?;
        let text = cast(&text, &DataType::Utf8)?;
        let strings: &StringArray = text.as_string::<i32>();
        // A parse error: 22P02, as PostgreSQL's "malformed array literal".
        let list = quiver_exec::copy::text_to_list(strings, item).map_err(|m| {
            DataFusionError::ArrowError(Box::new(arrow::error::ArrowError::ParseError(m)), None)
        })?;
        if matches!(args.args[0], ColumnarValue::Scalar(_)) && list.len() == 1 {
            return Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&list, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

pub fn to_array_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToArray {
        signature: Signature::any(2, Volatility::Immutable),
    })
}
