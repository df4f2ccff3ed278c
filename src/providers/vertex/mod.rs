//! Google Vertex AI (`protocol: vertex`): Gemini on
//! `…/publishers/google/models/{model}:generateContent|streamGenerateContent` and Anthropic on
//! `…/publishers/anthropic/models/{model}:rawPredict|streamRawPredict`.
//!
//! The bodies are the Gemini and Anthropic formats themselves, so both formats here read them
//! with those folders' adapters; what Vertex adds is the path (the model is named there, not in
//! an Anthropic body, which carries `anthropic_version: vertex-2023-10-16` instead), the
//! provider name `gcp.vertex_ai`, and Google's error shape for Gemini. The Anthropic token
//! count (`models/count-tokens:rawPredict`) is labelled, never billed.
//!
//! Vertex's OpenAI-compatible endpoint
//! (`…/locations/{l}/endpoints/openapi/chat/completions`, and a dedicated endpoint's
//! `…/endpoints/{id}/chat/completions`) takes and answers OpenAI Chat bodies: `VertexGemini`
//! claims it and has OpenAI Chat read it ([`Adapter::speaks`]), labelled `gcp.vertex_ai`.

mod path;

pub use path::model_name;

use serde_json::{Map, Value};

use crate::providers::adapter::{
    Adapter, ErrorText, EventRewrite, FramedStream, Operation, Routed, StreamEnding, StreamReader,
    ToolGate,
};
use crate::providers::anthropic::Anthropic;
use crate::providers::doc::{Doc, Items, Node};
use crate::providers::fields::{Capped, DeclaredTool, OwnFields, RequestBody};
use crate::providers::gemini::Gemini;
use crate::providers::openai_chat::OpenAiChat;
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;
use crate::tokens::RequestText;

/// `gen_ai.provider.name` of Vertex AI calls.
const PROVIDER: &str = "gcp.vertex_ai";

/// Gemini on Vertex AI.
pub struct VertexGemini;

/// Anthropic models on Vertex AI.
pub struct VertexAnthropic;

/// Every [`Adapter`] method but the routing ones, answered by `$base`'s adapter: the body is
/// its format, whatever it overrides now or later.
macro_rules! same_body_as {
    ($base:expr) => {
        fn error_body(&self, e: &ErrorText<'_>) -> Value {
            $base.error_body(e)
        }

        fn stream(&self) -> Box<dyn StreamReader> {
            $base.stream()
        }

        fn framed_stream(&self, media_type: &[u8], max: usize) -> Option<Box<dyn FramedStream>> {
            $base.framed_stream(media_type, max)
        }

        fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
            $base.parse_json(body, r)
        }

        fn usage_key(&self) -> &'static str {
            $base.usage_key()
        }

        fn stream_ending(&self) -> Option<Box<dyn StreamEnding>> {
            $base.stream_ending()
        }

        fn usage_hider(&self) -> Option<EventRewrite> {
            $base.usage_hider()
        }

        fn tool_gate(&self) -> Option<Box<dyn ToolGate>> {
            $base.tool_gate()
        }

        fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
            $base.max_tokens_field()
        }

        fn clamp_max_tokens(&self, doc: &mut Value, requested: Option<u64>, limit: u64) -> Capped {
            $base.clamp_max_tokens(doc, requested, limit)
        }

        fn cap_added_text(&self, doc: &Doc, limit: u64) -> Option<Vec<u8>> {
            $base.cap_added_text(doc, limit)
        }

        fn own_request_fields(&self, body: RequestBody<'_>) -> Option<OwnFields> {
            $base.own_request_fields(body)
        }

        fn ask_stream_usage(
            &self,
            stream: bool,
            stream_options: Option<bool>,
            body: &[u8],
        ) -> Option<Vec<u8>> {
            $base.ask_stream_usage(stream, stream_options, body)
        }

        fn declared_tools(&self, tools: Items<'_>) -> Vec<DeclaredTool> {
            $base.declared_tools(tools)
        }

        fn strip_tools(&self, doc: &mut Value, keep: &dyn Fn(&str) -> bool) -> bool {
            $base.strip_tools(doc, keep)
        }

        fn tool_results(&self, doc: Node<'_>, markers: &[String]) -> Vec<ToolResult> {
            $base.tool_results(doc, markers)
        }

        fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
            $base.input_messages(body)
        }

        fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
            $base.output_text(v, add)
        }

        fn request_text(&self, body: &[u8]) -> RequestText {
            $base.request_text(body)
        }

        fn request_text_doc(&self, doc: Node<'_>) -> RequestText {
            $base.request_text_doc(doc)
        }
    };
}

impl Adapter for VertexGemini {
    fn protocol(&self) -> &'static str {
        "vertex"
    }

    fn detects(&self, path: &str) -> bool {
        path::publisher(path) == Some(path::GOOGLE) || path::endpoint(path) || path::tuned(path)
    }

    fn speaks(&self, path: &str) -> Option<&'static str> {
        // Google's OpenAI-compatible endpoint on Vertex: no publisher in the path, the model
        // (`google/gemini-2.0-flash-001`, ...) in an OpenAI Chat body.
        path::endpoint(path).then_some("openai")
    }

    fn route(&self, path: &str) -> Option<Routed> {
        if path::endpoint(path) {
            // Read by OpenAI Chat (`speaks`); the operation is its route's.
            return Some(Routed {
                provider: PROVIDER,
                ..OpenAiChat.route(path)?
            });
        }
        if path::publisher(path) != Some(path::GOOGLE) && !path::tuned(path) {
            return None;
        }
        // The method after the model (or a tuned model's endpoint): what Gemini's own route
        // reads.
        let gemini = Gemini.route(path)?;
        Some(Routed {
            provider: PROVIDER,
            ..gemini
        })
    }

    fn requested_model(&self, path: &str, body_model: Option<&str>) -> Option<String> {
        Gemini.requested_model(path, body_model)
    }

    fn requested_stream(&self, path: &str, query: Option<&str>, body_stream: Option<bool>) -> bool {
        Gemini.requested_stream(path, query, body_stream)
    }

    same_body_as!(Gemini);
}

impl Adapter for VertexAnthropic {
    fn protocol(&self) -> &'static str {
        "vertex"
    }

    fn detects(&self, path: &str) -> bool {
        path::publisher(path) == Some(path::ANTHROPIC)
    }

    fn route(&self, path: &str) -> Option<Routed> {
        if path::publisher(path) != Some(path::ANTHROPIC) {
            return None;
        }
        let (operation, reads) = match path::method(path) {
            _ if path::model(path) == Some(path::COUNT_TOKENS) => (Operation::CountTokens, false),
            Some("rawPredict" | "streamRawPredict") => (Operation::Chat, true),
            _ => (Operation::Other, false),
        };
        Some(Routed {
            provider: PROVIDER,
            operation,
            reads,
        })
    }

    fn requested_model(&self, path: &str, body_model: Option<&str>) -> Option<String> {
        path::model(path).or(body_model).map(str::to_string)
    }

    fn requested_stream(
        &self,
        path: &str,
        _query: Option<&str>,
        body_stream: Option<bool>,
    ) -> bool {
        body_stream.unwrap_or(path::method(path) == Some("streamRawPredict"))
    }

    same_body_as!(Anthropic);
}

#[cfg(test)]
mod tests {
    use crate::providers::protocol::{classify, RouteProtocol};
    use crate::providers::Format;

    const BASE: &str = "/v1/projects/p1/locations/us-east5/publishers";

    #[test]
    fn vertex_paths_are_claimed_by_publisher_and_method() {
        for configured in [RouteProtocol::Auto, RouteProtocol::Named("vertex")] {
            let c = classify(
                configured,
                &format!("{BASE}/anthropic/models/claude-x@1:rawPredict"),
            );
            assert_eq!(
                (c.provider, c.operation.as_str()),
                ("gcp.vertex_ai", "chat")
            );
            assert_eq!(c.format, Some(Format::VertexAnthropic));
            let c = classify(
                configured,
                &format!("{BASE}/anthropic/models/count-tokens:rawPredict"),
            );
            assert_eq!((c.operation.as_str(), c.format), ("count_tokens", None));
            let c = classify(
                configured,
                &format!("{BASE}/google/models/gemini-2.5-pro:streamGenerateContent"),
            );
            assert_eq!(
                (c.provider, c.operation.as_str()),
                ("gcp.vertex_ai", "generate_content")
            );
            assert_eq!(c.format, Some(Format::VertexGemini));
        }
        // The OpenAI-compatible endpoint: read as OpenAI Chat, labelled Vertex's, on a vertex
        // route and under auto.
        for configured in [RouteProtocol::Auto, RouteProtocol::Named("vertex")] {
            for version in ["v1", "v1beta1"] {
                let c = classify(
                    configured,
                    &format!("/{version}/projects/p1/locations/us-central1/endpoints/openapi/chat/completions"),
                );
                assert_eq!(
                    (c.provider, c.operation.as_str(), c.format),
                    ("gcp.vertex_ai", "chat", Some(Format::OpenAiChat)),
                    "{configured:?} {version}"
                );
            }
        }
        // A tuned Gemini model's endpoint: Gemini's generate content, read, on a vertex route
        // and under auto.
        for configured in [RouteProtocol::Auto, RouteProtocol::Named("vertex")] {
            for method in ["generateContent", "streamGenerateContent"] {
                let c = classify(
                    configured,
                    &format!("/v1/projects/p1/locations/us-central1/endpoints/4567:{method}"),
                );
                assert_eq!(
                    (c.provider, c.operation.as_str(), c.format),
                    (
                        "gcp.vertex_ai",
                        "generate_content",
                        Some(Format::VertexGemini)
                    ),
                    "{configured:?} {method}"
                );
            }
        }
        // The Gemini API's own paths stay Gemini's under auto.
        let c = classify(
            RouteProtocol::Auto,
            "/v1beta/models/gemini-2.5-pro:generateContent",
        );
        assert_eq!(c.format, Some(Format::Gemini));
    }
}
