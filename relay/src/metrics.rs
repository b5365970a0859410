//! Counters and the Prometheus text exposition at `GET /metrics`.
//!
//! Written by hand: a dozen families of relaxed atomics, indexed by small enums, cost nothing on
//! the hot path (no label hashing, no locks), and the text format is a few lines of `write!`.

use crate::auth::Refusal;
use protocol::Message;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Which side of the relay a connection is: the label `peer` on every connection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Drone = 0,
    Locker = 1,
    Backend = 2,
}

impl Side {
    const ALL: [Side; 3] = [Side::Drone, Side::Locker, Side::Backend];
    fn as_str(self) -> &'static str {
        match self {
            Side::Drone => "drone",
            Side::Locker => "locker",
            Side::Backend => "backend",
        }
    }
}

/// Why a frame was not delivered: the label `reason` on `relay_dropped_frames_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// An agent frame arrived while no backend was connected.
    NoBackend,
    /// Telemetry or video shed because the receiver's queue was past the shed mark.
    QueueFullLossy,
    /// A frame that must not be lost found the queue full: the slow connection was closed.
    QueueFullClosed,
    /// The receiving connection was closing.
    ConnectionClosed,
    /// The backend addressed an agent that is not connected (answered with `AGENT_OFFLINE`).
    AgentOffline,
    /// The backend addressed an agent that is not in the config (answered with `UNKNOWN_AGENT`).
    UnknownAgent,
    /// An agent frame the relay refused to forward (bad frame, spoofed id, presence).
    Refused,
    /// A frame for (or from) another relay of the cluster while the broker was unreachable.
    ClusterDown,
}

impl DropReason {
    const ALL: [DropReason; 8] = [
        DropReason::NoBackend,
        DropReason::QueueFullLossy,
        DropReason::QueueFullClosed,
        DropReason::ConnectionClosed,
        DropReason::AgentOffline,
        DropReason::UnknownAgent,
        DropReason::Refused,
        DropReason::ClusterDown,
    ];
    fn as_str(self) -> &'static str {
        match self {
            DropReason::NoBackend => "no_backend",
            DropReason::QueueFullLossy => "queue_full_lossy",
            DropReason::QueueFullClosed => "queue_full_closed",
            DropReason::ConnectionClosed => "connection_closed",
            DropReason::AgentOffline => "agent_offline",
            DropReason::UnknownAgent => "unknown_agent",
            DropReason::Refused => "refused",
            DropReason::ClusterDown => "cluster_down",
        }
    }
}

/// Outcomes of HTTP bridge calls: the label `outcome` on `relay_bridge_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeOutcome {
    Answered,
    Unauthorized,
    BadRequest,
    UnknownLocker,
    LockerOffline,
    Timeout,
}

impl BridgeOutcome {
    const ALL: [BridgeOutcome; 6] = [
        BridgeOutcome::Answered,
        BridgeOutcome::Unauthorized,
        BridgeOutcome::BadRequest,
        BridgeOutcome::UnknownLocker,
        BridgeOutcome::LockerOffline,
        BridgeOutcome::Timeout,
    ];
    fn as_str(self) -> &'static str {
        match self {
            BridgeOutcome::Answered => "answered",
            BridgeOutcome::Unauthorized => "unauthorized",
            BridgeOutcome::BadRequest => "bad_request",
            BridgeOutcome::UnknownLocker => "unknown_locker",
            BridgeOutcome::LockerOffline => "locker_offline",
            BridgeOutcome::Timeout => "timeout",
        }
    }
}

/// What the gate did with a connection that had not authenticated: the label `reason` on
/// `relay_unauthenticated_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOutcome {
    /// Accepted while its source address already had `max_unauthenticated_per_source` open.
    OverSourceCap,
    /// Accepted while `max_unauthenticated` were open in all.
    OverTotalCap,
    /// No credential within `header_timeout_s` of the accept.
    HeaderTimeout,
}

impl GateOutcome {
    const ALL: [GateOutcome; 3] = [
        GateOutcome::OverSourceCap,
        GateOutcome::OverTotalCap,
        GateOutcome::HeaderTimeout,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            GateOutcome::OverSourceCap => "over_source_cap",
            GateOutcome::OverTotalCap => "over_total_cap",
            GateOutcome::HeaderTimeout => "header_timeout",
        }
    }
}

/// Index of a wire type in [`Message::KINDS`]; the extra last slot counts frames that did not
/// parse (`type="invalid"`).
pub fn kind_index(kind: &str) -> usize {
    Message::KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(Message::KINDS.len())
}

const KINDS: usize = 16; // Message::KINDS.len() + 1 for "invalid"; checked in a test

fn kind_label(i: usize) -> &'static str {
    Message::KINDS.get(i).copied().unwrap_or("invalid")
}

/// Upper bounds of the forward-latency buckets, microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    connections: [AtomicI64; 3],
    connections_total: [AtomicU64; 3],
    auth_refused: [[AtomicU64; 3]; 3],
    frames_in: [[AtomicU64; KINDS]; 3],
    frames_out: [[AtomicU64; KINDS]; 3],
    dropped: [AtomicU64; 8],
    queue_full: [AtomicU64; 3],
    presence_silent: AtomicU64,
    replaced: AtomicU64,
    bridge: [AtomicU64; 6],
    forward_latency: Histogram,
    gate: [AtomicU64; 3],
    unauthenticated: AtomicI64,
    fleet_reloads: [AtomicU64; 2],
    revoked: AtomicU64,
}

impl Metrics {
    pub fn connected(&self, side: Side) {
        self.connections[side as usize].fetch_add(1, Relaxed);
        self.connections_total[side as usize].fetch_add(1, Relaxed);
    }
    pub fn disconnected(&self, side: Side) {
        self.connections[side as usize].fetch_sub(1, Relaxed);
    }
    pub fn open_connections(&self, side: Side) -> i64 {
        self.connections[side as usize].load(Relaxed)
    }
    pub fn refused(&self, side: Side, why: Refusal) {
        let r = Refusal::ALL.iter().position(|x| *x == why).unwrap_or(0);
        self.auth_refused[side as usize][r].fetch_add(1, Relaxed);
    }
    pub fn frame_in(&self, side: Side, kind: usize) {
        self.frames_in[side as usize][kind.min(KINDS - 1)].fetch_add(1, Relaxed);
    }
    pub fn frame_out(&self, side: Side, kind: usize) {
        self.frames_out[side as usize][kind.min(KINDS - 1)].fetch_add(1, Relaxed);
    }
    pub fn dropped(&self, why: DropReason) {
        self.dropped[why as usize].fetch_add(1, Relaxed);
    }
    pub fn queue_full(&self, side: Side) {
        self.queue_full[side as usize].fetch_add(1, Relaxed);
    }
    pub fn silent(&self) {
        self.presence_silent.fetch_add(1, Relaxed);
    }
    pub fn replaced(&self) {
        self.replaced.fetch_add(1, Relaxed);
    }
    pub fn bridge(&self, outcome: BridgeOutcome) {
        self.bridge[outcome as usize].fetch_add(1, Relaxed);
    }
    /// A fleet reload, put in force (`true`) or refused.
    pub fn fleet_reload(&self, ok: bool) {
        self.fleet_reloads[usize::from(!ok)].fetch_add(1, Relaxed);
    }
    pub fn revoked(&self, n: usize) {
        self.revoked.fetch_add(n as u64, Relaxed);
    }
    pub fn gate(&self, outcome: GateOutcome) {
        self.gate[outcome as usize].fetch_add(1, Relaxed);
    }
    /// One more (`+1`) or one fewer (`-1`) connection waiting to authenticate.
    pub fn unauthenticated(&self, delta: i64) {
        self.unauthenticated.fetch_add(delta, Relaxed);
    }
    /// Time from an agent frame being read to it being written to a backend's socket.
    pub fn forward_latency(&self, d: Duration) {
        self.forward_latency.observe(d);
    }

    /// The Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // `write!` to a String cannot fail; the results are ignored deliberately.
        let o = &mut out;
        family(
            o,
            "relay_connections",
            "gauge",
            "Open WebSocket connections.",
            "peer",
            Side::ALL.map(|s| (s.as_str(), self.connections[s as usize].load(Relaxed))),
        );
        family(
            o,
            "relay_connections_total",
            "counter",
            "WebSocket connections accepted since start.",
            "peer",
            Side::ALL.map(|s| (s.as_str(), self.connections_total[s as usize].load(Relaxed))),
        );
        header(
            o,
            "relay_auth_refused_total",
            "counter",
            "Connections and HTTP calls refused with 401, by reason.",
        );
        for s in Side::ALL {
            for (r, why) in Refusal::ALL.iter().enumerate() {
                let v = self.auth_refused[s as usize][r].load(Relaxed);
                let _ = writeln!(
                    o,
                    "relay_auth_refused_total{{peer=\"{}\",reason=\"{}\"}} {v}",
                    s.as_str(),
                    why.as_str()
                );
            }
        }
        single(
            o,
            "relay_unauthenticated_connections",
            "gauge",
            "Open connections that have not shown a credential yet.",
            self.unauthenticated.load(Relaxed),
        );
        family(
            o,
            "relay_unauthenticated_closed_total",
            "counter",
            "Connections closed before authenticating: over a cap at accept, or past the header timeout.",
            "reason",
            GateOutcome::ALL.map(|g| (g.as_str(), self.gate[g as usize].load(Relaxed))),
        );
        family(
            o,
            "relay_fleet_reloads_total",
            "counter",
            "Fleet file reloads, put in force or refused (the old list kept).",
            "outcome",
            [
                ("applied", self.fleet_reloads[0].load(Relaxed)),
                ("refused", self.fleet_reloads[1].load(Relaxed)),
            ],
        );
        single(
            o,
            "relay_agents_revoked_total",
            "counter",
            "Agent connections closed (4401) because a fleet reload took their credentials away.",
            self.revoked.load(Relaxed),
        );
        for (name, help, table) in [
            (
                "relay_frames_in_total",
                "Frames read, by sender and message type.",
                &self.frames_in,
            ),
            (
                "relay_frames_out_total",
                "Frames written, by receiver and message type.",
                &self.frames_out,
            ),
        ] {
            header(o, name, "counter", help);
            for s in Side::ALL {
                for (k, c) in table[s as usize].iter().enumerate() {
                    let v = c.load(Relaxed);
                    if v > 0 {
                        let _ = writeln!(
                            o,
                            "{name}{{peer=\"{}\",type=\"{}\"}} {v}",
                            s.as_str(),
                            kind_label(k)
                        );
                    }
                }
            }
        }
        family(
            o,
            "relay_dropped_frames_total",
            "counter",
            "Frames not delivered, by reason.",
            "reason",
            DropReason::ALL.map(|d| (d.as_str(), self.dropped[d as usize].load(Relaxed))),
        );
        family(
            o,
            "relay_queue_full_total",
            "counter",
            "Times a connection's outbound queue was too full for a frame.",
            "peer",
            Side::ALL.map(|s| (s.as_str(), self.queue_full[s as usize].load(Relaxed))),
        );
        single(
            o,
            "relay_presence_silent_total",
            "counter",
            "Agents reported silent after missed pongs.",
            self.presence_silent.load(Relaxed),
        );
        single(
            o,
            "relay_connections_replaced_total",
            "counter",
            "Agent connections closed because the same agent connected again.",
            self.replaced.load(Relaxed),
        );
        family(
            o,
            "relay_bridge_requests_total",
            "counter",
            "HTTP bridge calls, by outcome.",
            "outcome",
            BridgeOutcome::ALL.map(|b| (b.as_str(), self.bridge[b as usize].load(Relaxed))),
        );
        header(
            o,
            "relay_forward_latency_seconds",
            "histogram",
            "From an agent frame read to its write to a backend socket.",
        );
        let h = &self.forward_latency;
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += h.buckets[i].load(Relaxed);
            let _ = writeln!(
                o,
                "relay_forward_latency_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(
            o,
            "relay_forward_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "relay_forward_latency_seconds_sum {}",
            h.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "relay_forward_latency_seconds_count {count}");
        out
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A metric without labels: its HELP and TYPE lines and its value.
pub(crate) fn single(o: &mut String, name: &str, kind: &str, help: &str, v: impl Display) {
    header(o, name, kind, help);
    let _ = writeln!(o, "{name} {v}");
}

/// A metric with one label: its HELP and TYPE lines, then one line per (label value, value).
fn family<'a, V: Display>(
    o: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, V)>,
) {
    header(o, name, kind, help);
    for (l, v) in values {
        let _ = writeln!(o, "{name}{{{label}=\"{l}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_table_has_room_for_every_type_and_invalid() {
        assert_eq!(KINDS, Message::KINDS.len() + 1);
        assert_eq!(kind_label(kind_index("telemetry")), "telemetry");
        assert_eq!(kind_label(kind_index("nonsense")), "invalid");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.forward_latency(Duration::from_micros(70));
        m.forward_latency(Duration::from_micros(1500));
        m.frame_in(Side::Drone, kind_index("telemetry"));
        let text = m.render();
        assert!(text.contains("relay_forward_latency_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("relay_forward_latency_seconds_bucket{le=\"0.002\"} 2"));
        assert!(text.contains("relay_forward_latency_seconds_count 2"));
        assert!(text.contains("relay_frames_in_total{peer=\"drone\",type=\"telemetry\"} 1"));
    }
}
