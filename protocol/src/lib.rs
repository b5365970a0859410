//! Every message that crosses a wire in the SkyPost on-board suite, as types.
//!
//! - [`ws`]: the WebSocket protocol between agents, the relay and the backend (seed envelope
//!   `{type, payload, timestamp}`), with [`ws::Envelope::from_json`] as the one entry point.
//! - [`locker_api`]: the locker agent's HTTP API bodies and the seed's standard error body.
//! - [`lockboard`]: the lock board's serial lines (`OPEN_<n>`, `CLOSE_<n>`, `STATUS` and the
//!   replies this suite defines), documented in that module.
//! - [`broker`]: the broker's delivery-task body.
//! - [`orchestrator`]: the locker's QR validation call to the orchestrator over HTTP.
//! - [`units`]: percent, metres, degrees, WGS-84 positions, checked on the way in.
//! - [`volume`]: the operational volume a task may carry (the fence the autopilot enforces).
//! - [`geo`]: metres north/east between positions, one Earth radius for the whole suite.
//!
//! This crate knows nothing about sockets, tokio or files: it is types and parsing only. It is the
//! contract with the backend: change a shape and you bump [`ws::PROTOCOL_VERSION`].

pub mod broker;
pub mod error;
pub mod geo;
pub mod lockboard;
pub mod locker_api;
pub mod orchestrator;
mod sorted_json;
pub mod units;
pub mod volume;
mod wire_time;
pub mod ws;

pub use error::ProtocolError;
pub use ws::{Envelope, Message, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
