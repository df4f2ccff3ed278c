//! AWS Bedrock Runtime (`protocol: bedrock`): Converse and ConverseStream, and InvokeModel /
//! InvokeModelWithResponseStream for Anthropic models, on `/model/{modelId}/{operation}`.
//!
//! Streams use the binary `application/vnd.amazon.eventstream` framing ([`eventstream`]), not
//! SSE. ConverseStream sends one message per event, named by its `:event-type` header
//! (`messageStart`, `contentBlockStart`, `contentBlockDelta`, `contentBlockStop`, `messageStop`,
//! `metadata`); usage is in `metadata`. InvokeModelWithResponseStream sends `chunk` events whose
//! payload `{"bytes": base64}` holds one Anthropic Messages stream event; the last one also
//! carries `amazon-bedrock-invocationMetrics`. A `:message-type` of `exception` (or `error`) is a
//! mid-stream error named by `:exception-type` (or `:error-code`).
//!
//! Usage: Converse `inputTokens` leave cache reads and writes out (`totalTokens` is input, output,
//! `cacheReadInputTokens` and `cacheWriteInputTokens` added up), so input is the sum of the three,
//! as the GenAI conventions count it. InvokeModel bodies are Anthropic's and read as such; the
//! invocation metrics count only where the Anthropic events stated no usage.
//!
//! Requests are SigV4-signed by the client over the method, path, query, `Host` and body: the
//! proxy forwards them as they came and never rewrites a body here (a `max_tokens` cap or a tool
//! strip would break the signature, so neither edits a Bedrock request).

pub mod eventstream;

mod content;
mod converse;
mod framed;
mod invoke;
mod path;

pub use path::model_name;
mod request;

use serde_json::{Map, Value};

use crate::providers::adapter::{
    stream_reader, Adapter, ErrorText, FramedStream, Operation, Routed, StreamReader,
};
use crate::providers::anthropic::Anthropic;
use crate::providers::doc::Doc;
use crate::providers::fields::{Capped, OwnFields, RequestBody};
use crate::providers::tools::ToolResult;
use crate::providers::usage::ResponseRecord;

/// The media type of Bedrock's streamed responses.
pub const EVENT_STREAM: &[u8] = b"application/vnd.amazon.eventstream";

/// `gen_ai.provider.name` of Bedrock calls.
const PROVIDER: &str = "aws.bedrock";

/// Bedrock Converse and ConverseStream.
pub struct BedrockConverse;

/// Bedrock InvokeModel and InvokeModelWithResponseStream, read for Anthropic models (their body
/// is the Anthropic Messages format).
pub struct BedrockInvoke;

/// Whether `media_type` is Bedrock's event stream.
fn is_event_stream(media_type: &[u8]) -> bool {
    media_type.len() >= EVENT_STREAM.len()
        && media_type[..EVENT_STREAM.len()].eq_ignore_ascii_case(EVENT_STREAM)
}

impl Adapter for BedrockConverse {
    fn protocol(&self) -> &'static str {
        "bedrock"
    }

    fn detects(&self, path: &str) -> bool {
        path::operation(path).is_some()
    }

    fn route(&self, path: &str) -> Option<Routed> {
        let reads = match path::operation(path)? {
            path::Op::Converse | path::Op::ConverseStream => true,
            // The invoke format serves these.
            path::Op::Invoke | path::Op::InvokeStream => return None,
            path::Op::CountTokens => false,
        };
        Some(Routed {
            provider: PROVIDER,
            operation: if reads {
                Operation::Chat
            } else {
                Operation::CountTokens
            },
            reads,
        })
    }

    /// `{"message", "__type"}`, as AWS REST-JSON services answer: botocore takes the error
    /// code from `__type` when no `x-amzn-ErrorType` header names it.
    fn error_body(&self, e: &ErrorText<'_>) -> Value {
        serde_json::json!({ "message": e.message, "__type": e.code })
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        // A Converse stream is never SSE; an SSE body here is read as nothing.
        Box::new(converse::Stream::default())
    }

    fn framed_stream(&self, media_type: &[u8], max_bytes: usize) -> Option<Box<dyn FramedStream>> {
        is_event_stream(media_type)
            .then(|| Box::new(converse::Framed::for_converse(max_bytes)) as Box<dyn FramedStream>)
    }

    fn signed_requests(&self) -> bool {
        true
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        converse::parse_json(body, r)
    }

    fn requested_model(&self, path: &str, _body_model: Option<&str>) -> Option<String> {
        path::model(path)
    }

    fn requested_stream(&self, path: &str, _q: Option<&str>, _body_stream: Option<bool>) -> bool {
        path::operation(path) == Some(path::Op::ConverseStream)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        (Some("inferenceConfig"), "maxTokens")
    }

    fn own_request_fields(&self, body: RequestBody<'_>) -> Option<OwnFields> {
        request::own_fields(body)
    }

    fn clamp_max_tokens(&self, _doc: &mut Value, _requested: Option<u64>, _limit: u64) -> Capped {
        // A signed body is never rewritten (see the module docs).
        Capped::Within
    }

    fn cap_added_text(&self, _doc: &Doc, _limit: u64) -> Option<Vec<u8>> {
        None
    }

    fn strip_tools(&self, _doc: &mut Value, _keep: &dyn Fn(&str) -> bool) -> bool {
        // A signed body is never rewritten: a denied tool refuses the call instead.
        false
    }

    fn tool_results(
        &self,
        doc: crate::providers::Node<'_>,
        _markers: &[String],
    ) -> Vec<ToolResult> {
        content::tool_results(doc)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        content::input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        content::output_text(v, add)
    }
}

impl Adapter for BedrockInvoke {
    fn protocol(&self) -> &'static str {
        "bedrock"
    }

    fn detects(&self, path: &str) -> bool {
        path::operation(path).is_some()
    }

    fn route(&self, path: &str) -> Option<Routed> {
        match path::operation(path)? {
            path::Op::Invoke | path::Op::InvokeStream => {}
            _ => return None,
        }
        // Other model families' bodies are their own formats: labelled, not read.
        let reads = path::model(path).is_some_and(|m| path::is_anthropic(&m));
        Some(Routed {
            provider: PROVIDER,
            operation: Operation::Chat,
            reads,
        })
    }

    fn error_body(&self, e: &ErrorText<'_>) -> Value {
        BedrockConverse.error_body(e)
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Anthropic.stream()
    }

    fn framed_stream(&self, media_type: &[u8], max_bytes: usize) -> Option<Box<dyn FramedStream>> {
        is_event_stream(media_type)
            .then(|| Box::new(invoke::Framed::for_invoke(max_bytes)) as Box<dyn FramedStream>)
    }

    fn signed_requests(&self) -> bool {
        true
    }

    fn parse_json(&self, body: &[u8], r: &mut ResponseRecord) -> bool {
        if let Some(e) = converse::aws_error(body) {
            r.error_type = Some(e);
            return true;
        }
        Anthropic.parse_json(body, r)
    }

    fn requested_model(&self, path: &str, _body_model: Option<&str>) -> Option<String> {
        path::model(path)
    }

    fn requested_stream(&self, path: &str, _q: Option<&str>, _body_stream: Option<bool>) -> bool {
        path::operation(path) == Some(path::Op::InvokeStream)
    }

    fn max_tokens_field(&self) -> (Option<&'static str>, &'static str) {
        Anthropic.max_tokens_field()
    }

    fn clamp_max_tokens(&self, _doc: &mut Value, _requested: Option<u64>, _limit: u64) -> Capped {
        Capped::Within
    }

    fn cap_added_text(&self, _doc: &Doc, _limit: u64) -> Option<Vec<u8>> {
        None
    }

    fn strip_tools(&self, _doc: &mut Value, _keep: &dyn Fn(&str) -> bool) -> bool {
        false
    }

    fn tool_results(&self, doc: crate::providers::Node<'_>, markers: &[String]) -> Vec<ToolResult> {
        Anthropic.tool_results(doc, markers)
    }

    fn input_messages(&self, body: &Map<String, Value>) -> (Option<Value>, Option<Value>) {
        Anthropic.input_messages(body)
    }

    fn output_text(&self, v: &Value, add: &mut dyn FnMut(usize, &str)) {
        Anthropic.output_text(v, add)
    }
}

stream_reader!(converse::Stream, event);

#[cfg(test)]
mod tests {
    use crate::providers::protocol::{classify, RouteProtocol};
    use crate::providers::Format;

    #[test]
    fn bedrock_paths_pick_the_format_by_operation() {
        for configured in [RouteProtocol::Auto, RouteProtocol::Named("bedrock")] {
            let c = classify(configured, "/model/amazon.nova-pro-v1%3A0/converse-stream");
            assert_eq!((c.provider, c.operation.as_str()), ("aws.bedrock", "chat"));
            assert_eq!(c.format, Some(Format::BedrockConverse));
            let c = classify(
                configured,
                "/model/us.anthropic.claude-3-5-haiku-20241022-v1:0/invoke",
            );
            assert_eq!(c.format, Some(Format::BedrockInvoke));
            // Another family's InvokeModel body is its own format: labelled, not read.
            let c = classify(configured, "/model/meta.llama3-70b-instruct-v1:0/invoke");
            assert_eq!((c.provider, c.format), ("aws.bedrock", None));
            let c = classify(configured, "/model/amazon.nova-pro-v1:0/count-tokens");
            assert_eq!((c.operation.as_str(), c.format), ("count_tokens", None));
        }
    }
}
