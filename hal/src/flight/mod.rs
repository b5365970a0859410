//! The flight controller: what the drone agent asks of an autopilot, and what it sees of it.
//!
//! The agent is written against [`FlightController`]; [`mavlink::MavlinkFc`] implements it over a real
//! MAVLink link (PX4 or ArduPilot, real or SITL, or the SkyPost `sim vehicle`). Every operation returns
//! once the autopilot has *confirmed* it (a `COMMAND_ACK`, a mode change seen in `HEARTBEAT`, a
//! `MISSION_ACK`) or with a typed [`FcError`] naming the command; progress (altitude, position, landed
//! state) is watched through [`FlightController::snapshot`].
//!
//! Module map:
//! - this file: the trait and its data types (the contract with the agent);
//! - [`connection`]: connection strings (`udpin:`, `udpout:`, `tcpin:`, `tcpout:`, `serial:`);
//! - [`config`]: the link's TOML config (timeouts, retries, telemetry rates);
//! - [`modes`]: PX4 and ArduCopter flight-mode encodings ↔ [`FlightModeKind`];
//! - [`mavlink`]: the MAVLink implementation (supervised link, command and mission protocols).
//!
//! # What the agent is told, and what it is not asked to judge
//! The snapshot carries the autopilot's own judgements next to the raw values: its position
//! estimate (`position_estimate`), the flight-needed sensors it reports failing
//! (`health_failures`; not the RC receiver, which PX4 without a transmitter marks unhealthy while
//! flying its autonomous modes), its battery verdicts (`battery_charge_state`, `battery_faults`,
//! `battery_failsafe`), and any mode change it made by itself (`autopilot_mode_change`, with its
//! words as the reason). Everything it says arrives on [`FlightController::autopilot_messages`].
//!
//! # Making the autopilot act when the companion dies
//! The agent cannot fly the vehicle home once it is dead: the autopilot has to notice and act. What
//! each autopilot counts, and the parameters that attach an action to losing us:
//!
//! **ArduPilot (Copter 4.x)**: its GCS failsafe watches HEARTBEATs from the system id in
//! `SYSID_MYGCS` (4.7: `MAV_GCS_SYSID`), whatever their `MAV_TYPE`. Set it to our `system_id`,
//! `FS_GCS_ENABLE = 1` (RTL; 5 = SmartRTL or land, see ArduPilot's docs for the others) and
//! `FS_GCS_TIMEOUT` (seconds, default 5). The failsafe only acts once it has seen that system's
//! HEARTBEAT, in flight, and announces itself with a STATUSTEXT; the mode change then arrives here
//! as an autopilot-initiated change. Caution: with `SYSID_MYGCS` = ours a ground station with
//! another id no longer keeps the failsafe quiet, and RC overrides are taken only from that id.
//!
//! **PX4 (1.14 to 1.16)**: a `MAV_TYPE_ONBOARD_CONTROLLER` HEARTBEAT (our default) is a "mission
//! computer": after `COM_OBC_LOSS_T` seconds without it PX4 says "Connection to mission computer
//! lost" and does nothing else. `COM_OBL_RC_ACT` / `COM_OF_LOSS_T` act only on losing Offboard
//! setpoints, and the agent flies Hold/Mission, never Offboard. To have PX4 act, set
//! `heartbeat_type = "gcs"` ([`HeartbeatType::Gcs`]): PX4 then counts us as its data link, and
//! `NAV_DLL_ACT` (2 = Return, 3 = Land) acts `COM_DL_LOSS_T` seconds after our last HEARTBEAT.
//! Side effect: with `NAV_DLL_ACT` > 0 PX4 refuses to arm without a data link ("No connection to
//! the ground control station", event `check_rc_dl_no_dllink`), which we then provide; a real
//! ground station on another link also counts as the data link, so the failsafe only fires when
//! every ground link is gone.
//!
//! The SkyPost sim honours the PX4 one (`NAV_DLL_ACT` with a GCS-typed HEARTBEAT; see
//! `sim::vehicle`) and the ArduPilot one (`FS_GCS_ENABLE` with `SYSID_MYGCS`).

pub mod config;
pub mod connection;
pub mod fence;
pub mod mavlink;
pub mod modes;
pub mod router;
pub mod tlog;

use protocol::geo::LatLon;
use std::future::Future;
use std::time::{Duration, SystemTime};

pub use config::{FcLinkConfig, HeartbeatType, TelemetryRates};
pub use connection::{ConnectionString, ConnectionStringError};
pub use fence::{Fence, FenceAction, FenceBreachKind, FenceStatus, FenceZone};

/// A WGS-84 point with an altitude relative to home (the take-off point), as the agent plans flights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat_deg: f64,
    pub lon_deg: f64,
    /// Metres above home.
    pub alt_rel_m: f64,
}

impl GeoPoint {
    pub fn new(lat_deg: f64, lon_deg: f64, alt_rel_m: f64) -> Self {
        Self {
            lat_deg,
            lon_deg,
            alt_rel_m,
        }
    }

    /// Latitude and longitude, for [`protocol::geo`]'s offsets and distances.
    pub fn lat_lon(&self) -> LatLon {
        LatLon::new(self.lat_deg, self.lon_deg)
    }
}

/// Where the vehicle (or home) is: WGS-84 with both altitudes the autopilot reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalPosition {
    pub lat_deg: f64,
    pub lon_deg: f64,
    /// Metres above mean sea level.
    pub alt_msl_m: f64,
    /// Metres above home.
    pub alt_rel_m: f64,
}

impl GlobalPosition {
    /// Great-circle distance in metres to another point (haversine; altitude ignored).
    pub fn distance_m(&self, lat_deg: f64, lon_deg: f64) -> f64 {
        self.lat_lon().distance_m(LatLon::new(lat_deg, lon_deg))
    }

    /// Latitude and longitude, for [`protocol::geo`]'s offsets and distances.
    pub fn lat_lon(&self) -> LatLon {
        LatLon::new(self.lat_deg, self.lon_deg)
    }
}

/// The state of the MAVLink link to the autopilot, judged by its HEARTBEATs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No HEARTBEAT from an autopilot yet since start.
    NeverConnected,
    /// HEARTBEATs arrive within the configured timeout.
    Connected { since: SystemTime },
    /// No HEARTBEAT for longer than the configured timeout; the link is being reopened.
    Lost {
        /// When the loss was declared.
        since: SystemTime,
        /// When the last HEARTBEAT arrived (`since` itself if none ever did on this link).
        last_heartbeat: SystemTime,
    },
}

impl LinkState {
    pub fn is_connected(&self) -> bool {
        matches!(self, LinkState::Connected { .. })
    }
}

/// Which autopilot firmware is on the other end (from HEARTBEAT `autopilot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autopilot {
    /// Not known yet (no HEARTBEAT seen).
    Unknown,
    Px4,
    ArduPilot,
    /// Another `MAV_AUTOPILOT` value, kept raw.
    Other(u8),
}

/// GPS fix quality (`GPS_FIX_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GpsFixType {
    /// No GPS data received yet.
    Unknown,
    NoGps,
    NoFix,
    Fix2d,
    Fix3d,
    Dgps,
    RtkFloat,
    RtkFixed,
}

impl GpsFixType {
    /// A fix good enough to fly a delivery (3D or better).
    pub fn is_3d(&self) -> bool {
        *self >= GpsFixType::Fix3d
    }
}

/// What a flight mode means, whichever autopilot encoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlightModeKind {
    Manual,
    Stabilized,
    Acro,
    AltitudeHold,
    PositionHold,
    /// Companion-computer control: ArduPilot GUIDED; on PX4 the vehicle is in Hold/Loiter between
    /// `DO_REPOSITION`s, so PX4 reports [`FlightModeKind::Hold`] for guided flight.
    Guided,
    /// PX4 Offboard.
    Offboard,
    /// Hold position (PX4 Hold/Loiter, ArduPilot LOITER/BRAKE).
    Hold,
    /// Mission.
    Auto,
    Takeoff,
    Land,
    ReturnToLaunch,
    /// Known to the autopilot but not one the agent uses (for example ArduPilot FLIP).
    Other,
    /// Nothing decoded yet.
    Unknown,
}

/// A flight mode: the meaning, plus the autopilot's own name for logs and the technician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightMode {
    pub kind: FlightModeKind,
    /// The autopilot's own name, e.g. `GUIDED`, `AUTO.LOITER`, or `custom(0x1234)` if not decoded.
    pub raw: String,
}

impl FlightMode {
    pub fn unknown() -> Self {
        Self {
            kind: FlightModeKind::Unknown,
            raw: String::from("unknown"),
        }
    }
}

/// `MAV_LANDED_STATE`, or what HEARTBEAT/altitude imply when the autopilot does not send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandedState {
    Unknown,
    OnGround,
    InAir,
    TakingOff,
    Landing,
}

/// Mission progress, in the agent's own item numbering (0 = the first item the agent uploaded,
/// whatever the autopilot's numbering: ArduPilot's home item 0 is hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MissionProgress {
    /// Items on the autopilot that this link uploaded (None: unknown).
    pub count: Option<u16>,
    /// The item the autopilot is flying to (`MISSION_CURRENT`).
    pub current: Option<u16>,
    /// The last item reached (`MISSION_ITEM_REACHED`).
    pub last_reached: Option<u16>,
}

/// A coherent, timestamped view of the vehicle. Each field is the latest the autopilot reported;
/// `None` means "not reported yet" (never a made-up zero).
#[derive(Debug, Clone, PartialEq)]
pub struct FcSnapshot {
    /// When this snapshot was assembled (wall clock).
    pub at: SystemTime,
    pub link: LinkState,
    pub autopilot: Autopilot,
    /// The autopilot's MAVLink system and component ids, once seen.
    pub target: Option<(u8, u8)>,
    pub position: Option<GlobalPosition>,
    /// North, east, down, metres per second.
    pub velocity_ned_mps: Option<[f64; 3]>,
    /// 0..360, degrees from true north.
    pub heading_deg: Option<f64>,
    /// 0..100.
    pub battery_percent: Option<f64>,
    pub battery_voltage: Option<f64>,
    pub gps_fix: GpsFixType,
    pub satellites: Option<u8>,
    pub armed: bool,
    pub mode: FlightMode,
    pub landed: LandedState,
    pub home: Option<GlobalPosition>,
    /// The autopilot's sensors report no failures (`SYS_STATUS` health bits of every enabled sensor).
    pub healthy: bool,
    pub mission: MissionProgress,
    /// Servo output channels 1..=16 in microseconds (`SERVO_OUTPUT_RAW`), index 0 = channel 1.
    pub servo_outputs_us: Option<[u16; 16]>,
    /// The last thing the autopilot said (STATUSTEXT, or a PX4 event's text), e.g. an arming
    /// refusal reason.
    pub last_status_text: Option<String>,
    /// The autopilot's own horizontal position estimate is usable (ArduPilot `EKF_STATUS_REPORT`,
    /// PX4 `ESTIMATOR_STATUS`: absolute horizontal position, not in constant-position mode, not
    /// uninitialised). A GPS fix and home come seconds before it on ArduPilot. `None`: the
    /// autopilot has not reported its estimator.
    pub position_estimate: Option<bool>,
    /// The flight-needed sensors `SYS_STATUS` reports enabled but unhealthy (`gyro`, `accel`,
    /// `mag`, `baro`, `gps`, `ahrs`, `battery`, `motors`); `healthy` is this being empty. The RC
    /// receiver and the pre-arm bit are not flight needs for a companion-flown vehicle.
    pub health_failures: Vec<&'static str>,
    /// HEARTBEAT `system_status` is CRITICAL or EMERGENCY (ArduPilot sets it in a failsafe).
    pub critical: bool,
    /// `BATTERY_STATUS.charge_state`.
    pub battery_charge_state: Option<BatteryChargeState>,
    /// `BATTERY_STATUS.fault_bitmask`, by name (`deep_discharge`, `over_temperature`, ...).
    pub battery_faults: Vec<&'static str>,
    /// Per-cell voltages, when the autopilot reports cells (two or more); empty otherwise.
    pub battery_cells_v: Vec<f64>,
    /// The autopilot's own battery failsafe announcement (e.g. `Battery Failsafe`), once made;
    /// kept until the vehicle is disarmed with the battery reported healthy again.
    pub battery_failsafe: Option<String>,
    /// The latest mode change this link did not ask for (a failsafe, a fence, an RC pilot).
    pub autopilot_mode_change: Option<AutopilotModeChange>,
    /// The gripper position the autopilot last confirmed (ArduPilot: its `Gripper load
    /// released`/`grabbed` report; PX4: the final ACCEPTED of a `MAV_CMD_DO_GRIPPER` from us).
    pub gripper: Option<GripperAction>,
    /// The autopilot's last `FENCE_STATUS` (ArduPilot), if it sent one.
    pub fence: Option<FenceStatus>,
    /// What the energy estimate needs (issue 12): the autopilot's own clock (`time_boot_ms` of
    /// GLOBAL_POSITION_INT, seconds), so rates are per second of flight whatever the link's
    /// delays; VFR_HUD's airspeed and ground speed, m/s; ArduPilot's WIND estimate as the air's
    /// velocity north and east (moving *to*), m/s; BATTERY_STATUS's current, A.
    pub fc_time_s: Option<f64>,
    pub airspeed_mps: Option<f64>,
    pub groundspeed_mps: Option<f64>,
    pub wind_ne_mps: Option<(f64, f64)>,
    pub battery_current_a: Option<f64>,
}

impl FcSnapshot {
    /// The most urgent action the reported battery faults ask for, with the faults that ask it.
    pub fn battery_fault_action(&self) -> Option<(BatteryFaultAction, Vec<&'static str>)> {
        let action = self
            .battery_faults
            .iter()
            .map(|f| BatteryFaultAction::of(f))
            .max()?;
        let faults = self
            .battery_faults
            .iter()
            .copied()
            .filter(|f| BatteryFaultAction::of(f) == action)
            .collect();
        Some((action, faults))
    }

    /// The snapshot before anything is heard from the autopilot.
    pub fn initial() -> Self {
        Self {
            at: SystemTime::now(),
            link: LinkState::NeverConnected,
            autopilot: Autopilot::Unknown,
            target: None,
            position: None,
            velocity_ned_mps: None,
            heading_deg: None,
            battery_percent: None,
            battery_voltage: None,
            gps_fix: GpsFixType::Unknown,
            satellites: None,
            armed: false,
            mode: FlightMode::unknown(),
            landed: LandedState::Unknown,
            home: None,
            healthy: false,
            mission: MissionProgress::default(),
            servo_outputs_us: None,
            last_status_text: None,
            position_estimate: None,
            health_failures: Vec::new(),
            critical: false,
            battery_charge_state: None,
            battery_faults: Vec::new(),
            battery_cells_v: Vec::new(),
            battery_failsafe: None,
            autopilot_mode_change: None,
            gripper: None,
            fence: None,
            fc_time_s: None,
            airspeed_mps: None,
            groundspeed_mps: None,
            wind_ne_mps: None,
            battery_current_a: None,
        }
    }

    /// The lowest cell voltage: from the per-cell report if there is one, else the pack voltage
    /// shared over `cells` (the pack's cell count from config).
    pub fn cell_voltage(&self, cells: u8) -> Option<f64> {
        if let Some(min) = self.battery_cells_v.iter().copied().reduce(f64::min) {
            return Some(min);
        }
        if cells == 0 {
            return None;
        }
        self.battery_voltage.map(|v| v / f64::from(cells))
    }
}

/// The autopilot's own log of a flight, downloaded (`MavlinkFc::download_newest_log`).
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadedLog {
    pub path: std::path::PathBuf,
    /// The autopilot's id for it.
    pub id: u16,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Request rounds it took (1: nothing was lost).
    pub rounds: u32,
}

/// Why the autopilot's log was not downloaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogFetchError {
    #[error("the vehicle is armed: logs are fetched only on the ground, disarmed")]
    Armed,
    #[error("no link to the autopilot")]
    Link,
    #[error("the autopilot has no logs")]
    NoLogs,
    #[error("the autopilot did not answer the log list")]
    NoAnswer,
    #[error("{missing_bytes} bytes still missing after {rounds} request rounds")]
    Incomplete { missing_bytes: u64, rounds: u32 },
    #[error("cannot write the log: {0}")]
    Write(String),
}

/// A mode change the autopilot made without this link asking for it.
#[derive(Debug, Clone, PartialEq)]
pub struct AutopilotModeChange {
    /// 1, 2, ... for each such change since the link was started: a watcher sees each one once.
    pub seq: u32,
    pub from: FlightMode,
    pub to: FlightMode,
    /// The autopilot's words: its warning-or-worse messages from 2 s before to 2 s after the
    /// change, joined with `; ` (ArduPilot sends the HEARTBEAT with the new mode *before* its
    /// `Battery Failsafe` text, so this may be filled in shortly after the change appears).
    pub reason: Option<String>,
    pub at: SystemTime,
}

/// `MAV_SEVERITY` (lower is worse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    /// From the 0..=7 MAVLink/syslog number (anything above 7 is Debug).
    pub fn from_level(level: u8) -> Severity {
        match level {
            0 => Severity::Emergency,
            1 => Severity::Alert,
            2 => Severity::Critical,
            3 => Severity::Error,
            4 => Severity::Warning,
            5 => Severity::Notice,
            6 => Severity::Info,
            _ => Severity::Debug,
        }
    }

    pub fn is_warning_or_worse(self) -> bool {
        self <= Severity::Warning
    }
}

/// Something the autopilot said: a `STATUSTEXT`, or a PX4 event (MAVLink events protocol; PX4
/// 1.16 reports most refusals and failsafes only that way).
#[derive(Debug, Clone, PartialEq)]
pub struct AutopilotMessage {
    pub at: SystemTime,
    pub severity: Severity,
    /// The text; for a PX4 event `PX4 event <name or id> [args]` (see `mavlink` module docs for
    /// what is decoded).
    pub text: String,
    /// The PX4 event id, for events.
    pub px4_event: Option<u32>,
}

/// What a battery fault the autopilot reports (`BATTERY_STATUS.fault_bitmask`) asks of a
/// flying drone. The choice:
/// - land now: `deep_discharge`, `cell_fail`, `over_current`, `over_temperature` — the pack may
///   quit or catch fire within minutes; the shortest time in the air wins over reaching home;
/// - return home: `spikes`, `under_temperature`, `incompatible_voltage`, `incompatible_firmware`,
///   `incompatible_cells` and any fault this hal does not know — the pack still delivers power,
///   but its remaining capacity is no longer to be trusted for a delivery.
///
/// Any fault fails the pre-flight battery check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BatteryFaultAction {
    ReturnHome,
    LandNow,
}

impl BatteryFaultAction {
    /// The action one fault (by its `FcSnapshot::battery_faults` name) asks for.
    pub fn of(fault: &str) -> Self {
        match fault {
            "deep_discharge" | "cell_fail" | "over_current" | "over_temperature" => Self::LandNow,
            _ => Self::ReturnHome,
        }
    }
}

/// `MAV_BATTERY_CHARGE_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatteryChargeState {
    Undefined,
    Ok,
    Low,
    Critical,
    Emergency,
    Failed,
    Unhealthy,
    Charging,
}

impl BatteryChargeState {
    /// Low or worse: the autopilot itself says the pack should not fly on.
    pub fn is_low_or_worse(self) -> bool {
        matches!(
            self,
            BatteryChargeState::Low
                | BatteryChargeState::Critical
                | BatteryChargeState::Emergency
                | BatteryChargeState::Failed
                | BatteryChargeState::Unhealthy
        )
    }
}

/// The result of [`FlightController::preflight_check`]: each check, passed or failed with a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct PreflightReport {
    pub checks: Vec<PreflightCheck>,
}

impl PreflightReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks, for the rejection reason the agent reports.
    pub fn failures(&self) -> impl Iterator<Item = &PreflightCheck> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreflightCheck {
    /// Short stable name: `link`, `gps`, `battery`, `health`, `armable`, `home`.
    pub name: &'static str,
    pub passed: bool,
    /// What was seen, e.g. `3D fix, 12 satellites` or `battery 18% below 30%`.
    pub detail: String,
}

/// What the gripper should do (`MAV_CMD_DO_GRIPPER` param 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GripperAction {
    Release,
    Grab,
}

/// A precision-landing target seen by the companion computer's camera (`LANDING_TARGET`, body-frame
/// angles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LandingTarget {
    /// Marker id (ArUco id), sent as `target_num`.
    pub target_num: u8,
    /// Angular offset of the target from the image centre, radians (x right, y down).
    pub angle_x_rad: f32,
    pub angle_y_rad: f32,
    /// Distance to the target, metres, if known.
    pub distance_m: Option<f32>,
    /// Angular size of the target, radians.
    pub size_x_rad: f32,
    pub size_y_rad: f32,
    /// When the frame was captured.
    pub captured_at: SystemTime,
}

/// One mission step, in the agent's terms (the MAVLink implementation encodes it as
/// `MISSION_ITEM_INT` with global-relative-altitude frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MissionItem {
    /// Take off to this altitude above home, where the vehicle stands.
    Takeoff { alt_rel_m: f64 },
    /// Fly to a point; hover `hold_s` seconds there.
    Waypoint { point: GeoPoint, hold_s: f32 },
    /// Land at a point.
    Land { point: GeoPoint },
    /// Release or grab the gripper.
    Gripper(GripperAction),
    /// Return to launch (and land there).
    ReturnToLaunch,
}

/// Why a flight-controller operation did not succeed. Every variant names the command
/// (`MAV_CMD_*` name, mode change, or mission step) so the agent can report it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FcError {
    /// No HEARTBEAT from the autopilot within the timeout (or never yet): nothing was sent.
    #[error("{command}: flight-controller link lost")]
    LinkLost { command: &'static str },
    /// The autopilot never answered after all resends.
    #[error("{command}: no answer after {attempts} attempt(s) over {after:?}")]
    Timeout {
        command: &'static str,
        attempts: u32,
        after: Duration,
    },
    /// `MAV_RESULT_TEMPORARILY_REJECTED`: may work if retried later (e.g. EKF not ready).
    #[error("{command}: temporarily rejected by the autopilot{}", reason_suffix(.reason))]
    TemporarilyRejected {
        command: &'static str,
        reason: Option<String>,
    },
    /// `MAV_RESULT_DENIED`: final refusal (e.g. arming checks failed).
    #[error("{command}: denied by the autopilot{}", reason_suffix(.reason))]
    Denied {
        command: &'static str,
        reason: Option<String>,
    },
    /// `MAV_RESULT_UNSUPPORTED`, or the autopilot cannot do it at all (no such mode).
    #[error("{command}: not supported by this autopilot{}", reason_suffix(.reason))]
    Unsupported {
        command: &'static str,
        reason: Option<String>,
    },
    /// `MAV_RESULT_FAILED` or another failure result; or the vehicle did not reach the state the
    /// command should have produced.
    #[error("{command}: failed{}", reason_suffix(.reason))]
    Failed {
        command: &'static str,
        reason: Option<String>,
    },
    /// The arguments cannot be sent (e.g. latitude out of range); nothing was sent.
    #[error("{command}: invalid argument: {reason}")]
    InvalidArgument {
        command: &'static str,
        reason: String,
    },
    /// The mission protocol failed at a step (`MISSION_ACK` error or retries exhausted).
    #[error("mission {step}: {reason}")]
    Mission { step: &'static str, reason: String },
    /// The operation was abandoned because the controller is shutting down or a newer command of
    /// the same kind superseded it.
    #[error("{command}: cancelled")]
    Cancelled { command: &'static str },
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!(": {r}"),
        None => String::new(),
    }
}

impl FcError {
    /// True when trying the same operation again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FcError::LinkLost { .. }
                | FcError::Timeout { .. }
                | FcError::TemporarilyRejected { .. }
        )
    }
}

/// A flight controller, as the drone agent uses it.
///
/// Implementations are cheap to share (`Arc`) and every method takes `&self`: the agent's tasks
/// (state machine effects, telemetry, the technician socket) call it concurrently. Each future
/// resolves when the autopilot confirmed the request (see the module docs), never just "sent".
pub trait FlightController: Send + Sync + 'static {
    /// The latest snapshot, and every later one; any number of watchers.
    fn snapshot(&self) -> tokio::sync::watch::Receiver<FcSnapshot>;

    /// Link up, autopilot known, GPS 3D fix, home set, battery above `min_battery_percent`, sensors
    /// healthy, not already armed. Never fails for a failed check: the report says which failed.
    fn preflight_check(
        &self,
        min_battery_percent: f64,
    ) -> impl Future<Output = Result<PreflightReport, FcError>> + Send;

    /// Arm the motors (`MAV_CMD_COMPONENT_ARM_DISARM`); resolves when the autopilot accepted.
    fn arm(&self) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Disarm (not forced: the autopilot refuses in flight).
    fn disarm(&self) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Take off to `alt_rel_m` above home (switches ArduPilot to GUIDED first). Resolves when the
    /// autopilot accepted; watch the snapshot for the climb.
    fn takeoff(&self, alt_rel_m: f64) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Fly to a point under companion control: `MAV_CMD_DO_REPOSITION` as COMMAND_INT (ArduPilot:
    /// in GUIDED, altitude above home; PX4: from Hold, altitude AMSL). Resolves when accepted, not
    /// when arrived.
    fn goto(&self, target: GeoPoint) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Change altitude above home over the current position and hover there (precise descent to
    /// drop height over the locker).
    fn hover_at(&self, alt_rel_m: f64) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Stop and hold position (pause).
    fn hold(&self) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Return to launch; the autopilot lands and disarms there by itself.
    fn return_to_launch(&self) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Land where the vehicle is.
    fn land(&self) -> impl Future<Output = Result<(), FcError>> + Send;

    /// `MAV_CMD_DO_GRIPPER` on gripper 1; resolves on the final ACCEPTED (PX4 answers IN_PROGRESS
    /// first).
    fn set_gripper(
        &self,
        action: GripperAction,
    ) -> impl Future<Output = Result<(), FcError>> + Send;

    /// `MAV_CMD_DO_SET_SERVO` (channel 1..=16, pulse width in µs).
    fn set_servo(
        &self,
        channel: u8,
        pwm_us: u16,
    ) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Send a `LANDING_TARGET` (fire and forget: the protocol has no acknowledgement; fails only if
    /// the link is down).
    fn send_landing_target(
        &self,
        target: LandingTarget,
    ) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Everything the autopilot says from now on (STATUSTEXT, PX4 events), in order. A receiver
    /// that falls more than 64 messages behind loses the oldest (`RecvError::Lagged`). The default
    /// is a closed channel, for controllers that have no such messages.
    fn autopilot_messages(&self) -> tokio::sync::broadcast::Receiver<AutopilotMessage> {
        tokio::sync::broadcast::channel(1).1
    }

    /// Store `fence` in the autopilot (mission protocol, `MAV_MISSION_TYPE_FENCE`), read it back
    /// and compare, set the autopilot's fence parameters and enable it: the autopilot enforces it
    /// even if this computer dies. The default refuses: a controller without fence storage must
    /// not look as if it had one.
    fn set_fence(&self, fence: &Fence) -> impl Future<Output = Result<(), FcError>> + Send {
        let _ = fence;
        async {
            Err(FcError::Unsupported {
                command: "fence upload",
                reason: Some("this flight controller stores no fence".into()),
            })
        }
    }
}

/// What the MAVLink flight controller can do beyond what the agents ask of a
/// [`FlightController`]: continue a paused mission or leg, and the mission protocol. No agent
/// calls these (the agents fly guided legs); the hal's own tests and the sim's do.
pub trait MissionControl: FlightController {
    /// Continue what `hold` paused: the mission if one was running, else the last `goto`.
    fn resume(&self) -> impl Future<Output = Result<(), FcError>> + Send;
    /// Replace the autopilot's mission with `items` (mission protocol with per-step retries).
    fn upload_mission(
        &self,
        items: &[MissionItem],
    ) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Remove the autopilot's mission (`MISSION_CLEAR_ALL`).
    fn clear_mission(&self) -> impl Future<Output = Result<(), FcError>> + Send;

    /// Start the uploaded mission from its first item (arms nothing: arm first).
    fn start_mission(&self) -> impl Future<Output = Result<(), FcError>> + Send;
}
