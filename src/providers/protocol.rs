//! Which provider protocol a request speaks, decided from the route and the path by asking the
//! registered formats ([`Adapter::detects`](super::Adapter::detects), [`Adapter::route`](super::Adapter::route)).
//!
//! This is the coarse classification the proxy needs before any body is parsed: the error shape
//! to answer in, the provider and operation labels for metrics, and the format that reads the
//! call, if one does.

use super::adapter::{openai_error_body, ErrorText, Operation};
use super::registry::Format;
use crate::config::{Config, ConfigError};

/// Route `protocol:` value that detects the protocol per request from the path.
pub const AUTO: &str = "auto";
/// Route `protocol:` value that forwards and counts, never parses.
pub const PASSTHROUGH: &str = "passthrough";

/// How a route reads its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteProtocol {
    /// Detected per request from the path.
    Auto,
    /// Forwarded and counted, never parsed.
    Passthrough,
    /// One provider's protocol (`openai`, `anthropic`, ...): the formats that name it.
    Named(&'static str),
    /// An MCP server (streamable HTTP): no LLM format; the proxy's MCP path serves it.
    Mcp,
}

/// The JSON error shape a route's clients understand: a format's, or OpenAI's (which every
/// compatible client reads) where no format applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorShape(Option<Format>);

/// What the path says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// `gen_ai.provider.name` value.
    pub provider: &'static str,
    /// What the call does (`other` for non-LLM paths).
    pub operation: Operation,
    /// The format that reads the call, when one does.
    pub format: Option<Format>,
    shape: ErrorShape,
}

// === impl RouteProtocol ===

impl RouteProtocol {
    /// The protocol a route's `protocol:` value names, if it names one.
    pub fn named(name: &str) -> Option<RouteProtocol> {
        match name {
            AUTO => Some(RouteProtocol::Auto),
            PASSTHROUGH => Some(RouteProtocol::Passthrough),
            crate::mcp::PROTOCOL => Some(RouteProtocol::Mcp),
            n => Format::ALL
                .iter()
                .map(|f| f.adapter().protocol())
                .find(|p| *p == n)
                .map(RouteProtocol::Named),
        }
    }

    /// Every value a route's `protocol:` accepts, for error messages.
    pub fn names() -> Vec<&'static str> {
        let mut out = vec![AUTO];
        for f in Format::ALL {
            let p = f.adapter().protocol();
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out.push(PASSTHROUGH);
        out.push(crate::mcp::PROTOCOL);
        out
    }
}

// === impl ErrorShape ===

impl ErrorShape {
    /// OpenAI's shape, for answers no format's route gives (no route matched, passthrough).
    pub const DEFAULT: ErrorShape = ErrorShape(None);

    /// The shape `format`'s clients read.
    pub fn of(format: Format) -> ErrorShape {
        ErrorShape(Some(format))
    }

    /// The JSON body of an error in this shape.
    pub fn error_body(self, e: &ErrorText<'_>) -> serde_json::Value {
        match self.0 {
            Some(f) => f.adapter().error_body(e),
            None => openai_error_body(e),
        }
    }
}

// === impl Classified ===

impl Classified {
    /// The error shape for this call's protocol.
    pub fn error_shape(&self) -> ErrorShape {
        self.shape
    }

    /// Where the API's path starts in the client's `path` when the response names URLs the
    /// client then fetches directly, to be pointed at the proxy ([`Classified::point_links`]).
    pub fn names_links(&self, path: &str) -> Option<usize> {
        self.shape.0?.adapter().names_links(path)
    }

    /// The response `body` with those URLs pointed at `base`; `None` when nothing changed.
    pub fn point_links(&self, body: &[u8], base: &str) -> Option<Vec<u8>> {
        self.shape.0?.adapter().point_links(body, base)
    }
}

/// Every route's `protocol:` names a protocol the registry knows; else a config error naming
/// the first that does not (`routes[i].protocol`) and the known names. `origin` names the file.
/// Start-up, `check-config` and reload run it after loading the file.
pub fn check_routes(config: &Config, origin: &str) -> Result<(), ConfigError> {
    for (i, r) in config.routes.iter().enumerate() {
        if RouteProtocol::named(&r.protocol).is_none() {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: format!("routes[{i}].protocol"),
                message: format!(
                    "unknown protocol {:?} (one of: {})",
                    r.protocol,
                    RouteProtocol::names().join(", ")
                ),
                line: None,
            });
        }
    }
    Ok(())
}

/// Classify a request path (after prefix stripping) on a route reading `configured`.
pub fn classify(configured: RouteProtocol, path: &str) -> Classified {
    let protocol = match configured {
        RouteProtocol::Named(p) => p,
        RouteProtocol::Auto => match Format::ALL.iter().find(|f| f.adapter().detects(path)) {
            Some(f) => f.adapter().protocol(),
            None => return passthrough(),
        },
        RouteProtocol::Passthrough => return passthrough(),
        RouteProtocol::Mcp => {
            return Classified {
                provider: crate::mcp::PROTOCOL,
                ..passthrough()
            }
        }
    };
    // A provider's endpoint in another protocol (an OpenAI-compatible one): read as that
    // protocol reads it, labelled as the provider's. One step only: the spoken protocol's own
    // formats route the path, never another `speaks`.
    let compatible = Format::ALL
        .iter()
        .filter(|f| f.adapter().protocol() == protocol)
        .find_map(|f| Some((f.adapter().speaks(path)?, f.adapter().route(path)?.provider)));
    if let Some((spoken, provider)) = compatible {
        return Classified {
            provider,
            ..classify_in(spoken, path)
        };
    }
    classify_in(protocol, path)
}

/// Classify `path` by the formats of `protocol` alone.
fn classify_in(protocol: &str, path: &str) -> Classified {
    let mut formats = Format::ALL
        .iter()
        .filter(|f| f.adapter().protocol() == protocol);
    let Some(&first) = formats.clone().next() else {
        return passthrough();
    };
    for &f in formats.by_ref() {
        if let Some(r) = f.adapter().route(path) {
            return Classified {
                provider: r.provider,
                operation: r.operation,
                format: r.reads.then_some(f),
                shape: ErrorShape::of(f),
            };
        }
    }
    // No format of the protocol claims the path: labelled as the protocol's, never read.
    Classified {
        provider: "unknown",
        operation: Operation::Other,
        format: None,
        shape: ErrorShape::of(first),
    }
}

/// The longest path [`classify_remembered`] keeps (longer ones are classified every time).
const REMEMBERED_PATH: usize = 256;

/// [`classify`], remembering the last answer on this thread: an agent's calls repeat one path, and
/// classifying asks every format's path rules (~3k instructions a call). One entry per thread,
/// of a bounded path: a client choosing paths can only make it classify again.
pub fn classify_remembered(configured: RouteProtocol, path: &str) -> Classified {
    type Last = Option<(RouteProtocol, Box<str>, Classified)>;
    thread_local! {
        static LAST: std::cell::RefCell<Last> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return classify(configured, path);
        };
        if let Some((p, s, c)) = last.as_ref() {
            if *p == configured && **s == *path {
                return *c;
            }
        }
        let c = classify(configured, path);
        if path.len() <= REMEMBERED_PATH {
            *last = Some((configured, path.into(), c));
        }
        c
    })
}

fn passthrough() -> Classified {
    Classified {
        provider: "unknown",
        operation: Operation::Other,
        format: None,
        shape: ErrorShape::DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(p: &str) -> RouteProtocol {
        RouteProtocol::named(p).unwrap()
    }

    #[test]
    fn a_remembered_answer_is_the_answer_for_that_route_and_path() {
        let paths = [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/messages",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "/v1/messages",
            "/healthz",
            "/healthz",
        ];
        for configured in [RouteProtocol::Auto, named("openai"), named("anthropic")] {
            for p in paths.iter().chain(std::iter::once(&&*"/x".repeat(200))) {
                assert_eq!(
                    classify_remembered(configured, p),
                    classify(configured, p),
                    "{configured:?} {p}"
                );
            }
        }
    }

    #[test]
    fn auto_detects_by_path() {
        let c = classify(RouteProtocol::Auto, "/v1/messages");
        assert_eq!((c.provider, c.operation.as_str()), ("anthropic", "chat"));
        assert_eq!(c.error_shape(), ErrorShape::of(Format::Anthropic));
        assert_eq!(c.format, Some(Format::Anthropic));
        let c = classify(RouteProtocol::Auto, "/v1/chat/completions");
        assert_eq!((c.provider, c.operation.as_str()), ("openai", "chat"));
        assert_eq!(c.format, Some(Format::OpenAiChat));
        let c = classify(RouteProtocol::Auto, "/v1/responses");
        assert_eq!(
            (c.operation.as_str(), c.format),
            ("chat", Some(Format::OpenAiResponses))
        );
        let c = classify(
            RouteProtocol::Auto,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        );
        assert_eq!(
            (c.provider, c.operation.as_str()),
            ("gcp.gemini", "generate_content")
        );
        assert_eq!(c.error_shape(), ErrorShape::of(Format::Gemini));
        let c = classify(
            RouteProtocol::Auto,
            "/openai/deployments/gpt4/chat/completions",
        );
        assert_eq!(c.provider, "azure.ai.openai");
        let c = classify(RouteProtocol::Auto, "/api/chat");
        assert_eq!((c.provider, c.operation.as_str()), ("ollama", "chat"));
        let c = classify(RouteProtocol::Auto, "/v1/messages/count_tokens");
        assert_eq!((c.operation.as_str(), c.format), ("count_tokens", None));
        let c = classify(RouteProtocol::Auto, "/v1/models");
        assert_eq!(
            (c.provider, c.operation.as_str(), c.format),
            ("openai", "other", None)
        );
    }

    #[test]
    fn openai_compatible_endpoints_are_read_as_openai_chat() {
        // Google's OpenAI-compatible endpoint, on a gemini route and detected by path: its
        // `/v1beta/` path is Gemini's, its bodies, streams and usage OpenAI Chat's.
        for configured in [named("gemini"), RouteProtocol::Auto] {
            let c = classify(configured, "/v1beta/openai/chat/completions");
            assert_eq!(c.format, Some(Format::OpenAiChat), "{configured:?}");
            assert_eq!((c.provider, c.operation.as_str()), ("gcp.gemini", "chat"));
            assert_eq!(c.error_shape(), ErrorShape::of(Format::OpenAiChat));
            let c = classify(configured, "/v1beta/openai/embeddings");
            assert_eq!(c.format, Some(Format::OpenAiChat), "{configured:?}");
            assert_eq!(c.operation, Operation::Embeddings);
        }
        // Anthropic's OpenAI SDK compatibility layer on an anthropic route.
        let c = classify(named("anthropic"), "/v1/chat/completions");
        assert_eq!(c.format, Some(Format::OpenAiChat));
        assert_eq!((c.provider, c.operation.as_str()), ("anthropic", "chat"));
        // Gemini's and Anthropic's own paths stay theirs.
        let c = classify(
            named("gemini"),
            "/v1beta/models/gemini-2.5-flash:generateContent",
        );
        assert_eq!(c.format, Some(Format::Gemini));
        let c = classify(named("gemini"), "/v1beta/models/openai:generateContent");
        assert_eq!(c.format, Some(Format::Gemini));
        let c = classify(named("anthropic"), "/v1/messages");
        assert_eq!(c.format, Some(Format::Anthropic));
    }

    #[test]
    fn anthropic_batch_results_are_read_and_the_rest_of_the_batch_api_is_not() {
        let results = "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results";
        for configured in [named("anthropic"), RouteProtocol::Auto] {
            let c = classify(configured, results);
            assert_eq!(c.format, Some(Format::AnthropicBatch), "{configured:?}");
            assert_eq!((c.provider, c.operation.as_str()), ("anthropic", "chat"));
            assert_eq!(c.error_shape(), ErrorShape::of(Format::AnthropicBatch));
        }
        let c = classify(named("anthropic"), &format!("/anthropic{results}"));
        assert_eq!(c.format, Some(Format::AnthropicBatch));
        // Creating, polling, listing and canceling batches spend nothing: labelled, unread.
        for path in [
            "/v1/messages/batches",
            "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d",
            "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/cancel",
            "/v1/messages/batches//results",
            "/v1/messages/batches/a/b/results",
        ] {
            let c = classify(named("anthropic"), path);
            assert_eq!((c.operation, c.format), (Operation::Other, None), "{path}");
            assert_eq!(c.error_shape(), ErrorShape::of(Format::Anthropic), "{path}");
        }
    }

    #[test]
    fn configured_protocol_wins() {
        let c = classify(named("anthropic"), "/whatever");
        assert_eq!(c.error_shape(), ErrorShape::of(Format::Anthropic));
        assert_eq!(
            classify(RouteProtocol::Passthrough, "/v1/chat/completions").operation,
            Operation::Other
        );
        assert_eq!(
            classify(RouteProtocol::Passthrough, "/v1/chat/completions").error_shape(),
            ErrorShape::DEFAULT
        );
    }

    #[test]
    fn route_protocol_names_come_from_the_registry() {
        assert_eq!(
            RouteProtocol::names(),
            [
                "auto",
                "bedrock",
                "vertex",
                "anthropic",
                "gemini",
                "ollama",
                "openai",
                "passthrough",
                "mcp"
            ]
        );
        assert_eq!(
            RouteProtocol::named("openai"),
            Some(RouteProtocol::Named("openai"))
        );
        assert_eq!(RouteProtocol::named("azure"), None);
    }
}
