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
