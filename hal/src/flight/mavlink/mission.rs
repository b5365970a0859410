//! The mission protocol, and [`MissionControl`] (resume and the mission trio: no agent calls
//! them).

use super::*;

impl Shared {
    pub(super) fn mission_item(
        &self,
        seq: u16,
        item: &MissionItem,
        target: (u8, u8),
    ) -> MavMessage {
        use apm::MavFrame as F;
        let here = self.snapshot.borrow().position;
        let (cmd, frame, p1, p2, x, y, z) = match *item {
            MissionItem::Takeoff { alt_rel_m } => {
                let (lat, lon) = here.map(|p| (p.lat_deg, p.lon_deg)).unwrap_or((0.0, 0.0));
                (
                    MavCmd::MAV_CMD_NAV_TAKEOFF,
                    F::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                    0.0,
                    0.0,
                    deg_e7(lat),
                    deg_e7(lon),
                    alt_rel_m as f32,
                )
            }
            MissionItem::Waypoint { point, hold_s } => (
                MavCmd::MAV_CMD_NAV_WAYPOINT,
                F::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                hold_s,
                0.0,
                deg_e7(point.lat_deg),
                deg_e7(point.lon_deg),
                point.alt_rel_m as f32,
            ),
            MissionItem::Land { point } => (
                MavCmd::MAV_CMD_NAV_LAND,
                F::MAV_FRAME_GLOBAL_RELATIVE_ALT,
                0.0,
                0.0,
                deg_e7(point.lat_deg),
                deg_e7(point.lon_deg),
                0.0,
            ),
            MissionItem::Gripper(action) => (
                MavCmd::MAV_CMD_DO_GRIPPER,
                F::MAV_FRAME_MISSION,
                1.0,
                gripper_param(action),
                0,
                0,
                0.0,
            ),
            MissionItem::ReturnToLaunch => (
                MavCmd::MAV_CMD_NAV_RETURN_TO_LAUNCH,
                F::MAV_FRAME_MISSION,
                0.0,
                0.0,
                0,
                0,
                0.0,
            ),
        };
        MavMessage::MISSION_ITEM_INT(apm::MISSION_ITEM_INT_DATA {
            param1: p1,
            param2: p2,
            param3: 0.0,
            param4: f32::NAN,
            x,
            y,
            z,
            seq,
            command: cmd,
            target_system: target.0,
            target_component: target.1,
            frame,
            current: 0,
            autocontinue: 1,
            ..Default::default()
        })
    }

    pub(super) fn home_item(&self, target: (u8, u8)) -> MavMessage {
        let home = self.snapshot.borrow().home;
        let (lat, lon, alt) = home
            .map(|h| (h.lat_deg, h.lon_deg, h.alt_msl_m))
            .unwrap_or((0.0, 0.0, 0.0));
        MavMessage::MISSION_ITEM_INT(apm::MISSION_ITEM_INT_DATA {
            param1: 0.0,
            param2: 0.0,
            param3: 0.0,
            param4: 0.0,
            x: deg_e7(lat),
            y: deg_e7(lon),
            z: alt as f32,
            seq: 0,
            command: MavCmd::MAV_CMD_NAV_WAYPOINT,
            target_system: target.0,
            target_component: target.1,
            frame: apm::MavFrame::MAV_FRAME_GLOBAL,
            current: 0,
            autocontinue: 1,
            ..Default::default()
        })
    }

    /// Waits for the next mission-protocol reply from the autopilot, up to the per-step timeout.
    #[allow(deprecated)]
    pub(super) async fn next_mission_reply(
        &self,
        replies: &mut broadcast::Receiver<Reply>,
        link: &mut watch::Receiver<bool>,
        step: &'static str,
    ) -> Result<Option<Reply>, FcError> {
        let deadline = tokio::time::Instant::now() + self.cfg.mission_timeout();
        loop {
            tokio::select! {
                r = replies.recv() => match r {
                    Ok(reply) => {
                        if matches!(reply.1, MavMessage::MISSION_REQUEST_INT(_) | MavMessage::MISSION_REQUEST(_) | MavMessage::MISSION_ACK(_) | MavMessage::MISSION_COUNT(_) | MavMessage::MISSION_ITEM_INT(_)) {
                            return Ok(Some(reply));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Err(FcError::Cancelled { command: step }),
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                r = link.changed() => {
                    if r.is_err() || !*link.borrow() {
                        return Err(FcError::LinkLost { command: step });
                    }
                }
            }
        }
    }

    #[allow(deprecated)]
    pub(super) async fn upload_mission(&self, items: &[MissionItem]) -> Result<(), FcError> {
        const STEP: &str = "upload";
        for item in items {
            if let MissionItem::Waypoint { point, .. } | MissionItem::Land { point } = item {
                check_point("MISSION_ITEM_INT", point)?;
            }
        }
        let _one = self.mission_lock.lock().await;
        let target = self.target().ok_or(FcError::LinkLost {
            command: "MISSION_COUNT",
        })?;
        let offset = Ways::of(self.autopilot("MISSION_COUNT")?).mission_offset();
        let mut wire: Vec<MavMessage> = Vec::with_capacity(items.len() + 1);
        if offset == 1 {
            wire.push(self.home_item(target));
        }
        for (i, item) in items.iter().enumerate() {
            let seq = u16::try_from(i).unwrap_or(u16::MAX).saturating_add(offset);
            wire.push(self.mission_item(seq, item, target));
        }
        let count = u16::try_from(wire.len()).map_err(|_| FcError::InvalidArgument {
            command: "MISSION_COUNT",
            reason: format!("{} items is more than a mission can hold", wire.len()),
        })?;
        self.upload_items(
            &wire,
            target,
            apm::MavMissionType::MAV_MISSION_TYPE_MISSION,
            STEP,
        )
        .await?;
        lock(&self.state).mission_offset = offset;
        self.snapshot.send_modify(|s| {
            s.at = SystemTime::now();
            s.mission = MissionProgress {
                count: Some(count - offset),
                current: None,
                last_reached: None,
            };
        });
        info!(items = items.len(), "mission uploaded");
        Ok(())
    }

    /// The upload half of the mission protocol for any mission type (missions, fences): COUNT,
    /// then each item the autopilot asks for, until its ACCEPTED. Each step is resent after the
    /// per-step timeout, at most `mission_retries` times.
    #[allow(deprecated)]
    pub(super) async fn upload_items(
        &self,
        wire: &[MavMessage],
        target: (u8, u8),
        mission_type: apm::MavMissionType,
        step: &'static str,
    ) -> Result<(), FcError> {
        let count = u16::try_from(wire.len()).map_err(|_| FcError::InvalidArgument {
            command: "MISSION_COUNT",
            reason: format!("{} items is more than a mission can hold", wire.len()),
        })?;
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let count_msg = MavMessage::MISSION_COUNT(apm::MISSION_COUNT_DATA {
            count,
            target_system: target.0,
            target_component: target.1,
            mission_type,
            ..Default::default()
        });
        self.send("MISSION_COUNT", &count_msg).await?;
        let mut last_sent = count_msg;
        let mut tries = 0u32;
        let mut highest_requested: Option<u16> = None;
        loop {
            let reply = self
                .next_mission_reply(&mut replies, &mut link, step)
                .await?;
            let Some(reply) = reply else {
                tries += 1;
                if tries > self.cfg.mission_retries {
                    return Err(FcError::Mission {
                        step,
                        reason: format!(
                            "no answer after {} attempts (last request: {:?})",
                            tries, highest_requested
                        ),
                    });
                }
                debug!(tries, "mission step timed out; resending");
                self.send("MISSION_ITEM_INT", &last_sent).await?;
                continue;
            };
            if reply_mission_type(&reply.1) != Some(mission_type) {
                // another transfer's answer (each mission type is its own protocol run)
                continue;
            }
            match &reply.1 {
                MavMessage::MISSION_REQUEST_INT(apm::MISSION_REQUEST_INT_DATA { seq, .. })
                | MavMessage::MISSION_REQUEST(apm::MISSION_REQUEST_DATA { seq, .. }) => {
                    let Some(item) = wire.get(usize::from(*seq)) else {
                        return Err(FcError::Mission {
                            step,
                            reason: format!("autopilot asked for item {seq} of {count}"),
                        });
                    };
                    tries = 0;
                    highest_requested = Some(highest_requested.map_or(*seq, |h| h.max(*seq)));
                    self.send("MISSION_ITEM_INT", item).await?;
                    last_sent = item.clone();
                }
                MavMessage::MISSION_ACK(ack) => {
                    if ack.mavtype == apm::MavMissionResult::MAV_MISSION_ACCEPTED {
                        if highest_requested.map(|h| h + 1) == Some(count) {
                            break;
                        }
                        // an ACCEPTED before all items were requested is a stale ack
                        continue;
                    }
                    return Err(FcError::Mission {
                        step,
                        reason: format!("autopilot answered {:?}", ack.mavtype),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) async fn clear_mission(&self) -> Result<(), FcError> {
        const STEP: &str = "clear";
        let _one = self.mission_lock.lock().await;
        let target = self.target().ok_or(FcError::LinkLost {
            command: "MISSION_CLEAR_ALL",
        })?;
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let msg = MavMessage::MISSION_CLEAR_ALL(apm::MISSION_CLEAR_ALL_DATA {
            target_system: target.0,
            target_component: target.1,
            ..Default::default()
        });
        for attempt in 0..=self.cfg.mission_retries {
            self.send("MISSION_CLEAR_ALL", &msg).await?;
            loop {
                match self
                    .next_mission_reply(&mut replies, &mut link, STEP)
                    .await?
                {
                    None => {
                        debug!(attempt, "no MISSION_ACK for clear; resending");
                        break;
                    }
                    Some(reply) => {
                        if let MavMessage::MISSION_ACK(ack) = &reply.1 {
                            if ack.mavtype == apm::MavMissionResult::MAV_MISSION_ACCEPTED {
                                self.snapshot.send_modify(|s| {
                                    s.at = SystemTime::now();
                                    s.mission = MissionProgress {
                                        count: Some(0),
                                        current: None,
                                        last_reached: None,
                                    };
                                });
                                return Ok(());
                            }
                            return Err(FcError::Mission {
                                step: STEP,
                                reason: format!("autopilot answered {:?}", ack.mavtype),
                            });
                        }
                    }
                }
            }
        }
        Err(FcError::Mission {
            step: STEP,
            reason: format!(
                "no MISSION_ACK after {} attempts",
                self.cfg.mission_retries + 1
            ),
        })
    }
}

impl MissionControl for MavlinkFc {
    async fn resume(&self) -> Result<(), FcError> {
        self.shared
            .motion("resume", async {
                let (paused_mission, last_goto) = {
                    let st = lock(&self.shared.state);
                    (st.paused_mission, st.last_goto)
                };
                if paused_mission {
                    self.shared
                        .set_mode("set mode AUTO", FlightModeKind::Auto)
                        .await?;
                    lock(&self.shared.state).paused_mission = false;
                    Ok(())
                } else if let Some(target) = last_goto {
                    self.shared.goto(target).await
                } else {
                    Err(FcError::Failed {
                        command: "resume",
                        reason: Some("nothing was paused: no mission and no go-to target".into()),
                    })
                }
            })
            .await
    }

    async fn upload_mission(&self, items: &[MissionItem]) -> Result<(), FcError> {
        self.shared.upload_mission(items).await
    }

    async fn clear_mission(&self) -> Result<(), FcError> {
        self.shared.clear_mission().await
    }

    async fn start_mission(&self) -> Result<(), FcError> {
        self.shared
            .motion("MAV_CMD_MISSION_START", self.start_mission_now())
            .await
    }
}

impl MavlinkFc {
    pub(super) async fn start_mission_now(&self) -> Result<(), FcError> {
        const NAME: &str = "MAV_CMD_MISSION_START";
        let (count, offset) = {
            let n = self.shared.snapshot.borrow().mission.count;
            (n, lock(&self.shared.state).mission_offset)
        };
        let count = match count {
            Some(n) if n > 0 => n,
            _ => {
                return Err(FcError::Failed {
                    command: NAME,
                    reason: Some("no mission uploaded through this link".into()),
                })
            }
        };
        self.shared.expect_mode(FlightModeKind::Auto);
        self.shared
            .command(
                NAME,
                MavCmd::MAV_CMD_MISSION_START,
                [
                    f32::from(offset),
                    f32::from(offset + count - 1),
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                ],
            )
            .await?;
        let autopilot = self.shared.autopilot(NAME)?;
        match self
            .shared
            .wait_for(self.shared.cfg.mode_change_timeout(), |s| {
                modes::satisfies(autopilot, s.mode.kind, FlightModeKind::Auto)
            })
            .await
        {
            Some(_) => {
                lock(&self.shared.state).paused_mission = false;
                Ok(())
            }
            None => Err(FcError::Failed {
                command: NAME,
                reason: Some("accepted, but the autopilot is not in mission mode".into()),
            }),
        }
    }
}

/// The mission type a mission-protocol reply belongs to (MISSION_REQUEST, an old message, has
/// none: missions only).
#[allow(deprecated)]
pub(super) fn reply_mission_type(msg: &MavMessage) -> Option<apm::MavMissionType> {
    match msg {
        MavMessage::MISSION_REQUEST_INT(r) => Some(r.mission_type),
        MavMessage::MISSION_REQUEST(r) => Some(r.mission_type),
        MavMessage::MISSION_ACK(a) => Some(a.mission_type),
        MavMessage::MISSION_COUNT(c) => Some(c.mission_type),
        MavMessage::MISSION_ITEM_INT(i) => Some(i.mission_type),
        _ => None,
    }
}
