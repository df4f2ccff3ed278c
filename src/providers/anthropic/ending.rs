//! The ending of an Anthropic stream cut at a budget: `content_block_stop` (if a block is
//! open), `message_delta` with `stop_reason: "max_tokens"` and the output the client got, then
//! `message_stop`.

use bytes::Bytes;
use serde::Deserialize;

use crate::providers::adapter::StreamEnding;

/// What the final events need, read from the events handed on.
#[derive(Default)]
pub(super) struct MessageEnding {
    /// The content block started and not yet stopped.
    open_block: Option<u64>,
}

/// The fields of an event the ending needs.
#[derive(Deserialize)]
struct MessageEvent {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    index: Option<u64>,
}

impl StreamEnding for MessageEnding {
    fn note(&mut self, data: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<MessageEvent>(data) else {
            return;
        };
        match ev.kind.as_str() {
            "content_block_start" => self.open_block = ev.index,
            "content_block_stop" if ev.index == self.open_block => self.open_block = None,
            _ => {}
        }
    }

    fn tail(&self, output_tokens: u64) -> Bytes {
        let mut s = String::new();
        if let Some(index) = self.open_block {
            s.push_str(&format!(
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n"
            ));
        }
        s.push_str(&format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output_tokens}}}}}\n\n"
        ));
        s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        Bytes::from(s)
    }
}
