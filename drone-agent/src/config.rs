//! The drone agent's TOML config. Every field is documented in `drone-agent.example.toml`.

use cloud_link::CloudConfig;
use daemon::config::{Validate, Validator};
use hal::flight::FcLinkConfig;
use hal::marker::{Dictionary, MarkerConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DroneConfig {
    pub drone: Identity,
    pub cloud: CloudConfig,
    pub flight_controller: FcLinkConfig,
    #[serde(default)]
    pub flight: FlightConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub battery: BatteryConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub payload: PayloadConfig,
    #[serde(default)]
    pub restart: RestartConfig,
    /// The downward camera; absent on a drone without one.
    #[serde(default)]
    pub camera: Option<CameraConfig>,
    /// The precision approach onto the locker's marker; absent: GPS only.
    #[serde(default)]
    pub precision: Option<PrecisionConfig>,
    #[serde(default)]
    pub video: VideoConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub autopilot: AutopilotConfig,
    #[serde(default)]
    pub commands: CommandsConfig,
    /// `[geofence]`: the fence when a task carries no operational volume; absent: no fence
    /// unless the task brings one.
    #[serde(default)]
    pub geofence: Option<crate::geofence::GeofenceConfig>,
    #[serde(default)]
    pub pilot: PilotConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    /// Energy to get home (issue 12); absent: only `[battery]`'s fixed thresholds.
    #[serde(default)]
    pub energy: Option<EnergyConfig>,
}

/// `[pilot]`: a person taking the controls (a ground station, an RC transmitter).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PilotConfig {
    /// The autopilot mode (its own name, as `drone-agent status` shows it) a pilot switches to
    /// to hand the delivery back to the agent, e.g. `GUIDED` on ArduPilot. Unset: only the
    /// backend's `resume` hands back.
    pub hand_back_mode: Option<String>,
}

/// `[logs]`: the flight recorder (`.tlog` of the autopilot link) and the autopilot's own log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Where the logs go; unset: `flight-logs` in the state dir.
    pub dir: Option<PathBuf>,
    /// The folder's bound, MB: the oldest logs are deleted first; 0 records nothing.
    pub max_mb: u64,
    /// Recording goes on this long after the disarm (a re-arm inside keeps one log).
    pub margin_s: f64,
    /// After landing, download the autopilot's own log of the flight (ArduPilot `.bin`, PX4
    /// `.ulg`) while the vehicle stays disarmed.
    pub fetch_autopilot_log: bool,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_mb: 512,
            margin_s: 10.0,
            fetch_autopilot_log: false,
        }
    }
}

impl DroneConfig {
    /// The flight logs' folder.
    pub fn logs_dir(&self) -> PathBuf {
        self.logs
            .dir
            .clone()
            .unwrap_or_else(|| self.drone.state_dir.join("flight-logs"))
    }
}

/// `[energy]`: the energy model's seed for the first flight and how the drone flies home. The
/// rates are percent of the pack per second of the autopilot's clock (per metre of climb),
/// learned in flight and kept in `<state_dir>/energy.json` from then on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyConfig {
    pub hover_pct_per_s: f64,
    pub cruise_pct_per_s: f64,
    pub climb_pct_per_m: f64,
    /// Airspeed the autopilot cruises at (ArduPilot WPNAV_SPEED, PX4 MPC_XY_CRUISE), m/s.
    pub cruise_speed_mps: f64,
    /// Descent rate of the landing, m/s.
    #[serde(default = "default_descent_speed")]
    pub descent_speed_mps: f64,
    /// Kept on top of every estimate, percent.
    pub reserve_percent: f64,
    /// The altitude the autopilot's return to launch flies at (ArduPilot RTL_ALT, PX4
    /// RTL_RETURN_ALT), metres above home; absent: `[flight] cruise_alt_m`.
    #[serde(default)]
    pub return_alt_m: Option<f64>,
    /// Learn the rates from each flight (false: the seed always).
    #[serde(default = "default_true")]
    pub learn: bool,
}

fn default_descent_speed() -> f64 {
    1.5
}

fn default_true() -> bool {
    true
}

impl EnergyConfig {
    pub fn seed(&self) -> crate::energy::EnergyModel {
        crate::energy::EnergyModel {
            hover_pct_per_s: self.hover_pct_per_s,
            cruise_pct_per_s: self.cruise_pct_per_s,
            climb_pct_per_m: self.climb_pct_per_m,
            flights: 0,
        }
    }

    pub fn profile(&self) -> crate::energy::FlightProfile {
        crate::energy::FlightProfile {
            cruise_speed_mps: self.cruise_speed_mps,
            descent_speed_mps: self.descent_speed_mps,
            reserve_pct: self.reserve_percent,
        }
    }

    fn validate(&self, v: &mut Validator) {
        // a pack that hovers for 1 min to 10 h, cruises no cheaper than a tenth of that
        v.range("hover_pct_per_s", self.hover_pct_per_s, 0.0003, 2.0);
        v.range("cruise_pct_per_s", self.cruise_pct_per_s, 0.0003, 2.0);
        v.range("climb_pct_per_m", self.climb_pct_per_m, 0.0, 2.0);
        v.range("cruise_speed_mps", self.cruise_speed_mps, 1.0, 40.0);
        v.range("descent_speed_mps", self.descent_speed_mps, 0.2, 10.0);
        v.range("reserve_percent", self.reserve_percent, 0.0, 60.0);
        if let Some(alt) = self.return_alt_m {
            v.range("return_alt_m", alt, 0.0, 500.0);
        }
    }
}

/// `[retry]`: how a flight operation the autopilot refuses is asked again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// At most this many more tries after a refusal (in the air: any refusal; on the ground:
    /// only "temporarily rejected"), then the machine gives the operation up (home, land, or IDLE).
    pub flight_op_retries: u32,
    /// Wait before the first retry, doubled each time up to `max_backoff_s`.
    pub first_backoff_s: f64,
    pub max_backoff_s: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            flight_op_retries: 3,
            first_backoff_s: 0.5,
            max_backoff_s: 8.0,
        }
    }
}

/// `[autopilot]`: when the autopilot changes mode by itself (failsafe, fence, RC pilot).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AutopilotConfig {
    /// Take control back (fly home) this long after the autopilot took over; 0: only when the
    /// backend sends `resume`.
    pub take_back_after_s: f64,
}

/// `[commands]`: the memory of command ids (idempotency).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// How many recent command ids (and their acknowledgements) are remembered.
    pub remember: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self { remember: 256 }
    }
}

/// `[camera]`: where frames come from and what the lens sees.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub source: hal::camera::CameraSource,
    /// Frames per second grabbed while something needs them (approach, video).
    #[serde(default = "default_camera_fps")]
    pub fps: f64,
    /// No frame for this long: the camera counts as failed (reported; the approach reacts).
    #[serde(default = "default_camera_lost")]
    pub lost_after_s: f64,
    /// Horizontal field of view, degrees (used unless fx, fy, cx, cy are all given).
    pub hfov_deg: Option<f64>,
    /// Calibrated intrinsics, pixels: all four or none.
    pub fx: Option<f64>,
    pub fy: Option<f64>,
    pub cx: Option<f64>,
    pub cy: Option<f64>,
}

impl CameraConfig {
    pub fn lens(&self) -> Lens {
        Lens {
            hfov_deg: self.hfov_deg,
            fx: self.fx,
            fy: self.fy,
            cx: self.cx,
            cy: self.cy,
        }
    }
}

/// The lens: a horizontal field of view, or calibrated intrinsics (all four, pixels).
#[derive(Debug, Clone, Default)]
pub struct Lens {
    pub hfov_deg: Option<f64>,
    pub fx: Option<f64>,
    pub fy: Option<f64>,
    pub cx: Option<f64>,
    pub cy: Option<f64>,
}

fn default_camera_fps() -> f64 {
    15.0
}
fn default_camera_lost() -> f64 {
    1.0
}

/// `[video]`: live video to the cloud as `video_frame` messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Off by default: the drones fly on metered 4G.
    pub enabled: bool,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    /// JPEG quality, 1–100.
    pub jpeg_quality: u8,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            fps: 5.0,
            width: 640,
            height: 480,
            jpeg_quality: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub id: Uuid,
    pub model: String,
    /// Where the state file and the event outbox live (`/var/lib/skypost-drone` under systemd).
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    pub cruise_alt_m: f64,
    pub drop_alt_m: f64,
    /// Within this horizontal distance of a target point counts as there.
    pub arrive_radius_m: f64,
    /// Within this vertical distance of a target altitude counts as there.
    pub alt_tolerance_m: f64,
    /// Landed within this distance of home counts as home.
    pub home_radius_m: f64,
    pub max_nav_attempts: u32,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            cruise_alt_m: 30.0,
            drop_alt_m: 4.0,
            arrive_radius_m: 2.0,
            alt_tolerance_m: 0.5,
            home_radius_m: 10.0,
            max_nav_attempts: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// How long to hover over the locker waiting for `drop_cargo` before flying home with it.
    pub drop_wait_s: f64,
    /// Fly home by itself this long after the drop if no `return_to_base` came; 0 = wait for it.
    pub auto_return_after_drop_s: f64,
    /// The approach (descent to drop height) must finish within this.
    pub approach_s: f64,
    /// Cloud link down this long while waiting for the drop: fly home with the parcel.
    pub cloud_loss_return_s: f64,
    /// GPS lost in the air this long: land where the drone is.
    pub gps_loss_land_s: f64,
    /// After a restart, how long to wait for the flight controller before deciding without it.
    pub fc_reattach_s: f64,
    /// How often the precision approach's timeouts are checked when no frame arrives.
    pub approach_tick_s: f64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            drop_wait_s: 120.0,
            auto_return_after_drop_s: 30.0,
            approach_s: 60.0,
            cloud_loss_return_s: 60.0,
            gps_loss_land_s: 20.0,
            fc_reattach_s: 15.0,
            approach_tick_s: 0.2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatteryConfig {
    /// Pre-flight refuses to take off below this, percent.
    pub min_takeoff_percent: f64,
    /// Below this in the air: fly home (with the parcel if it is still on board).
    pub return_percent: f64,
    /// Below this in the air: land now, wherever the drone is.
    pub critical_percent: f64,
    /// Cells in series: when set, the voltage is judged too (per cell, below).
    pub cells: Option<u32>,
    /// Below this many volts per cell in the air: fly home.
    pub return_cell_v: f64,
    /// Below this many volts per cell in the air: land now.
    pub critical_cell_v: f64,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        Self {
            min_takeoff_percent: 40.0,
            return_percent: 25.0,
            critical_percent: 10.0,
            cells: None,
            return_cell_v: 3.5,
            critical_cell_v: 3.3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Seconds between telemetry frames: 3 by default, down to 0.1 (10 Hz).
    pub interval_s: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { interval_s: 3.0 }
    }
}

/// How the parcel is released.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PayloadConfig {
    /// The flight controller's gripper (`MAV_CMD_DO_GRIPPER`).
    Gripper,
    /// A servo on one of the flight controller's outputs (`MAV_CMD_DO_SET_SERVO`).
    FcServo {
        channel: u8,
        release_pwm_us: u16,
        hold_pwm_us: u16,
        #[serde(default = "default_confirm_ms")]
        confirm_timeout_ms: u64,
    },
    /// A servo on a Raspberry Pi hardware PWM channel (0 or 1).
    PiPwm {
        pwm_channel: u8,
        /// PWM period, µs (20000 = 50 Hz).
        period_us: u16,
        release_us: u16,
        hold_us: u16,
    },
}

fn default_confirm_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InAirRestart {
    /// Carry on with the delivery where it stood.
    #[default]
    Continue,
    /// Fly home with whatever is on board.
    ReturnHome,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// What to do when the agent restarts while the drone is flying a delivery.
    #[serde(default)]
    pub in_air: InAirRestart,
    /// What to do when the agent starts with no flight on record (state file lost, empty,
    /// unreadable, or IDLE) and the autopilot reports the vehicle armed and in the air.
    /// `return_home` (default), `land` or `hold`; anything else is refused at start-up.
    #[serde(default)]
    pub unknown_airborne: UnknownAirborne,
}

pub(crate) fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

impl DroneConfig {
    pub fn telemetry_interval(&self) -> Duration {
        secs(self.telemetry.interval_s)
    }

    pub fn approach_tick(&self) -> Duration {
        secs(self.timeouts.approach_tick_s)
    }

    pub fn fc_reattach(&self) -> Duration {
        secs(self.timeouts.fc_reattach_s)
    }
}

impl Validate for DroneConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(
            !self.drone.model.trim().is_empty(),
            "drone.model",
            "must not be empty",
        );
        v.check(
            !self.drone.state_dir.as_os_str().is_empty(),
            "drone.state_dir",
            "must not be empty",
        );
        self.cloud.validate_at("cloud", v);
        self.flight_controller.validate_at("flight_controller", v);
        let f = &self.flight;
        v.range("flight.cruise_alt_m", f.cruise_alt_m, 5.0, 120.0);
        v.range("flight.drop_alt_m", f.drop_alt_m, 0.5, f.cruise_alt_m);
        v.range("flight.arrive_radius_m", f.arrive_radius_m, 0.1, 50.0);
        v.range("flight.alt_tolerance_m", f.alt_tolerance_m, 0.05, 10.0);
        v.range("flight.home_radius_m", f.home_radius_m, 0.5, 500.0);
        v.range("flight.max_nav_attempts", f.max_nav_attempts, 1, 10);
        let t = &self.timeouts;
        v.range("timeouts.drop_wait_s", t.drop_wait_s, 1.0, 3600.0);
        v.range(
            "timeouts.auto_return_after_drop_s",
            t.auto_return_after_drop_s,
            0.0,
            3600.0,
        );
        v.range("timeouts.approach_s", t.approach_s, 1.0, 600.0);
        v.range(
            "timeouts.cloud_loss_return_s",
            t.cloud_loss_return_s,
            1.0,
            3600.0,
        );
        v.range("timeouts.gps_loss_land_s", t.gps_loss_land_s, 1.0, 600.0);
        v.range("timeouts.fc_reattach_s", t.fc_reattach_s, 0.5, 600.0);
        v.range("timeouts.approach_tick_s", t.approach_tick_s, 0.01, 5.0);
        let r = &self.retry;
        v.range("retry.flight_op_retries", r.flight_op_retries, 0, 20);
        v.range("retry.first_backoff_s", r.first_backoff_s, 0.01, 60.0);
        v.range(
            "retry.max_backoff_s",
            r.max_backoff_s,
            r.first_backoff_s,
            600.0,
        );
        v.range(
            "autopilot.take_back_after_s",
            self.autopilot.take_back_after_s,
            0.0,
            3600.0,
        );
        v.range("commands.remember", self.commands.remember, 16, 100_000);
        if let Some(m) = &self.pilot.hand_back_mode {
            v.check(
                !m.trim().is_empty() && m.len() <= 32,
                "pilot.hand_back_mode",
                "must be an autopilot mode name such as GUIDED",
            );
        }
        v.range("logs.max_mb", self.logs.max_mb, 0, 1_000_000);
        v.range("logs.margin_s", self.logs.margin_s, 0.0, 600.0);
        if let Some(d) = &self.logs.dir {
            v.check(
                !d.as_os_str().is_empty(),
                "logs.dir",
                "must not be empty (leave it out for the state dir)",
            );
        }
        if let Some(g) = &self.geofence {
            g.validate_with(self.flight.cruise_alt_m, v);
        }
        let b = &self.battery;
        v.range("battery.critical_percent", b.critical_percent, 0.0, 100.0);
        v.range(
            "battery.return_percent",
            b.return_percent,
            b.critical_percent,
            100.0,
        );
        v.range(
            "battery.min_takeoff_percent",
            b.min_takeoff_percent,
            b.return_percent,
            100.0,
        );
        if let Some(cells) = b.cells {
            v.range("battery.cells", cells, 1, 24);
            v.range("battery.critical_cell_v", b.critical_cell_v, 2.5, 4.5);
            v.range(
                "battery.return_cell_v",
                b.return_cell_v,
                b.critical_cell_v,
                4.5,
            );
        }
        v.range("telemetry.interval_s", self.telemetry.interval_s, 0.1, 60.0);
        if let Some(e) = &self.energy {
            v.nested("energy", |v| e.validate(v));
        }
        if let Some(c) = &self.camera {
            v.range("camera.fps", c.fps, 1.0, 60.0);
            v.range("camera.lost_after_s", c.lost_after_s, 0.1, 60.0);
            v.check(
                c.source.supported(),
                "camera.source",
                "a camera device needs a build with the `opencv` feature",
            );
            if let Some(p) = &self.precision {
                let mut sub = Validator::default();
                p.marker_config(&c.lens()).validate(&mut sub);
                for problem in sub.problems() {
                    // the lens fields live in [camera], the marker's in [precision]
                    let section = if problem.field == "marker_size_m" {
                        "precision"
                    } else {
                        "camera"
                    };
                    v.fail(&format!("{section}.{}", problem.field), &problem.message);
                }
            }
        }
        if let Some(p) = &self.precision {
            v.nested("precision", |v| p.validate(v));
            v.check(
                self.camera.is_some(),
                "precision",
                "the precision approach needs a [camera] section",
            );
            v.check(
                cfg!(feature = "opencv"),
                "precision",
                "this build has no marker detector (build with the `opencv` feature)",
            );
            v.check(
                p.acquire_timeout_s < self.timeouts.approach_s,
                "precision.acquire_timeout_s",
                "must be shorter than timeouts.approach_s, or the approach times out first",
            );
        }
        let vid = &self.video;
        if vid.enabled {
            v.check(
                self.camera.is_some(),
                "video.enabled",
                "video needs a [camera] section",
            );
        }
        v.range("video.fps", vid.fps, 0.1, 30.0);
        v.range("video.width", vid.width, 16, 1920);
        v.range("video.height", vid.height, 16, 1080);
        v.range("video.jpeg_quality", vid.jpeg_quality, 1, 100);
        match &self.payload {
            PayloadConfig::Gripper => {}
            PayloadConfig::FcServo {
                channel,
                release_pwm_us,
                hold_pwm_us,
                ..
            } => {
                v.range("payload.channel", *channel, 1, 16);
                v.range("payload.release_pwm_us", *release_pwm_us, 500, 2500);
                v.range("payload.hold_pwm_us", *hold_pwm_us, 500, 2500);
            }
            PayloadConfig::PiPwm {
                pwm_channel,
                period_us,
                release_us,
                hold_us,
            } => {
                v.range("payload.pwm_channel", *pwm_channel, 0, 1);
                v.check(
                    release_us < period_us,
                    "payload.release_us",
                    "must be shorter than period_us",
                );
                v.check(
                    hold_us < period_us,
                    "payload.hold_us",
                    "must be shorter than period_us",
                );
            }
        }
    }
}

/// What an agent that starts with no flight on record (state file lost, empty, unreadable, or
/// IDLE) does when the autopilot reports the vehicle armed and in the air: `[restart]
/// unknown_airborne`. Never nothing: a drone nobody commands is not left hovering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAirborne {
    /// Return to launch (RETURNING).
    #[default]
    ReturnHome,
    /// Land where it is (EMERGENCY_LANDING).
    Land,
    /// Hold position (PAUSED) until the backend says `resume` (home), `return_to_home` or `abort`.
    Hold,
}

impl UnknownAirborne {
    /// The config's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            UnknownAirborne::ReturnHome => "return_home",
            UnknownAirborne::Land => "land",
            UnknownAirborne::Hold => "hold",
        }
    }
}

/// `[precision]` in the agent's TOML: present means the approach uses the camera.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecisionConfig {
    /// The ArUco dictionary the lockers' markers come from.
    #[serde(default = "default_dictionary")]
    pub dictionary: Dictionary,
    /// Side of the printed marker (outer edge of the black border), metres. No default: a wrong
    /// size scales every correction.
    pub marker_size_m: f64,
    /// When the camera fails during an approach: `true` finishes it by GPS alone (metres off
    /// the hatch), `false` (default) counts it as a failed approach (retry, then home).
    #[serde(default)]
    pub gps_fallback: bool,
    /// Horizontal distance from the marker centre that counts as centred, metres.
    #[serde(default = "default_centre_tolerance")]
    pub centre_tolerance_m: f64,
    /// Altitude error from the drop height that counts as there, metres.
    #[serde(default = "default_alt_tolerance")]
    pub alt_tolerance_m: f64,
    /// The task's marker must be seen within this long after the approach starts, seconds.
    #[serde(default = "default_acquire")]
    pub acquire_timeout_s: f64,
    /// Once seen, the marker may be out of sight this long before the approach fails, seconds.
    #[serde(default = "default_lost")]
    pub lost_timeout_s: f64,
    /// Largest altitude step per correction, metres.
    #[serde(default = "default_step")]
    pub descent_step_m: f64,
    /// Descend only while the offset is under this fraction of the height.
    #[serde(default = "default_descend_within")]
    pub descend_within: f64,
    /// Consecutive centred frames before reporting centred.
    #[serde(default = "default_settle")]
    pub settle_frames: u32,
    /// A frame counts as centred only while the drone moves slower than this (m/s): a picture
    /// taken in motion is already out of date.
    #[serde(default = "default_settled_speed")]
    pub settled_speed_mps: f64,
}

fn default_dictionary() -> Dictionary {
    Dictionary::Dict4x4_50
}
fn default_centre_tolerance() -> f64 {
    0.3
}
fn default_alt_tolerance() -> f64 {
    0.5
}
fn default_acquire() -> f64 {
    15.0
}
fn default_lost() -> f64 {
    3.0
}
fn default_step() -> f64 {
    1.0
}
fn default_descend_within() -> f64 {
    0.15
}
fn default_settle() -> u32 {
    3
}
fn default_settled_speed() -> f64 {
    0.25
}

impl Default for PrecisionConfig {
    fn default() -> Self {
        Self {
            dictionary: default_dictionary(),
            marker_size_m: 0.4,
            gps_fallback: false,
            centre_tolerance_m: default_centre_tolerance(),
            alt_tolerance_m: default_alt_tolerance(),
            acquire_timeout_s: default_acquire(),
            lost_timeout_s: default_lost(),
            descent_step_m: default_step(),
            descend_within: default_descend_within(),
            settle_frames: default_settle(),
            settled_speed_mps: default_settled_speed(),
        }
    }
}

impl daemon::config::Validate for PrecisionConfig {
    fn validate(&self, v: &mut daemon::config::Validator) {
        v.range("marker_size_m", self.marker_size_m, 0.02, 10.0);
        v.range("centre_tolerance_m", self.centre_tolerance_m, 0.02, 5.0);
        v.range("alt_tolerance_m", self.alt_tolerance_m, 0.05, 5.0);
        v.range("acquire_timeout_s", self.acquire_timeout_s, 1.0, 600.0);
        v.range("lost_timeout_s", self.lost_timeout_s, 0.2, 60.0);
        v.range("descent_step_m", self.descent_step_m, 0.1, 10.0);
        v.range("descend_within", self.descend_within, 0.01, 1.0);
        v.range("settle_frames", self.settle_frames, 1, 100);
        v.range("settled_speed_mps", self.settled_speed_mps, 0.01, 5.0);
    }
}

impl PrecisionConfig {
    /// What the marker detector needs: the marker from here, the lens from `[camera]`.
    pub fn marker_config(&self, lens: &Lens) -> MarkerConfig {
        MarkerConfig {
            dictionary: self.dictionary,
            marker_size_m: self.marker_size_m,
            hfov_deg: lens.hfov_deg,
            fx: lens.fx,
            fy: lens.fy,
            cx: lens.cx,
            cy: lens.cy,
        }
    }
}
