//! Whole-system tests live in `tests/tests/`: they run `sim demo`, which starts the relay, the sim
//! vehicle, the sim lock board, both agents and the scripted backend as separate processes, and
//! check the report it writes. The binaries must be built first (`cargo build --workspace --bins`,
//! which `scripts/test` does).
