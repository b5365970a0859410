//! The receive path: every message from the autopilot folded into the [`FcSnapshot`], protocol
//! replies handed to their waiters, the autopilot's words (STATUSTEXT, PX4 events) kept.

use super::*;

/// How long a telemetry change may wait before snapshot watchers are woken.
pub(super) const NOTIFY_EVERY: Duration = Duration::from_millis(2);

/// How far before and after an autopilot-initiated mode change its messages count as the reason.
pub(super) const REASON_WINDOW: Duration = Duration::from_secs(2);

/// Joins distinct texts into one reason (`None` if there are none), at most four of them.
pub(super) fn join_reasons<'a>(texts: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for t in texts {
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    let n = seen.len();
    (n > 0).then(|| seen[n.saturating_sub(4)..].join("; "))
}

/// Runs until the link is judged lost; returns why.
pub(super) async fn receive(shared: &Arc<Shared>, conn: &Conn) -> String {
    let timeout = shared.cfg.heartbeat_timeout();
    // one timer for the whole connection, pushed back on each HEARTBEAT: creating a timer per
    // message would cost more than decoding the message
    let silence = tokio::time::sleep(timeout);
    tokio::pin!(silence);
    let wake = tokio::time::sleep(NOTIFY_EVERY);
    tokio::pin!(wake);
    let mut wake_armed = false;
    let mut got_heartbeat = false;
    loop {
        tokio::select! {
            r = conn.recv() => match r {
                Ok((header, msg)) => {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if let Some(router) = &shared.router {
                        router.from_autopilot(&header, &msg);
                    }
                    if shared.handle(header, msg) {
                        silence.as_mut().reset(tokio::time::Instant::now() + timeout);
                        if !got_heartbeat {
                            got_heartbeat = true;
                            tokio::spawn(request_telemetry(shared.clone()).in_current_span());
                        }
                    }
                    let outgoing = std::mem::take(&mut *lock(&shared.outbox));
                    for msg in outgoing {
                        if let Err(error) = shared.send_on(conn, &msg).await {
                            debug!(%error, "queued message not sent");
                        }
                    }
                    if !wake_armed && shared.dirty.load(Ordering::Relaxed) {
                        wake_armed = true;
                        wake.as_mut().reset(tokio::time::Instant::now() + NOTIFY_EVERY);
                    }
                }
                Err(mavlink::error::MessageReadError::Io(error)) => {
                    shared.notify();
                    return format!("transport error: {error}");
                }
                // an unknown message id or enum value: skip it, the stream is still in sync
                Err(mavlink::error::MessageReadError::Parse(error)) => {
                    debug!(%error, "undecodable message skipped");
                }
            },
            _ = &mut wake, if wake_armed => {
                wake_armed = false;
                shared.notify();
            }
            _ = &mut silence => {
                shared.notify();
                return format!("no HEARTBEAT for {timeout:?}");
            }
        }
    }
}

impl Shared {
    /// Folds one message into the snapshot or hands it to waiters.
    // MISSION_REQUEST is deprecated, but ArduPilot before 4.0 still sends it Returns true for a HEARTBEAT
    /// from the autopilot we follow.
    #[allow(deprecated)]
    pub(super) fn handle(&self, header: MavHeader, msg: MavMessage) -> bool {
        // Which autopilot we follow: the first one that sends a HEARTBEAT (a GCS, camera or other
        // companion on the same link is ignored).
        let target = match self.target_ids.load(Ordering::Relaxed) {
            0 => None,
            v => Some((((v - 1) >> 8) as u8, ((v - 1) & 0xff) as u8)),
        };
        // MAVLink 2 allows system ids above 255; autopilots never use them
        let Ok(sender) = u8::try_from(header.system_id) else {
            return false;
        };
        if let MavMessage::HEARTBEAT(hb) = &msg {
            use apm::MavAutopilot as A;
            use apm::MavType as T;
            let is_autopilot = hb.autopilot != A::MAV_AUTOPILOT_INVALID
                && !matches!(
                    hb.mavtype,
                    T::MAV_TYPE_GCS
                        | T::MAV_TYPE_ONBOARD_CONTROLLER
                        | T::MAV_TYPE_GIMBAL
                        | T::MAV_TYPE_CAMERA
                );
            let ours = match target {
                Some((sys, comp)) => sys == sender && comp == header.component_id,
                None => is_autopilot,
            };
            if !ours {
                return false;
            }
            self.on_heartbeat(sender, header.component_id, hb);
            return true;
        }
        let Some((sys, _)) = target else {
            return false;
        };
        if sender != sys {
            return false;
        }
        if !self.addressed_to_us(&msg) {
            debug!(?msg, "reply for another system or component ignored");
            return false;
        }
        match msg {
            MavMessage::COMMAND_ACK(_)
            | MavMessage::MISSION_REQUEST_INT(_)
            | MavMessage::MISSION_REQUEST(_)
            | MavMessage::MISSION_ACK(_)
            | MavMessage::LOG_ENTRY(_)
            | MavMessage::LOG_DATA(_)
            | MavMessage::MISSION_COUNT(_)
            | MavMessage::MISSION_ITEM_INT(_)
            | MavMessage::PARAM_VALUE(_) => {
                // no receiver = nobody waiting: fine
                let _ = self.replies.send(Arc::new((header, msg)));
            }
            other => self.on_telemetry(other),
        }
        false
    }

    /// Whether a protocol reply is meant for us: COMMAND_ACK (its target fields are MAVLink 2
    /// extensions: 0/0 when the sender left them out) and the mission replies name the system and
    /// component they answer; 0 is a broadcast. An autopilot answers each GCS and companion on the
    /// link, and another one's ACK for the same command must not end our wait.
    #[allow(deprecated)]
    pub(super) fn addressed_to_us(&self, msg: &MavMessage) -> bool {
        let (sys, comp) = match msg {
            MavMessage::COMMAND_ACK(a) => (a.target_system, a.target_component),
            MavMessage::MISSION_REQUEST_INT(r) => (r.target_system, r.target_component),
            MavMessage::MISSION_REQUEST(r) => (r.target_system, r.target_component),
            MavMessage::MISSION_ACK(a) => (a.target_system, a.target_component),
            MavMessage::MISSION_COUNT(c) => (c.target_system, c.target_component),
            MavMessage::MISSION_ITEM_INT(i) => (i.target_system, i.target_component),
            _ => return true,
        };
        (sys == 0 || sys == self.cfg.system_id) && (comp == 0 || comp == self.cfg.component_id)
    }

    pub(super) fn on_heartbeat(&self, system: u8, component: u8, hb: &apm::HEARTBEAT_DATA) {
        let now = SystemTime::now();
        let autopilot = match hb.autopilot {
            apm::MavAutopilot::MAV_AUTOPILOT_PX4 => Autopilot::Px4,
            apm::MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA => Autopilot::ArduPilot,
            other => Autopilot::Other(other as u8),
        };
        let mode = modes::decode(autopilot, hb.custom_mode);
        let armed = hb
            .base_mode
            .contains(apm::MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED);
        let critical = matches!(
            hb.system_status,
            apm::MavState::MAV_STATE_CRITICAL | apm::MavState::MAV_STATE_EMERGENCY
        );
        let own_change = self.autopilot_initiated(autopilot, &mode, armed);
        let seen_ext = {
            let mut st = lock(&self.state);
            st.last_heartbeat = Some(now);
            st.seen_extended_state
        };
        let mut newly_connected = false;
        let mut mode_changed = None;
        self.snapshot.send_modify(|s| {
            s.at = now;
            if !s.link.is_connected() {
                newly_connected = true;
                s.link = LinkState::Connected { since: now };
            }
            if s.autopilot != autopilot {
                info!(?autopilot, system, component, "autopilot detected");
            }
            s.autopilot = autopilot;
            s.target = Some((system, component));
            self.target_ids.store(
                ((u32::from(system) << 8) | u32::from(component)) + 1,
                Ordering::Relaxed,
            );
            if s.mode != mode {
                mode_changed = Some((s.mode.raw.clone(), mode.raw.clone()));
                if let Some((seq, reason)) = own_change.clone() {
                    s.autopilot_mode_change = Some(AutopilotModeChange {
                        seq,
                        from: s.mode.clone(),
                        to: mode.clone(),
                        reason,
                        at: now,
                    });
                }
                s.mode = mode;
            }
            if s.armed != armed {
                info!(armed, "arming state changed");
            }
            s.armed = armed;
            s.critical = critical;
            if !armed
                && s.battery_failsafe.is_some()
                && s.battery_charge_state.is_none_or(|c| !c.is_low_or_worse())
                && !s.health_failures.contains(&"battery")
            {
                // a pack swapped on the ground: the announcement is history
                s.battery_failsafe = None;
            }
            if !seen_ext {
                // no EXTENDED_SYS_STATE from this autopilot: disarmed is on the ground at least
                if !armed {
                    s.landed = LandedState::OnGround;
                } else if s.landed == LandedState::OnGround {
                    s.landed = LandedState::Unknown;
                }
            }
        });
        if let Some((from, to)) = mode_changed {
            match own_change {
                Some((seq, reason)) => {
                    warn!(
                        from,
                        to, seq, reason, "the autopilot changed mode by itself"
                    )
                }
                None => info!(from, to, "flight mode changed"),
            }
        }
        if newly_connected {
            info!("flight-controller link up");
            self.link_up.send_replace(true);
        }
    }

    /// Whether a HEARTBEAT's mode is a change the autopilot made by itself: not the mode this link
    /// asked for, not the autopilot's own next step after one (PX4 Takeoff → Hold, a mission's end
    /// or RTL item, RTL's landing), and not the first mode seen. Only while armed (or just
    /// disarmed): on the ground the agent is not flying anything to follow. Returns the change's
    /// number and the autopilot's words so far.
    pub(super) fn autopilot_initiated(
        &self,
        autopilot: Autopilot,
        mode: &FlightMode,
        armed: bool,
    ) -> Option<(u32, Option<String>)> {
        let (before, was_armed) = {
            let s = self.snapshot.borrow();
            (s.mode.clone(), s.armed)
        };
        if before.raw == mode.raw || before.kind == FlightModeKind::Unknown {
            return None;
        }
        let mut st = lock(&self.state);
        if st
            .requested_mode
            .is_some_and(|r| modes::satisfies(autopilot, mode.kind, r))
        {
            st.requested_mode = None;
            return None;
        }
        use FlightModeKind as K;
        let next_step = matches!(
            (before.kind, mode.kind),
            (K::Takeoff, K::Hold | K::Guided)
                | (K::Auto, K::Hold | K::ReturnToLaunch | K::Land)
                | (K::ReturnToLaunch, K::Land)
        );
        if next_step || !(armed || was_armed) {
            return None;
        }
        st.requested_mode = None;
        st.mode_change_seq += 1;
        let now = Instant::now();
        st.reason_open_until = Some(now + REASON_WINDOW);
        let reason = join_reasons(
            st.recent_warnings
                .iter()
                .filter(|(at, _)| now.duration_since(*at) <= REASON_WINDOW)
                .map(|(_, t)| t.as_str()),
        );
        Some((st.mode_change_seq, reason))
    }

    /// Changes the snapshot in place without waking watchers: the receive loop wakes them at most
    /// every [`NOTIFY_EVERY`] (waking every watcher for every one of hundreds of messages a second
    /// would cost more than decoding them). Readers that `borrow()` see the change at once.
    pub(super) fn update(&self, f: impl FnOnce(&mut FcSnapshot)) {
        self.snapshot.send_if_modified(|s| {
            f(s);
            false
        });
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Wakes snapshot watchers if anything changed since the last wake-up.
    pub(super) fn notify(&self) {
        if self.dirty.swap(false, Ordering::Relaxed) {
            // `at` is stamped here, once per batch, rather than once per message
            self.snapshot.send_modify(|s| s.at = SystemTime::now());
        }
    }

    pub(super) fn on_telemetry(&self, msg: MavMessage) {
        match msg {
            // ArduPilot sends 0, 0 until its EKF has an origin: not a position
            MavMessage::GLOBAL_POSITION_INT(p) if p.lat == 0 && p.lon == 0 => {}
            MavMessage::GLOBAL_POSITION_INT(p) => self.update(|s| {
                s.position = Some(GlobalPosition {
                    lat_deg: f64::from(p.lat) * 1e-7,
                    lon_deg: f64::from(p.lon) * 1e-7,
                    alt_msl_m: f64::from(p.alt) * 1e-3,
                    alt_rel_m: f64::from(p.relative_alt) * 1e-3,
                });
                s.velocity_ned_mps = Some([
                    f64::from(p.vx) * 0.01,
                    f64::from(p.vy) * 0.01,
                    f64::from(p.vz) * 0.01,
                ]);
                if p.hdg != u16::MAX {
                    s.heading_deg = Some(f64::from(p.hdg) * 0.01);
                }
                s.fc_time_s = Some(f64::from(p.time_boot_ms) * 1e-3);
            }),
            MavMessage::VFR_HUD(h) => self.update(|s| {
                s.airspeed_mps = Some(f64::from(h.airspeed)).filter(|v| v.is_finite());
                s.groundspeed_mps = Some(f64::from(h.groundspeed)).filter(|v| v.is_finite());
            }),
            // where the wind comes *from*, as ArduPilot's EKF estimates it
            MavMessage::WIND(w) if w.speed.is_finite() && w.direction.is_finite() => {
                self.update(|s| {
                    let (speed, from) = (f64::from(w.speed), f64::from(w.direction).to_radians());
                    s.wind_ne_mps = Some((-speed * from.cos(), -speed * from.sin()));
                })
            }
            MavMessage::GPS_RAW_INT(g) => self.update(|s| {
                use apm::GpsFixType as G;
                s.gps_fix = match g.fix_type {
                    G::GPS_FIX_TYPE_NO_GPS => GpsFixType::NoGps,
                    G::GPS_FIX_TYPE_NO_FIX => GpsFixType::NoFix,
                    G::GPS_FIX_TYPE_2D_FIX => GpsFixType::Fix2d,
                    G::GPS_FIX_TYPE_3D_FIX => GpsFixType::Fix3d,
                    G::GPS_FIX_TYPE_DGPS => GpsFixType::Dgps,
                    G::GPS_FIX_TYPE_RTK_FLOAT => GpsFixType::RtkFloat,
                    G::GPS_FIX_TYPE_RTK_FIXED => GpsFixType::RtkFixed,
                    // static/PPP fixes are at least 3D
                    _ => GpsFixType::Fix3d,
                };
                s.satellites = (g.satellites_visible != u8::MAX).then_some(g.satellites_visible);
            }),
            MavMessage::SYS_STATUS(st) => {
                use apm::MavSysStatusSensor as S;
                let prearm = st
                    .onboard_control_sensors_present
                    .contains(S::MAV_SYS_STATUS_PREARM_CHECK)
                    .then(|| {
                        st.onboard_control_sensors_health
                            .contains(S::MAV_SYS_STATUS_PREARM_CHECK)
                    });
                lock(&self.state).prearm_ok = prearm;
                let failing =
                    st.onboard_control_sensors_enabled & !st.onboard_control_sensors_health;
                let failures: Vec<&'static str> = FLIGHT_NEEDS
                    .iter()
                    .filter(|(bit, _)| failing.contains(*bit))
                    .map(|(_, name)| *name)
                    .collect();
                self.update(|s| {
                    if st.battery_remaining >= 0 {
                        s.battery_percent = Some(f64::from(st.battery_remaining));
                    }
                    if st.voltage_battery != u16::MAX {
                        s.battery_voltage = Some(f64::from(st.voltage_battery) * 1e-3);
                    }
                    s.healthy = failures.is_empty();
                    s.health_failures = failures;
                });
            }
            MavMessage::EKF_STATUS_REPORT(e) => {
                let ok = position_usable(u32::from(e.flags.bits()));
                self.update(|s| s.position_estimate = Some(ok));
            }
            MavMessage::ESTIMATOR_STATUS(e) => {
                let ok = position_usable(u32::from(e.flags.bits()));
                self.update(|s| s.position_estimate = Some(ok));
            }
            MavMessage::BATTERY_STATUS(b) => self.update(|s| {
                if b.battery_remaining >= 0 {
                    s.battery_percent = Some(f64::from(b.battery_remaining));
                }
                // -1: the autopilot does not measure it
                if b.current_battery >= 0 {
                    s.battery_current_a = Some(f64::from(b.current_battery) * 0.01);
                }
                let cells: Vec<f64> = b
                    .voltages
                    .iter()
                    .chain(b.voltages_ext.iter())
                    .filter(|v| **v != u16::MAX && **v != 0)
                    .map(|v| f64::from(*v) * 1e-3)
                    .collect();
                let total: f64 = cells.iter().sum();
                if total > 0.0 {
                    s.battery_voltage = Some(total);
                }
                // one entry is the whole pack (ArduPilot's analog monitor): no per-cell report
                s.battery_cells_v = if cells.len() >= 2 { cells } else { Vec::new() };
                use apm::MavBatteryChargeState as C;
                s.battery_charge_state = Some(match b.charge_state {
                    C::MAV_BATTERY_CHARGE_STATE_OK => BatteryChargeState::Ok,
                    C::MAV_BATTERY_CHARGE_STATE_LOW => BatteryChargeState::Low,
                    C::MAV_BATTERY_CHARGE_STATE_CRITICAL => BatteryChargeState::Critical,
                    C::MAV_BATTERY_CHARGE_STATE_EMERGENCY => BatteryChargeState::Emergency,
                    C::MAV_BATTERY_CHARGE_STATE_FAILED => BatteryChargeState::Failed,
                    C::MAV_BATTERY_CHARGE_STATE_UNHEALTHY => BatteryChargeState::Unhealthy,
                    C::MAV_BATTERY_CHARGE_STATE_CHARGING => BatteryChargeState::Charging,
                    _ => BatteryChargeState::Undefined,
                });
                s.battery_faults = battery_faults(b.fault_bitmask);
            }),
            MavMessage::FENCE_STATUS(f) => self.on_fence_status(&f),
            MavMessage::EXTENDED_SYS_STATE(e) => {
                use apm::MavLandedState as L;
                lock(&self.state).seen_extended_state = true;
                self.update(|s| {
                    s.landed = match e.landed_state {
                        L::MAV_LANDED_STATE_ON_GROUND => LandedState::OnGround,
                        L::MAV_LANDED_STATE_IN_AIR => LandedState::InAir,
                        L::MAV_LANDED_STATE_TAKEOFF => LandedState::TakingOff,
                        L::MAV_LANDED_STATE_LANDING => LandedState::Landing,
                        _ => LandedState::Unknown,
                    };
                });
            }
            MavMessage::HOME_POSITION(h) => self.update(|s| {
                s.home = Some(GlobalPosition {
                    lat_deg: f64::from(h.latitude) * 1e-7,
                    lon_deg: f64::from(h.longitude) * 1e-7,
                    alt_msl_m: f64::from(h.altitude) * 1e-3,
                    alt_rel_m: 0.0,
                });
            }),
            MavMessage::MISSION_CURRENT(m) => {
                let off = lock(&self.state).mission_offset;
                self.update(|s| {
                    s.mission.current = m.seq.checked_sub(off);
                });
            }
            MavMessage::MISSION_ITEM_REACHED(m) => {
                let off = lock(&self.state).mission_offset;
                if let Some(seq) = m.seq.checked_sub(off) {
                    info!(item = seq, "mission item reached");
                    self.update(|s| {
                        s.mission.last_reached = Some(seq);
                    });
                }
            }
            MavMessage::SERVO_OUTPUT_RAW(o) => {
                // ArduPilot 4.x and PX4 1.16 send all 16 outputs on port 0, 9..16 in the MAVLink 2
                // extension fields; older PX4 sent 9..16 as port 1. An extension field that was not
                // sent decodes as 0, so once a port 1 message was seen it owns 9..16.
                let low = [
                    o.servo1_raw,
                    o.servo2_raw,
                    o.servo3_raw,
                    o.servo4_raw,
                    o.servo5_raw,
                    o.servo6_raw,
                    o.servo7_raw,
                    o.servo8_raw,
                ];
                let high = [
                    o.servo9_raw,
                    o.servo10_raw,
                    o.servo11_raw,
                    o.servo12_raw,
                    o.servo13_raw,
                    o.servo14_raw,
                    o.servo15_raw,
                    o.servo16_raw,
                ];
                let port1_seen = {
                    let mut st = lock(&self.state);
                    st.servo_port1_seen |= o.port == 1;
                    st.servo_port1_seen
                };
                match o.port {
                    0 => self.update(|s| {
                        let outs = s.servo_outputs_us.get_or_insert([0; 16]);
                        outs[..8].copy_from_slice(&low);
                        if !port1_seen {
                            outs[8..].copy_from_slice(&high);
                        }
                    }),
                    1 => self.update(|s| {
                        let outs = s.servo_outputs_us.get_or_insert([0; 16]);
                        outs[8..].copy_from_slice(&low);
                    }),
                    // outputs 17+ (port 2 and up): not used by the payload
                    _ => {}
                }
            }
            MavMessage::STATUSTEXT(t) => {
                let text = t.text.to_str().unwrap_or("").trim().to_owned();
                let severity = Severity::from_level(t.severity as u8);
                info!(?severity, text, "autopilot says");
                self.on_message(severity, text, None);
            }
            MavMessage::EVENT(e) => self.on_px4_event(&e),
            MavMessage::CURRENT_EVENT_SEQUENCE(c) => {
                let last = lock(&self.state).px4_event_seq;
                match last {
                    // start from now: the autopilot's history before we came is not ours to replay
                    None => lock(&self.state).px4_event_seq = Some(c.sequence),
                    Some(last) => {
                        let missed = c.sequence.wrapping_sub(last);
                        if missed > 0 && missed < 0x8000 {
                            self.request_events(last.wrapping_add(1), c.sequence);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// One thing the autopilot said (STATUSTEXT or decoded PX4 event): into the snapshot, to
    /// message subscribers, and into what the agent needs from it (gripper confirmations, battery
    /// failsafe announcements, the reason of a mode change the autopilot made).
    pub(super) fn on_message(&self, severity: Severity, text: String, px4_event: Option<u32>) {
        let now = Instant::now();
        let gripper = match text.as_str() {
            "Gripper load released" => Some(GripperAction::Release),
            "Gripper load grabbed" => Some(GripperAction::Grab),
            _ => None,
        };
        let lower = text.to_ascii_lowercase();
        let battery_failsafe = severity.is_warning_or_worse()
            && lower.contains("battery")
            && [
                "failsafe",
                " low",
                "critical",
                "emergency",
                "return advised",
            ]
            .iter()
            .any(|w| lower.contains(w));
        // ArduPilot's "Polygon fence breached" is a NOTICE, yet it is why the mode changed
        let counts_as_reason = severity.is_warning_or_worse() || lower.contains("fence");
        let mut reason_update = None;
        {
            let mut st = lock(&self.state);
            // a refusal's reason, whichever way the autopilot gave it
            st.last_status_text = Some((now, text.clone()));
            if gripper.is_some() {
                st.gripper_confirmations += 1;
            }
            if counts_as_reason {
                st.recent_warnings.push_back((now, text.clone()));
                while st.recent_warnings.len() > 16
                    || st
                        .recent_warnings
                        .front()
                        .is_some_and(|(at, _)| now.duration_since(*at) > REASON_WINDOW)
                {
                    st.recent_warnings.pop_front();
                }
                if st.reason_open_until.is_some_and(|until| now <= until) {
                    reason_update = Some(st.mode_change_seq);
                }
            }
        }
        self.update(|s| {
            s.last_status_text = Some(text.clone());
            if gripper.is_some() {
                s.gripper = gripper;
            }
            if battery_failsafe {
                s.battery_failsafe = Some(text.clone());
            }
            if let (Some(seq), Some(change)) = (reason_update, s.autopilot_mode_change.as_mut()) {
                if change.seq == seq {
                    let old = change.reason.take();
                    change.reason = join_reasons(
                        old.iter()
                            .flat_map(|r| r.split("; "))
                            .chain(std::iter::once(text.as_str())),
                    );
                }
            }
        });
        // no subscriber is fine
        let _ = self.messages.send(AutopilotMessage {
            at: SystemTime::now(),
            severity,
            text,
            px4_event,
        });
    }

    /// ArduPilot's FENCE_STATUS: kept in the snapshot; a new breach is also said as a warning, so
    /// the mode change the autopilot makes for it carries the breach in its reason.
    pub(super) fn on_fence_status(&self, f: &apm::FENCE_STATUS_DATA) {
        use crate::flight::{FenceBreachKind, FenceStatus};
        let kind = match f.breach_type {
            apm::FenceBreach::FENCE_BREACH_MINALT => FenceBreachKind::MinAltitude,
            apm::FenceBreach::FENCE_BREACH_MAXALT => FenceBreachKind::MaxAltitude,
            apm::FenceBreach::FENCE_BREACH_BOUNDARY => FenceBreachKind::Boundary,
            _ => FenceBreachKind::None,
        };
        let breached = f.breach_status != 0;
        let before = self.snapshot.borrow().fence.clone();
        let new_breach = breached
            && before
                .as_ref()
                .is_none_or(|b| !b.breached || b.breach_count != f.breach_count);
        let at = match &before {
            Some(b) if !new_breach && b.breached == breached => b.at,
            _ => SystemTime::now(),
        };
        self.update(|s| {
            s.fence = Some(FenceStatus {
                breached,
                breach_count: f.breach_count,
                kind,
                at,
            });
        });
        if new_breach {
            warn!(
                kind = kind.describe(),
                count = f.breach_count,
                "fence breached"
            );
            self.on_message(
                Severity::Warning,
                format!(
                    "fence breached: {} (FENCE_STATUS, breach {})",
                    kind.describe(),
                    f.breach_count
                ),
                None,
            );
        }
    }

    /// A PX4 event (MAVLink events protocol): decoded to text where we know the event (see
    /// [`px4_event_text`]), and missed sequence numbers asked for again.
    pub(super) fn on_px4_event(&self, e: &apm::EVENT_DATA) {
        let last = lock(&self.state).px4_event_seq;
        let newer = last.map(|l| e.sequence.wrapping_sub(l)).unwrap_or(1);
        if newer > 0 && newer < 0x8000 {
            if let Some(last) = last {
                if newer > 1 {
                    self.request_events(last.wrapping_add(1), e.sequence.wrapping_sub(1));
                }
            }
            lock(&self.state).px4_event_seq = Some(e.sequence);
        }
        // the low nibble is the level for users; 8 (protocol) and 9 (disabled) are not for them
        let level = e.log_levels & 0x0f;
        if level >= 8 {
            return;
        }
        let severity = Severity::from_level(level);
        let text = px4_event_text(e.id, &e.arguments);
        info!(?severity, text, id = e.id, "autopilot event");
        self.on_message(severity, text, Some(e.id));
    }

    /// Queues REQUEST_EVENT for `first..=last` (at most 16 of them: older ones are gone anyway).
    pub(super) fn request_events(&self, first: u16, last: u16) {
        let first = if last.wrapping_sub(first) >= 16 {
            last.wrapping_sub(15)
        } else {
            first
        };
        let Some((sys, comp)) = self.snapshot.borrow().target else {
            return;
        };
        debug!(first, last, "asking for missed PX4 events");
        lock(&self.outbox).push(MavMessage::REQUEST_EVENT(apm::REQUEST_EVENT_DATA {
            target_system: sys,
            target_component: comp,
            first_sequence: first,
            last_sequence: last,
        }));
    }
}

/// The `SYS_STATUS` sensors a companion-flown delivery needs, by name. Not the RC receiver (PX4
/// without a transmitter marks it enabled but unhealthy, and flies its autonomous modes anyway)
/// and not the pre-arm bit (PX4 never sets it; ArduPilot's is read as `armable`).
pub(super) const FLIGHT_NEEDS: [(apm::MavSysStatusSensor, &str); 8] = [
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_GYRO,
        "gyro",
    ),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_ACCEL,
        "accel",
    ),
    (apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_3D_MAG, "mag"),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_ABSOLUTE_PRESSURE,
        "baro",
    ),
    (apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS, "gps"),
    (apm::MavSysStatusSensor::MAV_SYS_STATUS_AHRS, "ahrs"),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_BATTERY,
        "battery",
    ),
    (
        apm::MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_MOTOR_OUTPUTS,
        "motors",
    ),
];

/// `MAV_BATTERY_FAULT` bits, by name.
pub(super) const BATTERY_FAULTS: [(apm::MavBatteryFault, &str); 9] = [
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_DEEP_DISCHARGE,
        "deep_discharge",
    ),
    (apm::MavBatteryFault::MAV_BATTERY_FAULT_SPIKES, "spikes"),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_CELL_FAIL,
        "cell_fail",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_OVER_CURRENT,
        "over_current",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_OVER_TEMPERATURE,
        "over_temperature",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_UNDER_TEMPERATURE,
        "under_temperature",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_INCOMPATIBLE_VOLTAGE,
        "incompatible_voltage",
    ),
    (
        apm::MavBatteryFault::MAV_BATTERY_FAULT_INCOMPATIBLE_FIRMWARE,
        "incompatible_firmware",
    ),
    (
        apm::MavBatteryFault::BATTERY_FAULT_INCOMPATIBLE_CELLS_CONFIGURATION,
        "incompatible_cells",
    ),
];

/// The names of the fault bits set in `BATTERY_STATUS.fault_bitmask`.
pub(super) fn battery_faults(bits: apm::MavBatteryFault) -> Vec<&'static str> {
    BATTERY_FAULTS
        .iter()
        .filter(|(bit, _)| bits.contains(*bit))
        .map(|(_, name)| *name)
        .collect()
}

/// `EKF_STATUS_FLAGS` / `ESTIMATOR_STATUS_FLAGS` (same bits): an absolute horizontal position the
/// vehicle can navigate by. ArduPilot's "Need Position Estimate" and "requires position" refusals
/// last exactly while this is false (constant-position mode is the EKF's stand-in before GPS).
pub(super) fn position_usable(flags: u32) -> bool {
    const POS_HORIZ_ABS: u32 = 16;
    const CONST_POS_MODE: u32 = 128;
    const UNINITIALIZED: u32 = 1024;
    flags & POS_HORIZ_ABS != 0 && flags & (CONST_POS_MODE | UNINITIALIZED) == 0
}

/// A PX4 event id from its name, as PX4 computes it (`events::ID()`): the autopilot component
/// (1) in the top byte, FNV-1a 32 of the name in the low 24 bits.
pub fn px4_event_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (1 << 24) | (h & 0x00ff_ffff)
}

/// The PX4 events this hal names (PX4's own message text; their arguments are not decoded). Any
/// other event is surfaced by id and raw arguments: PX4 describes its events in component
/// metadata (`events.json`) that a companion would have to download over MAVLink FTP.
pub(super) const PX4_EVENTS: [(&str, &str); 11] = [
    (
        "check_rc_dl_no_dllink",
        "No connection to the ground control station",
    ),
    (
        "commander_mission_comp_lost",
        "Connection to mission computer lost",
    ),
    (
        "commander_failsafe_enter_generic_hold",
        "Failsafe activated",
    ),
    (
        "commander_transition_denied",
        "Arming state transition denied",
    ),
    (
        "commander_arm_denied_throttle_center",
        "Arming denied: throttle above center",
    ),
    (
        "commander_arm_denied_calibrating",
        "Arming denied: calibrating",
    ),
    (
        "check_modes_global_pos",
        "No valid global position estimate",
    ),
    ("check_battery_low", "Low battery"),
    (
        "navigator_geofence_max_dist_from_home",
        "Geofence: maximum distance from home reached",
    ),
    (
        "navigator_geofence_max_alt_from_home",
        "Geofence: maximum altitude above home reached",
    ),
    (
        "commander_gcs_lost",
        "Connection to ground control station lost",
    ),
];

/// The text of a PX4 event: `<PX4's text> (PX4 event <name>)` for the events in [`PX4_EVENTS`],
/// else `PX4 event 0x<id> [<arguments in hex, trailing zeros cut>]`.
pub(super) fn px4_event_text(id: u32, args: &[u8]) -> String {
    if let Some((name, text)) = PX4_EVENTS.iter().find(|(n, _)| px4_event_id(n) == id) {
        return format!("{text} (PX4 event {name})");
    }
    let used = args.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let hex: String = args[..used].iter().map(|b| format!("{b:02x}")).collect();
    format!("PX4 event {id:#010x} [{hex}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::BatteryFaultAction;

    #[test]
    fn battery_fault_bits_are_named_and_judged() {
        use apm::MavBatteryFault as B;
        let bits = B::MAV_BATTERY_FAULT_OVER_TEMPERATURE | B::MAV_BATTERY_FAULT_SPIKES;
        let snap = FcSnapshot {
            battery_faults: battery_faults(bits),
            ..FcSnapshot::initial()
        };
        assert_eq!(snap.battery_faults, ["spikes", "over_temperature"]);
        assert_eq!(
            snap.battery_fault_action(),
            Some((BatteryFaultAction::LandNow, vec!["over_temperature"]))
        );
        let snap = FcSnapshot {
            battery_faults: battery_faults(B::MAV_BATTERY_FAULT_UNDER_TEMPERATURE),
            ..FcSnapshot::initial()
        };
        assert_eq!(
            snap.battery_fault_action(),
            Some((BatteryFaultAction::ReturnHome, vec!["under_temperature"]))
        );
        assert!(battery_faults(B::empty()).is_empty());
        assert_eq!(FcSnapshot::initial().battery_fault_action(), None);
        // every bit the hal knows has a name, and each name a judgement
        let all = battery_faults(B::all());
        assert_eq!(all.len(), BATTERY_FAULTS.len());
        let land: Vec<&str> = all
            .iter()
            .copied()
            .filter(|f| BatteryFaultAction::of(f) == BatteryFaultAction::LandNow)
            .collect();
        assert_eq!(
            land,
            [
                "deep_discharge",
                "cell_fail",
                "over_current",
                "over_temperature"
            ]
        );
    }
}
