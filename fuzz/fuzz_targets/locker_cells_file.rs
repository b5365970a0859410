//! The locker's cell state file on load: any content is a store or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use locker_agent::cells::CellStore;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
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
