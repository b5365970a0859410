//! The ArduPilot flavour fails the way ArduCopter 4.7 did against the drone agent (issue 11), on the
//! pure model: each test steps sim time itself, so a minute of flight takes milliseconds.

use crate::common;

use common::model::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use sim::vehicle::Flavour;

/// Boots until the EKF navigates by GPS, arms in GUIDED and takes off to `alt`.
fn airborne(alt: f32) -> Sim {
    let mut s = Sim::new(Flavour::ArduPilot);
    s.run_until(60.0, |v| v.position_ok);
    assert_eq!(s.set_mode(GUIDED, 0.0), MavResult::MAV_RESULT_ACCEPTED);
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
    let r = s.command(
        MavCmd::MAV_CMD_NAV_TAKEOFF,
        [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, alt],
    );
    assert_eq!(r, MavResult::MAV_RESULT_ACCEPTED);
    s.run_until(120.0, |v| {
        v.alt_rel_m >= f64::from(alt) - 0.1 && v.climb_mps.abs() < 0.05
    });
    s
}

#[test]
fn loiter_without_a_transmitter_descends_to_the_ground_and_holds_at_mid_stick() {
    let mut s = airborne(30.0);
    assert_eq!(
        s.m.view().rc_throttle_us,
        1000,
        "no transmitter: stick down"
    );
    assert_eq!(s.set_mode(LOITER, 0.0), MavResult::MAV_RESULT_ACCEPTED);
    s.run(4.0);
    let v = s.m.view();
    // 2.5 m/s down after a second of acceleration
    assert!(v.alt_rel_m < 22.0, "{v:?}");
    assert!((v.climb_mps + 2.5).abs() < 0.1, "{v:?}");

    // mid-stick: the altitude where the stick was let go is held
    s.m.set_rc_throttle(1500);
    s.run(2.0);
    let held = s.m.view().alt_rel_m;
    s.run(30.0);
    assert!(
        (s.m.view().alt_rel_m - held).abs() < 0.1,
        "{:?}",
        s.m.view()
    );

    // stick down again: to the ground, landed and disarmed where it was
    s.m.set_rc_throttle(1000);
    let from = s.log.len();
    s.run_until(60.0, |v| !v.armed);
    assert!(s.m.view().on_ground);
    assert!(s.texts_from(from).contains(&"Disarming motors".to_owned()));
}

#[test]
fn brake_stops_from_cruise_and_holds_its_altitude_whatever_the_stick() {
    let mut s = airborne(30.0);
    // cruise north at full speed
    let target = (47.397_742 + 0.01, 8.545_594);
    s.send(MavMessage::COMMAND_INT(apm::COMMAND_INT_DATA {
        command: MavCmd::MAV_CMD_DO_REPOSITION,
        frame: apm::MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
        param1: -1.0,
        param2: 1.0,
        x: (target.0 * 1e7) as i32,
        y: (target.1 * 1e7) as i32,
        z: 30.0,
        ..Default::default()
    }));
    s.run_until(60.0, |v| v.speed_mps > 9.9);
    assert_eq!(s.set_mode(BRAKE, 0.0), MavResult::MAV_RESULT_ACCEPTED);
    let stop_s = s.run_until(10.0, |v| v.speed_mps < 0.05);
    assert!(stop_s < 2.0, "BRAKE stops hard: {stop_s} s");
    let stopped = s.m.view();
    s.run(30.0);
    let v = s.m.view();
    assert_eq!(v.mode, "BRAKE");
    assert!((v.alt_rel_m - 30.0).abs() < 0.5, "{v:?}");
    assert!((v.lat_deg - stopped.lat_deg).abs() < 1e-6, "{v:?}");
}

#[test]
fn before_the_ekf_uses_gps_it_arms_in_stabilize_and_then_refuses_every_position_mode() {
    let mut s = Sim::new(Flavour::ArduPilot);
    let from = s.log.len();
    s.run_until(30.0, |v| v.gps_fix);
    // the fix brings the EKF's origin and home, but not yet a position to navigate by
    let origin = s.text_at(from, "EKF3 IMU0 origin set").expect("origin set");
    assert!(s
        .log
        .iter()
        .any(|(_, m)| matches!(m, MavMessage::HOME_POSITION(_))));
    let ekf = |s: &mut Sim| match s.telemetry(id::<apm::EKF_STATUS_REPORT_DATA>()) {
        Some(MavMessage::EKF_STATUS_REPORT(e)) => e.flags.bits(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ekf(&mut s),
        0xa7,
        "constant-position mode, no absolute position"
    );
    assert!(!s.m.view().position_ok);

    // STABILIZE arms: ArduCopter checks a mode's position needs only while armed
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
    let before = s.log.len();
    assert_eq!(s.set_mode(GUIDED, 0.0), MavResult::MAV_RESULT_FAILED);
    assert_eq!(s.set_mode(RTL, 0.0), MavResult::MAV_RESULT_FAILED);
    assert_eq!(s.set_mode(AUTO, 0.0), MavResult::MAV_RESULT_FAILED);
    assert_eq!(
        s.texts_from(before)[..2],
        [
            "Mode change to GUIDED failed: requires position",
            "Mode change to RTL failed: requires position"
        ]
    );
    assert_eq!(s.m.view().mode, "STABILIZE");
    assert_eq!(
        s.command(MavCmd::MAV_CMD_COMPONENT_ARM_DISARM, [0.0; 7]),
        MavResult::MAV_RESULT_ACCEPTED
    );

    // disarmed, GUIDED is taken; arming in it is refused, cleanly
    assert_eq!(s.set_mode(GUIDED, 0.0), MavResult::MAV_RESULT_ACCEPTED);
    let before = s.log.len();
    assert_eq!(s.arm(), MavResult::MAV_RESULT_FAILED);
    assert_eq!(s.texts_from(before), ["Arm: Need Position Estimate"]);
    assert!(!s.m.view().armed);

    // some seconds later the EKF uses GPS: the report says so, and the arm goes through
    let using = s.run_until(60.0, |v| v.position_ok);
    let at = s
        .text_at(from, "EKF3 IMU0 is using GPS")
        .expect("using GPS");
    assert!(
        at - origin >= 5.0,
        "origin at {origin} s, GPS used at {at} s"
    );
    assert!(using > 0.0);
    assert_eq!(ekf(&mut s), 0x33f);
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
}

#[test]
fn outputs_9_to_16_are_only_in_the_extension_fields_of_port_0() {
    let mut s = Sim::new(Flavour::ArduPilot);
    assert_eq!(
        s.command(
            MavCmd::MAV_CMD_DO_SET_SERVO,
            [9.0, 1900.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        ),
        MavResult::MAV_RESULT_ACCEPTED
    );
    let Some(MavMessage::SERVO_OUTPUT_RAW(o)) = s.telemetry(id::<apm::SERVO_OUTPUT_RAW_DATA>())
    else {
        panic!("no SERVO_OUTPUT_RAW")
    };
    assert_eq!(o.port, 0);
    assert_eq!(o.servo9_raw, 1900);
    assert_eq!([o.servo1_raw, o.servo8_raw], [1000, 0]);
}

#[test]
fn the_gripper_is_acked_at_once_and_reported_released_half_a_second_later() {
    let mut s = airborne(10.0);
    let from = s.log.len();
    let t0 = s.m.t;
    assert_eq!(
        s.command(
            MavCmd::MAV_CMD_DO_GRIPPER,
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        ),
        MavResult::MAV_RESULT_ACCEPTED
    );
    assert_eq!(s.texts_from(from), ["Gripper load releasing"]);
    assert!(!s.m.view().gripper_released, "still closed at the ACK");
    s.run_until(2.0, |v| v.gripper_released);
    let at = s
        .text_at(from, "Gripper load released")
        .expect("released report");
    assert!((at - t0 - 0.5).abs() < 0.05, "{} s after the ACK", at - t0);
}

#[test]
fn the_battery_failsafe_goes_by_voltage_and_switches_to_rtl_by_itself() {
    let mut s = airborne(20.0);
    s.m.params_mut().set("BATT_FS_LOW_ACT", 2.0).unwrap();
    let percent = s.m.view().battery_pct;
    assert!(percent > 90.0);
    // 12.6 V full 3S; 2.3 V of sag puts it at 10.3 V, under BATT_LOW_VOLT 10.5
    s.m.set_voltage_sag(2.3);
    let from = s.log.len();
    s.run(9.0);
    assert_eq!(
        s.m.view().mode,
        "GUIDED",
        "BATT_LOW_TIMER: 10 s under the voltage first"
    );
    s.run_until(2.0, |v| v.mode == "RTL");
    let texts = s.texts_from(from);
    assert!(texts[0].starts_with("Battery 1 is low 10."), "{texts:?}");
    assert!(texts[0].contains("V used "), "{texts:?}");
    assert_eq!(texts[1], "Battery Failsafe");
    let v = s.m.view();
    // the percentage is consumed mAh against BATT_CAPACITY: the voltage does not move it
    assert!(v.battery_pct > 85.0 && v.battery_pct <= percent, "{v:?}");
    let (_, status, _) = s.heartbeat_mode();
    assert_eq!(status, apm::MavState::MAV_STATE_CRITICAL);
    let Some(MavMessage::BATTERY_STATUS(b)) = s.telemetry(id::<apm::BATTERY_STATUS_DATA>()) else {
        panic!()
    };
    assert_eq!(
        b.charge_state,
        apm::MavBatteryChargeState::MAV_BATTERY_CHARGE_STATE_LOW
    );
    let Some(MavMessage::SYS_STATUS(st)) = s.telemetry(id::<apm::SYS_STATUS_DATA>()) else {
        panic!()
    };
    assert!(!st
        .onboard_control_sensors_health
        .contains(apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_BATTERY));
    // and it flies home and lands
    s.run_until(300.0, |v| !v.armed);
}

#[test]
fn without_the_rtl_action_the_failsafe_only_warns() {
    let mut s = airborne(20.0);
    s.m.set_voltage_sag(2.3);
    let from = s.log.len();
    s.run(12.0);
    assert!(s.texts_from(from).contains(&"Battery Failsafe".to_owned()));
    assert_eq!(s.m.view().mode, "GUIDED");
}

#[test]
fn the_gcs_failsafe_returns_when_the_watched_system_goes_quiet() {
    let mut s = airborne(20.0);
    s.m.params_mut().set("FS_GCS_ENABLE", 1.0).unwrap();
    s.m.params_mut().set("SYSID_MYGCS", 1.0).unwrap();
    let hb = apm::HEARTBEAT_DATA {
        mavtype: apm::MavType::MAV_TYPE_ONBOARD_CONTROLLER,
        autopilot: apm::MavAutopilot::MAV_AUTOPILOT_INVALID,
        ..Default::default()
    };
    let header = |sys| mavlink::MavHeader {
        system_id: sys,
        component_id: 191,
        sequence: 0,
    };
    // another system's HEARTBEAT does not count; ours (system 1) does
    for _ in 0..3 {
        s.m.note_heartbeat(header(1), &hb);
        s.run(1.0);
    }
    let from = s.log.len();
    for _ in 0..10 {
        s.m.note_heartbeat(header(255), &hb);
        s.run(1.0);
    }
    assert_eq!(s.m.view().mode, "RTL");
    assert!(s.texts_from(from).contains(&"GCS Failsafe".to_owned()));
}
