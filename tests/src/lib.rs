//! Whole-system tests live in `tests/`; this library holds their shared harness.
