//! The flight controller's receive path: arbitrary *valid* MAVLink messages, in arbitrary order,
//! folded into the snapshot by the same code the receive loop runs (`hal`'s `fuzzing` hook).
//! Each message is: system id, component id, a message id (one byte: an index into the messages
//! the hal reads, or any dialect id), a payload length and the payload (short payloads are
//! zero-extended, as MAVLink 2 does).
#![no_main]

use hal::flight::mavlink::fuzzing;
use libfuzzer_sys::fuzz_target;
use mavlink::dialects::ardupilotmega::MavMessage;
use mavlink::{MavHeader, MavlinkVersion, Message};

/// The messages `hal` acts on: HEARTBEAT, SYS_STATUS, GPS_RAW_INT, GLOBAL_POSITION_INT,
/// SERVO_OUTPUT_RAW, MISSION_REQUEST, MISSION_CURRENT, MISSION_ITEM_REACHED, MISSION_ACK,
/// MISSION_REQUEST_INT, COMMAND_ACK, BATTERY_STATUS, HOME_POSITION, EXTENDED_SYS_STATE,
/// STATUSTEXT.
const READ: [u32; 15] = [0, 1, 24, 33, 36, 40, 42, 46, 47, 51, 77, 147, 242, 245, 253];

fuzz_target!(|data: &[u8]| {
    let mut msgs = Vec::new();
    let mut rest = data;
    while let [sys, comp, id, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let msgid = if usize::from(*id) < READ.len() * 4 {
            READ[usize::from(*id) % READ.len()]
        } else {
            u32::from(*id) // any other id the dialect knows (most are)
        };
        let Ok(msg) = MavMessage::parse(MavlinkVersion::V2, msgid, payload) else {
            continue;
        };
        // mostly the autopilot (1, 1), sometimes a GCS or another vehicle
        let system_id = if *sys < 200 { 1 } else { *sys };
        let component_id = if *comp < 200 { 1 } else { *comp };
        msgs.push((
            MavHeader {
                system_id: u32::from(system_id),
                component_id,
                sequence: 0,
            },
            msg,
        ));
    }
    let _ = fuzzing::fold(msgs);
});
