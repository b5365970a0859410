//! The ArduPilot flavour held against three recorded ArduCopter 4.7 SITL streams
//! (`hal/tests/fixtures/mavlink/*.tlog`): where the sim sends a message the real autopilot sent,
//! it sends the same message id, the same field values for the fields the agent reads, and the
//! same words.

use crate::common;

use common::model::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};
use mavlink::{Message, MessageData};
use sim::vehicle::Flavour;
use std::collections::BTreeSet;
use std::path::Path;

/// Every message of the three recordings (8-byte stamp, then a MAVLink 2 frame).
fn recorded() -> Vec<MavMessage> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hal/tests/fixtures/mavlink");
    let mut all = Vec::new();
    for name in [
        "ardupilot-servo9.tlog",
        "ardupilot-early-task.tlog",
        "ardupilot-battery-failsafe.tlog",
    ] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let mut i = 0;
        while i + 8 < data.len() {
            i += 8;
            let len = usize::from(data[i + 1]);
            let n = 12 + len + if data[i + 2] & 1 == 1 { 13 } else { 0 };
            let mut r = mavlink::MavlinkReader::new(&data[i..i + n]);
            if let Ok((h, m)) = r.read_any_message::<MavMessage>() {
                // the autopilot's own messages (not the agent's HEARTBEATs the recorder saw)
                if (h.system_id, h.component_id) == (1, 1) {
                    all.push(m);
                }
            }
            i += n;
        }
    }
    all
}

/// Numbers replaced by `#`: "Battery 1 is low 10.30V used 361 mAh" → "Battery # is low #V used # mAh".
fn shape(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

fn text(m: &MavMessage) -> Option<String> {
    match m {
        MavMessage::STATUSTEXT(t) => Some(t.text.to_str().unwrap_or("").to_owned()),
        _ => None,
    }
}

/// A whole ArduPilot day in the sim: the early arm, then a delivery with the gripper and servo 9,
/// and the battery failsafe. Returns everything sent, telemetry included.
fn sim_day() -> Vec<MavMessage> {
    let mut s = Sim::new(Flavour::ArduPilot);
    let mut sent = Vec::new();
    let streams: Vec<u32> = s.m.intervals.keys().copied().collect();
    let sample = |s: &mut Sim, sent: &mut Vec<MavMessage>| {
        sent.push(s.m.heartbeat());
        for id in &streams {
            sent.extend(s.telemetry(*id));
        }
    };
    sample(&mut s, &mut sent);
    s.run_until(60.0, |v| v.gps_fix);
    sample(&mut s, &mut sent);
    // the early task: armed in STABILIZE, then every position mode refused, disarmed
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
    sample(&mut s, &mut sent);
    assert_eq!(s.set_mode(GUIDED, 0.0), MavResult::MAV_RESULT_FAILED);
    assert_eq!(s.set_mode(RTL, 0.0), MavResult::MAV_RESULT_FAILED);
    s.command(MavCmd::MAV_CMD_COMPONENT_ARM_DISARM, [0.0; 7]);
    s.run_until(60.0, |v| v.position_ok);
    sample(&mut s, &mut sent);
    // the delivery
    s.command(
        MavCmd::MAV_CMD_DO_GRIPPER,
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    s.run(1.0);
    assert_eq!(s.set_mode(GUIDED, 0.0), MavResult::MAV_RESULT_ACCEPTED);
    assert_eq!(s.arm(), MavResult::MAV_RESULT_ACCEPTED);
    s.command(
        MavCmd::MAV_CMD_NAV_TAKEOFF,
        [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, 20.0],
    );
    s.run(20.0);
    sample(&mut s, &mut sent);
    s.command(
        MavCmd::MAV_CMD_DO_SET_SERVO,
        [9.0, 1900.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    s.command(
        MavCmd::MAV_CMD_DO_GRIPPER,
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
    s.run(1.0);
    sample(&mut s, &mut sent);
    // the battery failsafe with the RTL action
    s.m.params_mut().set("BATT_FS_LOW_ACT", 2.0).unwrap();
    s.m.set_voltage_sag(2.3);
    s.run_until(30.0, |v| v.mode == "RTL");
    sample(&mut s, &mut sent);
    s.run_until(300.0, |v| !v.armed);
    sample(&mut s, &mut sent);
    sent.extend(s.log.into_iter().map(|(_, m)| m));
    sent
}

#[test]
fn the_sim_says_what_ardupilot_said_where_it_says_it() {
    let rec = recorded();
    let day = sim_day();

    // message ids: the sim sends nothing the real autopilot did not (on a ground station's link;
    // COMMAND_ACK and the mission protocol are replies the recorder did not ask for)
    let rec_ids: BTreeSet<u32> = rec.iter().map(|m| m.message_id()).collect();
    let replies = [
        apm::COMMAND_ACK_DATA::ID,
        apm::MISSION_ACK_DATA::ID,
        apm::MISSION_REQUEST_INT_DATA::ID,
        apm::MISSION_ITEM_REACHED_DATA::ID,
        apm::AUTOPILOT_VERSION_DATA::ID,
        // streams ArduPilot sends that the recorder did not ask for
        apm::ATTITUDE_DATA::ID,
        apm::MISSION_CURRENT_DATA::ID,
    ];
    let extra: BTreeSet<u32> = day
        .iter()
        .map(|m| m.message_id())
        .filter(|id| !rec_ids.contains(id) && !replies.contains(id))
        .collect();
    assert!(
        extra.is_empty(),
        "message ids ArduPilot never sent: {extra:?}"
    );

    // words: every text the sim sends is one the recordings hold (numbers aside), but for the
    // few the recordings cannot show, which come from the account of the same runs
    let rec_texts: BTreeSet<String> = rec.iter().filter_map(text).map(|t| shape(&t)).collect();
    let not_recorded = [
        "Gripper load releasing",
        "Gripper load released",
        "Arm: Need Position Estimate",
    ];
    let sim_texts: BTreeSet<String> = day.iter().filter_map(text).collect();
    for t in &sim_texts {
        assert!(
            rec_texts.contains(&shape(t)) || not_recorded.contains(&t.as_str()),
            "ArduPilot never said {t:?}"
        );
    }
    for t in [
        "EKF3 IMU0 origin set",
        "EKF3 IMU0 is using GPS",
        "Arming motors",
        "Disarming motors",
        "Mode change to GUIDED failed: requires position",
        "Mode change to RTL failed: requires position",
        "Gripper load grabbing",
        "Gripper load grabbed",
        "Battery Failsafe",
    ] {
        assert!(sim_texts.contains(t), "the sim never says {t:?}");
    }
    assert!(sim_texts
        .iter()
        .any(|t| shape(t) == "Battery # is low #V used # mAh"));

    // the fields the agent reads take the values ArduPilot gave them
    let values = |msgs: &[MavMessage], f: &dyn Fn(&MavMessage) -> Option<u64>| -> BTreeSet<u64> {
        msgs.iter().filter_map(f).collect()
    };
    let check = |what: &str, f: &dyn Fn(&MavMessage) -> Option<u64>| {
        let sim = values(&day, f);
        let real = values(&rec, f);
        assert!(!sim.is_empty(), "{what}: the sim never sent it");
        assert!(
            sim.is_subset(&real),
            "{what}: sim {sim:x?}, ArduPilot {real:x?}"
        );
    };
    check("EKF_STATUS_REPORT.flags", &|m| match m {
        MavMessage::EKF_STATUS_REPORT(e) => Some(u64::from(e.flags.bits())),
        _ => None,
    });
    check("SERVO_OUTPUT_RAW.port", &|m| match m {
        MavMessage::SERVO_OUTPUT_RAW(o) => Some(u64::from(o.port)),
        _ => None,
    });
    check("SERVO_OUTPUT_RAW.servo9_raw", &|m| match m {
        MavMessage::SERVO_OUTPUT_RAW(o) => Some(u64::from(o.servo9_raw)),
        _ => None,
    });
    check("HEARTBEAT.base_mode", &|m| match m {
        MavMessage::HEARTBEAT(h) => Some(u64::from(h.base_mode.bits())),
        _ => None,
    });
    check("HEARTBEAT.system_status", &|m| match m {
        MavMessage::HEARTBEAT(h) => Some(h.system_status as u64),
        _ => None,
    });
    check("HEARTBEAT.custom_mode", &|m| match m {
        MavMessage::HEARTBEAT(h) => Some(u64::from(h.custom_mode)),
        _ => None,
    });
    check("BATTERY_STATUS.charge_state", &|m| match m {
        MavMessage::BATTERY_STATUS(b) => Some(b.charge_state as u64),
        _ => None,
    });
    check("BATTERY_STATUS.voltages[1]", &|m| match m {
        MavMessage::BATTERY_STATUS(b) => Some(u64::from(b.voltages[1])),
        _ => None,
    });
    check("STATUSTEXT.severity", &|m| match m {
        MavMessage::STATUSTEXT(t) => Some(t.severity as u64),
        _ => None,
    });
    // SYS_STATUS: the sensors the sim reports are ones ArduPilot reports
    let present = |msgs: &[MavMessage]| {
        msgs.iter()
            .filter_map(|m| match m {
                MavMessage::SYS_STATUS(s) => Some(s.onboard_control_sensors_present.bits()),
                _ => None,
            })
            .fold(0u32, |a, b| a | b)
    };
    let (sim, real) = (present(&day), present(&rec));
    assert_eq!(sim & !real, 0, "sim {sim:#x}, ArduPilot {real:#x}");
}
