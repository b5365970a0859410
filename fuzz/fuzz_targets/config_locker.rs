//! The locker's TOML config file, through `daemon::config::parse` as `run` and `config check`
//! read it: every file is a config or a list of problems naming the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = daemon::config::parse::<locker_agent::config::Config>(
        &text,
        Path::new("/etc/skypost/locker-agent.toml"),
    );
});
