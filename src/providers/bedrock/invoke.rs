//! Reading InvokeModelWithResponseStream: `chunk` events whose payload `{"bytes": base64}` is one
//! Anthropic Messages stream event, read by the Anthropic format's own stream reader. The last
//! one also carries `amazon-bedrock-invocationMetrics`, counted where the events stated none.

use std::borrow::Cow;

use base64::Engine;
use memchr::memmem;
use serde::Deserialize;

use crate::providers::adapter::{Adapter, StreamReader};
use crate::providers::anthropic::Anthropic;
use crate::providers::usage::{ResponseRecord, Usage};

use super::framed::{self, Messages};

/// An InvokeModelWithResponseStream body in its event-stream framing.
pub(super) type Framed = framed::Framed<Chunks>;

impl Framed {
    /// A reader of one InvokeModelWithResponseStream body.
    pub(super) fn for_invoke(max_bytes: usize) -> Self {
        Framed::new(
            Chunks {
                events: Anthropic.stream(),
                decoded: Vec::new(),
                metrics: None,
            },
            max_bytes,
        )
    }
}

/// Stream state: the Anthropic reader, and a buffer reused for each decoded chunk.
pub(super) struct Chunks {
    events: Box<dyn StreamReader>,
    decoded: Vec<u8>,
    metrics: Option<Usage>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WithMetrics {
    #[serde(rename = "amazon-bedrock-invocationMetrics")]
    metrics: Option<Metrics>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    #[serde(default)]
    input_token_count: Option<u64>,
    #[serde(default)]
    output_token_count: Option<u64>,
    #[serde(default)]
    cache_read_input_token_count: Option<u64>,
    #[serde(default)]
    cache_write_input_token_count: Option<u64>,
}

const METRICS_KEY: &[u8] = b"amazon-bedrock-invocationMetrics";

impl Messages for Chunks {
    fn message(&mut self, kind: &[u8], payload: &[u8]) -> Option<bool> {
        if kind != b"chunk" {
            return Some(false);
        }
        let chunk: Chunk<'_> = serde_json::from_slice(payload).ok()?;
        self.decoded.clear();
        base64::engine::general_purpose::STANDARD
            .decode_vec(chunk.bytes.as_bytes(), &mut self.decoded)
            .ok()?;
        if memmem::find(&self.decoded, METRICS_KEY).is_some() {
            if let Ok(WithMetrics { metrics: Some(m) }) = serde_json::from_slice(&self.decoded) {
                let (read, written) = (
                    m.cache_read_input_token_count,
                    m.cache_write_input_token_count,
                );
                self.metrics = Some(Usage {
                    input: Some(
                        m.input_token_count
                            .unwrap_or(0)
                            .saturating_add(read.unwrap_or(0))
                            .saturating_add(written.unwrap_or(0)),
                    ),
                    output: m.output_token_count,
                    cached_input: read,
                    cache_creation_input: written,
                    ..Usage::default()
                });
            }
        }
        self.events.event(&self.decoded)
    }

    /// The decoded Anthropic event, not its base64.
    fn output<'a>(&'a self, _payload: &'a [u8]) -> &'a [u8] {
        &self.decoded
    }

    fn record_mut(&mut self) -> &mut ResponseRecord {
        self.events.record_mut()
    }

    fn into_record(self) -> ResponseRecord {
        let mut r = self.events.finish();
        if !r.usage.is_present() {
            if let Some(u) = self.metrics {
                r.usage = u;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use crate::providers::bedrock::eventstream::encode;
    use crate::providers::{Format, ResponseParser};

    fn chunk(event: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(event);
        encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            format!(r#"{{"bytes":"{b64}"}}"#).as_bytes(),
        )
    }

    fn read(
        events: &[&str],
    ) -> (
        crate::providers::ResponseRecord,
        crate::providers::OutputSample,
    ) {
        let mut p = ResponseParser::framed(
            Format::BedrockInvoke,
            b"application/vnd.amazon.eventstream",
            1 << 20,
        )
        .unwrap();
        for e in events {
            p.feed(&chunk(e));
        }
        p.finish_with_sample()
    }

    #[test]
    fn invocation_metrics_count_where_the_events_state_no_usage() {
        let (r, sample) = read(&[
            r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","content":[]}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there"}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":9,"outputTokenCount":3,"cacheReadInputTokenCount":4,"invocationLatency":5,"firstByteLatency":2}}"#,
        ]);
        assert_eq!(r.model.as_deref(), Some("claude-x"));
        assert_eq!((r.usage.input, r.usage.output), (Some(13), Some(3)));
        assert_eq!(r.usage.cached_input, Some(4));
        // The sample is the decoded event, so an estimate reads its text.
        assert!(String::from_utf8_lossy(&sample.bytes).contains("Hello there"));
        assert!(sample.estimate_tokens() > 0);
    }

    #[test]
    fn the_events_usage_wins_over_the_metrics() {
        let (r, _) = read(&[
            r#"{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":7,"output_tokens":1}}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":70,"outputTokenCount":50}}"#,
        ]);
        assert_eq!((r.usage.input, r.usage.output), (Some(7), Some(5)));
        assert_eq!(r.finish_reasons, ["end_turn"]);
    }
}
