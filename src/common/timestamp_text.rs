//! PostgreSQL reads a timestamp written without seconds
//! (`2024-01-01 10:00`); Arrow's parser refuses it ("error parsing time").

/// `text` with `:00` seconds added (and a one-digit hour made two) when it
/// is a date, a space or `T`, and an `H:MM` or `HH:MM` time with no
/// seconds (an offset or zone after it kept); `None` for anything else.
pub fn with_seconds(text: &str) -> Option<String> {
    let t = text.trim();
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10))
    {
        return None;
    }
    if !matches!(b.get(10), Some(b' ' | b'T')) {
        return None;
    }
    // The hour has one or two digits.
    let hour_end = if digits(11..13) {
        13
    } else if digits(11..12) {
        12
    } else {
        return None;
    };
    if b.get(hour_end) != Some(&b':') || !digits(hour_end + 1..hour_end + 3) {
        return None;
    }
    let minutes_end = hour_end + 3;
    // Arrow also wants two digits of hour.
    let hour = if hour_end == 12 { "0" } else { "" };
    let (date, time) = (&t[..11], &t[11..minutes_end]);
    match b.get(minutes_end) {
        None => Some(format!("{date}{hour}{time}:00")),
        Some(b'+' | b'-' | b'Z' | b' ') => {
            Some(format!("{date}{hour}{time}:00{}", &t[minutes_end..]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::with_seconds;

    #[test]
    fn minutes_get_seconds() {
        assert_eq!(
            with_seconds("2024-01-01 10:00").as_deref(),
            Some("2024-01-01 10:00:00")
        );
        assert_eq!(
            with_seconds("2024-01-01T9:05").as_deref(),
            Some("2024-01-01T09:05:00")
        );
        assert_eq!(
            with_seconds("2024-01-01 10:00+02").as_deref(),
            Some("2024-01-01 10:00:00+02")
        );
        assert_eq!(with_seconds("2024-01-01 10:00:30"), None);
        assert_eq!(with_seconds("2024-01-01"), None);
        assert_eq!(with_seconds("10:00"), None);
        assert_eq!(with_seconds("2024-01-01 10:0"), None);
    }
}
