//! Free text as the databases can store it. PostgreSQL refuses the NUL character in `text`
//! ("invalid byte sequence for encoding UTF8: 0x00"), and a Kafka record, a header, a caller's
//! idempotency key or an error message may hold one; every free-text column goes through
//! [`stored`] on its way in and [`read`] on its way out (on both backends, so they agree).
//!
//! The encoding is lossless and leaves every other string as it is: a string holding a NUL,
//! or starting with U+FFFF (a Unicode noncharacter, "for internal use"), is stored as U+FFFF
//! followed by the string with `\` written `\\` and NUL written `\0`. Equal strings encode
//! equally, so lookups and uniqueness rules by encoded value still hold.

use std::borrow::Cow;

/// Marks an encoded string.
const MARK: char = '\u{FFFF}';

/// `text` as stored.
pub(crate) fn stored(text: &str) -> Cow<'_, str> {
    if !text.contains('\0') && !text.starts_with(MARK) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    out.push(MARK);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` as stored, owned (for the column setters).
pub(crate) fn stored_owned(text: &str) -> String {
    stored(text).into_owned()
}

/// An optional text as stored.
pub(crate) fn stored_opt(text: Option<&str>) -> Option<String> {
    text.map(stored_owned)
}

/// The text a stored value holds.
pub(crate) fn read(stored: String) -> String {
    let Some(escaped) = stored.strip_prefix(MARK) else {
        return stored;
    };
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An optional stored value's text.
pub(crate) fn read_opt(stored: Option<String>) -> Option<String> {
    stored.map(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_round_trips_and_stored_text_holds_no_nul() {
        for text in [
            "",
            "plain",
            "abc\0def",
            "\0",
            "back\\slash\0",
            "\\0 literally",
            "\u{FFFF}starts with the mark",
            "\u{FFFF}",
            "ends with a backslash\\",
            "a\\\0b",
        ] {
            let s = stored(text);
            assert!(!s.contains('\0'), "{text:?} stored as {s:?}");
            assert_eq!(read(s.into_owned()), text);
        }
    }

    #[test]
    fn strings_without_nul_or_the_mark_are_stored_as_they_are() {
        for text in ["plain", "with \\0 escapes", "ünïcödé", "x\u{FFFF}"] {
            assert!(matches!(stored(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn distinct_strings_are_stored_distinctly() {
        let texts = ["a\0", "a\\0", "\u{FFFF}a\\0", "a", "\u{FFFF}a"];
        let stored: std::collections::HashSet<String> =
            texts.iter().map(|t| stored_owned(t)).collect();
        assert_eq!(stored.len(), texts.len());
    }
}
