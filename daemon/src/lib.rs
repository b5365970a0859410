//! What every SkyPost daemon (drone-agent, locker-agent, relay) needs at start-up, written once:
//!
//! - [`config`]: load a TOML file into the daemon's config type and validate it; every error names
//!   the file and the field.
//! - [`logging`]: `tracing` filtered by `RUST_LOG`, to the journal under systemd, to stderr otherwise.
//! - [`shutdown`]: SIGTERM / SIGINT as one future.
//! - [`systemd`]: readiness, status, watchdog and stopping notifications (`Type=notify` units).
//! - [`technician`]: the agents' technician socket (0660, one request line, one JSON reply line)
//!   and its client with exit codes.
//! - [`exit`]: the one exit-code table all three binaries use.
//! - [`fs`]: crash-safe file writes (temporary file, fsync, rename, directory fsync), off the
//!   async workers.
//! - [`ring`]: the bounded history behind the agents' `events` command.

pub mod config;
pub mod exit;
pub mod fs;
pub mod logging;
pub mod ring;
pub mod shutdown;
pub mod systemd;
pub mod technician;
