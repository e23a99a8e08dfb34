//! PostgreSQL's text form of `float4` and `float8` (`float4out`,
//! `float8out`): the shortest exact form when `extra_float_digits` is above
//! 0 (the default, 1), in fixed point for decimal exponents from -4 up to
//! 5 (`float4`) or 14 (`float8`), else `1.5e+38`; `%g` with 6 or 15 +
//! `extra_float_digits` significant digits otherwise; `NaN`, `Infinity`,
//! `-0`. pgvector writes a vector's elements as a `float4` with the
//! default digits.

/// A float's shortest round-trip digits and the decimal exponent of its
/// first digit, from Rust's `{:e}` (`1.5e-5` -> ("15", -5)).
fn digits_of(scientific: &str) -> (String, i32) {
    let (mantissa, exp) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (digits.to_string(), exp.parse().unwrap_or(0))
}

/// `digits` (first digit at decimal exponent `exp`) as PostgreSQL writes
/// them: fixed point when `-4 <= exp < limit`, else `d.ddde+XX`.
fn layout(negative: bool, digits: &str, exp: i32, limit: i32) -> String {
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..limit).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(digits);
        } else {
            let int = exp as usize + 1;
            if digits.len() <= int {
                out.push_str(digits);
                out.extend(std::iter::repeat_n('0', int - digits.len()));
            } else {
                out.push_str(&digits[..int]);
                out.push('.');
                out.push_str(&digits[int..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

/// What PostgreSQL writes for NaN, the infinities and zeros; `None` for
/// other values.
fn special(value: f64) -> Option<&'static str> {
    if value.is_nan() {
        Some("NaN")
    } else if value.is_infinite() {
        Some(if value > 0.0 { "Infinity" } else { "-Infinity" })
    } else if value == 0.0 {
        Some(if value.is_sign_negative() { "-0" } else { "0" })
    } else {
        None
    }
}

/// `value` with `significant` digits, as C's `%.*g` writes it.
fn with_precision(value: f64, significant: usize) -> String {
    let significant = significant.max(1);
    let (digits, exp) = digits_of(&format!("{:.*e}", significant - 1, value.abs()));
    layout(value < 0.0, &digits, exp, significant as i32)
}

/// A `float8` as PostgreSQL's float8out writes it with
/// `extra_float_digits` (above 0: the shortest exact form).
pub fn float8(value: f64, extra_float_digits: i8) -> String {
    if let Some(s) = special(value) {
        return s.to_string();
    }
    if extra_float_digits > 0 {
        let (digits, exp) = digits_of(&format!("{:e}", value.abs()));
        return layout(value < 0.0, &digits, exp, 15);
    }
    with_precision(value, (15 + i32::from(extra_float_digits)).max(1) as usize)
}

/// A `float4` as PostgreSQL's float4out writes it.
pub fn float4(value: f32, extra_float_digits: i8) -> String {
    if let Some(s) = special(f64::from(value)) {
        return s.to_string();
    }
    if extra_float_digits > 0 {
        let (digits, exp) = digits_of(&format!("{:e}", value.abs()));
        return layout(value < 0.0, &digits, exp, 6);
    }
    with_precision(
        f64::from(value),
        (6 + i32::from(extra_float_digits)).max(1) as usize,
    )
}
