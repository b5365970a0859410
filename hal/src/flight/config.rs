//! The flight-controller link's TOML config, embeddable in an agent's config as a table
//! (e.g. `[flight_controller]`). Every timeout is a config value: a serial radio needs longer
//! ones than a local UDP SITL.
//!
//! ```toml
//! [flight_controller]
//! connection = "udpin:0.0.0.0:14540"   # PX4 SITL API link; ArduPilot SITL: "tcpout:127.0.0.1:5760"
//! system_id = 1                       # our MAVLink system id (the vehicle's)
//! component_id = 191                  # MAV_COMP_ID_ONBOARD_COMPUTER
//! heartbeat_timeout_ms = 3000         # no autopilot HEARTBEAT this long = link lost
//! reopen_interval_ms = 1000           # between attempts to reopen a lost link
//! command_timeout_ms = 1000           # per COMMAND_LONG attempt
//! command_retries = 5                 # resends (confirmation 1, 2, ...) after the first attempt
//! in_progress_timeout_ms = 30000      # wait for the final ACK after IN_PROGRESS
//! mode_change_timeout_ms = 3000       # wait for HEARTBEAT to show a requested mode
//! mission_timeout_ms = 1500           # per mission-protocol step
//! mission_retries = 5
//! gripper_confirm_timeout_ms = 3000   # ArduPilot: wait for "Gripper load released" after the ACK
//! gripper_settle_ms = 500             # after the autopilot confirms the gripper, before returning
//! hold_brake_timeout_ms = 5000        # ArduPilot hold: BRAKE this long at most before GUIDED here
//! heartbeat_type = "onboard_controller"  # or "gcs": what our HEARTBEAT says we are (see below)
//!
//! [flight_controller.telemetry]       # messages per second requested with SET_MESSAGE_INTERVAL
//! position_hz = 10.0
//! attitude_hz = 10.0
//! battery_hz = 1.0
//! gps_hz = 2.0
//! status_hz = 2.0
//! servo_hz = 2.0
//! ```

use super::connection::ConnectionString;
use super::router::EndpointConfig;
use daemon::config::{Validate, Validator};
use std::time::Duration;

/// The MAVLink link to the flight controller.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FcLinkConfig {
    pub connection: ConnectionString,
    #[serde(default = "default_system_id")]
    pub system_id: u8,
    #[serde(default = "default_component_id")]
    pub component_id: u8,
    #[serde(default = "default_heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
    #[serde(default = "default_reopen_interval_ms")]
    pub reopen_interval_ms: u64,
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    #[serde(default = "default_command_retries")]
    pub command_retries: u32,
    #[serde(default = "default_in_progress_timeout_ms")]
    pub in_progress_timeout_ms: u64,
    #[serde(default = "default_mode_change_timeout_ms")]
    pub mode_change_timeout_ms: u64,
    #[serde(default = "default_mission_timeout_ms")]
    pub mission_timeout_ms: u64,
    #[serde(default = "default_mission_retries")]
    pub mission_retries: u32,
    #[serde(default = "default_gripper_confirm_timeout_ms")]
    pub gripper_confirm_timeout_ms: u64,
    #[serde(default = "default_gripper_settle_ms")]
    pub gripper_settle_ms: u64,
    #[serde(default = "default_hold_brake_timeout_ms")]
    pub hold_brake_timeout_ms: u64,
    #[serde(default)]
    pub heartbeat_type: HeartbeatType,
    #[serde(default)]
    pub telemetry: TelemetryRates,
    /// Ground stations sharing this link through the agent's router (issue 13); none by default:
    /// nothing listens unless configured. See [`super::router::endpoint`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
}

/// The `MAV_TYPE` of our HEARTBEAT: which of the autopilot's link-loss failsafes count us.
///
/// - `onboard_controller` (default): a companion computer. PX4 logs "Connection to mission
///   computer lost" after `COM_OBC_LOSS_T` without it but attaches no action to it; ArduPilot
///   counts it for its GCS failsafe only if our system id is `SYSID_MYGCS` (`MAV_GCS_SYSID`).
/// - `gcs`: a ground station. PX4 then counts us as its data link: `NAV_DLL_ACT` (e.g. 2 = Return)
///   acts after `COM_DL_LOSS_T` seconds without our HEARTBEAT, and with `NAV_DLL_ACT` > 0 PX4
///   refuses to arm without a data link, which we then are.
///
/// See the module docs of [`crate::flight`] for the full per-autopilot set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatType {
    #[default]
    OnboardController,
    Gcs,
}

/// Message rates to request from the autopilot, per second (0 = leave the autopilot's default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryRates {
    /// GLOBAL_POSITION_INT (position, velocity, heading).
    pub position_hz: f64,
    /// ATTITUDE.
    pub attitude_hz: f64,
    /// BATTERY_STATUS.
    pub battery_hz: f64,
    /// GPS_RAW_INT.
    pub gps_hz: f64,
    /// SYS_STATUS, EXTENDED_SYS_STATE.
    pub status_hz: f64,
    /// SERVO_OUTPUT_RAW.
    pub servo_hz: f64,
}

impl Default for TelemetryRates {
    fn default() -> Self {
        Self {
            position_hz: 10.0,
            attitude_hz: 10.0,
            battery_hz: 1.0,
            gps_hz: 2.0,
            status_hz: 2.0,
            servo_hz: 2.0,
        }
    }
}

fn default_system_id() -> u8 {
    1
}
fn default_component_id() -> u8 {
    // MAV_COMP_ID_ONBOARD_COMPUTER: the autopilots route and log us as a companion, not a GCS
    191
}
fn default_heartbeat_timeout_ms() -> u64 {
    3000
}
fn default_reopen_interval_ms() -> u64 {
    1000
}
fn default_command_timeout_ms() -> u64 {
    1000
}
fn default_command_retries() -> u32 {
    5
}
fn default_in_progress_timeout_ms() -> u64 {
    30_000
}
fn default_mode_change_timeout_ms() -> u64 {
    3000
}
fn default_mission_timeout_ms() -> u64 {
    1500
}
fn default_mission_retries() -> u32 {
    5
}
fn default_gripper_confirm_timeout_ms() -> u64 {
    3000
}
fn default_gripper_settle_ms() -> u64 {
    500
}
fn default_hold_brake_timeout_ms() -> u64 {
    5000
}

impl FcLinkConfig {
    /// Defaults for everything but the connection.
    pub fn new(connection: ConnectionString) -> Self {
        Self {
            connection,
            system_id: default_system_id(),
            component_id: default_component_id(),
            heartbeat_timeout_ms: default_heartbeat_timeout_ms(),
            reopen_interval_ms: default_reopen_interval_ms(),
            command_timeout_ms: default_command_timeout_ms(),
            command_retries: default_command_retries(),
            in_progress_timeout_ms: default_in_progress_timeout_ms(),
            mode_change_timeout_ms: default_mode_change_timeout_ms(),
            mission_timeout_ms: default_mission_timeout_ms(),
            mission_retries: default_mission_retries(),
            gripper_confirm_timeout_ms: default_gripper_confirm_timeout_ms(),
            gripper_settle_ms: default_gripper_settle_ms(),
            hold_brake_timeout_ms: default_hold_brake_timeout_ms(),
            heartbeat_type: HeartbeatType::default(),
            telemetry: TelemetryRates::default(),
            endpoints: Vec::new(),
        }
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }
    pub fn reopen_interval(&self) -> Duration {
        Duration::from_millis(self.reopen_interval_ms)
    }
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
    pub fn in_progress_timeout(&self) -> Duration {
        Duration::from_millis(self.in_progress_timeout_ms)
    }
    pub fn mode_change_timeout(&self) -> Duration {
        Duration::from_millis(self.mode_change_timeout_ms)
    }
    pub fn mission_timeout(&self) -> Duration {
        Duration::from_millis(self.mission_timeout_ms)
    }

    /// Validates with field names under `prefix` (e.g. `flight_controller`), for agents that embed
    /// this table in their own config.
    pub fn validate_at(&self, prefix: &str, v: &mut Validator) {
        v.nested(prefix, |v| self.validate_fields(v));
    }

    fn validate_fields(&self, v: &mut Validator) {
        v.check(
            self.system_id != 0,
            "system_id",
            "0 is the broadcast id; use the vehicle's system id (usually 1)",
        );
        v.check(
            self.component_id != 0,
            "component_id",
            "0 is the broadcast id; use 191 (MAV_COMP_ID_ONBOARD_COMPUTER)",
        );
        v.range(
            "heartbeat_timeout_ms",
            self.heartbeat_timeout_ms,
            1100,
            60_000,
        );
        v.range("reopen_interval_ms", self.reopen_interval_ms, 50, 60_000);
        v.range("command_timeout_ms", self.command_timeout_ms, 20, 30_000);
        v.range("command_retries", self.command_retries, 0, 20);
        v.range(
            "in_progress_timeout_ms",
            self.in_progress_timeout_ms,
            100,
            600_000,
        );
        v.range(
            "mode_change_timeout_ms",
            self.mode_change_timeout_ms,
            100,
            60_000,
        );
        v.range("mission_timeout_ms", self.mission_timeout_ms, 20, 60_000);
        v.range("mission_retries", self.mission_retries, 0, 50);
        v.range(
            "gripper_confirm_timeout_ms",
            self.gripper_confirm_timeout_ms,
            50,
            60_000,
        );
        v.range("gripper_settle_ms", self.gripper_settle_ms, 0, 30_000);
        v.range(
            "hold_brake_timeout_ms",
            self.hold_brake_timeout_ms,
            100,
            60_000,
        );
        let t = &self.telemetry;
        for (name, hz) in [
            ("position_hz", t.position_hz),
            ("attitude_hz", t.attitude_hz),
            ("battery_hz", t.battery_hz),
            ("gps_hz", t.gps_hz),
            ("status_hz", t.status_hz),
            ("servo_hz", t.servo_hz),
        ] {
            v.range(&format!("telemetry.{name}"), hz, 0.0, 50.0);
        }
        super::router::endpoint::validate(&self.endpoints, v);
    }
}

impl Validate for FcLinkConfig {
    fn validate(&self, v: &mut Validator) {
        self.validate_at("", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Agent {
        flight_controller: FcLinkConfig,
    }
    impl Validate for Agent {
        fn validate(&self, v: &mut Validator) {
            self.flight_controller.validate_at("flight_controller", v);
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let toml: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let a: Agent = daemon::config::parse(&toml, Path::new("example.toml")).unwrap();
        assert_eq!(
            a.flight_controller,
            FcLinkConfig::new("udpin:0.0.0.0:14540".parse().unwrap())
        );
    }

    #[test]
    fn minimal_config_takes_defaults_and_bad_values_are_named() {
        let a: Agent = daemon::config::parse(
            "[flight_controller]\nconnection = \"tcpout:127.0.0.1:5760\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(a.flight_controller.component_id, 191);

        let e = daemon::config::parse::<Agent>(
            "[flight_controller]\nconnection = \"tcp:127.0.0.1:5760\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert_eq!(e.fields(), vec!["flight_controller.connection"]);

        let e = daemon::config::parse::<Agent>(
            "[flight_controller]\nconnection = \"tcpout:127.0.0.1:5760\"\ncommand_timeout_ms = 5\n[flight_controller.telemetry]\ngps_hz = 100.0\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert_eq!(
            e.fields(),
            vec![
                "flight_controller.command_timeout_ms",
                "flight_controller.telemetry.gps_hz"
            ]
        );
    }
}
