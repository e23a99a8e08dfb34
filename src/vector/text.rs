//! The pgvector text form of a vector: `[1,2.5,-3]`.

use super::VectorError;

/// Parse `[1,2,3]` (whitespace allowed) into its elements.
pub fn parse_vector(text: &str) -> Result<Vec<f32>, VectorError> {
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    parse_vector_into(text, &mut out)?;
    Ok(out)
}

/// [`parse_vector`], appending the elements to `out`; on error `out` may
/// hold some of them.
pub fn parse_vector_into(text: &str, out: &mut Vec<f32>) -> Result<(), VectorError> {
    let invalid = |reason: &str| VectorError::InvalidText {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| invalid("vector contents must start with \"[\" and end with \"]\""))?;
    if inner.trim().is_empty() {
        return Err(VectorError::Empty);
    }
    // A byte loop: elements are short, so one memchr call each costs more.
    let bytes = inner.as_bytes();
    let mut start = 0;
    for end in (0..=bytes.len()).filter(|&i| i == bytes.len() || bytes[i] == b',') {
        let mut part = &inner[start..end];
        start = end + 1;
        if part.starts_with(char::is_whitespace) || part.ends_with(char::is_whitespace) {
            part = part.trim();
        }
        let value =
            parse_element(part).ok_or_else(|| invalid(&format!("\"{part}\" is not a number")))?;
        if !value.is_finite() {
            return Err(VectorError::NotFinite);
        }
        out.push(value);
    }
    Ok(())
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// One element's text (`255`, `-0.125`, `1.5e-3`) as the nearest `f32`.
///
/// Decimals of up to 15 digits with a power of ten up to 22 either way
/// (what clients send: numpy's, the drivers', pgvector's own output) are
/// read in a few nanoseconds: the digits as an integer, one correctly
/// rounded multiplication or division in double precision (exact operands),
/// then rounded to `f32`. That second rounding could differ from rounding
/// the decimal directly only when the double lands exactly halfway between
/// two `f32`s; those, and every other form, go to `str::parse`.
#[inline]
fn parse_element(part: &str) -> Option<f32> {
    let b = part.as_bytes();
    let (negative, rest) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa: u64 = 0;
    let mut digits = 0u32;
    let mut scale: i32 = 0;
    let mut i = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        mantissa = mantissa * 10 + u64::from(rest[i] - b'0');
        digits += 1;
        i += 1;
        if digits > 15 {
            return part.parse().ok();
        }
    }
    if i < rest.len() && rest[i] == b'.' {
        i += 1;
        while i < rest.len() && rest[i].is_ascii_digit() {
            mantissa = mantissa * 10 + u64::from(rest[i] - b'0');
            digits += 1;
            scale -= 1;
            i += 1;
            if digits > 15 {
                return part.parse().ok();
            }
        }
    }
    if digits == 0 {
        return part.parse().ok();
    }
    if i < rest.len() && (rest[i] == b'e' || rest[i] == b'E') {
        i += 1;
        let (exp_negative, start) = match rest.get(i) {
            Some(b'-') => (true, i + 1),
            Some(b'+') => (false, i + 1),
            _ => (false, i),
        };
        let mut exp: i32 = 0;
        let mut j = start;
        while j < rest.len() && rest[j].is_ascii_digit() && exp < 1000 {
            exp = exp * 10 + i32::from(rest[j] - b'0');
            j += 1;
        }
        if j == start || j < rest.len() {
            return part.parse().ok();
        }
        scale += if exp_negative { -exp } else { exp };
        i = j;
    }
    if i != rest.len() || !(-22..=22).contains(&scale) {
        return part.parse().ok();
    }
    let m = mantissa as f64;
    let value = if scale < 0 {
        m / POW10[(-scale) as usize]
    } else {
        m * POW10[scale as usize]
    };
    // Exactly halfway between two f32s (the 29 bits a double has beyond
    // an f32's mantissa are 100...0), or outside the normal f32 range:
    // let the exact parser decide.
    let bits = value.to_bits();
    let halfway = bits & ((1 << 29) - 1) == 1 << 28;
    if halfway || (value != 0.0 && !(1.2e-38..3.4e38).contains(&value)) {
        return part.parse().ok();
    }
    let value = value as f32;
    Some(if negative { -value } else { value })
}

/// Format elements in pgvector's text form: each as PostgreSQL writes a
/// `real` (`1`, `0.1`, `1e+06`, `1.5e+38`).
pub fn format_vector(values: &[f32]) -> String {
    let mut s = String::with_capacity(values.len() * 8 + 2);
    s.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        quiver_common::float_text::float4_into(&mut s, *v, 1);
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_vector("[1, 2.5,-3]").unwrap(), vec![1.0, 2.5, -3.0]);
        assert_eq!(format_vector(&[1.0, 2.5, -3.0]), "[1,2.5,-3]");
        assert_eq!(
            format_vector(&[1.5e38, 1e6, 123456.0, 1e-5]),
            "[1.5e+38,1e+06,123456,1e-05]"
        );
        assert!(parse_vector("1,2").is_err());
        assert!(parse_vector("[]").is_err());
        assert!(parse_vector("[1,x]").is_err());
        assert!(parse_vector("[1,NaN]").is_err());
    }

    /// Every form the fast path reads gives what `str::parse` gives.
    #[test]
    fn elements_read_as_the_exact_parser_reads_them() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "255",
            "+3",
            "0.1",
            "-0.125",
            "1.5e-3",
            "1e38",
            "3.4028235e38",
            "1e-38",
            "1.17549435e-38",
            "123456789012345",
            "0.000000000000001",
            "1.",
            ".5",
            "5e",
            "1e+",
            "--1",
            "1.2.3",
            "",
            ".",
            "1e999",
            "0.3333333333333333333",
            "16777217",
            "1e22",
            "9007199254740993",
            "0x10",
            "1_0",
            "1e-45",
            "inf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Pseudo-random decimals of every length and scale.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = 1 + (x % 16) as usize;
            let mantissa = x % 10u64.pow(digits as u32);
            let point = (x >> 20) as usize % (digits + 1);
            let mut t = format!("{mantissa:0digits$}");
            t.insert(point, '.');
            if x & (1 << 40) != 0 {
                t = format!("{t}e{}", (x >> 41) as i32 % 25 - 12);
            }
            if x & (1 << 60) != 0 {
                t.insert(0, '-');
            }
            texts.push(t);
        }
        for t in texts {
            let fast = parse_element(&t);
            let exact = t.parse::<f32>().ok();
            assert_eq!(
                fast.map(f32::to_bits),
                exact.map(f32::to_bits),
                "{t}: {fast:?} vs {exact:?}"
            );
        }
    }
}
