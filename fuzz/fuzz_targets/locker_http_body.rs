//! The locker HTTP API's request bodies, through the same `api::parse` the handlers use: the
//! first byte picks the route's body type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locker_agent::api::parse;
use protocol::locker_api::{CellsCloseRequest, CellsOpenRequest, CellsSyncRequest, QrScanRequest};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let failure = match pick % 4 {
        0 => parse::<CellsSyncRequest>(body).err(),
        1 => parse::<CellsOpenRequest>(body).err(),
        2 => parse::<CellsCloseRequest>(body).err(),
        _ => parse::<QrScanRequest>(body).err(),
    };
    if let Some(f) = failure {
        // every refusal is a 400 in the seed's error body
        assert_eq!(f.status, 400, "{f:?}");
    }
});
