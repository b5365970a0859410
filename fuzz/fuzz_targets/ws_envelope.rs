//! A WebSocket text frame from anyone (relay ↔ agents ↔ backend): `Envelope::from_json` must
//! answer every input with a value or an error, never panic; what parses must survive its own
//! encoding (what an agent sends is what the backend reads back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Envelope;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(env) = Envelope::from_json(&text) {
        let again = Envelope::from_json(&env.to_json())
            .unwrap_or_else(|e| panic!("our own encoding does not parse: {e}"));
        assert_eq!(again.message.kind(), env.message.kind());
    }
});
