//! A caller's W3C trace context (`traceparent`, `tracestate`), kept with a wait so its outbound
//! call, its decision and its resume continue the registration's trace. Only well-formed
//! values are kept (the W3C rule: an invalid `traceparent` is ignored, never an error), and
//! `tracestate` is bounded, so a caller cannot make the service send or store arbitrary text.

use serde::{Deserialize, Serialize};

/// The longest `tracestate` kept (the W3C limit for propagation is 512 bytes).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// A valid W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
    pub traceparent: String,
    /// The vendors' state that travels with it; empty when none (or when it was invalid).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
}

impl TraceContext {
    /// The context of a `traceparent` (and `tracestate`) as received; `None` when the
    /// `traceparent` is not a valid version-00 (or later, read as 00) value. An invalid
    /// `tracestate` is dropped, the `traceparent` kept.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = traceparent.trim();
        let mut parts = traceparent.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex(flags, 2)
            // Version 00 has exactly four fields; later versions may append more.
            && (version != "00" || parts.next().is_none());
        if !valid {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| {
                s.len() <= MAX_TRACESTATE_BYTES && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .unwrap_or_default();
        Some(Self {
            traceparent: format!("00-{trace_id}-{parent_id}-{flags}"),
            tracestate: tracestate.to_owned(),
        })
    }

    /// The trace id (32 lowercase hex digits).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_context_is_kept_and_an_invalid_one_ignored() {
        let cx = TraceContext::parse(VALID, Some("vendor=a,other=b")).unwrap();
        assert_eq!(cx.traceparent, VALID);
        assert_eq!(cx.tracestate, "vendor=a,other=b");
        assert_eq!(cx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
        // A later version with more fields is read as version 00.
        let later = TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
            None,
        )
        .unwrap();
        assert_eq!(later.traceparent, VALID);
    }

    #[test]
    fn an_invalid_or_oversized_tracestate_is_dropped() {
        let long = "a=".to_owned() + &"b".repeat(MAX_TRACESTATE_BYTES);
        for bad in [long.as_str(), "a=b\nc=d", "a=\u{e9}"] {
            let cx = TraceContext::parse(VALID, Some(bad)).unwrap();
            assert_eq!(cx.tracestate, "", "{bad:?}");
        }
    }
}
