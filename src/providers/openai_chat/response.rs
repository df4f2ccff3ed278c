//! Reading OpenAI Chat Completions response bodies and streams.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::providers::recurring::Recurring;
use crate::providers::shape::{json_key, set_once, CacheCreation, ErrorObj};
use crate::providers::usage::{AudioTokens, ResponseRecord, ToolCall, Usage};

mod skim;

/// Stream state.
#[derive(Default)]
pub struct Stream {
    pub(crate) record: ResponseRecord,
    calls: Vec<(u32, u32, ToolCall)>,
    finish: BTreeMap<u32, String>,
    /// The last text-only verdict, for the chunks that repeat its chunk but for what its value
    /// strings say (text, id, padding), each as empty or not as it was.
    text_only: Recurring<bool>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct Chunk<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

/// Groq's extension object; its older shape carries the usage here instead of `usage`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct XGroq {
    #[serde(default)]
    usage: Option<ChatUsage>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct ChunkChoice<'a> {
    #[serde(default)]
    pub(super) index: u32,
    #[serde(default, borrow)]
    pub(super) delta: Option<Delta<'a>>,
    /// Legacy Completions stream the text on the choice itself.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) tool_calls: Option<Vec<DeltaToolCall<'a>>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct DeltaToolCall<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<DeltaFunction<'a>>,
    /// A custom tool's call: `{"name", "input"}`, the input free text.
    #[serde(default, borrow)]
    custom: Option<DeltaCustom<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct DeltaCustom<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct DeltaFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// `usage` of chat completions, with the fields compatible servers add.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek: prompt tokens served from its context cache.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
    /// Moonshot: cached prompt tokens at the top level.
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// LiteLLM (Anthropic behind the OpenAI shape): cache writes at the top level.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    /// Perplexity: reasoning tokens, outside `completion_tokens`.
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    /// Perplexity: search results read as input, outside `prompt_tokens`.
    #[serde(default)]
    citation_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    /// OpenRouter.
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    /// DashScope.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    /// LiteLLM.
    #[serde(default)]
    cache_creation_tokens: Option<u64>,
    /// DashScope: writes by lifetime.
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    /// LiteLLM: writes by lifetime.
    #[serde(default)]
    cache_creation_token_details: Option<CacheCreation>,
    /// Audio input (gpt-4o-audio-preview, gpt-audio), part of `prompt_tokens`.
    #[serde(default)]
    audio_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    /// Audio output, part of `completion_tokens`.
    #[serde(default)]
    audio_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Completion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Message {
    #[serde(default)]
    tool_calls: Option<Vec<MessageToolCall>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct MessageToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<MessageFunction>,
    /// A custom tool's call: `{"name", "input"}`, the input free text.
    #[serde(default)]
    custom: Option<MessageCustom>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct MessageCustom {
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct MessageFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

// === impl ChatUsage ===

impl ChatUsage {
    pub(super) fn to_usage(&self) -> Usage {
        let details = self.prompt_tokens_details.as_ref();
        let detail = |f: fn(&PromptDetails) -> Option<u64>| details.and_then(f);
        let by_ttl = details.and_then(|d| d.cache_creation.or(d.cache_creation_token_details));
        let stated_reasoning = self
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens);
        // Perplexity Deep Research: a top-level reasoning count beside citation tokens. Only this
        // shape bills citation tokens (as input); Sonar and Sonar Pro state them but do not
        // bill them, so there `prompt_tokens` stays the input.
        let deep_research = self.reasoning_tokens.is_some() && self.citation_tokens.is_some();
        let (reasoning, outside) = match (stated_reasoning, self.reasoning_tokens) {
            (Some(r), _) => (
                Some(r),
                self.completion_tokens.is_some_and(|c| r > c)
                    || crate::providers::shape::reasoning_outside(
                        self.prompt_tokens,
                        self.completion_tokens,
                        Some(r),
                        self.total_tokens,
                    ),
            ),
            // A top-level count is Perplexity's (outside, and billed apart). Either way a count
            // larger than the output cannot be part of it.
            (None, Some(r)) => (
                Some(r),
                deep_research
                    || self.completion_tokens.is_some_and(|c| r > c)
                    || crate::providers::shape::reasoning_outside(
                        self.prompt_tokens,
                        self.completion_tokens,
                        Some(r),
                        self.total_tokens,
                    ),
            ),
            (None, None) => (None, false),
        };
        let output = match (self.completion_tokens, outside) {
            (Some(c), true) => Some(c.saturating_add(reasoning.unwrap_or(0))),
            (c, _) => c,
        };
        let input = self
            .prompt_tokens
            .map(|p| p.saturating_add(self.citation_tokens.filter(|_| deep_research).unwrap_or(0)));
        Usage {
            input,
            output,
            cached_input: detail(|d| d.cached_tokens)
                .or(self.prompt_cache_hit_tokens)
                .or(self.cached_tokens),
            cache_creation_input: detail(|d| d.cache_write_tokens)
                .or(detail(|d| d.cache_creation_input_tokens))
                .or(detail(|d| d.cache_creation_tokens))
                .or(self.cache_creation_input_tokens)
                .or(by_ttl.and_then(|c| c.total())),
            cache_creation_1h: by_ttl.and_then(|c| c.ephemeral_1h_input_tokens),
            reasoning,
            total: self.total_tokens,
        }
    }

    /// The audio part of the usage (audio models bill audio at several times the text rate),
    /// when any is stated. OpenAI states `audio_tokens: 0` on every text call: no audio part
    /// then, as for a body that states none. Chat states no cached audio apart.
    pub(super) fn audio(&self) -> Option<AudioTokens> {
        let input = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.audio_tokens)
            .unwrap_or(0);
        let output = self
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.audio_tokens)
            .unwrap_or(0);
        (input > 0 || output > 0).then_some(AudioTokens {
            input,
            cached_input: 0,
            output,
        })
    }
}

/// A stream chunk's data read as a [`Chunk`]: by the skim, else (where it steps aside) by
/// serde_json; `None` when it is not one.
pub(super) fn read_chunk(data: &[u8]) -> Option<Chunk<'_>> {
    skim::chunk(data).or_else(|| serde_json::from_slice(data).ok())
}

/// The usage a body states: `usage`, else Groq's `x_groq.usage`.
fn stated<'u>(usage: &'u Option<ChatUsage>, x_groq: &'u Option<XGroq>) -> Option<&'u ChatUsage> {
    usage
        .as_ref()
        .or_else(|| x_groq.as_ref().and_then(|x| x.usage.as_ref()))
}

// === impl Stream ===

impl Stream {
    /// One `data:` payload; `None` when it is not a chunk, else whether it carried output.
    pub(super) fn event(&mut self, data: &[u8]) -> Option<bool> {
        if crate::sse::is_done(data) {
            return Some(false);
        }
        if self.record.model.is_some() {
            if let Some(output) = self.text_only.get(data) {
                return Some(output);
            }
            if let Some(output) = text_only(data) {
                // The common chunk: a text delta and nothing else we account. Skip the parse.
                self.text_only.keep(data, output);
                return Some(output);
            }
        }
        let chunk = read_chunk(data)?;
        set_once(&mut self.record.id, chunk.id.as_deref());
        set_once(&mut self.record.model, chunk.model.as_deref());
        if let Some(u) = stated(&chunk.usage, &chunk.x_groq) {
            self.record.usage = u.to_usage();
            self.record.audio = u.audio();
        }
        if let Some(e) = &chunk.error {
            self.record.error_type = Some(e.error_type());
        }
        let mut output = false;
        for c in chunk.choices {
            if let Some(f) = c.finish_reason {
                self.finish.insert(c.index, f.into_owned());
            }
            output |= c.text.is_some_and(|t| !t.is_empty());
            let Some(d) = c.delta else { continue };
            output |= [&d.content, &d.reasoning_content, &d.refusal]
                .iter()
                .any(|t| t.as_ref().is_some_and(|t| !t.is_empty()));
            for tc in d.tool_calls.unwrap_or_default() {
                output = true;
                self.tool_fragment(c.index, tc);
            }
        }
        Some(output)
    }

    fn tool_fragment(&mut self, choice: u32, tc: DeltaToolCall<'_>) {
        add_delta(&mut self.calls, choice, tc);
    }

    /// The stream ended.
    pub(super) fn finish(mut self) -> ResponseRecord {
        self.record.finish_reasons = self.finish.into_values().collect();
        self.record.tool_calls = self.calls.into_iter().map(|(_, _, c)| c).collect();
        self.record
    }
}

/// Add one `tool_calls[]` delta of choice `choice` to the calls assembled so far.
pub(super) fn add_delta(calls: &mut Vec<(u32, u32, ToolCall)>, choice: u32, tc: DeltaToolCall<'_>) {
    let (name, arguments) = tc.parts();
    add_fragment(calls, (choice, tc.index), tc.id.as_deref(), name, arguments);
}

// === impl DeltaToolCall ===

impl DeltaToolCall<'_> {
    /// The name and arguments a fragment brings: a function call's, else a custom tool call's
    /// (its input taken as the arguments).
    fn parts(&self) -> (Option<&str>, Option<&str>) {
        match (&self.function, &self.custom) {
            (Some(f), _) => (f.name.as_deref(), f.arguments.as_deref()),
            (None, Some(c)) => (c.name.as_deref(), c.input.as_deref()),
            (None, None) => (None, None),
        }
    }

    /// Whether the fragment is both a function and a custom tool call: which one an agent runs
    /// (by the call's `type`) cannot be told from it.
    pub(super) fn ambiguous(&self) -> bool {
        self.function.is_some() && self.custom.is_some()
    }
}

/// Add one `tool_calls[]` fragment to the calls assembled so far, by (choice, index): the id
/// and name from the fragment that carries them, arguments joined. A fragment bringing another
/// id, or another name once arguments have come, starts a new call at the same index:
/// compatible servers (Gemini's OpenAI endpoint among them) omit or repeat `index` for parallel
/// calls.
fn add_fragment(
    calls: &mut Vec<(u32, u32, ToolCall)>,
    (choice, index): (u32, u32),
    id: Option<&str>,
    name: Option<&str>,
    arguments: Option<&str>,
) {
    let pos = calls
        .iter()
        .rposition(|(ch, ix, _)| *ch == choice && *ix == index)
        .filter(|p| {
            let c = &calls[*p].2;
            !other_id(c, id) && !other_name(c, name)
        });
    let call = match pos {
        Some(p) => &mut calls[p].2,
        None => {
            calls.push((
                choice,
                index,
                ToolCall {
                    choice,
                    id: None,
                    name: String::new(),
                    arguments: String::new(),
                },
            ));
            let last = calls.len() - 1;
            &mut calls[last].2
        }
    };
    if let Some(id) = id {
        call.id = Some(id.to_string());
    }
    match name {
        // Some servers repeat the name on every fragment.
        Some(n) if n == call.name => {}
        Some(n) => call.name.push_str(n),
        None => {}
    }
    call.arguments.push_str(arguments.unwrap_or_default());
}

/// Whether a fragment bringing `id` is another call than `c`: it brings an id of its own.
fn other_id(c: &ToolCall, id: Option<&str>) -> bool {
    matches!((id, c.id.as_deref()), (Some(a), Some(b)) if a != b)
}

/// Whether a fragment bringing `name` names another call than `c`, whose name and arguments
/// have come.
fn other_name(c: &ToolCall, name: Option<&str>) -> bool {
    name.is_some_and(|n| !n.is_empty() && n != c.name)
        && !c.name.is_empty()
        && !c.arguments.is_empty()
}

/// Whether `tc` would rename the call its (choice, index) holds in `calls`: another name, once
/// arguments have come, without an id of its own. [`add_delta`] starts a new call for it (servers
/// that omit or repeat `index`), but the SDKs join it to the call's name (`send` + `_email`):
/// which call an agent runs cannot be told.
pub(super) fn renames(calls: &[(u32, u32, ToolCall)], choice: u32, tc: &DeltaToolCall<'_>) -> bool {
    let Some((_, _, c)) = calls
        .iter()
        .rev()
        .find(|(ch, ix, _)| *ch == choice && *ix == tc.index)
    else {
        return false;
    };
    let (name, _) = tc.parts();
    other_name(c, name) && !other_id(c, tc.id.as_deref())
}

/// For a chunk that carries no usage, tool call, finish reason or error at any depth (only
/// text, if anything): whether it carries text. `None` for any other chunk, which is parsed.
/// Every occurrence of a key counts, not only the first: a chunk of several choices may close
/// one while another still streams. Its verdict is reused for chunks that differ only in their
/// strings ([`Recurring`]): it must keep reading only what that allows — keys found by search,
/// the first two bytes of their values.
fn text_only(data: &[u8]) -> Option<bool> {
    use crate::providers::shape::{any_value, any_value_where};
    let set = |k| any_value(data, k, |b| b != b'n');
    if set(&USAGE) || set(&FINISH_REASON) || set(&TOOL_CALLS) || set(&ERROR) {
        return None;
    }
    if !any_value(data, &CHOICES, |_| true) {
        return None;
    }
    // A non-empty string: `"` and a first character that is not the closing quote.
    let text = |v: &[u8]| v.len() > 1 && v[0] == b'"' && v[1] != b'"';
    Some(
        [&*CONTENT, &*REASONING_CONTENT, &*REFUSAL, &*TEXT]
            .into_iter()
            .any(|k| any_value_where(data, k, text)),
    )
}

json_key!(USAGE, "usage");
json_key!(FINISH_REASON, "finish_reason");
json_key!(TOOL_CALLS, "tool_calls");
json_key!(ERROR, "error");
json_key!(CHOICES, "choices");
json_key!(CONTENT, "content");
json_key!(REASONING_CONTENT, "reasoning_content");
json_key!(REFUSAL, "refusal");
json_key!(TEXT, "text");

/// A whole JSON body; false when it is not JSON of this shape.
pub(super) fn parse_json(body: &[u8], r: &mut ResponseRecord) -> bool {
    let c = match skim::completion(body) {
        Some(c) => c,
        None => match serde_json::from_slice::<Completion>(body) {
            Ok(c) => c,
            Err(_) => return false,
        },
    };
    r.id = crate::providers::shape::non_empty(c.id);
    r.model = crate::providers::shape::non_empty(c.model);
    if let Some(u) = stated(&c.usage, &c.x_groq) {
        r.usage = u.to_usage();
        r.audio = u.audio();
    }
    r.error_type = c.error.as_ref().map(ErrorObj::error_type);
    let mut choices = c.choices;
    choices.sort_by_key(|c| c.index);
    for ch in choices {
        if let Some(f) = ch.finish_reason {
            r.finish_reasons.push(f);
        }
        for tc in ch.message.and_then(|m| m.tool_calls).unwrap_or_default() {
            let (name, arguments) = match (tc.function, tc.custom) {
                // Which of the two an agent runs cannot be told: not this format's JSON.
                (Some(_), Some(_)) => return false,
                (Some(f), None) => (f.name, f.arguments),
                // A custom tool's call is checked under its name, its input as the arguments.
                (None, Some(c)) => (c.name, c.input),
                (None, None) => (String::new(), String::new()),
            };
            r.tool_calls.push(ToolCall {
                choice: ch.index,
                id: tc.id,
                name,
                arguments,
            });
        }
    }
    true
}

#[cfg(test)]
mod audio_tests {
    use crate::providers::{AudioTokens, Format, ResponseParser};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wild/openai");

    fn read(name: &str, stream: bool) -> crate::providers::ResponseRecord {
        let body = std::fs::read(format!("{DIR}/{name}")).expect("fixture");
        let mut p = ResponseParser::new(Format::OpenAiChat, stream, 1 << 20);
        for part in body.chunks(13) {
            p.feed(part);
        }
        p.finish()
    }

    #[test]
    fn audio_tokens_of_chat_usage_are_the_audio_part_in_json_and_streams() {
        let want = Some(AudioTokens {
            input: 100,
            cached_input: 0,
            output: 588,
        });
        for (name, stream) in [("chat_audio.json", false), ("chat_audio_stream.sse", true)] {
            let r = read(name, stream);
            assert_eq!(
                (r.usage.input, r.usage.output),
                (Some(117), Some(781)),
                "{name}"
            );
            assert_eq!(r.audio, want, "{name}");
        }
        // `audio_tokens: 0`, as on every text call: no audio part.
        let text = br#"{"id":"c","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}"#;
        let mut r = crate::providers::ResponseRecord::default();
        assert!(super::parse_json(text, &mut r));
        assert_eq!(r.audio, None);
        // serde_json's reading (where the skim steps aside) says the same.
        let body = std::fs::read(format!("{DIR}/chat_audio.json")).expect("fixture");
        let c: super::Completion = serde_json::from_slice(&body).expect("completion");
        assert_eq!(c.usage.expect("usage").audio(), want);
    }
}

#[cfg(test)]
mod legacy_tests {
    use crate::providers::{Format, ResponseParser};

    /// Legacy Completions, as the OpenAI API reference documents them.
    const JSON: &str = r#"{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
    const SSE: &str = concat!(
        "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created\":1690759702,\"choices\":[{\"text\":\"This\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
        "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created\":1690759702,\"choices\":[{\"text\":\" is\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
        "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created\":1690759702,\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
        "data: {\"id\":\"cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe\",\"object\":\"text_completion\",\"created\":1690759702,\"choices\":[],\"model\":\"gpt-3.5-turbo-instruct\",\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn legacy_completion_json() {
        let mut p = ResponseParser::new(Format::OpenAiChat, false, 1 << 20);
        p.feed(JSON.as_bytes());
        let r = p.finish();
        assert_eq!(r.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        assert_eq!((r.usage.input, r.usage.output), (Some(5), Some(7)));
        assert_eq!(r.finish_reasons, ["length"]);
    }

    #[test]
    fn legacy_completion_stream_counts_text_chunks_as_output() {
        let mut p = ResponseParser::new(Format::OpenAiChat, true, 1 << 20);
        let outputs: u32 = SSE
            .as_bytes()
            .chunks(7)
            .map(|c| p.feed(c).output_events)
            .sum();
        assert_eq!(outputs, 2, "two non-empty text chunks");
        let (r, sample) = p.finish_with_sample();
        assert_eq!((r.usage.input, r.usage.output), (Some(4), Some(2)));
        assert_eq!(r.finish_reasons, ["stop"]);
        assert_eq!(r.id.as_deref(), Some("cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe"));
        assert_eq!(sample.estimate_tokens(), 2, "\"This is\" is two tokens");
    }
}

#[cfg(test)]
mod usage_shape_tests {
    use super::ChatUsage;

    fn usage(json: &str) -> crate::providers::Usage {
        serde_json::from_str::<ChatUsage>(json).unwrap().to_usage()
    }

    #[test]
    fn sonar_citation_tokens_are_stated_not_billed() {
        // Sonar Pro states citation tokens without billing them: the input is the prompt.
        let u = usage(
            r#"{"prompt_tokens":12,"completion_tokens":300,"total_tokens":312,"citation_tokens":2200,"num_search_queries":1}"#,
        );
        assert_eq!(
            (u.input, u.output, u.reasoning),
            (Some(12), Some(300), None)
        );
    }

    #[test]
    fn reasoning_is_outside_only_when_the_numbers_say_so() {
        // OpenAI: inside (total = prompt + completion).
        let u = usage(
            r#"{"prompt_tokens":32,"completion_tokens":100,"total_tokens":132,"completion_tokens_details":{"reasoning_tokens":94}}"#,
        );
        assert_eq!((u.output, u.reasoning), (Some(100), Some(94)));
        // xAI: beside (total = prompt + completion + reasoning).
        let u = usage(
            r#"{"prompt_tokens":32,"completion_tokens":9,"total_tokens":135,"completion_tokens_details":{"reasoning_tokens":94}}"#,
        );
        assert_eq!(u.output, Some(103));
        // No total, but reasoning larger than the completion cannot be inside it.
        let u = usage(
            r#"{"prompt_tokens":32,"completion_tokens":9,"completion_tokens_details":{"reasoning_tokens":94}}"#,
        );
        assert_eq!(u.output, Some(103));
        // A top-level count that fits and no Perplexity fields: taken as inside.
        let u = usage(
            r#"{"prompt_tokens":5,"completion_tokens":50,"total_tokens":55,"reasoning_tokens":20}"#,
        );
        assert_eq!(
            (u.input, u.output, u.reasoning),
            (Some(5), Some(50), Some(20))
        );
    }

    #[test]
    fn cache_fields_of_compatible_servers() {
        let u = usage(
            r#"{"prompt_tokens":100,"completion_tokens":1,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}"#,
        );
        assert_eq!(u.cached_input, Some(64));
        let u = usage(
            r#"{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":10,"cache_creation_tokens":80,"cache_creation_token_details":{"ephemeral_5m_input_tokens":50,"ephemeral_1h_input_tokens":30}}}"#,
        );
        assert_eq!(
            (u.cached_input, u.cache_creation_input, u.cache_creation_1h),
            (Some(10), Some(80), Some(30))
        );
        let u = usage(
            r#"{"prompt_tokens":100,"completion_tokens":1,"prompt_tokens_details":{"cache_creation":{"ephemeral_5m_input_tokens":70}}}"#,
        );
        assert_eq!(
            (u.cache_creation_input, u.cache_creation_1h),
            (Some(70), None)
        );
    }
}

#[cfg(test)]
mod text_only_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The raw values of every occurrence of `key` as a key, found by searching the text.
    fn values<'a>(data: &'a [u8], key: &memchr::memmem::Finder<'static>) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(v) = crate::providers::shape::value_at(&data[from..], key) {
            out.push(v);
            from = data.len() - v.len();
        }
        out
    }

    /// The decision written out plainly: every value of every key, then the rules.
    fn searched(data: &[u8]) -> Option<bool> {
        let quiet = [&*USAGE, &*FINISH_REASON, &*TOOL_CALLS, &*ERROR]
            .into_iter()
            .all(|k| {
                values(data, k)
                    .iter()
                    .all(|v| matches!(v.first(), None | Some(b'n')))
            })
            && values(data, &CHOICES).iter().any(|v| !v.is_empty());
        quiet.then(|| {
            [&*CONTENT, &*REASONING_CONTENT, &*REFUSAL, &*TEXT]
                .into_iter()
                .any(|k| {
                    values(data, k)
                        .iter()
                        .any(|v| v.len() > 1 && v[0] == b'"' && v[1] != b'"')
                })
        })
    }

    /// JSON whose keys are the ones the test reads and whose strings spell them, quoted,
    /// escaped and followed by colons.
    fn value() -> impl Strategy<Value = Value> {
        let names = "(usage|finish_reason|tool_calls|error|choices|content|reasoning_content|refusal|text|delta|[a-c])";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i16>().prop_map(Value::from),
            "(content|usage|choices|\"|\\\\|:|,| |[a-z]){0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((names, inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decides_by_every_occurrence_of_each_key(v in value(), pretty in any::<bool>()) {
            let data = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            // (Before, `"choices"` anywhere in the text, a string value too, let a chunk skip its
            // parse; now only the key does, and such a chunk is parsed.)
            let (got, want) = (text_only(data.as_bytes()), searched(data.as_bytes()));
            prop_assert_eq!(got, want, "{}", data);
        }

        /// A chunk that fits the last one kept gets the verdict the test gives it: for JSON as
        /// serde writes it and for events with other spacing, their strings refilled with
        /// escapes and key-like text.
        #[test]
        fn a_chunk_fitting_the_last_gets_the_tests_own_verdict(
            v in value(),
            event in crate::providers::recurring::testing::event(),
            fill in prop::collection::vec(crate::providers::recurring::testing::contents(), 1..4),
        ) {
            use crate::providers::recurring::testing::refill;
            for data in [serde_json::to_string(&v).unwrap(), event] {
                let Some(verdict) = text_only(data.as_bytes()) else { continue };
                let mut kept = Recurring::default();
                kept.keep(data.as_bytes(), verdict);
                let other = refill(&data, &fill);
                prop_assert_eq!(kept.get(other.as_bytes()), Some(verdict), "{}", other);
                prop_assert_eq!(text_only(other.as_bytes()), Some(verdict), "{} / {}", data, other);
            }
        }

        #[test]
        fn a_chunk_taken_for_text_only_carries_nothing_else_the_parse_reads(v in value()) {
            let data = serde_json::to_string(&v).unwrap();
            if text_only(data.as_bytes()).is_some() {
                if let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(&data) {
                    prop_assert!(chunk.usage.is_none() && chunk.error.is_none(), "{}", data);
                    for c in &chunk.choices {
                        prop_assert!(c.finish_reason.is_none(), "{}", data);
                        let tools = c.delta.as_ref().and_then(|d| d.tool_calls.as_ref());
                        prop_assert!(tools.is_none_or(Vec::is_empty), "{}", data);
                    }
                }
            }
        }
    }

    #[test]
    fn a_choice_that_ends_beside_one_that_streams_is_recorded() {
        let sse = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}},{\"index\":1,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null},{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let mut p = crate::providers::ResponseParser::new(
            crate::providers::Format::OpenAiChat,
            true,
            1 << 20,
        );
        p.feed(sse.as_bytes());
        assert_eq!(p.finish().finish_reasons, ["stop", "length"]);
    }

    #[test]
    fn reads_keys_not_text() {
        let cases: [(&str, Option<bool>); 8] = [
            (
                r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#,
                Some(true),
            ),
            (
                r#"{"choices":[{"delta":{"content":""},"finish_reason":null}]}"#,
                Some(false),
            ),
            (
                r#"{"choices":[{"delta":{"content":"say \"usage\": 1"}}]}"#,
                Some(true),
            ),
            (r#"{"choices":[{"text":"x"}], "usage" : null}"#, Some(true)),
            (r#"{"choices":[],"usage":{"total_tokens":3}}"#, None),
            (r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#, None),
            (r#"{"id":"x","delta":{"content":"no choices key"}}"#, None),
            // Every occurrence counts: one choice still streams while another ends.
            (
                r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null},{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
                None,
            ),
        ];
        for (data, want) in cases {
            assert_eq!(text_only(data.as_bytes()), want, "{data}");
        }
        // Truncated input never reads past its end.
        let whole = r#"{"choices":[{"delta":{"content":"a\"b"}}]}"#;
        for cut in 0..whole.len() {
            let _ = text_only(&whole.as_bytes()[..cut]);
        }
    }
}
