//! The drone's state file on load (after a crash, a power cut, a full disk): read, then turned
//! back into the state machine, as `app` does at start-up. Anything unreadable is an error
//! (the file is moved aside), never a panic and never a machine in an impossible state.
#![no_main]

use drone_agent::machine::Machine;
use drone_agent::persist::StateFile;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn limits() -> drone_agent::machine::Limits {
    static CFG: OnceLock<drone_agent::config::DroneConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        daemon::config::parse(
            include_str!("../../drone-agent/drone-agent.example.toml"),
            std::path::Path::new("drone-agent.example.toml"),
        )
        .unwrap_or_else(|e| panic!("the example config: {e}"))
    })
    .limits()
}

fuzz_target!(|data: &[u8]| {
    let Some(dir) = scratch() else {
        return;
    };
    let file = StateFile::new(dir.path());
    if std::fs::write(file.path(), data).is_err() {
        return;
    }
    if let Ok(Some(saved)) = file.load() {
        if let Ok(m) = Machine::from_json(saved.machine, limits()) {
            let _ = m.state();
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
