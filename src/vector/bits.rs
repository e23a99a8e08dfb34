//! Bit strings (`BIT(n)`, Milvus's binary vectors): the text form
//! `'0101'`, packing and the Hamming and Jaccard distances.
//!
//! A bit string of `n` bits is stored in `ceil(n / 8)` bytes, first bit in
//! the most significant bit of the first byte, as PostgreSQL stores `bit`;
//! the bits past `n` in the last byte are zero.

use super::VectorError;

/// The bytes that hold `bits` bits.
pub fn bytes_for(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// Parse `'0101...'` into `out` (appending); returns the number of bits.
/// With `expected`, the length must be exactly that.
pub fn parse_bits_into(
    text: &str,
    expected: Option<usize>,
    out: &mut Vec<u8>,
) -> Result<usize, VectorError> {
    let digits = text.as_bytes();
    if let Some(n) = expected
        && digits.len() != n
    {
        return Err(VectorError::BitLengthMismatch {
            expected: n,
            actual: digits.len(),
        });
    }
    let start = out.len();
    out.resize(start + bytes_for(digits.len()), 0);
    for (i, d) in digits.iter().enumerate() {
        match d {
            b'0' => {}
            b'1' => out[start + i / 8] |= 0x80 >> (i % 8),
            _ => {
                out.truncate(start);
                let c = text[i..].chars().next().unwrap_or('?');
                return Err(VectorError::InvalidBit { digit: c });
            }
        }
    }
    Ok(digits.len())
}

/// Parse a bit string: its length in bits and its bytes.
pub fn parse_bits(text: &str) -> Result<(usize, Vec<u8>), VectorError> {
    let mut out = Vec::new();
    let n = parse_bits_into(text, None, &mut out)?;
    Ok((n, out))
}

/// The text form of the first `bits` bits of `bytes`.
pub fn format_bits(bytes: &[u8], bits: usize) -> String {
    (0..bits.min(bytes.len() * 8))
        .map(|i| {
            if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                '1'
            } else {
                '0'
            }
        })
        .collect()
}

/// Bits set in `a` XOR `b`, over the shorter length.
#[inline]
pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut count = 0u32;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        count += (x ^ y).count_ones();
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        count += (x ^ y).count_ones();
    }
    count
}

/// Jaccard distance `1 - |a ∧ b| / |a ∨ b|`; 1 when no bit is set in both,
/// as in pgvector.
#[inline]
pub fn jaccard(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len().min(b.len());
    let (mut and, mut or) = (0u32, 0u32);
    let mut ca = a[..n].chunks_exact(8);
    let mut cb = b[..n].chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        and += (x & y).count_ones();
        or += (x | y).count_ones();
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        and += (x & y).count_ones();
        or += (x | y).count_ones();
    }
    if and == 0 {
        return 1.0;
    }
    1.0 - and as f64 / or as f64
}

/// The distance of a binary metric between two bit strings of equal length.
#[inline]
pub fn distance(metric: super::Metric, a: &[u8], b: &[u8]) -> f64 {
    match metric {
        super::Metric::Jaccard => jaccard(a, b),
        _ => hamming(a, b) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let (n, bytes) = parse_bits("101000001").unwrap();
        assert_eq!(n, 9);
        assert_eq!(bytes, vec![0b1010_0000, 0b1000_0000]);
        assert_eq!(format_bits(&bytes, n), "101000001");
        assert_eq!(parse_bits("").unwrap(), (0, vec![]));
        assert!(matches!(
            parse_bits("012"),
            Err(VectorError::InvalidBit { digit: '2' })
        ));
        let mut out = Vec::new();
        assert!(matches!(
            parse_bits_into("0101", Some(5), &mut out),
            Err(VectorError::BitLengthMismatch {
                expected: 5,
                actual: 4
            })
        ));
    }

    #[test]
    fn distances_match_pgvector() {
        let bits = |s: &str| parse_bits(s).unwrap().1;
        assert_eq!(hamming(&bits("111"), &bits("111")), 0);
        assert_eq!(hamming(&bits("111"), &bits("110")), 1);
        assert_eq!(hamming(&bits("111"), &bits("000")), 3);
        let long_a = bits(&"10".repeat(100));
        let long_b = bits(&"01".repeat(100));
        assert_eq!(hamming(&long_a, &long_b), 200);
        assert_eq!(jaccard(&bits("1111"), &bits("1111")), 0.0);
        assert!((jaccard(&bits("1111"), &bits("1100")) - 0.5).abs() < 1e-12);
        assert_eq!(jaccard(&bits("1111"), &bits("0000")), 1.0);
        assert_eq!(jaccard(&bits("0000"), &bits("0000")), 1.0);
    }
}
