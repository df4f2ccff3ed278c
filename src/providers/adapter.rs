//! [`Adapter`]: everything one provider format means, behind one trait. The rest of the proxy
//! asks a call's [`Format`](super::Format) for its adapter ([`Format::adapter`](super::Format::adapter))
//! and never matches on the format itself.

use super::usage::ResponseRecord;

/// One provider format's reading of requests and responses.
pub trait Adapter: Sync {
    /// A fresh reader for one streamed response (SSE events, or NDJSON lines for formats that
    /// stream NDJSON).
    fn stream(&self) -> Box<dyn StreamReader>;

    /// Read a whole JSON response body into `r`; false when it is not this format's JSON.
    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool;
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
