//! What of an outbound call may be shown in logs and reasons: a URL without its credentials,
//! query or fragment ([`redact_url`]), and text from outside (an upstream's error body, an
//! error message) with its control characters and terminal escape sequences removed and its
//! length bounded ([`sanitize_text`]), so that no upstream can forge a log line or smuggle
//! escape codes into an operator's terminal.

/// How much of an upstream's answer (its body, sanitized) a failure's reason keeps, in bytes.
pub const MAX_BODY_SNIPPET_BYTES: usize = 256;

/// `raw` without credentials (`user:password@`), query and fragment: `scheme://host[:port]/path`.
/// A URL that does not parse is shown as `(not a URL)`, since where its secrets are cannot be
/// known.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            // Cannot fail for a URL with a host; a URL without one has no credentials.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            sanitize_text(url.as_str(), usize::MAX)
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Whether a character is shown as it is: not a control character (C0, DEL, C1), nor one that
/// changes how the text around it is displayed (line and paragraph separators, bidirectional
/// overrides and isolates, zero-width characters, the byte-order mark).
fn shown(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'))
}

/// `text` safe for a log line or a reason: terminal escape sequences (`ESC [ ... m`, `ESC ]
/// ... BEL`, ...) removed, every other control or display-changing character (newline,
/// carriage return, tab, NUL, DEL, C1 controls, bidirectional overrides, ...) and run of
/// whitespace turned into one space, the ends trimmed, and the result cut to at most `limit`
/// bytes at a character boundary, ending in `…` when cut.
pub fn sanitize_text(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit.saturating_add(4)));
    let mut chars = text.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        if c == '\u{1b}' || c == '\u{9b}' {
            skip_escape(c, &mut chars);
            continue;
        }
        if !shown(c) || c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        if out.len() > limit {
            break;
        }
    }
    crate::limits::truncate_reason(&out, limit)
}

/// Skips the rest of an escape sequence that started with `first` (ESC or the C1 CSI).
fn skip_escape(first: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let kind = if first == '\u{9b}' {
        '['
    } else {
        match chars.next() {
            Some(k) => k,
            None => return,
        }
    };
    match kind {
        // CSI: parameters and intermediates, then one final byte (@ to ~).
        '[' => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        // OSC, DCS, SOS, PM, APC: a string ended by BEL or ESC \.
        ']' | 'P' | 'X' | '^' | '_' => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        // ESC with intermediates (ESC ( B, ...): up to the final byte.
        ' '..='/' => {
            for c in chars.by_ref() {
                if ('0'..='~').contains(&c) {
                    break;
                }
            }
        }
        // A two-character sequence (ESC c, ESC 7, ...): already consumed.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_query_and_fragment() {
        for (raw, shown) in [
            (
                "https://user:pw@api.example:8443/v1/x?token=s3cret#frag",
                "https://api.example:8443/v1/x",
            ),
            ("https://api.example/v1?x=1", "https://api.example/v1"),
            ("http://[::1]:9/a", "http://[::1]:9/a"),
            ("https://tok@example.com", "https://example.com/"),
            ("not a url ?token=s3cret", "(not a URL)"),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn control_characters_and_escapes_are_removed() {
        let table = [
            ("plain text", "plain text"),
            (
                "oops\n2024-01-01T00:00:00Z INFO forged line",
                "oops 2024-01-01T00:00:00Z INFO forged line",
            ),
            ("\x1b[31mred\x1b[0m and \x1b[1;4mbold\x1b[m", "red and bold"),
            ("title\x1b]0;pwned\x07 after", "title after"),
            ("title\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "titlelink"),
            ("csi\u{9b}2Jcleared", "csicleared"),
            ("reset\x1bcdone", "resetdone"),
            ("charset\x1b(Bok", "charsetok"),
            ("a\r\nb\tc\0d\x7fe\u{85}f", "a b c d e f"),
            (
                "bidi \u{202e}evil\u{202c} \u{2028}x\u{200b}y",
                "bidi evil x y",
            ),
            ("  \n trimmed \n ", "trimmed"),
            ("dangling\x1b", "dangling"),
            ("dangling csi\x1b[31", "dangling csi"),
        ];
        for (raw, clean) in table {
            assert_eq!(sanitize_text(raw, 1000), clean, "{raw:?}");
        }
    }

    #[test]
    fn sanitized_text_is_bounded() {
        let cut = sanitize_text(&"é".repeat(1000), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert_eq!(sanitize_text("short", 10), "short");
        let long = sanitize_text(&"a\n".repeat(10_000), MAX_BODY_SNIPPET_BYTES);
        assert!(long.len() <= MAX_BODY_SNIPPET_BYTES, "{}", long.len());
        assert!(!long.contains('\n'));
    }
}
