//! Request inspection and the include_usage rewrite on arbitrary bodies: no panic, and a
//! rewritten body that was JSON is still JSON with include_usage set at its root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::providers::protocol::{classify, RouteProtocol};
use tokenwarden::providers::request::{ask_stream_usage, inspect};

fuzz_target!(|data: &[u8]| {
    for path in ["/v1/chat/completions", "/v1/messages", "/api/chat", "/v1beta/models/g:streamGenerateContent"] {
        let _ = inspect(&classify(RouteProtocol::Auto, path), path, Some("alt=sse"), data);
    }
    // As the proxy asks: from the facts read from the same body.
    let path = "/v1/chat/completions";
    let Some(facts) = inspect(&classify(RouteProtocol::Auto, path), path, None, data) else {
        return;
    };
    if let Some(out) = ask_stream_usage(&facts, data) {
        assert!(facts.stream && !facts.include_usage);
        // The typed read does not check skipped strings' UTF-8; serde_json's Value does.
        if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
            let v: serde_json::Value = serde_json::from_slice(&out).expect("rewritten body is JSON");
            assert_eq!(v["stream_options"]["include_usage"], serde_json::Value::Bool(true));
        }
    }
});
