//! Reading Ollama response bodies and streams.

use serde::Deserialize;

use crate::providers::shape::compact;
use crate::providers::usage::{ResponseRecord, ToolCall, Usage};

/// Stream state.
#[derive(Default)]
pub struct Stream {
    pub(crate) record: ResponseRecord,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    response: Option<String>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Vec<OllamaToolCall>,
}

#[derive(Deserialize)]
struct OllamaToolCall {
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Option<serde_json::Value>,
}

// === impl Stream ===

impl Stream {
    /// One NDJSON line; `None` when it is not a response line, else whether it carried output.
    pub(super) fn line(&mut self, data: &[u8]) -> Option<bool> {
        let line: Line = serde_json::from_slice(data).ok()?;
        let r = &mut self.record;
        crate::providers::shape::set_once(&mut r.model, line.model.as_deref());
        if let Some(e) = line.error {
            r.error_type = Some(match e {
                serde_json::Value::String(_) => "error".to_string(),
                other => other.to_string(),
            });
        }
        let mut output = line.response.is_some_and(|t| !t.is_empty());
        if let Some(m) = line.message {
            output |= m.content.is_some_and(|t| !t.is_empty());
            output |= m.thinking.is_some_and(|t| !t.is_empty());
            for tc in m.tool_calls {
                let Some(f) = tc.function else { continue };
                output = true;
                r.tool_calls.push(ToolCall {
                    choice: 0,
                    id: None,
                    name: f.name,
                    arguments: f.arguments.as_ref().map(compact).unwrap_or_default(),
                });
            }
        }
        if line.done {
            r.usage = Usage {
                input: line.prompt_eval_count,
                output: line.eval_count,
                total: line
                    .prompt_eval_count
                    .zip(line.eval_count)
                    .map(|(a, b)| a + b),
                ..Usage::default()
            };
            r.finish_reasons = line.done_reason.into_iter().collect();
        }
        Some(output)
    }

    /// The stream ended.
    pub(super) fn finish(self) -> ResponseRecord {
        self.record
    }
}

/// A whole JSON body (`"stream": false`); false when it is not a response object.
pub(super) fn parse_json(body: &[u8], r: &mut ResponseRecord) -> bool {
    let mut s = Stream::default();
    if s.line(body).is_none() {
        return false;
    }
    *r = s.finish();
    true
}

#[cfg(test)]
mod tests {
    use crate::providers::{Format, ResponseParser};

    const CHAT: &[u8] = b"{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n\
{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\n\
{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"unit\":\"c\"}}}]},\"done\":false}\n\
{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":4883583458,\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,\"eval_count\":282,\"eval_duration\":4535599000}\n";

    #[test]
    fn ndjson_stream_any_split() {
        for split in [1usize, 5, CHAT.len()] {
            let mut p = ResponseParser::new_ndjson(Format::Ollama, 1 << 20);
            let mut outputs = 0;
            for c in CHAT.chunks(split) {
                outputs += p.feed(c).output_events;
            }
            let r = p.finish();
            assert_eq!(r.usage.input, Some(26), "split {split}");
            assert_eq!(r.usage.output, Some(282));
            assert_eq!(r.model.as_deref(), Some("llama3.2"));
            assert_eq!(r.finish_reasons, ["stop"]);
            assert_eq!(r.tool_calls.len(), 1);
            assert_eq!(r.tool_calls[0].arguments, r#"{"city":"Paris","unit":"c"}"#);
            assert_eq!(outputs, 3);
        }
    }

    #[test]
    fn json_generate_and_missing_prompt_count() {
        let body = br#"{"model":"llama3.2","response":"Hi","done":true,"done_reason":"length","eval_count":5}"#;
        let mut p = ResponseParser::new(Format::Ollama, false, 1 << 20);
        p.feed(body);
        let r = p.finish();
        assert_eq!(
            r.usage.input, None,
            "missing prompt_eval_count stays unknown"
        );
        assert_eq!(r.usage.output, Some(5));
        assert_eq!(r.finish_reasons, ["length"]);
    }
}
