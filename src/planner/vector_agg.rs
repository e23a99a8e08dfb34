//! pgvector's `avg(vector)` and `sum(vector)`: the element-wise mean and
//! sum of the vectors of a group (NULLs skipped, NULL for a group without
//! vectors). `avg` adds in double precision and rounds the quotient to
//! `real`, as pgvector's `vector_accum` / `vector_avg`; `sum` adds in
//! `real`, as pgvector's `vector_add`. A vector of another dimension is
//! pgvector's error (`expected 3 dimensions, not 2` for avg, `different
//! vector dimensions 3 and 2` for sum), as is a sum past `real`'s range.
//!
//! The aggregates keep DataFusion's names: each wraps DataFusion's `avg` /
//! `sum` and hands it every call whose argument is not a vector.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, GroupsAccumulator, ReversedUDAF, Signature,
    TypeSignature,
};
use quiver_vector::VectorError;
use quiver_vector::column::{VectorColumn, any_vector_data_type, vector_dim_of};

use crate::vector_ops::vector_field;
use crate::vector_udf::vector_err;

/// Which aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Avg,
    Sum,
}

/// DataFusion's `avg` or `sum`, taking vectors too.
#[derive(Debug)]
struct VectorAggregate {
    kind: Kind,
    inner: Arc<AggregateUDF>,
    signature: Signature,
}

impl PartialEq for VectorAggregate {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}
impl Eq for VectorAggregate {}
impl std::hash::Hash for VectorAggregate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

/// `avg` and `sum` over vectors as well as numbers, wrapping DataFusion's
/// (`inner_avg`, `inner_sum`).
pub fn aggregates(inner_avg: Arc<AggregateUDF>, inner_sum: Arc<AggregateUDF>) -> Vec<AggregateUDF> {
    [(Kind::Avg, inner_avg), (Kind::Sum, inner_sum)]
        .into_iter()
        .map(|(kind, inner)| {
            // The inner signatures, then vectors (checked in coerce_types).
            let mut types = match &inner.signature().type_signature {
                TypeSignature::OneOf(types) => types.clone(),
                other => vec![other.clone()],
            };
            types.push(TypeSignature::UserDefined);
            let signature = Signature::one_of(types, inner.signature().volatility);
            AggregateUDF::new_from_impl(VectorAggregate {
                kind,
                inner,
                signature,
            })
        })
        .collect()
}

fn is_vector(t: &DataType) -> bool {
    vector_dim_of(t).is_some()
}

impl AggregateUDFImpl for VectorAggregate {
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
        match arg_types {
            [t] if is_vector(t) => Ok(vec![t.clone()]),
            _ => exec_err!(
                "function {}({}) does not exist",
                self.name(),
                arg_types
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] if is_vector(t) => Ok(any_vector_data_type()),
            _ => self.inner.return_type(arg_types),
        }
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        match arg_fields {
            [f] if is_vector(f.data_type()) => Ok(vector_field(self.name())),
            _ => self.inner.return_field(arg_fields),
        }
    }
    fn is_nullable(&self) -> bool {
        true
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match args.expr_fields {
            [f] if is_vector(f.data_type()) => Ok(Box::new(VectorAccumulator {
                kind: self.kind,
                count: 0,
                sums: None,
            })),
            _ => self.inner.accumulator(args),
        }
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match args.expr_fields {
            [f] if is_vector(f.data_type()) => self.accumulator(args),
            _ => self.inner.create_sliding_accumulator(args),
        }
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        match args.input_fields {
            [f] if is_vector(f.data_type()) => Ok(vec![
                Arc::new(Field::new(
                    format!("{}[count]", args.name),
                    DataType::Int64,
                    true,
                )),
                Arc::new(Field::new(
                    format!("{}[sums]", args.name),
                    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                    true,
                )),
            ]),
            _ => self.inner.state_fields(args),
        }
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        match args.expr_fields {
            [f] if is_vector(f.data_type()) => false,
            _ => self.inner.groups_accumulator_supported(args),
        }
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        if is_vector(data_type) {
            return ScalarValue::try_from(data_type);
        }
        self.inner.default_value(data_type)
    }
}

/// The running count and element sums of a group's vectors.
#[derive(Debug)]
struct VectorAccumulator {
    kind: Kind,
    count: i64,
    /// Double precision for avg; for sum, each partial sum is rounded to
    /// `real` as pgvector's `vector_add` rounds it.
    sums: Option<Vec<f64>>,
}

impl VectorAccumulator {
    fn add(&mut self, v: &[f32]) -> Result<()> {
        match &mut self.sums {
            None => self.sums = Some(v.iter().map(|x| *x as f64).collect()),
            Some(sums) => {
                if sums.len() != v.len() {
                    return Err(vector_err(match self.kind {
                        Kind::Avg => VectorError::DimensionMismatch {
                            expected: sums.len(),
                            actual: v.len(),
                        },
                        Kind::Sum => VectorError::DifferentDimensions {
                            left: sums.len(),
                            right: v.len(),
                        },
                    }));
                }
                for (s, x) in sums.iter_mut().zip(v) {
                    *s += *x as f64;
                    if self.kind == Kind::Sum {
                        let rounded = *s as f32;
                        if rounded.is_infinite() {
                            return Err(vector_err(VectorError::Overflow));
                        }
                        *s = rounded as f64;
                    }
                }
            }
        }
        self.count += 1;
        Ok(())
    }

    fn merge(&mut self, count: i64, other: &[f64]) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        match &mut self.sums {
            None => self.sums = Some(other.to_vec()),
            Some(sums) => {
                if sums.len() != other.len() {
                    return Err(vector_err(VectorError::DifferentDimensions {
                        left: sums.len(),
                        right: other.len(),
                    }));
                }
                for (s, x) in sums.iter_mut().zip(other) {
                    *s += x;
                    if self.kind == Kind::Sum {
                        let rounded = *s as f32;
                        if rounded.is_infinite() {
                            return Err(vector_err(VectorError::Overflow));
                        }
                        *s = rounded as f64;
                    }
                }
            }
        }
        self.count += count;
        Ok(())
    }
}

impl Accumulator for VectorAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        let column = VectorColumn::try_from_array(values).map_err(vector_err)?;
        for i in 0..column.len() {
            if let Some(v) = column.get(i) {
                self.add(v)?;
            }
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        let column = VectorColumn::try_from_array(values).map_err(vector_err)?;
        for i in 0..column.len() {
            if let (Some(v), Some(sums)) = (column.get(i), self.sums.as_mut()) {
                for (s, x) in sums.iter_mut().zip(v) {
                    *s -= *x as f64;
                }
                self.count -= 1;
            }
        }
        if self.count == 0 {
            self.sums = None;
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let Some(sums) = self.sums.as_ref().filter(|_| self.count > 0) else {
            return ScalarValue::try_from(any_vector_data_type());
        };
        let n = self.count as f64;
        let mut out = Vec::with_capacity(sums.len());
        for s in sums {
            let v = match self.kind {
                Kind::Avg => (s / n) as f32,
                Kind::Sum => *s as f32,
            };
            if v.is_infinite() {
                return Err(vector_err(VectorError::Overflow));
            }
            out.push(ScalarValue::Float32(Some(v)));
        }
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &out,
            &DataType::Float32,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sums.as_ref().map_or(0, |s| s.capacity() * 8)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let sums = match &self.sums {
            Some(sums) => ScalarValue::List(ScalarValue::new_list_nullable(
                &sums
                    .iter()
                    .map(|s| ScalarValue::Float64(Some(*s)))
                    .collect::<Vec<_>>(),
                &DataType::Float64,
            )),
            None => ScalarValue::try_from(DataType::List(Arc::new(Field::new_list_field(
                DataType::Float64,
                true,
            ))))?,
        };
        Ok(vec![ScalarValue::Int64(Some(self.count)), sums])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [counts, sums] = states else {
            return exec_err!("vector aggregate state has two columns");
        };
        let Some(counts) = counts.as_any().downcast_ref::<Int64Array>() else {
            return exec_err!("vector aggregate count is not int8");
        };
        let sums = sums.as_list::<i32>();
        for i in 0..counts.len() {
            if counts.is_null(i) || sums.is_null(i) {
                continue;
            }
            let row = sums.value(i);
            let Some(row) = row.as_any().downcast_ref::<Float64Array>() else {
                return exec_err!("vector aggregate sums are not float8");
            };
            self.merge(counts.value(i), row.values())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(kind: Kind) -> VectorAccumulator {
        VectorAccumulator {
            kind,
            count: 0,
            sums: None,
        }
    }

    fn value(a: &mut VectorAccumulator) -> Vec<f32> {
        match a.evaluate().unwrap() {
            ScalarValue::List(l) => l
                .value(0)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn averages_and_sums_element_wise() {
        let mut avg = acc(Kind::Avg);
        avg.add(&[1.0, 2.0, 3.0]).unwrap();
        avg.add(&[4.0, 5.0, 6.0]).unwrap();
        assert_eq!(value(&mut avg), [2.5, 3.5, 4.5]);
        let mut sum = acc(Kind::Sum);
        sum.add(&[1.0, 2.0]).unwrap();
        sum.add(&[4.0, 5.0]).unwrap();
        assert_eq!(value(&mut sum), [5.0, 7.0]);
        // Partial states merge.
        let mut other = acc(Kind::Avg);
        other.add(&[7.0, 8.0, 9.0]).unwrap();
        let state = other.state().unwrap();
        let arrays: Vec<ArrayRef> = state.iter().map(|s| s.to_array().unwrap()).collect();
        avg.merge_batch(&arrays).unwrap();
        assert_eq!(value(&mut avg), [4.0, 5.0, 6.0]);
    }

    #[test]
    fn dimensions_and_overflow_are_pgvectors_errors() {
        let mut avg = acc(Kind::Avg);
        avg.add(&[1.0, 2.0, 3.0]).unwrap();
        let e = avg.add(&[1.0, 2.0]).unwrap_err().to_string();
        assert!(e.contains("expected 3 dimensions, not 2"), "{e}");
        let mut sum = acc(Kind::Sum);
        sum.add(&[1.0, 2.0, 3.0]).unwrap();
        let e = sum.add(&[1.0]).unwrap_err().to_string();
        assert!(e.contains("different vector dimensions 3 and 1"), "{e}");
        let mut sum = acc(Kind::Sum);
        sum.add(&[3e38]).unwrap();
        let e = sum.add(&[3e38]).unwrap_err().to_string();
        assert!(e.contains("value out of range: overflow"), "{e}");
        assert!(acc(Kind::Avg).evaluate().unwrap().is_null());
    }
}
