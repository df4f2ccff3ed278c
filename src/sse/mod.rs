//! Incremental decoders for streamed response bodies: server-sent events and NDJSON.
//!
//! They know only bytes: frames go in as they arrive (split anywhere, down to one byte at a
//! time), complete events come out. Memory per stream is bounded by a maximum event size; an
//! event past it is reported as [`SseItem::Oversized`] (the bytes themselves are forwarded to the
//! client untouched by the proxy either way). The decoder also says where each event ends, and
//! [`raw`] reads one event's raw bytes, for the stream rewriters that edit events as sent.

mod decoder;
mod ndjson;
pub mod raw;

pub use decoder::{SseDecoder, SseItem};
pub use ndjson::{NdjsonDecoder, NdjsonItem};

/// Default largest event (or NDJSON line) kept for parsing: 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// `data: [DONE]`, OpenAI's end-of-stream marker.
pub fn is_done(data: &[u8]) -> bool {
    data == b"[DONE]"
}
