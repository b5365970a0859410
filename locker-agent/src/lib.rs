//! The SkyPost locker agent: the program on the parcel locker's Orange Pi.
//!
//! It drives the Arduino lock board, opens cells for drones (a drop) and for customers (a QR
//! pickup), follows the doors, shows messages on the screen, and answers the backend over its HTTP
//! API and over the relay link.
//!
//! Module map:
//! - [`config`]: the TOML config (`locker-agent.example.toml` documents every field).
//! - [`cells`]: which UUID is which cell, what each holds and why it is open; saved atomically.
//! - [`locker`]: the operations (sync, open, close, QR scan, health) and the door monitor; the
//!   only module that talks to the board. Split by concern: `ops`, `scan`, `monitor`, `views`,
//!   `inflight`.
//! - [`api`]: the seed's HTTP API on top of [`locker`], with a bearer token (one authenticated
//!   extractor for every route that needs it).
//! - [`failure`]: [`failure::ApiFailure`], how a refused operation is told (status, code, words),
//!   shared by [`api`] and [`inbound`], and how cell and board errors map onto it.
//! - [`uplink`]: what the locker needs from the cloud link, as a trait. [`cloud`] implements it
//!   with the shared `cloud-link` crate.
//! - [`inbound`]: the link's inbound messages (`locker_request` answered like the HTTP API,
//!   `qr_validation` handed to the waiting validator).
//! - [`orchestrator`]: QR validation over HTTP to the orchestrator (the seed's way), used instead
//!   of the link's `qr_validate` when `[orchestrator]` is configured.
//! - [`scanner`]: the camera loop: frames → QR decode → debounce → [`locker::run_pickups`].
//! - [`screen`]: every word shown on the screen.
//! - [`technician`]: the technician's Unix socket in the agent, and the client side of
//!   `locker-agent status | cells | open | close | test | events`.
//! - [`agent`]: wiring for `locker-agent run`.
//!
//! Invariants: a cell is reported open only on the board's word; every change to a cell is on
//! disk before the board is asked to act on it; the agent never names a device itself (config
//! does) and never falls back to a simulated board.

pub mod agent;
pub mod api;
pub mod cells;
pub mod cloud;
pub mod config;
pub mod failure;
pub mod inbound;
pub mod locker;
pub mod orchestrator;
pub mod scanner;
pub mod screen;
pub mod technician;
pub mod uplink;
