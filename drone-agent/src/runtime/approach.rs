//! The precision approach executor. While the machine is in NAVIGATING's approach phase the
//! runtime holds a [`precision::Approach`] (pure: the decisions are its), asks the camera worker
//! for marker sightings, sends each sighting of the task's marker to the autopilot as
//! `LANDING_TARGET`, steers with the approach's corrections, and hands its verdict to the
//! machine as `at_drop_height` (centred) or `approach_failed` (the machine's
//! `retry_navigation`). Invariant: an approach exists only while the machine is in that phase —
//! [`Agent::feed`] ends it before running the effects of the event that left it, so a `pause`
//! is never followed by a stale steering command.

use super::{Agent, Cloud, Internal};
use crate::camera::{CameraReport, CameraWork, Sighting};
use crate::machine::{Event, FlightOp, NavPhase};
use crate::precision::{self, Approach, Decision};
use crate::report;
use hal::flight::{FlightController, GeoPoint};
use hal::marker::MarkerConfig;
use hal::payload::PayloadRelease;
use protocol::ws::{DroneState, EventType};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// The runtime's side of the camera worker.
pub struct CameraHandle {
    pub(super) work: watch::Sender<CameraWork>,
    pub(super) reports: Option<mpsc::Receiver<CameraReport>>,
    /// The marker and lens (for `LANDING_TARGET`'s angular size).
    pub(super) marker: MarkerConfig,
    /// Why the camera is failed, while it is.
    pub(super) fault: Option<String>,
}

/// The precision approach in progress.
pub(super) struct ApproachRun {
    approach: Approach,
    /// The camera failed and config allows finishing by GPS: the monitor decides again.
    pub(super) gps_only: bool,
}

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    /// Starts or ends the precision approach to match the machine (see the module docs).
    pub(super) fn sync_approach(&mut self) {
        let approaching = self.machine.state() == DroneState::Navigating
            && self.machine.nav_phase() == Some(NavPhase::Approaching);
        let wanted = approaching && self.camera.is_some();
        match (&self.cfg.precision, wanted, self.approach.is_some()) {
            (Some(cfg), true, false) => {
                let Some(d) = self.machine.delivery() else {
                    return;
                };
                info!(
                    aruco_id = d.aruco_id,
                    "precision approach: looking for the marker"
                );
                let mut run = ApproachRun {
                    approach: Approach::new(
                        cfg.clone(),
                        d.aruco_id,
                        self.cfg.flight.drop_alt_m,
                        self.epoch.elapsed().as_secs_f64(),
                    ),
                    gps_only: false,
                };
                if let Some(why) = self.camera.as_ref().and_then(|c| c.fault.clone()) {
                    if cfg.gps_fallback {
                        warn!(reason = %why, "camera failed: approaching by GPS only");
                        run.gps_only = true;
                    } else {
                        let _ =
                            self.internal
                                .send(Internal::Event(Event::ApproachFailed(format!(
                                    "camera failed: {why}"
                                ))));
                    }
                }
                self.approach = Some(run);
            }
            (_, false, true) => {
                debug!("precision approach ended");
                self.approach = None;
            }
            _ => {}
        }
        let detect = self.approach.as_ref().is_some_and(|a| !a.gps_only);
        if let Some(c) = &self.camera {
            c.work
                .send_if_modified(|w| std::mem::replace(&mut w.detect, detect) != detect);
        }
    }

    pub(super) async fn on_camera(&mut self, report: CameraReport) {
        match report {
            CameraReport::Sighting(s) => self.on_sighting(s).await,
            CameraReport::Fault(why) => {
                if let Some(c) = self.camera.as_mut() {
                    c.fault = Some(why.clone());
                }
                self.view
                    .send_modify(|v| v.camera_fault = Some(why.clone()));
                let mut reason = format!("camera failed: {why}");
                let fallback = self.cfg.precision.as_ref().is_some_and(|p| p.gps_fallback);
                match self.approach.as_mut() {
                    Some(run) if !run.gps_only && fallback => {
                        run.gps_only = true;
                        reason.push_str("; finishing the approach by GPS");
                        warn!(reason = %why, "camera failed during the approach: GPS only");
                    }
                    Some(run) if !run.gps_only => {
                        let _ = self
                            .internal
                            .send(Internal::Event(Event::ApproachFailed(reason.clone())));
                    }
                    _ => {}
                }
                self.publish(EventType::CameraFault, Some(reason)).await;
                self.sync_approach();
                // back by GPS: the steering may have left the drone off the GPS point
                if self.approach.as_ref().is_some_and(|a| a.gps_only) {
                    if let Some(d) = self.machine.delivery() {
                        let (lat, lon, alt) = (d.lat, d.lon, self.cfg.flight.drop_alt_m);
                        let fc = self.fc.clone();
                        self.spawn_flight(FlightOp::Goto, async move {
                            fc.goto(GeoPoint::new(lat, lon, alt)).await
                        });
                    }
                }
            }
            CameraReport::Restored => {
                if let Some(c) = self.camera.as_mut() {
                    c.fault = None;
                }
                self.view.send_modify(|v| v.camera_fault = None);
                self.publish(EventType::CameraRestored, None).await;
            }
        }
    }

    /// One frame's markers: `LANDING_TARGET` for the task's, then the approach decides.
    async fn on_sighting(&mut self, s: Sighting) {
        let Some(run) = self.approach.as_mut() else {
            return;
        };
        if run.gps_only {
            return;
        }
        let markers = match s.markers {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "marker detection failed on a frame");
                Vec::new()
            }
        };
        let at = s.at.or_else(|| {
            self.snap
                .position
                .map(|p| GeoPoint::new(p.lat_deg, p.lon_deg, p.alt_rel_m))
        });
        let Some(at) = at else {
            return;
        };
        let want = self.machine.delivery().map(|d| d.aruco_id);
        if let (Some(m), Some(c)) = (
            markers.iter().find(|m| Some(m.id) == want),
            self.camera.as_ref(),
        ) {
            let intrinsics = c.marker.intrinsics(s.frame_size.0, s.frame_size.1);
            let lt = precision::landing_target(m, &intrinsics, s.captured_wall);
            if let Err(e) = self.fc.send_landing_target(lt).await {
                warn!(error = %e, "LANDING_TARGET not sent");
            }
        }
        let now_s = tokio::time::Instant::from_std(s.captured)
            .saturating_duration_since(self.epoch)
            .as_secs_f64();
        let pose = precision::Pose {
            at,
            heading_deg: s.heading_deg.or(self.snap.heading_deg).unwrap_or(0.0),
            // unknown speed: never "still", so never centred on a guess
            speed_mps: s.speed_mps.unwrap_or(f64::INFINITY),
        };
        let decision = run.approach.frame(now_s, &markers, pose);
        self.act_on(decision).await;
    }

    pub(super) async fn tick_approach(&mut self) {
        let now_s = self.epoch.elapsed().as_secs_f64();
        let Some(run) = self.approach.as_mut() else {
            return;
        };
        if run.gps_only {
            return;
        }
        let decision = run.approach.tick(now_s);
        self.act_on(decision).await;
    }

    async fn act_on(&mut self, decision: Decision) {
        match decision {
            Decision::Wait => {}
            Decision::Steer(to) => {
                let fc = self.fc.clone();
                self.spawn_flight(FlightOp::Goto, async move { fc.goto(to).await });
            }
            Decision::Centred => {
                info!("precision approach: centred over the marker at drop height");
                self.feed(Event::AtDropHeight).await;
            }
            Decision::Failed(why) => {
                warn!(reason = %why, "precision approach failed");
                self.feed(Event::ApproachFailed(why.to_string())).await;
            }
        }
    }

    /// An event outside any transition (camera faults): reported like the machine's.
    async fn publish(&mut self, event: EventType, reason: Option<String>) {
        let facts = report::EventFacts {
            event,
            reason,
            delivery_id: self.machine.delivery().map(|d| d.delivery_id),
            transition: None,
        };
        self.store_event(report::event(facts, &self.snap)).await;
    }
}
