//! Precision approach over the locker: from marker detections to corrections and a verdict.
//!
//! GPS puts the drone metres off the drop hatch; the locker's ArUco marker (the task's
//! `aruco_id`) says where the hatch really is. [`Approach`] is the pure decision part: it takes
//! each frame's detections (`hal::marker`), the position the autopilot reports and its heading,
//! and answers with a [`Decision`]: steer to a corrected point (the runtime sends it as a `goto`),
//! hold on, centred (the machine may take `arrived`), or failed with a reason (the machine's
//! `ApproachFailed` → `retry_navigation`). [`landing_target`] turns a detection into the MAVLink
//! `LANDING_TARGET` the autopilot's own precision landing uses (PX4 `PLD_*`, ArduPilot `PLND_*`;
//! see `docs/precision-landing.md`).
//!
//! Descent policy: hold altitude while the marker is off by more than `descend_within` of the
//! height (a wide correction at low height would lose the marker out of the frame), otherwise come
//! down by at most `descent_step_m` per correction, never below the drop height. Centred means
//! within `centre_tolerance_m` and `alt_tolerance_m` of the drop height for `settle_frames`
//! frames in a row.
//!
//! The machine holds one [`Approach`] while it is in NAVIGATING's approach phase and a
//! `[precision]` section and a camera are configured (`machine::ApproachRun`); the runtime turns
//! the camera worker's frames (`camera.rs`) and a clock tick into machine events.

use hal::flight::{GeoPoint, LandingTarget};
use hal::marker::{Intrinsics, MarkerDetection};
use protocol::geo::{LatLon, NorthEast};
use std::time::SystemTime;

/// The approach's settings live with the rest of the config.
pub use crate::config::PrecisionConfig;

/// Why a precision approach gave up (the reason in `ApproachFailed`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApproachFailure {
    #[error("marker {want} not seen within {after_s:.1} s")]
    NotSeen { want: u32, after_s: f64 },
    #[error("marker {want} not seen within {after_s:.1} s; saw ids {seen:?} instead")]
    WrongMarker {
        want: u32,
        seen: Vec<u32>,
        after_s: f64,
    },
    #[error("marker {want} lost for {for_s:.1} s")]
    Lost { want: u32, for_s: f64 },
}

/// Where the drone was when a frame was taken, as the autopilot said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub at: GeoPoint,
    /// Degrees from north.
    pub heading_deg: f64,
    /// Horizontal speed, m/s.
    pub speed_mps: f64,
}

/// What to do after a frame or a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing new: keep going.
    Wait,
    /// Fly to this point (in the autopilot's frame: reported position plus the seen offset).
    Steer(GeoPoint),
    /// Hovering centred at the drop height.
    Centred,
    Failed(ApproachFailure),
}

/// One precision approach, from the start of the descent over the destination. The machine
/// holds it (`machine::ApproachRun`): its counts and timeouts are machine data.
#[derive(Debug, Clone, PartialEq)]
pub struct Approach {
    cfg: PrecisionConfig,
    want: u32,
    drop_alt_m: f64,
    started_s: f64,
    last_seen_s: Option<f64>,
    others: Vec<u32>,
    settled: u32,
    done: bool,
}

impl Approach {
    pub fn new(cfg: PrecisionConfig, aruco_id: u32, drop_alt_m: f64, now_s: f64) -> Self {
        Self {
            cfg,
            want: aruco_id,
            drop_alt_m,
            started_s: now_s,
            last_seen_s: None,
            others: Vec::new(),
            settled: 0,
            done: false,
        }
    }

    /// Timeouts, checked whether or not frames arrive (a dead camera must still end the approach).
    pub fn tick(&mut self, now_s: f64) -> Decision {
        if self.done {
            return Decision::Wait;
        }
        let failure = match self.last_seen_s {
            None if now_s - self.started_s >= self.cfg.acquire_timeout_s => {
                let after_s = now_s - self.started_s;
                Some(if self.others.is_empty() {
                    ApproachFailure::NotSeen {
                        want: self.want,
                        after_s,
                    }
                } else {
                    ApproachFailure::WrongMarker {
                        want: self.want,
                        seen: self.others.clone(),
                        after_s,
                    }
                })
            }
            Some(seen) if now_s - seen >= self.cfg.lost_timeout_s => Some(ApproachFailure::Lost {
                want: self.want,
                for_s: now_s - seen,
            }),
            _ => None,
        };
        match failure {
            Some(f) => {
                self.done = true;
                Decision::Failed(f)
            }
            None => Decision::Wait,
        }
    }

    /// One frame's detections with the autopilot's pose at capture.
    pub fn frame(&mut self, now_s: f64, detections: &[MarkerDetection], pose: Pose) -> Decision {
        let (at, heading_deg) = (pose.at, pose.heading_deg);
        if self.done {
            return Decision::Wait;
        }
        let Some(m) = detections.iter().find(|d| d.id == self.want) else {
            for d in detections {
                if !self.others.contains(&d.id) {
                    self.others.push(d.id);
                }
            }
            self.settled = 0;
            return self.tick(now_s);
        };
        self.last_seen_s = Some(now_s);
        let g = m.target;
        let offset = g.horizontal_offset_m();
        let height = at.alt_rel_m.max(0.1);
        let at_drop = (at.alt_rel_m - self.drop_alt_m).abs() <= self.cfg.alt_tolerance_m;
        let still = pose.speed_mps <= self.cfg.settled_speed_mps;
        if offset <= self.cfg.centre_tolerance_m && at_drop && still {
            self.settled += 1;
            if self.settled >= self.cfg.settle_frames {
                self.done = true;
                return Decision::Centred;
            }
        } else {
            self.settled = 0;
        }
        // body forward/right → north/east
        let (s, c) = heading_deg.to_radians().sin_cos();
        let north = g.forward_m * c - g.right_m * s;
        let east = g.forward_m * s + g.right_m * c;
        let alt = if offset <= self.cfg.descend_within * height
            || offset <= self.cfg.centre_tolerance_m
        {
            (at.alt_rel_m - self.cfg.descent_step_m).max(self.drop_alt_m)
        } else {
            at.alt_rel_m
        };
        let to = LatLon::new(at.lat_deg, at.lon_deg).offset(NorthEast::new(north, east));
        Decision::Steer(GeoPoint {
            lat_deg: to.lat_deg,
            lon_deg: to.lon_deg,
            alt_rel_m: alt,
        })
    }
}

/// The `LANDING_TARGET` for a detection (angles in the camera frame the autopilot expects).
pub fn landing_target(
    m: &MarkerDetection,
    intr: &Intrinsics,
    captured_at: SystemTime,
) -> LandingTarget {
    let g = m.target;
    LandingTarget {
        target_num: u8::try_from(m.id).unwrap_or(u8::MAX),
        angle_x_rad: g.angle_x as f32,
        angle_y_rad: g.angle_y as f32,
        distance_m: g.distance_m.is_finite().then_some(g.distance_m as f32),
        size_x_rad: (g.size_px / intr.fx) as f32,
        size_y_rad: (g.size_px / intr.fy) as f32,
        captured_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::marker::TargetGeometry;

    fn det(id: u32, forward_m: f64, right_m: f64, down_m: f64) -> MarkerDetection {
        MarkerDetection {
            id,
            corners: [(0.0, 0.0); 4],
            target: TargetGeometry {
                angle_x: (right_m / down_m).atan(),
                angle_y: (-forward_m / down_m).atan(),
                distance_m: down_m,
                forward_m,
                right_m,
                down_m,
                size_px: 40.0,
            },
        }
    }

    fn at(alt: f64) -> GeoPoint {
        GeoPoint {
            lat_deg: 47.0,
            lon_deg: 8.0,
            alt_rel_m: alt,
        }
    }

    fn pose(at: GeoPoint, heading_deg: f64) -> Pose {
        Pose {
            at,
            heading_deg,
            speed_mps: 0.0,
        }
    }

    fn ne(from: &GeoPoint, to: &GeoPoint) -> (f64, f64) {
        let d = protocol::geo::LatLon::new(from.lat_deg, from.lon_deg)
            .north_east_to(protocol::geo::LatLon::new(to.lat_deg, to.lon_deg));
        (d.north_m, d.east_m)
    }

    #[test]
    fn a_far_marker_is_steered_to_without_descending() {
        let mut a = Approach::new(PrecisionConfig::default(), 7, 3.0, 0.0);
        // facing east, marker 3 m ahead: 3 m east
        let d = a.frame(1.0, &[det(7, 3.0, 0.0, 10.0)], pose(at(10.0), 90.0));
        let Decision::Steer(p) = d else {
            panic!("{d:?}")
        };
        let (n, e) = ne(&at(10.0), &p);
        assert!(n.abs() < 0.01 && (e - 3.0).abs() < 0.01, "{n} {e}");
        assert_eq!(p.alt_rel_m, 10.0);
    }

    #[test]
    fn a_near_marker_brings_it_down_to_the_drop_height_then_centred() {
        let mut a = Approach::new(PrecisionConfig::default(), 7, 3.0, 0.0);
        let d = a.frame(1.0, &[det(7, 0.2, -0.1, 5.0)], pose(at(5.0), 0.0));
        let Decision::Steer(p) = d else {
            panic!("{d:?}")
        };
        assert_eq!(p.alt_rel_m, 4.0);
        let d = a.frame(2.0, &[det(7, 0.0, 0.1, 4.0)], pose(at(4.0), 0.0));
        assert!(matches!(d, Decision::Steer(p) if p.alt_rel_m == 3.0));
        // three centred frames at the drop height
        assert!(matches!(
            a.frame(3.0, &[det(7, 0.1, 0.0, 3.0)], pose(at(3.0), 0.0)),
            Decision::Steer(_)
        ));
        assert!(matches!(
            a.frame(3.1, &[det(7, 0.1, 0.0, 3.0)], pose(at(3.0), 0.0)),
            Decision::Steer(_)
        ));
        assert_eq!(
            a.frame(3.2, &[det(7, 0.1, 0.0, 3.0)], pose(at(3.0), 0.0)),
            Decision::Centred
        );
    }

    #[test]
    fn a_moving_drone_is_never_centred() {
        let mut a = Approach::new(PrecisionConfig::default(), 7, 3.0, 0.0);
        let moving = Pose {
            speed_mps: 0.8,
            ..pose(at(3.0), 0.0)
        };
        for i in 0..10 {
            let d = a.frame(f64::from(i), &[det(7, 0.0, 0.0, 3.0)], moving);
            assert!(matches!(d, Decision::Steer(_)), "{d:?}");
        }
        assert!(matches!(
            a.frame(11.0, &[det(7, 0.0, 0.0, 3.0)], pose(at(3.0), 0.0)),
            Decision::Steer(_)
        ));
    }

    #[test]
    fn wrong_marker_then_timeout_fails_naming_what_was_seen() {
        let mut a = Approach::new(PrecisionConfig::default(), 7, 3.0, 0.0);
        assert_eq!(
            a.frame(1.0, &[det(9, 0.0, 0.0, 5.0)], pose(at(5.0), 0.0)),
            Decision::Wait
        );
        let d = a.tick(15.0);
        assert_eq!(
            d,
            Decision::Failed(ApproachFailure::WrongMarker {
                want: 7,
                seen: vec![9],
                after_s: 15.0
            })
        );
        assert_eq!(a.tick(16.0), Decision::Wait, "fails once");
    }

    #[test]
    fn hidden_marker_and_lost_marker_fail() {
        let mut a = Approach::new(PrecisionConfig::default(), 7, 3.0, 0.0);
        assert_eq!(a.tick(14.9), Decision::Wait);
        assert!(matches!(
            a.tick(15.0),
            Decision::Failed(ApproachFailure::NotSeen { want: 7, .. })
        ));
        let mut a = Approach::new(PrecisionConfig::default(), 7, 3.0, 0.0);
        a.frame(1.0, &[det(7, 1.0, 0.0, 5.0)], pose(at(5.0), 0.0));
        assert_eq!(a.tick(3.9), Decision::Wait);
        assert!(matches!(
            a.tick(4.0),
            Decision::Failed(ApproachFailure::Lost { want: 7, .. })
        ));
    }

    #[test]
    fn landing_target_carries_id_angles_distance() {
        let intr = Intrinsics::from_hfov(90.0, 640, 480);
        let lt = landing_target(&det(7, 0.0, 1.0, 1.0), &intr, SystemTime::UNIX_EPOCH);
        assert_eq!(lt.target_num, 7);
        assert!((lt.angle_x_rad - std::f32::consts::FRAC_PI_4).abs() < 1e-6);
        assert_eq!(lt.distance_m, Some(1.0));
        assert!((lt.size_x_rad - 0.125).abs() < 1e-6);
    }

    #[test]
    fn config_defaults_and_validation() {
        let origin = std::path::Path::new("precision.toml");
        let cfg: PrecisionConfig =
            daemon::config::parse("marker_size_m = 0.3\ncentre_tolerance_m = 0.2\n", origin)
                .unwrap();
        assert_eq!(cfg.centre_tolerance_m, 0.2);
        assert_eq!(cfg.dictionary, hal::marker::Dictionary::Dict4x4_50);
        assert!(!cfg.gps_fallback);
        assert!(
            daemon::config::parse::<PrecisionConfig>("centre_tolerance_m = 0.2\n", origin).is_err(),
            "the marker size has no default"
        );
        assert_eq!(cfg.settle_frames, 3);
        assert!(daemon::config::parse::<PrecisionConfig>("nope = 1\n", origin).is_err());
        assert!(daemon::config::parse::<PrecisionConfig>(
            "marker_size_m = 0.3\nsettle_frames = 0\n",
            origin
        )
        .is_err());
    }
}
