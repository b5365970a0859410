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

use super::config::{FcLinkConfig, HeartbeatType};
use super::connection::ConnectionString;
use super::modes;
use super::{
    Autopilot, AutopilotMessage, AutopilotModeChange, BatteryChargeState, FcError, FcSnapshot,
    FlightController, FlightMode, FlightModeKind, GeoPoint, GlobalPosition, GpsFixType,
    GripperAction, LandedState, LandingTarget, LinkState, MissionItem, MissionProgress,
    PreflightCheck, PreflightReport, Severity,
};
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use mavlink::{AsyncMavConnection, MavHeader};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn, Instrument};

/// An open link. Network links use the `mavlink` crate's connections. Serial links are opened
/// here: the crate's serial reader retries every I/O error but end-of-file inside `recv`, so an
/// unplugged USB adapter (EIO) would keep it spinning until the heartbeat timeout; ours returns
/// the first I/O error, and the supervisor reopens the device.
enum Conn {
    Net(mavlink::AsyncConnection<MavMessage>),
    Serial {
        reader: tokio::sync::Mutex<
            mavlink::AsyncMavlinkReader<tokio::io::ReadHalf<tokio_serial::SerialStream>>,
        >,
        writer: tokio::sync::Mutex<tokio::io::WriteHalf<tokio_serial::SerialStream>>,
    },
}

impl Conn {
    async fn open(c: &ConnectionString) -> std::io::Result<Conn> {
        match c {
            ConnectionString::Serial { device, baud } => {
                use tokio_serial::SerialPortBuilderExt;
                let port = tokio_serial::new(device, *baud)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .parity(tokio_serial::Parity::None)
                    .stop_bits(tokio_serial::StopBits::One)
                    .flow_control(tokio_serial::FlowControl::None)
                    .open_native_async()?;
                let (r, w) = tokio::io::split(port);
                Ok(Conn::Serial {
                    reader: tokio::sync::Mutex::new(mavlink::AsyncMavlinkReader::new(r)),
                    writer: tokio::sync::Mutex::new(w),
                })
            }
            other => Ok(Conn::Net(
                mavlink::connect_async::<MavMessage>(&other.to_mavlink_address()).await?,
            )),
        }
    }

    async fn recv(&self) -> Result<(MavHeader, MavMessage), mavlink::error::MessageReadError> {
        match self {
            Conn::Net(c) => c.recv().await,
            Conn::Serial { reader, .. } => reader.lock().await.read_any_message().await,
        }
    }

    async fn send(
        &self,
        header: &MavHeader,
        msg: &MavMessage,
    ) -> Result<(), mavlink::error::MessageWriteError> {
        match self {
            Conn::Net(c) => c.send(header, msg).await.map(|_| ()),
            Conn::Serial { writer, .. } => {
                let mut frame = Vec::with_capacity(280);
                mavlink::write_v2_msg(&mut frame, *header, msg)?;
                writer
                    .lock()
                    .await
                    .write_all(&frame)
                    .await
                    .map_err(mavlink::error::MessageWriteError::Io)
            }
        }
    }
}
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
        let shared = Arc::new(Shared::new(cfg));
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
        // a connection the aborted supervisor left behind must not be used by stray tasks
        *lock(&self.shared.conn) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short critical sections cannot leave them half-written in a way
    // that matters more than stopping the link would, so recover the guard.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// link supervision and receive path

async fn supervise(shared: Arc<Shared>) {
    loop {
        debug!("opening link");
        let conn = match Conn::open(&shared.cfg.connection).await {
            Ok(c) => Arc::new(c),
            Err(error) => {
                warn!(%error, "cannot open flight-controller link; retrying");
                tokio::time::sleep(shared.cfg.reopen_interval()).await;
                continue;
            }
        };
        info!("link open, waiting for the autopilot's HEARTBEAT");
        *lock(&shared.conn) = Some(conn.clone());
        // aborted when this connection ends, and also when the supervisor itself is aborted (the
        // MavlinkFc dropped): a bare JoinHandle would leave the task beating forever
        let heartbeat = AbortOnDrop(tokio::spawn(
            send_heartbeats(shared.clone(), conn.clone()).in_current_span(),
        ));
        let reason = receive(&shared, &conn).await;
        drop(heartbeat);
        *lock(&shared.conn) = None;
        drop(conn);
        shared.mark_lost(&reason);
        tokio::time::sleep(shared.cfg.reopen_interval()).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send_heartbeats(shared: Arc<Shared>, conn: Arc<Conn>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mavtype = match shared.cfg.heartbeat_type {
        HeartbeatType::OnboardController => apm::MavType::MAV_TYPE_ONBOARD_CONTROLLER,
        HeartbeatType::Gcs => apm::MavType::MAV_TYPE_GCS,
    };
    let msg = MavMessage::HEARTBEAT(apm::HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype,
        autopilot: apm::MavAutopilot::MAV_AUTOPILOT_INVALID,
        base_mode: apm::MavModeFlag::empty(),
        system_status: apm::MavState::MAV_STATE_ACTIVE,
        mavlink_version: 3,
    });
    loop {
        tick.tick().await;
        // On udpin nothing goes out until the autopilot has sent us a packet: that is expected.
        if let Err(error) = conn.send(&shared.header(), &msg).await {
            debug!(%error, "heartbeat not sent");
        }
    }
}

/// Runs until the link is judged lost; returns why.
/// How long a telemetry change may wait before snapshot watchers are woken.
const NOTIFY_EVERY: Duration = Duration::from_millis(2);

/// How far before and after an autopilot-initiated mode change its messages count as the reason.
const REASON_WINDOW: Duration = Duration::from_secs(2);

/// Joins distinct texts into one reason (`None` if there are none), at most four of them.
fn join_reasons<'a>(texts: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for t in texts {
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    let n = seen.len();
    (n > 0).then(|| seen[n.saturating_sub(4)..].join("; "))
}

async fn receive(shared: &Arc<Shared>, conn: &Conn) -> String {
    let timeout = shared.cfg.heartbeat_timeout();
    // one timer for the whole connection, pushed back on each HEARTBEAT: creating a timer per
    // message would cost more than decoding the message
    let silence = tokio::time::sleep(timeout);
    tokio::pin!(silence);
    let wake = tokio::time::sleep(NOTIFY_EVERY);
    tokio::pin!(wake);
    let mut wake_armed = false;
    let mut got_heartbeat = false;
    loop {
        tokio::select! {
            r = conn.recv() => match r {
                Ok((header, msg)) => {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if shared.handle(header, msg) {
                        silence.as_mut().reset(tokio::time::Instant::now() + timeout);
                        if !got_heartbeat {
                            got_heartbeat = true;
                            tokio::spawn(request_telemetry(shared.clone()).in_current_span());
                        }
                    }
                    let outgoing = std::mem::take(&mut *lock(&shared.outbox));
                    for msg in outgoing {
                        if let Err(error) = conn.send(&shared.header(), &msg).await {
                            debug!(%error, "queued message not sent");
                        }
                    }
                    if !wake_armed && shared.dirty.load(Ordering::Relaxed) {
                        wake_armed = true;
                        wake.as_mut().reset(tokio::time::Instant::now() + NOTIFY_EVERY);
                    }
                }
                Err(mavlink::error::MessageReadError::Io(error)) => {
                    shared.notify();
                    return format!("transport error: {error}");
                }
                // an unknown message id or enum value: skip it, the stream is still in sync
                Err(mavlink::error::MessageReadError::Parse(error)) => {
                    debug!(%error, "undecodable message skipped");
                }
            },
            _ = &mut wake, if wake_armed => {
                wake_armed = false;
                shared.notify();
            }
            _ = &mut silence => {
                shared.notify();
                return format!("no HEARTBEAT for {timeout:?}");
            }
        }
    }
}

async fn request_telemetry(shared: Arc<Shared>) {
    // home first: a re-attach in flight needs it for the next go-to (PX4 takes AMSL altitudes),
    // and nine set-up commands before it once made a re-issued go-to fail "home not known yet"
    if let Err(error) = shared.request_home().await {
        debug!(%error, "HOME_POSITION request not acknowledged");
    }
    let t = shared.cfg.telemetry;
    // each autopilot reports its position estimate in its own message
    let estimator = match shared.snapshot.borrow().autopilot {
        Autopilot::Px4 => (
            apm::ESTIMATOR_STATUS_DATA::ID_U32,
            t.status_hz,
            "ESTIMATOR_STATUS",
        ),
        _ => (
            apm::EKF_STATUS_REPORT_DATA::ID_U32,
            t.status_hz,
            "EKF_STATUS_REPORT",
        ),
    };
    let wanted: [(u32, f64, &str); 9] = [
        (
            apm::GLOBAL_POSITION_INT_DATA::ID_U32,
            t.position_hz,
            "GLOBAL_POSITION_INT",
        ),
        (apm::ATTITUDE_DATA::ID_U32, t.attitude_hz, "ATTITUDE"),
        (
            apm::BATTERY_STATUS_DATA::ID_U32,
            t.battery_hz,
            "BATTERY_STATUS",
        ),
        (apm::GPS_RAW_INT_DATA::ID_U32, t.gps_hz, "GPS_RAW_INT"),
        (apm::SYS_STATUS_DATA::ID_U32, t.status_hz, "SYS_STATUS"),
        (
            apm::EXTENDED_SYS_STATE_DATA::ID_U32,
            t.status_hz,
            "EXTENDED_SYS_STATE",
        ),
        (
            apm::SERVO_OUTPUT_RAW_DATA::ID_U32,
            t.servo_hz,
            "SERVO_OUTPUT_RAW",
        ),
        (
            apm::MISSION_CURRENT_DATA::ID_U32,
            t.status_hz,
            "MISSION_CURRENT",
        ),
        estimator,
    ];
    for (id, hz, name) in wanted {
        if hz <= 0.0 {
            continue;
        }
        let interval_us = (1e6 / hz) as f32;
        let r = shared
            .command(
                "MAV_CMD_SET_MESSAGE_INTERVAL",
                MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
                [id as f32, interval_us, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
            .await;
        match r {
            Ok(()) => debug!(message = name, hz, "message rate set"),
            Err(error) => warn!(message = name, hz, %error, "message rate not set"),
        }
    }
    // PX4 sends HOME_POSITION only when asked (or when home changes): before its first fix there
    // is none to send, so keep asking, backing off, until home is known or the link drops. The
    // autopilot sets home at its first fix: then ask at once and start the backoff over, so that a
    // task soon after the fix finds home known without asking again itself.
    let mut had_fix = shared.snapshot.borrow().gps_fix.is_3d();
    let mut wait = HOME_FIRST_WAIT;
    let mut attempts = 0;
    while attempts < HOME_REQUESTS {
        if shared.snapshot.borrow().home.is_some() {
            return;
        }
        let mut link = shared.link_up.subscribe();
        let mut snap = shared.snapshot.subscribe();
        let first_fix = async {
            if had_fix {
                std::future::pending::<()>().await;
            }
            let _ = snap.wait_for(|s| s.gps_fix.is_3d()).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {
                wait = (wait * 2).min(HOME_MAX_WAIT);
                attempts += 1;
            }
            _ = first_fix => {
                had_fix = true;
                wait = HOME_FIRST_WAIT;
                attempts = 0;
            }
            _ = link.wait_for(|up| !up) => return,
        }
        if shared.snapshot.borrow().home.is_none() {
            if let Err(error) = shared.request_home().await {
                debug!(%error, "HOME_POSITION request not acknowledged");
            }
        }
    }
    if shared.snapshot.borrow().home.is_none() {
        warn!(
            attempts = HOME_REQUESTS,
            "the autopilot has not sent its home position"
        );
    }
}

/// The home-request backoff: first wait, doubled up to the last.
const HOME_FIRST_WAIT: Duration = Duration::from_millis(500);
const HOME_MAX_WAIT: Duration = Duration::from_secs(5);

/// How many times a connection asks for HOME_POSITION (counted again from its first GPS fix)
/// before only the pre-flight check says so.
const HOME_REQUESTS: u32 = 40;

/// Message ids as u32 (the generated `ID` constants).
trait IdU32 {
    const ID_U32: u32;
}
impl<T: mavlink::MessageData> IdU32 for T {
    const ID_U32: u32 = T::ID;
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
        }
    }
}

impl Shared {
    fn header(&self) -> MavHeader {
        MavHeader {
            system_id: u32::from(self.cfg.system_id),
            component_id: self.cfg.component_id,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn target(&self) -> Option<(u8, u8)> {
        let s = self.snapshot.borrow();
        if s.link.is_connected() {
            s.target
        } else {
            None
        }
    }

    fn mark_lost(&self, reason: &str) {
        let now = SystemTime::now();
        let mut was_connected = false;
        // when the last HEARTBEAT really arrived (not "a timeout ago": a test of the timeout
        // must be able to see a loss declared early)
        let last = lock(&self.state).last_heartbeat.unwrap_or(now);
        self.snapshot.send_modify(|s| {
            s.at = now;
            match s.link {
                LinkState::Connected { .. } => {
                    was_connected = true;
                    s.link = LinkState::Lost {
                        since: now,
                        last_heartbeat: last,
                    };
                }
                LinkState::NeverConnected | LinkState::Lost { .. } => {}
            }
        });
        self.link_up.send_replace(false);
        if was_connected {
            warn!(reason, "flight-controller link lost; reopening");
        } else {
            debug!(reason, "link reopened without an autopilot");
        }
    }

    /// Folds one message into the snapshot or hands it to waiters.
    // MISSION_REQUEST is deprecated, but ArduPilot before 4.0 still sends it Returns true for a HEARTBEAT
    /// from the autopilot we follow.
    #[allow(deprecated)]
    fn handle(&self, header: MavHeader, msg: MavMessage) -> bool {
        // Which autopilot we follow: the first one that sends a HEARTBEAT (a GCS, camera or other
        // companion on the same link is ignored).
        let target = match self.target_ids.load(Ordering::Relaxed) {
            0 => None,
            v => Some((((v - 1) >> 8) as u8, ((v - 1) & 0xff) as u8)),
        };
        // MAVLink 2 allows system ids above 255; autopilots never use them
        let Ok(sender) = u8::try_from(header.system_id) else {
            return false;
        };
        if let MavMessage::HEARTBEAT(hb) = &msg {
            use apm::MavAutopilot as A;
            use apm::MavType as T;
            let is_autopilot = hb.autopilot != A::MAV_AUTOPILOT_INVALID
                && !matches!(
                    hb.mavtype,
                    T::MAV_TYPE_GCS
                        | T::MAV_TYPE_ONBOARD_CONTROLLER
                        | T::MAV_TYPE_GIMBAL
                        | T::MAV_TYPE_CAMERA
                );
            let ours = match target {
                Some((sys, comp)) => sys == sender && comp == header.component_id,
                None => is_autopilot,
            };
            if !ours {
                return false;
            }
            self.on_heartbeat(sender, header.component_id, hb);
            return true;
        }
        let Some((sys, _)) = target else {
            return false;
        };
        if sender != sys {
            return false;
        }
        if !self.addressed_to_us(&msg) {
            debug!(?msg, "reply for another system or component ignored");
            return false;
        }
        match msg {
            MavMessage::COMMAND_ACK(_)
            | MavMessage::MISSION_REQUEST_INT(_)
            | MavMessage::MISSION_REQUEST(_)
            | MavMessage::MISSION_ACK(_) => {
                // no receiver = nobody waiting: fine
                let _ = self.replies.send(Arc::new((header, msg)));
            }
            other => self.on_telemetry(other),
        }
        false
    }

    /// Whether a protocol reply is meant for us: COMMAND_ACK (its target fields are MAVLink 2
    /// extensions: 0/0 when the sender left them out) and the mission replies name the system and
    /// component they answer; 0 is a broadcast. An autopilot answers each GCS and companion on the
    /// link, and another one's ACK for the same command must not end our wait.
    #[allow(deprecated)]
    fn addressed_to_us(&self, msg: &MavMessage) -> bool {
        let (sys, comp) = match msg {
            MavMessage::COMMAND_ACK(a) => (a.target_system, a.target_component),
            MavMessage::MISSION_REQUEST_INT(r) => (r.target_system, r.target_component),
            MavMessage::MISSION_REQUEST(r) => (r.target_system, r.target_component),
            MavMessage::MISSION_ACK(a) => (a.target_system, a.target_component),
            _ => return true,
        };
        (sys == 0 || sys == self.cfg.system_id) && (comp == 0 || comp == self.cfg.component_id)
    }

    fn on_heartbeat(&self, system: u8, component: u8, hb: &apm::HEARTBEAT_DATA) {
        let now = SystemTime::now();
        let autopilot = match hb.autopilot {
            apm::MavAutopilot::MAV_AUTOPILOT_PX4 => Autopilot::Px4,
            apm::MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA => Autopilot::ArduPilot,
            other => Autopilot::Other(other as u8),
        };
        let mode = modes::decode(autopilot, hb.custom_mode);
        let armed = hb
            .base_mode
            .contains(apm::MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED);
        let critical = matches!(
            hb.system_status,
            apm::MavState::MAV_STATE_CRITICAL | apm::MavState::MAV_STATE_EMERGENCY
        );
        let own_change = self.autopilot_initiated(autopilot, &mode, armed);
        let seen_ext = {
            let mut st = lock(&self.state);
            st.last_heartbeat = Some(now);
            st.seen_extended_state
        };
        let mut newly_connected = false;
        let mut mode_changed = None;
        self.snapshot.send_modify(|s| {
            s.at = now;
            if !s.link.is_connected() {
                newly_connected = true;
                s.link = LinkState::Connected { since: now };
            }
            if s.autopilot != autopilot {
                info!(?autopilot, system, component, "autopilot detected");
            }
            s.autopilot = autopilot;
            s.target = Some((system, component));
            self.target_ids.store(
                ((u32::from(system) << 8) | u32::from(component)) + 1,
                Ordering::Relaxed,
            );
            if s.mode != mode {
                mode_changed = Some((s.mode.raw.clone(), mode.raw.clone()));
                if let Some((seq, reason)) = own_change.clone() {
                    s.autopilot_mode_change = Some(AutopilotModeChange {
                        seq,
                        from: s.mode.clone(),
                        to: mode.clone(),
                        reason,
                        at: now,
                    });
                }
                s.mode = mode;
            }
            if s.armed != armed {
                info!(armed, "arming state changed");
            }
            s.armed = armed;
            s.critical = critical;
            if !armed
                && s.battery_failsafe.is_some()
                && s.battery_charge_state.is_none_or(|c| !c.is_low_or_worse())
                && !s.health_failures.contains(&"battery")
            {
                // a pack swapped on the ground: the announcement is history
                s.battery_failsafe = None;
            }
            if !seen_ext {
                // no EXTENDED_SYS_STATE from this autopilot: disarmed is on the ground at least
                if !armed {
                    s.landed = LandedState::OnGround;
                } else if s.landed == LandedState::OnGround {
                    s.landed = LandedState::Unknown;
                }
            }
        });
        if let Some((from, to)) = mode_changed {
            match own_change {
                Some((seq, reason)) => {
                    warn!(
                        from,
                        to, seq, reason, "the autopilot changed mode by itself"
                    )
                }
                None => info!(from, to, "flight mode changed"),
            }
        }
        if newly_connected {
            info!("flight-controller link up");
            self.link_up.send_replace(true);
        }
    }

    /// Whether a HEARTBEAT's mode is a change the autopilot made by itself: not the mode this link
    /// asked for, not the autopilot's own next step after one (PX4 Takeoff → Hold, a mission's end
    /// or RTL item, RTL's landing), and not the first mode seen. Only while armed (or just
    /// disarmed): on the ground the agent is not flying anything to follow. Returns the change's
    /// number and the autopilot's words so far.
    fn autopilot_initiated(
        &self,
        autopilot: Autopilot,
        mode: &FlightMode,
        armed: bool,
    ) -> Option<(u32, Option<String>)> {
        let (before, was_armed) = {
            let s = self.snapshot.borrow();
            (s.mode.clone(), s.armed)
        };
        if before.raw == mode.raw || before.kind == FlightModeKind::Unknown {
            return None;
        }
        let mut st = lock(&self.state);
        if st
            .requested_mode
            .is_some_and(|r| modes::satisfies(autopilot, mode.kind, r))
        {
            st.requested_mode = None;
            return None;
        }
        use FlightModeKind as K;
        let next_step = matches!(
            (before.kind, mode.kind),
            (K::Takeoff, K::Hold | K::Guided)
                | (K::Auto, K::Hold | K::ReturnToLaunch | K::Land)
                | (K::ReturnToLaunch, K::Land)
        );
        if next_step || !(armed || was_armed) {
            return None;
        }
        st.requested_mode = None;
        st.mode_change_seq += 1;
        let now = Instant::now();
        st.reason_open_until = Some(now + REASON_WINDOW);
        let reason = join_reasons(
            st.recent_warnings
                .iter()
                .filter(|(at, _)| now.duration_since(*at) <= REASON_WINDOW)
                .map(|(_, t)| t.as_str()),
        );
        Some((st.mode_change_seq, reason))
    }

    /// Changes the snapshot in place without waking watchers: the receive loop wakes them at most
    /// every [`NOTIFY_EVERY`] (waking every watcher for every one of hundreds of messages a second
    /// would cost more than decoding them). Readers that `borrow()` see the change at once.
    fn update(&self, f: impl FnOnce(&mut FcSnapshot)) {
        self.snapshot.send_if_modified(|s| {
            f(s);
            false
        });
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Wakes snapshot watchers if anything changed since the last wake-up.
    fn notify(&self) {
        if self.dirty.swap(false, Ordering::Relaxed) {
            // `at` is stamped here, once per batch, rather than once per message
            self.snapshot.send_modify(|s| s.at = SystemTime::now());
        }
    }

    fn on_telemetry(&self, msg: MavMessage) {
        match msg {
            // ArduPilot sends 0, 0 until its EKF has an origin: not a position
            MavMessage::GLOBAL_POSITION_INT(p) if p.lat == 0 && p.lon == 0 => {}
            MavMessage::GLOBAL_POSITION_INT(p) => self.update(|s| {
                s.position = Some(GlobalPosition {
                    lat_deg: f64::from(p.lat) * 1e-7,
                    lon_deg: f64::from(p.lon) * 1e-7,
                    alt_msl_m: f64::from(p.alt) * 1e-3,
                    alt_rel_m: f64::from(p.relative_alt) * 1e-3,
                });
                s.velocity_ned_mps = Some([
                    f64::from(p.vx) * 0.01,
                    f64::from(p.vy) * 0.01,
                    f64::from(p.vz) * 0.01,
                ]);
                if p.hdg != u16::MAX {
                    s.heading_deg = Some(f64::from(p.hdg) * 0.01);
                }
            }),
            MavMessage::GPS_RAW_INT(g) => self.update(|s| {
                use apm::GpsFixType as G;
                s.gps_fix = match g.fix_type {
                    G::GPS_FIX_TYPE_NO_GPS => GpsFixType::NoGps,
                    G::GPS_FIX_TYPE_NO_FIX => GpsFixType::NoFix,
                    G::GPS_FIX_TYPE_2D_FIX => GpsFixType::Fix2d,
                    G::GPS_FIX_TYPE_3D_FIX => GpsFixType::Fix3d,
                    G::GPS_FIX_TYPE_DGPS => GpsFixType::Dgps,
                    G::GPS_FIX_TYPE_RTK_FLOAT => GpsFixType::RtkFloat,
                    G::GPS_FIX_TYPE_RTK_FIXED => GpsFixType::RtkFixed,
                    // static/PPP fixes are at least 3D
                    _ => GpsFixType::Fix3d,
                };
                s.satellites = (g.satellites_visible != u8::MAX).then_some(g.satellites_visible);
            }),
            MavMessage::SYS_STATUS(st) => {
                use apm::MavSysStatusSensor as S;
                let prearm = st
                    .onboard_control_sensors_present
                    .contains(S::MAV_SYS_STATUS_PREARM_CHECK)
                    .then(|| {
                        st.onboard_control_sensors_health
                            .contains(S::MAV_SYS_STATUS_PREARM_CHECK)
                    });
                lock(&self.state).prearm_ok = prearm;
                let failing =
                    st.onboard_control_sensors_enabled & !st.onboard_control_sensors_health;
                let failures: Vec<&'static str> = FLIGHT_NEEDS
                    .iter()
                    .filter(|(bit, _)| failing.contains(*bit))
                    .map(|(_, name)| *name)
                    .collect();
                self.update(|s| {
                    if st.battery_remaining >= 0 {
                        s.battery_percent = Some(f64::from(st.battery_remaining));
                    }
                    if st.voltage_battery != u16::MAX {
                        s.battery_voltage = Some(f64::from(st.voltage_battery) * 1e-3);
                    }
                    s.healthy = failures.is_empty();
                    s.health_failures = failures;
                });
            }
            MavMessage::EKF_STATUS_REPORT(e) => {
                let ok = position_usable(u32::from(e.flags.bits()));
                self.update(|s| s.position_estimate = Some(ok));
            }
            MavMessage::ESTIMATOR_STATUS(e) => {
                let ok = position_usable(u32::from(e.flags.bits()));
                self.update(|s| s.position_estimate = Some(ok));
            }
            MavMessage::BATTERY_STATUS(b) => self.update(|s| {
                if b.battery_remaining >= 0 {
                    s.battery_percent = Some(f64::from(b.battery_remaining));
                }
                let cells: Vec<f64> = b
                    .voltages
                    .iter()
                    .chain(b.voltages_ext.iter())
                    .filter(|v| **v != u16::MAX && **v != 0)
                    .map(|v| f64::from(*v) * 1e-3)
                    .collect();
                let total: f64 = cells.iter().sum();
                if total > 0.0 {
                    s.battery_voltage = Some(total);
                }
                // one entry is the whole pack (ArduPilot's analog monitor): no per-cell report
                s.battery_cells_v = if cells.len() >= 2 { cells } else { Vec::new() };
                use apm::MavBatteryChargeState as C;
                s.battery_charge_state = Some(match b.charge_state {
                    C::MAV_BATTERY_CHARGE_STATE_OK => BatteryChargeState::Ok,
                    C::MAV_BATTERY_CHARGE_STATE_LOW => BatteryChargeState::Low,
                    C::MAV_BATTERY_CHARGE_STATE_CRITICAL => BatteryChargeState::Critical,
                    C::MAV_BATTERY_CHARGE_STATE_EMERGENCY => BatteryChargeState::Emergency,
                    C::MAV_BATTERY_CHARGE_STATE_FAILED => BatteryChargeState::Failed,
                    C::MAV_BATTERY_CHARGE_STATE_UNHEALTHY => BatteryChargeState::Unhealthy,
                    C::MAV_BATTERY_CHARGE_STATE_CHARGING => BatteryChargeState::Charging,
                    _ => BatteryChargeState::Undefined,
                });
                s.battery_faults = battery_faults(b.fault_bitmask);
            }),
            MavMessage::EXTENDED_SYS_STATE(e) => {
                use apm::MavLandedState as L;
                lock(&self.state).seen_extended_state = true;
                self.update(|s| {
                    s.landed = match e.landed_state {
                        L::MAV_LANDED_STATE_ON_GROUND => LandedState::OnGround,
                        L::MAV_LANDED_STATE_IN_AIR => LandedState::InAir,
                        L::MAV_LANDED_STATE_TAKEOFF => LandedState::TakingOff,
                        L::MAV_LANDED_STATE_LANDING => LandedState::Landing,
                        _ => LandedState::Unknown,
                    };
                });
            }
            MavMessage::HOME_POSITION(h) => self.update(|s| {
                s.home = Some(GlobalPosition {
                    lat_deg: f64::from(h.latitude) * 1e-7,
                    lon_deg: f64::from(h.longitude) * 1e-7,
                    alt_msl_m: f64::from(h.altitude) * 1e-3,
                    alt_rel_m: 0.0,
                });
            }),
            MavMessage::MISSION_CURRENT(m) => {
                let off = lock(&self.state).mission_offset;
                self.update(|s| {
                    s.mission.current = m.seq.checked_sub(off);
                });
            }
            MavMessage::MISSION_ITEM_REACHED(m) => {
                let off = lock(&self.state).mission_offset;
                if let Some(seq) = m.seq.checked_sub(off) {
                    info!(item = seq, "mission item reached");
                    self.update(|s| {
                        s.mission.last_reached = Some(seq);
                    });
                }
            }
            MavMessage::SERVO_OUTPUT_RAW(o) => {
                // ArduPilot 4.x and PX4 1.16 send all 16 outputs on port 0, 9..16 in the MAVLink 2
                // extension fields; older PX4 sent 9..16 as port 1. An extension field that was not
                // sent decodes as 0, so once a port 1 message was seen it owns 9..16.
                let low = [
                    o.servo1_raw,
                    o.servo2_raw,
                    o.servo3_raw,
                    o.servo4_raw,
                    o.servo5_raw,
                    o.servo6_raw,
                    o.servo7_raw,
                    o.servo8_raw,
                ];
                let high = [
                    o.servo9_raw,
                    o.servo10_raw,
                    o.servo11_raw,
                    o.servo12_raw,
                    o.servo13_raw,
                    o.servo14_raw,
                    o.servo15_raw,
                    o.servo16_raw,
                ];
                let port1_seen = {
                    let mut st = lock(&self.state);
                    st.servo_port1_seen |= o.port == 1;
                    st.servo_port1_seen
                };
                match o.port {
                    0 => self.update(|s| {
                        let outs = s.servo_outputs_us.get_or_insert([0; 16]);
                        outs[..8].copy_from_slice(&low);
                        if !port1_seen {
                            outs[8..].copy_from_slice(&high);
                        }
                    }),
                    1 => self.update(|s| {
                        let outs = s.servo_outputs_us.get_or_insert([0; 16]);
                        outs[8..].copy_from_slice(&low);
                    }),
                    // outputs 17+ (port 2 and up): not used by the payload
                    _ => {}
                }
            }
            MavMessage::STATUSTEXT(t) => {
                let text = t.text.to_str().unwrap_or("").trim().to_owned();
                let severity = Severity::from_level(t.severity as u8);
                info!(?severity, text, "autopilot says");
                self.on_message(severity, text, None);
            }
            MavMessage::EVENT(e) => self.on_px4_event(&e),
            MavMessage::CURRENT_EVENT_SEQUENCE(c) => {
                let last = lock(&self.state).px4_event_seq;
                match last {
                    // start from now: the autopilot's history before we came is not ours to replay
                    None => lock(&self.state).px4_event_seq = Some(c.sequence),
                    Some(last) => {
                        let missed = c.sequence.wrapping_sub(last);
                        if missed > 0 && missed < 0x8000 {
                            self.request_events(last.wrapping_add(1), c.sequence);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// One thing the autopilot said (STATUSTEXT or decoded PX4 event): into the snapshot, to
    /// message subscribers, and into what the agent needs from it (gripper confirmations, battery
    /// failsafe announcements, the reason of a mode change the autopilot made).
    fn on_message(&self, severity: Severity, text: String, px4_event: Option<u32>) {
        let now = Instant::now();
        let gripper = match text.as_str() {
            "Gripper load released" => Some(GripperAction::Release),
            "Gripper load grabbed" => Some(GripperAction::Grab),
            _ => None,
        };
        let lower = text.to_ascii_lowercase();
        let battery_failsafe = severity.is_warning_or_worse()
            && lower.contains("battery")
            && [
                "failsafe",
                " low",
                "critical",
                "emergency",
                "return advised",
            ]
            .iter()
            .any(|w| lower.contains(w));
        let mut reason_update = None;
        {
            let mut st = lock(&self.state);
            // a refusal's reason, whichever way the autopilot gave it
            st.last_status_text = Some((now, text.clone()));
            if gripper.is_some() {
                st.gripper_confirmations += 1;
            }
            if severity.is_warning_or_worse() {
                st.recent_warnings.push_back((now, text.clone()));
                while st.recent_warnings.len() > 16
                    || st
                        .recent_warnings
                        .front()
                        .is_some_and(|(at, _)| now.duration_since(*at) > REASON_WINDOW)
                {
                    st.recent_warnings.pop_front();
                }
                if st.reason_open_until.is_some_and(|until| now <= until) {
                    reason_update = Some(st.mode_change_seq);
                }
            }
        }
        self.update(|s| {
            s.last_status_text = Some(text.clone());
            if gripper.is_some() {
                s.gripper = gripper;
            }
            if battery_failsafe {
                s.battery_failsafe = Some(text.clone());
            }
            if let (Some(seq), Some(change)) = (reason_update, s.autopilot_mode_change.as_mut()) {
                if change.seq == seq {
                    let old = change.reason.take();
                    change.reason = join_reasons(
                        old.iter()
                            .flat_map(|r| r.split("; "))
                            .chain(std::iter::once(text.as_str())),
                    );
                }
            }
        });
        // no subscriber is fine
        let _ = self.messages.send(AutopilotMessage {
            at: SystemTime::now(),
            severity,
            text,
            px4_event,
        });
    }

    /// A PX4 event (MAVLink events protocol): decoded to text where we know the event (see
    /// [`px4_event_text`]), and missed sequence numbers asked for again.
    fn on_px4_event(&self, e: &apm::EVENT_DATA) {
        let last = lock(&self.state).px4_event_seq;
        let newer = last.map(|l| e.sequence.wrapping_sub(l)).unwrap_or(1);
        if newer > 0 && newer < 0x8000 {
            if let Some(last) = last {
                if newer > 1 {
                    self.request_events(last.wrapping_add(1), e.sequence.wrapping_sub(1));
                }
            }
            lock(&self.state).px4_event_seq = Some(e.sequence);
        }
        // the low nibble is the level for users; 8 (protocol) and 9 (disabled) are not for them
        let level = e.log_levels & 0x0f;
        if level >= 8 {
            return;
        }
        let severity = Severity::from_level(level);
        let text = px4_event_text(e.id, &e.arguments);
        info!(?severity, text, id = e.id, "autopilot event");
        self.on_message(severity, text, Some(e.id));
    }

    /// Queues REQUEST_EVENT for `first..=last` (at most 16 of them: older ones are gone anyway).
    fn request_events(&self, first: u16, last: u16) {
        let first = if last.wrapping_sub(first) >= 16 {
            last.wrapping_sub(15)
        } else {
            first
        };
        let Some((sys, comp)) = self.snapshot.borrow().target else {
            return;
        };
        debug!(first, last, "asking for missed PX4 events");
        lock(&self.outbox).push(MavMessage::REQUEST_EVENT(apm::REQUEST_EVENT_DATA {
            target_system: sys,
            target_component: comp,
            first_sequence: first,
            last_sequence: last,
        }));
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&FcSnapshot) -> bool,
    ) -> Option<FcSnapshot> {
        let mut rx = self.snapshot.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Some(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    async fn send(&self, command: &'static str, msg: &MavMessage) -> Result<(), FcError> {
        let conn = lock(&self.conn).clone();
        let Some(conn) = conn else {
            return Err(FcError::LinkLost { command });
        };
        conn.send(&self.header(), msg).await.map_err(|error| {
            warn!(command, %error, "send failed");
            FcError::LinkLost { command }
        })?;
        Ok(())
    }

    fn status_text_since(&self, since: Instant) -> Option<String> {
        lock(&self.state)
            .last_status_text
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, t)| t.clone())
    }

    fn command_lock(&self, cmd: MavCmd) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.command_locks)
            .entry(cmd as u32)
            .or_default()
            .clone()
    }

    /// COMMAND_LONG with the full command protocol.
    async fn command(&self, name: &'static str, cmd: MavCmd, p: [f32; 7]) -> Result<(), FcError> {
        self.run_command(name, cmd, |target, confirmation| {
            MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
                param1: p[0],
                param2: p[1],
                param3: p[2],
                param4: p[3],
                param5: p[4],
                param6: p[5],
                param7: p[6],
                command: cmd,
                target_system: target.0,
                target_component: target.1,
                confirmation,
            })
        })
        .await
    }

    /// COMMAND_INT (positions as 1e7 degrees: no float32 rounding of coordinates). It has no
    /// confirmation field; resends are identical.
    #[allow(clippy::too_many_arguments)]
    async fn command_int(
        &self,
        name: &'static str,
        cmd: MavCmd,
        frame: apm::MavFrame,
        p: [f32; 4],
        x: i32,
        y: i32,
        z: f32,
    ) -> Result<(), FcError> {
        self.run_command(name, cmd, |target, _| {
            MavMessage::COMMAND_INT(apm::COMMAND_INT_DATA {
                param1: p[0],
                param2: p[1],
                param3: p[2],
                param4: p[3],
                x,
                y,
                z,
                command: cmd,
                target_system: target.0,
                target_component: target.1,
                frame,
                current: 0,
                autocontinue: 0,
            })
        })
        .await
    }

    async fn run_command(
        &self,
        name: &'static str,
        cmd: MavCmd,
        build: impl Fn((u8, u8), u8) -> MavMessage,
    ) -> Result<(), FcError> {
        let lock = self.command_lock(cmd);
        let _one_at_a_time = lock.lock().await;
        let target = self.target().ok_or(FcError::LinkLost { command: name })?;
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let started = Instant::now();
        let attempts = self.cfg.command_retries + 1;
        let mut in_progress = false;
        let mut sent = 0u32;
        while sent < attempts {
            if !in_progress {
                let confirmation = u8::try_from(sent).unwrap_or(u8::MAX);
                self.send(name, &build(target, confirmation)).await?;
                sent += 1;
                debug!(command = name, confirmation, "command sent");
            }
            let wait = if in_progress {
                self.cfg.in_progress_timeout()
            } else {
                self.cfg.command_timeout()
            };
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    r = replies.recv() => {
                        let reply = match r {
                            Ok(reply) => reply,
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                warn!(command = name, skipped = n, "reply queue overflowed");
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => {
                                return Err(FcError::Cancelled { command: name });
                            }
                        };
                        let MavMessage::COMMAND_ACK(ack) = &reply.1 else { continue };
                        if ack.command != cmd {
                            continue;
                        }
                        let reason = || self.status_text_since(started);
                        match ack.result {
                            MavResult::MAV_RESULT_ACCEPTED => {
                                debug!(command = name, elapsed = ?started.elapsed(), "accepted");
                                return Ok(());
                            }
                            MavResult::MAV_RESULT_IN_PROGRESS => {
                                debug!(command = name, "in progress");
                                if !in_progress {
                                    in_progress = true;
                                    break;
                                }
                                continue;
                            }
                            MavResult::MAV_RESULT_TEMPORARILY_REJECTED => {
                                return Err(FcError::TemporarilyRejected { command: name, reason: reason() });
                            }
                            MavResult::MAV_RESULT_DENIED => {
                                return Err(FcError::Denied { command: name, reason: reason() });
                            }
                            MavResult::MAV_RESULT_UNSUPPORTED => {
                                return Err(FcError::Unsupported { command: name, reason: reason() });
                            }
                            MavResult::MAV_RESULT_CANCELLED => {
                                return Err(FcError::Cancelled { command: name });
                            }
                            MavResult::MAV_RESULT_COMMAND_INT_ONLY | MavResult::MAV_RESULT_COMMAND_LONG_ONLY => {
                                return Err(FcError::Unsupported { command: name, reason: Some(format!("{:?}", ack.result)) });
                            }
                            other => {
                                return Err(FcError::Failed {
                                    command: name,
                                    reason: reason().or_else(|| Some(format!("{other:?}"))),
                                });
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        if in_progress {
                            return Err(FcError::Timeout { command: name, attempts: sent, after: started.elapsed() });
                        }
                        debug!(command = name, attempt = sent, "no COMMAND_ACK; resending");
                        break;
                    }
                    r = link.changed() => {
                        if r.is_err() || !*link.borrow() {
                            return Err(FcError::LinkLost { command: name });
                        }
                    }
                }
            }
        }
        Err(FcError::Timeout {
            command: name,
            attempts: sent,
            after: started.elapsed(),
        })
    }

    async fn set_mode(&self, name: &'static str, kind: FlightModeKind) -> Result<(), FcError> {
        let (autopilot, current) = {
            let s = self.snapshot.borrow();
            if !s.link.is_connected() {
                return Err(FcError::LinkLost { command: name });
            }
            (s.autopilot, s.mode.clone())
        };
        if modes::reached(autopilot, &current, kind) {
            return Ok(());
        }
        let (p2, p3) = modes::encode(autopilot, kind).ok_or_else(|| FcError::Unsupported {
            command: name,
            reason: Some(format!("{autopilot:?} has no {kind:?} mode")),
        })?;
        self.expect_mode(kind);
        let custom_mode_enabled = apm::MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED.bits() as f32;
        self.command(
            name,
            MavCmd::MAV_CMD_DO_SET_MODE,
            [custom_mode_enabled, p2, p3, 0.0, 0.0, 0.0, 0.0],
        )
        .await?;
        let started = Instant::now();
        match self
            .wait_for(self.cfg.mode_change_timeout(), |s| {
                modes::reached(autopilot, &s.mode, kind) || !s.link.is_connected()
            })
            .await
        {
            Some(s) if s.link.is_connected() => Ok(()),
            Some(_) => Err(FcError::LinkLost { command: name }),
            None => Err(FcError::Failed {
                command: name,
                reason: Some(self.status_text_since(started).unwrap_or_else(|| {
                    format!(
                        "accepted, but HEARTBEAT still shows {}",
                        self.snapshot.borrow().mode.raw
                    )
                })),
            }),
        }
    }

    /// Notes that this link is about to cause a change to `kind`: the HEARTBEAT showing it is then
    /// not reported as the autopilot's own decision.
    fn expect_mode(&self, kind: FlightModeKind) {
        lock(&self.state).requested_mode = Some(kind);
    }

    /// Runs one motion operation (take-off, go-to, hold, ...). If a newer one started while it
    /// ran, its result is stale (the vehicle is already doing something else): `Cancelled`.
    async fn motion<T>(
        &self,
        name: &'static str,
        op: impl Future<Output = Result<T, FcError>>,
    ) -> Result<T, FcError> {
        let mine = self.motion_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let result = op.await;
        if self.motion_generation.load(Ordering::SeqCst) != mine {
            debug!(command = name, stale = ?result.as_ref().err(), "superseded by a newer operation");
            return Err(FcError::Cancelled { command: name });
        }
        result
    }

    fn autopilot(&self, command: &'static str) -> Result<Autopilot, FcError> {
        let s = self.snapshot.borrow();
        if !s.link.is_connected() {
            return Err(FcError::LinkLost { command });
        }
        Ok(s.autopilot)
    }

    /// Asks for HOME_POSITION (`MAV_CMD_REQUEST_MESSAGE`); PX4 sends it only when asked or on
    /// change.
    async fn request_home(&self) -> Result<(), FcError> {
        self.command(
            "MAV_CMD_REQUEST_MESSAGE(HOME_POSITION)",
            MavCmd::MAV_CMD_REQUEST_MESSAGE,
            [
                apm::HOME_POSITION_DATA::ID_U32 as f32,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
        )
        .await
    }

    /// Home's altitude AMSL; if home is not known yet, asks for it and waits up to the mode-change
    /// timeout (a re-attached link may not have it yet).
    async fn home_msl(&self, command: &'static str) -> Result<f64, FcError> {
        if let Some(h) = self.snapshot.borrow().home {
            return Ok(h.alt_msl_m);
        }
        if let Err(error) = self.request_home().await {
            debug!(%error, "HOME_POSITION request not acknowledged");
        }
        self.wait_for(self.cfg.mode_change_timeout(), |s| s.home.is_some())
            .await
            .and_then(|s| s.home)
            .map(|h| h.alt_msl_m)
            .ok_or_else(|| FcError::Failed {
                command,
                reason: Some("home position not known yet".into()),
            })
    }

    /// Stops and holds where the vehicle is. ArduPilot: BRAKE (climb rate 0 whatever the sticks
    /// say), then, once stopped, GUIDED with a target at the stopped position, never LOITER (its
    /// climb rate is the throttle stick: stick-down without a transmitter). PX4: Hold, and a
    /// reposition to here when flying a guided leg (a leg is flown in Hold already).
    async fn hold(&self) -> Result<(), FcError> {
        let snap = self.snapshot.borrow().clone();
        let in_mission = snap.mode.kind == FlightModeKind::Auto;
        let (target, was_paused) = {
            let st = lock(&self.state);
            (st.last_goto, st.paused_mission)
        };
        let here = |s: &FcSnapshot| {
            s.position
                .map(|p| GeoPoint::new(p.lat_deg, p.lon_deg, p.alt_rel_m.max(0.0)))
                .ok_or(FcError::Failed {
                    command: "hold",
                    reason: Some("position not known yet".into()),
                })
        };
        match snap.autopilot {
            Autopilot::ArduPilot => {
                self.set_mode("set mode BRAKE", FlightModeKind::Hold)
                    .await?;
                let timeout = Duration::from_millis(self.cfg.hold_brake_timeout_ms);
                let stopped = self
                    .wait_for(timeout, |s| {
                        !s.link.is_connected()
                            || s.velocity_ned_mps
                                .is_some_and(|v| v[0].hypot(v[1]) < 0.3 && v[2].abs() < 0.3)
                    })
                    .await;
                if stopped.is_none() {
                    warn!(
                        ?timeout,
                        "still moving after BRAKE; holding where it is now"
                    );
                }
                let point = here(&self.snapshot.borrow())?;
                self.goto(point).await?;
            }
            Autopilot::Px4 => {
                self.set_mode("set mode HOLD", FlightModeKind::Hold).await?;
                if !in_mission && snap.position.is_some() {
                    // a guided leg is flown in Hold: switching changes nothing mid-leg
                    self.goto(here(&snap)?).await?;
                }
            }
            _ => self.set_mode("set mode HOLD", FlightModeKind::Hold).await?,
        }
        let mut st = lock(&self.state);
        // `resume` continues the real target (or the mission), not the hold point
        st.last_goto = target;
        st.paused_mission = in_mission || was_paused;
        Ok(())
    }

    async fn goto(&self, target: GeoPoint) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_DO_REPOSITION";
        check_point(NAME, &target)?;
        let autopilot = self.autopilot(NAME)?;
        let (frame, z) = match autopilot {
            // PX4 reads the altitude of DO_REPOSITION as AMSL
            Autopilot::Px4 => (
                apm::MavFrame::MAV_FRAME_GLOBAL,
                self.home_msl(NAME).await? + target.alt_rel_m,
            ),
            _ => {
                // ArduCopter only accepts position targets in GUIDED
                self.set_mode("set mode GUIDED", FlightModeKind::Guided)
                    .await?;
                (
                    apm::MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                    target.alt_rel_m,
                )
            }
        };
        let change_mode =
            apm::MavDoRepositionFlags::MAV_DO_REPOSITION_FLAGS_CHANGE_MODE.bits() as f32;
        if autopilot == Autopilot::Px4 {
            // PX4 switches to Hold to fly a reposition
            self.expect_mode(FlightModeKind::Hold);
        }
        self.command_int(
            NAME,
            MavCmd::MAV_CMD_DO_REPOSITION,
            frame,
            [-1.0, change_mode, 0.0, f32::NAN],
            deg_e7(target.lat_deg),
            deg_e7(target.lon_deg),
            z as f32,
        )
        .await?;
        let mut st = lock(&self.state);
        st.last_goto = Some(target);
        st.paused_mission = false;
        Ok(())
    }
}

fn deg_e7(deg: f64) -> i32 {
    (deg * 1e7).round() as i32
}

fn check_point(command: &'static str, p: &GeoPoint) -> Result<(), FcError> {
    if !(-90.0..=90.0).contains(&p.lat_deg) || !(-180.0..=180.0).contains(&p.lon_deg) {
        return Err(FcError::InvalidArgument {
            command,
            reason: format!(
                "({}, {}) is not a WGS-84 latitude/longitude",
                p.lat_deg, p.lon_deg
            ),
        });
    }
    if !p.alt_rel_m.is_finite() || p.alt_rel_m < 0.0 {
        return Err(FcError::InvalidArgument {
            command,
            reason: format!("altitude {} m above home must be 0 or more", p.alt_rel_m),
        });
    }
    Ok(())
}

/// The `SYS_STATUS` sensors a companion-flown delivery needs, by name. Not the RC receiver (PX4
/// without a transmitter marks it enabled but unhealthy, and flies its autonomous modes anyway)
/// and not the pre-arm bit (PX4 never sets it; ArduPilot's is read as `armable`).
const FLIGHT_NEEDS: [(apm::MavSysStatusSensor, &str); 8] = [
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_GYRO,
        "gyro",
    ),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_ACCEL,
        "accel",
    ),
    (apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_MAG, "mag"),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE,
        "baro",
    ),
    (apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS, "gps"),
    (apm::MavSysStatusSensor::MAV_SYS_STATUS_AHRS, "ahrs"),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_BATTERY,
        "battery",
    ),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS,
        "motors",
    ),
];

/// `MAV_BATTERY_FAULT` bits, by name.
const BATTERY_FAULTS: [(apm::MavBatteryFault, &str); 9] = [
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_DEEP_DISCHARGE,
        "deep_discharge",
    ),
    (apm::MavBatteryFault::MAV_BATTERY_FAULT_SPIKES, "spikes"),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_CELL_FAIL,
        "cell_fail",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_OVER_CURRENT,
        "over_current",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_OVER_TEMPERATURE,
        "over_temperature",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_UNDER_TEMPERATURE,
        "under_temperature",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_INCOMPATIBLE_VOLTAGE,
        "incompatible_voltage",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_INCOMPATIBLE_FIRMWARE,
        "incompatible_firmware",
    ),
    (
        apm::MavBatteryFault::BATTERY_FAULT_INCOMPATIBLE_CELLS_CONFIGURATION,
        "incompatible_cells",
    ),
];

/// The names of the fault bits set in `BATTERY_STATUS.fault_bitmask`.
fn battery_faults(bits: apm::MavBatteryFault) -> Vec<&'static str> {
    BATTERY_FAULTS
        .iter()
        .filter(|(bit, _)| bits.contains(*bit))
        .map(|(_, name)| *name)
        .collect()
}

/// `EKF_STATUS_FLAGS` / `ESTIMATOR_STATUS_FLAGS` (same bits): an absolute horizontal position the
/// vehicle can navigate by. ArduPilot's "Need Position Estimate" and "requires position" refusals
/// last exactly while this is false (constant-position mode is the EKF's stand-in before GPS).
fn position_usable(flags: u32) -> bool {
    const POS_HORIZ_ABS: u32 = 16;
    const CONST_POS_MODE: u32 = 128;
    const UNINITIALIZED: u32 = 1024;
    flags & POS_HORIZ_ABS != 0 && flags & (CONST_POS_MODE | UNINITIALIZED) == 0
}

/// A PX4 event id from its name, as PX4 computes it (`events::ID()`): the autopilot component
/// (1) in the top byte, FNV-1a 32 of the name in the low 24 bits.
pub fn px4_event_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (1 << 24) | (h & 0x00ff_ffff)
}

/// The PX4 events this hal names (PX4's own message text; their arguments are not decoded). Any
/// other event is surfaced by id and raw arguments: PX4 describes its events in component
/// metadata (`events.json`) that a companion would have to download over MAVLink FTP.
const PX4_EVENTS: [(&str, &str); 9] = [
    (
        "check_rc_dl_no_dllink",
        "No connection to the ground control station",
    ),
    (
        "commander_mission_comp_lost",
        "Connection to mission computer lost",
    ),
    (
        "commander_failsafe_enter_generic_hold",
        "Failsafe activated",
    ),
    (
        "commander_transition_denied",
        "Arming state transition denied",
    ),
    (
        "commander_arm_denied_throttle_center",
        "Arming denied: throttle above center",
    ),
    (
        "commander_arm_denied_calibrating",
        "Arming denied: calibrating",
    ),
    (
        "check_modes_global_pos",
        "No valid global position estimate",
    ),
    ("check_battery_low", "Low battery"),
    (
        "commander_gcs_lost",
        "Connection to ground control station lost",
    ),
];

/// The text of a PX4 event: `<PX4's text> (PX4 event <name>)` for the events in [`PX4_EVENTS`],
/// else `PX4 event 0x<id> [<arguments in hex, trailing zeros cut>]`.
fn px4_event_text(id: u32, args: &[u8]) -> String {
    if let Some((name, text)) = PX4_EVENTS.iter().find(|(n, _)| px4_event_id(n) == id) {
        return format!("{text} (PX4 event {name})");
    }
    let used = args.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let hex: String = args[..used].iter().map(|b| format!("{b:02x}")).collect();
    format!("PX4 event {id:#010x} [{hex}]")
}

// ---------------------------------------------------------------------------------------------
// missions

impl Shared {
    fn mission_item(&self, seq: u16, item: &MissionItem, target: (u8, u8)) -> MavMessage {
        use apm::MavFrame as F;
        let here = self.snapshot.borrow().position;
        let (cmd, frame, p1, p2, x, y, z) = match *item {
            MissionItem::Takeoff { alt_rel_m } => {
                let (lat, lon) = here.map(|p| (p.lat_deg, p.lon_deg)).unwrap_or((0.0, 0.0));
                (
                    MavCmd::MAV_CMD_NAV_TAKEOFF,
                    F::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                    0.0,
                    0.0,
                    deg_e7(lat),
                    deg_e7(lon),
                    alt_rel_m as f32,
                )
            }
            MissionItem::Waypoint { point, hold_s } => (
                MavCmd::MAV_CMD_NAV_WAYPOINT,
                F::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                hold_s,
                0.0,
                deg_e7(point.lat_deg),
                deg_e7(point.lon_deg),
                point.alt_rel_m as f32,
            ),
            MissionItem::Land { point } => (
                MavCmd::MAV_CMD_NAV_LAND,
                F::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                0.0,
                0.0,
                deg_e7(point.lat_deg),
                deg_e7(point.lon_deg),
                0.0,
            ),
            MissionItem::Gripper(action) => (
                MavCmd::MAV_CMD_DO_GRIPPER,
                F::MAV_FRAME_MISSION,
                1.0,
                gripper_param(action),
                0,
                0,
                0.0,
            ),
            MissionItem::ReturnToLaunch => (
                MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH,
                F::MAV_FRAME_MISSION,
                0.0,
                0.0,
                0,
                0,
                0.0,
            ),
        };
        MavMessage::MISSION_ITEM_INT(apm::MISSION_ITEM_INT_DATA {
            param1: p1,
            param2: p2,
            param3: 0.0,
            param4: f32::NAN,
            x,
            y,
            z,
            seq,
            command: cmd,
            target_system: target.0,
            target_component: target.1,
            frame,
            current: 0,
            autocontinue: 1,
            ..Default::default()
        })
    }

    fn home_item(&self, target: (u8, u8)) -> MavMessage {
        let home = self.snapshot.borrow().home;
        let (lat, lon, alt) = home
            .map(|h| (h.lat_deg, h.lon_deg, h.alt_msl_m))
            .unwrap_or((0.0, 0.0, 0.0));
        MavMessage::MISSION_ITEM_INT(apm::MISSION_ITEM_INT_DATA {
            param1: 0.0,
            param2: 0.0,
            param3: 0.0,
            param4: 0.0,
            x: deg_e7(lat),
            y: deg_e7(lon),
            z: alt as f32,
            seq: 0,
            command: MavCmd::MAV_CMD_NAV_WAYPOINT,
            target_system: target.0,
            target_component: target.1,
            frame: apm::MavFrame::MAV_FRAME_GLOBAL,
            current: 0,
            autocontinue: 1,
            ..Default::default()
        })
    }

    /// Waits for the next mission-protocol reply from the autopilot, up to the per-step timeout.
    #[allow(deprecated)]
    async fn next_mission_reply(
        &self,
        replies: &mut broadcast::Receiver<Reply>,
        link: &mut watch::Receiver<bool>,
        step: &'static str,
    ) -> Result<Option<Reply>, FcError> {
        let deadline = tokio::time::Instant::now() + self.cfg.mission_timeout();
        loop {
            tokio::select! {
                r = replies.recv() => match r {
                    Ok(reply) => {
                        if matches!(reply.1, MavMessage::MISSION_REQUEST_INT(_) | MavMessage::MISSION_REQUEST(_) | MavMessage::MISSION_ACK(_)) {
                            return Ok(Some(reply));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Err(FcError::Cancelled { command: step }),
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                r = link.changed() => {
                    if r.is_err() || !*link.borrow() {
                        return Err(FcError::LinkLost { command: step });
                    }
                }
            }
        }
    }

    #[allow(deprecated)]
    async fn upload_mission(&self, items: &[MissionItem]) -> Result<(), FcError> {
        const STEP: &str = "upload";
        for item in items {
            if let MissionItem::Waypoint { point, .. } | MissionItem::Land { point } = item {
                check_point("MISSION_ITEM_INT", point)?;
            }
        }
        let _one = self.mission_lock.lock().await;
        let target = self.target().ok_or(FcError::LinkLost {
            command: "MISSION_COUNT",
        })?;
        let autopilot = self.autopilot("MISSION_COUNT")?;
        let offset: u16 = if autopilot == Autopilot::ArduPilot {
            1
        } else {
            0
        };
        let mut wire: Vec<MavMessage> = Vec::with_capacity(items.len() + 1);
        if offset == 1 {
            wire.push(self.home_item(target));
        }
        for (i, item) in items.iter().enumerate() {
            let seq = u16::try_from(i).unwrap_or(u16::MAX).saturating_add(offset);
            wire.push(self.mission_item(seq, item, target));
        }
        let count = u16::try_from(wire.len()).map_err(|_| FcError::InvalidArgument {
            command: "MISSION_COUNT",
            reason: format!("{} items is more than a mission can hold", wire.len()),
        })?;
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let count_msg = MavMessage::MISSION_COUNT(apm::MISSION_COUNT_DATA {
            count,
            target_system: target.0,
            target_component: target.1,
            ..Default::default()
        });
        self.send("MISSION_COUNT", &count_msg).await?;
        let mut last_sent = count_msg;
        let mut tries = 0u32;
        let mut highest_requested: Option<u16> = None;
        loop {
            let reply = self
                .next_mission_reply(&mut replies, &mut link, STEP)
                .await?;
            let Some(reply) = reply else {
                tries += 1;
                if tries > self.cfg.mission_retries {
                    return Err(FcError::Mission {
                        step: STEP,
                        reason: format!(
                            "no answer after {} attempts (last request: {:?})",
                            tries, highest_requested
                        ),
                    });
                }
                debug!(tries, "mission step timed out; resending");
                self.send("MISSION_ITEM_INT", &last_sent).await?;
                continue;
            };
            match &reply.1 {
                MavMessage::MISSION_REQUEST_INT(apm::MISSION_REQUEST_INT_DATA { seq, .. })
                | MavMessage::MISSION_REQUEST(apm::MISSION_REQUEST_DATA { seq, .. }) => {
                    let Some(item) = wire.get(usize::from(*seq)) else {
                        return Err(FcError::Mission {
                            step: STEP,
                            reason: format!("autopilot asked for item {seq} of {count}"),
                        });
                    };
                    tries = 0;
                    highest_requested = Some(highest_requested.map_or(*seq, |h| h.max(*seq)));
                    self.send("MISSION_ITEM_INT", item).await?;
                    last_sent = item.clone();
                }
                MavMessage::MISSION_ACK(ack) => {
                    if ack.mavtype == apm::MavMissionResult::MAV_MISSION_ACCEPTED {
                        if highest_requested.map(|h| h + 1) == Some(count) {
                            break;
                        }
                        // an ACCEPTED before all items were requested is a stale ack
                        continue;
                    }
                    return Err(FcError::Mission {
                        step: STEP,
                        reason: format!("autopilot answered {:?}", ack.mavtype),
                    });
                }
                _ => {}
            }
        }
        lock(&self.state).mission_offset = offset;
        self.snapshot.send_modify(|s| {
            s.at = SystemTime::now();
            s.mission = MissionProgress {
                count: Some(count - offset),
                current: None,
                last_reached: None,
            };
        });
        info!(items = items.len(), "mission uploaded");
        Ok(())
    }

    async fn clear_mission(&self) -> Result<(), FcError> {
        const STEP: &str = "clear";
        let _one = self.mission_lock.lock().await;
        let target = self.target().ok_or(FcError::LinkLost {
            command: "MISSION_CLEAR_ALL",
        })?;
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let msg = MavMessage::MISSION_CLEAR_ALL(apm::MISSION_CLEAR_ALL_DATA {
            target_system: target.0,
            target_component: target.1,
            ..Default::default()
        });
        for attempt in 0..=self.cfg.mission_retries {
            self.send("MISSION_CLEAR_ALL", &msg).await?;
            loop {
                match self
                    .next_mission_reply(&mut replies, &mut link, STEP)
                    .await?
                {
                    None => {
                        debug!(attempt, "no MISSION_ACK for clear; resending");
                        break;
                    }
                    Some(reply) => {
                        if let MavMessage::MISSION_ACK(ack) = &reply.1 {
                            if ack.mavtype == apm::MavMissionResult::MAV_MISSION_ACCEPTED {
                                self.snapshot.send_modify(|s| {
                                    s.at = SystemTime::now();
                                    s.mission = MissionProgress {
                                        count: Some(0),
                                        current: None,
                                        last_reached: None,
                                    };
                                });
                                return Ok(());
                            }
                            return Err(FcError::Mission {
                                step: STEP,
                                reason: format!("autopilot answered {:?}", ack.mavtype),
                            });
                        }
                    }
                }
            }
        }
        Err(FcError::Mission {
            step: STEP,
            reason: format!(
                "no MISSION_ACK after {} attempts",
                self.cfg.mission_retries + 1
            ),
        })
    }
}

fn gripper_param(action: GripperAction) -> f32 {
    match action {
        GripperAction::Release => 0.0,
        GripperAction::Grab => 1.0,
    }
}

// ---------------------------------------------------------------------------------------------
// the trait

impl FlightController for MavlinkFc {
    fn snapshot(&self) -> watch::Receiver<FcSnapshot> {
        self.shared.snapshot.subscribe()
    }

    async fn preflight_check(&self, min_battery_percent: f64) -> Result<PreflightReport, FcError> {
        // A task can come while the link is still opening (the agent just started or restarted):
        // wait, bounded, for the autopilot's first reports instead of judging an empty snapshot.
        // A link that stays down or an autopilot that never reports still fails below, by name.
        let reported = |s: &FcSnapshot| {
            s.link.is_connected()
                && s.battery_percent.is_some()
                && (s.position_estimate.is_some() || s.autopilot == Autopilot::Px4)
        };
        if !reported(&self.shared.snapshot.borrow()) {
            let settle = self.shared.cfg.heartbeat_timeout() * 2;
            if self.shared.wait_for(settle, reported).await.is_none() {
                debug!(
                    ?settle,
                    "pre-flight: the autopilot's reports are still incomplete"
                );
            }
        }
        let s = self.shared.snapshot.borrow().clone();
        let prearm = lock(&self.shared.state).prearm_ok;
        let mut checks = Vec::new();
        let mut check = |name: &'static str, passed: bool, detail: String| {
            checks.push(PreflightCheck {
                name,
                passed,
                detail,
            });
        };
        check(
            "link",
            s.link.is_connected(),
            format!("{:?}, autopilot {:?}", s.link, s.autopilot),
        );
        check(
            "gps",
            s.gps_fix.is_3d(),
            format!(
                "{:?}, {} satellites",
                s.gps_fix,
                s.satellites.map_or("?".into(), |n| n.to_string())
            ),
        );
        check(
            "home",
            s.home.is_some(),
            match s.home {
                Some(h) => format!("home at {:.7}, {:.7}", h.lat_deg, h.lon_deg),
                None => "no home position yet".into(),
            },
        );
        // a GPS fix and home come seconds before ArduPilot's EKF navigates by them
        let (passed, detail) = match (s.position_estimate, s.autopilot) {
            (Some(true), _) => (true, "position estimate usable".to_owned()),
            (Some(false), _) => (
                false,
                "the autopilot has no position estimate yet".to_owned(),
            ),
            // PX4 without ESTIMATOR_STATUS on this link: its arming checks decide
            (None, Autopilot::Px4) => (
                true,
                "estimator not reported; the autopilot's arming checks decide".to_owned(),
            ),
            (None, _) => (false, "estimator status not reported".to_owned()),
        };
        check("position", passed, detail);
        let battery_ok = s.battery_percent.is_some_and(|p| p >= min_battery_percent)
            && s.battery_failsafe.is_none()
            && s.battery_faults.is_empty()
            && s.battery_charge_state.is_none_or(|c| !c.is_low_or_worse());
        check(
            "battery",
            battery_ok,
            match (
                s.battery_percent,
                &s.battery_failsafe,
                s.battery_charge_state,
            ) {
                (_, Some(text), _) => format!("autopilot battery failsafe: {text}"),
                _ if !s.battery_faults.is_empty() => {
                    format!(
                        "autopilot reports battery faults: {}",
                        s.battery_faults.join(", ")
                    )
                }
                (_, None, Some(c)) if c.is_low_or_worse() => {
                    format!("autopilot reports the battery {c:?}")
                }
                (Some(p), _, _) => format!("{p:.0}% (minimum {min_battery_percent:.0}%)"),
                (None, _, _) => "battery not reported".into(),
            },
        );
        check(
            "health",
            s.healthy,
            if s.healthy {
                "flight sensors healthy".into()
            } else {
                format!(
                    "autopilot reports failing: {}",
                    s.health_failures.join(", ")
                )
            },
        );
        check(
            "armable",
            !s.armed && prearm != Some(false),
            if s.armed {
                "already armed".into()
            } else {
                match prearm {
                    Some(true) => "pre-arm checks pass".into(),
                    Some(false) => format!(
                        "pre-arm checks fail{}",
                        s.last_status_text
                            .map(|t| format!(" (last message: {t})"))
                            .unwrap_or_default()
                    ),
                    // PX4 never sets the bit: arming itself (and its events) tells
                    None => "pre-arm state not reported; arming will tell".into(),
                }
            },
        );
        Ok(PreflightReport { checks })
    }

    async fn arm(&self) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_COMPONENT_ARM_DISARM(arm)";
        if self.shared.autopilot(NAME)? == Autopilot::ArduPilot {
            // the flight mode first: ArduCopter checks a mode's position needs only while armed,
            // so arming in STABILIZE before the EKF has a position succeeds and the GUIDED after
            // it fails ("requires position") with the motors running. In GUIDED the arm itself
            // is refused cleanly ("Arm: Need Position Estimate").
            self.shared
                .set_mode("set mode GUIDED", FlightModeKind::Guided)
                .await?;
        }
        self.shared
            .command(
                NAME,
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
            .await?;
        match self
            .shared
            .wait_for(self.shared.cfg.mode_change_timeout(), |s| s.armed)
            .await
        {
            Some(_) => Ok(()),
            None => Err(FcError::Failed {
                command: NAME,
                reason: Some("accepted, but HEARTBEAT does not show armed".into()),
            }),
        }
    }

    async fn disarm(&self) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_COMPONENT_ARM_DISARM(disarm)";
        self.shared
            .command(NAME, MavCmd::MAV_CMD_COMPONENT_ARM_DISARM, [0.0; 7])
            .await?;
        match self
            .shared
            .wait_for(self.shared.cfg.mode_change_timeout(), |s| !s.armed)
            .await
        {
            Some(_) => Ok(()),
            None => Err(FcError::Failed {
                command: NAME,
                reason: Some("accepted, but HEARTBEAT still shows armed".into()),
            }),
        }
    }

    async fn takeoff(&self, alt_rel_m: f64) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_NAV_TAKEOFF";
        self.shared
            .motion(NAME, async {
                if !alt_rel_m.is_finite() || alt_rel_m <= 0.0 {
                    return Err(FcError::InvalidArgument {
                        command: NAME,
                        reason: format!("take-off altitude {alt_rel_m} m must be above 0"),
                    });
                }
                let alt = match self.shared.autopilot(NAME)? {
                    // PX4 takes the take-off altitude as AMSL, and switches to its Takeoff mode
                    Autopilot::Px4 => {
                        let alt = self.shared.home_msl(NAME).await? + alt_rel_m;
                        self.shared.expect_mode(FlightModeKind::Takeoff);
                        alt
                    }
                    _ => {
                        // ArduCopter takes off only in GUIDED, to an altitude above home
                        self.shared
                            .set_mode("set mode GUIDED", FlightModeKind::Guided)
                            .await?;
                        alt_rel_m
                    }
                };
                self.shared
                    .command(
                        NAME,
                        MavCmd::MAV_CMD_NAV_TAKEOFF,
                        [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, alt as f32],
                    )
                    .await?;
                lock(&self.shared.state).last_goto = None;
                Ok(())
            })
            .await
    }

    async fn goto(&self, target: GeoPoint) -> Result<(), FcError> {
        self.shared
            .motion("MAV_CMD_DO_REPOSITION", self.shared.goto(target))
            .await
    }

    async fn hover_at(&self, alt_rel_m: f64) -> Result<(), FcError> {
        self.shared
            .motion("MAV_CMD_DO_REPOSITION", async {
                let here = self.shared.snapshot.borrow().position;
                let here = here.ok_or(FcError::Failed {
                    command: "MAV_CMD_DO_REPOSITION",
                    reason: Some("position not known yet".into()),
                })?;
                self.shared
                    .goto(GeoPoint::new(here.lat_deg, here.lon_deg, alt_rel_m))
                    .await
            })
            .await
    }

    async fn hold(&self) -> Result<(), FcError> {
        self.shared.motion("hold", self.shared.hold()).await
    }

    async fn resume(&self) -> Result<(), FcError> {
        self.shared
            .motion("resume", async {
                let (paused_mission, last_goto) = {
                    let st = lock(&self.shared.state);
                    (st.paused_mission, st.last_goto)
                };
                if paused_mission {
                    self.shared
                        .set_mode("set mode AUTO", FlightModeKind::Auto)
                        .await?;
                    lock(&self.shared.state).paused_mission = false;
                    Ok(())
                } else if let Some(target) = last_goto {
                    self.shared.goto(target).await
                } else {
                    Err(FcError::Failed {
                        command: "resume",
                        reason: Some("nothing was paused: no mission and no go-to target".into()),
                    })
                }
            })
            .await
    }

    async fn return_to_launch(&self) -> Result<(), FcError> {
        self.shared
            .motion(
                "set mode RTL",
                self.shared
                    .set_mode("set mode RTL", FlightModeKind::ReturnToLaunch),
            )
            .await
    }

    async fn land(&self) -> Result<(), FcError> {
        self.shared
            .motion(
                "set mode LAND",
                self.shared.set_mode("set mode LAND", FlightModeKind::Land),
            )
            .await
    }

    async fn set_gripper(&self, action: GripperAction) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_DO_GRIPPER";
        let autopilot = self.shared.autopilot(NAME)?;
        let confirmations = lock(&self.shared.state).gripper_confirmations;
        // PX4's payload deliverer answers IN_PROGRESS and ACCEPTED once it has moved
        self.shared
            .command(
                NAME,
                MavCmd::MAV_CMD_DO_GRIPPER,
                [1.0, gripper_param(action), 0.0, 0.0, 0.0, 0.0, 0.0],
            )
            .await?;
        if autopilot == Autopilot::Px4 {
            self.shared.update(|s| s.gripper = Some(action));
        } else {
            // ArduPilot ACKs at once ("Gripper load releasing") and reports the gripper done
            // about 0.5 s later ("Gripper load released"): that report is the confirmation
            let timeout = Duration::from_millis(self.shared.cfg.gripper_confirm_timeout_ms);
            let confirmed = self
                .shared
                .wait_for(timeout, |s| {
                    s.gripper == Some(action)
                        && lock(&self.shared.state).gripper_confirmations > confirmations
                })
                .await;
            if confirmed.is_none() {
                return Err(FcError::Failed {
                    command: NAME,
                    reason: Some(format!(
                        "accepted, but the autopilot did not report the gripper {} within {timeout:?}",
                        match action {
                            GripperAction::Release => "released",
                            GripperAction::Grab => "grabbed",
                        }
                    )),
                });
            }
        }
        // the mechanism's own travel after the autopilot says it is done
        tokio::time::sleep(Duration::from_millis(self.shared.cfg.gripper_settle_ms)).await;
        Ok(())
    }

    async fn set_servo(&self, channel: u8, pwm_us: u16) -> Result<(), FcError> {
        if !(1..=16).contains(&channel) || !(500..=2500).contains(&pwm_us) {
            return Err(FcError::InvalidArgument {
                command: "MAV_CMD_DO_SET_SERVO",
                reason: format!("channel {channel} must be 1..=16 and {pwm_us} µs 500..=2500"),
            });
        }
        match self.shared.autopilot("MAV_CMD_DO_SET_SERVO")? {
            Autopilot::Px4 => {
                // PX4 drives peripherals through actuator sets: an output configured as
                // "Peripheral via Actuator Set N" on AUX N (output 8 + N)
                const NAME: &str = "MAV_CMD_DO_SET_ACTUATOR";
                let set = channel
                    .checked_sub(8)
                    .filter(|s| (1..=6).contains(s))
                    .ok_or(FcError::Unsupported {
                        command: NAME,
                        reason: Some(format!(
                            "on PX4 use outputs 9..=14 (actuator sets 1..=6), not {channel}"
                        )),
                    })?;
                let mut p = [f32::NAN; 7];
                p[usize::from(set - 1)] = ((f32::from(pwm_us) - 1500.0) / 500.0).clamp(-1.0, 1.0);
                p[6] = 0.0;
                self.shared
                    .command(NAME, MavCmd::MAV_CMD_DO_SET_ACTUATOR, p)
                    .await
            }
            _ => {
                self.shared
                    .command(
                        "MAV_CMD_DO_SET_SERVO",
                        MavCmd::MAV_CMD_DO_SET_SERVO,
                        [
                            f32::from(channel),
                            f32::from(pwm_us),
                            0.0,
                            0.0,
                            0.0,
                            0.0,
                            0.0,
                        ],
                    )
                    .await
            }
        }
    }

    async fn send_landing_target(&self, t: LandingTarget) -> Result<(), FcError> {
        const NAME: &str = "LANDING_TARGET";
        if self.shared.target().is_none() {
            return Err(FcError::LinkLost { command: NAME });
        }
        let time_usec = t
            .captured_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let msg = MavMessage::LANDING_TARGET(apm::LANDING_TARGET_DATA {
            time_usec,
            angle_x: t.angle_x_rad,
            angle_y: t.angle_y_rad,
            distance: t.distance_m.unwrap_or(0.0),
            size_x: t.size_x_rad,
            size_y: t.size_y_rad,
            target_num: t.target_num,
            frame: apm::MavFrame::MAV_FRAME_BODY_FRD,
            ..Default::default()
        });
        self.shared.send(NAME, &msg).await
    }

    async fn upload_mission(&self, items: &[MissionItem]) -> Result<(), FcError> {
        self.shared.upload_mission(items).await
    }

    async fn clear_mission(&self) -> Result<(), FcError> {
        self.shared.clear_mission().await
    }

    async fn start_mission(&self) -> Result<(), FcError> {
        self.shared
            .motion("MAV_CMD_MISSION_START", self.start_mission_now())
            .await
    }

    fn autopilot_messages(&self) -> broadcast::Receiver<AutopilotMessage> {
        self.shared.messages.subscribe()
    }
}

impl MavlinkFc {
    async fn start_mission_now(&self) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_MISSION_START";
        let (count, offset) = {
            let n = self.shared.snapshot.borrow().mission.count;
            (n, lock(&self.shared.state).mission_offset)
        };
        let count = match count {
            Some(n) if n > 0 => n,
            _ => {
                return Err(FcError::Failed {
                    command: NAME,
                    reason: Some("no mission uploaded through this link".into()),
                })
            }
        };
        self.shared.expect_mode(FlightModeKind::Auto);
        self.shared
            .command(
                NAME,
                MavCmd::MAV_CMD_MISSION_START,
                [
                    f32::from(offset),
                    f32::from(offset + count - 1),
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                ],
            )
            .await?;
        let autopilot = self.shared.autopilot(NAME)?;
        match self
            .shared
            .wait_for(self.shared.cfg.mode_change_timeout(), |s| {
                modes::satisfies(autopilot, s.mode.kind, FlightModeKind::Auto)
            })
            .await
        {
            Some(_) => {
                lock(&self.shared.state).paused_mission = false;
                Ok(())
            }
            None => Err(FcError::Failed {
                command: NAME,
                reason: Some("accepted, but the autopilot is not in mission mode".into()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::BatteryFaultAction;

    #[test]
    fn battery_fault_bits_are_named_and_judged() {
        use apm::MavBatteryFault as B;
        let bits = B::MAV_BATTERY_FAULT_OVER_TEMPERATURE | B::MAV_BATTERY_FAULT_SPIKES;
        let snap = FcSnapshot {
            battery_faults: battery_faults(bits),
            ..FcSnapshot::initial()
        };
        assert_eq!(snap.battery_faults, ["spikes", "over_temperature"]);
        assert_eq!(
            snap.battery_fault_action(),
            Some((BatteryFaultAction::LandNow, vec!["over_temperature"]))
        );
        let snap = FcSnapshot {
            battery_faults: battery_faults(B::MAV_BATTERY_FAULT_UNDER_TEMPERATURE),
            ..FcSnapshot::initial()
        };
        assert_eq!(
            snap.battery_fault_action(),
            Some((BatteryFaultAction::ReturnHome, vec!["under_temperature"]))
        );
        assert!(battery_faults(B::empty()).is_empty());
        assert_eq!(FcSnapshot::initial().battery_fault_action(), None);
        // every bit the hal knows has a name, and each name a judgement
        let all = battery_faults(B::all());
        assert_eq!(all.len(), BATTERY_FAULTS.len());
        let land: Vec<&str> = all
            .iter()
            .copied()
            .filter(|f| BatteryFaultAction::of(f) == BatteryFaultAction::LandNow)
            .collect();
        assert_eq!(
            land,
            [
                "deep_discharge",
                "cell_fail",
                "over_current",
                "over_temperature"
            ]
        );
    }
}
