//! Reading Gemini response bodies and streams.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::providers::shape::{compact, ErrorObj};
use crate::providers::usage::{AudioTokens, ResponseRecord, ToolCall, Usage};

/// Stream state.
#[derive(Default)]
pub struct Stream {
    pub(crate) record: ResponseRecord,
    finish: BTreeMap<u32, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    total_token_count: Option<u64>,
    /// Input tokens by modality (`TEXT`, `AUDIO`, `IMAGE`, `VIDEO`, `DOCUMENT`).
    #[serde(default)]
    prompt_tokens_details: Vec<ModalityCount>,
    /// Cached input tokens by modality.
    #[serde(default)]
    cache_tokens_details: Vec<ModalityCount>,
    /// Output tokens by modality (native audio models answer in `AUDIO`).
    #[serde(default)]
    candidates_tokens_details: Vec<ModalityCount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModalityCount {
    #[serde(default)]
    modality: String,
    #[serde(default)]
    token_count: u64,
}

/// The `AUDIO` tokens of a by-modality list.
fn audio_of(details: &[ModalityCount]) -> u64 {
    details
        .iter()
        .filter(|d| d.modality.eq_ignore_ascii_case("AUDIO"))
        .map(|d| d.token_count)
        .fold(0, u64::saturating_add)
}

// === impl UsageMetadata ===

impl UsageMetadata {
    /// The audio part of the counts, when there is one (audio is priced apart: 2.5 Flash bills
    /// audio input at more than three times text).
    fn audio(&self) -> Option<AudioTokens> {
        let a = AudioTokens {
            input: audio_of(&self.prompt_tokens_details),
            cached_input: audio_of(&self.cache_tokens_details),
            output: audio_of(&self.candidates_tokens_details),
        };
        (a != AudioTokens::default()).then_some(a)
    }

    /// The counts stated; none when the metadata states no count (Vertex AI's intermediate
    /// chunks carry `{"trafficType":"ON_DEMAND"}` alone, the counts only in the last).
    fn to_usage(&self) -> Usage {
        let counts = [
            self.prompt_token_count,
            self.candidates_token_count,
            self.thoughts_token_count,
            self.tool_use_prompt_token_count,
            self.cached_content_token_count,
            self.total_token_count,
        ];
        if counts.iter().all(Option::is_none) {
            return Usage::default();
        }
        Usage {
            input: Some(
                self.prompt_token_count.unwrap_or(0)
                    + self.tool_use_prompt_token_count.unwrap_or(0),
            ),
            output: Some(
                self.candidates_token_count.unwrap_or(0) + self.thoughts_token_count.unwrap_or(0),
            ),
            cached_input: self.cached_content_token_count,
            cache_creation_input: None,
            cache_creation_1h: None,
            reasoning: self.thoughts_token_count,
            total: self.total_token_count,
        }
    }
}

// === impl Stream ===

impl Stream {
    /// One `data:` payload; `None` when it is not a chunk, else whether it carried output.
    pub(super) fn event(&mut self, data: &[u8]) -> Option<bool> {
        let chunk: Chunk = serde_json::from_slice(data).ok()?;
        Some(self.chunk(chunk))
    }

    fn chunk(&mut self, c: Chunk) -> bool {
        if let Some(model) = crate::providers::shape::non_empty(c.model_version) {
            self.record.model = Some(model);
        }
        crate::providers::shape::set_once(&mut self.record.id, c.response_id.as_deref());
        // Each chunk's metadata restates the whole count; one that states none keeps the last.
        if let Some(meta) = c.usage_metadata.as_ref() {
            let u = meta.to_usage();
            if u.is_present() {
                self.record.usage = u;
                self.record.audio = meta.audio();
            }
        }
        if let Some(e) = &c.error {
            self.record.error_type = Some(e.error_type());
        }
        let mut output = false;
        for cand in c.candidates {
            if let Some(f) = cand.finish_reason {
                self.finish.insert(cand.index, f);
            }
            for p in cand.content.map(|c| c.parts).unwrap_or_default() {
                output |= p.text.is_some();
                if let Some(fc) = p.function_call {
                    output = true;
                    self.record.tool_calls.push(ToolCall {
                        choice: cand.index,
                        id: fc.id,
                        name: fc.name,
                        arguments: fc.args.as_ref().map(compact).unwrap_or_default(),
                    });
                }
            }
        }
        output
    }

    /// The stream ended.
    pub(super) fn finish(mut self) -> ResponseRecord {
        self.record.finish_reasons = self.finish.into_values().collect();
        self.record
    }
}

/// A whole JSON body (one response, or the JSON array `streamGenerateContent` returns without
/// `alt=sse`); false when it is not JSON of this shape.
pub(super) fn parse_json(body: &[u8], r: &mut ResponseRecord) -> bool {
    let chunks: Vec<Chunk> = match serde_json::from_slice::<Chunk>(body) {
        Ok(c) => vec![c],
        Err(_) => match serde_json::from_slice::<Vec<Chunk>>(body) {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    let mut s = Stream::default();
    for c in chunks {
        s.chunk(c);
    }
    *r = s.finish();
    true
}

#[cfg(test)]
mod tests {
    use crate::providers::{Format, ResponseParser};

    #[test]
    fn an_empty_model_version_or_response_id_is_no_value() {
        let mut p = ResponseParser::new(Format::Gemini, true, 1 << 20);
        p.feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"modelVersion\":\"\",\"responseId\":\"\"}\r\n\r\n");
        p.feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":5},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n");
        p.feed(b"data: {\"candidates\":[],\"modelVersion\":\"\"}\r\n\r\n");
        let r = p.finish();
        assert_eq!(r.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!((r.usage.input, r.usage.output), (Some(3), Some(2)));
    }

    /// Audio in and out is read by modality and priced apart from text; a text-only call has
    /// no audio part.
    #[test]
    fn audio_tokens_are_read_by_modality() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"ok"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1250,"candidatesTokenCount":40,"totalTokenCount":1290,"cachedContentTokenCount":400,"promptTokensDetails":[{"modality":"TEXT","tokenCount":250},{"modality":"AUDIO","tokenCount":1000}],"cacheTokensDetails":[{"modality":"AUDIO","tokenCount":400}],"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":30},{"modality":"TEXT","tokenCount":10}]},"modelVersion":"gemini-2.5-flash"}"#;
        let mut p = ResponseParser::new(Format::Gemini, false, 1 << 20);
        p.feed(body);
        let r = p.finish();
        let a = r.audio.expect("an audio part");
        assert_eq!((a.input, a.cached_input, a.output), (1000, 400, 30));
        let text = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1,"promptTokensDetails":[{"modality":"TEXT","tokenCount":5}]}}"#;
        let mut p = ResponseParser::new(Format::Gemini, false, 1 << 20);
        p.feed(text);
        assert_eq!(p.finish().audio, None);
    }

    /// Vertex AI's intermediate chunks state `usageMetadata` without counts: such metadata is
    /// no usage, neither before the counts nor after them.
    #[test]
    fn usage_metadata_without_counts_is_no_usage() {
        let traffic = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"trafficType\":\"ON_DEMAND\"}}\r\n\r\n";
        let mut cut = ResponseParser::new(Format::Gemini, true, 1 << 20);
        cut.feed(traffic);
        let r = cut.finish();
        assert!(!r.usage.is_present(), "{:?}", r.usage);
        let mut p = ResponseParser::new(Format::Gemini, true, 1 << 20);
        p.feed(traffic);
        p.feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":5,\"trafficType\":\"ON_DEMAND\"}}\r\n\r\n");
        p.feed(traffic);
        let r = p.finish();
        assert_eq!((r.usage.input, r.usage.output), (Some(3), Some(2)));
    }
}
