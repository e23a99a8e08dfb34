//! SQL functions over vectors: the distance functions behind `<->`, `<#>`,
//! `<=>`, `<+>`, plus `inner_product`, `vector_dims` and the internal
//! `to_vector` conversion used for casts and INSERT coercion.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, GenericListArray,
    Int32Array, OffsetSizeTrait, StringArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use super::text::parse_vector_into;
use super::{Metric, VectorError};
use super::{bits, distance};

/// Field metadata key that marks a list column as a pgvector `vector` (shared with arrow-pg).
pub const VECTOR_METADATA_KEY: &str = arrow_pg::datatypes::PG_VECTOR_KEY;

/// The Arrow type of a `VECTOR(dim)` column.
pub fn vector_data_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        dim as i32,
    )
}

/// The Arrow type of a dimensionless `vector` (casts such as `'[1,2]'::vector`).
pub fn any_vector_data_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
}

/// Field metadata marking a field as a pgvector `vector`.
pub fn vector_metadata() -> HashMap<String, String> {
    HashMap::from([(VECTOR_METADATA_KEY.to_string(), "vector".to_string())])
}

/// The dimension of a vector Arrow type: `Some(Some(d))` for fixed-size
/// float32 lists, `Some(None)` for variable lists of float32, `None` otherwise.
pub fn vector_dim_of(data_type: &DataType) -> Option<Option<usize>> {
    match data_type {
        DataType::FixedSizeList(f, d) if f.data_type() == &DataType::Float32 => {
            Some(Some(*d as usize))
        }
        DataType::List(f) | DataType::LargeList(f) if f.data_type() == &DataType::Float32 => {
            Some(None)
        }
        _ => None,
    }
}

fn vector_err(e: VectorError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A column of vectors in a uniform shape, whatever Arrow type it came in.
pub struct VectorColumn {
    values: Float32Array,
    /// `offsets[i]..offsets[i+1]` are the elements of row `i`.
    offsets: Vec<usize>,
    nulls: Option<NullBuffer>,
}

impl VectorColumn {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements of row `i`, or `None` for NULL.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(&self.values.values()[self.offsets[i]..self.offsets[i + 1]])
    }

    /// Build from any array that can hold vectors: lists of numbers or pgvector text.
    pub fn try_from_array(array: &ArrayRef) -> Result<VectorColumn> {
        match array.data_type() {
            DataType::FixedSizeList(_, dim) => {
                let list = array.as_fixed_size_list();
                let dim = *dim as usize;
                let values = float_values(list.values())?;
                let start = list.offset();
                let offsets = (0..=list.len()).map(|i| (start + i) * dim).collect();
                Ok(VectorColumn {
                    values,
                    offsets,
                    nulls: list.logical_nulls(),
                })
            }
            DataType::List(_) => VectorColumn::from_list(array.as_list::<i32>()),
            DataType::LargeList(_) => VectorColumn::from_list(array.as_list::<i64>()),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let strings = cast(array, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut values = Vec::new();
                let mut offsets = vec![0usize];
                for i in 0..strings.len() {
                    if strings.is_valid(i) {
                        parse_vector_into(strings.value(i), &mut values).map_err(vector_err)?;
                    }
                    offsets.push(values.len());
                }
                Ok(VectorColumn {
                    values: Float32Array::from(values),
                    offsets,
                    nulls: strings.logical_nulls(),
                })
            }
            DataType::Null => Ok(VectorColumn {
                values: Float32Array::from(Vec::<f32>::new()),
                offsets: vec![0; array.len() + 1],
                nulls: Some(NullBuffer::new_null(array.len())),
            }),
            other => Err(vector_err(VectorError::NotAVector {
                type_name: other.to_string(),
            })),
        }
    }

    fn from_list<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Result<VectorColumn> {
        Ok(VectorColumn {
            values: float_values(list.values())?,
            offsets: list.offsets().iter().map(|o| o.as_usize()).collect(),
            nulls: list.logical_nulls(),
        })
    }

    /// Build from a scalar (a query vector, typically).
    pub fn try_from_scalar(scalar: &ScalarValue) -> Result<VectorColumn> {
        VectorColumn::try_from_array(&scalar.to_array_of_size(1)?)
    }

    /// Convert to a `VECTOR(dim)` array, checking every row's dimension.
    pub fn to_fixed(&self, dim: usize) -> Result<FixedSizeListArray> {
        let mut flat: Vec<f32> = Vec::with_capacity(self.len() * dim);
        for i in 0..self.len() {
            match self.get(i) {
                Some(v) => {
                    if v.len() != dim {
                        return Err(vector_err(VectorError::DimensionMismatch {
                            expected: dim,
                            actual: v.len(),
                        }));
                    }
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(vector_err(VectorError::NotFinite));
                    }
                    flat.extend_from_slice(v);
                }
                None => flat.extend(std::iter::repeat_n(0f32, dim)),
            }
        }
        let field = Arc::new(Field::new_list_field(DataType::Float32, true));
        FixedSizeListArray::try_new(
            field,
            dim as i32,
            Arc::new(Float32Array::from(flat)),
            self.nulls.clone(),
        )
        .map_err(DataFusionError::from)
    }

    /// Convert to a dimensionless `vector` (`List(Float32)`) array.
    pub fn to_list(&self) -> Result<ArrayRef> {
        let field = Arc::new(Field::new_list_field(DataType::Float32, true));
        let offsets: Vec<i32> = self.offsets.iter().map(|o| *o as i32).collect();
        let list = arrow::array::ListArray::try_new(
            field,
            arrow::buffer::OffsetBuffer::new(offsets.into()),
            Arc::new(self.values.clone()),
            self.nulls.clone(),
        )?;
        Ok(Arc::new(list))
    }
}

fn float_values(values: &ArrayRef) -> Result<Float32Array> {
    match values.data_type() {
        DataType::Float32 => Ok(values
            .as_primitive::<arrow::datatypes::Float32Type>()
            .clone()),
        t if t.is_numeric() || t == &DataType::Null => {
            let c = cast(values, &DataType::Float32)?;
            Ok(c.as_primitive::<arrow::datatypes::Float32Type>().clone())
        }
        other => Err(vector_err(VectorError::NotAVector {
            type_name: format!("{other} list"),
        })),
    }
}

/// A result array as a value: a scalar when every argument was one.
fn columnar(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

fn to_column(value: &ColumnarValue) -> Result<(VectorColumn, bool)> {
    match value {
        ColumnarValue::Array(a) => Ok((VectorColumn::try_from_array(a)?, false)),
        ColumnarValue::Scalar(s) => Ok((VectorColumn::try_from_scalar(s)?, true)),
    }
}

/// What a distance function computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DistanceKind {
    Metric(Metric),
    /// `inner_product(a, b)`: the positive inner product.
    InnerProduct,
}

/// A binary distance function over two vectors returning `double precision`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistanceUdf {
    name: &'static str,
    kind: DistanceKind,
    signature: Signature,
}

impl DistanceUdf {
    fn new(name: &'static str, kind: DistanceKind) -> Self {
        DistanceUdf {
            name,
            kind,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    /// The metric this function computes, if it is one of the operator metrics.
    pub fn metric(&self) -> Option<Metric> {
        match self.kind {
            DistanceKind::Metric(m) => Some(m),
            DistanceKind::InnerProduct => None,
        }
    }
}

impl ScalarUDFImpl for DistanceUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return exec_err!("{} expects two arguments", self.name);
        };
        let (left, left_scalar) = to_column(a)?;
        let (right, right_scalar) = to_column(b)?;
        let rows = if left_scalar && right_scalar {
            1
        } else {
            args.number_rows
        };
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let l = left.get(if left_scalar { 0 } else { i });
            let r = right.get(if right_scalar { 0 } else { i });
            match (l, r) {
                (Some(l), Some(r)) => {
                    if l.len() != r.len() {
                        return Err(vector_err(VectorError::DifferentDimensions {
                            left: l.len(),
                            right: r.len(),
                        }));
                    }
                    let d = match self.kind {
                        DistanceKind::Metric(m) => distance::distance(m, l, r),
                        DistanceKind::InnerProduct => distance::dot(l, r) as f64,
                    };
                    out.push(Some(d));
                }
                _ => out.push(None),
            }
        }
        let array = Float64Array::from(out);
        columnar(Arc::new(array), left_scalar && right_scalar)
    }
}

/// The function implementing `metric`'s operator.
pub fn distance_udf(metric: Metric) -> ScalarUDF {
    if metric.is_binary() {
        return bit_distance_udf(metric);
    }
    ScalarUDF::new_from_impl(DistanceUdf::new(
        metric.function_name(),
        DistanceKind::Metric(metric),
    ))
}

/// If `udf` is one of the operator distance functions, its metric.
pub fn metric_of_udf(udf: &ScalarUDF) -> Option<Metric> {
    let inner = udf.inner().as_ref() as &dyn Any;
    if let Some(b) = inner.downcast_ref::<BitDistanceUdf>() {
        return Some(b.metric);
    }
    inner.downcast_ref::<DistanceUdf>().and_then(|d| d.metric())
}

/// `vector_dims(v)`: the number of dimensions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorDims {
    signature: Signature,
}

impl ScalarUDFImpl for VectorDims {
    fn name(&self) -> &str {
        "vector_dims"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a] = args.args.as_slice() else {
            return exec_err!("vector_dims expects one argument");
        };
        let (col, scalar) = to_column(a)?;
        let dims: Int32Array = (0..col.len())
            .map(|i| col.get(i).map(|v| v.len() as i32))
            .collect();
        columnar(Arc::new(dims), scalar)
    }
}

/// `to_vector(value, dim)`: converts text, numeric arrays and vectors to a
/// `VECTOR(dim)` (or a dimensionless vector when `dim` is 0), checking the
/// dimension. Casts to `vector` are planned into this function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToVector {
    signature: Signature,
}

pub const TO_VECTOR: &str = "to_vector";

impl ToVector {
    fn dim(args: &[Option<&ScalarValue>]) -> Result<usize> {
        match args.get(1) {
            Some(Some(s)) => match s {
                ScalarValue::Int64(Some(d)) if *d >= 0 => Ok(*d as usize),
                ScalarValue::Int32(Some(d)) if *d >= 0 => Ok(*d as usize),
                other => exec_err!("to_vector: invalid dimension {other}"),
            },
            _ => exec_err!("to_vector: the dimension must be a constant"),
        }
    }
}

impl ScalarUDFImpl for ToVector {
    fn name(&self) -> &str {
        TO_VECTOR
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "to_vector: return_field_from_args is used".into(),
        ))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let dim = Self::dim(args.scalar_arguments)?;
        let data_type = if dim == 0 {
            any_vector_data_type()
        } else {
            vector_data_type(dim)
        };
        Ok(Arc::new(
            Field::new(TO_VECTOR, data_type, true).with_metadata(vector_metadata()),
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let dim = match args.return_field.data_type() {
            DataType::FixedSizeList(_, d) => *d as usize,
            _ => 0,
        };
        let (col, scalar) = to_column(&args.args[0])?;
        let array: ArrayRef = if dim == 0 {
            col.to_list()?
        } else {
            Arc::new(col.to_fixed(dim)?)
        };
        columnar(array, scalar)
    }
}

pub fn to_vector_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToVector {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// Every vector function, for registration in a session.
pub fn all_udfs() -> Vec<ScalarUDF> {
    vec![
        distance_udf(Metric::L2),
        distance_udf(Metric::NegativeInnerProduct),
        distance_udf(Metric::Cosine),
        distance_udf(Metric::L1),
        ScalarUDF::new_from_impl(DistanceUdf::new(
            "inner_product",
            DistanceKind::InnerProduct,
        )),
        ScalarUDF::new_from_impl(VectorDims {
            signature: Signature::any(1, Volatility::Immutable),
        }),
        to_vector_udf(),
        bit_distance_udf(Metric::Hamming),
        bit_distance_udf(Metric::Jaccard),
        to_bit_udf(),
        to_text_udf(),
    ]
    .into_iter()
    .chain(bit_measure_udfs())
    .collect()
}

/// `quiver_to_text(value)`: a vector's text form (`[1,2,3]`) or a bit
/// string's (`0101`). Casts of vectors and bit strings to text are planned
/// into it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToText {
    signature: Signature,
}

pub const TO_TEXT: &str = "quiver_to_text";

impl ScalarUDFImpl for ToText {
    fn name(&self) -> &str {
        TO_TEXT
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("{TO_TEXT} expects one argument");
        };
        let field = args.arg_fields.first().map(|f| f.as_ref());
        let is_bits = matches!(
            value.data_type(),
            DataType::FixedSizeBinary(_)
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
        );
        let (texts, scalar): (StringArray, bool) = if is_bits {
            let (col, scalar) = to_bit_column(value, field)?;
            let texts = (0..col.len())
                .map(|i| {
                    col.get(i)
                        .map(|(b, n)| bits::format_bits(b, n.unwrap_or(b.len() * 8)))
                })
                .collect();
            (texts, scalar)
        } else {
            let (col, scalar) = to_column(value)?;
            let texts = (0..col.len())
                .map(|i| col.get(i).map(crate::vector::text::format_vector))
                .collect();
            (texts, scalar)
        };
        columnar(Arc::new(texts), scalar)
    }
}

pub fn to_text_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToText {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// Field metadata key holding a `BIT(n)` column's length in bits.
pub const BIT_METADATA_KEY: &str = "quiver.bit";

/// The Arrow type of a `BIT(bits)` column: the packed bytes.
pub fn bit_data_type(bits: usize) -> DataType {
    DataType::FixedSizeBinary(bits::bytes_for(bits).max(1) as i32)
}

/// Field metadata marking a field as `BIT(bits)`.
pub fn bit_metadata(bits: usize) -> HashMap<String, String> {
    HashMap::from([(BIT_METADATA_KEY.to_string(), bits.to_string())])
}

/// The length in bits of a `BIT(n)` field, from its metadata.
pub fn bit_length_of(field: &Field) -> Option<usize> {
    match field.data_type() {
        DataType::FixedSizeBinary(_) => field.metadata().get(BIT_METADATA_KEY)?.parse().ok(),
        _ => None,
    }
}

/// A column of bit strings, whatever Arrow type it came in.
pub enum BitColumn {
    /// Packed bytes; the length in bits when known (else `8 × width`).
    Fixed(arrow::array::FixedSizeBinaryArray, Option<usize>),
    /// Bytes of any length (`bytea`): 8 bits a byte.
    Binary(arrow::array::BinaryArray),
    /// Parsed from text.
    Parsed {
        bytes: Vec<u8>,
        offsets: Vec<usize>,
        bits: Vec<usize>,
        nulls: Option<NullBuffer>,
    },
}

impl BitColumn {
    pub fn len(&self) -> usize {
        match self {
            BitColumn::Fixed(a, _) => a.len(),
            BitColumn::Binary(a) => a.len(),
            BitColumn::Parsed { bits, .. } => bits.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s bytes and its length in bits (`None`: only the bytes are
    /// known), or `None` for NULL.
    #[inline]
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<usize>)> {
        match self {
            BitColumn::Fixed(a, bits) => a.is_valid(i).then(|| (a.value(i), *bits)),
            BitColumn::Binary(a) => a
                .is_valid(i)
                .then(|| (a.value(i), Some(a.value(i).len() * 8))),
            BitColumn::Parsed {
                bytes,
                offsets,
                bits,
                nulls,
            } => (!nulls.as_ref().is_some_and(|n| n.is_null(i)))
                .then(|| (&bytes[offsets[i]..offsets[i + 1]], Some(bits[i]))),
        }
    }

    /// Build from an array: `BIT(n)` (`field` says n), `bytea` or text.
    pub fn try_from_array(array: &ArrayRef, field: Option<&Field>) -> Result<BitColumn> {
        match array.data_type() {
            DataType::FixedSizeBinary(_) => Ok(BitColumn::Fixed(
                array.as_fixed_size_binary().clone(),
                field.and_then(bit_length_of),
            )),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                let b = cast(array, &DataType::Binary)?;
                Ok(BitColumn::Binary(b.as_binary::<i32>().clone()))
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                let strings = cast(array, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut bytes = Vec::new();
                let mut offsets = vec![0usize];
                let mut bits = Vec::with_capacity(strings.len());
                for i in 0..strings.len() {
                    let n = if strings.is_valid(i) {
                        bits::parse_bits_into(strings.value(i), None, &mut bytes)
                            .map_err(vector_err)?
                    } else {
                        0
                    };
                    offsets.push(bytes.len());
                    bits.push(n);
                }
                Ok(BitColumn::Parsed {
                    bytes,
                    offsets,
                    bits,
                    nulls: strings.logical_nulls(),
                })
            }
            other => Err(vector_err(VectorError::NotABitString {
                type_name: other.to_string(),
            })),
        }
    }

    /// Convert to `BIT(bits)` bytes. `bits` > 0: exactly that many bits;
    /// below 0: any length that fills `-bits` bytes (the exact length was
    /// lost on the way).
    pub fn to_fixed(&self, bits: i64) -> Result<arrow::array::FixedSizeBinaryArray> {
        let width = if bits > 0 {
            bits::bytes_for(bits as usize)
        } else {
            (-bits) as usize
        };
        let mut out = Vec::with_capacity(self.len() * width);
        let mut valid = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            match self.get(i) {
                Some((bytes, known)) => {
                    let n = known.unwrap_or(bytes.len() * 8);
                    let fits = if bits > 0 {
                        // Bytes of unknown length (bytea) fit when their
                        // count does; the bits past the length are cleared.
                        n == bits as usize
                            || (known.is_none() && bits::bytes_for(bits as usize) == bytes.len())
                    } else {
                        bits::bytes_for(n) == width
                    };
                    if !fits || bytes.len() != width {
                        return Err(vector_err(VectorError::BitLengthMismatch {
                            expected: if bits > 0 { bits as usize } else { width * 8 },
                            actual: n,
                        }));
                    }
                    out.extend_from_slice(bytes);
                    if bits > 0 && bits % 8 != 0 {
                        let last = out.len() - 1;
                        out[last] &= 0xffu8 << (8 - bits % 8);
                    }
                    valid.push(true);
                }
                None => {
                    out.extend(std::iter::repeat_n(0u8, width));
                    valid.push(false);
                }
            }
        }
        let nulls = valid
            .iter()
            .any(|v| !v)
            .then(|| NullBuffer::from(valid.clone()));
        arrow::array::FixedSizeBinaryArray::try_new(width as i32, out.into(), nulls)
            .map_err(DataFusionError::from)
    }
}

fn to_bit_column(value: &ColumnarValue, field: Option<&Field>) -> Result<(BitColumn, bool)> {
    match value {
        ColumnarValue::Array(a) => Ok((BitColumn::try_from_array(a, field)?, false)),
        ColumnarValue::Scalar(s) => Ok((
            BitColumn::try_from_array(&s.to_array_of_size(1)?, field)?,
            true,
        )),
    }
}

/// `hamming_distance(a, b)` (`<~>`) and `jaccard_distance(a, b)` (`<%>`)
/// over bit strings, as `double precision`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BitDistanceUdf {
    metric: Metric,
    signature: Signature,
}

impl ScalarUDFImpl for BitDistanceUdf {
    fn name(&self) -> &str {
        self.metric.function_name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return exec_err!("{} expects two arguments", self.name());
        };
        let field = |i: usize| args.arg_fields.get(i).map(|f| f.as_ref());
        let (left, left_scalar) = to_bit_column(a, field(0))?;
        let (right, right_scalar) = to_bit_column(b, field(1))?;
        let rows = if left_scalar && right_scalar {
            1
        } else {
            args.number_rows
        };
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let l = left.get(if left_scalar { 0 } else { i });
            let r = right.get(if right_scalar { 0 } else { i });
            match (l, r) {
                (Some((l, ln)), Some((r, rn))) => {
                    let differ = match (ln, rn) {
                        (Some(x), Some(y)) => x != y,
                        _ => false,
                    } || l.len() != r.len();
                    if differ {
                        return Err(vector_err(VectorError::DifferentBitLengths {
                            left: ln.unwrap_or(l.len() * 8),
                            right: rn.unwrap_or(r.len() * 8),
                        }));
                    }
                    out.push(Some(bits::distance(self.metric, l, r)));
                }
                _ => out.push(None),
            }
        }
        let array = Float64Array::from(out);
        columnar(Arc::new(array), left_scalar && right_scalar)
    }
}

/// The function implementing a binary metric's operator.
pub fn bit_distance_udf(metric: Metric) -> ScalarUDF {
    ScalarUDF::new_from_impl(BitDistanceUdf {
        metric,
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// `to_bit(value, bits)`: converts text (`'0101'`) and bit strings to
/// `BIT(bits)`, checking the length. Casts to `bit(n)` are planned into it.
/// A negative `bits` means "any length filling that many bytes".
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToBit {
    signature: Signature,
}

pub const TO_BIT: &str = "to_bit";

/// The longest bit string: 65,536 bits (8 KiB).
pub const MAX_BITS: i64 = 65536;

impl ToBit {
    fn bits(args: &[Option<&ScalarValue>]) -> Result<i64> {
        match args.get(1) {
            Some(Some(ScalarValue::Int64(Some(n)))) if *n != 0 && n.abs() <= MAX_BITS => Ok(*n),
            Some(Some(ScalarValue::Int32(Some(n)))) if *n != 0 && (*n as i64).abs() <= MAX_BITS => {
                Ok(*n as i64)
            }
            _ => exec_err!("to_bit: the length must be a constant from 1 to {MAX_BITS}"),
        }
    }
}

impl ScalarUDFImpl for ToBit {
    fn name(&self) -> &str {
        TO_BIT
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "to_bit: return_field_from_args is used".into(),
        ))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let bits = Self::bits(args.scalar_arguments)?;
        let field = if bits > 0 {
            Field::new(TO_BIT, bit_data_type(bits as usize), true)
                .with_metadata(bit_metadata(bits as usize))
        } else {
            Field::new(TO_BIT, DataType::FixedSizeBinary((-bits) as i32), true)
        };
        Ok(Arc::new(field))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bits = match bit_length_of(&args.return_field) {
            Some(n) => n as i64,
            None => match args.return_field.data_type() {
                DataType::FixedSizeBinary(w) => -(*w as i64),
                _ => return exec_err!("to_bit: unexpected return type"),
            },
        };
        let field = args.arg_fields.first().map(|f| f.as_ref());
        let (col, scalar) = to_bit_column(&args.args[0], field)?;
        let array: ArrayRef = Arc::new(col.to_fixed(bits)?);
        columnar(array, scalar)
    }
}

/// What is measured of a bit string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitMeasureKind {
    /// `length(b)`, `bit_length(b)`: its length in bits.
    Bits,
    /// `octet_length(b)`: the bytes that hold it.
    Octets,
    /// `bit_count(b)`: how many bits are set.
    Ones,
}

/// `kind` of each value of the bit-string (or bytea) argument `arg`, whose
/// field says its length in bits; int4, or int8 for `Ones`.
fn measure_bits(
    kind: BitMeasureKind,
    name: &str,
    arg: &ColumnarValue,
    field: Option<&Field>,
    rows: usize,
) -> Result<ColumnarValue> {
    let scalar = matches!(arg, ColumnarValue::Scalar(_));
    let array = arg.to_array(rows)?;
    let bits = field.and_then(bit_length_of);
    let measure = |bytes: &[u8]| -> i64 {
        match kind {
            BitMeasureKind::Bits => bits.unwrap_or(bytes.len() * 8) as i64,
            BitMeasureKind::Octets => bytes.len() as i64,
            BitMeasureKind::Ones => bytes.iter().map(|b| b.count_ones() as i64).sum(),
        }
    };
    let values: Vec<Option<i64>> = match array.data_type() {
        DataType::FixedSizeBinary(_) => {
            let a = array.as_fixed_size_binary();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| measure(a.value(i))))
                .collect()
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| measure(a.value(i))))
                .collect()
        }
        DataType::LargeBinary => {
            let a = array.as_binary::<i64>();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| measure(a.value(i))))
                .collect()
        }
        other => return exec_err!("{name}: not a bit string: {other}"),
    };
    let out: ArrayRef = match kind {
        BitMeasureKind::Ones => Arc::new(arrow::array::Int64Array::from(values)),
        _ => Arc::new(
            values
                .into_iter()
                .map(|v| v.map(|n| n as i32))
                .collect::<Int32Array>(),
        ),
    };
    columnar(out, scalar)
}

/// `bit_count(b)` (PostgreSQL 14): how many bits of a bit string or bytea
/// are set.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BitCount {
    signature: Signature,
}

impl ScalarUDFImpl for BitCount {
    fn name(&self) -> &str {
        "bit_count"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t @ (DataType::FixedSizeBinary(_) | DataType::Binary | DataType::LargeBinary)] => {
                Ok(vec![t.clone()])
            }
            [DataType::BinaryView] => Ok(vec![DataType::Binary]),
            [other] => datafusion::common::plan_err!(
                "function bit_count({other}) does not exist: it takes a bit string or bytea"
            ),
            _ => datafusion::common::plan_err!("bit_count takes one argument"),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a] = args.args.as_slice() else {
            return exec_err!("bit_count takes one argument");
        };
        let field = args.arg_fields.first().map(|f| f.as_ref());
        measure_bits(
            BitMeasureKind::Ones,
            "bit_count",
            a,
            field,
            args.number_rows,
        )
    }
}

/// One of DataFusion's `character_length` (alias `length`), `bit_length`
/// and `octet_length`, which take text, also taking a `BIT(n)` value as
/// PostgreSQL's do: registered under the same names, it measures bit
/// strings and hands everything else to DataFusion's function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WithBits {
    inner: Arc<ScalarUDF>,
    kind: BitMeasureKind,
    signature: Signature,
}

fn is_bits(t: &DataType) -> bool {
    matches!(t, DataType::FixedSizeBinary(_))
}

impl ScalarUDFImpl for WithBits {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if let [t] = arg_types
            && is_bits(t)
        {
            return Ok(vec![t.clone()]);
        }
        let fields: Vec<FieldRef> = arg_types
            .iter()
            .map(|t| Arc::new(Field::new("arg", t.clone(), true)))
            .collect();
        Ok(
            datafusion::logical_expr::type_coercion::functions::fields_with_udf(
                &fields,
                self.inner.as_ref(),
            )?
            .iter()
            .map(|f| f.data_type().clone())
            .collect(),
        )
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] if is_bits(t) => Ok(DataType::Int32),
            _ => self.inner.return_type(arg_types),
        }
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match args.arg_fields {
            [f] if is_bits(f.data_type()) => {
                Ok(Arc::new(Field::new(self.name(), DataType::Int32, true)))
            }
            _ => self.inner.return_field_from_args(args),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.as_slice() {
            [a] if is_bits(&a.data_type()) => {
                let field = args.arg_fields.first().map(|f| f.as_ref());
                measure_bits(self.kind, self.name(), a, field, args.number_rows)
            }
            _ => self.inner.invoke_with_args(args),
        }
    }
}

/// `bit_count`, and `length`/`bit_length`/`octet_length` taking bit strings.
fn bit_measure_udfs() -> Vec<ScalarUDF> {
    let with_bits = |inner: Arc<ScalarUDF>, kind| {
        ScalarUDF::new_from_impl(WithBits {
            inner,
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    };
    vec![
        ScalarUDF::new_from_impl(BitCount {
            signature: Signature::user_defined(Volatility::Immutable),
        }),
        with_bits(
            datafusion::functions::unicode::character_length(),
            BitMeasureKind::Bits,
        ),
        with_bits(
            datafusion::functions::string::bit_length(),
            BitMeasureKind::Bits,
        ),
        with_bits(
            datafusion::functions::string::octet_length(),
            BitMeasureKind::Octets,
        ),
    ]
}

pub fn to_bit_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToBit {
        signature: Signature::any(2, Volatility::Immutable),
    })
}
