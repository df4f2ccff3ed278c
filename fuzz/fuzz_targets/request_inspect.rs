//! Request inspection and the include_usage rewrite on arbitrary bodies: no panic, and a
//! rewritten body is still JSON with include_usage set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::providers::openai_chat::with_include_usage;
use tokenwarden::providers::request::inspect;
use tokenwarden::providers::protocol::{classify, RouteProtocol};

fuzz_target!(|data: &[u8]| {
    for path in ["/v1/chat/completions", "/v1/messages", "/api/chat", "/v1beta/models/g:streamGenerateContent"] {
        let _ = inspect(&classify(RouteProtocol::Auto, path), path, Some("alt=sse"), data);
    }
    if let Some(out) = with_include_usage(data) {
        let v: serde_json::Value = serde_json::from_slice(&out).expect("rewritten body is JSON");
        assert_eq!(v["stream_options"]["include_usage"], serde_json::Value::Bool(true));
    }
});
