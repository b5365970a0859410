//! [`MavlinkFc`]: the flight controller over MAVLink 2 (`ardupilotmega` dialect): the `mavlink`
//! crate's tokio transports for UDP/TCP, and a serial transport of our own (see `Conn`) that gives
//! up on the first I/O error so an unplugged adapter is reopened at once.
//!
//! Tasks:
//! - the **supervisor** opens the connection, runs the receive loop and reopens the link whenever the
//!   autopilot's HEARTBEAT is missing for `heartbeat_timeout_ms` or the transport fails (a serial
//!   adapter unplugged, a TCP peer gone). It never gives up.
//! - a **heartbeat** task per open connection sends our HEARTBEAT at 1 Hz as
//!   `MAV_TYPE_ONBOARD_CONTROLLER` from our own component id (191 by default).
//! - on the first HEARTBEAT of each connection, a **telemetry request** task asks for the message
//!   rates from the config (`MAV_CMD_SET_MESSAGE_INTERVAL`) and for HOME_POSITION.
//!
//! The receive loop folds every telemetry message into the [`FcSnapshot`] watch channel and hands
//! protocol replies (COMMAND_ACK, MISSION_*) to whoever is waiting on them through a broadcast
//! channel; a waiter subscribes *before* it sends, so no reply can slip past it.
//!
//! Operations run the MAVLink command protocol: resend after `command_timeout_ms` with
//! `confirmation` incremented, up to `command_retries` times; `IN_PROGRESS` stops the resends and
//! waits `in_progress_timeout_ms` for the final result; each non-accepted result is its own
//! [`FcError`] variant, with the autopilot's last STATUSTEXT as the reason when it sent one.
//! Commands with the same id are serialised (the protocol allows one in flight per command);
//! different commands run concurrently, so a long gripper cycle never blocks an RTL.
//!
//! A COMMAND_ACK or mission reply addressed to another system or component (its target fields; 0
//! is a broadcast) is not ours and is dropped: an autopilot answers every GCS on the link. Servo
//! outputs 9..16 are read from SERVO_OUTPUT_RAW's extension fields on port 0 (ArduPilot 4.x, PX4
//! 1.16), or from port 1 once an autopilot sends that (older PX4).
//!
//! Known limit: an ACK that arrives after its command timed out can answer the next command with
//! the same id (the protocol has no per-request id).
//!
//! Files, one concern each: `transport` (the connection, the supervisor, our HEARTBEAT, the
//! telemetry requests), `receive` (the receive path folding messages into the snapshot),
//! `command` (the MAVLink command protocol and mode changes), `mission` (the mission protocol
//! and [`MissionControl`]), `ops` (the [`FlightController`] operations), `autopilot` (what differs between PX4
//! and ArduPilot: `autopilot::Ways`).

mod autopilot;
mod command;
mod fence;
mod logfetch;
mod mission;
mod ops;
mod receive;
mod transport;

pub use receive::px4_event_id;

use super::config::{FcLinkConfig, HeartbeatType};
use super::connection::ConnectionString;
use super::modes;
use super::{
    Autopilot, AutopilotMessage, AutopilotModeChange, BatteryChargeState, FcError, FcSnapshot,
    FlightController, FlightMode, FlightModeKind, GeoPoint, GlobalPosition, GpsFixType,
    GripperAction, LandedState, LandingTarget, LinkState, MissionControl, MissionItem,
    MissionProgress, PreflightCheck, PreflightReport, Severity,
};
use autopilot::{HoldBy, Ways};
use command::{check_point, deg_e7};
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use mavlink::{AsyncMavConnection, MavHeader};
use ops::gripper_param;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn, Instrument};
use transport::Conn;
use transport::{request_telemetry, supervise, IdU32};

type Reply = Arc<(MavHeader, MavMessage)>;

/// The MAVLink flight controller. Cheap to share through `Arc`; dropping the last handle stops its
/// tasks.
pub struct MavlinkFc {
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
}

struct Shared {
    cfg: FcLinkConfig,
    snapshot: watch::Sender<FcSnapshot>,
    /// The open connection, if any (None while (re)opening).
    conn: Mutex<Option<Arc<Conn>>>,
    /// True while HEARTBEATs arrive; waiters abort with LinkLost when it falls.
    link_up: watch::Sender<bool>,
    replies: broadcast::Sender<Reply>,
    command_locks: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    mission_lock: tokio::sync::Mutex<()>,
    state: Mutex<LinkMemory>,
    received: AtomicU64,
    sequence: std::sync::atomic::AtomicU8,
    /// The followed autopilot's (system << 8 | component) + 1, 0 = none yet: read for every
    /// received message, so kept out of the snapshot's lock.
    target_ids: std::sync::atomic::AtomicU32,
    /// The snapshot changed without waking watchers (see [`Shared::update`]).
    dirty: std::sync::atomic::AtomicBool,
    /// Every STATUSTEXT and PX4 event, as [`AutopilotMessage`]s.
    messages: broadcast::Sender<AutopilotMessage>,
    /// Counts motion operations (take-off, go-to, hold, RTL, ...): an operation that finds a newer
    /// one started when it ends reports `Cancelled` instead of its stale result.
    motion_generation: AtomicU64,
    /// Messages the receive path wants sent (REQUEST_EVENT); the receive loop sends them.
    outbox: Mutex<Vec<MavMessage>>,
    /// The flight recorder ([`MavlinkFc::start_with`]).
    tap: Mutex<Option<Arc<transport::Tap>>>,
    /// Ground stations sharing the link (issue 13): sees every frame both ways, and queues theirs.
    router: Option<Arc<crate::flight::router::Router>>,
}

/// What the link remembers beyond the snapshot.
#[derive(Default)]
struct LinkMemory {
    last_status_text: Option<(Instant, String)>,
    last_goto: Option<GeoPoint>,
    paused_mission: bool,
    /// ArduPilot keeps home as mission item 0: our item n is its item n + 1.
    mission_offset: u16,
    prearm_ok: Option<bool>,
    seen_extended_state: bool,
    last_heartbeat: Option<SystemTime>,
    /// A SERVO_OUTPUT_RAW for port 1 arrived (the older PX4 layout of outputs 9..16).
    servo_port1_seen: bool,
    /// The mode this link last asked for (explicitly or by a command that changes mode), until a
    /// HEARTBEAT shows it: any other change is the autopilot's own.
    requested_mode: Option<FlightModeKind>,
    /// Recent warning-or-worse messages, for the reason of an autopilot-initiated mode change.
    recent_warnings: VecDeque<(Instant, String)>,
    /// The latest autopilot-initiated mode change and until when later messages add to its reason.
    mode_change_seq: u32,
    reason_open_until: Option<Instant>,
    /// Counts gripper confirmations (ArduPilot's "Gripper load released/grabbed").
    gripper_confirmations: u32,
    /// The last PX4 event sequence number seen (events protocol), to ask for missed ones.
    px4_event_seq: Option<u16>,
}

/// The receive path without a connection, for the fuzz crate: every message goes through the
/// same [`Shared::handle`] (HEARTBEAT target selection, telemetry folding, replies to waiters)
/// the receive loop uses.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::*;

    /// Folds `messages` in order into a fresh link's snapshot and returns it.
    pub fn fold(messages: impl IntoIterator<Item = (MavHeader, MavMessage)>) -> FcSnapshot {
        let shared = Shared::new(FcLinkConfig::new(
            "udpin:127.0.0.1:14540"
                .parse()
                .unwrap_or_else(|e| panic!("fixed connection string: {e}")),
        ));
        for (header, msg) in messages {
            shared.handle(header, msg);
            shared.notify();
        }
        let snap = shared.snapshot.borrow().clone();
        snap
    }
}

impl MavlinkFc {
    /// Starts the link supervisor (must be called inside a tokio runtime). Returns at once; watch
    /// [`FlightController::snapshot`] for the link to come up.
    pub fn start(cfg: FcLinkConfig) -> Arc<Self> {
        Self::start_with(cfg, None, None)
    }

    /// [`MavlinkFc::start`], recording every flight (arm to disarm plus the margin) as a `.tlog`
    /// when `recorder` is given (every frame both ways on this link), and with ground stations
    /// sharing the link through `router` (started from `cfg.endpoints` by the caller: opening
    /// its sockets can fail).
    pub fn start_with(
        cfg: FcLinkConfig,
        recorder: Option<crate::flight::tlog::RecorderConfig>,
        router: Option<Arc<crate::flight::router::Router>>,
    ) -> Arc<Self> {
        let mut shared = Shared::new(cfg);
        shared.router = router;
        let shared = Arc::new(shared);
        if let Some(rc) = recorder {
            let tap = transport::Tap::new(rc, shared.snapshot.subscribe());
            *lock(&shared.tap) = Some(Arc::new(tap));
        }
        let span = tracing::info_span!("fc_link", connection = %shared.cfg.connection);
        let supervisor = tokio::spawn(supervise(shared.clone()).instrument(span));
        Arc::new(Self { shared, supervisor })
    }

    /// Messages decoded by the receive loop since start (for benchmarks and diagnostics).
    pub fn messages_received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// The config this link runs with.
    pub fn config(&self) -> &FcLinkConfig {
        &self.shared.cfg
    }

    /// Waits until the snapshot satisfies `pred`, up to `timeout`. Returns the matching snapshot.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&FcSnapshot) -> bool,
    ) -> Option<FcSnapshot> {
        self.shared.wait_for(timeout, pred).await
    }
}

impl Drop for MavlinkFc {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Some(tap) = lock(&self.shared.tap).take() {
            tap.close();
        }
        // a connection the aborted supervisor left behind must not be used by stray tasks
        *lock(&self.shared.conn) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short critical sections cannot leave them half-written in a way
    // that matters more than stopping the link would, so recover the guard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// A link's state before its first connection; the one constructor (the receive loop and the
    /// fuzz crate's `fuzzing::fold` must not drift apart).
    fn new(cfg: FcLinkConfig) -> Self {
        Self {
            cfg,
            snapshot: watch::channel(FcSnapshot::initial()).0,
            conn: Mutex::new(None),
            link_up: watch::channel(false).0,
            replies: broadcast::channel(256).0,
            command_locks: Mutex::new(HashMap::new()),
            mission_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(LinkMemory::default()),
            received: AtomicU64::new(0),
            sequence: std::sync::atomic::AtomicU8::new(0),
            target_ids: std::sync::atomic::AtomicU32::new(0),
            dirty: std::sync::atomic::AtomicBool::new(false),
            messages: broadcast::channel(64).0,
            motion_generation: AtomicU64::new(0),
            outbox: Mutex::new(Vec::new()),
            tap: Mutex::new(None),
            router: None,
        }
    }
}
