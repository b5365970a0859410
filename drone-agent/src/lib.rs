//! The SkyPost drone agent, beside a PX4 or ArduPilot flight controller.
//!
//! - [`machine`]: the delivery state machine (pure: events in, effects out).
pub mod machine;
