//! pgvector's vector arithmetic and vector functions: `+`, `-`, `*`
//! (element-wise), `||` (concatenation), `vector_norm`, `l2_normalize`,
//! `subvector`, `binary_quantize`, and the `avg` / `sum` aggregates over
//! vectors. Results are dimensionless vectors (`vector` without a typmod,
//! as pgvector's are); errors are pgvector's (`different vector dimensions
//! 2 and 3`, `value out of range: overflow`, `vector must have at least 1
//! dimension`).

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeBinaryBuilder, Float32Builder, Float64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use quiver_vector::VectorError;
use quiver_vector::column::{
    VectorColumn, any_vector_data_type, bit_data_type, bit_metadata, vector_dim_of, vector_metadata,
};

use crate::vector_udf::{vector_column_of_scalar, vector_err};

/// pgvector's limit on a vector's dimensions.
pub const MAX_DIM: usize = 16_000;

/// A dimensionless vector field.
pub(crate) fn vector_field(name: &str) -> FieldRef {
    Arc::new(Field::new(name, any_vector_data_type(), true).with_metadata(vector_metadata()))
}

/// The vectors of an argument, and whether it was a scalar.
fn column_of(value: &ColumnarValue) -> Result<(VectorColumn, bool)> {
    match value {
        ColumnarValue::Array(a) => {
            Ok((VectorColumn::try_from_array(a).map_err(vector_err)?, false))
        }
        ColumnarValue::Scalar(s) => Ok((vector_column_of_scalar(s)?, true)),
    }
}

/// Rows of vectors (`None`: NULL) as a dimensionless vector column.
fn vectors(rows: Vec<Option<Vec<f32>>>) -> ArrayRef {
    let mut values = Float32Builder::new();
    let mut lengths = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    for row in &rows {
        match row {
            Some(v) => {
                values.append_slice(v);
                lengths.push(v.len());
                valid.push(true);
            }
            None => {
                lengths.push(0);
                valid.push(false);
            }
        }
    }
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(values.finish()),
        Some(valid.into()),
    ))
}

fn result(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
    } else {
        ColumnarValue::Array(array)
    })
}

/// Each element finite, as pgvector checks a result.
fn finite(v: Vec<f32>) -> Result<Vec<f32>> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(vector_err(VectorError::Overflow))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Concat,
}

impl Arith {
    fn name(self) -> &'static str {
        match self {
            Arith::Add => "vector_add",
            Arith::Sub => "vector_sub",
            Arith::Mul => "vector_mul",
            Arith::Concat => "vector_concat",
        }
    }

    fn apply(self, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
        if self == Arith::Concat {
            if a.len() + b.len() > MAX_DIM {
                return Err(vector_err(VectorError::TooManyDimensions { max: MAX_DIM }));
            }
            return Ok([a, b].concat());
        }
        if a.len() != b.len() {
            return Err(vector_err(VectorError::DifferentDimensions {
                left: a.len(),
                right: b.len(),
            }));
        }
        let op = match self {
            Arith::Add => |x: f32, y: f32| x + y,
            Arith::Sub => |x: f32, y: f32| x - y,
            _ => |x: f32, y: f32| x * y,
        };
        finite(a.iter().zip(b).map(|(x, y)| op(*x, *y)).collect())
    }
}

/// `a + b`, `a - b`, `a * b`, `a || b` over vectors.
#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorArith {
    op: Arith,
    signature: Signature,
}

impl ScalarUDFImpl for VectorArith {
    fn name(&self) -> &str {
        self.op.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(any_vector_data_type())
    }
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(vector_field(self.op.name()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return exec_err!("{} takes two vectors", self.name());
        };
        let ((a, sa), (b, sb)) = (column_of(a)?, column_of(b)?);
        let n = args.number_rows.max(1);
        let pick = |c: &VectorColumn, scalar: bool, i: usize| {
            c.get(if scalar { 0 } else { i }).map(|v| v.to_vec())
        };
        let rows = if sa && sb { 1 } else { n };
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            out.push(match (pick(&a, sa, i), pick(&b, sb, i)) {
                (Some(x), Some(y)) => Some(self.op.apply(&x, &y)?),
                _ => None,
            });
        }
        result(vectors(out), sa && sb)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unary {
    Norm,
    Normalize,
    Subvector,
    BinaryQuantize,
}

/// `vector_norm(v)`, `l2_normalize(v)`, `subvector(v, start, count)`,
/// `binary_quantize(v)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorFn {
    kind: Unary,
    signature: Signature,
}

fn int_at(value: &ColumnarValue, i: usize) -> Result<Option<i64>> {
    let v = match value {
        ColumnarValue::Scalar(s) => s.clone(),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, i)?,
    };
    if v.is_null() {
        return Ok(None);
    }
    match v.cast_to(&DataType::Int64)? {
        ScalarValue::Int64(n) => Ok(n),
        other => exec_err!("an integer expected, not {other}"),
    }
}

/// pgvector's `subvector`: elements `start ..= start + count - 1` (from
/// 1), clipped to the vector; an empty result is an error.
fn subvector(v: &[f32], start: i64, count: i64) -> Result<Vec<f32>> {
    let mut from = start;
    let mut end = start.saturating_add(count);
    if count < 1 || end <= 1 {
        return Err(vector_err(VectorError::Empty));
    }
    if from < 1 {
        from = 1;
    }
    if end > v.len() as i64 + 1 {
        end = v.len() as i64 + 1;
    }
    if end <= from {
        return Err(vector_err(VectorError::Empty));
    }
    Ok(v[(from - 1) as usize..(end - 1) as usize].to_vec())
}

impl ScalarUDFImpl for VectorFn {
    fn name(&self) -> &str {
        match self.kind {
            Unary::Norm => "vector_norm",
            Unary::Normalize => "l2_normalize",
            Unary::Subvector => "subvector",
            Unary::BinaryQuantize => "binary_quantize",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Unary::Norm => DataType::Float64,
            _ => any_vector_data_type(),
        })
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let expected = if self.kind == Unary::Subvector { 3 } else { 1 };
        if args.arg_fields.len() != expected {
            return exec_err!("{} takes {expected} argument(s)", self.name());
        }
        Ok(match self.kind {
            Unary::Norm => Arc::new(Field::new(self.name(), DataType::Float64, true)),
            Unary::BinaryQuantize => {
                // bit(n): the vector's dimension must be known.
                let Some(Some(dim)) = vector_dim_of(args.arg_fields[0].data_type()) else {
                    return exec_err!(
                        "binary_quantize needs a vector of a known dimension (a column, or a cast such as ::vector(3))"
                    );
                };
                Arc::new(
                    Field::new(self.name(), bit_data_type(dim), true)
                        .with_metadata(bit_metadata(dim)),
                )
            }
            _ => vector_field(self.name()),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (v, scalar) = column_of(&args.args[0])?;
        let scalar = scalar
            && args.args[1..]
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let at = |i: usize| v.get(if v.len() == 1 { 0 } else { i });
        match self.kind {
            Unary::Norm => {
                let out: Float64Array = (0..rows)
                    .map(|i| {
                        at(i).map(|x| {
                            x.iter()
                                .map(|e| (*e as f64) * (*e as f64))
                                .sum::<f64>()
                                .sqrt()
                        })
                    })
                    .collect();
                result(Arc::new(out), scalar)
            }
            Unary::Normalize => {
                let out = (0..rows)
                    .map(|i| {
                        at(i).map(|x| {
                            let norm = x
                                .iter()
                                .map(|e| (*e as f64) * (*e as f64))
                                .sum::<f64>()
                                .sqrt();
                            if norm > 0.0 {
                                x.iter().map(|e| (*e as f64 / norm) as f32).collect()
                            } else {
                                x.to_vec()
                            }
                        })
                    })
                    .collect();
                result(vectors(out), scalar)
            }
            Unary::Subvector => {
                let mut out = Vec::with_capacity(rows);
                for i in 0..rows {
                    let (start, count) = (int_at(&args.args[1], i)?, int_at(&args.args[2], i)?);
                    out.push(match (at(i), start, count) {
                        (Some(x), Some(s), Some(c)) => Some(subvector(x, s, c)?),
                        _ => None,
                    });
                }
                result(vectors(out), scalar)
            }
            Unary::BinaryQuantize => {
                let DataType::FixedSizeBinary(width) = args.return_field.data_type() else {
                    return exec_err!("binary_quantize: bit(n) expected");
                };
                let mut out = FixedSizeBinaryBuilder::with_capacity(rows, *width);
                for i in 0..rows {
                    match at(i) {
                        Some(x) => {
                            let mut bytes = vec![0u8; *width as usize];
                            for (j, e) in x.iter().enumerate() {
                                if *e > 0.0 {
                                    bytes[j / 8] |= 0x80 >> (j % 8);
                                }
                            }
                            out.append_value(bytes)?;
                        }
                        None => out.append_null(),
                    }
                }
                result(Arc::new(out.finish()), scalar)
            }
        }
    }
}

pub fn arith_udf(op: Arith) -> ScalarUDF {
    ScalarUDF::new_from_impl(VectorArith {
        op,
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// The functions of this module, for registration in a session.
pub fn all_udfs() -> Vec<ScalarUDF> {
    let f = |kind, n| {
        ScalarUDF::new_from_impl(VectorFn {
            kind,
            signature: Signature::any(n, Volatility::Immutable),
        })
    };
    vec![
        arith_udf(Arith::Add),
        arith_udf(Arith::Sub),
        arith_udf(Arith::Mul),
        arith_udf(Arith::Concat),
        f(Unary::Norm, 1),
        f(Unary::Normalize, 1),
        f(Unary::Subvector, 3),
        f(Unary::BinaryQuantize, 1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subvector_clips_as_pgvector_does() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(subvector(&v, 2, 3).unwrap(), vec![2.0, 3.0, 4.0]);
        assert_eq!(subvector(&v, 0, 3).unwrap(), vec![1.0, 2.0]);
        assert_eq!(subvector(&v, 4, 5).unwrap(), vec![4.0, 5.0]);
        assert!(subvector(&v, 6, 1).is_err());
        assert!(subvector(&v, 1, 0).is_err());
        assert!(subvector(&v, -3, 2).is_err());
    }

    #[test]
    fn arithmetic_checks_dimensions_and_overflow() {
        assert_eq!(
            Arith::Add.apply(&[1.0, 2.0], &[3.0, 4.0]).unwrap(),
            vec![4.0, 6.0]
        );
        assert!(Arith::Sub.apply(&[1.0], &[1.0, 2.0]).is_err());
        assert!(Arith::Mul.apply(&[1e38], &[10.0]).is_err());
        assert_eq!(
            Arith::Concat.apply(&[1.0], &[2.0, 3.0]).unwrap(),
            vec![1.0, 2.0, 3.0]
        );
    }
}
