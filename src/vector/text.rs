//! The pgvector text form of a vector: `[1,2.5,-3]`.

use super::VectorError;

/// Parse `[1,2,3]` (whitespace allowed) into its elements.
pub fn parse_vector(text: &str) -> Result<Vec<f32>, VectorError> {
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
    let mut out = Vec::with_capacity(inner.len() / 4 + 1);
    for part in inner.split(',') {
        let part = part.trim();
        let value: f32 = part
            .parse()
            .map_err(|_| invalid(&format!("\"{part}\" is not a number")))?;
        if !value.is_finite() {
            return Err(VectorError::NotFinite);
        }
        out.push(value);
    }
    Ok(out)
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
