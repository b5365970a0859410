//! Lines from the lock board (and commands, as the simulated board reads them): garbage is an
//! error, never a panic; what parses encodes back to a line that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::lockboard::{BoardCommand, BoardReply};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.split('\n') {
        if let Ok(r) = BoardReply::parse(line) {
            // only the line ending comes off: trailing spaces belong to the board's message
            let again = BoardReply::parse(strip_eol(&r.encode()))
                .unwrap_or_else(|e| panic!("{r:?} encodes to a line that does not parse: {e}"));
            assert_eq!(again, r);
        }
        if let Ok(c) = BoardCommand::parse(line) {
            let again = BoardCommand::parse(strip_eol(&c.encode()))
                .unwrap_or_else(|e| panic!("{c:?} encodes to a line that does not parse: {e}"));
            assert_eq!(again, c);
        }
    }
});

fn strip_eol(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}
