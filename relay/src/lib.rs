//! The SkyPost cloud relay: drones and lockers dial out to it over WebSocket (they sit behind
//! NAT and 4G), and the backend reaches them through it. It holds only live connections: no
//! database, no state that outlives a socket.
//!
//! Module map:
//! - [`cluster`]: several relays, one fleet, through RabbitMQ (`[cluster]`; data flow and
//!   invariants there).
//! - [`config`]: the TOML config (`relay/relay.example.toml`), validated.
//! - [`auth`]: device tokens and the backend credential, checked at the HTTP upgrade.
//! - [`fleet`]: the fleet file (agents' ids, kinds, token digests), reloaded while running.
//! - [`hub`]: the live connections and the routing between them; bounded queues and what
//!   happens when one fills; presence; pending HTTP bridge calls.
//! - [`conn`]: one task per WebSocket: read, hand to the hub, drain its queue, ping.
//! - [`wsframe`]: the agents' WebSocket framing (RFC 6455, server side), ours so that an idle
//!   agent's socket holds no buffer (the backend's socket stays tungstenite).
//! - [`gate`]: connections that have not authenticated yet: caps per source and in total, and
//!   the header timeout.
//! - [`server`]: routes, the HTTP bridge, `/health`, `/metrics`, and [`Relay`] (start, shutdown).
//! - [`tls`]: rustls (ring) and a listener that handshakes off the accept path.
//! - [`metrics`]: counters and the Prometheus text exposition.
//! - [`limits`]: raising the open-file limit for thousands of sockets.
//!
//! Invariants: the relay never blocks one connection on another (every hand-off is a
//! non-blocking offer to a bounded queue); it never forwards a frame without stamping the
//! authenticated sender as `source`; it never drops a frame silently (every drop is answered
//! or counted).

pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod fleet;
pub mod gate;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod wsframe;

pub use config::Config;
pub use server::{Relay, RelayError};
