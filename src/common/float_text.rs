//! PostgreSQL's text form of `float4` and `float8` (`float4out`,
//! `float8out`): the shortest exact form when `extra_float_digits` is above
//! 0 (the default, 1), in fixed point for decimal exponents from -4 up to
//! 5 (`float4`) or 14 (`float8`), else `1.5e+38`; `%g` with 6 or 15 +
//! `extra_float_digits` significant digits otherwise; `NaN`, `Infinity`,
//! `-0`. pgvector writes a vector's elements as a `float4` with the
//! default digits.

/// `{:e}` output on the stack (a float's is at most about 25 bytes).
struct Scientific {
    buf: [u8; 40],
    len: usize,
}

impl std::fmt::Write for Scientific {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Lay out the shortest round-trip digits of `value` (finite, non-zero,
/// non-negative) as PostgreSQL does. Ryu (as PostgreSQL's own float4out
/// and float8out) gives the digits; its text is `1.5e38`, `0.001` or
/// `123456.0`, read here for the digits and the first one's exponent.
fn write_shortest(out: &mut String, negative: bool, value: impl ryu::Float, limit: i32) {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value).as_bytes();
    let (mantissa, exp) = match text.iter().position(|&b| b == b'e') {
        Some(at) => (
            &text[..at],
            std::str::from_utf8(&text[at + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok())
                .unwrap_or(0),
        ),
        None => (text, 0),
    };
    let point = mantissa
        .iter()
        .position(|&b| b == b'.')
        .unwrap_or(mantissa.len());
    let mut digits = Digits::new();
    // The decimal exponent of the first significant digit.
    let mut first = None;
    for (i, &b) in mantissa.iter().enumerate() {
        if !b.is_ascii_digit() || (first.is_none() && b == b'0') {
            continue;
        }
        if first.is_none() {
            first = Some(if i < point {
                (point - i - 1) as i32
            } else {
                -((i - point) as i32)
            });
        }
        digits.push(b);
    }
    digits.trim();
    layout_into(out, negative, &digits, first.unwrap_or(0) + exp, limit);
}

/// Write `value` (finite, non-zero, non-negative) with `precision` digits
/// after the first (`%.*g`), then lay them out as PostgreSQL does.
fn write_digits(
    out: &mut String,
    negative: bool,
    value: impl std::fmt::LowerExp,
    precision: usize,
    limit: i32,
) {
    use std::fmt::Write;
    let mut sci = Scientific {
        buf: [0; 40],
        len: 0,
    };
    let written = write!(sci, "{value:.precision$e}");
    if written.is_err() {
        // Longer than any float's: the allocating path.
        let text = format!("{value:.precision$e}");
        let (digits, exp) = digits_of(text.as_bytes());
        layout_into(out, negative, &digits, exp, limit);
        return;
    }
    let (digits, exp) = digits_of(&sci.buf[..sci.len]);
    layout_into(out, negative, &digits, exp, limit);
}

/// A float's significant digits (trailing zeros trimmed) and the decimal
/// exponent of its first digit, from Rust's `{:.p$e}` (`1.5e-5` -> ("15", -5)).
fn digits_of(scientific: &[u8]) -> (Digits, i32) {
    let at = scientific
        .iter()
        .position(|&b| b == b'e')
        .unwrap_or(scientific.len());
    let mut digits = Digits::new();
    for &b in scientific[..at].iter().filter(|b| b.is_ascii_digit()) {
        digits.push(b);
    }
    digits.trim();
    let exp = std::str::from_utf8(scientific.get(at + 1..).unwrap_or_default())
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    (digits, exp)
}

/// ASCII digits, on the stack.
struct Digits {
    buf: [u8; 40],
    len: usize,
}

impl Digits {
    fn new() -> Digits {
        Digits {
            buf: [0; 40],
            len: 0,
        }
    }

    fn push(&mut self, digit: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = digit;
            self.len += 1;
        }
    }

    /// Without trailing zeros; "0" when nothing is left.
    fn trim(&mut self) {
        while self.len > 1 && self.buf[self.len - 1] == b'0' {
            self.len -= 1;
        }
        if self.len == 0 {
            self.push(b'0');
        }
    }
}

impl std::ops::Deref for Digits {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII digits are stored.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("0")
    }
}

/// `digits` (first digit at decimal exponent `exp`) as PostgreSQL writes
/// them: fixed point when `-4 <= exp < limit`, else `d.ddde+XX`.
fn layout_into(out: &mut String, negative: bool, digits: &str, exp: i32, limit: i32) {
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
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        for d in e.to_string().chars() {
            out.push(d);
        }
    }
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

/// A `float8` as PostgreSQL's float8out writes it with
/// `extra_float_digits` (above 0: the shortest exact form).
pub fn float8(value: f64, extra_float_digits: i8) -> String {
    let mut out = String::with_capacity(24);
    float8_into(&mut out, value, extra_float_digits);
    out
}

/// [`float8`], appended to `out`.
pub fn float8_into(out: &mut String, value: f64, extra_float_digits: i8) {
    if let Some(s) = special(value) {
        out.push_str(s);
        return;
    }
    if extra_float_digits > 0 {
        write_shortest(out, value < 0.0, value.abs(), 15);
    } else {
        let significant = (15 + i32::from(extra_float_digits)).max(1) as usize;
        let limit = significant as i32;
        write_digits(out, value < 0.0, value.abs(), significant - 1, limit);
    }
}

/// A `float4` as PostgreSQL's float4out writes it.
pub fn float4(value: f32, extra_float_digits: i8) -> String {
    let mut out = String::with_capacity(16);
    float4_into(&mut out, value, extra_float_digits);
    out
}

/// [`float4`], appended to `out` (no allocation but the output's).
pub fn float4_into(out: &mut String, value: f32, extra_float_digits: i8) {
    if let Some(s) = special(f64::from(value)) {
        out.push_str(s);
        return;
    }
    if extra_float_digits > 0 {
        write_shortest(out, value < 0.0, value.abs(), 6);
    } else {
        let significant = (6 + i32::from(extra_float_digits)).max(1) as usize;
        let limit = significant as i32;
        write_digits(
            out,
            value < 0.0,
            f64::from(value).abs(),
            significant - 1,
            limit,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Significant digits of a formatted number.
    fn significant(text: &str) -> usize {
        let mantissa = text.split('e').next().unwrap_or(text);
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        digits.trim_matches('0').len()
    }

    /// Every output reads back as the same float, with no more digits
    /// than Rust's own shortest formatting; where two shortest forms
    /// exist, Ryu picks PostgreSQL's (its float4out/float8out are Ryu).
    /// `text(value)` reads back as `value`, in no more digits than `{:e}`.
    fn check<F>(value: F, text: impl Fn(F) -> String)
    where
        F: Copy + PartialEq + std::fmt::Debug + std::fmt::LowerExp + std::str::FromStr,
    {
        let shown = format!("{value:e}");
        if shown.contains("inf") || shown.contains("NaN") || shown.trim_start_matches('-') == "0e0"
        {
            return;
        }
        let out = text(value);
        assert_eq!(out.parse::<F>().ok(), Some(value), "{out}");
        assert!(significant(&out) <= significant(&shown), "{out}");
    }

    #[test]
    fn shortest_digits_round_trip() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            check(f32::from_bits(state as u32), |f| float4(f, 1));
            check(f64::from_bits(state), |d| float8(d, 1));
        }
        // PostgreSQL 15's answers (`SELECT x::float4`, `x::float8`).
        // 312985.125 exactly: 312985.12 and 312985.13 both read back as it.
        let tie: f32 = "312985.125".parse().unwrap_or_default();
        assert_eq!(float4(tie, 1), "312985.12");
        assert_eq!(float4(1.5e38, 1), "1.5e+38");
        assert_eq!(float4(123456.0, 1), "123456");
        assert_eq!(float4(1e-5, 1), "1e-05");
        assert_eq!(float4(0.0001, 1), "0.0001");
        assert_eq!(float8(1e15, 1), "1e+15");
        assert_eq!(float8(123456789012345.0, 1), "123456789012345");
    }
}
