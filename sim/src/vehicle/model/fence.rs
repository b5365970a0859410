//! The geofence: stored through the mission protocol's fence type (`MAV_MISSION_TYPE_FENCE`,
//! upload and download), configured by parameters over PARAM_SET, and enforced the way each
//! autopilot does.
//!
//! - ArduCopter: `FENCE_ENABLE`, `FENCE_TYPE` (1 ceiling, 4 the polygon/circle items),
//!   `FENCE_ALT_MAX`, `FENCE_ACTION` (0 report only, 1 RTL, 2 land). On a breach it says
//!   `<names> fence breached` as a NOTICE (`AC_Fence::print_fence_message`: "Polygon fence
//!   breached", "Max Alt fence breached"), switches mode, and sends FENCE_STATUS (at 1 Hz while
//!   enabled, and at once on a change). The vehicle must be inside every inclusion zone.
//! - PX4: `GF_ACTION` (0 none, 1 warn, 3 return, 5 land; an INT32 sent byte-wise) and
//!   `GF_MAX_VER_DIST`; no FENCE_STATUS, the breach is said in an event
//!   (`navigator_geofence_max_alt_from_home` for the ceiling; for a zone the sim uses
//!   `navigator_geofence_max_dist_from_home`, the nearest event PX4 has for "outside"). Inside
//!   any one inclusion zone is enough.
//!
//! A breach is an edge: the action fires once on leaving, and the vehicle may fly back in under
//! it (RTL from outside). Only armed and in the air.

use super::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage};
use protocol::geo::LatLon;

/// The fence parameters both flavours' names map onto.
#[derive(Debug, Clone, Default)]
pub(super) struct FenceState {
    pub(super) items: Vec<apm::MISSION_ITEM_INT_DATA>,
    pub(super) upload: Option<Upload>,
    /// ArduPilot FENCE_ENABLE; PX4: GF_ACTION != 0.
    enabled: bool,
    /// ArduPilot FENCE_TYPE bits (1 ceiling, 2 circle around home, 4 polygons).
    fence_type: u8,
    /// Metres above home; 0 = none.
    alt_max_m: f64,
    /// Mode on a breach: None = report only.
    action: Option<Mode>,
    /// PX4's raw GF_ACTION, for its PARAM_VALUE.
    px4_action: i32,
    breached: Option<apm::FenceBreach>,
    breach_count: u16,
    breach_time_ms: u32,
    last_status_at: f64,
}

impl Model {
    /// The fence's mission-protocol messages (those with `mission_type` FENCE).
    pub(super) fn fence_message(&mut self, msg: &MavMessage, outs: &mut Vec<Out>) {
        let fence = apm::MavMissionType::MAV_MISSION_TYPE_FENCE;
        match msg {
            MavMessage::MISSION_COUNT(m) => {
                if m.count == 0 {
                    self.fence.items.clear();
                    self.fence.upload = None;
                    outs.push(self.fence_ack(apm::MavMissionResult::MAV_MISSION_ACCEPTED));
                } else {
                    self.fence.upload = Some(Upload {
                        count: m.count,
                        items: Vec::new(),
                    });
                    outs.push(self.fence_request(0));
                }
            }
            MavMessage::MISSION_ITEM_INT(item) => {
                let Some(up) = self.fence.upload.as_mut() else {
                    return;
                };
                let expected = up.items.len() as u16;
                if item.seq != expected {
                    outs.push(self.fence_request(expected));
                    return;
                }
                let supported = matches!(
                    item.command,
                    MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
                        | MavCmd::MAV_CMD_NAV_FENCE_RETURN_POINT
                );
                if !supported {
                    self.fence.upload = None;
                    outs.push(self.fence_ack(apm::MavMissionResult::MAV_MISSION_UNSUPPORTED));
                    return;
                }
                up.items.push(item.clone());
                if up.items.len() as u16 == up.count {
                    let done = self
                        .fence
                        .upload
                        .take()
                        .map(|u| u.items)
                        .unwrap_or_default();
                    self.fence.items = done;
                    self.fence.breached = None;
                    outs.push(self.fence_ack(apm::MavMissionResult::MAV_MISSION_ACCEPTED));
                } else {
                    outs.push(self.fence_request(expected + 1));
                }
            }
            MavMessage::MISSION_REQUEST_LIST(_) => {
                outs.push(out(MavMessage::MISSION_COUNT(apm::MISSION_COUNT_DATA {
                    count: self.fence.items.len() as u16,
                    mission_type: fence,
                    ..Default::default()
                })));
            }
            MavMessage::MISSION_REQUEST_INT(r) => {
                if let Some(item) = self.fence.items.get(usize::from(r.seq)) {
                    // addressed to whoever asks, not to the autopilot it was sent to
                    let mut item = item.clone();
                    item.target_system = 0;
                    item.target_component = 0;
                    outs.push(out(MavMessage::MISSION_ITEM_INT(item)));
                }
            }
            MavMessage::MISSION_CLEAR_ALL(_) => {
                self.fence.items.clear();
                self.fence.upload = None;
                outs.push(self.fence_ack(apm::MavMissionResult::MAV_MISSION_ACCEPTED));
            }
            _ => {}
        }
    }

    fn fence_request(&self, seq: u16) -> Out {
        out(MavMessage::MISSION_REQUEST_INT(
            apm::MISSION_REQUEST_INT_DATA {
                seq,
                mission_type: apm::MavMissionType::MAV_MISSION_TYPE_FENCE,
                ..Default::default()
            },
        ))
    }

    fn fence_ack(&self, r: apm::MavMissionResult) -> Out {
        out(MavMessage::MISSION_ACK(apm::MISSION_ACK_DATA {
            mavtype: r,
            mission_type: apm::MavMissionType::MAV_MISSION_TYPE_FENCE,
            ..Default::default()
        }))
    }

    /// PARAM_SET for a fence parameter: set and echoed in PARAM_VALUE. Returns false for a name
    /// that is not a fence parameter of this flavour.
    pub(super) fn fence_param_set(&mut self, p: &apm::PARAM_SET_DATA, outs: &mut Vec<Out>) -> bool {
        let Ok(name) = p.param_id.to_str() else {
            return false;
        };
        let v = f64::from(p.param_value);
        let f = &mut self.fence;
        match (self.flavour, name) {
            (Flavour::ArduPilot, "FENCE_ENABLE") => f.enabled = v >= 0.5,
            (Flavour::ArduPilot, "FENCE_TYPE") => f.fence_type = v as u8,
            (Flavour::ArduPilot, "FENCE_ALT_MAX") => f.alt_max_m = v,
            (Flavour::ArduPilot, "FENCE_ACTION") => {
                f.action = match v as u8 {
                    1 => Some(Mode::Rtl),
                    2 => Some(Mode::Land),
                    _ => None,
                }
            }
            (Flavour::Px4, "GF_MAX_VER_DIST") => f.alt_max_m = v,
            (Flavour::Px4, "GF_ACTION") => {
                let raw = p.param_value.to_bits() as i32;
                f.px4_action = raw;
                f.enabled = raw != 0;
                f.action = match raw {
                    3 => Some(Mode::Rtl),
                    5 => Some(Mode::Land),
                    _ => None,
                };
            }
            _ => return false,
        }
        outs.push(out(MavMessage::PARAM_VALUE(apm::PARAM_VALUE_DATA {
            param_value: p.param_value,
            param_count: 1,
            param_index: 0,
            param_id: p.param_id,
            param_type: p.param_type,
        })));
        true
    }

    /// Pushes the vehicle this far at once (the control socket's `push`): a gust, a bad
    /// estimate, a pilot: whatever puts it out of its fence.
    pub fn push(&mut self, north_m: f64, east_m: f64, up_m: f64) {
        self.pos[0] += north_m;
        self.pos[1] += east_m;
        self.pos[2] = (self.pos[2] + up_m).max(0.0);
        if let Some(t) = self.target.as_mut() {
            // a hold stays where the push left it; a leg still flies to its target
            if self.mode != Mode::Guided && self.mode != Mode::Auto {
                *t = self.pos;
            }
        }
    }

    pub(super) fn fence_breached(&self) -> bool {
        self.fence.breached.is_some()
    }

    pub(super) fn fence_items(&self) -> usize {
        self.fence.items.len()
    }

    /// Which limit the believed position breaks now, if any.
    fn fence_check(&self) -> Option<apm::FenceBreach> {
        let f = &self.fence;
        let ceiling = match self.flavour {
            Flavour::ArduPilot => f.fence_type & 1 != 0,
            Flavour::Px4 => true,
        };
        if ceiling && f.alt_max_m > 0.0 && self.pos[2] > f.alt_max_m {
            return Some(apm::FenceBreach::FENCE_BREACH_MAXALT);
        }
        let zones_on = match self.flavour {
            Flavour::ArduPilot => f.fence_type & 4 != 0,
            Flavour::Px4 => true,
        };
        if !zones_on || f.items.is_empty() {
            return None;
        }
        let (lat, lon) = self.latlon_of(self.pos[0], self.pos[1]);
        let here = LatLon::new(lat, lon);
        let origin = LatLon::new(self.home.0, self.home.1);
        let local = |x: i32, y: i32| -> (f64, f64) {
            let d = origin.north_east_to(LatLon::new(f64::from(x) * 1e-7, f64::from(y) * 1e-7));
            (d.north_m, d.east_m)
        };
        let me = {
            let d = origin.north_east_to(here);
            (d.north_m, d.east_m)
        };
        let mut inclusions = 0;
        let mut inside_inclusions = 0;
        let mut in_exclusion = false;
        let mut i = 0;
        while i < f.items.len() {
            let item = &f.items[i];
            match item.command {
                MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
                | MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION => {
                    let c = local(item.x, item.y);
                    let inside = (me.0 - c.0).hypot(me.1 - c.1) <= f64::from(item.param1);
                    if item.command == MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION {
                        inclusions += 1;
                        inside_inclusions += usize::from(inside);
                    } else {
                        in_exclusion |= inside;
                    }
                    i += 1;
                }
                MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
                | MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION => {
                    let n = (item.param1 as usize).max(1);
                    let poly: Vec<(f64, f64)> = f.items[i..(i + n).min(f.items.len())]
                        .iter()
                        .map(|v| local(v.x, v.y))
                        .collect();
                    let inside = contains(&poly, me);
                    if item.command == MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION {
                        inclusions += 1;
                        inside_inclusions += usize::from(inside);
                    } else {
                        in_exclusion |= inside;
                    }
                    i += n;
                }
                _ => i += 1,
            }
        }
        let inside = match self.flavour {
            Flavour::ArduPilot => inside_inclusions == inclusions,
            Flavour::Px4 => inclusions == 0 || inside_inclusions > 0,
        };
        (!inside || in_exclusion).then_some(apm::FenceBreach::FENCE_BREACH_BOUNDARY)
    }

    /// One step of fence enforcement (called from [`Model::step`]).
    pub(super) fn fence_step(&mut self, outs: &mut Vec<Out>) {
        if !self.fence.enabled {
            return;
        }
        let now = if self.armed && !self.on_ground() {
            self.fence_check()
        } else {
            None
        };
        let changed = now != self.fence.breached;
        // a new breach, or another limit than the one already breached (ArduPilot tracks each
        // fence type's breach apart)
        if let (Some(kind), true) = (now, changed) {
            self.fence.breach_count = self.fence.breach_count.saturating_add(1);
            self.fence.breach_time_ms = (self.t * 1000.0) as u32;
            self.fence_announce(kind, outs);
            if let Some(mode) = self.fence.action {
                self.failsafe_mode(mode);
            }
        }
        self.fence.breached = now;
        if self.flavour == Flavour::ArduPilot
            && (changed || self.t - self.fence.last_status_at >= 1.0)
        {
            self.fence.last_status_at = self.t;
            outs.push(out(MavMessage::FENCE_STATUS(apm::FENCE_STATUS_DATA {
                breach_time: self.fence.breach_time_ms,
                breach_count: self.fence.breach_count,
                breach_status: u8::from(now.is_some()),
                breach_type: now.unwrap_or(apm::FenceBreach::FENCE_BREACH_NONE),
                ..Default::default()
            })));
        }
    }

    fn fence_announce(&mut self, kind: apm::FenceBreach, outs: &mut Vec<Out>) {
        let ceiling = kind == apm::FenceBreach::FENCE_BREACH_MAXALT;
        match self.flavour {
            Flavour::ArduPilot => outs.push(out(status_text(
                apm::MavSeverity::MAV_SEVERITY_NOTICE,
                if ceiling {
                    "Max Alt fence breached"
                } else {
                    "Polygon fence breached"
                },
            ))),
            Flavour::Px4 => {
                let e = self.event(
                    if ceiling {
                        "navigator_geofence_max_alt_from_home"
                    } else {
                        "navigator_geofence_max_dist_from_home"
                    },
                    2,
                );
                outs.push(e);
            }
        }
    }
}

/// Even-odd point-in-polygon on local metres.
fn contains(poly: &[(f64, f64)], p: (f64, f64)) -> bool {
    let mut inside = false;
    let n = poly.len();
    if n < 3 {
        return false;
    }
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether a mission-protocol message is for the fence (its `mission_type`).
pub(super) fn is_fence_message(msg: &MavMessage) -> bool {
    let t = match msg {
        MavMessage::MISSION_COUNT(m) => m.mission_type,
        MavMessage::MISSION_ITEM_INT(m) => m.mission_type,
        MavMessage::MISSION_REQUEST_LIST(m) => m.mission_type,
        MavMessage::MISSION_REQUEST_INT(m) => m.mission_type,
        MavMessage::MISSION_CLEAR_ALL(m) => m.mission_type,
        _ => return false,
    };
    t == apm::MavMissionType::MAV_MISSION_TYPE_FENCE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u16, cmd: MavCmd, p1: f32, lat: f64, lon: f64) -> MavMessage {
        MavMessage::MISSION_ITEM_INT(apm::MISSION_ITEM_INT_DATA {
            seq,
            command: cmd,
            param1: p1,
            x: (lat * 1e7) as i32,
            y: (lon * 1e7) as i32,
            frame: apm::MavFrame::MAV_FRAME_GLOBAL,
            mission_type: apm::MavMissionType::MAV_MISSION_TYPE_FENCE,
            ..Default::default()
        })
    }

    fn param(name: &str, v: f32) -> MavMessage {
        MavMessage::PARAM_SET(apm::PARAM_SET_DATA {
            param_value: v,
            param_id: name.into(),
            ..Default::default()
        })
    }

    /// A flying ArduPilot vehicle with a 100 m circle around home and a 50 m ceiling, RTL on
    /// breach; pushed 150 m north it breaches, says so, reports FENCE_STATUS and RTLs.
    #[test]
    fn a_push_out_of_the_circle_is_a_breach_with_the_autopilots_words_and_action() {
        let home = (47.0, 8.0, 400.0);
        let mut m = Model::new(
            Flavour::ArduPilot,
            Params::for_flavour(Flavour::ArduPilot),
            home,
            1,
        );
        let mut outs = Vec::new();
        m.handle(
            &MavMessage::MISSION_COUNT(apm::MISSION_COUNT_DATA {
                count: 1,
                mission_type: apm::MavMissionType::MAV_MISSION_TYPE_FENCE,
                ..Default::default()
            }),
            &mut outs,
        );
        m.handle(
            &item(
                0,
                MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION,
                100.0,
                47.0,
                8.0,
            ),
            &mut outs,
        );
        assert!(outs
            .iter()
            .any(|o| matches!(&o.msg, MavMessage::MISSION_ACK(a)
            if a.mission_type == apm::MavMissionType::MAV_MISSION_TYPE_FENCE
                && a.mavtype == apm::MavMissionResult::MAV_MISSION_ACCEPTED)));
        assert_eq!(m.view().mission_len, 0, "a fence is not a mission");
        for (n, v) in [
            ("FENCE_TYPE", 5.0),
            ("FENCE_ALT_MAX", 50.0),
            ("FENCE_ACTION", 1.0),
            ("FENCE_ENABLE", 1.0),
        ] {
            outs.clear();
            m.handle(&param(n, v), &mut outs);
            assert!(
                outs.iter()
                    .any(|o| matches!(&o.msg, MavMessage::PARAM_VALUE(p) if p.param_value == v)),
                "{n} echoed"
            );
        }
        // airborne in GUIDED, inside
        m.armed = true;
        m.mode = Mode::Guided;
        m.pos = [0.0, 0.0, 20.0];
        m.target = Some(m.pos);
        outs.clear();
        m.fence_step(&mut outs);
        assert!(!m.fence_breached());
        m.push(150.0, 0.0, 0.0);
        outs.clear();
        m.fence_step(&mut outs);
        assert!(m.fence_breached());
        assert_eq!(m.mode, Mode::Rtl);
        assert!(outs
            .iter()
            .any(|o| matches!(&o.msg, MavMessage::STATUSTEXT(t)
            if t.text.to_str().unwrap_or("") == "Polygon fence breached")));
        assert!(outs
            .iter()
            .any(|o| matches!(&o.msg, MavMessage::FENCE_STATUS(f)
            if f.breach_status == 1 && f.breach_count == 1
                && f.breach_type == apm::FenceBreach::FENCE_BREACH_BOUNDARY)));
        // still outside: no second action or count
        outs.clear();
        m.fence_step(&mut outs);
        assert_eq!(m.fence.breach_count, 1);
        // the ceiling, once back inside the circle
        m.push(-150.0, 0.0, 40.0);
        m.mode = Mode::Guided;
        outs.clear();
        m.fence_step(&mut outs);
        assert!(outs
            .iter()
            .any(|o| matches!(&o.msg, MavMessage::STATUSTEXT(t)
            if t.text.to_str().unwrap_or("") == "Max Alt fence breached")));
        assert_eq!(m.mode, Mode::Rtl);
    }

    #[test]
    fn px4_takes_its_action_bytewise_and_says_it_in_an_event() {
        let mut m = Model::new(
            Flavour::Px4,
            Params::for_flavour(Flavour::Px4),
            (47.0, 8.0, 400.0),
            1,
        );
        let mut outs = Vec::new();
        m.handle(&param("GF_MAX_VER_DIST", 30.0), &mut outs);
        m.handle(&param("GF_ACTION", f32::from_bits(5)), &mut outs);
        assert_eq!(m.fence.action, Some(Mode::Land));
        m.armed = true;
        m.mode = Mode::Hold;
        m.pos = [0.0, 0.0, 20.0];
        m.push(0.0, 0.0, 15.0);
        outs.clear();
        m.fence_step(&mut outs);
        assert_eq!(m.mode, Mode::Land);
        assert!(outs.iter().any(|o| matches!(&o.msg, MavMessage::EVENT(e)
            if e.id == px4_event_id("navigator_geofence_max_alt_from_home"))));
        assert!(!outs
            .iter()
            .any(|o| matches!(o.msg, MavMessage::FENCE_STATUS(_))));
    }
}
