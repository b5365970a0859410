//! An agent's link to the SkyPost relay, shared by the drone and locker agents.
//!
//! - [`config`]: the `[cloud]` config section.
//! - [`outbox`]: events on disk until acknowledged (atomic writes; survives SIGKILL and power cuts).
//! - [`link`]: the WebSocket client: dials with the device token, sends the hello frame, re-sends
//!   every unacknowledged event, pumps frames both ways, detects a dead link with pings, and
//!   reconnects with backoff (1, 2, 4, 8, 16 s by default, with jitter) forever.
//!
//! Delivery guarantees: events are at-least-once (the backend de-duplicates by `event_id`; `seq`
//! shows gaps), telemetry is newest-wins and never queued, other frames are best-effort on the
//! live connection.

pub mod config;
pub mod link;
pub mod outbox;

pub use config::CloudConfig;
pub use link::{CloudLink, LinkError, LinkStatus, AGENT_ID_HEADER};
pub use outbox::{Outbox, OutboxError};
