//! Reading Anthropic Messages response bodies and streams.

use std::borrow::Cow;

use serde::Deserialize;

use crate::providers::shape::{compact, json_key, CacheCreation, ErrorObj};
use crate::providers::usage::{
    ModelUsage, ResponseRecord, ServerToolUse, ToolCall, Usage, MAX_OTHER_MODELS,
};

json_key!(PARTIAL_JSON, "partial_json");

/// Stream state.
#[derive(Default)]
pub struct Stream {
    pub(crate) record: ResponseRecord,
    usage: RawUsage,
    /// (content block index, call).
    calls: Vec<(u32, ToolCall)>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<MessageObj>,
    #[serde(default)]
    index: u32,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct MessageObj {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// Usage fields as Anthropic sends them; `None` = not stated (yet).
#[derive(Deserialize, Default, Clone)]
struct RawUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
    #[serde(default)]
    iterations: Option<Vec<Iteration>>,
    /// Server tool calls billed per call (`web_search_requests`; `web_fetch_requests` costs
    /// only its tokens).
    #[serde(default)]
    server_tool_use: Option<ServerToolRequests>,
}

/// `usage.server_tool_use`: how many times the server tools ran in the call.
#[derive(Deserialize, Default, Clone, Copy)]
struct ServerToolRequests {
    #[serde(default)]
    web_search_requests: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct OutputDetails {
    #[serde(default)]
    thinking_tokens: Option<u64>,
}

/// One sampling step of `usage.iterations` (`message`, `compaction`, `advisor_message`, ...).
#[derive(Deserialize, Default, Clone)]
struct Iteration {
    /// Set on sub-calls that ran on another model (the advisor).
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

/// The counts of one usage object (top level or one iteration) as [`Usage`]: input is
/// uncached + cache read + cache written.
fn counts(
    input: Option<u64>,
    output: Option<u64>,
    read: Option<u64>,
    created: Option<u64>,
    by_ttl: Option<CacheCreation>,
    details: Option<OutputDetails>,
) -> Usage {
    let created = created.or_else(|| by_ttl.and_then(|c| c.total()));
    Usage {
        input: Some(
            input
                .unwrap_or(0)
                .saturating_add(read.unwrap_or(0))
                .saturating_add(created.unwrap_or(0)),
        ),
        output,
        cached_input: read,
        cache_creation_input: created,
        cache_creation_1h: by_ttl.and_then(|c| c.ephemeral_1h_input_tokens),
        reasoning: details.and_then(|d| d.thinking_tokens),
        total: None,
    }
}

// === impl RawUsage ===

impl RawUsage {
    /// Fields stated in `later` replace ours.
    fn update(&mut self, later: &RawUsage) {
        let pairs = [
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        if later.cache_creation.is_some() {
            self.cache_creation = later.cache_creation;
        }
        if later.output_tokens_details.is_some() {
            self.output_tokens_details = later.output_tokens_details;
        }
        if later.iterations.is_some() {
            self.iterations.clone_from(&later.iterations);
        }
        if later.server_tool_use.is_some() {
            self.server_tool_use = later.server_tool_use;
        }
    }

    /// The billed server tool calls (the count is cumulative: the last stated one is the call's).
    fn server_tools(&self) -> ServerToolUse {
        ServerToolUse {
            web_search: self
                .server_tool_use
                .and_then(|s| s.web_search_requests)
                .unwrap_or(0),
            file_search: 0,
        }
    }

    /// The largest input of one iteration, when the usage sums iterations (each a request of
    /// its own as far as long-context prices go).
    fn longest_input(&self) -> Option<u64> {
        self.iterations
            .as_deref()?
            .iter()
            .filter_map(|it| {
                counts(
                    it.input_tokens,
                    it.output_tokens,
                    it.cache_read_input_tokens,
                    it.cache_creation_input_tokens,
                    it.cache_creation,
                    it.output_tokens_details,
                )
                .input
            })
            .max()
    }

    /// Usage as billed, and the parts of it spent on models other than `served`.
    fn to_usage(&self, served: Option<&str>) -> (Usage, Vec<ModelUsage>) {
        if let Some(iterations) = self.iterations.as_deref().filter(|i| !i.is_empty()) {
            return sum_iterations(iterations, served);
        }
        if self.input_tokens.is_none() && self.output_tokens.is_none() {
            return (Usage::default(), Vec::new());
        }
        let usage = counts(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.cache_creation,
            self.output_tokens_details,
        );
        (usage, Vec::new())
    }
}

/// Every iteration added up; those on another model also added up per model (bounded).
fn sum_iterations(iterations: &[Iteration], served: Option<&str>) -> (Usage, Vec<ModelUsage>) {
    let mut total = Usage::default();
    let mut others: Vec<ModelUsage> = Vec::new();
    for it in iterations {
        let u = counts(
            it.input_tokens,
            it.output_tokens,
            it.cache_read_input_tokens,
            it.cache_creation_input_tokens,
            it.cache_creation,
            it.output_tokens_details,
        );
        total = total.plus(&u);
        let Some(model) = it
            .model
            .as_deref()
            .filter(|m| !m.is_empty() && Some(*m) != served)
        else {
            continue;
        };
        if let Some(o) = others.iter_mut().find(|o| o.model == model) {
            o.usage = o.usage.plus(&u);
        } else if others.len() < MAX_OTHER_MODELS {
            others.push(ModelUsage {
                model: model.to_owned(),
                usage: u,
            });
        }
        // Past the bound a sub-call stays in the serving model's part: counted, priced as it.
    }
    (total, others)
}

// === impl Stream ===

impl Stream {
    /// One `data:` payload; `None` when it is not an event, else whether it carried output.
    pub(super) fn event(&mut self, data: &[u8]) -> Option<bool> {
        if data.starts_with(br#"{"type":"content_block_delta""#)
            && PARTIAL_JSON.find(data).is_none()
            && data.ends_with(b"}")
        {
            // Text and thinking deltas, the bulk of a stream: output, nothing to account.
            return Some(true);
        }
        let ev: Event<'_> = serde_json::from_slice(data).ok()?;
        match ev.kind.as_ref() {
            "message_start" => {
                let m = ev.message.unwrap_or_default();
                crate::providers::shape::set_once(&mut self.record.id, m.id.as_deref());
                crate::providers::shape::set_once(&mut self.record.model, m.model.as_deref());
                if let Some(u) = &m.usage {
                    self.usage.update(u);
                }
                Some(false)
            }
            "content_block_start" => {
                if let Some(b) = ev.content_block {
                    self.block_start(ev.index, b);
                }
                Some(false)
            }
            "content_block_delta" => {
                if let Some(d) = ev.delta {
                    if let Some(p) = d.partial_json {
                        if let Some((_, call)) = self.calls.iter_mut().find(|(i, _)| *i == ev.index)
                        {
                            call.arguments.push_str(&p);
                        }
                    }
                    let _ = d.kind;
                }
                Some(true)
            }
            "message_delta" => {
                if let Some(u) = &ev.usage {
                    self.usage.update(u);
                }
                if let Some(r) = ev.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(r);
                }
                Some(false)
            }
            "error" => {
                self.record.error_type = Some(
                    ev.error
                        .as_ref()
                        .map_or_else(|| "error".to_string(), ErrorObj::error_type),
                );
                Some(false)
            }
            _ => Some(false), // ping, content_block_stop, message_stop
        }
    }

    fn block_start(&mut self, index: u32, b: Block) {
        match b.kind.as_str() {
            "tool_use" => {
                self.calls.push((
                    index,
                    ToolCall {
                        choice: 0,
                        id: b.id,
                        name: b.name.unwrap_or_default(),
                        arguments: String::new(),
                    },
                ));
            }
            "server_tool_use" => self
                .record
                .server_tool_calls
                .push(b.name.unwrap_or_default()),
            _ => {}
        }
    }

    /// The stream ended.
    pub(super) fn finish(mut self) -> ResponseRecord {
        (self.record.usage, self.record.other_models) =
            self.usage.to_usage(self.record.model.as_deref());
        self.record.longest_input = self.usage.longest_input();
        self.record.server_tools = self.usage.server_tools();
        self.record.finish_reasons = self.stop_reason.into_iter().collect();
        self.record.tool_calls = self.calls.into_iter().map(|(_, c)| c).collect();
        self.record
    }
}

/// A whole JSON body; false when it is not JSON of this shape.
pub(super) fn parse_json(body: &[u8], r: &mut ResponseRecord) -> bool {
    let Ok(m) = serde_json::from_slice::<MessageObj>(body) else {
        return false;
    };
    if m.kind.as_deref() == Some("error") {
        r.error_type = Some(
            m.error
                .as_ref()
                .map_or_else(|| "error".to_string(), ErrorObj::error_type),
        );
        return true;
    }
    r.id = crate::providers::shape::non_empty(m.id);
    r.model = crate::providers::shape::non_empty(m.model);
    let usage = m.usage.unwrap_or_default();
    (r.usage, r.other_models) = usage.to_usage(r.model.as_deref());
    r.longest_input = usage.longest_input();
    r.server_tools = usage.server_tools();
    r.finish_reasons = m.stop_reason.into_iter().collect();
    for b in m.content {
        match b.kind.as_str() {
            "tool_use" => r.tool_calls.push(ToolCall {
                choice: 0,
                id: b.id,
                name: b.name.unwrap_or_default(),
                arguments: b.input.as_ref().map(compact).unwrap_or_default(),
            }),
            "server_tool_use" => r.server_tool_calls.push(b.name.unwrap_or_default()),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::providers::{Format, ResponseParser, ServerToolUse, MAX_OTHER_MODELS};

    fn json(body: &str) -> crate::providers::ResponseRecord {
        let mut p = ResponseParser::new(Format::Anthropic, false, 1 << 20);
        p.feed(body.as_bytes());
        p.finish()
    }

    /// Iterations are requests of their own: the longest one's input (cache reads and writes
    /// included) is what a long-context threshold is tested against, not their sum.
    #[test]
    fn iterations_name_their_longest_input() {
        let body = r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":25000,"output_tokens":10,"iterations":[{"type":"compaction","input_tokens":170000,"cache_read_input_tokens":10000,"output_tokens":900},{"type":"message","input_tokens":25000,"output_tokens":10}]}}"#;
        let r = json(body);
        assert_eq!(r.usage.input, Some(205_000));
        assert_eq!(r.longest_input, Some(180_000));
        let plain = r#"{"id":"msg_2","type":"message","model":"m","content":[],"usage":{"input_tokens":7,"output_tokens":1}}"#;
        assert_eq!(json(plain).longest_input, None);
    }

    #[test]
    fn sub_calls_on_the_serving_model_stay_in_its_part_and_other_models_are_bounded() {
        let mut iterations = vec![
            r#"{"type":"message","input_tokens":10,"output_tokens":1}"#.to_string(),
            r#"{"type":"advisor_message","model":"claude-sonnet-4-6","input_tokens":5,"output_tokens":2}"#.to_string(),
        ];
        for i in 0..MAX_OTHER_MODELS + 2 {
            iterations.push(format!(
                r#"{{"type":"advisor_message","model":"m{i}","input_tokens":1,"output_tokens":1}}"#
            ));
        }
        let body = format!(
            r#"{{"id":"msg_1","type":"message","model":"claude-sonnet-4-6","content":[],"usage":{{"input_tokens":10,"output_tokens":1,"iterations":[{}]}}}}"#,
            iterations.join(",")
        );
        let r = json(&body);
        let n = MAX_OTHER_MODELS as u64;
        assert_eq!(r.usage.input, Some(15 + n + 2));
        assert_eq!(r.usage.output, Some(3 + n + 2));
        assert_eq!(r.other_models.len(), MAX_OTHER_MODELS);
        // The serving model's own part: its iterations and the sub-calls past the bound.
        assert_eq!(r.own_usage().input, Some(15 + 2));
    }

    #[test]
    fn one_hour_cache_writes_are_kept_apart() {
        let r = json(
            r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-6","content":[],"usage":{"input_tokens":1,"output_tokens":2,"cache_creation":{"ephemeral_5m_input_tokens":456,"ephemeral_1h_input_tokens":100}}}"#,
        );
        assert_eq!(
            r.usage.input,
            Some(557),
            "the breakdown alone states the writes"
        );
        assert_eq!(
            (r.usage.cache_creation_input, r.usage.cache_creation_1h),
            (Some(556), Some(100))
        );
    }

    /// A call whose model searched the web states the searches in `usage.server_tool_use`,
    /// apart from its tokens (recorded: one search by Claude Sonnet 4).
    #[test]
    fn web_searches_are_read_from_the_usage_apart_from_the_tokens() {
        let r = json(include_str!(
            "../../../tests/fixtures/corpus/anthropic/json_web_search_server_tool.response.json"
        ));
        assert_eq!((r.usage.input, r.usage.output), (Some(8984), Some(520)));
        assert_eq!(
            r.server_tools,
            ServerToolUse {
                web_search: 1,
                file_search: 0
            }
        );
        let r = json(
            r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4-6","content":[],"usage":{"input_tokens":1,"output_tokens":2,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":3}}}"#,
        );
        assert!(r.server_tools.is_empty(), "web fetches cost only tokens");
    }

    /// In a stream the `message_delta` states the call's cumulative server tool use; split
    /// anywhere, the count is the same.
    #[test]
    fn a_stream_takes_the_searches_from_its_final_usage() {
        let body: &[u8] = include_bytes!(
            "../../../tests/fixtures/corpus/anthropic/sse_web_search_usage_grows.response.sse"
        );
        for size in [7, 4096] {
            let mut p = ResponseParser::new(Format::Anthropic, true, 1 << 20);
            for chunk in body.chunks(size) {
                p.feed(chunk);
            }
            let r = p.finish();
            assert_eq!(r.usage.input, Some(10423));
            assert_eq!(r.server_tools.web_search, 1, "chunks of {size}");
        }
        // A later delta's count replaces an earlier one (cumulative), never adds to it.
        let mut p = ResponseParser::new(Format::Anthropic, true, 1 << 20);
        p.feed(b"data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-sonnet-4-6\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n");
        p.feed(b"data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":3,\"server_tool_use\":{\"web_search_requests\":2}}}\n\n");
        p.feed(b"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9,\"server_tool_use\":{\"web_search_requests\":3}}}\n\n");
        assert_eq!(p.finish().server_tools.web_search, 3);
    }
}
