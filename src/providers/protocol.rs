//! Which provider protocol a request speaks, decided from the route and the path.
//!
//! This is the coarse classification the proxy needs before any body is parsed: the error shape
//! to answer in, and the provider and operation labels for metrics.

use super::format::Format;
use crate::config::Protocol;

/// The JSON error shape a route's clients understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","param","code"}}` — OpenAI and every compatible server.
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}`.
    Anthropic,
    /// `{"error":{"code","message","status"}}` — Google APIs.
    Gemini,
}

/// What an error the proxy answers itself says, in every provider's vocabulary: each shape
/// takes the fields its clients read.
#[derive(Debug, Clone, Copy)]
pub struct ErrorText<'a> {
    /// HTTP status.
    pub status: u16,
    /// Human-readable message.
    pub message: &'a str,
    /// Stable machine-readable code.
    pub code: &'a str,
    /// OpenAI `error.type`.
    pub openai_type: &'a str,
    /// Anthropic `error.type`.
    pub anthropic_type: &'a str,
    /// Google `error.status`.
    pub google_status: &'a str,
}

// === impl ErrorShape ===

impl ErrorShape {
    /// The JSON body of an error in this shape.
    pub fn error_body(self, e: &ErrorText<'_>) -> serde_json::Value {
        match self {
            ErrorShape::OpenAi => serde_json::json!({
                "error": {
                    "message": e.message,
                    "type": e.openai_type,
                    "param": null,
                    "code": e.code,
                }
            }),
            ErrorShape::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": e.anthropic_type, "message": e.message }
            }),
            ErrorShape::Gemini => serde_json::json!({
                "error": {
                    "code": e.status,
                    "message": e.message,
                    "status": e.google_status,
                }
            }),
        }
    }
}

/// What the path says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// Provider protocol in use.
    pub protocol: Protocol,
    /// `gen_ai.provider.name` value.
    pub provider: &'static str,
    /// `gen_ai.operation.name` value, or `other` for non-LLM paths.
    pub operation: &'static str,
}

// === impl Classified ===

impl Classified {
    /// The error shape for this protocol.
    pub fn error_shape(&self) -> ErrorShape {
        match self.protocol {
            Protocol::Anthropic => ErrorShape::Anthropic,
            Protocol::Gemini => ErrorShape::Gemini,
            _ => ErrorShape::OpenAi,
        }
    }
}

/// Classify a request path (after prefix stripping) on a route with protocol `configured`.
pub fn classify(configured: Protocol, path: &str) -> Classified {
    let protocol = match configured {
        Protocol::Auto => detect(path),
        p => p,
    };
    let (provider, operation) = match protocol {
        Protocol::Anthropic => (
            "anthropic",
            if path.ends_with("/messages") {
                "chat"
            } else if path.ends_with("/messages/count_tokens") {
                // A count, not a generation: labelled, never billed or counted as a step.
                "count_tokens"
            } else {
                "other"
            },
        ),
        Protocol::Gemini => (
            "gcp.gemini",
            if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
                "generate_content"
            } else if path.contains(":embedContent") || path.contains(":batchEmbedContents") {
                "embeddings"
            } else {
                "other"
            },
        ),
        Protocol::Ollama => (
            "ollama",
            if path.ends_with("/api/chat") {
                "chat"
            } else if path.ends_with("/api/generate") {
                "text_completion"
            } else if path.ends_with("/api/embed") || path.ends_with("/api/embeddings") {
                "embeddings"
            } else {
                "other"
            },
        ),
        Protocol::Openai | Protocol::Auto => (
            if path.starts_with("/openai/deployments/") {
                "azure.ai.openai"
            } else {
                "openai"
            },
            openai_operation(path),
        ),
        Protocol::Passthrough => ("unknown", "other"),
    };
    Classified {
        protocol,
        provider,
        operation,
    }
}

fn detect(path: &str) -> Protocol {
    if path.ends_with("/v1/messages") || path.ends_with("/v1/messages/count_tokens") {
        Protocol::Anthropic
    } else if path.contains(":generateContent")
        || path.contains(":streamGenerateContent")
        || path.contains("/v1beta/")
    {
        Protocol::Gemini
    } else if path.starts_with("/api/") {
        Protocol::Ollama
    } else {
        Protocol::Openai
    }
}

fn openai_operation(path: &str) -> &'static str {
    if path.ends_with("/chat/completions") || path.ends_with("/responses") {
        "chat"
    } else if path.ends_with("/embeddings") {
        "embeddings"
    } else if path.ends_with("/completions") {
        "text_completion"
    } else {
        "other"
    }
}

/// The response format of a classified call, when tokenwarden reads it.
pub(super) fn format_for(class: &Classified, path: &str) -> Option<Format> {
    match (class.protocol, class.operation) {
        (_, "other" | "count_tokens") => None,
        (Protocol::Anthropic, "chat") => Some(Format::Anthropic),
        (Protocol::Gemini, "generate_content") => Some(Format::Gemini),
        (Protocol::Ollama, "chat" | "text_completion") => Some(Format::Ollama),
        (Protocol::Openai | Protocol::Auto, _) if path.ends_with("/responses") => {
            Some(Format::OpenAiResponses)
        }
        // Chat, legacy completions and embeddings share the usage object.
        (Protocol::Openai | Protocol::Auto, _) => Some(Format::OpenAiChat),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_detects_by_path() {
        let c = classify(Protocol::Auto, "/v1/messages");
        assert_eq!((c.provider, c.operation), ("anthropic", "chat"));
        assert_eq!(c.error_shape(), ErrorShape::Anthropic);
        let c = classify(Protocol::Auto, "/v1/chat/completions");
        assert_eq!((c.provider, c.operation), ("openai", "chat"));
        let c = classify(
            Protocol::Auto,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        );
        assert_eq!(
            (c.provider, c.operation),
            ("gcp.gemini", "generate_content")
        );
        assert_eq!(c.error_shape(), ErrorShape::Gemini);
        let c = classify(Protocol::Auto, "/openai/deployments/gpt4/chat/completions");
        assert_eq!(c.provider, "azure.ai.openai");
        let c = classify(Protocol::Auto, "/api/chat");
        assert_eq!((c.provider, c.operation), ("ollama", "chat"));
    }

    #[test]
    fn configured_protocol_wins() {
        let c = classify(Protocol::Anthropic, "/whatever");
        assert_eq!(c.error_shape(), ErrorShape::Anthropic);
        assert_eq!(
            classify(Protocol::Passthrough, "/v1/chat/completions").operation,
            "other"
        );
    }
}
