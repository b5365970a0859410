//! The [`FlightController`] operations, and the hold and goto they share.

use super::*;

impl Shared {
    /// Stops and holds where the vehicle is. ArduPilot: BRAKE (climb rate 0 whatever the sticks
    /// say), then, once stopped, GUIDED with a target at the stopped position, never LOITER (its
    /// climb rate is the throttle stick: stick-down without a transmitter). PX4: Hold, and a
    /// reposition to here when flying a guided leg (a leg is flown in Hold already).
    pub(super) async fn hold(&self) -> Result<(), FcError> {
        let snap = self.snapshot.borrow().clone();
        let in_mission = snap.mode.kind == FlightModeKind::Auto;
        let (target, was_paused) = {
            let st = lock(&self.state);
            (st.last_goto, st.paused_mission)
        };
        let here = |s: &FcSnapshot| {
            s.position
                .map(|p| GeoPoint::new(p.lat_deg, p.lon_deg, p.alt_rel_m.max(0.0)))
                .ok_or(FcError::Failed {
                    command: "hold",
                    reason: Some("position not known yet".into()),
                })
        };
        match Ways::of(snap.autopilot).hold_by() {
            HoldBy::BrakeThenGuided => {
                self.set_mode("set mode BRAKE", FlightModeKind::Hold)
                    .await?;
                let timeout = Duration::from_millis(self.cfg.hold_brake_timeout_ms);
                let stopped = self
                    .wait_for(timeout, |s| {
                        !s.link.is_connected()
                            || s.velocity_ned_mps
                                .is_some_and(|v| v[0].hypot(v[1]) < 0.3 && v[2].abs() < 0.3)
                    })
                    .await;
                if stopped.is_none() {
                    warn!(
                        ?timeout,
                        "still moving after BRAKE; holding where it is now"
                    );
                }
                let point = here(&self.snapshot.borrow())?;
                self.goto(point).await?;
            }
            HoldBy::HoldThenHere => {
                self.set_mode("set mode HOLD", FlightModeKind::Hold).await?;
                if !in_mission && snap.position.is_some() {
                    // a guided leg is flown in Hold: switching changes nothing mid-leg
                    self.goto(here(&snap)?).await?;
                }
            }
            HoldBy::Hold => self.set_mode("set mode HOLD", FlightModeKind::Hold).await?,
        }
        let mut st = lock(&self.state);
        // `resume` continues the real target (or the mission), not the hold point
        st.last_goto = target;
        st.paused_mission = in_mission || was_paused;
        Ok(())
    }

    pub(super) async fn goto(&self, target: GeoPoint) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_DO_REPOSITION";
        check_point(NAME, &target)?;
        let ways = Ways::of(self.autopilot(NAME)?);
        let (frame, z) = if ways.amsl_altitudes() {
            (
                apm::MavFrame::MAV_FRAME_GLOBAL,
                self.home_msl(NAME).await? + target.alt_rel_m,
            )
        } else {
            // ArduCopter only accepts position targets in GUIDED
            self.set_mode("set mode GUIDED", FlightModeKind::Guided)
                .await?;
            (
                apm::MavFrame::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                target.alt_rel_m,
            )
        };
        let change_mode =
            apm::MavDoRepositionFlags::MAV_DO_REPOSITION_FLAGS_CHANGE_MODE.bits() as f32;
        if let Some(mode) = ways.reposition_mode() {
            self.expect_mode(mode);
        }
        self.command_int(
            NAME,
            MavCmd::MAV_CMD_DO_REPOSITION,
            frame,
            [-1.0, change_mode, 0.0, f32::NAN],
            deg_e7(target.lat_deg),
            deg_e7(target.lon_deg),
            z as f32,
        )
        .await?;
        let mut st = lock(&self.state);
        st.last_goto = Some(target);
        st.paused_mission = false;
        Ok(())
    }
}

pub(super) fn gripper_param(action: GripperAction) -> f32 {
    match action {
        GripperAction::Release => 0.0,
        GripperAction::Grab => 1.0,
    }
}

impl FlightController for MavlinkFc {
    fn snapshot(&self) -> watch::Receiver<FcSnapshot> {
        self.shared.snapshot.subscribe()
    }

    async fn preflight_check(&self, min_battery_percent: f64) -> Result<PreflightReport, FcError> {
        // A task can come while the link is still opening (the agent just started or restarted):
        // wait, bounded, for the autopilot's first reports instead of judging an empty snapshot.
        // A link that stays down or an autopilot that never reports still fails below, by name.
        let reported = |s: &FcSnapshot| {
            s.link.is_connected()
                && s.battery_percent.is_some()
                && (s.position_estimate.is_some()
                    || Ways::of(s.autopilot).arming_checks_judge_position())
        };
        if !reported(&self.shared.snapshot.borrow()) {
            let settle = self.shared.cfg.heartbeat_timeout() * 2;
            if self.shared.wait_for(settle, reported).await.is_none() {
                debug!(
                    ?settle,
                    "pre-flight: the autopilot's reports are still incomplete"
                );
            }
        }
        let s = self.shared.snapshot.borrow().clone();
        let prearm = lock(&self.shared.state).prearm_ok;
        let mut checks = Vec::new();
        let mut check = |name: &'static str, passed: bool, detail: String| {
            checks.push(PreflightCheck {
                name,
                passed,
                detail,
            });
        };
        check(
            "link",
            s.link.is_connected(),
            format!("{:?}, autopilot {:?}", s.link, s.autopilot),
        );
        check(
            "gps",
            s.gps_fix.is_3d(),
            format!(
                "{:?}, {} satellites",
                s.gps_fix,
                s.satellites.map_or("?".into(), |n| n.to_string())
            ),
        );
        check(
            "home",
            s.home.is_some(),
            match s.home {
                Some(h) => format!("home at {:.7}, {:.7}", h.lat_deg, h.lon_deg),
                None => "no home position yet".into(),
            },
        );
        // a GPS fix and home come seconds before ArduPilot's EKF navigates by them
        let by_arming_checks = Ways::of(s.autopilot).arming_checks_judge_position();
        let (passed, detail) = match (s.position_estimate, by_arming_checks) {
            (Some(true), _) => (true, "position estimate usable".to_owned()),
            (Some(false), _) => (
                false,
                "the autopilot has no position estimate yet".to_owned(),
            ),
            // PX4 without ESTIMATOR_STATUS on this link: its arming checks decide
            (None, true) => (
                true,
                "estimator not reported; the autopilot's arming checks decide".to_owned(),
            ),
            (None, _) => (false, "estimator status not reported".to_owned()),
        };
        check("position", passed, detail);
        let battery_ok = s.battery_percent.is_some_and(|p| p >= min_battery_percent)
            && s.battery_failsafe.is_none()
            && s.battery_faults.is_empty()
            && s.battery_charge_state.is_none_or(|c| !c.is_low_or_worse());
        check(
            "battery",
            battery_ok,
            match (
                s.battery_percent,
                &s.battery_failsafe,
                s.battery_charge_state,
            ) {
                (_, Some(text), _) => format!("autopilot battery failsafe: {text}"),
                _ if !s.battery_faults.is_empty() => {
                    format!(
                        "autopilot reports battery faults: {}",
                        s.battery_faults.join(", ")
                    )
                }
                (_, None, Some(c)) if c.is_low_or_worse() => {
                    format!("autopilot reports the battery {c:?}")
                }
                (Some(p), _, _) => format!("{p:.0}% (minimum {min_battery_percent:.0}%)"),
                (None, _, _) => "battery not reported".into(),
            },
        );
        check(
            "health",
            s.healthy,
            if s.healthy {
                "flight sensors healthy".into()
            } else {
                format!(
                    "autopilot reports failing: {}",
                    s.health_failures.join(", ")
                )
            },
        );
        check(
            "armable",
            !s.armed && prearm != Some(false),
            if s.armed {
                "already armed".into()
            } else {
                match prearm {
                    Some(true) => "pre-arm checks pass".into(),
                    Some(false) => format!(
                        "pre-arm checks fail{}",
                        s.last_status_text
                            .map(|t| format!(" (last message: {t})"))
                            .unwrap_or_default()
                    ),
                    // PX4 never sets the bit: arming itself (and its events) tells
                    None => "pre-arm state not reported; arming will tell".into(),
                }
            },
        );
        Ok(PreflightReport { checks })
    }

    async fn arm(&self) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_COMPONENT_ARM_DISARM(arm)";
        if Ways::of(self.shared.autopilot(NAME)?).mode_before_arming() {
            // the flight mode first: ArduCopter checks a mode's position needs only while armed,
            // so arming in STABILIZE before the EKF has a position succeeds and the GUIDED after
            // it fails ("requires position") with the motors running. In GUIDED the arm itself
            // is refused cleanly ("Arm: Need Position Estimate").
            self.shared
                .set_mode("set mode GUIDED", FlightModeKind::Guided)
                .await?;
        }
        self.shared
            .command(
                NAME,
                MavCmd::MAV_CMD_COMPONENT_ARM_DISARM,
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            )
            .await?;
        match self
            .shared
            .wait_for(self.shared.cfg.mode_change_timeout(), |s| s.armed)
            .await
        {
            Some(_) => Ok(()),
            None => Err(FcError::Failed {
                command: NAME,
                reason: Some("accepted, but HEARTBEAT does not show armed".into()),
            }),
        }
    }

    async fn disarm(&self) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_COMPONENT_ARM_DISARM(disarm)";
        self.shared
            .command(NAME, MavCmd::MAV_CMD_COMPONENT_ARM_DISARM, [0.0; 7])
            .await?;
        match self
            .shared
            .wait_for(self.shared.cfg.mode_change_timeout(), |s| !s.armed)
            .await
        {
            Some(_) => Ok(()),
            None => Err(FcError::Failed {
                command: NAME,
                reason: Some("accepted, but HEARTBEAT still shows armed".into()),
            }),
        }
    }

    async fn takeoff(&self, alt_rel_m: f64) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_NAV_TAKEOFF";
        self.shared
            .motion(NAME, async {
                if !alt_rel_m.is_finite() || alt_rel_m <= 0.0 {
                    return Err(FcError::InvalidArgument {
                        command: NAME,
                        reason: format!("take-off altitude {alt_rel_m} m must be above 0"),
                    });
                }
                let ways = Ways::of(self.shared.autopilot(NAME)?);
                let alt = match ways.takeoff_mode() {
                    // PX4 takes the take-off altitude as AMSL, and switches to its Takeoff mode
                    Some(mode) if ways.amsl_altitudes() => {
                        let alt = self.shared.home_msl(NAME).await? + alt_rel_m;
                        self.shared.expect_mode(mode);
                        alt
                    }
                    _ => {
                        // ArduCopter takes off only in GUIDED, to an altitude above home
                        self.shared
                            .set_mode("set mode GUIDED", FlightModeKind::Guided)
                            .await?;
                        alt_rel_m
                    }
                };
                self.shared
                    .command(
                        NAME,
                        MavCmd::MAV_CMD_NAV_TAKEOFF,
                        [0.0, 0.0, 0.0, f32::NAN, f32::NAN, f32::NAN, alt as f32],
                    )
                    .await?;
                lock(&self.shared.state).last_goto = None;
                Ok(())
            })
            .await
    }

    async fn goto(&self, target: GeoPoint) -> Result<(), FcError> {
        self.shared
            .motion("MAV_CMD_DO_REPOSITION", self.shared.goto(target))
            .await
    }

    async fn hover_at(&self, alt_rel_m: f64) -> Result<(), FcError> {
        self.shared
            .motion("MAV_CMD_DO_REPOSITION", async {
                let here = self.shared.snapshot.borrow().position;
                let here = here.ok_or(FcError::Failed {
                    command: "MAV_CMD_DO_REPOSITION",
                    reason: Some("position not known yet".into()),
                })?;
                self.shared
                    .goto(GeoPoint::new(here.lat_deg, here.lon_deg, alt_rel_m))
                    .await
            })
            .await
    }

    async fn hold(&self) -> Result<(), FcError> {
        self.shared.motion("hold", self.shared.hold()).await
    }

    async fn set_fence(&self, fence: &crate::flight::Fence) -> Result<(), FcError> {
        self.shared.set_fence(fence).await
    }

    async fn return_to_launch(&self) -> Result<(), FcError> {
        self.shared
            .motion(
                "set mode RTL",
                self.shared
                    .set_mode("set mode RTL", FlightModeKind::ReturnToLaunch),
            )
            .await
    }

    async fn land(&self) -> Result<(), FcError> {
        self.shared
            .motion(
                "set mode LAND",
                self.shared.set_mode("set mode LAND", FlightModeKind::Land),
            )
            .await
    }

    async fn set_gripper(&self, action: GripperAction) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_DO_GRIPPER";
        let autopilot = self.shared.autopilot(NAME)?;
        let confirmations = lock(&self.shared.state).gripper_confirmations;
        // PX4's payload deliverer answers IN_PROGRESS and ACCEPTED once it has moved
        self.shared
            .command(
                NAME,
                MavCmd::MAV_CMD_DO_GRIPPER,
                [1.0, gripper_param(action), 0.0, 0.0, 0.0, 0.0, 0.0],
            )
            .await?;
        if Ways::of(autopilot).gripper_confirmed_by_ack() {
            self.shared.update(|s| s.gripper = Some(action));
        } else {
            // ArduPilot ACKs at once ("Gripper load releasing") and reports the gripper done
            // about 0.5 s later ("Gripper load released"): that report is the confirmation
            let timeout = Duration::from_millis(self.shared.cfg.gripper_confirm_timeout_ms);
            let confirmed = self
                .shared
                .wait_for(timeout, |s| {
                    s.gripper == Some(action)
                        && lock(&self.shared.state).gripper_confirmations > confirmations
                })
                .await;
            if confirmed.is_none() {
                return Err(FcError::Failed {
                    command: NAME,
                    reason: Some(format!(
                        "accepted, but the autopilot did not report the gripper {} within {timeout:?}",
                        match action {
                            GripperAction::Release => "released",
                            GripperAction::Grab => "grabbed",
                        }
                    )),
                });
            }
        }
        // the mechanism's own travel after the autopilot says it is done
        tokio::time::sleep(Duration::from_millis(self.shared.cfg.gripper_settle_ms)).await;
        Ok(())
    }

    async fn set_servo(&self, channel: u8, pwm_us: u16) -> Result<(), FcError> {
        if !(1..=16).contains(&channel) || !(500..=2500).contains(&pwm_us) {
            return Err(FcError::InvalidArgument {
                command: "MAV_CMD_DO_SET_SERVO",
                reason: format!("channel {channel} must be 1..=16 and {pwm_us} µs 500..=2500"),
            });
        }
        match Ways::of(self.shared.autopilot("MAV_CMD_DO_SET_SERVO")?).servo_by_actuator_set() {
            true => {
                // PX4 drives peripherals through actuator sets: an output configured as
                // "Peripheral via Actuator Set N" on AUX N (output 8 + N)
                const NAME: &str = "MAV_CMD_DO_SET_ACTUATOR";
                let set = channel
                    .checked_sub(8)
                    .filter(|s| (1..=6).contains(s))
                    .ok_or(FcError::Unsupported {
                        command: NAME,
                        reason: Some(format!(
                            "on PX4 use outputs 9..=14 (actuator sets 1..=6), not {channel}"
                        )),
                    })?;
                let mut p = [f32::NAN; 7];
                p[usize::from(set - 1)] = ((f32::from(pwm_us) - 1500.0) / 500.0).clamp(-1.0, 1.0);
                p[6] = 0.0;
                self.shared
                    .command(NAME, MavCmd::MAV_CMD_DO_SET_ACTUATOR, p)
                    .await
            }
            false => {
                self.shared
                    .command(
                        "MAV_CMD_DO_SET_SERVO",
                        MavCmd::MAV_CMD_DO_SET_SERVO,
                        [
                            f32::from(channel),
                            f32::from(pwm_us),
                            0.0,
                            0.0,
                            0.0,
                            0.0,
                            0.0,
                        ],
                    )
                    .await
            }
        }
    }

    async fn send_landing_target(&self, t: LandingTarget) -> Result<(), FcError> {
        const NAME: &str = "LANDING_TARGET";
        if self.shared.target().is_none() {
            return Err(FcError::LinkLost { command: NAME });
        }
        let time_usec = t
            .captured_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let msg = MavMessage::LANDING_TARGET(apm::LANDING_TARGET_DATA {
            time_usec,
            angle_x: t.angle_x_rad,
            angle_y: t.angle_y_rad,
            distance: t.distance_m.unwrap_or(0.0),
            size_x: t.size_x_rad,
            size_y: t.size_y_rad,
            target_num: t.target_num,
            frame: apm::MavFrame::MAV_FRAME_BODY_FRD,
            ..Default::default()
        });
        self.shared.send(NAME, &msg).await
    }

    fn autopilot_messages(&self) -> broadcast::Receiver<AutopilotMessage> {
        self.shared.messages.subscribe()
    }
}
