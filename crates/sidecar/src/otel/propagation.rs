//! W3C trace context on the wire: `traceparent` / `tracestate` (HTTP and gRPC metadata) and gRPC's binary
//! `grpc-trace-bin`, parsed and written. Pure: no I/O, no spans.
//!
//! A context that does not parse is not an error for the request: it is treated as absent, and the sidecar starts a
//! new trace and sends that one on (the malformed value is replaced, never forwarded). A trace context is only ever
//! used to link spans; nothing is trusted or authorized on it.

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";
pub(crate) const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

/// The longest `tracestate` kept (W3C: 32 list members; a longer one is dropped, not cut).
const MAX_TRACESTATE: usize = 512;

/// Parses a `traceparent` (W3C Trace Context level 1, version `00`; a later version is read by its first four
/// fields, as the spec asks). `None` when malformed: a wrong length, upper-case or non-hex digits, version `ff`,
/// an all-zero trace or parent id.
pub(crate) fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = value.get(0..2)?;
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may append fields after a '-'.
    if (version == "00" && bytes.len() != 55) || (bytes.len() > 55 && bytes[55] != b'-') {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (value.get(3..35)?, value.get(36..52)?, value.get(53..55)?);
    if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    // Only the sampled bit is defined; the others are not propagated.
    Some((trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `00-<trace id>-<span id>-<flags>`.
pub(crate) fn format_traceparent(context: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8())
}

/// gRPC's binary trace context (OpenCensus format: version 0, field 0 trace id, field 1 span id, field 2 options).
pub(crate) fn parse_grpc_trace_bin(bytes: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let [0, 0, rest @ ..] = bytes else { return None };
    let (trace, rest) = rest.split_first_chunk::<16>()?;
    let [1, rest @ ..] = rest else { return None };
    let (span, rest) = rest.split_first_chunk::<8>()?;
    let flags = match rest {
        [] => 0,
        [2, options, ..] => *options,
        _ => return None,
    };
    let trace_id = Some(TraceId::from_bytes(*trace)).filter(|t| *t != TraceId::INVALID)?;
    let span_id = Some(SpanId::from_bytes(*span)).filter(|s| *s != SpanId::INVALID)?;
    Some((trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED))
}

/// The 29 bytes of `grpc-trace-bin` for `context`.
pub(crate) fn format_grpc_trace_bin(context: &SpanContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(29);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&context.trace_id().to_bytes());
    out.push(1);
    out.extend_from_slice(&context.span_id().to_bytes());
    out.extend_from_slice(&[2, context.trace_flags().to_u8()]);
    out
}

/// The remote parent a request carries: `traceparent` first (with its `tracestate`), else `grpc-trace-bin`.
/// `None` when neither is present and valid.
pub(crate) fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(context) = from_values(text(TRACEPARENT), text(TRACESTATE)) {
        return Some(context);
    }
    let decoded = decode_bin(headers.get(GRPC_TRACE_BIN)?)?;
    let (trace_id, span_id, flags) = parse_grpc_trace_bin(&decoded)?;
    Some(SpanContext::new(trace_id, span_id, flags, true, TraceState::default()))
}

/// A remote parent from `traceparent` / `tracestate` values (e.g. a CloudEvent's); `None` when `traceparent` is
/// absent or malformed. A malformed or oversized `tracestate` is dropped on its own.
pub(crate) fn from_values(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let (trace_id, span_id, flags) = parse_traceparent(traceparent?.trim())?;
    let state =
        tracestate.filter(|v| v.len() <= MAX_TRACESTATE).and_then(|v| v.parse::<TraceState>().ok()).unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// The bytes of a `-bin` gRPC metadata value (sent base64-encoded, padded or not).
pub(crate) fn decode_bin(value: &HeaderValue) -> Option<Vec<u8>> {
    let bin = value.as_bytes();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(bin.strip_suffix(b"==").or_else(|| bin.strip_suffix(b"=")).unwrap_or(bin))
        .ok()
}

/// Replaces the trace context in `headers` with `context`: `traceparent`, `tracestate` (removed when empty) and,
/// when `grpc` is set, `grpc-trace-bin`. Whatever the caller sent under these names is gone afterwards.
pub(crate) fn inject(context: &SpanContext, headers: &mut HeaderMap, grpc: bool) {
    if let Ok(value) = HeaderValue::from_str(&format_traceparent(context)) {
        headers.insert(TRACEPARENT, value);
    }
    let state = context.trace_state().header();
    match HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => {
            headers.insert(TRACESTATE, value);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
    headers.remove(GRPC_TRACE_BIN);
    if grpc {
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(format_grpc_trace_bin(context));
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert(GRPC_TRACE_BIN, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_cases() {
        struct Case {
            name: &'static str,
            value: &'static str,
            valid: bool,
        }
        let cases = [
            Case { name: "W3C example", value: VALID, valid: true },
            Case { name: "not sampled", value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", valid: true },
            Case {
                name: "future version with an extra field",
                value: "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                valid: true,
            },
            Case { name: "empty", value: "", valid: false },
            Case { name: "garbage", value: "hello", valid: false },
            Case { name: "version ff", value: "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", valid: false },
            Case {
                name: "version 00 with a suffix",
                value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
                valid: false,
            },
            Case {
                name: "upper-case hex",
                value: "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                valid: false,
            },
            Case {
                name: "all-zero trace id",
                value: "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                valid: false,
            },
            Case {
                name: "all-zero parent id",
                value: "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                valid: false,
            },
            Case {
                name: "short trace id",
                value: "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01x",
                valid: false,
            },
            Case {
                name: "non-hex flags",
                value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
                valid: false,
            },
            Case {
                name: "wrong separators",
                value: "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
                valid: false,
            },
            Case {
                name: "multi-byte characters at the separator positions",
                value: "00-0af7651916cd43dd8448eb211c80319\u{e9}b7ad6b7169203331-01",
                valid: false,
            },
        ];
        for c in cases {
            assert_eq!(parse_traceparent(c.value).is_some(), c.valid, "{}", c.name);
        }
        let (trace, span, flags) = parse_traceparent(VALID).expect("valid");
        assert_eq!(trace.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.to_string(), "b7ad6b7169203331");
        assert!(flags.is_sampled());
    }

    #[test]
    fn round_trips_and_unknown_flags_are_dropped() {
        let (trace, span, flags) =
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff").expect("valid");
        assert_eq!(flags, TraceFlags::SAMPLED, "only the sampled bit is kept");
        let context = SpanContext::new(trace, span, flags, true, TraceState::default());
        assert_eq!(format_traceparent(&context), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let bin = format_grpc_trace_bin(&context);
        assert_eq!(bin.len(), 29);
        assert_eq!(parse_grpc_trace_bin(&bin), Some((trace, span, TraceFlags::SAMPLED)));
        assert_eq!(parse_grpc_trace_bin(&bin[..20]), None, "truncated");
        assert_eq!(parse_grpc_trace_bin(&[1; 29]), None, "unknown version");
    }

    #[test]
    fn extract_prefers_traceparent_and_ignores_malformed() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-zz-bad"));
        assert!(extract(&headers).is_none(), "malformed is absent");
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let context = extract(&headers).expect("valid");
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(context.trace_state().get("congo"), Some("t61rcWkgMzE"));

        let mut grpc = HeaderMap::new();
        inject(&context, &mut grpc, true);
        grpc.remove(TRACEPARENT);
        let from_bin = extract(&grpc).expect("grpc-trace-bin");
        assert_eq!(from_bin.trace_id(), context.trace_id());
        assert_eq!(from_bin.span_id(), context.span_id());
    }

    #[test]
    fn inject_replaces_what_the_caller_sent() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        headers.insert(TRACESTATE, HeaderValue::from_static("evil=1"));
        headers.insert(GRPC_TRACE_BIN, HeaderValue::from_static("AAAA"));
        let (trace, span, flags) = parse_traceparent(VALID).expect("valid");
        inject(&SpanContext::new(trace, span, flags, false, TraceState::default()), &mut headers, false);
        assert_eq!(headers[TRACEPARENT], VALID);
        assert!(headers.get(TRACESTATE).is_none());
        assert!(headers.get(GRPC_TRACE_BIN).is_none());
    }
}
