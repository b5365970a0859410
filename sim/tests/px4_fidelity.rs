//! The PX4 flavour behaves the way PX4 1.16 SITL did against the drone agent (issue 11), on the
//! pure model: each test steps sim time itself.

use crate::common;

use common::model::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use protocol::geo::EARTH_RADIUS_M;
use sim::vehicle::model::px4_event_id;
use sim::vehicle::Flavour;

const HOME_ALT: f32 = 488.0;

fn airborne(s: &mut Sim, alt: f32) {
    s.run_until(60.0, |v| v.position_ok);
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
    let r = s.command(
        MavCmd::MAV_CMD_NAV_TAKEOFF,
        [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, HOME_ALT + alt],
    );
    assert_eq!(r, MavResult::MAV_RESULT_ACCEPTED);
    s.run_until(120.0, |v| {
        v.alt_rel_m >= f64::from(alt) - 0.1 && v.climb_mps.abs() < 0.05
    });
}

fn events_from(s: &Sim, from: usize) -> Vec<apm::EVENT_DATA> {
    s.log[from..]
        .iter()
        .filter_map(|(_, m)| match m {
            MavMessage::EVENT(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn without_manual_control_the_rc_receiver_is_unhealthy_and_it_flies_anyway() {
    let mut s = Sim::new(Flavour::Px4);
    s.run_until(60.0, |v| v.position_ok);
    let Some(MavMessage::SYS_STATUS(st)) = s.telemetry(id::<apm::SYS_STATUS_DATA>()) else {
        panic!()
    };
    use apm::MavSysStatusSensor as S;
    let rc = S::MAV_SYS_STATUS_SENSOR_RC_RECEIVER;
    assert!(st.onboard_control_sensors_present.contains(rc));
    assert!(st.onboard_control_sensors_enabled.contains(rc));
    assert!(!st.onboard_control_sensors_health.contains(rc));
    // PX4 never sets the pre-arm bit: readiness comes from arming itself and its events
    assert!(!st
        .onboard_control_sensors_present
        .contains(S::MAV_SYS_STATUS_PREARM_CHECK));
    airborne(&mut s, 10.0);
    assert!(s.m.view().armed);
}

#[test]
fn refusals_come_as_events_never_as_statustext() {
    let mut s = Sim::new(Flavour::Px4);
    s.run(1.0);
    let from = s.log.len();
    assert_eq!(s.arm(), MavResult::MAV_RESULT_DENIED);
    let events = events_from(&s, from);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].id, px4_event_id("check_modes_global_pos"));
    // PX4's id: component 1 in the top byte
    assert_eq!(events[0].id >> 24, 1);
    assert_eq!(events[0].log_levels & 0x0f, 3, "error level for users");
    assert!(s.texts_from(0).is_empty(), "{:?}", s.texts_from(0));

    // the sequence is announced, and a missed event can be asked for again
    let Some(MavMessage::CURRENT_EVENT_SEQUENCE(c)) =
        s.telemetry(id::<apm::CURRENT_EVENT_SEQUENCE_DATA>())
    else {
        panic!()
    };
    assert_eq!(c.sequence, events[0].sequence);
    let again = s.log.len();
    s.send(MavMessage::REQUEST_EVENT(apm::REQUEST_EVENT_DATA {
        target_system: 1,
        target_component: 1,
        first_sequence: c.sequence,
        last_sequence: c.sequence,
    }));
    assert_eq!(events_from(&s, again), events);
}

#[test]
fn the_gripper_answers_in_progress_then_accepted_a_second_later() {
    let mut s = Sim::new(Flavour::Px4);
    airborne(&mut s, 10.0);
    let from = s.log.len();
    let t0 = s.m.t;
    assert_eq!(
        s.command(
            MavCmd::MAV_CMD_DO_GRIPPER,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        ),
        MavResult::MAV_RESULT_IN_PROGRESS
    );
    s.run_until(3.0, |v| v.gripper_released);
    s.run(0.1);
    let accepted = s.log[from..]
        .iter()
        .find_map(|(t, m)| match m {
            MavMessage::COMMAND_ACK(a)
                if a.command == MavCmd::MAV_CMD_DO_GRIPPER
                    && a.result == MavResult::MAV_RESULT_ACCEPTED =>
            {
                Some(*t)
            }
            _ => None,
        })
        .expect("final ACCEPTED");
    assert!((accepted - t0 - 1.0).abs() < 0.05, "{} s", accepted - t0);
}

#[test]
fn all_sixteen_outputs_come_in_one_message_on_port_0() {
    let mut s = Sim::new(Flavour::Px4);
    // actuator set 1 drives output 9 (AUX1)
    let r = s.command(
        MavCmd::MAV_CMD_DO_SET_ACTUATOR,
        [1.0, f32::NAN, f32::NAN, f32::NAN, f32::NAN, f32::NAN, 0.0],
    );
    assert_eq!(r, MavResult::MAV_RESULT_ACCEPTED);
    let Some(MavMessage::SERVO_OUTPUT_RAW(o)) = s.telemetry(id::<apm::SERVO_OUTPUT_RAW_DATA>())
    else {
        panic!()
    };
    assert_eq!(o.port, 0);
    assert_eq!(o.servo9_raw, 2000);
}

#[test]
fn home_is_known_only_once_asked_for() {
    let mut s = Sim::new(Flavour::Px4);
    s.run_until(60.0, |v| v.position_ok);
    s.run(30.0);
    assert!(
        !s.log
            .iter()
            .any(|(_, m)| matches!(m, MavMessage::HOME_POSITION(_))),
        "PX4 does not send home unasked"
    );
    let from = s.log.len();
    let r = s.command(
        MavCmd::MAV_CMD_REQUEST_MESSAGE,
        [
            id::<apm::HOME_POSITION_DATA>() as f32,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ],
    );
    assert_eq!(r, MavResult::MAV_RESULT_ACCEPTED);
    assert!(s.log[from..]
        .iter()
        .any(|(_, m)| matches!(m, MavMessage::HOME_POSITION(_))));
}

#[test]
fn hold_from_cruise_overshoots_about_six_metres_and_comes_back() {
    let mut s = Sim::new(Flavour::Px4);
    airborne(&mut s, 20.0);
    let north = 47.397_742 + 0.01;
    s.send(MavMessage::COMMAND_INT(apm::COMMAND_INT_DATA {
        command: MavCmd::MAV_CMD_DO_REPOSITION,
        frame: apm::MavFrame::MAV_FRAME_GLOBAL,
        param1: -1.0,
        param2: 1.0,
        x: (north * 1e7) as i32,
        y: (8.545_594 * 1e7) as i32,
        z: HOME_ALT + 20.0,
        ..Default::default()
    }));
    s.run_until(60.0, |v| v.speed_mps > 9.9);
    // a leg is flown in Hold already: holding is a reposition to where the vehicle is
    let here = s.m.view();
    let at_switch = here.lat_deg;
    s.send(MavMessage::COMMAND_INT(apm::COMMAND_INT_DATA {
        command: MavCmd::MAV_CMD_DO_REPOSITION,
        frame: apm::MavFrame::MAV_FRAME_GLOBAL,
        param1: -1.0,
        param2: 1.0,
        x: (here.lat_deg * 1e7).round() as i32,
        y: (here.lon_deg * 1e7).round() as i32,
        z: HOME_ALT + 20.0,
        ..Default::default()
    }));
    assert_eq!(s.m.view().mode, "AUTO.LOITER");
    let mut furthest: f64 = 0.0;
    for _ in 0..1000 {
        s.run(0.02);
        let d = (s.m.view().lat_deg - at_switch).to_radians() * EARTH_RADIUS_M;
        furthest = furthest.max(d);
    }
    assert!((4.5..=7.5).contains(&furthest), "overshoot {furthest:.1} m");
    let back = (s.m.view().lat_deg - at_switch).to_radians() * EARTH_RADIUS_M;
    assert!(back.abs() < 0.5, "back at the hold point: {back:.2} m");
}

#[test]
fn with_nav_dll_act_it_refuses_to_arm_without_a_gcs_and_returns_when_it_goes_quiet() {
    let mut s = Sim::with(Flavour::Px4, |p| {
        p.nav_dll_act = 2;
        p.com_dl_loss_t_s = 5.0;
    });
    s.run_until(60.0, |v| v.position_ok);
    let from = s.log.len();
    assert_eq!(s.arm(), MavResult::MAV_RESULT_DENIED);
    assert_eq!(
        events_from(&s, from)
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [px4_event_id("check_rc_dl_no_dllink")]
    );
    let gcs = |s: &mut Sim, mavtype| {
        let hb = apm::HEARTBEAT_DATA {
            mavtype,
            autopilot: apm::MavAutopilot::MAV_AUTOPILOT_INVALID,
            ..Default::default()
        };
        s.m.note_heartbeat(
            mavlink::MavHeader {
                system_id: 1,
                component_id: 191,
                sequence: 0,
            },
            &hb,
        );
    };
    // a companion's HEARTBEAT is not a data link to PX4; a ground station's is
    gcs(&mut s, apm::MavType::MAV_TYPE_ONBOARD_CONTROLLER);
    assert_eq!(s.arm(), MavResult::MAV_RESULT_DENIED);
    gcs(&mut s, apm::MavType::MAV_TYPE_GCS);
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
    let r = s.command(
        MavCmd::MAV_CMD_NAV_TAKEOFF,
        [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, HOME_ALT + 10.0],
    );
    assert_eq!(r, MavResult::MAV_RESULT_ACCEPTED);
    for _ in 0..8 {
        gcs(&mut s, apm::MavType::MAV_TYPE_GCS);
        s.run(1.0);
    }
    assert_ne!(s.m.view().mode, "AUTO.RTL");
    // the ground station (the agent with heartbeat_type = "gcs") dies
    let from = s.log.len();
    s.run(6.0);
    assert_eq!(s.m.view().mode, "AUTO.RTL");
    assert_eq!(
        events_from(&s, from)
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [px4_event_id("commander_gcs_lost")]
    );
}
