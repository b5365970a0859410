//! Missions: the upload protocol (MISSION_COUNT / REQUEST_INT / ITEM_INT / ACK) and flying the
//! uploaded items in AUTO.

use super::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage};

#[derive(Debug, Clone)]
pub(super) struct Upload {
    pub(super) count: u16,
    pub(super) items: Vec<apm::MISSION_ITEM_INT_DATA>,
}
impl Model {
    /// One step of mission execution: returns the point to fly to and whether it is a landing.
    pub(super) fn mission_step(&mut self, outs: &mut Vec<Out>) -> ([f64; 3], bool) {
        let here = self.pos;
        loop {
            let Some(item) = self.mission.get(usize::from(self.mission_current)).cloned() else {
                // past the end: hover where we are (both autopilots loiter)
                return (self.target.unwrap_or(here), false);
            };
            let seq = self.mission_current;
            let next = |m: &mut Model, outs: &mut Vec<Out>| {
                outs.push(out(MavMessage::MISSION_ITEM_REACHED(
                    apm::MISSION_ITEM_REACHED_DATA { seq },
                )));
                m.mission_current += 1;
                m.mission_hold_until = None;
                outs.push(out(MavMessage::MISSION_CURRENT(
                    apm::MISSION_CURRENT_DATA {
                        seq: m.mission_current,
                        ..Default::default()
                    },
                )));
                m.target = Some(m.pos);
            };
            // ArduPilot's item 0 is home, never flown
            if self.flavour == Flavour::ArduPilot && seq == 0 {
                self.mission_current = 1;
                continue;
            }
            let point = |m: &Model| -> [f64; 3] {
                let (n, e) = if item.x == 0 && item.y == 0 {
                    (here[0], here[1])
                } else {
                    m.local_of(f64::from(item.x) * 1e-7, f64::from(item.y) * 1e-7)
                };
                let up = m.alt_in_frame(item.frame, f64::from(item.z));
                [n, e, up]
            };
            match item.command {
                MavCmd::MAV_CMD_NAV_TAKEOFF => {
                    let p = point(self);
                    if here[2] >= p[2] - 0.2 {
                        next(self, outs);
                        continue;
                    }
                    return ([here[0], here[1], p[2]], false);
                }
                MavCmd::MAV_CMD_NAV_WAYPOINT => {
                    let p = point(self);
                    let d = (p[0] - here[0]).hypot(p[1] - here[1]).hypot(p[2] - here[2]);
                    if d < 1.0 {
                        let until = *self
                            .mission_hold_until
                            .get_or_insert(self.t + f64::from(item.param1));
                        if self.t >= until {
                            next(self, outs);
                            continue;
                        }
                    }
                    return (p, false);
                }
                MavCmd::MAV_CMD_NAV_LAND => {
                    let mut p = point(self);
                    let d = (p[0] - here[0]).hypot(p[1] - here[1]);
                    if d > 1.0 {
                        p[2] = here[2];
                        return (p, false);
                    }
                    p[2] = 0.0;
                    return (p, true);
                }
                MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH => {
                    next(self, outs);
                    self.mode = Mode::Rtl;
                    self.rtl = RtlPhase::Climb;
                    return (here, false);
                }
                MavCmd::MAV_CMD_DO_GRIPPER => {
                    self.set_gripper(item.param2 < 0.5);
                    next(self, outs);
                    continue;
                }
                _ => {
                    // unsupported items are skipped, as the autopilots do with unknown DO commands
                    next(self, outs);
                    continue;
                }
            }
        }
    }

    pub(super) fn alt_in_frame(&self, frame: apm::MavFrame, z: f64) -> f64 {
        use apm::MavFrame as F;
        #[allow(deprecated)]
        match frame {
            F::MAV_FRAME_GLOBAL | F::MAV_FRAME_GLOBAL_INT => z - self.home.2,
            _ => z,
        }
    }

    /// Re-requests the next mission item (called by the link when the uploader went quiet).
    pub fn mission_upload_nudge(&self) -> Option<Out> {
        self.upload
            .as_ref()
            .map(|u| self.mission_request(u.items.len() as u16))
    }

    pub(super) fn mission_request(&self, seq: u16) -> Out {
        out(MavMessage::MISSION_REQUEST_INT(
            apm::MISSION_REQUEST_INT_DATA {
                seq,
                target_system: 0,
                target_component: 0,
                ..Default::default()
            },
        ))
    }

    pub(super) fn mission_ack(&self, r: apm::MavMissionResult) -> Out {
        out(MavMessage::MISSION_ACK(apm::MISSION_ACK_DATA {
            target_system: 0,
            target_component: 0,
            mavtype: r,
            ..Default::default()
        }))
    }

    pub(super) fn mission_item(&mut self, item: apm::MISSION_ITEM_INT_DATA, outs: &mut Vec<Out>) {
        let Some(up) = self.upload.as_mut() else {
            return;
        };
        let expected = up.items.len() as u16;
        if item.seq != expected {
            // a duplicate or out-of-order item: ask again for the one we need
            outs.push(self.mission_request(expected));
            return;
        }
        up.items.push(item);
        if up.items.len() as u16 == up.count {
            let done = self.upload.take().map(|u| u.items).unwrap_or_default();
            self.mission = done;
            self.mission_current = 0;
            outs.push(self.mission_ack(apm::MavMissionResult::MAV_MISSION_ACCEPTED));
        } else {
            outs.push(self.mission_request(expected + 1));
        }
    }
}
