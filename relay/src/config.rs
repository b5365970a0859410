//! The relay's TOML config (see `relay/relay.example.toml` for every key, documented).
//!
//! Parsed through [`daemon::config`]: unknown keys are errors, and [`Validate`] checks what serde
//! cannot (ranges, unique ids, exactly one of `token` / `token_sha256`).

use daemon::config::{Validate, Validator};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// Plaintext tokens shorter than this are refused: a device token is a secret, not a password.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub queues: QueueConfig,
    #[serde(default)]
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// The backend's credential (every `/ws/backend` connection and every HTTP bridge call).
    pub backend: Credential,
    /// The agents in a file of their own, reloaded while the relay runs (instead of the inline
    /// `[[drones]]` / `[[lockers]]` lists, which stay for small set-ups and are not reloadable).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// Several relays, one fleet, through RabbitMQ; absent: this relay works alone.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    #[serde(default)]
    pub drones: Vec<AgentEntry>,
    #[serde(default)]
    pub lockers: Vec<AgentEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on; port 0 picks a free one (tests).
    pub listen: SocketAddr,
    /// Tokio worker threads; 0 (default) means one per CPU.
    #[serde(default)]
    pub worker_threads: usize,
    /// Serve `wss://` and `https://` with these PEM files; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long a TLS handshake may take before the socket is dropped.
    #[serde(default = "default_handshake_timeout_s")]
    pub handshake_timeout_s: f64,
    /// A connection that has not shown a valid credential this long after its accept is closed
    /// (slow or unfinished request headers, a TLS handshake that never ends, anonymous
    /// keep-alive).
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: f64,
    /// Most connections open at once that have not authenticated yet; more are closed at once.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// The same, from one source address.
    #[serde(default = "default_max_unauthenticated_per_source")]
    pub max_unauthenticated_per_source: usize,
    /// On SIGTERM, how long to wait for connections to close before exiting anyway.
    #[serde(default = "default_drain_timeout_s")]
    pub drain_timeout_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// WebSocket ping to every agent this often.
    #[serde(default = "default_ping_interval_s")]
    pub ping_interval_s: f64,
    /// After this many ping intervals without a pong (or any frame), the backend is told the agent
    /// is `silent`.
    #[serde(default = "default_silent_after")]
    pub silent_after_missed_pongs: u32,
    /// After this many, the connection is closed (and the backend told `disconnected`).
    #[serde(default = "default_close_after")]
    pub close_after_missed_pongs: u32,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            ping_interval_s: default_ping_interval_s(),
            silent_after_missed_pongs: default_silent_after(),
            close_after_missed_pongs: default_close_after(),
        }
    }
}

/// Bounded per-connection outbound queues (see `hub` for what happens when one fills).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Frames waiting to be written to one backend connection.
    #[serde(default = "default_backend_frames")]
    pub backend_frames: usize,
    /// Frames waiting to be written to one agent.
    #[serde(default = "default_agent_frames")]
    pub agent_frames: usize,
    /// Telemetry and video frames are shed once a queue is fuller than this fraction, so the
    /// frames that must not be lost (events, acks, responses, presence) keep the rest of it.
    #[serde(default = "default_lossy_shed_fraction")]
    pub lossy_shed_fraction: f64,
    /// A connection whose socket accepts nothing for this long is closed as stuck.
    #[serde(default = "default_write_timeout_s")]
    pub write_timeout_s: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backend_frames: default_backend_frames(),
            agent_frames: default_agent_frames(),
            lossy_shed_fraction: default_lossy_shed_fraction(),
            write_timeout_s: default_write_timeout_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// How long an HTTP bridge call waits for the locker's `locker_response` (then 504).
    /// A cell takes ~11 s to open on the seed's board, so this must cover the lock's travel.
    #[serde(default = "default_bridge_timeout_s")]
    pub timeout_s: f64,
    /// Largest request body accepted, bytes.
    #[serde(default = "default_bridge_body_limit")]
    pub max_body_bytes: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            timeout_s: default_bridge_timeout_s(),
            max_body_bytes: default_bridge_body_limit(),
        }
    }
}

/// Socket buffer sizing. tungstenite's default is 128 KiB per read buffer (1.3 GB at 10k agents).
///
/// `agent_read_buffer` is the most an agent's socket reads per syscall: a 100 KB video frame
/// takes about 100 reads at 1 KiB. The agents' sockets are framed by the relay itself
/// (`wsframe.rs`): the read goes into a buffer of the worker thread, not of the connection, and a
/// connection keeps only a frame it has not finished receiving, so raising it costs memory per
/// thread, not per connection. The backend's socket is tungstenite's, whose read buffer
/// (`backend_read_buffer`) is its connection's for as long as it lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    #[serde(default = "default_agent_read_buffer")]
    pub agent_read_buffer: usize,
    #[serde(default = "default_backend_read_buffer")]
    pub backend_read_buffer: usize,
    /// Frames to the backend are batched up to this many bytes per write.
    #[serde(default = "default_backend_write_buffer")]
    pub backend_write_buffer: usize,
    /// Largest frame accepted from anyone (defaults to the protocol's limit).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            agent_read_buffer: default_agent_read_buffer(),
            backend_read_buffer: default_backend_read_buffer(),
            backend_write_buffer: default_backend_write_buffer(),
            max_message_bytes: default_max_message(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The fleet file (see `relay/fleet.example.toml`); a relative path is taken from the
    /// config file's directory.
    pub file: PathBuf,
    /// Also reload when the file's size or modification time changes, checked this often;
    /// 0 reloads on SIGHUP only.
    #[serde(default = "default_watch_interval_s")]
    pub watch_interval_s: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `amqp://user:pass@host:5672/vhost` or `amqps://…` (rustls, webpki roots).
    pub url: String,
    /// For `amqps://`: PEM certificates to trust besides the web PKI roots (a broker with a
    /// certificate of the operator's own CA). Read at every connect.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This relay's name in the cluster: unique, stable across restarts (its queue is
    /// `skypost.relay.<relay_id>`).
    pub relay_id: String,
    #[serde(default = "default_agents_exchange")]
    pub agents_exchange: String,
    #[serde(default = "default_to_agents_exchange")]
    pub to_agents_exchange: String,
    /// This relay says it is alive this often.
    #[serde(default = "default_heartbeat_interval_s")]
    pub heartbeat_interval_s: f64,
    /// A relay not heard from for this long has its agents reported `disconnected`.
    #[serde(default = "default_lease_s")]
    pub lease_s: f64,
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Reconnect delays to the broker: first, and longest (doubling in between).
    #[serde(default = "default_reconnect_initial_s")]
    pub reconnect_initial_s: f64,
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: f64,
    /// Frames waiting for the broker task; past it they are dropped (counted).
    #[serde(default = "default_publish_queue")]
    pub publish_queue: usize,
    /// AMQP channels the relay publishes on (an agent always on the same one): the broker
    /// routes each channel's publishes in one process, which caps a channel's rate.
    #[serde(default = "default_publish_channels")]
    pub publish_channels: usize,
}

fn default_agents_exchange() -> String {
    "skypost.agents".into()
}
fn default_to_agents_exchange() -> String {
    "skypost.to-agents".into()
}
fn default_heartbeat_interval_s() -> f64 {
    2.0
}
fn default_lease_s() -> f64 {
    6.0
}
fn default_connect_timeout_s() -> f64 {
    5.0
}
fn default_reconnect_initial_s() -> f64 {
    0.5
}
fn default_reconnect_max_s() -> f64 {
    10.0
}
fn default_publish_queue() -> usize {
    65_536
}
fn default_publish_channels() -> usize {
    4
}

fn default_watch_interval_s() -> f64 {
    2.0
}

impl Config {
    /// Makes a relative fleet file path relative to the directory of the config file at `path`.
    pub fn resolve_paths(&mut self, path: &std::path::Path) {
        if let Some(f) = &mut self.fleet {
            if f.file.is_relative() {
                if let Some(dir) = path.parent() {
                    f.file = dir.join(&f.file);
                }
            }
        }
    }
}

/// A secret, given either in plaintext or as the lowercase hex SHA-256 of the plaintext (so the
/// config file need not hold the device's token itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// One drone or locker allowed to connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub id: Uuid,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_sha256: Option<String>,
}

impl AgentEntry {
    /// The entry's secret (serde's `flatten` cannot be combined with `deny_unknown_fields`, so
    /// the two keys are repeated here rather than nested).
    pub fn credential(&self) -> Credential {
        Credential {
            token: self.token.clone(),
            token_sha256: self.token_sha256.clone(),
        }
    }
}

fn default_handshake_timeout_s() -> f64 {
    10.0
}
fn default_header_timeout_s() -> f64 {
    5.0
}
fn default_max_unauthenticated() -> usize {
    4096
}
fn default_max_unauthenticated_per_source() -> usize {
    128
}
fn default_drain_timeout_s() -> f64 {
    5.0
}
fn default_ping_interval_s() -> f64 {
    30.0
}
fn default_silent_after() -> u32 {
    2
}
fn default_close_after() -> u32 {
    4
}
fn default_backend_frames() -> usize {
    16_384
}
fn default_agent_frames() -> usize {
    64
}
fn default_lossy_shed_fraction() -> f64 {
    0.5
}
fn default_write_timeout_s() -> f64 {
    10.0
}
fn default_bridge_timeout_s() -> f64 {
    20.0
}
fn default_bridge_body_limit() -> usize {
    64 * 1024
}
fn default_agent_read_buffer() -> usize {
    1024
}
fn default_backend_read_buffer() -> usize {
    16 * 1024
}
fn default_backend_write_buffer() -> usize {
    64 * 1024
}
fn default_max_message() -> usize {
    protocol::MAX_MESSAGE_BYTES
}

/// Seconds from config as a [`Duration`]; callers validated the range first.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl Credential {
    fn validate(&self, field: &str, v: &mut Validator) {
        match (&self.token, &self.token_sha256) {
            (Some(t), None) => v.check(
                t.len() >= MIN_TOKEN_LEN,
                &format!("{field}.token"),
                format_args!("must be at least {MIN_TOKEN_LEN} characters"),
            ),
            (None, Some(h)) => v.check(
                h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
                &format!("{field}.token_sha256"),
                "must be 64 hex digits (the SHA-256 of the token)",
            ),
            (Some(_), Some(_)) => v.fail(field, "give `token` or `token_sha256`, not both"),
            (None, None) => v.fail(field, "needs `token` or `token_sha256`"),
        }
    }
}

impl Validate for Config {
    fn validate(&self, v: &mut Validator) {
        let s = &self.server;
        v.range("server.worker_threads", s.worker_threads, 0, 256);
        v.range(
            "server.handshake_timeout_s",
            s.handshake_timeout_s,
            0.1,
            300.0,
        );
        v.range("server.drain_timeout_s", s.drain_timeout_s, 0.0, 300.0);
        v.range("server.header_timeout_s", s.header_timeout_s, 0.05, 300.0);
        v.range(
            "server.max_unauthenticated",
            s.max_unauthenticated,
            1,
            1_000_000,
        );
        v.range(
            "server.max_unauthenticated_per_source",
            s.max_unauthenticated_per_source,
            1,
            s.max_unauthenticated.max(1),
        );

        let p = &self.presence;
        v.range("presence.ping_interval_s", p.ping_interval_s, 0.01, 3600.0);
        v.range(
            "presence.silent_after_missed_pongs",
            p.silent_after_missed_pongs,
            1,
            100,
        );
        v.check(
            p.close_after_missed_pongs > p.silent_after_missed_pongs,
            "presence.close_after_missed_pongs",
            "must be more than silent_after_missed_pongs",
        );
        v.range(
            "presence.close_after_missed_pongs",
            p.close_after_missed_pongs,
            2,
            1000,
        );

        let q = &self.queues;
        v.range("queues.backend_frames", q.backend_frames, 16, 1 << 22);
        v.range("queues.agent_frames", q.agent_frames, 4, 1 << 16);
        v.range(
            "queues.lossy_shed_fraction",
            q.lossy_shed_fraction,
            0.0,
            1.0,
        );
        v.range("queues.write_timeout_s", q.write_timeout_s, 0.01, 600.0);

        v.range("bridge.timeout_s", self.bridge.timeout_s, 0.01, 600.0);
        v.range(
            "bridge.max_body_bytes",
            self.bridge.max_body_bytes,
            256,
            16 << 20,
        );

        let w = &self.websocket;
        v.range(
            "websocket.agent_read_buffer",
            w.agent_read_buffer,
            256,
            1 << 20,
        );
        v.range(
            "websocket.backend_read_buffer",
            w.backend_read_buffer,
            256,
            1 << 22,
        );
        v.range(
            "websocket.backend_write_buffer",
            w.backend_write_buffer,
            0,
            1 << 24,
        );
        v.range(
            "websocket.max_message_bytes",
            w.max_message_bytes,
            1024,
            64 << 20,
        );

        self.backend.validate("backend", v);
        if let Some(c) = &self.cluster {
            v.check(
                c.url.starts_with("amqp://") || c.url.starts_with("amqps://"),
                "cluster.url",
                "must start with amqp:// or amqps://",
            );
            v.check(
                c.ca_file.is_none() || c.url.starts_with("amqps://"),
                "cluster.ca_file",
                "only with an amqps:// url",
            );
            v.check(
                !c.relay_id.is_empty()
                    && c.relay_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "cluster.relay_id",
                "letters, digits, - and _ only (it names the relay's queue)",
            );
            v.range(
                "cluster.heartbeat_interval_s",
                c.heartbeat_interval_s,
                0.05,
                60.0,
            );
            v.check(
                c.lease_s >= 2.0 * c.heartbeat_interval_s,
                "cluster.lease_s",
                "must be at least two heartbeat intervals",
            );
            v.range("cluster.lease_s", c.lease_s, 0.1, 600.0);
            v.range("cluster.connect_timeout_s", c.connect_timeout_s, 0.1, 120.0);
            v.range(
                "cluster.reconnect_initial_s",
                c.reconnect_initial_s,
                0.01,
                60.0,
            );
            v.range(
                "cluster.reconnect_max_s",
                c.reconnect_max_s,
                c.reconnect_initial_s,
                600.0,
            );
            v.range("cluster.publish_queue", c.publish_queue, 16, 1 << 22);
            v.range("cluster.publish_channels", c.publish_channels, 1, 64);
        }
        if let Some(f) = &self.fleet {
            v.range("fleet.watch_interval_s", f.watch_interval_s, 0.0, 3600.0);
            v.check(
                self.drones.is_empty() && self.lockers.is_empty(),
                "fleet.file",
                "the agents are either in the fleet file or inline ([[drones]], [[lockers]]), not both",
            );
        }
        for (list, entries) in [("drones", &self.drones), ("lockers", &self.lockers)] {
            let mut seen = HashSet::new();
            for (i, a) in entries.iter().enumerate() {
                let field = format!("{list}[{i}]");
                v.check(
                    seen.insert(a.id),
                    &format!("{field}.id"),
                    format_args!("{} is listed twice", a.id),
                );
                a.credential().validate(&field, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, daemon::config::ConfigError> {
        daemon::config::parse(text, Path::new("relay.toml"))
    }

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:0"
[backend]
token = "backend-secret-0123456789"
[[drones]]
id = "6f1d3c1e-2a4b-4c5d-8e9f-0a1b2c3d4e5f"
token = "drone-secret-0123456789"
"#;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.presence.ping_interval_s, 30.0);
        assert_eq!(c.drones.len(), 1);
        assert!(c.lockers.is_empty());
        assert_eq!(c.websocket.max_message_bytes, protocol::MAX_MESSAGE_BYTES);
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.example.toml");
        daemon::config::load::<Config>(&path).unwrap();
    }

    #[test]
    fn the_example_fleet_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet.example.toml");
        let f = crate::fleet::Fleet::load(&path).unwrap();
        assert_eq!(f.enabled().len(), 2);
    }

    #[test]
    fn duplicate_ids_short_tokens_and_both_forms_are_refused() {
        let text = r#"
[server]
listen = "127.0.0.1:0"
[backend]
token = "short"
[[drones]]
id = "6f1d3c1e-2a4b-4c5d-8e9f-0a1b2c3d4e5f"
token = "drone-secret-0123456789"
[[drones]]
id = "6f1d3c1e-2a4b-4c5d-8e9f-0a1b2c3d4e5f"
token = "drone-secret-0123456789"
token_sha256 = "00"
"#;
        let e = parse(text).unwrap_err();
        assert_eq!(e.fields(), ["backend.token", "drones[1].id", "drones[1]"]);
    }

    #[test]
    fn unknown_keys_and_bad_ids_are_named() {
        let e = parse(&MINIMAL.replace("[backend]", "[backend]\ntokn = \"x\"")).unwrap_err();
        assert!(e.to_string().contains("tokn"), "{e}");
        let e = parse(&MINIMAL.replace("6f1d3c1e-2a4b", "not-a-uuid")).unwrap_err();
        assert!(e.to_string().contains("drones"), "{e}");
    }
}
