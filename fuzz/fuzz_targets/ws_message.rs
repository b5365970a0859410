//! Every message type's payload: the first byte picks the `type` (all of `Message::KINDS`),
//! the rest is the payload's JSON. Reaches each payload parser directly instead of waiting for
//! libFuzzer to spell a type name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Envelope, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let kind = Message::KINDS[usize::from(pick) % Message::KINDS.len()];
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    if let Ok(m) = Message::from_parts(kind, payload) {
        assert_eq!(m.kind(), kind);
        let env = Envelope::new(m);
        let again = Envelope::from_json(&env.to_json())
            .unwrap_or_else(|e| panic!("{kind}: our own encoding does not parse: {e}"));
        assert_eq!(again.message.kind(), kind);
    }
});
