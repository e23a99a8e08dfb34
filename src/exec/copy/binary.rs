//! PostgreSQL's binary COPY format, read: a header (signature, flags,
//! extension), then per row a field count and each field's length (-1 for
//! NULL) and bytes in the type's binary form, then a -1 trailer. Numbers,
//! booleans, text and vectors are decoded as the rows arrive, straight into
//! the buffers of their Arrow arrays ([`ColumnBuffer`]); values of the
//! other types are kept as sent and read through their text form.
//! Vectors come in pgvector's binary form (dimension, unused, floats), bit
//! strings as PostgreSQL's (bit length, bytes).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, NullBufferBuilder, StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, FieldRef};
use quiver_catalog::FieldType;

/// The first bytes of every binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The value of one field, `bytes` in `kind`'s binary form, as text.
pub fn to_text(kind: &FieldType, bytes: &[u8]) -> Result<String, String> {
    fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], String> {
        bytes
            .try_into()
            .map_err(|_| format!("{what} of {} bytes, expected {N}", bytes.len()))
    }
    fn float(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v.is_infinite() {
            if v > 0.0 { "inf".into() } else { "-inf".into() }
        } else {
            v.to_string()
        }
    }
    /// Microseconds and days are counted from 2000-01-01.
    const EPOCH_DAYS: i64 = 10_957;
    const EPOCH_US: i64 = EPOCH_DAYS * 86_400_000_000;
    Ok(match kind {
        FieldType::Bool => match bytes {
            [0] => "f".into(),
            [1] => "t".into(),
            _ => return Err("invalid binary boolean".into()),
        },
        FieldType::Int16 => i16::from_be_bytes(fixed(bytes, "smallint")?).to_string(),
        FieldType::Int32 => i32::from_be_bytes(fixed(bytes, "integer")?).to_string(),
        FieldType::Int64 => i64::from_be_bytes(fixed(bytes, "bigint")?).to_string(),
        FieldType::Float32 => float(f32::from_be_bytes(fixed(bytes, "real")?) as f64),
        FieldType::Float64 => float(f64::from_be_bytes(fixed(bytes, "double precision")?)),
        FieldType::Text => utf8(bytes)?,
        // jsonb's binary form is a version byte (1) and the text.
        FieldType::Json => match bytes.split_first() {
            Some((1, rest)) => utf8(rest)?,
            _ => utf8(bytes)?,
        },
        FieldType::Uuid => quiver_common::uuid::format(
            bytes
                .try_into()
                .map_err(|_| format!("uuid of {} bytes, not 16", bytes.len()))?,
        ),
        FieldType::Bytea => {
            let mut s = String::with_capacity(2 + bytes.len() * 2);
            s.push_str("\\x");
            for b in bytes {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
        FieldType::Date => {
            let days = i32::from_be_bytes(fixed(bytes, "date")?) as i64 + EPOCH_DAYS;
            let date = i32::try_from(days)
                .ok()
                .and_then(arrow::temporal_conversions::date32_to_datetime)
                .ok_or("date out of range")?;
            date.date().to_string()
        }
        FieldType::Timestamp | FieldType::TimestampTz => {
            let us = i64::from_be_bytes(fixed(bytes, "timestamp")?)
                .checked_add(EPOCH_US)
                .ok_or("timestamp out of range")?;
            arrow::temporal_conversions::timestamp_us_to_datetime(us)
                .ok_or("timestamp out of range")?
                .to_string()
        }
        FieldType::Vector { .. } => {
            let (head, rest) = bytes
                .split_at_checked(4)
                .ok_or("vector shorter than its header")?;
            let dim = u16::from_be_bytes([head[0], head[1]]) as usize;
            if rest.len() != dim * 4 {
                return Err(format!(
                    "vector of dimension {dim} with {} bytes of values",
                    rest.len()
                ));
            }
            let mut s = String::with_capacity(2 + dim * 10);
            s.push('[');
            for (i, v) in rest.chunks_exact(4).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let v = f32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                s.push_str(&v.to_string());
            }
            s.push(']');
            s
        }
        FieldType::Bit { .. } => {
            let (head, rest) = bytes
                .split_at_checked(4)
                .ok_or("bit string shorter than its header")?;
            let bits = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let bits = usize::try_from(bits).map_err(|_| "negative bit string length")?;
            if rest.len() != bits.div_ceil(8) {
                return Err(format!(
                    "bit string of {bits} bits with {} bytes",
                    rest.len()
                ));
            }
            (0..bits)
                .map(|i| {
                    if rest[i / 8] & (0x80 >> (i % 8)) != 0 {
                        '1'
                    } else {
                        '0'
                    }
                })
                .collect()
        }
        other => {
            return Err(format!(
                "binary COPY of {} columns is not supported: use the text or csv format",
                other.sql_name()
            ));
        }
    })
}

/// One column's binary values as they arrived, side by side in one buffer
/// (a value each was an allocation of its own: a tenth of a load's time).
#[derive(Debug, Default, Clone)]
pub struct RawValues {
    data: Vec<u8>,
    /// Start and length in `data` of each value; `None` for NULL.
    spans: Vec<Option<(usize, usize)>>,
}

impl RawValues {
    pub fn push(&mut self, value: Option<&[u8]>) {
        self.spans.push(value.map(|v| {
            let start = self.data.len();
            self.data.extend_from_slice(v);
            (start, v.len())
        }));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The value of row `i` (`None`: NULL).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans[i].map(|(start, len)| &self.data[start..start + len])
    }

    /// Bytes of values held.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.spans.len() * 24
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<&[u8]>> {
        self.spans
            .iter()
            .map(|s| s.map(|(start, len)| &self.data[start..start + len]))
    }
}

impl<'a> FromIterator<Option<&'a [u8]>> for RawValues {
    fn from_iter<I: IntoIterator<Item = Option<&'a [u8]>>>(values: I) -> RawValues {
        let mut raw = RawValues::default();
        for v in values {
            raw.push(v);
        }
        raw
    }
}

/// Room a vector column reserves once its first rows are in: the rows and
/// bytes at which a binary COPY takes a batch (`copy.rs`).
const VECTOR_ROWS: usize = 65_536;
const VECTOR_BYTES: usize = 48 << 20;

/// Values of one column decoded as their rows arrive, straight from the
/// client's bytes into the buffers of the Arrow array they become.
pub enum Decoded {
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Bool(Vec<bool>),
    Text { offsets: Vec<i32>, bytes: Vec<u8> },
    Vector { dim: usize, values: Vec<f32> },
}

/// One column of a binary COPY: decoded as it arrives for the types loaded
/// most (numbers, booleans, text, vectors), or kept as sent and read
/// through the type's text form when taken.
pub enum ColumnBuffer {
    Decoded {
        values: Decoded,
        nulls: NullBufferBuilder,
        item: Option<FieldRef>,
    },
    Raw(RawValues),
}

fn fixed<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("{what} of {} bytes, expected {N}", b.len()))
}

impl ColumnBuffer {
    /// The buffer for values of `kind`, stored as `data_type`; room for
    /// `rows` rows.
    pub fn new(kind: &FieldType, data_type: &DataType, rows: usize) -> ColumnBuffer {
        let mut item = None;
        let values = match kind {
            FieldType::Int16 => Decoded::Int16(Vec::with_capacity(rows)),
            FieldType::Int32 => Decoded::Int32(Vec::with_capacity(rows)),
            FieldType::Int64 => Decoded::Int64(Vec::with_capacity(rows)),
            FieldType::Float32 => Decoded::Float32(Vec::with_capacity(rows)),
            FieldType::Float64 => Decoded::Float64(Vec::with_capacity(rows)),
            FieldType::Bool => Decoded::Bool(Vec::with_capacity(rows)),
            FieldType::Text => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Decoded::Text {
                    offsets,
                    bytes: Vec::new(),
                }
            }
            FieldType::Vector { dim } => match data_type {
                DataType::FixedSizeList(f, _) => {
                    item = Some(f.clone());
                    Decoded::Vector {
                        dim: *dim,
                        values: Vec::with_capacity(rows * dim),
                    }
                }
                _ => return ColumnBuffer::Raw(RawValues::default()),
            },
            _ => return ColumnBuffer::Raw(RawValues::default()),
        };
        ColumnBuffer::Decoded {
            values,
            nulls: NullBufferBuilder::new(rows),
            item,
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        match self {
            ColumnBuffer::Decoded { nulls, .. } => nulls.len(),
            ColumnBuffer::Raw(raw) => raw.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of values held.
    pub fn bytes(&self) -> usize {
        match self {
            ColumnBuffer::Decoded { values, .. } => match values {
                Decoded::Int16(v) => v.len() * 2,
                Decoded::Int32(v) => v.len() * 4,
                Decoded::Float32(v) => v.len() * 4,
                Decoded::Int64(v) => v.len() * 8,
                Decoded::Float64(v) => v.len() * 8,
                Decoded::Bool(v) => v.len(),
                Decoded::Text { offsets, bytes } => bytes.len() + offsets.len() * 4,
                Decoded::Vector { values, .. } => values.len() * 4,
            },
            ColumnBuffer::Raw(raw) => raw.bytes(),
        }
    }

    /// Add a row's value (`None`: NULL), checked against the type; an
    /// error says what is wrong with it.
    pub fn push(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let (values, nulls) = match self {
            ColumnBuffer::Raw(raw) => {
                raw.push(value);
                return Ok(());
            }
            ColumnBuffer::Decoded { values, nulls, .. } => (values, nulls),
        };
        let Some(b) = value else {
            match values {
                Decoded::Int16(v) => v.push(0),
                Decoded::Int32(v) => v.push(0),
                Decoded::Int64(v) => v.push(0),
                Decoded::Float32(v) => v.push(0.0),
                Decoded::Float64(v) => v.push(0.0),
                Decoded::Bool(v) => v.push(false),
                Decoded::Text { offsets, bytes } => offsets.push(text_offset(bytes.len())?),
                Decoded::Vector { dim, values } => values.extend(std::iter::repeat_n(0f32, *dim)),
            }
            nulls.append_null();
            return Ok(());
        };
        match values {
            Decoded::Int16(v) => v.push(i16::from_be_bytes(fixed(b, "smallint")?)),
            Decoded::Int32(v) => v.push(i32::from_be_bytes(fixed(b, "integer")?)),
            Decoded::Int64(v) => v.push(i64::from_be_bytes(fixed(b, "bigint")?)),
            Decoded::Float32(v) => v.push(f32::from_be_bytes(fixed(b, "real")?)),
            Decoded::Float64(v) => v.push(f64::from_be_bytes(fixed(b, "double precision")?)),
            Decoded::Bool(v) => v.push(fixed::<1>(b, "boolean")?[0] != 0),
            Decoded::Text { offsets, bytes } => {
                if b.contains(&0) {
                    return Err(format!("{BAD_TEXT}: 0x00"));
                }
                std::str::from_utf8(b).map_err(|_| BAD_TEXT.to_string())?;
                bytes.extend_from_slice(b);
                offsets.push(text_offset(bytes.len())?);
            }
            Decoded::Vector { dim, values } => {
                let dim = *dim;
                let got = b
                    .get(..2)
                    .map_or(0, |h| u16::from_be_bytes([h[0], h[1]]) as usize);
                if got != dim {
                    return Err(format!("expected {dim} dimensions, not {got}"));
                }
                if b.len() != 4 + dim * 4 {
                    return Err(format!(
                        "a vector of {dim} dimensions in {} bytes, not {}",
                        b.len(),
                        4 + dim * 4
                    ));
                }
                if b[2..4] != [0, 0] {
                    return Err("expected unused to be 0".into());
                }
                let start = values.len();
                if values.capacity() - start < dim {
                    // Past the first part, room for a whole batch at once:
                    // only the pages written are ever touched, and doubling
                    // would copy every vector once more.
                    let whole = (VECTOR_ROWS * dim).min(VECTOR_BYTES / 4);
                    values.reserve_exact(whole.max(2 * start).max(start + dim) - start);
                }
                values.extend(
                    b[4..]
                        .chunks_exact(4)
                        .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                );
                if !values[start..].iter().all(|f| f.is_finite()) {
                    values.truncate(start);
                    return Err("NaN and infinity are not allowed in vectors".into());
                }
            }
        }
        nulls.append_non_null();
        Ok(())
    }

    /// The values so far as an Arrow array (the buffers become the
    /// array's: nothing is copied), or, for the types read through their
    /// text form, as they were sent; the buffer is left empty, with room
    /// for `rows` rows.
    pub fn take(&mut self, kind: &FieldType, data_type: &DataType, rows: usize) -> Taken {
        let next = ColumnBuffer::new(kind, data_type, rows);
        match std::mem::replace(self, next) {
            ColumnBuffer::Raw(raw) => Taken::Raw(raw),
            ColumnBuffer::Decoded {
                mut values,
                mut nulls,
                item,
            } => {
                let nulls = nulls.finish();
                if let Decoded::Vector { values, .. } = &mut values {
                    // The room reserved past the rows (a large block
                    // shrinks where it lies).
                    values.shrink_to_fit();
                }
                let array: Result<ArrayRef, String> = match values {
                    Decoded::Int16(v) => Ok(Arc::new(Int16Array::new(v.into(), nulls))),
                    Decoded::Int32(v) => Ok(Arc::new(Int32Array::new(v.into(), nulls))),
                    Decoded::Int64(v) => Ok(Arc::new(Int64Array::new(v.into(), nulls))),
                    Decoded::Float32(v) => Ok(Arc::new(Float32Array::new(v.into(), nulls))),
                    Decoded::Float64(v) => Ok(Arc::new(Float64Array::new(v.into(), nulls))),
                    Decoded::Bool(v) => Ok(Arc::new(BooleanArray::new(v.into(), nulls))),
                    Decoded::Text { offsets, bytes } => {
                        StringArray::try_new(OffsetBuffer::new(offsets.into()), bytes.into(), nulls)
                            .map(|a| Arc::new(a) as ArrayRef)
                            .map_err(|e| e.to_string())
                    }
                    Decoded::Vector { dim, values } => match item {
                        Some(item) => FixedSizeListArray::try_new(
                            item,
                            dim as i32,
                            Arc::new(Float32Array::new(values.into(), None)),
                            nulls,
                        )
                        .map(|a| Arc::new(a) as ArrayRef)
                        .map_err(|e| e.to_string()),
                        None => Err("a vector column without its item field".into()),
                    },
                };
                Taken::Array(array)
            }
        }
    }
}

/// What [`ColumnBuffer::take`] gives.
pub enum Taken {
    Array(Result<ArrayRef, String>),
    Raw(RawValues),
}

/// The end offset of a text value: a column's text is at most 2 GiB.
fn text_offset(len: usize) -> Result<i32, String> {
    i32::try_from(len).map_err(|_| {
        "the text of one column passes 2 GiB in one part of a COPY: send fewer rows per statement"
            .to_string()
    })
}

/// Text must be UTF-8 without NUL bytes (PostgreSQL's 22021).
pub const BAD_TEXT: &str = "invalid byte sequence for encoding \"UTF8\"";

fn utf8(bytes: &[u8]) -> Result<String, String> {
    if bytes.contains(&0) {
        return Err(format!("{BAD_TEXT}: 0x00"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| BAD_TEXT.into())
}

/// Where the row at `at` of `buf` ends: its field count (`None` for the
/// trailer) and the offset after it; `Ok(None)` while not all of it has
/// arrived. Its fields are then read with [`field_at`].
pub fn row_end(buf: &[u8], at: usize) -> Result<Option<(Option<usize>, usize)>, String> {
    let Some(count) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some((None, at + 2)));
    }
    let count = usize::try_from(count).map_err(|_| format!("invalid field count {count}"))?;
    let mut p = at + 2;
    for _ in 0..count {
        let Some(len) = buf.get(p..p + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        p += 4;
        if len == -1 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| format!("invalid field length {len}"))?;
        if buf.len() - p < len {
            return Ok(None);
        }
        p += len;
    }
    Ok(Some((Some(count), p)))
}

/// The field at `p` of a row that [`row_end`] found whole (`None`: NULL),
/// and the offset after it.
pub fn field_at(buf: &[u8], p: usize) -> (Option<&[u8]>, usize) {
    let len = i32::from_be_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
    match usize::try_from(len) {
        Ok(len) => (Some(&buf[p + 4..p + 4 + len]), p + 4 + len),
        Err(_) => (None, p + 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_text() {
        assert_eq!(
            to_text(&FieldType::Int64, &42i64.to_be_bytes()).unwrap(),
            "42"
        );
        assert_eq!(to_text(&FieldType::Bool, &[1]).unwrap(), "t");
        let mut v = vec![0, 2, 0, 0];
        v.extend_from_slice(&1.5f32.to_be_bytes());
        v.extend_from_slice(&(-2f32).to_be_bytes());
        assert_eq!(
            to_text(&FieldType::Vector { dim: 2 }, &v).unwrap(),
            "[1.5,-2]"
        );
        assert_eq!(
            to_text(&FieldType::Bit { bits: 4 }, &[0, 0, 0, 4, 0b1010_0000]).unwrap(),
            "1010"
        );
        assert_eq!(
            to_text(&FieldType::Date, &0i32.to_be_bytes()).unwrap(),
            "2000-01-01"
        );
        assert_eq!(
            to_text(&FieldType::Timestamp, &1_500_000i64.to_be_bytes()).unwrap(),
            "2000-01-01 00:00:01.500"
        );
        assert!(to_text(&FieldType::Int32, &[0, 1]).is_err());
        let blob = to_text(&FieldType::Bytea, &[0, 1, 255]).unwrap();
        assert_eq!(
            super::super::bytea_from_text(&blob).unwrap(),
            vec![0, 1, 255]
        );
        assert_eq!(
            super::super::bytea_from_text("a\\\\b\\001").unwrap(),
            b"a\\b\x01"
        );
        assert!(to_text(&FieldType::Vector { dim: 2 }, &[0, 3, 0, 0, 1]).is_err());
    }

    #[test]
    fn rows_split_and_wait_for_their_end() {
        let mut buf = vec![0, 2, 0, 0, 0, 1, 7, 0xff, 0xff, 0xff, 0xff];
        let (count, end) = row_end(&buf, 0).unwrap().unwrap();
        assert_eq!(count, Some(2));
        assert_eq!(end, buf.len());
        assert_eq!(field_at(&buf, 2), (Some(&[7u8][..]), 7));
        assert_eq!(field_at(&buf, 7), (None, 11));
        assert!(row_end(&buf[..5], 0).unwrap().is_none());
        assert!(row_end(&[0xff, 0xfe], 0).is_err());
        assert!(row_end(&[0, 1, 0xff, 0xff, 0xff, 0xfe], 0).is_err());
        buf.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(row_end(&buf, end).unwrap().unwrap(), (None, end + 2));
    }

    #[test]
    fn columns_decode_as_rows_arrive() {
        let kind = FieldType::Vector { dim: 2 };
        let item = Arc::new(arrow::datatypes::Field::new(
            "item",
            DataType::Float32,
            true,
        ));
        let dt = DataType::FixedSizeList(item, 2);
        let mut column = ColumnBuffer::new(&kind, &dt, 1);
        let mut v = vec![0, 2, 0, 0];
        v.extend_from_slice(&1.5f32.to_be_bytes());
        v.extend_from_slice(&(-2f32).to_be_bytes());
        column.push(Some(&v)).unwrap();
        column.push(None).unwrap();
        let mut nan = v.clone();
        nan[4..8].copy_from_slice(&f32::NAN.to_be_bytes());
        assert!(column.push(Some(&nan)).unwrap_err().contains("NaN"));
        assert!(column.push(Some(&v[..6])).is_err());
        assert_eq!(column.len(), 2);
        let Taken::Array(Ok(array)) = column.take(&kind, &dt, 1) else {
            panic!("a vector column decodes");
        };
        assert_eq!(array.len(), 2);
        assert!(array.is_null(1));
        assert!(column.is_empty());
        let mut ints = ColumnBuffer::new(&FieldType::Int32, &DataType::Int32, 1);
        ints.push(Some(&7i32.to_be_bytes())).unwrap();
        assert!(
            ints.push(Some(&7i64.to_be_bytes()))
                .unwrap_err()
                .contains("8 bytes")
        );
        let mut text = ColumnBuffer::new(&FieldType::Text, &DataType::Utf8, 1);
        text.push(Some("ok".as_bytes())).unwrap();
        assert!(text.push(Some(&[0xc3])).unwrap_err().starts_with(BAD_TEXT));
        assert!(text.push(Some(b"a\0")).unwrap_err().starts_with(BAD_TEXT));
    }
}
