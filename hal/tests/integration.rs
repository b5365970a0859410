//! Every integration test of `hal` but the ones named in Cargo.toml's other `[[test]]`
//! targets, as one test binary: each file below was a binary of its own, and each compiled and
//! linked its own copy of the dependencies' generic code (all of them: 628 s of CPU; as one: 127).
//! A file is still run alone with its module path: `cargo test -p hal --test integration <file>::`.

mod camera_grab;
mod qr_scenes;
mod tlog_replay;
