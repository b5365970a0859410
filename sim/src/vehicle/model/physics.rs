//! The world and the autopilot's control loop: the flat-Earth frame around home, the step that
//! flies the vehicle (takeoff, guided flight, RTL, land), battery and GCS failsafes, the gripper.

use super::*;
use mavlink::dialects::ardupilotmega as apm;
use protocol::geo::{LatLon, NorthEast};

/// SplitMix64: tiny, fast, and its sequence never changes with a crate upgrade, so a seed means
/// the same run forever.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}
impl Model {
    /// Where the autopilot believes a local point is (true position plus the GPS error).
    pub(super) fn latlon_of(&self, north: f64, east: f64) -> (f64, f64) {
        let (o_n, o_e) = self.p.gps_offset_ne_m;
        self.true_latlon_of(north + o_n, east + o_e)
    }

    pub(super) fn true_latlon_of(&self, north: f64, east: f64) -> (f64, f64) {
        let p = LatLon::new(self.home.0, self.home.1).offset(NorthEast::new(north, east));
        (p.lat_deg, p.lon_deg)
    }

    /// The local point the autopilot flies to for a commanded position (undoes the GPS error).
    pub(super) fn local_of(&self, lat: f64, lon: f64) -> (f64, f64) {
        let d = LatLon::new(self.home.0, self.home.1).north_east_to(LatLon::new(lat, lon));
        let (o_n, o_e) = self.p.gps_offset_ne_m;
        (d.north_m - o_n, d.east_m - o_e)
    }

    pub(super) fn gps_ok(&self) -> bool {
        self.t >= self.gps_fix_at && self.t >= self.faults.gps_lost_until
    }

    /// The estimator navigates by GPS (ArduPilot: "EKF3 IMU0 is using GPS").
    pub(super) fn position_ok(&self) -> bool {
        self.gps_ok() && self.t >= self.gps_fix_at + self.p.arm_ready_after_fix_s
    }

    /// LOITER's climb rate from the throttle stick, m/s (ArduCopter: PILOT_SPEED_UP/DN 2.5 m/s at
    /// the ends, a ±10 % dead zone around mid-stick).
    fn loiter_climb_mps(&self) -> f64 {
        let t = (f64::from(self.rc_throttle_us) - 1000.0) / 1000.0;
        let t = t.clamp(0.0, 1.0);
        if t < 0.4 {
            -2.5 * (0.4 - t) / 0.4
        } else if t > 0.6 {
            2.5 * (t - 0.6) / 0.4
        } else {
            0.0
        }
    }

    pub(super) fn on_ground(&self) -> bool {
        self.pos[2] <= 0.05
    }

    /// Advances the world by `dt` sim seconds; returns messages that became due (delayed ACKs,
    /// mission progress, status texts).
    pub fn step(&mut self, dt: f64, outs: &mut Vec<Out>) {
        self.t += dt;
        if !self.home_set && self.gps_ok() {
            self.home_set = true;
            match self.flavour {
                // ArduPilot: the EKF's origin and home come with the fix, unasked
                Flavour::ArduPilot => {
                    outs.push(out(status_text(
                        apm::MavSeverity::MAV_SEVERITY_INFO,
                        "EKF3 IMU0 origin set",
                    )));
                    outs.push(out(self.home_position()));
                }
                // PX4: known only to whoever asks for it (or streams it)
                Flavour::Px4 => {}
            }
        }
        if !self.position_announced && self.position_ok() {
            self.position_announced = true;
            if self.flavour == Flavour::ArduPilot {
                outs.push(out(status_text(
                    apm::MavSeverity::MAV_SEVERITY_INFO,
                    "EKF3 IMU0 is using GPS",
                )));
            }
        }
        if let Some((at, release)) = self.gripper_pending {
            if self.t >= at {
                self.gripper_pending = None;
                self.set_gripper(release);
                if self.flavour == Flavour::ArduPilot {
                    outs.push(out(status_text(
                        apm::MavSeverity::MAV_SEVERITY_INFO,
                        if release {
                            "Gripper load released"
                        } else {
                            "Gripper load grabbed"
                        },
                    )));
                }
            }
        }
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= self.t {
                outs.push(self.delayed.swap_remove(i).1);
            } else {
                i += 1;
            }
        }

        if self.armed {
            self.fly(dt, outs);
        } else {
            self.vel = [0.0; 3];
        }

        // battery: consumed mAh against the capacity (`battery`); the voltage never feeds back
        self.battery_step(dt);
        self.battery_failsafe_step(outs);
        self.gcs_failsafe_step(outs);
        self.fence_step(outs);

        // motors on the servo outputs, for observers
        let m = if !self.armed {
            1000
        } else if self.on_ground() {
            1100
        } else {
            1500
        };
        self.servo[..4].fill(m);
    }

    /// ArduPilot's low-voltage failsafe: BATT_LOW_TIMER seconds under BATT_LOW_VOLT, then "Battery
    /// 1 is low …", "Battery Failsafe" and BATT_FS_LOW_ACT (RTL: the autopilot switches by itself).
    fn battery_failsafe_step(&mut self, outs: &mut Vec<Out>) {
        if self.flavour != Flavour::ArduPilot || self.p.batt_low_volt <= 0.0 || self.batt_failsafe {
            return;
        }
        if self.voltage() >= self.p.batt_low_volt {
            self.batt_low_since = None;
            return;
        }
        let since = *self.batt_low_since.get_or_insert(self.t);
        if self.t - since < self.p.batt_low_timer_s {
            return;
        }
        self.batt_failsafe = true;
        let text = format!(
            "Battery 1 is low {:.2}V used {:.0} mAh",
            self.voltage(),
            self.consumed_mah
        );
        outs.push(out(status_text(
            apm::MavSeverity::MAV_SEVERITY_WARNING,
            &text,
        )));
        outs.push(out(status_text(
            apm::MavSeverity::MAV_SEVERITY_WARNING,
            "Battery Failsafe",
        )));
        if self.armed && !self.on_ground() {
            match self.p.batt_fs_low_act {
                1 => self.failsafe_mode(Mode::Land),
                2 => self.failsafe_mode(Mode::Rtl),
                _ => {}
            }
        }
    }

    /// The companion/GCS link-loss failsafes: ArduPilot FS_GCS_ENABLE (HEARTBEATs from
    /// SYSID_MYGCS), PX4 NAV_DLL_ACT (HEARTBEATs of MAV_TYPE_GCS). Only once such a HEARTBEAT was
    /// seen, only in flight.
    fn gcs_failsafe_step(&mut self, outs: &mut Vec<Out>) {
        let (action, timeout) = match self.flavour {
            Flavour::ArduPilot => (
                match self.p.fs_gcs_enable {
                    1 | 2 => Some(Mode::Rtl),
                    5 => Some(Mode::Land),
                    _ => None,
                },
                self.p.fs_gcs_timeout_s,
            ),
            Flavour::Px4 => (
                match self.p.nav_dll_act {
                    2 => Some(Mode::Rtl),
                    3 => Some(Mode::Land),
                    _ => None,
                },
                self.p.com_dl_loss_t_s,
            ),
        };
        let (Some(action), Some(last)) = (action, self.gcs_heartbeat_at) else {
            return;
        };
        let lost = self.t - last > timeout;
        if !lost {
            if self.gcs_failsafe {
                self.gcs_failsafe = false;
                if self.flavour == Flavour::ArduPilot {
                    outs.push(out(status_text(
                        apm::MavSeverity::MAV_SEVERITY_INFO,
                        "GCS Failsafe Cleared",
                    )));
                }
            }
            return;
        }
        if self.gcs_failsafe || !self.armed || self.on_ground() {
            return;
        }
        self.gcs_failsafe = true;
        match self.flavour {
            Flavour::ArduPilot => outs.push(out(status_text(
                apm::MavSeverity::MAV_SEVERITY_CRITICAL,
                "GCS Failsafe",
            ))),
            Flavour::Px4 => {
                let e = self.event("commander_gcs_lost", 4);
                outs.push(e);
            }
        }
        self.failsafe_mode(action);
    }

    /// The watched GCS is still beating in *real* time (the link's clock: a companion beats at
    /// 1 Hz wall clock whatever the sim's speed-up), so its silence is counted from now.
    pub fn gcs_heartbeat_fresh(&mut self) {
        if self.gcs_heartbeat_at.is_some() {
            self.gcs_heartbeat_at = Some(self.t);
        }
    }

    /// A mode change the autopilot makes by itself (failsafe): no position check, no ACK.
    pub(super) fn failsafe_mode(&mut self, m: Mode) {
        if self.mode == m {
            return;
        }
        if m == Mode::Rtl {
            self.rtl = RtlPhase::Climb;
        }
        self.takeoff_alt = None;
        self.mode = m;
    }

    pub(super) fn set_gripper(&mut self, release: bool) {
        self.gripper_released = release;
        self.servo[GRIPPER_CHANNEL - 1] = if release {
            GRIPPER_RELEASE_US
        } else {
            GRIPPER_GRAB_US
        };
    }

    fn fly(&mut self, dt: f64, outs: &mut Vec<Out>) {
        let here = self.pos;
        let desired: [f64; 3];
        let mut vmax_h = self.p.max_horizontal_mps;
        let mut vmax_up = self.p.max_climb_mps;
        let mut vmax_down = self.p.max_descent_mps;
        let mut landing = false;
        let mut brake = false;

        if let Some(alt) = self.takeoff_alt {
            // take-off: straight up, slower than cruise climb
            desired = [here[0], here[1], alt];
            vmax_up = self.p.takeoff_climb_mps;
            if here[2] >= alt - 0.1 {
                self.takeoff_alt = None;
                self.target = Some([here[0], here[1], alt]);
                if self.mode == Mode::Takeoff {
                    self.mode = Mode::Hold;
                }
            }
        } else {
            match self.mode {
                Mode::Rtl => {
                    let rtl_alt = self.p.rtl_alt_m.max(here[2].min(self.p.rtl_alt_m * 4.0));
                    match self.rtl {
                        RtlPhase::Climb => {
                            desired = [here[0], here[1], rtl_alt];
                            if here[2] >= self.p.rtl_alt_m - 0.2 {
                                self.rtl = RtlPhase::Return;
                            }
                        }
                        RtlPhase::Return => {
                            desired = [0.0, 0.0, here[2]];
                            if here[0].hypot(here[1]) < 1.0 {
                                self.rtl = RtlPhase::Descend;
                            }
                        }
                        RtlPhase::Descend => {
                            desired = [0.0, 0.0, 0.0];
                            landing = true;
                        }
                    }
                }
                Mode::Land => {
                    desired = [here[0], here[1], 0.0];
                    landing = true;
                }
                Mode::Auto => {
                    let (d, l) = self.mission_step(outs);
                    desired = d;
                    landing = l;
                }
                // ArduCopter LOITER: position held, climb rate from the throttle stick; with no
                // transmitter the input is 1000 µs, stick down: it descends, lands, disarms
                Mode::Hold if self.flavour == Flavour::ArduPilot => {
                    let t = self.target.unwrap_or(here);
                    let climb = self.loiter_climb_mps();
                    desired = if climb < 0.0 {
                        vmax_down = -climb;
                        landing = true;
                        [t[0], t[1], 0.0]
                    } else if climb > 0.0 {
                        vmax_up = climb;
                        [t[0], t[1], here[2] + 50.0]
                    } else if self.vel[2].abs() > 0.05 {
                        // stick centred: climb rate 0, so the altitude where it stops is held
                        [t[0], t[1], here[2]]
                    } else {
                        [t[0], t[1], t[2]]
                    };
                    if climb != 0.0 || self.vel[2].abs() > 0.05 {
                        self.target = Some([t[0], t[1], here[2]]);
                    }
                }
                // ArduCopter BRAKE: stop as hard as it can where it is, climb rate 0
                Mode::Brake => {
                    let stop = self.target.unwrap_or(here);
                    desired = [here[0], here[1], stop[2]];
                    brake = true;
                }
                Mode::Guided | Mode::Hold | Mode::Manual | Mode::Takeoff => {
                    desired = self.target.unwrap_or(here);
                    // PX4 Hold stops with its braking deceleration from cruise: it overshoots
                    // the hold point and comes back
                    brake = self.mode == Mode::Hold;
                }
            }
        }
        if landing && self.mode != Mode::Hold {
            vmax_down = if here[2] > 10.0 {
                self.p.max_descent_mps
            } else {
                self.p.land_mps
            };
            vmax_h = vmax_h.min(3.0);
        }

        // velocity toward the target with speed and acceleration limits
        let dn = desired[0] - here[0];
        let de = desired[1] - here[1];
        let du = desired[2] - here[2];
        let dist_h = dn.hypot(de);
        // slow down on approach: v = sqrt(2 a d), capped
        // the airspeed is what is limited: the wind adds to or takes from the ground speed
        let v_air = if dist_h > 1e-6 {
            self.ground_speed_limit(dn / dist_h, de / dist_h, vmax_h)
        } else {
            vmax_h
        };
        let v_h = v_air.min((2.0 * self.p.accel_mps2 * dist_h).sqrt());
        let (vn_d, ve_d) = if dist_h > 1e-6 {
            (dn / dist_h * v_h, de / dist_h * v_h)
        } else {
            (0.0, 0.0)
        };
        let vu_d = if du >= 0.0 {
            vmax_up.min((2.0 * self.p.accel_mps2 * du).sqrt())
        } else {
            -vmax_down.min((2.0 * self.p.accel_mps2 * -du).sqrt())
        };
        // a hold stops harder than the vehicle speeds up (decelerating: slower, or reversing)
        let accel = self.p.accel_mps2 * dt;
        let brake_accel = self.p.brake_accel_mps2 * dt;
        let approach = |v: f64, d: f64| {
            let decelerating = d * v < 0.0 || d.abs() < v.abs();
            let a = if brake && decelerating {
                brake_accel
            } else {
                accel
            };
            v + (d - v).clamp(-a, a)
        };
        self.vel = [
            approach(self.vel[0], vn_d),
            approach(self.vel[1], ve_d),
            approach(self.vel[2], vu_d),
        ];
        for i in 0..3 {
            self.pos[i] += self.vel[i] * dt;
        }
        // don't overshoot a target a step can cross
        if (desired[0] - self.pos[0]).hypot(desired[1] - self.pos[1]) < 0.05 {
            self.pos[0] = desired[0];
            self.pos[1] = desired[1];
        }
        // nose toward the target on real legs; short repositions (a precision approach's
        // corrections) keep the yaw, as the autopilots do
        if dist_h > 2.0 {
            self.heading_deg = ve_d.atan2(vn_d).to_degrees().rem_euclid(360.0);
        }
        if self.pos[2] <= 0.0 {
            self.pos[2] = 0.0;
            self.vel[2] = self.vel[2].max(0.0);
        }

        // touchdown and auto-disarm
        if self.on_ground() && self.takeoff_alt.is_none() && desired[2] <= 0.05 {
            self.armed_on_ground_s += dt;
            let landed_now = landing && self.armed_on_ground_s >= 1.0;
            if landed_now || self.armed_on_ground_s >= self.p.auto_disarm_s {
                self.disarm(outs);
            }
        } else {
            self.armed_on_ground_s = 0.0;
        }
    }
}
