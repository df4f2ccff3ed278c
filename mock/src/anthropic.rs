//! Anthropic Messages (`POST /v1/messages`) and token counting (`/v1/messages/count_tokens`).

use bytes::{Bytes, BytesMut};
use http::StatusCode;

use super::content::{fragments, word};
use super::frames::{escape_into, Frames};
use super::reply::{fault_reply, parse_json, BasicRequest, Flavor, Reply, DEFAULT_MODEL};
use super::Knobs;

const F: Flavor = Flavor::Anthropic;

/// `POST /v1/messages`.
pub(crate) fn messages(body: &[u8], k: &Knobs) -> Reply {
    let req: BasicRequest = parse_json(body);
    let stream = req.stream.unwrap_or(false);
    if let Some(r) = fault_reply(F, stream, k) {
        return r;
    }
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
    if stream {
        Reply::sse(F, messages_sse(model, k))
    } else {
        Reply::json(F, StatusCode::OK, messages_json(model, k))
    }
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` with N from the input-tokens knob.
pub(crate) fn count_tokens(k: &Knobs) -> Reply {
    if let Some(r) = fault_reply(F, false, k) {
        return r;
    }
    let body = format!(r#"{{"input_tokens":{}}}"#, k.input_tokens);
    Reply::json(F, StatusCode::OK, vec![Bytes::from(body)])
}

fn has_text(k: &Knobs) -> bool {
    k.output_chunks > 0 || k.tool_calls == 0
}

fn stop_reason(k: &Knobs) -> &'static str {
    if k.tool_calls > 0 {
        r#""tool_use""#
    } else {
        r#""end_turn""#
    }
}

/// Input fields of `usage`: Anthropic's `input_tokens` excludes cache reads.
fn input_usage(f: &mut Frames, k: &Knobs) {
    f.s(r#""input_tokens":"#)
        .n(k.input_tokens - k.cached_tokens)
        .s(r#","cache_creation_input_tokens":0,"cache_read_input_tokens":"#)
        .n(k.cached_tokens);
}

fn messages_json(model: &str, k: &Knobs) -> Vec<Bytes> {
    let mut f = Frames::with_capacity(
        480 + k.output_chunks as usize * 10 + k.tool_calls as usize * 120,
        1,
    );
    f.s(r#"{"id":"msg_mock_0001","type":"message","role":"assistant","model":"#)
        .q(model)
        .s(r#","content":["#);
    let mut first = true;
    if has_text(k) {
        f.s(r#"{"type":"text","text":""#);
        for i in 0..k.output_chunks {
            f.s(word(i));
        }
        f.s(r#""}"#);
        first = false;
    }
    for i in 0..k.tool_calls {
        let (name, args) = k.tool(i);
        if !first {
            f.s(",");
        }
        first = false;
        f.s(r#"{"type":"tool_use","id":"#)
            .turn_id("toolu_mock_", k.turn(), i)
            .s(r#","name":"#)
            .q(name)
            .s(r#","input":"#)
            .s(args)
            .s("}");
    }
    f.s(r#"],"stop_reason":"#)
        .s(stop_reason(k))
        .s(r#","stop_sequence":null,"usage":{"#);
    input_usage(&mut f, k);
    f.s(r#","cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":"#)
        .n(k.output_tokens())
        .s(r#","service_tier":"standard"}}"#);
    f.finish()
}

/// Writes `event: <name>\ndata: {"type":"<name>"` — the caller finishes the object.
fn ev<'f>(f: &'f mut Frames, name: &str) -> &'f mut Frames {
    f.s("event: ")
        .s(name)
        .s("\ndata: {\"type\":\"")
        .s(name)
        .s("\"")
}

fn end(f: &mut Frames) {
    f.s("}\n\n").end();
}

fn messages_sse(model: &str, k: &Knobs) -> Vec<Bytes> {
    let mut quoted_model = BytesMut::with_capacity(model.len() + 2);
    escape_into(&mut quoted_model, model);
    let events = k.output_chunks as usize + k.tool_calls as usize * 10 + 8;
    let mut f = Frames::with_capacity(events * 110 + 400, events);

    ev(&mut f, "message_start")
        .s(r#","message":{"id":"msg_mock_0001","type":"message","role":"assistant","model":""#)
        .b(&quoted_model)
        .s(r#"","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"#);
    input_usage(&mut f, k);
    f.s(r#","cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}"#);
    end(&mut f);

    let mut index = 0u64;
    let mut pinged = false;
    let mut ping = |f: &mut Frames| {
        if !pinged {
            pinged = true;
            ev(f, "ping");
            end(f);
        }
    };
    if has_text(k) {
        ev(&mut f, "content_block_start")
            .s(r#","index":"#)
            .n(index)
            .s(r#","content_block":{"type":"text","text":""}"#);
        end(&mut f);
        ping(&mut f);
        for i in 0..k.output_chunks {
            ev(&mut f, "content_block_delta")
                .s(r#","index":"#)
                .n(index)
                .s(r#","delta":{"type":"text_delta","text":""#)
                .s(word(i))
                .s(r#""}"#);
            end(&mut f);
        }
        ev(&mut f, "content_block_stop").s(r#","index":"#).n(index);
        end(&mut f);
        index += 1;
    }
    for i in 0..k.tool_calls {
        let (name, args) = k.tool(i);
        let args = k.tool_args(args);
        ev(&mut f, "content_block_start")
            .s(r#","index":"#)
            .n(index)
            .s(r#","content_block":{"type":"tool_use","id":"#)
            .turn_id("toolu_mock_", k.turn(), i)
            .s(r#","name":"#)
            .q(name)
            .s(r#","input":{}}"#);
        end(&mut f);
        ping(&mut f);
        for frag in fragments(args) {
            ev(&mut f, "content_block_delta")
                .s(r#","index":"#)
                .n(index)
                .s(r#","delta":{"type":"input_json_delta","partial_json":"#)
                .q(frag)
                .s("}");
            end(&mut f);
        }
        ev(&mut f, "content_block_stop").s(r#","index":"#).n(index);
        end(&mut f);
        index += 1;
    }

    ev(&mut f, "message_delta")
        .s(r#","delta":{"stop_reason":"#)
        .s(stop_reason(k))
        .s(r#","stop_sequence":null},"usage":{"#);
    input_usage(&mut f, k);
    f.s(r#","output_tokens":"#).n(k.output_tokens()).s("}");
    end(&mut f);
    ev(&mut f, "message_stop");
    end(&mut f);
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tool;
    use crate::MockOptions;
    use serde_json::{json, Value};

    fn knobs(chunks: u32, tools: u32) -> Knobs {
        Knobs {
            output_chunks: chunks,
            tool_calls: tools,
            input_tokens: 30,
            cached_tokens: 10,
            ..Knobs::from_options(&MockOptions::default())
        }
    }

    fn events(r: &Reply) -> Vec<(String, Value)> {
        r.frames
            .iter()
            .map(|f| {
                let s = std::str::from_utf8(f).unwrap();
                let (ev, data) = s.strip_suffix("\n\n").unwrap().split_once('\n').unwrap();
                let name = ev.strip_prefix("event: ").unwrap().to_owned();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["type"], name.as_str());
                (name, v)
            })
            .collect()
    }

    #[test]
    fn json_text_and_tools() {
        let r = messages(br#"{"model":"claude-x","max_tokens":10}"#, &knobs(2, 2));
        let v: Value = serde_json::from_slice(&r.frames.concat()).unwrap();
        assert_eq!(v["model"], "claude-x");
        assert_eq!(
            v["content"][0],
            json!({"type": "text", "text": "Mock reply"})
        );
        assert_eq!(v["content"][1]["type"], "tool_use");
        assert_eq!(v["content"][1]["id"], "toolu_mock_0001");
        assert_eq!(
            v["content"][1]["input"],
            json!({"city": "Paris", "unit": "celsius"})
        );
        assert_eq!(v["content"][2]["name"], "search_docs");
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["usage"]["input_tokens"], 20);
        assert_eq!(v["usage"]["cache_read_input_tokens"], 10);
        assert_eq!(v["usage"]["output_tokens"], crate::output_tokens(2, 2, 0));
    }

    #[test]
    fn sse_sequence() {
        let k = knobs(3, 1);
        let r = messages(br#"{"model":"claude-x","stream":true}"#, &k);
        assert!(r.stream);
        let ev = events(&r);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
        assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
        assert_eq!(names.iter().filter(|n| **n == "ping").count(), 1);
        assert_eq!(ev[0].1["message"]["usage"]["input_tokens"], 20);
        assert_eq!(ev[0].1["message"]["model"], "claude-x");
        let mut text = String::new();
        let mut json_args = String::new();
        for (n, v) in &ev {
            if n == "content_block_delta" {
                match v["delta"]["type"].as_str().unwrap() {
                    "text_delta" => text += v["delta"]["text"].as_str().unwrap(),
                    "input_json_delta" => {
                        assert_eq!(v["index"], 1);
                        json_args += v["delta"]["partial_json"].as_str().unwrap();
                    }
                    other => panic!("{other}"),
                }
            }
        }
        assert_eq!(text, "Mock reply from");
        assert_eq!(json_args, tool(0).1);
        let delta = &ev[ev.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], k.output_tokens());
    }

    #[test]
    fn tool_only_stream_starts_at_index_zero() {
        let ev = events(&messages(br#"{"stream":true}"#, &knobs(0, 1)));
        assert_eq!(ev[1].1["content_block"]["type"], "tool_use");
        assert_eq!(ev[1].1["index"], 0);
        assert_eq!(ev[2].0, "ping");
    }
}
