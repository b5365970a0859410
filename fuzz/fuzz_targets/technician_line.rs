//! The technician socket's request line (`open 3 force`, `service 4 empty`, ...): any line is a
//! request or a refusal with a reason, and a request survives its own line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locker_agent::technician::Request;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(r) = Request::parse(&line) {
        assert_eq!(Request::parse(&r.line()), Ok(r));
    }
});
