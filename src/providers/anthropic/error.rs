//! The error body the proxy answers with on this provider's routes (and ends a refused stream with).

use serde_json::Value;

use crate::providers::adapter::ErrorText;

/// The provider's error object for `e`.
pub(super) fn body(e: &ErrorText<'_>) -> Value {
    serde_json::json!({
        "type": "error",
        "error": { "type": e.anthropic_type, "message": e.message }
    })
}
