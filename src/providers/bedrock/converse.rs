//! Reading Converse response bodies and ConverseStream events.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::providers::shape::compact;
use crate::providers::usage::{ResponseRecord, ToolCall, Usage};

use super::framed::{self, Messages};

/// A ConverseStream body in its event-stream framing.
pub(super) type Framed = framed::Framed<Stream>;

impl Framed {
    /// A reader of one ConverseStream body.
    pub(super) fn for_converse(max_bytes: usize) -> Self {
        Framed::new(Stream::default(), max_bytes)
    }
}

/// Stream state.
#[derive(Default)]
pub struct Stream {
    pub(crate) record: ResponseRecord,
    /// (content block index, call).
    calls: Vec<(u32, ToolCall)>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockEvent<'a> {
    #[serde(default)]
    content_block_index: u32,
    #[serde(default)]
    start: Option<Start>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    #[serde(default)]
    tool_use: Option<ToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delta<'a> {
    #[serde(default, borrow)]
    tool_use: Option<ToolInput<'a>>,
}

#[derive(Deserialize)]
struct ToolInput<'a> {
    #[serde(default, borrow)]
    input: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stop {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: Option<TokenUsage>,
}

/// `usage` as Converse states it.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
    /// `cacheDetails`: the cache writes by TTL (`5m` | `1h`), kept as the one-hour writes
    /// (priced at their own, higher rate) and every write the breakdown states.
    #[serde(default, deserialize_with = "writes_by_ttl")]
    cache_details: Option<WritesByTtl>,
}

/// What `cacheDetails` says: one-hour writes and all writes.
#[derive(Clone, Copy)]
struct WritesByTtl {
    one_hour: u64,
    total: u64,
}

/// One entry of `cacheDetails`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheDetail {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    ttl: Option<String>,
}

/// `cacheDetails` summed by TTL; `null` is no breakdown.
fn writes_by_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<WritesByTtl>, D::Error> {
    let entries: Option<Vec<CacheDetail>> = Deserialize::deserialize(d)?;
    Ok(entries.map(|entries| {
        entries.iter().fold(
            WritesByTtl {
                one_hour: 0,
                total: 0,
            },
            |acc, e| {
                let n = e.input_tokens.unwrap_or(0);
                WritesByTtl {
                    one_hour: acc
                        .one_hour
                        .saturating_add(if e.ttl.as_deref() == Some("1h") { n } else { 0 }),
                    total: acc.total.saturating_add(n),
                }
            },
        )
    }))
}

/// A whole Converse response.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    #[serde(default)]
    tool_use: Option<ToolUse>,
}

/// An AWS REST-JSON error body: `{"message"}` (or `Message`), with `__type` in some.
#[derive(Deserialize)]
struct AwsError {
    #[serde(default, alias = "Message")]
    message: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "__type")]
    kind: Option<String>,
    #[serde(default)]
    output: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "type")]
    anthropic_type: Option<serde::de::IgnoredAny>,
}

// === impl TokenUsage ===

impl TokenUsage {
    fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens;
        // `cacheWriteInputTokens` counts every write; the breakdown stands in when it is absent.
        let written = self
            .cache_write_input_tokens
            .or(self.cache_details.map(|d| d.total));
        Usage {
            input: Some(
                self.input_tokens
                    .unwrap_or(0)
                    .saturating_add(read.unwrap_or(0))
                    .saturating_add(written.unwrap_or(0)),
            ),
            output: self.output_tokens,
            cached_input: read,
            cache_creation_input: written,
            // One-hour writes are billed at their own rate (2x input for Claude, against 1.25x
            // for five-minute ones): as Anthropic's `ephemeral_1h_input_tokens`.
            cache_creation_1h: self
                .cache_details
                .map(|d| d.one_hour.min(written.unwrap_or(d.one_hour))),
            reasoning: None,
            total: self.total_tokens,
        }
    }
}

// === impl Stream ===

impl Stream {
    /// One event in the JSON shape the SDKs hand it out, `{"contentBlockDelta": {...}}` (an
    /// SSE body on a Converse route, or a relay's): read as the same event.
    pub(super) fn event(&mut self, data: &[u8]) -> Option<bool> {
        let one: std::collections::BTreeMap<Cow<'_, str>, &RawValue> =
            serde_json::from_slice(data).ok()?;
        let (kind, payload) = one.into_iter().next()?;
        self.message(kind.as_bytes(), payload.get().as_bytes())
    }

    fn block_start(&mut self, ev: BlockEvent<'_>) {
        if let Some(t) = ev.start.and_then(|s| s.tool_use) {
            self.calls.push((
                ev.content_block_index,
                ToolCall {
                    choice: 0,
                    id: t.tool_use_id,
                    name: t.name.unwrap_or_default(),
                    arguments: String::new(),
                },
            ));
        }
    }

    fn block_delta(&mut self, ev: BlockEvent<'_>) {
        let input = ev.delta.and_then(|d| d.tool_use).and_then(|t| t.input);
        if let Some(part) = input {
            if let Some((_, call)) = self
                .calls
                .iter_mut()
                .find(|(i, _)| *i == ev.content_block_index)
            {
                call.arguments.push_str(&part);
            }
        }
    }

    /// The stream ended.
    pub(super) fn finish(mut self) -> ResponseRecord {
        self.record.finish_reasons = self.stop_reason.into_iter().collect();
        self.record.tool_calls = self.calls.into_iter().map(|(_, c)| c).collect();
        self.record
    }
}

impl Messages for Stream {
    fn message(&mut self, kind: &[u8], payload: &[u8]) -> Option<bool> {
        match kind {
            b"contentBlockDelta" => {
                // Text and reasoning deltas, the bulk of a stream: output, nothing to account.
                if !self.calls.is_empty() {
                    self.block_delta(serde_json::from_slice(payload).ok()?);
                }
                Some(true)
            }
            b"contentBlockStart" => {
                self.block_start(serde_json::from_slice(payload).ok()?);
                Some(false)
            }
            b"messageStop" => {
                let s: Stop = serde_json::from_slice(payload).ok()?;
                if s.stop_reason.is_some() {
                    self.stop_reason = s.stop_reason;
                }
                Some(false)
            }
            b"metadata" => {
                let m: Metadata = serde_json::from_slice(payload).ok()?;
                if let Some(u) = m.usage {
                    self.record.usage = u.to_usage();
                }
                Some(false)
            }
            _ => Some(false), // messageStart, contentBlockStop
        }
    }

    fn record_mut(&mut self) -> &mut ResponseRecord {
        &mut self.record
    }

    fn into_record(self) -> ResponseRecord {
        self.finish()
    }
}

/// The error type of an AWS error body (`__type`'s last part, else `error`), when `body` is one.
pub(super) fn aws_error(body: &[u8]) -> Option<String> {
    let e: AwsError = serde_json::from_slice(body).ok()?;
    if e.output.is_some() || e.anthropic_type.is_some() || e.message.is_none() {
        return None;
    }
    let kind = e.kind.as_deref().map(|k| {
        // `com.amazon...#ValidationException` or `ValidationException:http://...`.
        let k = k.rsplit('#').next().unwrap_or(k);
        k.split(':').next().unwrap_or(k).to_string()
    });
    Some(
        kind.filter(|k| !k.is_empty())
            .unwrap_or_else(|| "error".into()),
    )
}

/// A whole Converse body; false when it is not JSON of this shape.
pub(super) fn parse_json(body: &[u8], r: &mut ResponseRecord) -> bool {
    if let Some(e) = aws_error(body) {
        r.error_type = Some(e);
        return true;
    }
    let Ok(resp) = serde_json::from_slice::<Response>(body) else {
        return false;
    };
    if let Some(u) = resp.usage {
        r.usage = u.to_usage();
    }
    r.finish_reasons = resp.stop_reason.into_iter().collect();
    let blocks = resp.output.and_then(|o| o.message).map(|m| m.content);
    for t in blocks.into_iter().flatten().filter_map(|b| b.tool_use) {
        r.tool_calls.push(ToolCall {
            choice: 0,
            id: t.tool_use_id,
            name: t.name.unwrap_or_default(),
            arguments: t.input.as_ref().map(compact).unwrap_or_default(),
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::bedrock::framed::Messages;

    const USAGE: &str = r#"{"inputTokens":10,"outputTokens":20,"totalTokens":3530,"cacheReadInputTokens":0,"cacheWriteInputTokens":3500,"cacheDetails":[{"inputTokens":500,"ttl":"5m"},{"inputTokens":3000,"ttl":"1h"}]}"#;

    #[test]
    fn one_hour_cache_writes_are_read_from_cache_details() {
        // A whole Converse body.
        let body = format!(
            r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"hi"}}]}}}},"stopReason":"end_turn","usage":{USAGE}}}"#
        );
        let mut r = ResponseRecord::default();
        assert!(parse_json(body.as_bytes(), &mut r));
        assert_eq!(r.usage.input, Some(3510));
        assert_eq!(r.usage.cache_creation_input, Some(3500));
        assert_eq!(r.usage.cache_creation_1h, Some(3000));
        // ConverseStream's metadata event.
        let mut s = Stream::default();
        let meta = format!(r#"{{"usage":{USAGE},"metrics":{{"latencyMs":100}}}}"#);
        s.message(b"metadata", meta.as_bytes());
        let r = s.finish();
        assert_eq!(
            (r.usage.cache_creation_input, r.usage.cache_creation_1h),
            (Some(3500), Some(3000))
        );
        // No breakdown: every write is a five-minute one, as before.
        let mut r = ResponseRecord::default();
        let plain = r#"{"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":2,"cacheWriteInputTokens":7}}"#;
        assert!(parse_json(plain.as_bytes(), &mut r));
        assert_eq!(
            (r.usage.cache_creation_input, r.usage.cache_creation_1h),
            (Some(7), None)
        );
    }
}
