//! PostgreSQL's `uuid` type. A uuid is stored and computed on as its
//! canonical text (`a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`: lower-case hex,
//! hyphens after the 8th, 12th, 16th and 20th digit) in an Arrow `Utf8`
//! field marked with [`UUID_METADATA_KEY`]. The canonical text sorts as
//! the 16 bytes do, so comparisons and ORDER BY on it are PostgreSQL's.
//! Every value is brought to that form where it enters: on write, in
//! parameters, casts and literals compared with a uuid.

use std::collections::HashMap;

/// The field metadata key that marks a `Utf8` field as a uuid.
pub const UUID_METADATA_KEY: &str = "quiver.uuid";

/// PostgreSQL's oid of `uuid`.
pub const UUID_TYPE_OID: u32 = 2950;

/// The metadata of a uuid field.
pub fn uuid_metadata() -> HashMap<String, String> {
    HashMap::from([(UUID_METADATA_KEY.to_string(), String::new())])
}

/// Whether a field's metadata marks it as a uuid.
pub fn is_uuid(metadata: &HashMap<String, String>) -> bool {
    metadata.contains_key(UUID_METADATA_KEY)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The 16 bytes of `text` in any form PostgreSQL's `uuid_in` takes: 32
/// hex digits in either case, optionally in braces, with a hyphen allowed
/// after any group of four digits (`a0eebc999c0b4ef8bb6d6bb9bd380a11`,
/// `{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}`, `a0ee-bc99-...`).
pub fn parse(text: &str) -> Option<[u8; 16]> {
    let mut s = text.as_bytes();
    let braces = s.first() == Some(&b'{');
    if braces {
        s = &s[1..];
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let (hi, lo) = (hex(*s.first()?)?, hex(*s.get(1)?)?);
        *byte = hi << 4 | lo;
        s = &s[2..];
        if s.first() == Some(&b'-') && i % 2 == 1 && i < 15 {
            s = &s[1..];
        }
    }
    if braces {
        if s.first() != Some(&b'}') {
            return None;
        }
        s = &s[1..];
    }
    s.is_empty().then_some(out)
}

/// The canonical text of 16 bytes.
pub fn format(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Whether `text` is already in the canonical form.
pub fn is_canonical(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => matches!(c, b'0'..=b'9' | b'a'..=b'f'),
        })
}

/// The canonical text of a uuid written as `text`, or `None` when it is
/// not a uuid.
pub fn canonical(text: &str) -> Option<String> {
    if is_canonical(text) {
        return Some(text.to_string());
    }
    parse(text).map(|b| format(&b))
}

/// The 16 bytes of a canonical (or any accepted) uuid text.
pub fn to_bytes(text: &str) -> Option<[u8; 16]> {
    parse(text)
}

/// PostgreSQL's message for text that is not a uuid (SQLSTATE 22P02).
pub fn invalid_message(text: &str) -> String {
    format!("invalid input syntax for type uuid: \"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANON: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";

    #[test]
    fn takes_the_forms_postgresql_takes() {
        for text in [
            CANON,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(canonical(text).as_deref(), Some(CANON), "{text}");
        }
    }

    #[test]
    fn refuses_what_postgresql_refuses() {
        for text in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(canonical(text), None, "{text:?}");
        }
    }

    #[test]
    fn canonical_text_sorts_as_the_bytes() {
        let a = format(&[0x0f; 16]);
        let b = format(&[0xa0; 16]);
        assert!(a < b);
        assert!(is_canonical(&a) && is_canonical(&b));
        assert_eq!(to_bytes(&b), Some([0xa0; 16]));
    }
}
