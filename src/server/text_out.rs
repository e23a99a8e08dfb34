//! PostgreSQL's text output for the types arrow-pg words differently:
//! `float4`/`float8` (`2`, `1e+20`, `Infinity`, `-0`, not `2.0`, `1e20`,
//! `inf`), their arrays, `timestamp`/`timestamptz`/`time` (fractions
//! without trailing zeros, timestamptz with its UTC offset). Text-format
//! columns of these types are turned into their text before arrow-pg
//! encodes the batch; their fields keep their type.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use chrono::{FixedOffset, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike};

pub use quiver_common::float_text::{float4, float8};

/// Seconds' fraction as PostgreSQL writes it: up to microseconds, no
/// trailing zeros, nothing when whole.
fn push_fraction(out: &mut String, nanos: u32) {
    let micros = (nanos % 1_000_000_000) / 1_000;
    if micros != 0 {
        let f = format!("{micros:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
}

/// A `time` value (`03:04:05.5`).
pub fn time(t: NaiveTime) -> String {
    let mut out = t.format("%H:%M:%S").to_string();
    push_fraction(&mut out, t.nanosecond());
    out
}

/// A `timestamp` (`offset` none) or `timestamptz` shown at `offset`, in
/// the ISO date style: `2024-01-02 03:04:05.5+00`.
pub fn timestamp(local: NaiveDateTime, offset: Option<FixedOffset>) -> String {
    use chrono::Datelike;
    let bc = local.year() <= 0;
    let mut out = if bc {
        format!("{:04}-{}", 1 - local.year(), local.format("%m-%d %H:%M:%S"))
    } else {
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    };
    push_fraction(&mut out, local.nanosecond());
    if let Some(offset) = offset {
        let secs = offset.local_minus_utc();
        let a = secs.abs();
        out.push(if secs < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", a / 3600));
        if a % 3600 != 0 {
            out.push_str(&format!(":{:02}", a % 3600 / 60));
            if a % 60 != 0 {
                out.push_str(&format!(":{:02}", a % 60));
            }
        }
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

fn strings<A: Array + ?Sized>(
    array: &A,
    mut text: impl FnMut(usize) -> Option<String>,
) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(array.len(), array.len() * 8);
    for r in 0..array.len() {
        match array.is_valid(r).then(|| text(r)).flatten() {
            Some(s) => b.append_value(s),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// A float list with its items as PostgreSQL writes them (arrow-pg then
/// writes the array literal, `{1.5,2,NULL}`).
fn float_list(array: &ArrayRef, extra: i8) -> Option<ArrayRef> {
    use arrow::array::{FixedSizeListArray, LargeListArray, ListArray};
    use arrow::datatypes::Field;
    let text = |values: &ArrayRef| text_column(values, extra, false);
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    Some(match array.data_type() {
        DataType::List(_) => {
            let a = array.as_list::<i32>();
            Arc::new(
                ListArray::try_new(
                    item,
                    a.offsets().clone(),
                    text(a.values())?,
                    a.nulls().cloned(),
                )
                .ok()?,
            )
        }
        DataType::LargeList(_) => {
            let a = array.as_list::<i64>();
            Arc::new(
                LargeListArray::try_new(
                    item,
                    a.offsets().clone(),
                    text(a.values())?,
                    a.nulls().cloned(),
                )
                .ok()?,
            )
        }
        DataType::FixedSizeList(_, size) => {
            let a = array.as_fixed_size_list();
            Arc::new(
                FixedSizeListArray::try_new(item, *size, text(a.values())?, a.nulls().cloned())
                    .ok()?,
            )
        }
        _ => return None,
    })
}

/// The text of `array` as PostgreSQL writes it, where arrow-pg would write
/// it otherwise; `None` leaves the column to arrow-pg. Vector columns
/// (`vector_marked`) are written as pgvector writes them.
pub fn text_column(array: &ArrayRef, extra: i8, vector_marked: bool) -> Option<ArrayRef> {
    use arrow::array::timezone::Tz;
    Some(match array.data_type() {
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            strings(a, |r| Some(float8(a.value(r), extra)))
        }
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            strings(a, |r| Some(float4(a.value(r), extra)))
        }
        DataType::Timestamp(unit, tz) => {
            let tz: Option<Tz> = match tz {
                Some(name) => Some(name.parse().ok()?),
                None => None,
            };
            let nanos = |r: usize| -> i64 {
                match unit {
                    TimeUnit::Second => array
                        .as_primitive::<TimestampSecondType>()
                        .value(r)
                        .saturating_mul(1_000_000_000),
                    TimeUnit::Millisecond => array
                        .as_primitive::<TimestampMillisecondType>()
                        .value(r)
                        .saturating_mul(1_000_000),
                    TimeUnit::Microsecond => array
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(r)
                        .saturating_mul(1_000),
                    TimeUnit::Nanosecond => {
                        array.as_primitive::<TimestampNanosecondType>().value(r)
                    }
                }
            };
            strings(array.as_ref(), |r| {
                let n = nanos(r);
                let utc = chrono::DateTime::from_timestamp(
                    n.div_euclid(1_000_000_000),
                    n.rem_euclid(1_000_000_000) as u32,
                )?
                .naive_utc();
                match tz {
                    None => Some(timestamp(utc, None)),
                    Some(tz) => {
                        let at = tz.from_utc_datetime(&utc);
                        Some(timestamp(at.naive_local(), Some(at.offset().fix())))
                    }
                }
            })
        }
        DataType::Time64(unit) => strings(array.as_ref(), |r| {
            let nanos = match unit {
                TimeUnit::Microsecond => array
                    .as_primitive::<Time64MicrosecondType>()
                    .value(r)
                    .checked_mul(1_000)?,
                _ => array.as_primitive::<Time64NanosecondType>().value(r),
            };
            let t = NaiveTime::from_num_seconds_from_midnight_opt(
                (nanos / 1_000_000_000) as u32,
                (nanos % 1_000_000_000) as u32,
            )?;
            Some(time(t))
        }),
        DataType::Time32(unit) => strings(array.as_ref(), |r| {
            let millis = match unit {
                TimeUnit::Second => {
                    i64::from(array.as_primitive::<Time32SecondType>().value(r)) * 1000
                }
                _ => i64::from(array.as_primitive::<Time32MillisecondType>().value(r)),
            };
            let t = NaiveTime::from_num_seconds_from_midnight_opt(
                (millis / 1000) as u32,
                (millis % 1000 * 1_000_000) as u32,
            )?;
            Some(time(t))
        }),
        // A vector: pgvector's `[1,1.5e+38]`, its elements as float4out
        // writes them with the default digits.
        DataType::List(item) | DataType::FixedSizeList(item, _)
            if vector_marked && item.data_type() == &DataType::Float32 =>
        {
            let column = quiver_vector::column::VectorColumn::try_from_array(array).ok()?;
            let mut b = StringBuilder::with_capacity(column.len(), column.len() * 16);
            for r in 0..column.len() {
                b.append_option(column.get(r).map(quiver_vector::text::format_vector));
            }
            Arc::new(b.finish())
        }
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _)
            if !vector_marked
                && matches!(item.data_type(), DataType::Float32 | DataType::Float64) =>
        {
            float_list(array, extra)?
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each as PostgreSQL 15 printed it (`SELECT x::float8`, default
    /// extra_float_digits 1).
    #[test]
    fn floats_as_postgres_writes_them() {
        let cases: [(f64, &str); 15] = [
            (2.0, "2"),
            (1.5, "1.5"),
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (1.0 / 3.0, "0.3333333333333333"),
            (-123.456, "-123.456"),
            (1.2345e-300, "1.2345e-300"),
            (123456789012345.6, "123456789012345.6"),
        ];
        for (v, want) in cases {
            assert_eq!(float8(v, 1), want, "{v}");
        }
        let cases: [(f32, &str); 6] = [
            (1_000_000.0, "1e+06"),
            (100_000.0, "100000"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (f32::NEG_INFINITY, "-Infinity"),
            (123456.7, "123456.7"),
        ];
        for (v, want) in cases {
            assert_eq!(float4(v, 1), want, "{v}");
        }
        // extra_float_digits 0 and below: %.15g / %.6g and fewer.
        assert_eq!(float8(1.0 / 3.0, 0), "0.333333333333333");
        assert_eq!(float8(0.1 + 0.2, 0), "0.3");
        assert_eq!(float8(1e20, 0), "1e+20");
        assert_eq!(float4(1.0 / 3.0, 0), "0.333333");
        assert_eq!(float8(123456.0, -10), "1.2346e+05");
    }

    #[test]
    fn times_as_postgres_writes_them() {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(
            timestamp(at("2024-01-02 03:04:05.5"), None),
            "2024-01-02 03:04:05.5"
        );
        assert_eq!(
            timestamp(at("2024-01-02 03:04:05.0"), None),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            timestamp(at("2024-01-02 03:04:05.000120"), FixedOffset::east_opt(0)),
            "2024-01-02 03:04:05.00012+00"
        );
        assert_eq!(
            timestamp(at("2024-01-02 03:04:05.0"), FixedOffset::east_opt(19800)),
            "2024-01-02 03:04:05+05:30"
        );
        assert_eq!(
            timestamp(at("2024-01-02 03:04:05.0"), FixedOffset::west_opt(8 * 3600)),
            "2024-01-02 03:04:05-08"
        );
        assert_eq!(
            time(NaiveTime::from_hms_micro_opt(3, 4, 5, 250_000).unwrap()),
            "03:04:05.25"
        );
    }
}
