//! The world's physical limits and timings, and the parameters the control socket and the
//! autopilots' PARAM_SET may change.

use super::*;

/// Gripper pulse widths on its servo output (ArduPilot's GRIP_GRAB / GRIP_RELEASE defaults).
pub const GRIPPER_GRAB_US: u16 = 1900;

pub const GRIPPER_RELEASE_US: u16 = 1100;

/// Servo output (1-based) the gripper drives.
pub const GRIPPER_CHANNEL: usize = 7;

/// The world's physical limits and timings; defaults follow the autopilots' defaults.
#[derive(Debug, Clone)]
pub struct Params {
    pub max_horizontal_mps: f64,
    pub max_climb_mps: f64,
    pub max_descent_mps: f64,
    pub land_mps: f64,
    pub accel_mps2: f64,
    pub takeoff_climb_mps: f64,
    pub rtl_alt_m: f64,
    /// Seconds after boot until GPS has a 3D fix.
    pub gps_fix_after_s: f64,
    /// Seconds after the GPS fix (and home) until the estimator navigates by GPS: ArduPilot's EKF
    /// "is using GPS" (EKF_STATUS_REPORT), PX4's ESTIMATOR_STATUS. Until then ArduPilot arms only
    /// in STABILIZE and refuses position modes while armed.
    pub arm_ready_after_fix_s: f64,
    /// Seconds armed on the ground without taking off before auto-disarm.
    pub auto_disarm_s: f64,
    /// Sim seconds a PX4 payload deliverer takes to open/close (IN_PROGRESS, then ACCEPTED).
    pub px4_gripper_s: f64,
    /// Sim seconds from ArduPilot's gripper ACK ("Gripper load releasing") to its report
    /// ("Gripper load released").
    pub ardupilot_gripper_s: f64,
    /// Deceleration when stopping for a hold (PX4 Hold, ArduPilot BRAKE), m/s²: from cruise at
    /// 10 m/s PX4 overshoots its hold point by ~6 m and comes back.
    pub brake_accel_mps2: f64,
    /// Battery cells in series (ArduPilot SITL: 3S at 12.6 V full; PX4: 4S).
    pub cells: u8,
    /// BATT_CAPACITY, mAh: the percentage is consumed mAh against this, whatever the voltage.
    pub capacity_mah: f64,
    /// Current drawn hovering / on the ground, A.
    pub current_flying_a: f64,
    pub current_idle_a: f64,
    /// Extra current at full airspeed, as a fraction of hover's (drag grows with the square of
    /// the airspeed), and per m/s of climb, A.
    pub cruise_current_extra: f64,
    pub climb_current_a_per_mps: f64,
    /// The pack's internal resistance, Ω: the voltage sags by current × this under load.
    /// ArduPilot SITL's pack shows no sag (12.6 V flying in the recordings): 0 there.
    pub internal_resistance_ohm: f64,
    /// ArduPilot BATT_LOW_VOLT (V, 0 = off), BATT_LOW_TIMER (s below it before the failsafe) and
    /// BATT_FS_LOW_ACT (0 warn only, 1 land, 2 RTL).
    pub batt_low_volt: f64,
    pub batt_low_timer_s: f64,
    pub batt_fs_low_act: u8,
    /// ArduPilot FS_GCS_ENABLE (0 off, 1 RTL, 5 land), SYSID_MYGCS and FS_GCS_TIMEOUT (s): RTL when
    /// the HEARTBEATs of that system stop while flying.
    pub fs_gcs_enable: u8,
    pub sysid_mygcs: u8,
    pub fs_gcs_timeout_s: f64,
    /// PX4 NAV_DLL_ACT (0 off, 2 Return, 3 Land) and COM_DL_LOSS_T (s): a data link (a HEARTBEAT of
    /// MAV_TYPE_GCS) is needed to arm, and its loss in flight triggers the action.
    pub nav_dll_act: u8,
    pub com_dl_loss_t_s: f64,
    /// GPS error, metres north and east: the autopilot believes it is this far from where it is
    /// (telemetry reports, and commands are flown, in that shifted frame; [`View`] stays true).
    /// What a precision landing on the marker has to correct.
    pub gps_offset_ne_m: (f64, f64),
}

impl Params {
    pub fn for_flavour(f: Flavour) -> Self {
        match f {
            Flavour::Px4 => Params {
                max_horizontal_mps: 10.0,
                max_climb_mps: 3.0,
                max_descent_mps: 1.5,
                land_mps: 0.7,
                accel_mps2: 3.0,
                takeoff_climb_mps: 1.0,
                rtl_alt_m: 30.0,
                gps_fix_after_s: 3.0,
                arm_ready_after_fix_s: 2.0,
                auto_disarm_s: 10.0,
                px4_gripper_s: 1.0,
                ardupilot_gripper_s: 0.5,
                brake_accel_mps2: 8.3,
                cells: 4,
                capacity_mah: 5000.0,
                current_flying_a: 14.4,
                current_idle_a: 0.36,
                cruise_current_extra: 0.25,
                climb_current_a_per_mps: 2.0,
                // 0.4 V at hover current, what PX4 SITL's 4S pack drops armed
                internal_resistance_ohm: 0.028,
                batt_low_volt: 0.0,
                batt_low_timer_s: 10.0,
                batt_fs_low_act: 0,
                fs_gcs_enable: 0,
                sysid_mygcs: 255,
                fs_gcs_timeout_s: 5.0,
                nav_dll_act: 0,
                com_dl_loss_t_s: 10.0,
                gps_offset_ne_m: (0.0, 0.0),
            },
            Flavour::ArduPilot => Params {
                max_horizontal_mps: 10.0,
                max_climb_mps: 2.5,
                max_descent_mps: 1.5,
                land_mps: 0.5,
                accel_mps2: 2.5,
                takeoff_climb_mps: 1.4,
                rtl_alt_m: 15.0,
                gps_fix_after_s: 5.0,
                arm_ready_after_fix_s: 10.0,
                auto_disarm_s: 10.0,
                px4_gripper_s: 1.0,
                ardupilot_gripper_s: 0.5,
                brake_accel_mps2: 8.3,
                cells: 3,
                capacity_mah: 3300.0,
                current_flying_a: 9.5,
                current_idle_a: 0.24,
                cruise_current_extra: 0.25,
                climb_current_a_per_mps: 1.5,
                internal_resistance_ohm: 0.0,
                batt_low_volt: 10.5,
                batt_low_timer_s: 10.0,
                batt_fs_low_act: 0,
                fs_gcs_enable: 0,
                sysid_mygcs: 255,
                fs_gcs_timeout_s: 5.0,
                nav_dll_act: 0,
                com_dl_loss_t_s: 10.0,
                gps_offset_ne_m: (0.0, 0.0),
            },
        }
    }

    /// Sets a parameter by the autopilot's own name (the control socket's `param`), as far as the
    /// sim models it.
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), String> {
        let v = value;
        match name {
            "BATT_LOW_VOLT" => self.batt_low_volt = v,
            "BATT_LOW_TIMER" => self.batt_low_timer_s = v,
            "BATT_FS_LOW_ACT" => self.batt_fs_low_act = v as u8,
            "BATT_CAPACITY" | "BAT1_CAPACITY" if v > 0.0 => self.capacity_mah = v,
            // the sim's own: the pack's internal resistance, Ω
            "SIM_BATT_RES_OHM" if v >= 0.0 => self.internal_resistance_ohm = v,
            "FS_GCS_ENABLE" => self.fs_gcs_enable = v as u8,
            "SYSID_MYGCS" | "MAV_GCS_SYSID" => self.sysid_mygcs = v as u8,
            "FS_GCS_TIMEOUT" => self.fs_gcs_timeout_s = v,
            "NAV_DLL_ACT" => self.nav_dll_act = v as u8,
            "COM_DL_LOSS_T" => self.com_dl_loss_t_s = v,
            other => return Err(format!("parameter {other} is not simulated")),
        }
        Ok(())
    }
}
