//! The geofence: its zones through the mission protocol (`MAV_MISSION_TYPE_FENCE`), read back and
//! compared item by item, then the autopilot's fence parameters (PARAM_SET, confirmed by the
//! PARAM_VALUE echo) with enabling last, so the autopilot never enforces half a fence.
//!
//! ArduPilot: `FENCE_ALT_MAX`, `FENCE_TYPE` (1 ceiling | 4 polygons and circles from the
//! fence items), `FENCE_ACTION` (1 RTL, 2 land), then `FENCE_ENABLE` = 1. PX4: `GF_MAX_VER_DIST`,
//! then `GF_ACTION` (3 return, 5 land), which is what arms PX4's geofence; its integer
//! parameters travel byte-wise in the float field (PX4's `PARAM_ENCODE_BYTEWISE`), ArduPilot's
//! as plain floats.

use super::*;
use crate::flight::{Fence, FenceAction, FenceZone};

const STEP: &str = "fence upload";
const READ: &str = "fence read-back";

/// A parameter value as it goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ParamValue {
    pub(super) wire: f32,
    pub(super) kind: apm::MavParamType,
}

impl ParamValue {
    fn real(v: f64) -> Self {
        Self {
            wire: v as f32,
            kind: apm::MavParamType::MAV_PARAM_TYPE_REAL32,
        }
    }

    fn int(autopilot: Autopilot, v: i32) -> Self {
        match autopilot {
            // PX4 copies the float's bytes into its int32 parameter
            Autopilot::Px4 => Self {
                wire: f32::from_bits(v as u32),
                kind: apm::MavParamType::MAV_PARAM_TYPE_INT32,
            },
            // ArduPilot converts the float, whatever the type field says
            _ => Self {
                wire: v as f32,
                kind: apm::MavParamType::MAV_PARAM_TYPE_INT8,
            },
        }
    }

    fn shown(&self) -> String {
        match self.kind {
            apm::MavParamType::MAV_PARAM_TYPE_INT32 => (self.wire.to_bits() as i32).to_string(),
            _ => format!("{}", self.wire),
        }
    }
}

/// The parameters that configure and enable the fence, in the order they are set (enabling
/// last).
pub(super) fn fence_params(autopilot: Autopilot, fence: &Fence) -> Vec<(&'static str, ParamValue)> {
    match autopilot {
        Autopilot::Px4 => vec![
            ("GF_MAX_VER_DIST", ParamValue::real(fence.max_alt_m)),
            (
                "GF_ACTION",
                ParamValue::int(
                    autopilot,
                    match fence.action {
                        FenceAction::ReturnToLaunch => 3,
                        FenceAction::Land => 5,
                    },
                ),
            ),
        ],
        _ => vec![
            ("FENCE_ALT_MAX", ParamValue::real(fence.max_alt_m)),
            ("FENCE_TYPE", ParamValue::int(autopilot, 1 | 4)),
            (
                "FENCE_ACTION",
                ParamValue::int(
                    autopilot,
                    match fence.action {
                        FenceAction::ReturnToLaunch => 1,
                        FenceAction::Land => 2,
                    },
                ),
            ),
            ("FENCE_ENABLE", ParamValue::int(autopilot, 1)),
        ],
    }
}

/// The fence's zones as `MISSION_ITEM_INT`s: one item per polygon vertex (param1 = the
/// polygon's vertex count), one per circle (param1 = radius).
pub(super) fn fence_items(fence: &Fence, target: (u8, u8)) -> Vec<apm::MISSION_ITEM_INT_DATA> {
    let mut items = Vec::new();
    let mut push = |command: MavCmd, p1: f32, (lat, lon): (f64, f64)| {
        items.push(apm::MISSION_ITEM_INT_DATA {
            param1: p1,
            param2: 0.0,
            param3: 0.0,
            param4: 0.0,
            x: deg_e7(lat),
            y: deg_e7(lon),
            z: 0.0,
            seq: 0,
            command,
            target_system: target.0,
            target_component: target.1,
            frame: apm::MavFrame::MAV_FRAME_GLOBAL,
            current: 0,
            autocontinue: 0,
            mission_type: apm::MavMissionType::MAV_MISSION_TYPE_FENCE,
        });
    };
    for zone in &fence.zones {
        match zone {
            FenceZone::Polygon {
                inclusion,
                vertices,
            } => {
                let cmd = if *inclusion {
                    MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_INCLUSION
                } else {
                    MavCmd::MAV_CMD_NAV_FENCE_POLYGON_VERTEX_EXCLUSION
                };
                for v in vertices {
                    push(cmd, vertices.len() as f32, *v);
                }
            }
            FenceZone::Circle {
                inclusion,
                center,
                radius_m,
            } => {
                let cmd = if *inclusion {
                    MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_INCLUSION
                } else {
                    MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION
                };
                push(cmd, *radius_m as f32, *center);
            }
        }
    }
    for (i, item) in items.iter_mut().enumerate() {
        item.seq = u16::try_from(i).unwrap_or(u16::MAX);
    }
    items
}

/// What differs between the item sent and the one read back, if anything that matters
/// (command, vertex count or radius to 0.1 m, position to 1e-7°).
pub(super) fn item_difference(
    sent: &apm::MISSION_ITEM_INT_DATA,
    got: &apm::MISSION_ITEM_INT_DATA,
) -> Option<String> {
    if sent.command != got.command {
        return Some(format!(
            "fence item {}: command {:?} read back as {:?}",
            sent.seq, sent.command, got.command
        ));
    }
    if (sent.param1 - got.param1).abs() > 0.1 {
        return Some(format!(
            "fence item {}: param1 (vertex count or radius) {} read back as {}",
            sent.seq, sent.param1, got.param1
        ));
    }
    if (sent.x - got.x).abs() > 1 || (sent.y - got.y).abs() > 1 {
        return Some(format!(
            "fence item {}: position {:.7},{:.7} read back as {:.7},{:.7}",
            sent.seq,
            f64::from(sent.x) * 1e-7,
            f64::from(sent.y) * 1e-7,
            f64::from(got.x) * 1e-7,
            f64::from(got.y) * 1e-7
        ));
    }
    None
}

impl Shared {
    pub(super) async fn set_fence(&self, fence: &Fence) -> Result<(), FcError> {
        for zone in &fence.zones {
            let points: Vec<(f64, f64)> = match zone {
                FenceZone::Polygon { vertices, .. } => vertices.clone(),
                FenceZone::Circle {
                    center, radius_m, ..
                } => {
                    if !(radius_m.is_finite() && *radius_m > 0.0) {
                        return Err(FcError::InvalidArgument {
                            command: STEP,
                            reason: format!("circle radius {radius_m} m"),
                        });
                    }
                    vec![*center]
                }
            };
            for (lat, lon) in points {
                check_point("fence item", &GeoPoint::new(lat, lon, 0.0))?;
            }
        }
        if !(fence.max_alt_m.is_finite() && fence.max_alt_m > 0.0) {
            return Err(FcError::InvalidArgument {
                command: STEP,
                reason: format!("ceiling {} m", fence.max_alt_m),
            });
        }
        let autopilot = self.autopilot(STEP)?;
        let target = self.target().ok_or(FcError::LinkLost { command: STEP })?;
        let items = fence_items(fence, target);
        {
            let _one = self.mission_lock.lock().await;
            let wire: Vec<MavMessage> = items
                .iter()
                .cloned()
                .map(MavMessage::MISSION_ITEM_INT)
                .collect();
            self.upload_items(
                &wire,
                target,
                apm::MavMissionType::MAV_MISSION_TYPE_FENCE,
                STEP,
            )
            .await?;
            let back = self
                .download_items(target, apm::MavMissionType::MAV_MISSION_TYPE_FENCE, READ)
                .await?;
            if back.len() != items.len() {
                return Err(FcError::Mission {
                    step: READ,
                    reason: format!("{} fence items sent, {} read back", items.len(), back.len()),
                });
            }
            if let Some(d) = items
                .iter()
                .zip(&back)
                .find_map(|(s, g)| item_difference(s, g))
            {
                return Err(FcError::Mission {
                    step: READ,
                    reason: d,
                });
            }
        }
        for (name, value) in fence_params(autopilot, fence) {
            self.set_param(target, name, value).await?;
        }
        info!(
            items = items.len(),
            max_alt_m = fence.max_alt_m,
            action = ?fence.action,
            "fence stored, read back and enabled"
        );
        Ok(())
    }

    /// The download half of the mission protocol: REQUEST_LIST, COUNT, each item by
    /// REQUEST_INT, our ACK. Each step resent after the per-step timeout, bounded.
    pub(super) async fn download_items(
        &self,
        target: (u8, u8),
        mission_type: apm::MavMissionType,
        step: &'static str,
    ) -> Result<Vec<apm::MISSION_ITEM_INT_DATA>, FcError> {
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let list = MavMessage::MISSION_REQUEST_LIST(apm::MISSION_REQUEST_LIST_DATA {
            target_system: target.0,
            target_component: target.1,
            mission_type,
        });
        let count = self
            .ask(&mut replies, &mut link, step, &list, |m| match m {
                MavMessage::MISSION_COUNT(c) if c.mission_type == mission_type => Some(c.count),
                _ => None,
            })
            .await?;
        let mut items = Vec::with_capacity(usize::from(count));
        for seq in 0..count {
            let req = MavMessage::MISSION_REQUEST_INT(apm::MISSION_REQUEST_INT_DATA {
                seq,
                target_system: target.0,
                target_component: target.1,
                mission_type,
            });
            let item = self
                .ask(&mut replies, &mut link, step, &req, |m| match m {
                    MavMessage::MISSION_ITEM_INT(i)
                        if i.mission_type == mission_type && i.seq == seq =>
                    {
                        Some(i.clone())
                    }
                    _ => None,
                })
                .await?;
            items.push(item);
        }
        let ack = MavMessage::MISSION_ACK(apm::MISSION_ACK_DATA {
            target_system: target.0,
            target_component: target.1,
            mavtype: apm::MavMissionResult::MAV_MISSION_ACCEPTED,
            mission_type,
            ..Default::default()
        });
        self.send("MISSION_ACK", &ack).await?;
        Ok(items)
    }

    /// Sends `msg` and waits for the reply `pick` accepts, resending after each per-step timeout
    /// up to `mission_retries` times.
    async fn ask<T>(
        &self,
        replies: &mut broadcast::Receiver<Reply>,
        link: &mut watch::Receiver<bool>,
        step: &'static str,
        msg: &MavMessage,
        mut pick: impl FnMut(&MavMessage) -> Option<T>,
    ) -> Result<T, FcError> {
        for attempt in 0..=self.cfg.mission_retries {
            self.send(step, msg).await?;
            let deadline = tokio::time::Instant::now() + self.cfg.mission_timeout();
            loop {
                tokio::select! {
                    r = replies.recv() => match r {
                        Ok(reply) => {
                            if let Some(v) = pick(&reply.1) {
                                return Ok(v);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Err(FcError::Cancelled { command: step }),
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = link.changed() => {
                        if r.is_err() || !*link.borrow() {
                            return Err(FcError::LinkLost { command: step });
                        }
                    }
                }
            }
            debug!(attempt, step, "no answer; resending");
        }
        Err(FcError::Mission {
            step,
            reason: format!(
                "no answer to {} after {} attempts",
                message_name(msg),
                self.cfg.mission_retries + 1
            ),
        })
    }

    /// PARAM_SET until the autopilot's PARAM_VALUE echoes the value (bounded resends).
    pub(super) async fn set_param(
        &self,
        target: (u8, u8),
        name: &'static str,
        value: ParamValue,
    ) -> Result<(), FcError> {
        let mut replies = self.replies.subscribe();
        let mut link = self.link_up.subscribe();
        let set = MavMessage::PARAM_SET(apm::PARAM_SET_DATA {
            param_value: value.wire,
            target_system: target.0,
            target_component: target.1,
            param_id: name.into(),
            param_type: value.kind,
        });
        let echoed = self
            .ask(&mut replies, &mut link, name, &set, |m| match m {
                MavMessage::PARAM_VALUE(v) if v.param_id.to_str().ok() == Some(name) => {
                    Some(v.param_value)
                }
                _ => None,
            })
            .await?;
        if echoed.to_bits() != value.wire.to_bits() && (echoed - value.wire).abs() > 1e-3 {
            let got = ParamValue {
                wire: echoed,
                kind: value.kind,
            };
            return Err(FcError::Failed {
                command: name,
                reason: Some(format!(
                    "set to {}, the autopilot reports {}",
                    value.shown(),
                    got.shown()
                )),
            });
        }
        debug!(param = name, value = %value.shown(), "parameter set");
        Ok(())
    }
}

fn message_name(msg: &MavMessage) -> &'static str {
    match msg {
        MavMessage::MISSION_REQUEST_LIST(_) => "MISSION_REQUEST_LIST",
        MavMessage::MISSION_REQUEST_INT(_) => "MISSION_REQUEST_INT",
        MavMessage::PARAM_SET(_) => "PARAM_SET",
        _ => "the request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence() -> Fence {
        Fence {
            zones: vec![
                FenceZone::Polygon {
                    inclusion: true,
                    vertices: vec![(55.0, 37.0), (55.01, 37.0), (55.01, 37.01)],
                },
                FenceZone::Circle {
                    inclusion: false,
                    center: (55.005, 37.005),
                    radius_m: 50.0,
                },
            ],
            max_alt_m: 60.0,
            action: FenceAction::ReturnToLaunch,
        }
    }

    #[test]
    fn zones_become_numbered_fence_items_and_differences_are_named() {
        let items = fence_items(&fence(), (1, 1));
        assert_eq!(items.len(), 4);
        assert!(items
            .iter()
            .enumerate()
            .all(|(i, it)| usize::from(it.seq) == i
                && it.mission_type == apm::MavMissionType::MAV_MISSION_TYPE_FENCE));
        assert_eq!(items[0].param1, 3.0);
        assert_eq!(items[3].command, MavCmd::MAV_CMD_NAV_FENCE_CIRCLE_EXCLUSION);
        let mut moved = items[1].clone();
        moved.x += 50;
        let why = item_difference(&items[1], &moved).unwrap();
        assert!(why.starts_with("fence item 1: position"), "{why}");
        assert_eq!(item_difference(&items[2], &items[2].clone()), None);
    }

    #[test]
    fn px4_integers_travel_bytewise_and_enabling_comes_last() {
        let px4 = fence_params(Autopilot::Px4, &fence());
        assert_eq!(px4.last().unwrap().0, "GF_ACTION");
        assert_eq!(px4.last().unwrap().1.wire.to_bits(), 3);
        let ap = fence_params(Autopilot::ArduPilot, &fence());
        assert_eq!(ap.last().unwrap().0, "FENCE_ENABLE");
        assert!(ap
            .iter()
            .any(|(n, v)| *n == "FENCE_ACTION" && v.wire == 1.0));
    }
}
