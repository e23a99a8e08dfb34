//! Vectors and bit strings as Arrow columns: the Arrow types and field
//! metadata of `VECTOR(n)` and `BIT(n)` columns, and [`VectorColumn`] /
//! [`BitColumn`], which read any array that can hold them (lists of numbers,
//! `bytea`, the pgvector text form) in one uniform shape.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, GenericListArray, OffsetSizeTrait,
};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};

use crate::text::parse_vector_into;
use crate::{VectorError, bits};

type Result<T, E = VectorError> = std::result::Result<T, E>;

/// Field metadata key that marks a list column as a pgvector `vector` (shared with arrow-pg).
pub const VECTOR_METADATA_KEY: &str = "pg.vector";

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

/// The longest bit string: 65,536 bits (8 KiB).
pub const MAX_BITS: i64 = 65536;

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
                        parse_vector_into(strings.value(i), &mut values)?;
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
            other => Err(VectorError::NotAVector {
                type_name: other.to_string(),
            }),
        }
    }

    fn from_list<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Result<VectorColumn> {
        Ok(VectorColumn {
            values: float_values(list.values())?,
            offsets: list.offsets().iter().map(|o| o.as_usize()).collect(),
            nulls: list.logical_nulls(),
        })
    }

    /// Convert to a `VECTOR(dim)` array, checking every row's dimension.
    pub fn to_fixed(&self, dim: usize) -> Result<FixedSizeListArray> {
        let mut flat: Vec<f32> = Vec::with_capacity(self.len() * dim);
        for i in 0..self.len() {
            match self.get(i) {
                Some(v) => {
                    if v.len() != dim {
                        return Err(VectorError::DimensionMismatch {
                            expected: dim,
                            actual: v.len(),
                        });
                    }
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(VectorError::NotFinite);
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
        .map_err(VectorError::from)
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
        other => Err(VectorError::NotAVector {
            type_name: format!("{other} list"),
        }),
    }
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
                        bits::parse_bits_into(strings.value(i), None, &mut bytes)?
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
            other => Err(VectorError::NotABitString {
                type_name: other.to_string(),
            }),
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
                        return Err(VectorError::BitLengthMismatch {
                            expected: if bits > 0 { bits as usize } else { width * 8 },
                            actual: n,
                        });
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
            .map_err(VectorError::from)
    }
}
