//! What a provider's response says: usage, served model, finish reasons, tool calls, errors.

/// Token usage as the provider states it. `input` counts every input token (cached and
/// cache-written included, as the GenAI conventions do); the others are subsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens.
    pub input: Option<u64>,
    /// All output tokens, reasoning included.
    pub output: Option<u64>,
    /// Input tokens read from the provider's cache.
    pub cached_input: Option<u64>,
    /// Input tokens written to the provider's cache (every lifetime).
    pub cache_creation_input: Option<u64>,
    /// Of `cache_creation_input`, the tokens written with a one-hour lifetime (Anthropic's
    /// `ephemeral_1h_input_tokens`); the rest are five-minute writes. Priced apart.
    pub cache_creation_1h: Option<u64>,
    /// Reasoning / thinking tokens.
    pub reasoning: Option<u64>,
    /// The provider's own total, when it states one.
    pub total: Option<u64>,
}

/// Audio tokens within a response's usage (the Realtime API and Chat Completions' audio models
/// state them apart): subsets of [`Usage`]'s `input`, `cached_input` and `output`, priced apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioTokens {
    /// Audio input tokens (cached ones included).
    pub input: u64,
    /// Of `input`, the audio tokens read from the provider's cache.
    pub cached_input: u64,
    /// Audio output tokens.
    pub output: u64,
}

/// Calls of the tools a provider runs itself and bills per call on top of tokens, as the response
/// states them: Anthropic's `usage.server_tool_use.web_search_requests`, the OpenAI Responses API's
/// `web_search_call` and `file_search_call` output items. Kept out of [`Usage`]: they are no
/// tokens, and are priced per 1,000 calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerToolUse {
    /// Web searches the provider ran.
    pub web_search: u64,
    /// File searches the provider ran (OpenAI Responses `file_search_call`).
    pub file_search: u64,
}

impl ServerToolUse {
    /// Whether no billed tool ran.
    pub fn is_empty(&self) -> bool {
        self.web_search == 0 && self.file_search == 0
    }

    /// The counts of `self` and `other` added.
    pub fn plus(&self, other: &ServerToolUse) -> ServerToolUse {
        ServerToolUse {
            web_search: self.web_search.saturating_add(other.web_search),
            file_search: self.file_search.saturating_add(other.file_search),
        }
    }
}

/// Most distinct other models a record keeps; a sub-call on one more model stays in the serving
/// model's part (bounded memory whatever a body lists).
pub const MAX_OTHER_MODELS: usize = 4;

/// Usage one response spent on a model other than the one that served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    /// The model, as the provider names it.
    pub model: String,
    /// What it spent (a part of the record's usage).
    pub usage: Usage,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// Choice / candidate index it belongs to.
    pub choice: u32,
    /// Call id, when the provider gives one.
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments as a JSON string (assembled from stream fragments).
    pub arguments: String,
}

/// Everything read from one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseRecord {
    /// Model the provider says served the call.
    pub model: Option<String>,
    /// Response id.
    pub id: Option<String>,
    /// Usage, when the body stated any.
    pub usage: Usage,
    /// Finish reason per choice / candidate (Responses: the status).
    pub finish_reasons: Vec<String>,
    /// Client tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Provider-executed tools (names or item types).
    pub server_tool_calls: Vec<String>,
    /// Parts of `usage` spent on models other than `model` (Anthropic advisor sub-calls), each
    /// priced and counted as its own model; at most [`MAX_OTHER_MODELS`] entries.
    pub other_models: Vec<ModelUsage>,
    /// Error type from an error body or an error event in a stream.
    pub error_type: Option<String>,
    /// Why (part of) the body could not be read, if it could not.
    pub unparsed: Option<&'static str>,
    /// The usage was billed at the batch rate (an OpenAI batch output file, an Anthropic Message
    /// Batch's results).
    pub batch: bool,
    /// The audio part of `usage`, when the response states one.
    pub audio: Option<AudioTokens>,
    /// Calls of provider-run tools billed per call (web and file searches), apart from `usage`.
    pub server_tools: ServerToolUse,
    /// When `usage` sums several requests (Anthropic's `usage.iterations`, a batch file), the
    /// largest one request's input: what a long-context price's threshold is tested against
    /// (each request crosses it or not on its own).
    pub longest_input: Option<u64>,
}

// === impl Usage ===

impl Usage {
    /// Whether the body stated any usage at all.
    pub fn is_present(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }

    /// The counts of `self` and `other` added field by field (a field neither states stays
    /// unstated).
    pub fn plus(&self, other: &Usage) -> Usage {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        Usage {
            input: add(self.input, other.input),
            output: add(self.output, other.output),
            cached_input: add(self.cached_input, other.cached_input),
            cache_creation_input: add(self.cache_creation_input, other.cache_creation_input),
            cache_creation_1h: add(self.cache_creation_1h, other.cache_creation_1h),
            reasoning: add(self.reasoning, other.reasoning),
            total: add(self.total, other.total),
        }
    }

    /// `self` less a part of it (`other`), field by field, never below zero.
    pub fn minus(&self, other: &Usage) -> Usage {
        let sub = |a: Option<u64>, b: Option<u64>| a.map(|a| a.saturating_sub(b.unwrap_or(0)));
        Usage {
            input: sub(self.input, other.input),
            output: sub(self.output, other.output),
            cached_input: sub(self.cached_input, other.cached_input),
            cache_creation_input: sub(self.cache_creation_input, other.cache_creation_input),
            cache_creation_1h: sub(self.cache_creation_1h, other.cache_creation_1h),
            reasoning: sub(self.reasoning, other.reasoning),
            total: sub(self.total, other.total),
        }
    }
}

// === impl ResponseRecord ===

impl ResponseRecord {
    /// The part of `usage` the serving model spent: everything but `other_models`.
    pub fn own_usage(&self) -> Usage {
        self.other_models
            .iter()
            .fold(self.usage, |u, o| u.minus(&o.usage))
    }

    /// Add one request of a batch to this record of the whole batch: usage summed, and every
    /// part spent on a model other than the first one named (the request's own model, its
    /// sub-calls on others) kept apart per model, so each is priced as its own model.
    pub fn add_request(&mut self, one: ResponseRecord) {
        let longest = one.longest_input.or(one.usage.input);
        self.longest_input = self.longest_input.max(longest);
        self.server_tools = self.server_tools.plus(&one.server_tools);
        self.usage = self.usage.plus(&one.usage);
        let own = one.own_usage();
        if self.model.is_none() {
            // The first model a request names serves the batch's record; a request naming
            // none stays in its part.
            self.model.clone_from(&one.model);
        }
        let parts = one
            .model
            .map(|m| (m, own))
            .into_iter()
            .chain(one.other_models.into_iter().map(|o| (o.model, o.usage)));
        for (model, usage) in parts {
            if self.model.as_deref() == Some(model.as_str()) {
                continue; // the first model's part: the usage not kept apart
            }
            if let Some(o) = self.other_models.iter_mut().find(|o| o.model == model) {
                o.usage = o.usage.plus(&usage);
            } else if self.other_models.len() < MAX_OTHER_MODELS {
                self.other_models.push(ModelUsage { model, usage });
            }
            // Past the cap a model's usage stays in the first model's part (bounded).
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str, input: u64, others: &[(&str, u64)]) -> ResponseRecord {
        let mut r = ResponseRecord {
            model: Some(model.to_string()),
            ..Default::default()
        };
        r.usage.input = Some(input);
        for (m, n) in others {
            r.usage.input = r.usage.input.map(|i| i + n);
            r.other_models.push(ModelUsage {
                model: (*m).to_string(),
                usage: Usage {
                    input: Some(*n),
                    ..Default::default()
                },
            });
        }
        r
    }

    #[test]
    fn a_batch_keeps_every_models_part_apart_sub_calls_included() {
        let mut batch = ResponseRecord::default();
        // Served by A with an advisor sub-call on B; then one served by B with a sub-call on A.
        batch.add_request(request("a", 10, &[("b", 3)]));
        batch.add_request(request("b", 20, &[("a", 4)]));
        batch.add_request(request("c", 5, &[]));
        assert_eq!(batch.model.as_deref(), Some("a"));
        assert_eq!(batch.usage.input, Some(42));
        let part = |m: &str| batch.other_models.iter().find(|o| o.model == m).unwrap();
        assert_eq!(part("b").usage.input, Some(23));
        assert_eq!(part("c").usage.input, Some(5));
        assert_eq!(
            batch.own_usage().input,
            Some(14),
            "a's own: 10 + the sub-call's 4"
        );
    }
}
