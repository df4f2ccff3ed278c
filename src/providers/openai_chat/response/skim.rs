//! Chat bodies read by a [`Skim`] as serde_json reads the response's structs: a completion,
//! and the stream chunks the text-only test leaves to a parse (the first, the last, usage and
//! tool-call deltas). `None` wherever the skim steps aside; serde_json decides those.

use std::borrow::Cow;

use super::{
    ChatUsage, Choice, Chunk, ChunkChoice, Completion, CompletionDetails, Delta, DeltaFunction,
    DeltaToolCall, Message, MessageFunction, MessageToolCall, PromptDetails,
};
use crate::providers::skim::{member, once, Bail, Skim, Skimmed};

/// What a completion and a chunk share at the top: `id`, `model`, `usage`, and Groq's
/// `x_groq` and `error` (read only as `null`), each once.
struct Top<'a> {
    id: Option<Cow<'a, str>>,
    model: Option<Cow<'a, str>>,
    usage: Option<ChatUsage>,
}

/// Read a whole body's top-level object, handing each item of `choices` (which must be an
/// array: serde reads a `Vec`, and `null` is its error) to `choice`.
fn top<'a>(
    body: &'a [u8],
    mut choice: impl FnMut(&mut Skim<'a>) -> Skimmed<()>,
) -> Option<Top<'a>> {
    let mut s = Skim::new(body);
    let mut t = Top {
        id: None,
        model: None,
        usage: None,
    };
    let mut seen = 0;
    s.object(|s, key| match key {
        b"id" => member(&mut seen, 1, &mut t.id, s.opt_str()),
        b"model" => member(&mut seen, 1 << 1, &mut t.model, s.opt_str()),
        b"choices" => {
            once(&mut seen, 1 << 2)?;
            let listed = s.opt_array(&mut choice)?;
            listed.then_some(()).ok_or(Bail)
        }
        b"usage" => member(&mut seen, 1 << 3, &mut t.usage, usage(s)),
        b"x_groq" | b"error" => {
            once(&mut seen, if key == b"error" { 1 << 4 } else { 1 << 5 })?;
            s.null_only()
        }
        _ => s.skip(),
    })
    .ok()?;
    s.at_end().then_some(t)
}

/// A chat completion read by a [`Skim`] as serde_json reads a [`Completion`]; `None` where the
/// skim steps aside (an error body, Groq's `x_groq`, a prompt-cache breakdown by lifetime, or
/// anything it is not sure of), and serde_json decides.
pub(super) fn completion(body: &[u8]) -> Option<Completion> {
    let mut choices = Vec::new();
    let t = top(body, |s| {
        choices.push(choice(s)?);
        Ok(())
    })?;
    Some(Completion {
        id: t.id.map(Cow::into_owned),
        model: t.model.map(Cow::into_owned),
        choices,
        usage: t.usage,
        x_groq: None,
        error: None,
    })
}

/// A stream chunk read as serde_json reads a [`Chunk`], equal in value (its strings are
/// borrowed unless escaped, where serde's `Option<Cow>` fields always allocate); `None` where the
/// skim steps aside.
pub(super) fn chunk(data: &[u8]) -> Option<Chunk<'_>> {
    let mut choices = Vec::new();
    let t = top(data, |s| {
        choices.push(chunk_choice(s)?);
        Ok(())
    })?;
    Some(Chunk {
        id: t.id,
        model: t.model,
        choices,
        usage: t.usage,
        x_groq: None,
        error: None,
    })
}

fn chunk_choice<'a>(s: &mut Skim<'a>) -> Skimmed<ChunkChoice<'a>> {
    let mut ch = ChunkChoice {
        index: 0,
        delta: None,
        text: None,
        finish_reason: None,
    };
    let mut seen = 0;
    s.object(|s, key| match key {
        b"index" => member(&mut seen, 1, &mut ch.index, s.u32()),
        b"delta" => member(&mut seen, 1 << 1, &mut ch.delta, delta(s)),
        b"text" => member(&mut seen, 1 << 2, &mut ch.text, s.opt_str()),
        b"finish_reason" => member(&mut seen, 1 << 3, &mut ch.finish_reason, s.opt_str()),
        _ => s.skip(),
    })?;
    Ok(ch)
}

fn delta<'a>(s: &mut Skim<'a>) -> Skimmed<Option<Delta<'a>>> {
    let mut d = Delta {
        content: None,
        reasoning_content: None,
        refusal: None,
        tool_calls: None,
    };
    let mut seen = 0;
    let present = s.opt_object(|s, key| {
        let (bit, text) = match key {
            b"content" => (0, &mut d.content),
            b"reasoning_content" => (1, &mut d.reasoning_content),
            b"refusal" => (2, &mut d.refusal),
            b"tool_calls" => {
                once(&mut seen, 1 << 3)?;
                let mut calls = Vec::new();
                if s.opt_array(|s| {
                    calls.push(delta_tool_call(s)?);
                    Ok(())
                })? {
                    d.tool_calls = Some(calls);
                }
                return Ok(());
            }
            _ => return s.skip(),
        };
        once(&mut seen, 1 << bit)?;
        *text = s.opt_str()?;
        Ok(())
    })?;
    Ok(present.then_some(d))
}

fn delta_tool_call<'a>(s: &mut Skim<'a>) -> Skimmed<DeltaToolCall<'a>> {
    let mut call = DeltaToolCall {
        index: 0,
        id: None,
        function: None,
        custom: None,
    };
    let mut seen = 0;
    s.object(|s, key| match key {
        b"index" => member(&mut seen, 1, &mut call.index, s.u32()),
        b"id" => member(&mut seen, 1 << 1, &mut call.id, s.opt_str()),
        b"function" => {
            once(&mut seen, 1 << 2)?;
            let mut f = DeltaFunction {
                name: None,
                arguments: None,
            };
            let mut named = 0;
            let present = s.opt_object(|s, key| match key {
                b"name" => member(&mut named, 1, &mut f.name, s.opt_str()),
                b"arguments" => member(&mut named, 1 << 1, &mut f.arguments, s.opt_str()),
                _ => s.skip(),
            })?;
            call.function = present.then_some(f);
            Ok(())
        }
        // A custom tool's call: serde_json reads it.
        b"custom" => Err(Bail),
        _ => s.skip(),
    })?;
    Ok(call)
}

fn choice(s: &mut Skim<'_>) -> Skimmed<Choice> {
    let mut ch = Choice {
        index: 0,
        message: None,
        finish_reason: None,
    };
    let mut seen = 0;
    s.object(|s, key| match key {
        b"index" => member(&mut seen, 1, &mut ch.index, s.u32()),
        b"message" => {
            once(&mut seen, 1 << 1)?;
            let mut m = Message { tool_calls: None };
            let mut listed = 0;
            let present = s.opt_object(|s, key| match key {
                b"tool_calls" => {
                    once(&mut listed, 1)?;
                    let mut calls = Vec::new();
                    if s.opt_array(|s| {
                        calls.push(tool_call(s)?);
                        Ok(())
                    })? {
                        m.tool_calls = Some(calls);
                    }
                    Ok(())
                }
                _ => s.skip(),
            })?;
            ch.message = present.then_some(m);
            Ok(())
        }
        b"finish_reason" => member(&mut seen, 1 << 2, &mut ch.finish_reason, s.opt_string()),
        _ => s.skip(),
    })?;
    Ok(ch)
}

fn tool_call(s: &mut Skim<'_>) -> Skimmed<MessageToolCall> {
    let mut call = MessageToolCall {
        id: None,
        function: None,
        custom: None,
    };
    let mut seen = 0;
    s.object(|s, key| match key {
        b"id" => member(&mut seen, 1, &mut call.id, s.opt_string()),
        b"function" => {
            once(&mut seen, 1 << 1)?;
            let mut f = MessageFunction {
                name: String::new(),
                arguments: String::new(),
            };
            let mut named = 0;
            let present = s.opt_object(|s, key| match key {
                b"name" => member(&mut named, 1, &mut f.name, s.string()),
                b"arguments" => member(&mut named, 1 << 1, &mut f.arguments, s.string()),
                _ => s.skip(),
            })?;
            call.function = present.then_some(f);
            Ok(())
        }
        // A custom tool's call: serde_json reads it.
        b"custom" => Err(Bail),
        _ => s.skip(),
    })?;
    Ok(call)
}

fn usage(s: &mut Skim<'_>) -> Skimmed<Option<ChatUsage>> {
    let mut u = ChatUsage {
        prompt_tokens: None,
        completion_tokens: None,
        total_tokens: None,
        prompt_tokens_details: None,
        completion_tokens_details: None,
        prompt_cache_hit_tokens: None,
        cached_tokens: None,
        cache_creation_input_tokens: None,
        reasoning_tokens: None,
        citation_tokens: None,
    };
    let mut seen = 0;
    let present = s.opt_object(|s, key| {
        let (bit, count) = match key {
            b"prompt_tokens" => (0, &mut u.prompt_tokens),
            b"completion_tokens" => (1, &mut u.completion_tokens),
            b"total_tokens" => (2, &mut u.total_tokens),
            b"prompt_cache_hit_tokens" => (3, &mut u.prompt_cache_hit_tokens),
            b"cached_tokens" => (4, &mut u.cached_tokens),
            b"cache_creation_input_tokens" => (5, &mut u.cache_creation_input_tokens),
            b"reasoning_tokens" => (6, &mut u.reasoning_tokens),
            b"citation_tokens" => (7, &mut u.citation_tokens),
            b"prompt_tokens_details" => {
                once(&mut seen, 1 << 8)?;
                u.prompt_tokens_details = prompt_details(s)?;
                return Ok(());
            }
            b"completion_tokens_details" => {
                once(&mut seen, 1 << 9)?;
                let mut d = CompletionDetails {
                    reasoning_tokens: None,
                    audio_tokens: None,
                };
                let mut read = 0;
                let present = s.opt_object(|s, key| match key {
                    b"reasoning_tokens" => {
                        member(&mut read, 1, &mut d.reasoning_tokens, s.opt_u64())
                    }
                    b"audio_tokens" => member(&mut read, 2, &mut d.audio_tokens, s.opt_u64()),
                    _ => s.skip(),
                })?;
                u.completion_tokens_details = present.then_some(d);
                return Ok(());
            }
            _ => return s.skip(),
        };
        once(&mut seen, 1 << bit)?;
        *count = s.opt_u64()?;
        Ok(())
    })?;
    Ok(present.then_some(u))
}

fn prompt_details(s: &mut Skim<'_>) -> Skimmed<Option<PromptDetails>> {
    let mut d = PromptDetails {
        cached_tokens: None,
        cache_write_tokens: None,
        cache_creation_input_tokens: None,
        cache_creation_tokens: None,
        cache_creation: None,
        cache_creation_token_details: None,
        audio_tokens: None,
    };
    let mut seen = 0;
    let present = s.opt_object(|s, key| {
        let (bit, count) = match key {
            b"cached_tokens" => (0, &mut d.cached_tokens),
            b"cache_write_tokens" => (1, &mut d.cache_write_tokens),
            b"cache_creation_input_tokens" => (2, &mut d.cache_creation_input_tokens),
            b"cache_creation_tokens" => (3, &mut d.cache_creation_tokens),
            b"audio_tokens" => (6, &mut d.audio_tokens),
            // Writes by lifetime (DashScope, LiteLLM): serde reads those.
            b"cache_creation" | b"cache_creation_token_details" => {
                once(
                    &mut seen,
                    if key == b"cache_creation" {
                        1 << 4
                    } else {
                        1 << 5
                    },
                )?;
                return s.null_only();
            }
            _ => return s.skip(),
        };
        once(&mut seen, 1 << bit)?;
        *count = s.opt_u64()?;
        Ok(())
    })?;
    Ok(present.then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The completion the bench's mock answers with (an escape in its text).
    const MOCK: &str = r#"{"id":"chatcmpl-mock-0001","object":"chat.completion","created":1730000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Mock reply: every token is counted, caf\u00e9 included.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_mock"}"#;

    /// The recorded chat completions of the corpus, by name, and the mock's.
    fn bodies() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/corpus/openai-chat"
        );
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("corpus")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("json_") && n.ends_with(".response.json"))
            .map(|n| {
                let body = std::fs::read(format!("{dir}/{n}")).expect("readable");
                (n, body)
            })
            .collect();
        out.sort();
        out.push(("mock".into(), MOCK.as_bytes().to_vec()));
        out
    }

    fn serde(body: &[u8]) -> Option<Completion> {
        serde_json::from_slice(body).ok()
    }

    fn serde_chunk(data: &[u8]) -> Option<Chunk<'_>> {
        serde_json::from_slice(data).ok()
    }

    /// The data of every event of the corpus's recorded chat streams, by file.
    fn events() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/corpus/openai-chat"
        );
        let mut out = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("corpus")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".response.sse"))
            .collect();
        names.sort();
        for n in names {
            let text = std::fs::read_to_string(format!("{dir}/{n}")).expect("readable");
            let mut decoder = crate::sse::SseDecoder::new(1 << 20);
            decoder.feed(text.as_bytes(), |item| {
                if let crate::sse::SseItem::Event { data, .. } = item {
                    if !crate::sse::is_done(data) {
                        out.push((n.clone(), data.to_vec()));
                    }
                }
            });
        }
        out
    }

    #[test]
    fn the_skim_reads_recorded_completions_as_serde_does() {
        let bodies = bodies();
        assert!(bodies.len() >= 8, "the corpus is there");
        for (name, body) in bodies {
            let skimmed = completion(&body);
            // Error bodies are serde's to read; every completion is the skim's.
            assert_eq!(skimmed.is_some(), !name.contains("error"), "{name}");
            if let Some(c) = skimmed {
                assert_eq!(Some(c), serde(&body), "{name}");
            }
        }
    }

    #[test]
    fn the_skim_steps_aside_where_serde_would_refuse_or_reads_more() {
        for body in [
            r#"{"choices":null}"#,
            r#"{"choices":[{"index":-1}]}"#,
            r#"{"choices":[{"index":1.0}]}"#,
            r#"{"choices":[null]}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":{"prompt_tokens":"1"}}"#,
            r#"{"x_groq":{"usage":{"prompt_tokens":1}}}"#,
            r#"{"error":{"type":"invalid_request_error"}}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"function":{"name":null}}]}}]}"#,
            r#"{"\u0069d":"escaped key"}"#,
            r#"{"id":"\ud800"}"#,
            r#"{"id":"x"} trailing"#,
            r#"{"id":"x""#,
        ] {
            assert_eq!(completion(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn the_skim_reads_recorded_chunks_as_serde_does() {
        let events = events();
        assert!(events.len() >= 20, "the corpus is there");
        for (name, data) in events {
            let skimmed = chunk(&data);
            assert!(
                skimmed.is_some(),
                "{name}: {}",
                String::from_utf8_lossy(&data)
            );
            assert_eq!(skimmed, serde_chunk(&data), "{name}");
        }
    }

    #[test]
    fn chunk_strings_are_borrowed_unless_escaped() {
        let data =
            br#"{"choices":[{"index":0,"delta":{"content":"plain","refusal":"caf\u00e9"}}]}"#;
        let c = chunk(data).expect("a chunk");
        let d = c.choices[0].delta.as_ref().expect("a delta");
        assert!(matches!(d.content, Some(Cow::Borrowed("plain"))));
        assert!(matches!(&d.refusal, Some(Cow::Owned(s)) if s == "caf\u{e9}"));
    }

    /// A completion-shaped value whose members take any JSON type: the types serde's structs
    /// refuse, as well as the ones they read.
    fn shaped() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u32>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f32>().prop_map(|f| Value::from(f64::from(f))),
            "[a-z\"\\\\\u{e9}\u{1F600} ]{0,8}".prop_map(Value::from),
        ];
        let names = "(id|model|choices|usage|index|message|delta|text|finish_reason|tool_calls|function|name|arguments|prompt_tokens|completion_tokens|prompt_tokens_details|cached_tokens|completion_tokens_details|reasoning_tokens|reasoning_content|refusal|x_groq|error|content|other)";
        leaf.prop_recursive(5, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((names, inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Apply `edits` to `body`.
    fn damage(body: &mut Vec<u8>, edits: Vec<(f64, u8, u8)>) {
        for (at, op, byte) in edits {
            let at = ((body.len() as f64) * at) as usize;
            match op {
                0 if at < body.len() => body[at] = byte,
                1 => body.insert(at.min(body.len()), byte),
                _ if at < body.len() => {
                    body.remove(at);
                }
                _ => {}
            }
        }
    }

    /// Byte edits applied to a body: (where, as a fraction of its length; what; the byte).
    fn edits() -> impl Strategy<Value = Vec<(f64, u8, u8)>> {
        let byte = proptest::sample::select(b"{}[],:\"\\ 0123456789-.eEnul\x01\xc3a".to_vec());
        prop::collection::vec((0.0..1.0f64, 0..3u8, byte), 1..4)
    }

    proptest! {
        #[test]
        fn skim_agrees_with_serde_on_any_shape(v in shaped()) {
            let body = serde_json::to_vec(&v).expect("serializable");
            if let Some(c) = completion(&body) {
                prop_assert_eq!(Some(c), serde(&body));
            }
        }

        #[test]
        fn chunk_skim_agrees_with_serde_on_any_shape(v in shaped()) {
            let data = serde_json::to_vec(&v).expect("serializable");
            if let Some(c) = chunk(&data) {
                prop_assert_eq!(Some(c), serde_chunk(&data));
            }
        }

        #[test]
        fn chunk_skim_agrees_with_serde_on_damaged_recordings(
            which in 0..256usize,
            edits in edits(),
        ) {
            let events = events();
            let mut data = events[which % events.len()].1.clone();
            damage(&mut data, edits);
            if let Some(c) = chunk(&data) {
                prop_assert_eq!(Some(c), serde_chunk(&data), "{}", String::from_utf8_lossy(&data));
            }
        }

        #[test]
        fn skim_agrees_with_serde_on_damaged_recordings(
            which in 0..64usize,
            edits in edits(),
        ) {
            let bodies = bodies();
            let mut body = bodies[which % bodies.len()].1.clone();
            damage(&mut body, edits);
            if let Some(c) = completion(&body) {
                prop_assert_eq!(Some(c), serde(&body), "{}", String::from_utf8_lossy(&body));
            }
        }
    }
}
