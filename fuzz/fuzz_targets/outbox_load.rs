//! The event outbox's files on load: an event file and the `seq` counter with any content (the
//! input split at the first NUL). Opening never panics, a corrupt event is set aside, and the
//! next seq is above every seq on disk.
#![no_main]

use cloud_link::Outbox;
use libfuzzer_sys::fuzz_target;
use protocol::ws::{Event, EventType};

fuzz_target!(|data: &[u8]| {
    let (event, counter) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Some(dir) = scratch() else {
        return;
    };
    let _ = std::fs::write(dir.path().join("00000000000000000007.json"), event);
    let _ = std::fs::write(dir.path().join("seq"), counter);
    let Ok((mut ob, _problems)) = Outbox::open(dir.path(), 16) else {
        return;
    };
    let highest = ob.pending().filter_map(|e| e.seq).max().unwrap_or(0).max(7);
    if let Ok(e) = ob.push(Event::new(EventType::Ready)) {
        assert!(
            e.seq.unwrap_or(0) > highest,
            "seq {:?} not above {highest}",
            e.seq
        );
    }
});

/// A scratch directory on tmpfs when there is one (fsync is free there: the outbox and the
/// state files fsync every write, which on a disk caps a run at tens of executions a second).
fn scratch() -> Option<tempfile::TempDir> {
    tempfile::Builder::new()
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .ok()
}
