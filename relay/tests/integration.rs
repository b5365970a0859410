//! Every integration test of `relay` but the ones named in Cargo.toml's other `[[test]]`
//! targets, as one test binary: each file below was a binary of its own, and each compiled and
//! linked its own copy of the dependencies' generic code (all of them: 628 s of CPU; as one: 127).
//! A file is still run alone with its module path: `cargo test -p relay --test integration <file>::`.

mod common;
mod metrics;

mod cli;
mod cluster;
mod fleet;
mod hostile;
mod relay;
mod supervise;
