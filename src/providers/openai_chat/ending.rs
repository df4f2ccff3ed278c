//! The ending of an OpenAI chat stream cut at a budget: a chunk with `finish_reason: "length"`
//! for every unfinished choice, then `data: [DONE]`. The chunk id, `created` and model are those
//! of the stream's first chunk.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::providers::adapter::StreamEnding;

/// Most choices (`n`) whose ending is tracked for the final chunk.
const MAX_CHOICES: usize = 128;

/// What the final chunk needs, read from the chunks handed on.
#[derive(Default)]
pub(super) struct ChatEnding {
    /// `"id":…,"object":…,"created":…,"model":…` of the first chunk.
    head: Option<String>,
    /// Choice indexes seen, and whether each has finished.
    choices: Vec<(u32, bool)>,
}

/// The fields of a chunk the ending needs.
#[derive(Deserialize)]
struct ChatChunk<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    created: Option<&'a RawValue>,
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    choices: Vec<ChatChoice<'a>>,
}

#[derive(Deserialize)]
struct ChatChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    finish_reason: Option<&'a RawValue>,
}

impl StreamEnding for ChatEnding {
    fn note(&mut self, data: &[u8]) {
        let Ok(c) = serde_json::from_slice::<ChatChunk<'_>>(data) else {
            return;
        };
        if self.head.is_none() {
            if let Some(id) = c.id {
                let raw = |v: Option<&RawValue>, or: &str| {
                    v.map_or_else(|| or.to_string(), |v| v.get().to_string())
                };
                self.head = Some(format!(
                    "\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{}",
                    id.get(),
                    raw(c.created, "0"),
                    raw(c.model, "\"unknown\""),
                ));
            }
        }
        for ch in c.choices {
            let finished = ch.finish_reason.is_some();
            match self.choices.iter().position(|(i, _)| *i == ch.index) {
                Some(p) => self.choices[p].1 |= finished,
                None if self.choices.len() < MAX_CHOICES => self.choices.push((ch.index, finished)),
                None => {}
            }
        }
    }

    fn tail(&self, _output_tokens: u64) -> Bytes {
        let head = self.head.as_deref().unwrap_or(
            r#""id":"chatcmpl-tokenwarden-cut","object":"chat.completion.chunk","created":0,"model":"unknown""#,
        );
        let mut open: Vec<u32> = self
            .choices
            .iter()
            .filter(|(_, finished)| !finished)
            .map(|(i, _)| *i)
            .collect();
        if self.choices.is_empty() {
            open.push(0);
        }
        let choices: Vec<String> = open
            .iter()
            .map(|i| {
                format!("{{\"index\":{i},\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"length\"}}")
            })
            .collect();
        Bytes::from(format!(
            "data: {{{head},\"choices\":[{}]}}\n\ndata: [DONE]\n\n",
            choices.join(",")
        ))
    }
}
