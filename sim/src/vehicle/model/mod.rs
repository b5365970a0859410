//! The simulated quadcopter and its autopilot logic: no I/O, no clocks. Messages in, messages out,
//! and [`Model::step`] advances the world by a fixed sim-time step, so a run is a pure function of
//! the seed and of which messages arrived at which step.
//!
//! Behaviour follows what the real SITLs do (see ../shared/design.md, "Observed on a real …", and
//! issue 11's runs against ArduCopter 4.7 and PX4 1.16, three of them recorded in
//! `hal/tests/fixtures/mavlink`): ArduCopter arms in STABILIZE before its EKF uses GPS but refuses
//! position modes while armed without it, takes off only in GUIDED, flies
//! SET_POSITION_TARGET_GLOBAL_INT / DO_REPOSITION in GUIDED, LOITERs by the RC throttle (stick down
//! without a transmitter), BRAKEs at climb rate 0, reports its gripper 0.5 s after the ACK, runs its
//! own battery and GCS failsafes, RTLs at 15 m; PX4 arms once its estimator has a position, takes
//! off with an AMSL altitude, flies DO_REPOSITION from Hold (overshooting ~6 m when stopped from
//! cruise), says why only through EVENTs, sends home only when asked, RTLs at 30 m and answers
//! DO_GRIPPER with IN_PROGRESS then ACCEPTED. Both land and disarm by themselves after RTL/LAND.
//! The mode numbers here are written independently of the hal's on purpose: the sim checks the hal.
//!
//! One concern a file: `params` the world's limits, `mode` the flavours' mode numbers,
//! `physics` the world and the control loop, `battery` the pack's draw and the wind, `mission` missions, `commands` messages in,
//! `telemetry` messages out.

mod battery;
mod commands;
mod fence;
mod mission;
mod mode;
mod params;
mod physics;
mod telemetry;

pub use battery::Wind;
pub use commands::px4_event_id;
pub use mode::Mode;
pub use params::{Params, GRIPPER_CHANNEL, GRIPPER_GRAB_US, GRIPPER_RELEASE_US};
pub use telemetry::status_text;

use super::Flavour;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use mission::Upload;
use physics::SplitMix;
use std::collections::HashMap;
use telemetry::default_intervals;

/// Faults the tests switch on (see `super::Fault` for the public form).
#[derive(Debug, Default, Clone)]
pub struct FaultState {
    pub gps_lost_until: f64,
    pub lose_acks: u32,
    pub refuse: HashMap<u32, (MavResult, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RtlPhase {
    Climb,
    Return,
    Descend,
}

/// A message the model wants sent, possibly later (sim time).
#[derive(Debug, Clone)]
pub struct Out {
    pub msg: MavMessage,
    /// COMMAND_ACKs are subject to ack faults.
    pub is_ack: bool,
}

/// Observable state for tests and the control socket.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub t_s: f64,
    pub armed: bool,
    pub mode: &'static str,
    pub lat_deg: f64,
    pub lon_deg: f64,
    pub alt_rel_m: f64,
    /// True position (without [`Params::gps_offset_ne_m`]) and heading, degrees from north: where
    /// the downward camera looks (`sim::camera`).
    pub heading_deg: f64,
    pub on_ground: bool,
    pub battery_pct: f64,
    pub gps_fix: bool,
    pub servo_us: [u16; 16],
    pub gripper_released: bool,
    pub mission_len: usize,
    pub mission_current: u16,
    pub landing_targets: u32,
    /// Age of the last LANDING_TARGET when it arrived: wall clock now minus its `time_usec`
    /// (the capture time, same host in tests), microseconds. The capture-to-wire latency bench
    /// reads it.
    pub landing_target_age_us: Option<u64>,
    /// HEARTBEATs received from companions/GCSs, and the last sender (system, component, MAV_TYPE).
    pub heartbeats_received: u32,
    pub last_heartbeat_from: Option<(u32, u8, u32)>,
    /// Every COMMAND_LONG/COMMAND_INT received: (command id, confirmation).
    pub commands: Vec<(u32, u8)>,
    /// The estimator navigates by GPS (EKF_STATUS_REPORT / ESTIMATOR_STATUS say so).
    pub position_ok: bool,
    /// Pack voltage as reported.
    pub voltage: f64,
    /// ArduPilot's battery failsafe fired / a link-loss failsafe (FS_GCS, NAV_DLL_ACT) is active.
    pub battery_failsafe: bool,
    pub gcs_failsafe: bool,
    /// ArduPilot's RC throttle input, µs.
    pub rc_throttle_us: u16,
    /// Vertical speed, m/s up.
    pub climb_mps: f64,
    /// Horizontal speed, m/s.
    pub speed_mps: f64,
    /// Fence items stored (`MAV_MISSION_TYPE_FENCE`) and whether the vehicle is in breach now.
    pub fence_items: usize,
    pub fence_breached: bool,
    /// Speed through the air, m/s, and the pack's current now, A (issue 12).
    pub airspeed_mps: f64,
    pub current_a: f64,
}

pub struct Model {
    pub flavour: Flavour,
    p: Params,
    pub t: f64,
    home: (f64, f64, f64),
    /// local north, east, up from home (m)
    pos: [f64; 3],
    vel: [f64; 3],
    heading_deg: f64,
    armed: bool,
    armed_on_ground_s: f64,
    mode: Mode,
    target: Option<[f64; 3]>,
    takeoff_alt: Option<f64>,
    rtl: RtlPhase,
    /// Percent left: consumed mAh against the capacity (never the voltage).
    battery: f64,
    consumed_mah: f64,
    /// Transient voltage dip (battery_sag) and the control socket's lasting sag.
    sag_v: f64,
    voltage_sag_v: f64,
    wind: battery::Wind,
    /// ArduPilot's RC throttle input, µs (1000 = stick down: no transmitter).
    rc_throttle_us: u16,
    /// Since when the voltage is under BATT_LOW_VOLT, and whether the failsafe fired.
    batt_low_since: Option<f64>,
    batt_failsafe: bool,
    /// Sim time of the last HEARTBEAT from the GCS the failsafes watch (ArduPilot: SYSID_MYGCS;
    /// PX4: any MAV_TYPE_GCS), and whether its failsafe fired.
    gcs_heartbeat_at: Option<f64>,
    gcs_failsafe: bool,
    /// PX4 events protocol: the sequence number of the last EVENT sent.
    event_seq: u16,
    /// Events already sent, for REQUEST_EVENT (the last few).
    events_sent: Vec<apm::EVENT_DATA>,
    /// "EKF3 IMU0 is using GPS" said.
    position_announced: bool,
    gps_fix_at: f64,
    home_set: bool,
    servo: [u16; 16],
    gripper_released: bool,
    gripper_pending: Option<(f64, bool)>,
    mission: Vec<apm::MISSION_ITEM_INT_DATA>,
    mission_current: u16,
    mission_hold_until: Option<f64>,
    upload: Option<Upload>,
    pub intervals: HashMap<u32, f64>,
    pub faults: FaultState,
    rng: SplitMix,
    landing_targets: u32,
    landing_target_age_us: Option<u64>,
    heartbeats_received: u32,
    last_heartbeat_from: Option<(u32, u8, u32)>,
    commands: Vec<(u32, u8)>,
    /// Outputs due at a later sim time.
    delayed: Vec<(f64, Out)>,
    fence: fence::FenceState,
}

fn ack(command: MavCmd, result: MavResult) -> Out {
    Out {
        msg: MavMessage::COMMAND_ACK(apm::COMMAND_ACK_DATA {
            command,
            result,
            ..Default::default()
        }),
        is_ack: true,
    }
}

fn out(msg: MavMessage) -> Out {
    Out { msg, is_ack: false }
}

impl Model {
    pub fn new(flavour: Flavour, params: Params, home: (f64, f64, f64), seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        // the fix comes a little earlier or later from run to run, as a real receiver's does
        let gps_fix_at = params.gps_fix_after_s * (1.0 + 0.2 * rng.unit());
        let mut servo = [0u16; 16];
        servo[..4].fill(1000);
        servo[GRIPPER_CHANNEL - 1] = GRIPPER_GRAB_US;
        Model {
            flavour,
            p: params,
            t: 0.0,
            home,
            pos: [0.0; 3],
            vel: [0.0; 3],
            heading_deg: 0.0,
            armed: false,
            armed_on_ground_s: 0.0,
            mode: Mode::Manual,
            target: None,
            takeoff_alt: None,
            rtl: RtlPhase::Climb,
            battery: 100.0,
            consumed_mah: 0.0,
            sag_v: 0.0,
            voltage_sag_v: 0.0,
            wind: battery::Wind::default(),
            rc_throttle_us: 1000,
            batt_low_since: None,
            batt_failsafe: false,
            gcs_heartbeat_at: None,
            gcs_failsafe: false,
            event_seq: 0,
            events_sent: Vec::new(),
            position_announced: false,
            gps_fix_at,
            home_set: false,
            servo,
            gripper_released: false,
            gripper_pending: None,
            mission: Vec::new(),
            mission_current: 0,
            mission_hold_until: None,
            upload: None,
            intervals: default_intervals(flavour),
            faults: FaultState::default(),
            rng,
            landing_targets: 0,
            landing_target_age_us: None,
            heartbeats_received: 0,
            last_heartbeat_from: None,
            commands: Vec::new(),
            delayed: Vec::new(),
            fence: fence::FenceState::default(),
        }
    }

    pub fn view(&self) -> View {
        let (lat, lon) = self.true_latlon_of(self.pos[0], self.pos[1]);
        View {
            t_s: self.t,
            armed: self.armed,
            mode: self.mode.name(self.flavour),
            lat_deg: lat,
            lon_deg: lon,
            alt_rel_m: self.pos[2],
            heading_deg: self.heading_deg,
            on_ground: self.on_ground(),
            battery_pct: self.battery,
            gps_fix: self.gps_ok(),
            servo_us: self.servo,
            gripper_released: self.gripper_released,
            mission_len: self.mission.len(),
            mission_current: self.mission_current,
            landing_targets: self.landing_targets,
            landing_target_age_us: self.landing_target_age_us,
            heartbeats_received: self.heartbeats_received,
            last_heartbeat_from: self.last_heartbeat_from,
            commands: self.commands.clone(),
            position_ok: self.position_ok(),
            voltage: self.voltage(),
            battery_failsafe: self.batt_failsafe,
            gcs_failsafe: self.gcs_failsafe,
            rc_throttle_us: self.rc_throttle_us,
            climb_mps: self.vel[2],
            speed_mps: self.vel[0].hypot(self.vel[1]),
            fence_items: self.fence_items(),
            fence_breached: self.fence_breached(),
            airspeed_mps: self.airspeed(),
            current_a: self.current_a(),
        }
    }

    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.p
    }

    /// ArduPilot's RC throttle input (µs); the control socket's `rc_throttle`.
    pub fn set_rc_throttle(&mut self, us: u16) {
        self.rc_throttle_us = us.clamp(800, 2200);
    }

    /// A lasting voltage sag (the control socket's `voltage_sag`): the percentage does not move.
    pub fn set_voltage_sag(&mut self, volts: f64) {
        self.voltage_sag_v = volts.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::telemetry::id;
    use super::*;

    fn run(seed: u64) -> Vec<View> {
        let mut m = Model::new(
            Flavour::Px4,
            Params::for_flavour(Flavour::Px4),
            (47.0, 8.0, 400.0),
            seed,
        );
        let mut outs = Vec::new();
        let mut views = Vec::new();
        let arm = MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
            param1: 1.0,
            command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
            ..Default::default()
        });
        let takeoff = MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
            param7: 410.0,
            command: MavCmd::MAV_CMD_NAV_TAKEOFF,
            ..Default::default()
        });
        for step in 0..2000 {
            m.step(0.02, &mut outs);
            if step == 400 {
                m.handle(&arm, &mut outs);
                m.handle(&takeoff, &mut outs);
            }
            for id in [
                id::<apm::GPS_RAW_INT_DATA>(),
                id::<apm::GLOBAL_POSITION_INT_DATA>(),
            ] {
                let _ = m.telemetry_message(id);
            }
            views.push(m.view());
        }
        views
    }

    #[test]
    fn same_seed_same_run() {
        let a = run(7);
        assert_eq!(a, run(7));
        assert!(
            a.last().unwrap().alt_rel_m > 9.0,
            "took off: {:?}",
            a.last()
        );
        // the seed moves the GPS fix time, so another seed gives another run
        assert_ne!(a, run(8));
    }

    #[test]
    fn arming_is_refused_until_the_fix_and_each_flavour_refuses_its_way() {
        for (f, result) in [
            (Flavour::Px4, MavResult::MAV_RESULT_DENIED),
            (Flavour::ArduPilot, MavResult::MAV_RESULT_FAILED),
        ] {
            let mut m = Model::new(f, Params::for_flavour(f), (47.0, 8.0, 400.0), 1);
            let mut outs = Vec::new();
            let arm = MavMessage::COMMAND_LONG(apm::COMMAND_LONG_DATA {
                param1: 1.0,
                command: MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                ..Default::default()
            });
            m.handle(&arm, &mut outs);
            let acks: Vec<MavResult> = outs
                .iter()
                .filter_map(|o| match &o.msg {
                    MavMessage::COMMAND_ACK(a) => Some(a.result),
                    _ => None,
                })
                .collect();
            assert_eq!(acks, vec![result]);
            // ArduPilot says why in a STATUSTEXT, PX4 1.16 in an EVENT (events protocol) only
            let said = |o: &Out| match f {
                Flavour::ArduPilot => matches!(o.msg, MavMessage::STATUSTEXT(_)),
                Flavour::Px4 => matches!(o.msg, MavMessage::EVENT(_)),
            };
            assert!(outs.iter().any(said));
            assert!(
                outs.iter()
                    .all(|o| !matches!(o.msg, MavMessage::STATUSTEXT(_)))
                    || f == Flavour::ArduPilot
            );
        }
    }
}
