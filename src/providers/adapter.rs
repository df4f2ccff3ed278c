//! [`Adapter`]: everything one provider format means, behind one trait. The rest of the proxy
//! asks a call's [`Format`](super::Format) for its adapter ([`Format::adapter`](super::Format::adapter))
//! and never matches on the format itself.

use bytes::{Bytes, BytesMut};

use super::usage::ResponseRecord;

/// One provider format's reading of requests and responses.
pub trait Adapter: Sync {
    /// A fresh reader for one streamed response (SSE events, or NDJSON lines for formats that
    /// stream NDJSON).
    fn stream(&self) -> Box<dyn StreamReader>;

    /// Read a whole JSON response body into `r`; false when it is not this format's JSON.
    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool;

    // stream rewrites

    /// How a stream of this format is ended early at a budget (`action: cut`), when it can be
    /// ended cleanly; `None` when it cannot (the limit then rejects the next call instead).
    fn stream_ending(&self) -> Option<Box<dyn StreamEnding>> {
        None
    }

    /// The rewrite that hides, event by event, the usage the proxy asked for on the client's
    /// behalf (see [`crate::body::StripUsage`]); `None` when the format needs none.
    fn usage_hider(&self) -> Option<EventRewrite> {
        None
    }
}

/// Copy one SSE event's raw bytes (`span`; its decoded data is `data`) to `out`, rewritten;
/// true when the event was dropped.
pub type EventRewrite = fn(span: &[u8], data: &[u8], out: &mut BytesMut) -> bool;

/// The final events of a stream cut short, well-formed for the client's SDK.
pub trait StreamEnding: Send {
    /// Note one event handed on to the client (what the ending needs: ids, open blocks).
    fn note(&mut self, data: &[u8]);

    /// The final events; `output_tokens` is the output the client got.
    fn tail(&self, output_tokens: u64) -> Bytes;
}

/// The state of one streamed response while it is read, event by event.
pub trait StreamReader: Send {
    /// Handle one event's data (or one NDJSON line): `Some(true)` when it carried output
    /// (text, reasoning or tool-call arguments), `None` when it could not be read.
    fn event(&mut self, data: &[u8]) -> Option<bool>;

    /// What the stream said so far.
    fn record_mut(&mut self) -> &mut ResponseRecord;

    /// The stream ended: everything it said.
    fn finish(self: Box<Self>) -> ResponseRecord;
}
