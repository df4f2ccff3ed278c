//! Reading a copy of the Realtime API's client and server events.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::providers::adapter::{ClientEvent, ErrorText, RealtimeEvents, ServerEvent};
use crate::providers::usage::{AudioTokens, ResponseRecord, ToolCall, Usage};

/// The Realtime API's events.
pub struct Events;

/// Only what the proxy needs of an event; large fields (base64 audio) are skipped unread or
/// borrowed, never copied.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    response_id: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<ResponseHead>,
    #[serde(default)]
    session: Option<SessionHead>,
    #[serde(default)]
    error: Option<ErrorHead>,
    /// A transcription's usage (top level, unlike a response's).
    #[serde(default)]
    usage: Option<RealtimeUsage>,
}

/// The event that ends the transcription of an input audio item, with its usage.
const TRANSCRIBED: &str = "conversation.item.input_audio_transcription.completed";

/// An `error` event's body: the client event it refuses.
#[derive(Deserialize)]
struct ErrorHead {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct ResponseHead {
    #[serde(default)]
    id: Option<String>,
    /// GA name of a response's output cap.
    #[serde(default)]
    max_output_tokens: Option<Value>,
    /// Beta name of the same.
    #[serde(default)]
    max_response_output_tokens: Option<Value>,
}

#[derive(Deserialize)]
struct SessionHead {
    #[serde(default)]
    model: Option<String>,
    /// GA: `audio.input.transcription.model`.
    #[serde(default)]
    audio: Option<AudioHead>,
    /// Beta: `input_audio_transcription.model`.
    #[serde(default)]
    input_audio_transcription: Option<TranscriptionHead>,
}

#[derive(Deserialize)]
struct AudioHead {
    #[serde(default)]
    input: Option<AudioInputHead>,
}

#[derive(Deserialize)]
struct AudioInputHead {
    #[serde(default)]
    transcription: Option<TranscriptionHead>,
}

#[derive(Deserialize)]
struct TranscriptionHead {
    #[serde(default)]
    model: Option<String>,
}

impl SessionHead {
    /// The model the session's input audio is transcribed with, whichever version names it.
    fn transcription_model(&mut self) -> Option<String> {
        let ga = self
            .audio
            .as_mut()
            .and_then(|a| a.input.as_mut())
            .and_then(|i| i.transcription.as_mut())
            .and_then(|t| t.model.take());
        ga.or_else(|| {
            self.input_audio_transcription
                .as_mut()
                .and_then(|t| t.model.take())
        })
    }
}

/// A `response.done` event (or a finished transcription), read whole.
#[derive(Deserialize)]
struct Done {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    response: Option<DoneResponse>,
    /// A transcription's usage.
    #[serde(default)]
    usage: Option<RealtimeUsage>,
}

#[derive(Deserialize)]
struct DoneResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_details: Option<StatusDetails>,
    #[serde(default)]
    output: Vec<Item>,
    #[serde(default)]
    usage: Option<RealtimeUsage>,
}

#[derive(Deserialize)]
struct StatusDetails {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct RealtimeUsage {
    /// `tokens`, or `duration` (whisper-1's transcriptions: seconds of audio, no tokens).
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    input_token_details: Option<InputDetails>,
    #[serde(default)]
    output_token_details: Option<Modalities>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    audio_tokens: Option<u64>,
    #[serde(default)]
    cached_tokens_details: Option<Modalities>,
}

/// A count split by modality (only audio is priced apart).
#[derive(Deserialize)]
struct Modalities {
    #[serde(default)]
    audio_tokens: Option<u64>,
}

/// Stands in for a stream reader: Realtime responses are never SSE bodies.
#[derive(Default)]
pub struct NoStream {
    pub(crate) record: ResponseRecord,
}

// === impl NoStream ===

impl NoStream {
    pub(crate) fn event(&mut self, _data: &[u8]) -> Option<bool> {
        None
    }

    pub(crate) fn finish(self) -> ResponseRecord {
        self.record
    }
}

/// A response cap: a count, or `"inf"` (none).
fn cap(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

// === impl Events ===

impl RealtimeEvents for Events {
    fn model(&self, query: Option<&str>) -> Option<String> {
        query?
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "model")
            .map(|(_, v)| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|m| !m.is_empty())
    }

    fn client(&self, text: &[u8]) -> ClientEvent {
        let Ok(head) = serde_json::from_slice::<Head<'_>>(text) else {
            return ClientEvent::Other;
        };
        match head.kind.as_ref() {
            "response.create" => {
                let r = head.response.as_ref();
                ClientEvent::Respond {
                    event_id: head.event_id.map(Cow::into_owned),
                    max_output: r.and_then(|r| {
                        cap(r.max_output_tokens.as_ref())
                            .or_else(|| cap(r.max_response_output_tokens.as_ref()))
                    }),
                }
            }
            _ => ClientEvent::Other,
        }
    }

    fn server(&self, text: &[u8]) -> ServerEvent {
        let Ok(head) = serde_json::from_slice::<Head<'_>>(text) else {
            return ServerEvent::Other;
        };
        match head.kind.as_ref() {
            // A beta transcription-only session (`?intent=transcription`) announces itself with
            // `transcription_session.*`: the same session object, naming the transcription
            // model in `input_audio_transcription.model` and no realtime model.
            "session.created"
            | "session.updated"
            | "transcription_session.created"
            | "transcription_session.updated" => match head.session {
                Some(mut s) => ServerEvent::Session {
                    transcription_model: s.transcription_model(),
                    model: s.model,
                },
                None => ServerEvent::Session {
                    model: None,
                    transcription_model: None,
                },
            },
            "response.created" => ServerEvent::Created {
                id: head.response.and_then(|r| r.id),
            },
            // Text and the transcript of audio: output the tokenizer can count as it comes.
            "response.output_text.delta"
            | "response.text.delta"
            | "response.output_audio_transcript.delta"
            | "response.audio_transcript.delta"
            | "response.function_call_arguments.delta" => ServerEvent::Output {
                text: head.delta.map(Cow::into_owned).unwrap_or_default(),
                response_id: head.response_id.map(Cow::into_owned),
            },
            // Audio itself: output, but its tokens are only known at `response.done`.
            "response.output_audio.delta" | "response.audio.delta" => ServerEvent::Output {
                text: String::new(),
                response_id: head.response_id.map(Cow::into_owned),
            },
            "response.done" => ServerEvent::Done {
                id: head.response.and_then(|r| r.id),
            },
            // Only a usage in tokens is counted: a `duration` (whisper-1) states seconds of
            // audio, which no token limit or price here reads.
            TRANSCRIBED if head.usage.as_ref().is_some_and(RealtimeUsage::in_tokens) => {
                ServerEvent::Transcribed
            }
            "error" => {
                let e = head.error;
                let code = e.as_ref().and_then(|e| e.code.as_deref());
                ServerEvent::Error {
                    refuses_response: code == Some("conversation_already_has_active_response"),
                    event_id: e.and_then(|e| e.event_id),
                }
            }
            _ => ServerEvent::Other,
        }
    }

    fn cancel(&self) -> &'static str {
        r#"{"type":"response.cancel"}"#
    }

    fn refusal(&self, e: &ErrorText<'_>, client_event_id: Option<&str>) -> String {
        serde_json::json!({
            "type": "error",
            "event_id": format!("event_tw_{}", e.code),
            "error": {
                "type": e.openai_type,
                "code": e.code,
                "message": e.message,
                "param": null,
                "event_id": client_event_id,
            }
        })
        .to_string()
    }
}

// === impl RealtimeUsage ===

impl RealtimeUsage {
    /// Whether it counts tokens (a transcription's may count seconds instead).
    fn in_tokens(&self) -> bool {
        self.kind.as_deref() != Some("duration")
            && (self.input_tokens.is_some() || self.output_tokens.is_some())
    }
}

/// Read a `response.done` event, or a finished transcription's usage in tokens, into `r`;
/// false when `body` is neither.
pub(crate) fn response_done(body: &[u8], r: &mut ResponseRecord) -> bool {
    let Ok(done) = serde_json::from_slice::<Done>(body) else {
        return false;
    };
    if done.kind == TRANSCRIBED {
        return match done.usage.filter(RealtimeUsage::in_tokens) {
            Some(u) => {
                read_usage(u, r);
                true
            }
            None => false,
        };
    }
    if done.kind != "response.done" {
        return false;
    }
    let Some(resp) = done.response else {
        return true;
    };
    r.id = resp.id.filter(|s| !s.is_empty());
    if let Some(status) = resp.status {
        r.finish_reasons.push(status);
    }
    if let Some(err) = resp.status_details.and_then(|d| d.error) {
        r.error_type = err.code.or(err.kind);
    }
    for item in resp.output {
        if item.kind == "function_call" {
            r.tool_calls.push(ToolCall {
                choice: 0,
                id: item.call_id,
                name: item.name.unwrap_or_default(),
                arguments: item.arguments.unwrap_or_default(),
            });
        }
    }
    if let Some(u) = resp.usage {
        read_usage(u, r);
    }
    true
}

/// A Realtime usage object into `r`'s usage and audio parts.
fn read_usage(u: RealtimeUsage, r: &mut ResponseRecord) {
    let details = u.input_token_details;
    let audio_in = details.as_ref().and_then(|d| d.audio_tokens);
    let audio_cached = details
        .as_ref()
        .and_then(|d| d.cached_tokens_details.as_ref())
        .and_then(|c| c.audio_tokens);
    let audio_out = u.output_token_details.and_then(|d| d.audio_tokens);
    r.usage = Usage {
        input: u.input_tokens,
        output: u.output_tokens,
        cached_input: details.and_then(|d| d.cached_tokens),
        total: u.total_tokens,
        ..Usage::default()
    };
    if audio_in.is_some() || audio_out.is_some() {
        r.audio = Some(AudioTokens {
            input: audio_in.unwrap_or(0),
            cached_input: audio_cached.unwrap_or(0),
            output: audio_out.unwrap_or(0),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = include_str!("../../../tests/fixtures/realtime/response_done_audio.json");

    #[test]
    fn response_done_usage_and_calls() {
        let mut r = ResponseRecord::default();
        assert!(response_done(DONE.as_bytes(), &mut r));
        assert_eq!(r.usage.input, Some(1261));
        assert_eq!(r.usage.output, Some(371));
        assert_eq!(r.usage.cached_input, Some(1024));
        assert_eq!(r.usage.total, Some(1632));
        assert_eq!(r.id.as_deref(), Some("resp_CZxgY0nX2Wgr7N8a3mJ5h"));
        assert_eq!(r.finish_reasons, ["completed"]);
        assert_eq!(
            r.audio,
            Some(AudioTokens {
                input: 74,
                cached_input: 0,
                output: 280
            })
        );
    }

    const TRANSCRIPTION: &[u8] = br#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"i","content_index":0,"transcript":"hi","usage":{"type":"tokens","input_tokens":17,"input_token_details":{"text_tokens":0,"audio_tokens":17},"output_tokens":9,"total_tokens":26}}"#;

    #[test]
    fn a_transcription_states_its_usage_in_tokens_or_is_not_read() {
        assert_eq!(Events.server(TRANSCRIPTION), ServerEvent::Transcribed);
        let mut r = ResponseRecord::default();
        assert!(response_done(TRANSCRIPTION, &mut r));
        assert_eq!((r.usage.input, r.usage.output), (Some(17), Some(9)));
        assert_eq!(r.audio.map(|a| a.input), Some(17));
        // whisper-1 states seconds of audio: no tokens to count, nothing read.
        let seconds = br#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"i","content_index":0,"transcript":"hi","usage":{"type":"duration","seconds":3.2}}"#;
        assert_eq!(Events.server(seconds), ServerEvent::Other);
        assert!(!response_done(seconds, &mut ResponseRecord::default()));
    }

    #[test]
    fn not_a_done_event() {
        let mut r = ResponseRecord::default();
        assert!(!response_done(br#"{"type":"response.created"}"#, &mut r));
        assert!(!response_done(b"not json", &mut r));
    }

    #[test]
    fn client_events() {
        let e = Events.client(
            br#"{"type":"response.create","event_id":"e1","response":{"max_output_tokens":64}}"#,
        );
        assert!(
            matches!(e, ClientEvent::Respond { max_output: Some(64), event_id: Some(ref id) } if id == "e1")
        );
        let e = Events.client(
            br#"{"type":"response.create","response":{"max_response_output_tokens":"inf"}}"#,
        );
        assert!(matches!(
            e,
            ClientEvent::Respond {
                max_output: None,
                event_id: None
            }
        ));
        let e = Events.client(br#"{"type":"input_audio_buffer.append","audio":"AAAA"}"#);
        assert!(matches!(e, ClientEvent::Other));
        assert!(matches!(Events.client(b"\xff"), ClientEvent::Other));
    }

    #[test]
    fn a_session_names_its_transcription_model_in_either_version() {
        let ga = br#"{"type":"session.updated","session":{"type":"realtime","model":"gpt-realtime","audio":{"input":{"transcription":{"model":"gpt-4o-mini-transcribe"}}}}}"#;
        let beta = br#"{"type":"session.created","session":{"model":"gpt-4o-realtime-preview","input_audio_transcription":{"model":"whisper-1"}}}"#;
        let off =
            br#"{"type":"session.updated","session":{"audio":{"input":{"transcription":null}}}}"#;
        assert!(matches!(Events.server(ga),
            ServerEvent::Session { model: Some(ref m), transcription_model: Some(ref t) }
                if m == "gpt-realtime" && t == "gpt-4o-mini-transcribe"));
        assert!(matches!(Events.server(beta),
            ServerEvent::Session { transcription_model: Some(ref t), .. } if t == "whisper-1"));
        assert!(matches!(
            Events.server(off),
            ServerEvent::Session {
                model: None,
                transcription_model: None
            }
        ));
    }

    #[test]
    fn a_beta_transcription_session_names_its_transcription_model() {
        for kind in [
            "transcription_session.created",
            "transcription_session.updated",
        ] {
            let e = format!(
                r#"{{"type":"{kind}","event_id":"event_1","session":{{"id":"sess_1","object":"realtime.transcription_session","input_audio_format":"pcm16","input_audio_transcription":{{"model":"gpt-4o-transcribe","language":"","prompt":""}},"turn_detection":{{"type":"server_vad"}},"include":null}}}}"#
            );
            assert!(
                matches!(Events.server(e.as_bytes()),
                    ServerEvent::Session { model: None, transcription_model: Some(ref t) }
                        if t == "gpt-4o-transcribe"),
                "{kind}"
            );
        }
    }

    #[test]
    fn server_events_and_model() {
        assert!(matches!(
            Events.server(br#"{"type":"response.output_text.delta","delta":"Hi"}"#),
            ServerEvent::Output { ref text, response_id: None } if text == "Hi"
        ));
        assert!(matches!(
            Events.server(br#"{"type":"session.created","session":{"model":"gpt-realtime"}}"#),
            ServerEvent::Session { model: Some(ref m), transcription_model: None } if m == "gpt-realtime"
        ));
        assert!(matches!(
            Events.server(br#"{"type":"response.done","response":{}}"#),
            ServerEvent::Done { id: None }
        ));
        assert_eq!(
            Events.server(br#"{"type":"response.created","response":{"id":"resp_1"}}"#),
            ServerEvent::Created {
                id: Some("resp_1".into())
            }
        );
        assert_eq!(
            Events.server(
                br#"{"type":"error","event_id":"event_1","error":{"type":"invalid_request_error","code":"conversation_already_has_active_response","message":"m","param":null,"event_id":"evt_2"}}"#
            ),
            ServerEvent::Error {
                event_id: Some("evt_2".into()),
                refuses_response: true,
            }
        );
        assert_eq!(
            Events
                .model(Some("a=1&model=gpt-4o-realtime-preview%2D1"))
                .as_deref(),
            Some("gpt-4o-realtime-preview-1")
        );
        assert_eq!(Events.model(Some("x=1")), None);
    }
}
