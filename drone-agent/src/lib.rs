//! The SkyPost drone agent, beside a PX4 or ArduPilot flight controller.
//!
//! - [`machine`]: the delivery state machine (pure: events in, effects out; the diagram is in
//!   `docs/state-machine.md`).
//! - [`monitor`]: flight-controller snapshots → machine events (progress, battery, GPS, link).
//! - [`runtime`]: runs effects against the flight controller, the payload and the cloud.
//! - [`report`]: what the drone tells the cloud (register, telemetry, events).
//! - [`commands`]: command ids already acted on (idempotency).
//! - [`precision`]: precision approach over the locker's ArUco marker (decisions and
//!   `LANDING_TARGET`; the runtime holds one while approaching).
//! - [`camera`]: the downward camera's worker thread (marker sightings, video frames).
//! - [`persist`]: the state file, written atomically on every transition.
//! - [`energy`]: the energy to get home, learned in flight (pure; not yet wired: issue 12).
//! - [`geofence`]: the airspace a delivery may use (the task's volume or `[geofence]`).
//! - [`config`]: the TOML config; [`app`]: wiring from config to a running agent.
//! - [`technician`]: the Unix socket a technician's `drone-agent status` / `events` read.

pub mod app;
pub mod camera;
pub mod commands;
pub mod config;
pub mod energy;
pub mod flightlog;
pub mod geofence;
pub mod machine;
pub mod monitor;
pub mod persist;
pub mod precision;
pub mod report;
pub mod runtime;
pub mod technician;
