//! PostgreSQL's binary COPY format, read: a header (signature, flags,
//! extension), then per row a field count and each field's length (-1 for
//! NULL) and bytes in the type's binary form, then a -1 trailer. Each value
//! is turned into its text form for the field's type, and the rows go the
//! way of text COPY (chunks converted to Arrow on blocking threads).
//! Vectors come in pgvector's binary form (dimension, unused, floats), bit
//! strings as PostgreSQL's (bit length, bytes).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, StringArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::DataType;
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

/// The column of `values` (binary forms of `kind`) as `data_type`
/// directly, for the types loaded most (numbers, booleans, text, vectors);
/// `None` for the others, which go through their text form. An error names
/// the row (from 0) with the bad value.
pub fn to_array(
    kind: &FieldType,
    data_type: &DataType,
    values: &RawValues,
) -> Option<Result<ArrayRef, (usize, String)>> {
    fn each<T, const N: usize>(
        values: &RawValues,
        what: &str,
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<Option<T>>, (usize, String)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.map(|b| {
                    b.try_into()
                        .map(&f)
                        .map_err(|_| (i, format!("{what} of {} bytes, expected {N}", b.len())))
                })
                .transpose()
            })
            .collect()
    }
    let array: Result<ArrayRef, (usize, String)> = match kind {
        FieldType::Int16 => each(values, "smallint", i16::from_be_bytes)
            .map(|v| Arc::new(Int16Array::from(v)) as ArrayRef),
        FieldType::Int32 => each(values, "integer", i32::from_be_bytes)
            .map(|v| Arc::new(Int32Array::from(v)) as ArrayRef),
        FieldType::Int64 => each(values, "bigint", i64::from_be_bytes)
            .map(|v| Arc::new(Int64Array::from(v)) as ArrayRef),
        FieldType::Float32 => each(values, "real", f32::from_be_bytes)
            .map(|v| Arc::new(Float32Array::from(v)) as ArrayRef),
        FieldType::Float64 => each(values, "double precision", f64::from_be_bytes)
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef),
        FieldType::Bool => each(values, "boolean", |b: [u8; 1]| b[0] != 0)
            .map(|v| Arc::new(BooleanArray::from(v)) as ArrayRef),
        FieldType::Text => values
            .iter()
            .enumerate()
            .map(|(i, v)| v.map(utf8).transpose().map_err(|m| (i, m)))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Arc::new(StringArray::from(v)) as ArrayRef),
        FieldType::Vector { dim } => {
            let DataType::FixedSizeList(item, _) = data_type else {
                return None;
            };
            let mut floats = Vec::with_capacity(values.len() * dim);
            let mut valid = Vec::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                let fail = |m: String| Some(Err((row, m)));
                match v {
                    None => {
                        floats.extend(std::iter::repeat_n(0f32, *dim));
                        valid.push(false);
                    }
                    Some(b) => {
                        let got = b
                            .get(..2)
                            .map_or(0, |h| u16::from_be_bytes([h[0], h[1]]) as usize);
                        if got != *dim {
                            return fail(format!("expected {dim} dimensions, not {got}"));
                        }
                        if b.len() != 4 + dim * 4 {
                            return fail(format!(
                                "a vector of {dim} dimensions in {} bytes, not {}",
                                b.len(),
                                4 + dim * 4
                            ));
                        }
                        if b[2..4] != [0, 0] {
                            return fail("expected unused to be 0".into());
                        }
                        let start = floats.len();
                        floats.extend(
                            b[4..]
                                .chunks_exact(4)
                                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])),
                        );
                        if floats[start..].iter().any(|f| !f.is_finite()) {
                            return fail("NaN and infinity are not allowed in vectors".into());
                        }
                        valid.push(true);
                    }
                }
            }
            let nulls = valid.iter().any(|v| !v).then(|| NullBuffer::from(valid));
            FixedSizeListArray::try_new(
                item.clone(),
                *dim as i32,
                Arc::new(Float32Array::from(floats)),
                nulls,
            )
            .map(|a| Arc::new(a) as ArrayRef)
            .map_err(|e| (0, e.to_string()))
        }
        _ => return None,
    };
    Some(array)
}

/// Text must be UTF-8 without NUL bytes (PostgreSQL's 22021).
pub const BAD_TEXT: &str = "invalid byte sequence for encoding \"UTF8\"";

fn utf8(bytes: &[u8]) -> Result<String, String> {
    if bytes.contains(&0) {
        return Err(format!("{BAD_TEXT}: 0x00"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| BAD_TEXT.into())
}

/// One row's fields from `buf` at `at`: the field count (or -1, the
/// trailer) and the byte ranges of its fields (`None` for NULL), with the
/// offset after it; `Ok(None)` if the row is not complete yet.
#[allow(clippy::type_complexity)]
pub fn next_row(
    buf: &[u8],
    at: usize,
) -> Result<Option<(Option<Vec<Option<std::ops::Range<usize>>>>, usize)>, String> {
    let Some(count) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some((None, at + 2)));
    }
    if count < 0 {
        return Err(format!("invalid field count {count}"));
    }
    let mut p = at + 2;
    let mut fields = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let Some(len) = buf.get(p..p + 4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        p += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| format!("invalid field length {len}"))?;
        if buf.len() - p < len {
            return Ok(None);
        }
        fields.push(Some(p..p + len));
        p += len;
    }
    Ok(Some((Some(fields), p)))
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
        let (fields, end) = next_row(&buf, 0).unwrap().unwrap();
        assert_eq!(fields.unwrap(), vec![Some(6..7), None]);
        assert_eq!(end, buf.len());
        assert!(next_row(&buf[..5], 0).unwrap().is_none());
        buf.extend_from_slice(&[0xff, 0xff]);
        assert!(next_row(&buf, end).unwrap().unwrap().0.is_none());
    }
}
