//! The hardware abstraction layer: the agents are written against these traits, never against a
//! device; which implementation runs is chosen in the agent's TOML config.
//!
//! Drone side:
//! - [`flight`]: the flight controller ([`flight::FlightController`]) and its MAVLink implementation
//!   for PX4 and ArduPilot ([`flight::mavlink::MavlinkFc`]), connection strings and link config;
//! - [`payload`]: parcel release ([`payload::PayloadRelease`]) through the flight controller's
//!   gripper/servo or a companion-computer PWM pin (embedded-hal `SetDutyCycle`, rppal on a Pi).
//!
//! - [`marker`]: ArUco marker detection on the downward camera's frames and the pinhole geometry
//!   that turns a marker's corners into a landing target (OpenCV detector behind feature `opencv`).
//!
//! Locker side: [`lockboard`] (the Arduino lock board over serial), [`camera`], [`qr`], [`display`].

pub mod flight;
pub mod marker;
pub mod payload;

// locker side: lock board, camera, QR decoding, display
pub mod camera;
pub mod display;
pub mod lockboard;
pub mod qr;
