//! What an endpoint answers before transport concerns (gzip, faults in the body, delays).

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::frames::Frames;
use super::{Fault, Knobs};

/// Model name used when a request names none.
pub(crate) const DEFAULT_MODEL: &str = "mock-model";
/// The fixed `created` / `created_at` timestamp of every response.
pub(crate) const CREATED: u64 = 1_730_000_000;

/// Which provider's conventions (content types, headers, error shapes) apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    Anthropic,
    Gemini,
}

type HeaderList = &'static [(&'static str, &'static str)];

const OPENAI_HEADERS: HeaderList = &[
    ("x-request-id", "req_mock_0001"),
    ("openai-version", "2020-10-01"),
    ("openai-processing-ms", "1"),
];
const ANTHROPIC_HEADERS: HeaderList = &[("request-id", "req_mock_0001")];
const GEMINI_HEADERS: HeaderList = &[("server-timing", "gfet4t7; dur=1")];
const SSE_HEADERS: HeaderList = &[("cache-control", "no-cache")];
const RETRY_HEADERS: HeaderList = &[("retry-after", "1"), ("retry-after-ms", "1000")];

/// A complete answer: status, headers and body frames.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) headers: HeaderList,
    pub(crate) extra_headers: HeaderList,
    pub(crate) frames: Vec<Bytes>,
    /// A stream: chunked, with the chunk delay between frames.
    pub(crate) stream: bool,
}

impl Flavor {
    pub(crate) fn content_type(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Flavor::OpenAi | Flavor::Anthropic, false) => "application/json",
            (Flavor::OpenAi | Flavor::Anthropic, true) => "text/event-stream; charset=utf-8",
            (Flavor::Gemini, false) => "application/json; charset=UTF-8",
            (Flavor::Gemini, true) => "text/event-stream",
        }
    }

    fn headers(self) -> HeaderList {
        match self {
            Flavor::OpenAi => OPENAI_HEADERS,
            Flavor::Anthropic => ANTHROPIC_HEADERS,
            Flavor::Gemini => GEMINI_HEADERS,
        }
    }
}

impl Reply {
    pub(crate) fn json(flavor: Flavor, status: StatusCode, frames: Vec<Bytes>) -> Self {
        Self {
            status,
            content_type: flavor.content_type(false),
            headers: flavor.headers(),
            extra_headers: &[],
            frames,
            stream: false,
        }
    }

    pub(crate) fn sse(flavor: Flavor, frames: Vec<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: flavor.content_type(true),
            headers: flavor.headers(),
            extra_headers: SSE_HEADERS,
            frames,
            stream: true,
        }
    }

    /// A Gemini `streamGenerateContent` answer without `alt=sse`: a JSON array sent piecewise.
    pub(crate) fn json_stream(flavor: Flavor, frames: Vec<Bytes>) -> Self {
        Self {
            stream: true,
            ..Self::json(flavor, StatusCode::OK, frames)
        }
    }
}

/// The kinds of error the mock produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    BadRequest,
    NotFound,
    TooLarge,
    RateLimited,
    Server,
}

/// A provider-shaped error answer.
pub(crate) fn error(flavor: Flavor, kind: ErrorKind, message: &str) -> Reply {
    let (status, oa_type, oa_code, an_type, g_status) = match kind {
        ErrorKind::BadRequest => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "invalid_request_error",
            "INVALID_ARGUMENT",
        ),
        ErrorKind::NotFound => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            "not_found_error",
            "NOT_FOUND",
        ),
        ErrorKind::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            None,
            "request_too_large",
            "INVALID_ARGUMENT",
        ),
        ErrorKind::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            Some("rate_limit_exceeded"),
            "rate_limit_error",
            "RESOURCE_EXHAUSTED",
        ),
        ErrorKind::Server => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "api_error",
            "INTERNAL",
        ),
    };
    let mut f = Frames::with_capacity(128 + message.len(), 1);
    match flavor {
        Flavor::OpenAi => {
            f.s(r#"{"error":{"message":"#)
                .q(message)
                .s(r#","type":"#)
                .q(oa_type)
                .s(r#","param":null,"code":"#);
            match oa_code {
                Some(c) => f.q(c),
                None => f.s("null"),
            };
            f.s("}}");
        }
        Flavor::Anthropic => {
            f.s(r#"{"type":"error","error":{"type":"#)
                .q(an_type)
                .s(r#","message":"#)
                .q(message)
                .s(r#"},"request_id":"req_mock_0001"}"#);
        }
        Flavor::Gemini => {
            f.s(r#"{"error":{"code":"#)
                .n(u64::from(status.as_u16()))
                .s(r#","message":"#)
                .q(message)
                .s(r#","status":"#)
                .q(g_status)
                .s("}}");
        }
    }
    let mut reply = Reply::json(flavor, status, f.finish());
    if kind == ErrorKind::RateLimited {
        reply.extra_headers = RETRY_HEADERS;
    }
    reply
}

/// Junk served by the `garbage` fault: neither JSON nor SSE (nor valid UTF-8).
pub(crate) const GARBAGE: &[u8] =
    b"<<tokenwarden-mock garbage>> \x00\x01 }{ not json ][ \xff\xfe\xc3\x28 not sse either\r\n";

/// The reply for the faults that replace the answer entirely (`500`, `429`, `garbage`).
pub(crate) fn fault_reply(flavor: Flavor, stream: bool, k: &Knobs) -> Option<Reply> {
    match k.fault? {
        Fault::ServerError => Some(error(
            flavor,
            ErrorKind::Server,
            match flavor {
                Flavor::OpenAi => {
                    "The server had an error while processing your request. Sorry about that!"
                }
                Flavor::Anthropic => "Internal server error",
                Flavor::Gemini => "An internal error has occurred. Please retry.",
            },
        )),
        Fault::RateLimited => Some(error(
            flavor,
            ErrorKind::RateLimited,
            match flavor {
                Flavor::OpenAi => {
                    "Rate limit reached for requests (tokenwarden-mock). Please try again in 1s."
                }
                Flavor::Anthropic => {
                    "This request would exceed the rate limit for your organization (tokenwarden-mock). Please try again later."
                }
                Flavor::Gemini => "Resource has been exhausted (e.g. check quota).",
            },
        )),
        Fault::Garbage => {
            let frames = if stream {
                vec![Bytes::from_static(GARBAGE); 3]
            } else {
                vec![Bytes::from_static(GARBAGE)]
            };
            let mut reply = if stream {
                Reply::sse(flavor, frames)
            } else {
                Reply::json(flavor, StatusCode::OK, frames)
            };
            reply.stream = stream;
            Some(reply)
        }
        Fault::DropMidStream | Fault::OneByteWrites | Fault::Hang => None,
    }
}

/// Parses the request fields the mock looks at. The mock is lenient: a body that is empty, not
/// JSON or has unexpected field types is answered as if it were `{}` (default model, no stream),
/// so load generators and tests can send anything.
pub(crate) fn parse_json<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> T {
    serde_json::from_slice(body).unwrap_or_default()
}

/// `"stream"` and `"model"` as most endpoints need them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BasicRequest<'a> {
    #[serde(default, borrow)]
    pub(crate) model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Reply) -> serde_json::Value {
        serde_json::from_slice(&r.frames.concat()).unwrap()
    }

    #[test]
    fn error_shapes() {
        let r = error(Flavor::OpenAi, ErrorKind::RateLimited, "slow \"down\"");
        assert_eq!(r.status, 429);
        assert_eq!(
            body(&r),
            serde_json::json!({"error": {"message": "slow \"down\"", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
        );
        assert!(r.extra_headers.contains(&("retry-after", "1")));

        let r = error(Flavor::Anthropic, ErrorKind::Server, "boom");
        assert_eq!(r.status, 500);
        assert_eq!(body(&r)["error"]["type"], "api_error");
        assert_eq!(body(&r)["type"], "error");

        let r = error(Flavor::Gemini, ErrorKind::NotFound, "nope");
        assert_eq!(
            body(&r),
            serde_json::json!({"error": {"code": 404, "message": "nope", "status": "NOT_FOUND"}})
        );
    }

    #[test]
    fn garbage_is_not_json_or_utf8() {
        assert!(serde_json::from_slice::<serde_json::Value>(GARBAGE).is_err());
        assert!(String::from_utf8(GARBAGE.to_vec()).is_err());
        assert!(!GARBAGE.starts_with(b"data:"));
    }

    #[test]
    fn parse_json_is_lenient() {
        let r: BasicRequest = parse_json(b"  ");
        assert!(r.model.is_none());
        let r: BasicRequest = parse_json(br#"{"model":"m\"x","stream":true,"other":[1,2]}"#);
        assert_eq!(r.model.as_deref(), Some("m\"x"));
        assert_eq!(r.stream, Some(true));
        let r: BasicRequest = parse_json(b"{nope");
        assert!(r.model.is_none() && r.stream.is_none());
        let r: BasicRequest = parse_json(br#"{"model":"m","stream":"yes"}"#);
        assert!(r.stream.is_none());
    }
}
