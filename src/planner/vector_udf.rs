//! SQL functions over vectors: the distance functions behind `<->`, `<#>`,
//! `<=>`, `<+>`, plus `inner_product`, `vector_dims` and the internal
//! `to_vector` conversion used for casts and INSERT coercion.

use std::any::Any;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use quiver_vector::column::{
    BitColumn, MAX_BITS, VectorColumn, any_vector_data_type, bit_data_type, bit_length_of,
    bit_metadata, vector_data_type, vector_metadata,
};
use quiver_vector::{Metric, VectorError, bits, distance};

/// A vector error as DataFusion reports it: Arrow's own errors stay Arrow
/// errors (a failed cast keeps its SQLSTATE), the rest travel as external.
pub fn vector_err(e: VectorError) -> DataFusionError {
    match e {
        VectorError::Arrow(a) => DataFusionError::ArrowError(Box::new(a), None),
        e => DataFusionError::External(Box::new(e)),
    }
}

/// The vectors of a scalar (a query vector, typically).
pub fn vector_column_of_scalar(scalar: &ScalarValue) -> Result<VectorColumn> {
    VectorColumn::try_from_array(&scalar.to_array_of_size(1)?).map_err(vector_err)
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
        ColumnarValue::Array(a) => {
            Ok((VectorColumn::try_from_array(a).map_err(vector_err)?, false))
        }
        ColumnarValue::Scalar(s) => Ok((vector_column_of_scalar(s)?, true)),
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
            col.to_list().map_err(vector_err)?
        } else {
            Arc::new(col.to_fixed(dim).map_err(vector_err)?)
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
                .map(|i| col.get(i).map(quiver_vector::text::format_vector))
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

fn to_bit_column(value: &ColumnarValue, field: Option<&Field>) -> Result<(BitColumn, bool)> {
    match value {
        ColumnarValue::Array(a) => Ok((
            BitColumn::try_from_array(a, field).map_err(vector_err)?,
            false,
        )),
        ColumnarValue::Scalar(s) => Ok((
            BitColumn::try_from_array(&s.to_array_of_size(1)?, field).map_err(vector_err)?,
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
        let array: ArrayRef = Arc::new(col.to_fixed(bits).map_err(vector_err)?);
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
