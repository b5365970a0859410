//! What goes into the machine ([`Event`]) and what comes out ([`Effect`], [`Outcome`]), and the
//! numbers it decides with ([`Limits`]).

use protocol::ws::{CommandKind, DroneState, EventType};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// A config type the machine decides with (`[restart] unknown_airborne`).
pub use crate::config::UnknownAirborne;

/// The delivery being flown (from the cloud's `task`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: Uuid,
    pub lat: f64,
    pub lon: f64,
    pub aruco_id: u32,
    pub priority: protocol::ws::Priority,
}

/// Timers the machine asks the runtime to run; each fires [`Event::TimerFired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// WAITING_DROP: how long to wait for `drop_cargo`.
    DropWait,
    /// DROPPED: fly home by itself after this long without `return_to_base`.
    AutoReturn,
    /// NAVIGATING/Approaching: the marker or the drop height must be reached within this.
    Approach,
    /// GPS lost in the air: land if it has not come back by then.
    GpsLoss,
    /// The cloud link has been down this long (it matters only while waiting for the drop).
    CloudLoss,
    /// The autopilot refused the last flight operation: ask again when this fires.
    FlightRetry,
    /// AUTOPILOT_CONTROL: take control back by this config's time (if set).
    TakeBack,
}

/// A flight operation the machine asks for; the runtime runs one at a time (a new one
/// supersedes the one in progress), and its refusal comes back as [`Event::FlightOpFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Fly {
    /// Arm and take off to this altitude above home (the autopilot's flight mode first).
    Takeoff { alt_m: f64 },
    /// Fly to a point at an altitude above home.
    Goto { lat: f64, lon: f64, alt_m: f64 },
    /// Climb or descend to this altitude over **the current position** and hover there.
    HoverAt { alt_m: f64 },
    /// Stop and hold position (never a stick-dependent mode).
    Hold,
    /// Return to launch: the autopilot flies home, lands and disarms.
    ReturnHome,
    /// Land where the drone is.
    LandNow,
}

/// Which flight operation, without its arguments (what a refusal names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FlightOp {
    Takeoff,
    Goto,
    HoverAt,
    Hold,
    ReturnHome,
    LandNow,
}

impl Fly {
    pub fn op(&self) -> FlightOp {
        match self {
            Fly::Takeoff { .. } => FlightOp::Takeoff,
            Fly::Goto { .. } => FlightOp::Goto,
            Fly::HoverAt { .. } => FlightOp::HoverAt,
            Fly::Hold => FlightOp::Hold,
            Fly::ReturnHome => FlightOp::ReturnHome,
            Fly::LandNow => FlightOp::LandNow,
        }
    }
}

impl FlightOp {
    pub fn name(&self) -> &'static str {
        match self {
            FlightOp::Takeoff => "take-off",
            FlightOp::Goto => "goto",
            FlightOp::HoverAt => "hover",
            FlightOp::Hold => "hold",
            FlightOp::ReturnHome => "return to launch",
            FlightOp::LandNow => "land",
        }
    }
}

/// What the vehicle is doing, as the autopilot reports it (after a restart, or when its link
/// comes back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vehicle {
    Airborne,
    /// On the ground and disarmed; `at_home` within the home radius (see [`landed`]).
    OnGround {
        at_home: bool,
    },
    /// No answer from the autopilot.
    Unreachable,
}

/// What the payload release reports now (read after a restart mid-release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadReading {
    Released,
    Closed,
    Unknown,
}

/// One camera frame's markers, for the precision approach.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Seconds on the runtime's clock when the frame was captured.
    pub now_s: f64,
    pub markers: Vec<hal::marker::MarkerDetection>,
    /// Where the drone was at capture, as the autopilot said.
    pub pose: crate::precision::Pose,
}

/// What happened, as the machine needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The cloud sent a delivery (`task_assigned`).
    Task(Delivery),
    PreflightPassed,
    PreflightFailed(String),
    /// During the take-off: the vehicle is armed and in the air (`took_off`).
    LeftGround,
    /// Reached cruise altitude.
    ClimbComplete,
    /// Over the destination at cruise altitude.
    OverDestination,
    /// Hovering at drop height, centred over the locker (`arrived`).
    AtDropHeight,
    /// One camera frame during the precision approach: the markers seen and where the drone
    /// was (the machine's approach decides: steer, centred, or failed).
    CameraFrame(Frame),
    /// The approach's clock, also when no frame arrives (a dead camera must still end it).
    ApproachTick {
        now_s: f64,
    },
    /// The camera worker says the camera has failed (why), or works again.
    CameraFault(String),
    CameraRestored,
    /// A command from the cloud.
    Command(CommandKind),
    ReleaseDone,
    ReleaseFailed(String),
    /// The payload's state as read after a restart mid-release.
    PayloadRead(PayloadReading),
    TimerFired(Timer),
    /// On the ground, disarmed, within the home radius.
    LandedAtHome,
    /// On the ground, disarmed, away from home.
    LandedAway,
    BatteryLow(String),
    BatteryCritical(String),
    GpsLost,
    GpsRestored,
    FcLinkLost,
    /// The autopilot answers again.
    FcLinkRestored(Vehicle),
    /// The cloud link went down / came back (the machine times the outage itself).
    CloudDown,
    CloudUp,
    /// The autopilot changed mode by itself (failsafe, fence, RC pilot): its mode and words.
    AutopilotTookOver {
        mode: String,
        reason: String,
    },
    /// A person took the controls (see `monitor::who_changed_mode`): `who` (a ground station
    /// through the router, or "an RC transmitter or a ground station not routed by the agent"
    /// when only the HEARTBEAT told) and `what` (the mode change, arming, the flight command).
    PilotOverride {
        who: String,
        what: String,
    },
    /// Under a pilot's override, the autopilot's mode became the config's hand-back mode
    /// (`[pilot] hand_back_mode`): the pilot gives the delivery back.
    PilotHandBack {
        mode: String,
    },
    /// The autopilot's own log of the flight is downloaded: which file, its size and SHA-256.
    FlightLogReady(String),
    /// The autopilot refused the flight operation `op`; `transient` when it said "later"
    /// (`TEMPORARILY_REJECTED`), with its words in `why`.
    FlightOpFailed {
        op: FlightOp,
        why: String,
        transient: bool,
    },
    /// The agent restarted with this state loaded from disk.
    Restarted(Vehicle),
    /// COMPLETED has been reported: the runtime sends this at once.
    Recovered,
    /// A technician's `drone-agent ready`, with what the autopilot says now.
    TechnicianReady {
        armed: bool,
        in_air: bool,
    },
    /// A technician's `drone-agent test release`.
    TestRelease,
    /// The test release finished (either way).
    TestReleaseDone,
    /// A write of the state file or the event outbox failed (full or failing disk): why.
    StorageFailed(String),
    /// Everything held in memory is on disk again: what was stored (and dropped, if any).
    StorageRestored(String),
    /// The autopilot's numbers for the energy estimate, at every telemetry step (issue 12).
    Energy(super::energy::EnergyReading),
}

impl Event {
    /// Stable short name, used in logs, rejections and the transition table.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Task(_) => "task",
            Event::PreflightPassed => "preflight_passed",
            Event::PreflightFailed(_) => "preflight_failed",
            Event::LeftGround => "left_ground",
            Event::ClimbComplete => "climb_complete",
            Event::OverDestination => "over_destination",
            Event::AtDropHeight => "at_drop_height",
            Event::CameraFrame(_) => "camera_frame",
            Event::ApproachTick { .. } => "approach_tick",
            Event::CameraFault(_) => "camera_fault",
            Event::CameraRestored => "camera_restored",
            Event::Command(c) => command_name(*c),
            Event::ReleaseDone => "release_done",
            Event::ReleaseFailed(_) => "release_failed",
            Event::PayloadRead(PayloadReading::Released) => "payload_released",
            Event::PayloadRead(PayloadReading::Closed) => "payload_closed",
            Event::PayloadRead(PayloadReading::Unknown) => "payload_unknown",
            Event::TimerFired(Timer::DropWait) => "drop_wait_expired",
            Event::TimerFired(Timer::AutoReturn) => "auto_return_due",
            Event::TimerFired(Timer::Approach) => "approach_timeout",
            Event::TimerFired(Timer::GpsLoss) => "gps_loss_timeout",
            Event::TimerFired(Timer::CloudLoss) => "cloud_lost",
            Event::TimerFired(Timer::FlightRetry) => "flight_retry_due",
            Event::TimerFired(Timer::TakeBack) => "take_back_due",
            Event::LandedAtHome => "landed_at_home",
            Event::LandedAway => "landed_away",
            Event::BatteryLow(_) => "battery_low",
            Event::BatteryCritical(_) => "battery_critical",
            Event::GpsLost => "gps_lost",
            Event::GpsRestored => "gps_restored",
            Event::FcLinkLost => "fc_link_lost",
            Event::FcLinkRestored(Vehicle::Airborne) => "fc_link_restored_airborne",
            Event::FcLinkRestored(Vehicle::OnGround { at_home: true }) => {
                "fc_link_restored_at_home"
            }
            Event::FcLinkRestored(Vehicle::OnGround { at_home: false }) => "fc_link_restored_away",
            Event::FcLinkRestored(Vehicle::Unreachable) => "fc_link_restored_unreachable",
            Event::CloudDown => "cloud_down",
            Event::CloudUp => "cloud_up",
            Event::AutopilotTookOver { .. } => "autopilot_took_over",
            Event::PilotOverride { .. } => "pilot_override",
            Event::PilotHandBack { .. } => "pilot_hand_back",
            Event::FlightLogReady(_) => "flight_log_ready",
            Event::FlightOpFailed {
                transient: false, ..
            } => "flight_op_refused",
            Event::FlightOpFailed {
                transient: true, ..
            } => "flight_op_refused_for_now",
            Event::Restarted(Vehicle::Airborne) => "restarted_airborne",
            Event::Restarted(Vehicle::OnGround { at_home: true }) => "restarted_at_home",
            Event::Restarted(Vehicle::OnGround { at_home: false }) => "restarted_away",
            Event::Restarted(Vehicle::Unreachable) => "restarted_fc_unreachable",
            Event::Recovered => "ready",
            Event::TechnicianReady { .. } => "technician_ready",
            Event::TestRelease => "test_release",
            Event::TestReleaseDone => "test_release_done",
            Event::StorageFailed(_) => "storage_failed",
            Event::StorageRestored(_) => "storage_restored",
            Event::Energy(_) => "energy",
        }
    }
}

/// The one answer to "landed at home or away": within `home_radius_m` of home is home; an
/// unknown home or position is away (a technician looks).
pub fn landed(distance_from_home_m: Option<f64>, home_radius_m: f64) -> Event {
    match distance_from_home_m {
        Some(d) if d <= home_radius_m => Event::LandedAtHome,
        _ => Event::LandedAway,
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Report this to the cloud (every transition reports one; some events report without one).
    Report {
        event: EventType,
        reason: Option<String>,
    },
    RunPreflight,
    /// A flight operation (supersedes the one in progress).
    Fly(Fly),
    /// Disarm (after a take-off refused on the ground); its failure changes nothing.
    Disarm,
    ReleasePayload,
    /// Read whether the release is open, without moving it: answered by [`Event::PayloadRead`].
    ReadPayload,
    /// The technician's test: open, hold, close; answered by [`Event::TestReleaseDone`].
    TestRelease,
    StartTimer(Timer, Duration),
    CancelTimer(Timer),
}

/// The machine's answer to one event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub effects: Vec<Effect>,
    /// `(from, to)` when the event changed the state.
    pub transition: Option<(DroneState, DroneState)>,
    /// Why the event was refused; the runtime sends it to the cloud (or the technician).
    pub rejected: Option<String>,
}

impl Outcome {
    /// The events this outcome reports, in order.
    pub fn reports(&self) -> impl Iterator<Item = (EventType, Option<&str>)> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Report { event, reason } => Some((*event, reason.as_deref())),
            _ => None,
        })
    }

    pub fn flights(&self) -> impl Iterator<Item = Fly> + '_ {
        self.effects.iter().filter_map(|e| match e {
            Effect::Fly(f) => Some(*f),
            _ => None,
        })
    }
}

/// The config's numbers for the machine (here, so the config module knows nothing of the
/// machine: config is a leaf of the crate's module tree).
impl crate::config::DroneConfig {
    /// The numbers the state machine decides with.
    pub fn limits(&self) -> Limits {
        Limits {
            cruise_alt_m: self.flight.cruise_alt_m,
            drop_alt_m: self.flight.drop_alt_m,
            max_nav_attempts: self.flight.max_nav_attempts,
            drop_wait: crate::config::secs(self.timeouts.drop_wait_s),
            auto_return: (self.timeouts.auto_return_after_drop_s > 0.0)
                .then(|| crate::config::secs(self.timeouts.auto_return_after_drop_s)),
            approach_timeout: crate::config::secs(self.timeouts.approach_s),
            gps_loss_land: crate::config::secs(self.timeouts.gps_loss_land_s),
            cloud_loss_return: crate::config::secs(self.timeouts.cloud_loss_return_s),
            continue_after_restart: self.restart.in_air == crate::config::InAirRestart::Continue,
            unknown_airborne: self.restart.unknown_airborne,
            flight_op_retries: self.retry.flight_op_retries,
            flight_op_backoff: crate::config::secs(self.retry.first_backoff_s),
            flight_op_backoff_max: crate::config::secs(self.retry.max_backoff_s),
            take_back_after: (self.autopilot.take_back_after_s > 0.0)
                .then(|| crate::config::secs(self.autopilot.take_back_after_s)),
            // the marker needs a camera to be seen
            precision: self.camera.as_ref().and(self.precision.clone()),
            energy: self.energy.as_ref().map(|e| super::energy::EnergyLimits {
                model: e.seed(),
                profile: e.profile(),
                return_alt_m: e.return_alt_m,
            }),
        }
    }
}

/// Numbers the machine decides with. Not persisted: they come from the config at every start.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub cruise_alt_m: f64,
    pub drop_alt_m: f64,
    pub max_nav_attempts: u32,
    pub drop_wait: Duration,
    /// `None`: wait for `return_to_base` however long it takes.
    pub auto_return: Option<Duration>,
    pub approach_timeout: Duration,
    pub gps_loss_land: Duration,
    /// The cloud link down this long while waiting for the drop: home with the parcel.
    pub cloud_loss_return: Duration,
    /// After an agent restart in the air: carry on (`true`) or fly home with what is on board.
    pub continue_after_restart: bool,
    /// Started with no flight on record, and the vehicle is flying: what to do.
    pub unknown_airborne: UnknownAirborne,
    /// A refused flight operation is asked again at most this many times (backing off) before
    /// the machine gives it up.
    pub flight_op_retries: u32,
    /// The wait before the first retry; doubled each time, up to `flight_op_backoff_max`.
    pub flight_op_backoff: Duration,
    pub flight_op_backoff_max: Duration,
    /// AUTOPILOT_CONTROL: take control back (fly home) after this long; `None`: only on `resume`.
    pub take_back_after: Option<Duration>,
    /// The precision approach onto the marker (`[precision]`, only with a camera); `None`: the
    /// approach is by GPS alone.
    pub precision: Option<crate::config::PrecisionConfig>,
    /// Energy to get home (`[energy]`; the model is the learned one once the runtime has it);
    /// `None`: only the fixed battery thresholds.
    pub energy: Option<super::energy::EnergyLimits>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cruise_alt_m: 30.0,
            drop_alt_m: 4.0,
            max_nav_attempts: 3,
            drop_wait: Duration::from_secs(120),
            auto_return: Some(Duration::from_secs(30)),
            approach_timeout: Duration::from_secs(60),
            gps_loss_land: Duration::from_secs(20),
            cloud_loss_return: Duration::from_secs(60),
            continue_after_restart: true,
            unknown_airborne: UnknownAirborne::ReturnHome,
            flight_op_retries: 3,
            flight_op_backoff: Duration::from_millis(500),
            flight_op_backoff_max: Duration::from_secs(8),
            take_back_after: None,
            precision: None,
            energy: None,
        }
    }
}

impl Limits {
    /// The wait before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.flight_op_backoff
            .saturating_mul(factor)
            .min(self.flight_op_backoff_max)
    }
}

pub(crate) fn command_name(c: CommandKind) -> &'static str {
    match c {
        CommandKind::DropCargo => "drop_cargo",
        CommandKind::ReturnToBase => "return_to_base",
        CommandKind::Pause => "pause",
        CommandKind::Resume => "resume",
        CommandKind::Abort => "abort",
        CommandKind::ReturnToHome => "return_to_home",
    }
}
