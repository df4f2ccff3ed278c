//! Response bodies: the observing pass-through wrapper every response streams through, and the
//! stream rewriters that may wrap it (a budget's cut, a tool-call gate, hidden injected usage),
//! and the reader of MCP answers (message by message, `tools/list` results filtered).

pub mod cut;
pub mod gate;
pub mod mcp;
mod observed;
mod strip_usage;

pub use cut::{Cut, CutPoint, CutSignal};
pub use gate::{CallCheck, Gate};
pub use mcp::{Framing, McpBody, McpObserver};
pub use observed::{BodyEnd, IdleTimeout, ObservedBody, Observer};
pub use strip_usage::StripUsage;
