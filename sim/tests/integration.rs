//! Every integration test of `sim` but the ones named in Cargo.toml's other `[[test]]`
//! targets, as one test binary: each file below was a binary of its own, and each compiled and
//! linked its own copy of the dependencies' generic code (all of them: 628 s of CPU; as one: 127).
//! A file is still run alone with its module path: `cargo test -p sim --test integration <file>::`.

mod common;

mod ardupilot_fidelity;
mod ardupilot_recordings;
mod fc_autopilot_words;
mod fc_faults;
mod fc_fence;
mod fc_flight;
mod fc_serial;
mod px4_fidelity;
mod pymavlink_conformance;
mod sim_binary;
