//! The Model Context Protocol on its streamable HTTP transport: what the proxy needs to know of
//! it to forward, observe and govern a route with `protocol: mcp`.
//!
//! This floor knows only JSON-RPC messages and the transport's headers: it parses a copy of a
//! POST body or of one server message into a small summary ([`message`]), and reads and filters
//! `tools/list` results ([`tools`]). It imports nothing of ours but `sse`; the proxy orchestrates
//! (`proxy/mcp.rs`), the policies decide (`policy/mcp.rs`), telemetry writes the spans
//! (`telemetry/mcp.rs`), and `body/mcp.rs` holds the response wrapper.
//!
//! Transport rules (MCP specification, "Transports", revisions 2025-03-26 to 2026-07-28): a client
//! POSTs one JSON-RPC message (or, in 2025-03-26, a batch) to the endpoint; the answer is `202`
//! with no body when the POST holds only notifications or responses, else `application/json`
//! (one message or a batch) or `text/event-stream` (server requests and notifications, then the
//! responses). A GET opens a stream of server messages; `Last-Event-ID` on a GET resumes a stream
//! after the event with that id; DELETE ends the session named by `Mcp-Session-Id`.

mod keys;
pub mod message;
pub mod tools;

pub use message::{Batch, Kind, Message, MessageError, RequestId, TOOLS_CALL, TOOLS_LIST};

/// Route `protocol:` value of an MCP server behind the route.
pub const PROTOCOL: &str = "mcp";

/// `Mcp-Session-Id`: the session the server assigned at `initialize` (handshake revisions).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// `MCP-Protocol-Version`: the negotiated revision, sent on every request after `initialize`.
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// Largest JSON-RPC message (a POST body, a JSON answer, one SSE event's data) the proxy reads.
/// The official TypeScript server refuses bodies over 4 MB; larger messages are refused (a
/// request) or forwarded unread (an answer that needs no rewriting).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Method names the MCP conventions list (metric label values; others report as `other`).
pub const KNOWN_METHODS: &[&str] = &[
    "completion/complete",
    "elicitation/create",
    "initialize",
    "logging/setLevel",
    "notifications/cancelled",
    "notifications/initialized",
    "notifications/message",
    "notifications/progress",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "ping",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/subscribe",
    "resources/templates/list",
    "resources/unsubscribe",
    "roots/list",
    "sampling/createMessage",
    "server/discover",
    "tools/call",
    "tools/list",
];

/// The metric label for `method`: itself when the conventions list it, else `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}
