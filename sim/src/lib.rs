//! The SkyPost software-in-the-loop world: every simulated device speaks the real protocol over a
//! real socket or pseudo-terminal, so the agents run their field code paths.
//!
//! - [`vehicle`]: a MAVLink quadcopter that behaves like PX4 and ArduPilot SITL (`sim vehicle`).
//! - [`camera`]: what a downward camera on the vehicle sees (the locker's ArUco marker), as PNG frames.
//! - [`lockboard`]: the Arduino lock board on a pty (`sim lockboard`).
//! - [`firmware_board`]: the lock board's own firmware on an emulated AVR (simavr harness).
//! - [`backend`]: the scripted backend playing the seed's orchestrator and drone service.
//! - [`demo`]: the whole delivery with every part a real process (`sim demo`, the main job).
//!
//! `sim` is never linked into an agent binary.

pub mod backend;
pub mod camera;
pub mod demo;
pub mod firmware_board;
pub mod flight_svg;
pub mod lockboard;
pub mod vehicle;
