//! The locker's cell state file on load: any content is a store or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locker_agent::cells::CellStore;

fuzz_target!(|data: &[u8]| {
    let Some(dir) = scratch() else {
        return;
    };
    let path = dir.path().join("cells.json");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(store) = CellStore::open(&path, 16, 100, false) {
        for c in store.cells() {
            let _ = store.by_number(c.number);
        }
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
