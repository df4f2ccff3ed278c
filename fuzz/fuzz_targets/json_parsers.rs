//! Every provider's JSON body parser on arbitrary bytes, and the WebSocket session events of
//! formats that have them (Realtime): no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenwarden::providers::{Format, ResponseParser};

fuzz_target!(|data: &[u8]| {
    // Every registered format, so a new one is fuzzed as it is added.
    for &format in Format::ALL {
        let mut p = ResponseParser::new(format, false, 1 << 16);
        p.feed(data);
        let _ = p.finish();
        if let Some(events) = format.adapter().realtime() {
            let _ = events.client(data);
            let _ = events.server(data);
        }
    }
});
