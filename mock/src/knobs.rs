//! Per-request knobs: `x-mock-*` headers over the mock-wide defaults.

use std::time::Duration;

use http::HeaderMap;

use super::content;
use super::script::{self, Dialect, Script};
use super::{Fault, MockOptions};

/// Upper bound for `x-mock-output-chunks` (keeps a typo from allocating gigabytes).
pub const MAX_OUTPUT_CHUNKS: u32 = 1_000_000;
/// Upper bound for `x-mock-events-per-write`.
pub const MAX_EVENTS_PER_WRITE: u32 = 10_000;
/// Upper bound for `x-mock-tool-calls`.
pub const MAX_TOOL_CALLS: u32 = 128;

/// The effective knobs of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knobs {
    pub input_tokens: u64,
    pub output_chunks: u32,
    pub chunk_delay: Duration,
    pub events_per_write: u32,
    pub first_byte_delay: Duration,
    pub tool_calls: u32,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub gzip: bool,
    pub fault: Option<Fault>,
    /// Tool-call arguments lose their last byte (not JSON any more) where the format carries
    /// them as a string: OpenAI chat (JSON and SSE) and Anthropic streams.
    pub truncate_tool_args: bool,
    /// The conversation script (`x-mock-script`), if any.
    pub script: Option<Script>,
    /// `x-mock-input-tokens` was sent: it wins over a script's tokenizer count.
    pub(crate) input_tokens_header: bool,
    /// A scripted tool-call turn: its number (for ids) and the calls' names and arguments.
    pub(crate) scripted: Option<ScriptedCalls>,
}

/// The tool calls of a scripted turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScriptedCalls {
    turn: u32,
    calls: Vec<(String, String)>,
}

/// A knob header with a value the mock does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for header {header}")]
pub struct KnobError {
    pub header: String,
    pub value: String,
}

impl Knobs {
    /// The defaults, without any header.
    pub fn from_options(o: &MockOptions) -> Self {
        Self {
            input_tokens: o.input_tokens,
            output_chunks: o.output_chunks.min(MAX_OUTPUT_CHUNKS),
            chunk_delay: Duration::from_millis(o.chunk_delay_ms),
            events_per_write: o.events_per_write.clamp(1, MAX_EVENTS_PER_WRITE),
            first_byte_delay: Duration::from_millis(o.first_byte_delay_ms),
            tool_calls: o.tool_calls.min(MAX_TOOL_CALLS),
            cached_tokens: o.cached_tokens.min(o.input_tokens),
            reasoning_tokens: o.reasoning_tokens,
            gzip: o.gzip,
            fault: o.fault,
            truncate_tool_args: false,
            script: None,
            input_tokens_header: false,
            scripted: None,
        }
    }

    /// The defaults overridden by `x-mock-*` headers (one pass over the headers, no lookups).
    pub fn from_headers(headers: &HeaderMap, o: &MockOptions) -> Result<Self, KnobError> {
        let mut k = Self::from_options(o);
        for (name, value) in headers {
            let Some(knob) = name.as_str().strip_prefix("x-mock-") else {
                continue;
            };
            let bad = || KnobError {
                header: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            let text = value.to_str().map_err(|_| bad())?.trim();
            let num = || text.parse::<u64>().map_err(|_| bad());
            match knob {
                "input-tokens" => {
                    k.input_tokens = num()?;
                    k.input_tokens_header = true;
                }
                "output-chunks" => {
                    k.output_chunks = u32::try_from(num()?)
                        .ok()
                        .filter(|n| *n <= MAX_OUTPUT_CHUNKS)
                        .ok_or_else(bad)?;
                }
                "chunk-delay-ms" => k.chunk_delay = Duration::from_millis(num()?),
                "events-per-write" => {
                    k.events_per_write = u32::try_from(num()?)
                        .ok()
                        .filter(|n| (1..=MAX_EVENTS_PER_WRITE).contains(n))
                        .ok_or_else(bad)?;
                }
                "first-byte-delay-ms" => k.first_byte_delay = Duration::from_millis(num()?),
                "tool-calls" => {
                    k.tool_calls = u32::try_from(num()?)
                        .ok()
                        .filter(|n| *n <= MAX_TOOL_CALLS)
                        .ok_or_else(bad)?;
                }
                "cached-tokens" => k.cached_tokens = num()?,
                "reasoning-tokens" => k.reasoning_tokens = num()?,
                "gzip" => k.gzip = parse_bool(text).ok_or_else(bad)?,
                "truncate-tool-args" => k.truncate_tool_args = parse_bool(text).ok_or_else(bad)?,
                "fault" => k.fault = Fault::parse_setting(text).map_err(|_| bad())?,
                "script" => k.script = Script::parse_setting(text).map_err(|_| bad())?,
                // Unknown x-mock-* headers are ignored (forward compatible).
                _ => {}
            }
        }
        k.cached_tokens = k.cached_tokens.min(k.input_tokens);
        Ok(k)
    }

    /// Plays this request's turn of the script (if any) from its body: a tool-call turn (no
    /// text, at least one call, the declared tools) or the final answer (no calls); input tokens
    /// from the tokenizer unless `x-mock-input-tokens` was sent.
    pub(crate) fn apply_script(&mut self, dialect: Dialect, body: &[u8]) {
        let Some(Script::AgentLoop) = self.script else {
            return;
        };
        let turn = script::read(dialect, body);
        if !self.input_tokens_header {
            self.input_tokens = turn.input_tokens;
            self.cached_tokens = self.cached_tokens.min(self.input_tokens);
        }
        if turn.answered {
            self.tool_calls = 0;
            return;
        }
        self.output_chunks = 0;
        self.tool_calls = self.tool_calls.max(1);
        let calls = (0..self.tool_calls as usize)
            .map(|i| match turn.tools.get(i % turn.tools.len().max(1)) {
                Some(declared) => declared.clone(),
                None => {
                    let (name, args) = content::tool(i as u32);
                    (name.to_owned(), args.to_owned())
                }
            })
            .collect();
        self.scripted = Some(ScriptedCalls {
            turn: turn.number,
            calls,
        });
    }

    /// Name and JSON arguments of the `i`-th tool call of this answer.
    pub(crate) fn tool(&self, i: u32) -> (&str, &str) {
        match self.scripted.as_ref().and_then(|s| s.calls.get(i as usize)) {
            Some((name, args)) => (name, args),
            None => content::tool(i),
        }
    }

    /// The scripted turn's number, which tool-call ids carry.
    pub(crate) fn turn(&self) -> Option<u32> {
        self.scripted.as_ref().map(|s| s.turn)
    }

    /// The arguments of a canned tool call as this request sends them.
    pub fn tool_args<'a>(&self, args: &'a str) -> &'a str {
        match self.truncate_tool_args {
            true => &args[..args.len().saturating_sub(1)],
            false => args,
        }
    }

    /// Output tokens reported in usage (see [`super::output_tokens`]).
    pub fn output_tokens(&self) -> u64 {
        match &self.scripted {
            None => {
                super::output_tokens(self.output_chunks, self.tool_calls, self.reasoning_tokens)
            }
            Some(s) => s
                .calls
                .iter()
                .map(|(_, args)| content::fragments(args).count() as u64)
                .sum::<u64>()
                .saturating_add(u64::from(self.output_chunks))
                .saturating_add(self.reasoning_tokens),
        }
    }

    /// Output tokens that are visible content (everything except reasoning).
    pub fn visible_output_tokens(&self) -> u64 {
        self.output_tokens().saturating_sub(self.reasoning_tokens)
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn defaults_without_headers() {
        let o = MockOptions::default();
        let k = Knobs::from_headers(&headers(&[("content-type", "application/json")]), &o).unwrap();
        assert_eq!(k, Knobs::from_options(&o));
        assert_eq!(k.output_chunks, 20);
        assert_eq!(k.input_tokens, 12);
        assert_eq!(k.output_tokens(), 20);
    }

    #[test]
    fn headers_override_defaults() {
        let o = MockOptions {
            fault: Some(Fault::Hang),
            ..MockOptions::default()
        };
        let k = Knobs::from_headers(
            &headers(&[
                ("x-mock-input-tokens", "100"),
                ("x-mock-output-chunks", " 3 "),
                ("x-mock-chunk-delay-ms", "5"),
                ("x-mock-events-per-write", "4"),
                ("x-mock-first-byte-delay-ms", "7"),
                ("x-mock-tool-calls", "2"),
                ("x-mock-cached-tokens", "500"),
                ("x-mock-reasoning-tokens", "4"),
                ("x-mock-gzip", "1"),
                ("x-mock-truncate-tool-args", "yes"),
                ("x-mock-fault", "none"),
                ("x-mock-something-new", "whatever"),
            ]),
            &o,
        )
        .unwrap();
        assert_eq!(k.input_tokens, 100);
        assert_eq!(k.output_chunks, 3);
        assert_eq!(k.chunk_delay, Duration::from_millis(5));
        assert_eq!(k.events_per_write, 4);
        assert_eq!(k.first_byte_delay, Duration::from_millis(7));
        assert_eq!(k.tool_calls, 2);
        assert_eq!(k.cached_tokens, 100, "clamped to input tokens");
        assert_eq!(k.reasoning_tokens, 4);
        assert!(k.gzip);
        assert!(k.truncate_tool_args);
        assert_eq!(k.tool_args("{}"), "{");
        assert_eq!(k.fault, None);
        assert_eq!(k.visible_output_tokens(), k.output_tokens() - 4);
    }

    #[test]
    fn invalid_values_are_errors() {
        let o = MockOptions::default();
        for (h, v) in [
            ("x-mock-output-chunks", "-1"),
            ("x-mock-output-chunks", "99999999999"),
            ("x-mock-tool-calls", "1000"),
            ("x-mock-gzip", "maybe"),
            ("x-mock-fault", "explode"),
            ("x-mock-input-tokens", "12k"),
        ] {
            let err = Knobs::from_headers(&headers(&[(h, v)]), &o).unwrap_err();
            assert_eq!(err.header, h);
        }
    }
}
