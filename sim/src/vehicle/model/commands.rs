//! Messages in: COMMAND_LONG/INT, mode changes and their refusals, arming checks, and the way
//! each flavour says why (ArduPilot STATUSTEXT, PX4 EVENTs).

use super::telemetry::id;
use super::*;
use mavlink::dialects::ardupilotmega as apm;
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavResult};

/// PX4's event id for an event name: the autopilot component (1) in the top byte, the low 24
/// bits of the name's FNV-1a 32 hash (PX4's `events::ID()`).
pub fn px4_event_id(name: &str) -> u32 {
    let hash = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    (1 << 24) | (hash & 0xff_ffff)
}
fn param_value(name: &str, value: f32, index: u16, count: usize) -> Out {
    out(MavMessage::PARAM_VALUE(apm::PARAM_VALUE_DATA {
        param_value: value,
        param_count: count as u16,
        param_index: index,
        param_id: name.into(),
        param_type: apm::MavParamType::MAV_PARAM_TYPE_REAL32,
    }))
}

impl Model {
    /// Records a HEARTBEAT from the other side (tests check the companion's identity and rate).
    /// Returns whether the HEARTBEAT is one a link-loss failsafe watches.
    pub fn note_heartbeat(&mut self, header: mavlink::MavHeader, hb: &apm::HEARTBEAT_DATA) -> bool {
        self.heartbeats_received += 1;
        // what each autopilot's link-loss failsafe watches: ArduPilot a system id (SYSID_MYGCS,
        // any type), PX4 a ground station (MAV_TYPE_GCS, any id)
        let watched = match self.flavour {
            Flavour::ArduPilot => header.system_id == u32::from(self.p.sysid_mygcs),
            Flavour::Px4 => hb.mavtype == apm::MavType::MAV_TYPE_GCS,
        };
        if watched {
            self.gcs_heartbeat_at = Some(self.t);
        }
        self.last_heartbeat_from = Some((header.system_id, header.component_id, hb.mavtype as u32));
        watched
    }

    /// Handles one message from the companion/GCS; pushes replies.
    #[allow(deprecated)]
    pub fn handle(&mut self, msg: &MavMessage, outs: &mut Vec<Out>) {
        if fence::is_fence_message(msg) {
            self.fence_message(msg, outs);
            return;
        }
        match msg {
            // the other modelled parameters; an unknown name gets no answer, as on both
            // autopilots
            MavMessage::PARAM_SET(p) if !self.fence_param_set(p, outs) => {
                if let Ok(name) = p.param_id.to_str() {
                    if self.p.set(name, f64::from(p.param_value)).is_ok() {
                        outs.push(out(MavMessage::PARAM_VALUE(apm::PARAM_VALUE_DATA {
                            param_value: p.param_value,
                            param_count: 1,
                            param_index: 0,
                            param_id: p.param_id,
                            param_type: p.param_type,
                        })));
                    }
                }
            }
            MavMessage::COMMAND_LONG(c) => {
                self.commands.push((c.command as u32, c.confirmation));
                let p = [
                    c.param1, c.param2, c.param3, c.param4, c.param5, c.param6, c.param7,
                ];
                let pos = (
                    f64::from(c.param5),
                    f64::from(c.param6),
                    f64::from(c.param7),
                );
                self.command(c.command, p, pos, apm::MavFrame::MAV_FRAME_GLOBAL, outs);
            }
            MavMessage::COMMAND_INT(c) => {
                self.commands.push((c.command as u32, 0));
                let p = [
                    c.param1, c.param2, c.param3, c.param4, c.x as f32, c.y as f32, c.z,
                ];
                let pos = (f64::from(c.x) * 1e-7, f64::from(c.y) * 1e-7, f64::from(c.z));
                self.command(c.command, p, pos, c.frame, outs);
            }
            MavMessage::SET_MODE(m) => {
                let (p2, p3) = match self.flavour {
                    Flavour::ArduPilot => (m.custom_mode as f32, 0.0),
                    Flavour::Px4 => (
                        ((m.custom_mode >> 16) & 0xff) as f32,
                        ((m.custom_mode >> 24) & 0xff) as f32,
                    ),
                };
                let r = self.set_mode_cmd(p2, p3, outs);
                outs.push(ack(MavCmd::MAV_CMD_DO_SET_MODE, r));
            }
            // ArduCopter flies position targets in GUIDED (PX4 needs OFFBOARD: not simulated)
            MavMessage::SET_POSITION_TARGET_GLOBAL_INT(t)
                if self.flavour == Flavour::ArduPilot
                    && self.mode == Mode::Guided
                    && self.armed =>
            {
                let (n, e) =
                    self.local_of(f64::from(t.lat_int) * 1e-7, f64::from(t.lon_int) * 1e-7);
                let up = self.alt_in_frame(t.coordinate_frame, f64::from(t.alt));
                self.takeoff_alt = None;
                self.target = Some([n, e, up.max(0.0)]);
            }
            MavMessage::REQUEST_DATA_STREAM(r) => {
                use apm::MavDataStream as S;
                let ids: Vec<u32> = match r.req_stream_id {
                    S::MAV_DATA_STREAM_ALL => self.intervals.keys().copied().collect(),
                    S::MAV_DATA_STREAM_POSITION => vec![id::<apm::GLOBAL_POSITION_INT_DATA>()],
                    S::MAV_DATA_STREAM_EXTENDED_STATUS => vec![
                        id::<apm::SYS_STATUS_DATA>(),
                        id::<apm::GPS_RAW_INT_DATA>(),
                        id::<apm::MISSION_CURRENT_DATA>(),
                    ],
                    S::MAV_DATA_STREAM_EXTRA1 => vec![id::<apm::ATTITUDE_DATA>()],
                    S::MAV_DATA_STREAM_EXTRA2 => vec![id::<apm::VFR_HUD_DATA>()],
                    S::MAV_DATA_STREAM_RC_CHANNELS => vec![id::<apm::SERVO_OUTPUT_RAW_DATA>()],
                    _ => vec![],
                };
                for i in ids {
                    if r.start_stop == 0 || r.req_message_rate == 0 {
                        self.intervals.remove(&i);
                    } else {
                        self.intervals
                            .insert(i, 1.0 / f64::from(r.req_message_rate));
                    }
                }
            }
            MavMessage::MISSION_COUNT(m) => {
                if m.count == 0 {
                    self.mission.clear();
                    self.mission_current = 0;
                    outs.push(self.mission_ack(apm::MavMissionResult::MAV_MISSION_ACCEPTED));
                } else {
                    self.upload = Some(Upload {
                        count: m.count,
                        items: Vec::new(),
                    });
                    outs.push(self.mission_request(0));
                }
            }
            MavMessage::MISSION_ITEM_INT(item) => self.mission_item(item.clone(), outs),
            MavMessage::MISSION_CLEAR_ALL(_) => {
                self.mission.clear();
                self.mission_current = 0;
                self.upload = None;
                outs.push(self.mission_ack(apm::MavMissionResult::MAV_MISSION_ACCEPTED));
            }
            MavMessage::MISSION_SET_CURRENT(m) if usize::from(m.seq) < self.mission.len() => {
                self.mission_current = m.seq;
                outs.push(out(MavMessage::MISSION_CURRENT(
                    apm::MISSION_CURRENT_DATA {
                        seq: m.seq,
                        ..Default::default()
                    },
                )));
            }
            MavMessage::MISSION_REQUEST_LIST(_) => {
                outs.push(out(MavMessage::MISSION_COUNT(apm::MISSION_COUNT_DATA {
                    count: self.mission.len() as u16,
                    target_system: 0,
                    target_component: 0,
                    ..Default::default()
                })));
            }
            MavMessage::MISSION_REQUEST_INT(r) => {
                if let Some(item) = self.mission.get(usize::from(r.seq)) {
                    outs.push(out(MavMessage::MISSION_ITEM_INT(item.clone())));
                }
            }
            MavMessage::REQUEST_EVENT(r) if self.flavour == Flavour::Px4 => {
                let wanted = |seq: u16| {
                    seq.wrapping_sub(r.first_sequence)
                        <= r.last_sequence.wrapping_sub(r.first_sequence)
                };
                for e in self.events_sent.iter().filter(|e| wanted(e.sequence)) {
                    outs.push(out(MavMessage::EVENT(e.clone())));
                }
            }
            MavMessage::LANDING_TARGET(lt) => {
                self.landing_targets += 1;
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0);
                self.landing_target_age_us = Some(now_us.saturating_sub(lt.time_usec));
            }
            // the parameter protocol's reads, for ground stations (a few of each autopilot's real
            // names; PARAM_SET is not simulated)
            MavMessage::PARAM_REQUEST_READ(r) => {
                let table = self.param_table();
                let found = match r.param_index {
                    i if i >= 0 => table.get(i as usize).map(|p| (i as u16, *p)),
                    _ => table
                        .iter()
                        .enumerate()
                        .find(|(_, (name, _))| r.param_id.to_str() == Ok(*name))
                        .map(|(i, p)| (i as u16, *p)),
                };
                if let Some((index, (name, value))) = found {
                    outs.push(param_value(name, value, index, table.len()));
                }
            }
            MavMessage::PARAM_REQUEST_LIST(_) => {
                let table = self.param_table();
                for (i, (name, value)) in table.iter().enumerate() {
                    outs.push(param_value(name, *value, i as u16, table.len()));
                }
            }
            _ => {}
        }
    }

    /// The parameters a ground station can read: a few of each autopilot's own.
    fn param_table(&self) -> Vec<(&'static str, f32)> {
        match self.flavour {
            Flavour::ArduPilot => vec![
                ("SYSID_THISMAV", 1.0),
                ("SYSID_MYGCS", f32::from(self.p.sysid_mygcs)),
                ("RTL_ALT", (self.p.rtl_alt_m * 100.0) as f32),
            ],
            Flavour::Px4 => vec![
                ("MAV_SYS_ID", 1.0),
                ("RTL_RETURN_ALT", self.p.rtl_alt_m as f32),
            ],
        }
    }

    /// Why arming is refused now, if it is: (ArduPilot's text, PX4's event name).
    fn arming_refusal(&self) -> Option<(&'static str, &'static str)> {
        let gcs_needed = self.flavour == Flavour::Px4
            && self.p.nav_dll_act > 0
            && !self
                .gcs_heartbeat_at
                .is_some_and(|at| self.t - at <= self.p.com_dl_loss_t_s);
        if gcs_needed {
            return Some(("PreArm: No connection to the GCS", "check_rc_dl_no_dllink"));
        }
        if !self.gps_ok() {
            return Some(("Arm: AHRS: waiting for home", "check_modes_global_pos"));
        }
        // ArduCopter arms in STABILIZE before its EKF uses GPS; in a position mode it needs one
        let mode_needs_position = self.flavour == Flavour::Px4 || self.mode != Mode::Manual;
        if mode_needs_position && !self.position_ok() {
            return Some(("Arm: Need Position Estimate", "check_modes_global_pos"));
        }
        if self.battery < 10.0 {
            return Some(("Arm: Battery below minimum", "check_battery_low"));
        }
        None
    }

    /// A STATUSTEXT only ArduPilot sends (PX4 1.16 logs these on its console, not over MAVLink).
    fn ardupilot_says(&self, outs: &mut Vec<Out>, severity: apm::MavSeverity, text: &str) {
        if self.flavour == Flavour::ArduPilot {
            outs.push(out(status_text(severity, text)));
        }
    }

    /// Says why something was refused the way the autopilot does: ArduPilot a STATUSTEXT, PX4
    /// 1.16 an EVENT (events protocol) and no STATUSTEXT at all.
    fn refuse(&mut self, (text, px4_event): (&str, &str), outs: &mut Vec<Out>) {
        match self.flavour {
            Flavour::ArduPilot => outs.push(out(status_text(
                apm::MavSeverity::MAV_SEVERITY_CRITICAL,
                text,
            ))),
            Flavour::Px4 => {
                let e = self.event(px4_event, 3);
                outs.push(e);
            }
        }
    }

    pub(super) fn disarm(&mut self, outs: &mut Vec<Out>) {
        self.armed = false;
        self.vel = [0.0; 3];
        self.target = None;
        if self.flavour == Flavour::ArduPilot {
            outs.push(out(status_text(
                apm::MavSeverity::MAV_SEVERITY_INFO,
                "Disarming motors",
            )));
        }
    }

    /// A PX4 EVENT (events protocol) with the id PX4 derives from the name, the next sequence
    /// number and `level` (0 emergency .. 7 debug) for both users and the log.
    pub(super) fn event(&mut self, name: &str, level: u8) -> Out {
        self.event_seq = self.event_seq.wrapping_add(1);
        let e = apm::EVENT_DATA {
            destination_component: 0,
            destination_system: 0,
            id: px4_event_id(name),
            event_time_boot_ms: (self.t * 1000.0) as u32,
            sequence: self.event_seq,
            log_levels: (level << 4) | level,
            arguments: [0; 40],
        };
        if self.events_sent.len() >= 32 {
            self.events_sent.remove(0);
        }
        self.events_sent.push(e.clone());
        out(MavMessage::EVENT(e))
    }

    fn refusal(&mut self, cmd: MavCmd) -> Option<MavResult> {
        let e = self.faults.refuse.get_mut(&(cmd as u32))?;
        if e.1 == 0 {
            return None;
        }
        e.1 -= 1;
        Some(e.0)
    }

    fn deny(&self) -> MavResult {
        match self.flavour {
            Flavour::ArduPilot => MavResult::MAV_RESULT_FAILED,
            Flavour::Px4 => MavResult::MAV_RESULT_DENIED,
        }
    }

    fn command(
        &mut self,
        cmd: MavCmd,
        p: [f32; 7],
        pos: (f64, f64, f64),
        frame: apm::MavFrame,
        outs: &mut Vec<Out>,
    ) {
        if let Some(r) = self.refusal(cmd) {
            outs.push(out(status_text(
                apm::MavSeverity::MAV_SEVERITY_WARNING,
                "Command refused (injected fault)",
            )));
            outs.push(ack(cmd, r));
            return;
        }
        let mut after_ack = None;
        use MavResult as R;
        let r = match cmd {
            MavCmd::MAV_CMD_COMPONENT_ARM_DISARM => {
                let force = (p[1] - 21196.0).abs() < 0.5;
                if p[0] > 0.5 {
                    if self.armed {
                        R::MAV_RESULT_ACCEPTED
                    } else if let Some(refusal) = self.arming_refusal().filter(|_| !force) {
                        self.refuse(refusal, outs);
                        self.deny()
                    } else {
                        self.armed = true;
                        self.armed_on_ground_s = 0.0;
                        self.target = Some(self.pos);
                        if self.flavour == Flavour::ArduPilot {
                            outs.push(out(status_text(
                                apm::MavSeverity::MAV_SEVERITY_INFO,
                                "Arming motors",
                            )));
                        }
                        R::MAV_RESULT_ACCEPTED
                    }
                } else if !self.armed {
                    R::MAV_RESULT_ACCEPTED
                } else if !self.on_ground() && !force {
                    if self.flavour == Flavour::ArduPilot {
                        outs.push(out(status_text(
                            apm::MavSeverity::MAV_SEVERITY_CRITICAL,
                            "Disarm: vehicle is flying",
                        )));
                    }
                    self.deny()
                } else {
                    self.disarm(outs);
                    R::MAV_RESULT_ACCEPTED
                }
            }
            MavCmd::MAV_CMD_NAV_TAKEOFF => {
                let alt = match self.flavour {
                    Flavour::ArduPilot => f64::from(p[6]),
                    Flavour::Px4 if p[6].is_nan() => 2.5,
                    Flavour::Px4 => f64::from(p[6]) - self.home.2,
                };
                if !self.armed {
                    self.ardupilot_says(
                        outs,
                        apm::MavSeverity::MAV_SEVERITY_WARNING,
                        "Takeoff: vehicle not armed",
                    );
                    self.deny()
                } else if self.flavour == Flavour::ArduPilot && self.mode != Mode::Guided {
                    self.ardupilot_says(
                        outs,
                        apm::MavSeverity::MAV_SEVERITY_WARNING,
                        "Takeoff: switch to GUIDED first",
                    );
                    R::MAV_RESULT_FAILED
                } else if !self.on_ground() {
                    self.deny()
                } else if alt.is_nan() || alt <= 0.5 {
                    R::MAV_RESULT_DENIED
                } else {
                    self.takeoff_alt = Some(alt);
                    if self.flavour == Flavour::Px4 {
                        self.mode = Mode::Takeoff;
                    }
                    R::MAV_RESULT_ACCEPTED
                }
            }
            MavCmd::MAV_CMD_DO_SET_MODE => self.set_mode_cmd(p[1], p[2], outs),
            MavCmd::MAV_CMD_DO_REPOSITION => {
                let change_mode = (p[1] as u32) & 1 == 1;
                if !self.armed || self.on_ground() && self.takeoff_alt.is_none() {
                    self.ardupilot_says(
                        outs,
                        apm::MavSeverity::MAV_SEVERITY_WARNING,
                        "Reposition: not flying",
                    );
                    self.deny()
                } else if !self.position_ok() {
                    R::MAV_RESULT_TEMPORARILY_REJECTED
                } else if self.flavour == Flavour::ArduPilot
                    && self.mode != Mode::Guided
                    && !change_mode
                {
                    R::MAV_RESULT_DENIED
                } else {
                    let (n, e) = self.local_of(pos.0, pos.1);
                    let up = if pos.2.is_nan() {
                        self.pos[2]
                    } else {
                        self.alt_in_frame(frame, pos.2)
                    };
                    self.takeoff_alt = None;
                    self.target = Some([n, e, up.max(1.0)]);
                    self.mode = match self.flavour {
                        Flavour::ArduPilot => Mode::Guided,
                        Flavour::Px4 => Mode::Hold,
                    };
                    R::MAV_RESULT_ACCEPTED
                }
            }
            MavCmd::MAV_CMD_DO_GRIPPER => {
                let release = p[1] < 0.5;
                match self.flavour {
                    // ArduPilot ACKs at once ("releasing") and reports "released" ~0.5 s later
                    Flavour::ArduPilot => {
                        outs.push(out(status_text(
                            apm::MavSeverity::MAV_SEVERITY_INFO,
                            if release {
                                "Gripper load releasing"
                            } else {
                                "Gripper load grabbing"
                            },
                        )));
                        self.gripper_pending = Some((self.t + self.p.ardupilot_gripper_s, release));
                        R::MAV_RESULT_ACCEPTED
                    }
                    Flavour::Px4 => {
                        // the payload deliverer reports progress, then the final result
                        self.gripper_pending = Some((self.t + self.p.px4_gripper_s, release));
                        self.delayed.push((
                            self.t + self.p.px4_gripper_s,
                            ack(cmd, R::MAV_RESULT_ACCEPTED),
                        ));
                        R::MAV_RESULT_IN_PROGRESS
                    }
                }
            }
            MavCmd::MAV_CMD_DO_SET_SERVO => match self.flavour {
                Flavour::ArduPilot => {
                    let ch = p[0] as usize;
                    if (1..=16).contains(&ch) && (500.0..=2500.0).contains(&p[1]) {
                        self.servo[ch - 1] = p[1] as u16;
                        R::MAV_RESULT_ACCEPTED
                    } else {
                        R::MAV_RESULT_DENIED
                    }
                }
                Flavour::Px4 => R::MAV_RESULT_UNSUPPORTED,
            },
            MavCmd::MAV_CMD_DO_SET_ACTUATOR => match self.flavour {
                Flavour::Px4 => {
                    for (i, v) in p[..6].iter().enumerate() {
                        if !v.is_nan() {
                            self.servo[8 + i] =
                                (1500.0 + 500.0 * v.clamp(-1.0, 1.0)).round() as u16;
                        }
                    }
                    R::MAV_RESULT_ACCEPTED
                }
                Flavour::ArduPilot => R::MAV_RESULT_UNSUPPORTED,
            },
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL => {
                let msg_id = p[0] as u32;
                let us = p[1];
                if us < 0.0 {
                    self.intervals.remove(&msg_id);
                } else if us == 0.0 {
                    if let Some(d) = default_intervals(self.flavour).get(&msg_id) {
                        self.intervals.insert(msg_id, *d);
                    }
                } else {
                    self.intervals.insert(msg_id, f64::from(us) * 1e-6);
                }
                R::MAV_RESULT_ACCEPTED
            }
            MavCmd::MAV_CMD_REQUEST_MESSAGE => {
                let msg_id = p[0] as u32;
                match self.telemetry_message(msg_id) {
                    Some(m) => {
                        // the ACK first, then the message (as the autopilots send them)
                        after_ack = Some(out(m));
                        R::MAV_RESULT_ACCEPTED
                    }
                    None if msg_id == id::<apm::HOME_POSITION_DATA>() => {
                        R::MAV_RESULT_TEMPORARILY_REJECTED
                    }
                    None => R::MAV_RESULT_UNSUPPORTED,
                }
            }
            MavCmd::MAV_CMD_MISSION_START => {
                if self.mission.is_empty() {
                    self.ardupilot_says(
                        outs,
                        apm::MavSeverity::MAV_SEVERITY_WARNING,
                        "Mission: no mission",
                    );
                    self.deny()
                } else {
                    let first = p[0].max(0.0) as u16;
                    self.mission_current = first.min(self.mission.len() as u16 - 1);
                    self.mission_hold_until = None;
                    self.mode = Mode::Auto;
                    R::MAV_RESULT_ACCEPTED
                }
            }
            MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH => self.enter_mode(Mode::Rtl, outs),
            MavCmd::MAV_CMD_NAV_LAND => self.enter_mode(Mode::Land, outs),
            _ => R::MAV_RESULT_UNSUPPORTED,
        };
        outs.push(ack(cmd, r));
        outs.extend(after_ack);
    }

    /// A ground station's SET_MODE by the mode's name in this flavour (the control socket's
    /// `gcs_mode`): the same path as any SET_MODE, so the same refusals. SET_MODE (deprecated,
    /// still what MAVProxy's `mode` sends) keeps it out of [`View::commands`], which lists the
    /// companion's commands.
    #[allow(deprecated)]
    pub fn gcs_set_mode(&mut self, name: &str, outs: &mut Vec<Out>) -> Result<MavResult, String> {
        const ALL: [Mode; 8] = [
            Mode::Manual,
            Mode::Guided,
            Mode::Hold,
            Mode::Brake,
            Mode::Takeoff,
            Mode::Auto,
            Mode::Rtl,
            Mode::Land,
        ];
        let mode = ALL
            .into_iter()
            .find(|m| m.name(self.flavour).eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("no mode `{name}` in this flavour"))?;
        let custom_mode = mode.custom_mode(self.flavour);
        let msg = MavMessage::SET_MODE(apm::SET_MODE_DATA {
            custom_mode,
            target_system: 1,
            base_mode: apm::MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        });
        let before = outs.len();
        self.handle(&msg, outs);
        let result = outs[before..].iter().find_map(|o| match &o.msg {
            MavMessage::COMMAND_ACK(a) if o.is_ack => Some(a.result),
            _ => None,
        });
        Ok(result.unwrap_or(MavResult::MAV_RESULT_FAILED))
    }

    fn set_mode_cmd(&mut self, p2: f32, p3: f32, outs: &mut Vec<Out>) -> MavResult {
        match Mode::from_set_mode(self.flavour, p2, p3) {
            Some(m) => self.enter_mode(m, outs),
            None => match self.flavour {
                Flavour::ArduPilot => MavResult::MAV_RESULT_FAILED,
                Flavour::Px4 => MavResult::MAV_RESULT_UNSUPPORTED,
            },
        }
    }

    fn enter_mode(&mut self, m: Mode, outs: &mut Vec<Out>) -> MavResult {
        if m == self.mode {
            return MavResult::MAV_RESULT_ACCEPTED;
        }
        let needs_position = !matches!(m, Mode::Manual | Mode::Land);
        // ArduCopter checks a mode's position needs only while armed: disarmed, GUIDED is taken
        // before the EKF has a position (and the arm is then refused); armed, it is refused
        let refused = match self.flavour {
            Flavour::ArduPilot => self.armed && !self.position_ok(),
            Flavour::Px4 => !self.gps_ok(),
        };
        if needs_position && refused {
            let text = format!(
                "Mode change to {} failed: requires position",
                m.name(self.flavour)
            );
            match self.flavour {
                Flavour::ArduPilot => outs.push(out(status_text(
                    apm::MavSeverity::MAV_SEVERITY_WARNING,
                    &text,
                ))),
                Flavour::Px4 => {
                    let e = self.event("check_modes_global_pos", 3);
                    outs.push(e);
                }
            }
            return match self.flavour {
                Flavour::ArduPilot => MavResult::MAV_RESULT_FAILED,
                Flavour::Px4 => MavResult::MAV_RESULT_TEMPORARILY_REJECTED,
            };
        }
        if m == Mode::Auto && self.mission.is_empty() {
            self.ardupilot_says(
                outs,
                apm::MavSeverity::MAV_SEVERITY_WARNING,
                "Mode change to AUTO failed: no mission",
            );
            return self.deny();
        }
        if m == Mode::Takeoff && !self.armed {
            return self.deny();
        }
        match m {
            Mode::Hold | Mode::Guided | Mode::Manual | Mode::Brake => {
                if self.takeoff_alt.is_none() {
                    self.target = Some(self.pos);
                }
            }
            Mode::Rtl => self.rtl = RtlPhase::Climb,
            Mode::Takeoff => self.takeoff_alt = Some(2.5),
            Mode::Auto => self.mission_hold_until = None,
            Mode::Land => {}
        }
        if matches!(m, Mode::Rtl | Mode::Land | Mode::Auto) {
            self.takeoff_alt = None;
        }
        self.mode = m;
        MavResult::MAV_RESULT_ACCEPTED
    }
}
