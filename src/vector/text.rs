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
        let value: f32 = part
            .parse()
            .map_err(|_| invalid(&format!("\"{part}\" is not a number")))?;
        if !value.is_finite() {
            return Err(VectorError::NotFinite);
        }
        out.push(value);
    }
    Ok(())
}

/// Format elements in pgvector's text form, shortest round-trip float text.
pub fn format_vector(values: &[f32]) -> String {
    let mut s = String::with_capacity(values.len() * 8 + 2);
    s.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&v.to_string());
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
        assert!(parse_vector("1,2").is_err());
        assert!(parse_vector("[]").is_err());
        assert!(parse_vector("[1,x]").is_err());
        assert!(parse_vector("[1,NaN]").is_err());
    }
}
