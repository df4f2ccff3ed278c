//! W3C Trace Context: read the agent's `traceparent` / `tracestate`, and write the
//! `traceparent` that names our span on the upstream request.
//!
//! Parsing follows the W3C Trace Context level 1 rules for version `00` and is lenient for
//! higher versions as the spec asks (read the first four fields, ignore the rest). Anything
//! malformed is ignored: the call then starts a new trace, it never fails.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

/// `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// `traceparent` as a parsed header name: a lookup or insert by `&str` parses it every call.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
/// `tracestate` as a parsed header name.
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);

/// The remote parent named by an incoming `traceparent` (with its `tracestate`).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteParent {
    /// Trace the agent is in.
    pub trace_id: TraceId,
    /// The agent's span that made the request.
    pub span_id: SpanId,
    /// Sampled flag and the other flags as sent.
    pub flags: TraceFlags,
    /// Vendor state, forwarded as is.
    pub state: TraceState,
}

/// The parent of the agent's request, if it sent a valid `traceparent`.
pub fn extract(headers: &HeaderMap) -> Option<RemoteParent> {
    let tp = headers.get(TRACEPARENT_HEADER)?.to_str().ok()?;
    let state = headers.get(TRACESTATE_HEADER).and_then(|v| v.to_str().ok());
    from_values(tp, state)
}

/// The parent named by a `traceparent` value and its `tracestate` (headers, or an MCP message's
/// `params._meta`).
pub fn from_values(traceparent: &str, tracestate: Option<&str>) -> Option<RemoteParent> {
    let (trace_id, span_id, flags) = parse_traceparent(traceparent)?;
    // An invalid tracestate is dropped, the parent is kept (W3C: tracestate is secondary).
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(RemoteParent {
        trace_id,
        span_id,
        flags,
        state,
    })
}

/// Parse `version-traceid-spanid-flags`.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    // Fixed lengths, lowercase hex only (W3C); decoded by hand, it is on every LLM call.
    let trace_id = TraceId::from_bytes(lower_hex::<16>(trace)?);
    let span_id = SpanId::from_bytes(lower_hex::<8>(span)?);
    let [flags] = lower_hex::<1>(flags)?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some((trace_id, span_id, TraceFlags::new(flags)))
}

/// `N` bytes from exactly `2 * N` lowercase hex digits.
fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// The `traceparent` value naming `span_id` in `trace_id`.
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> HeaderValue {
    // Written into a fixed buffer rather than through `format!`: it is on every LLM call.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 55];
    text[..2].copy_from_slice(b"00");
    let sampled = flags.to_u8() & TraceFlags::SAMPLED.to_u8();
    let fields: [(&[u8], usize); 3] = [
        (&trace_id.to_bytes(), 3),
        (&span_id.to_bytes(), 36),
        (&[sampled], 53),
    ];
    for (bytes, at) in fields {
        for (i, b) in bytes.iter().enumerate() {
            text[at + 2 * i] = HEX[usize::from(b >> 4)];
            text[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
    }
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example() {
        let (t, s, f) = parse_traceparent(TP).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert!(f.is_sampled());
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn later_versions_may_carry_more_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        assert!(parse_traceparent(v).is_some());
    }

    #[test]
    fn extracts_state_and_formats_a_child() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(TP));
        h.insert(
            TRACESTATE,
            HeaderValue::from_static("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        );
        let p = extract(&h).unwrap();
        assert_eq!(p.state.get("congo"), Some("t61rcWkgMzE"));
        let child = SpanId::from_hex("b7ad6b7169203331").unwrap();
        let v = format_traceparent(p.trace_id, child, p.flags);
        assert_eq!(
            v.to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
        );
    }

    #[test]
    fn formatted_traceparent_parses_back_with_only_the_sampled_flag() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        for (flags, expect) in [(0x00, "00"), (0x01, "01"), (0xff, "01"), (0x02, "00")] {
            let v = format_traceparent(trace, span, TraceFlags::new(flags));
            let text = v.to_str().unwrap();
            assert_eq!(
                text,
                format!("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-{expect}")
            );
            let (t, s, f) = parse_traceparent(text).unwrap();
            assert_eq!((t, s, f.is_sampled()), (trace, span, expect == "01"));
        }
    }
}
