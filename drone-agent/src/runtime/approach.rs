//! The precision approach executor: executes, never decides. The approach itself (marker
//! tracking, timeouts, GPS fallback when the camera fails, retries) is machine data
//! (`machine::ApproachRun`). While the machine has one, the runtime asks the camera worker for
//! marker sightings, sends each sighting of the task's marker to the autopilot as
//! `LANDING_TARGET`, and feeds every frame (`camera_frame`) and a clock tick (`approach_tick`)
//! to the machine; the goto corrections come back as the machine's `Fly` effects.

use super::{Agent, Cloud};
use crate::camera::{CameraReport, CameraWork, Sighting};
use crate::machine::{Event, Frame};
use crate::precision;
use hal::flight::{FlightController, GeoPoint};
use hal::marker::MarkerConfig;
use hal::payload::PayloadRelease;
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// The runtime's side of the camera worker.
pub struct CameraHandle {
    pub(super) work: watch::Sender<CameraWork>,
    pub(super) reports: Option<mpsc::Receiver<CameraReport>>,
    /// The marker and lens (for `LANDING_TARGET`'s angular size).
    pub(super) marker: MarkerConfig,
}

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    /// The machine's approach is looking for the marker (not finishing by GPS).
    pub(super) fn detecting(&self) -> bool {
        self.machine.approach().is_some_and(|a| !a.gps_only)
    }

    /// Marker detection on while the machine's approach wants it.
    pub(super) fn sync_approach(&mut self) {
        let detect = self.detecting();
        if let Some(c) = &self.camera {
            c.work
                .send_if_modified(|w| std::mem::replace(&mut w.detect, detect) != detect);
        }
    }

    pub(super) async fn on_camera(&mut self, report: CameraReport) {
        match report {
            CameraReport::Sighting(s) => self.on_sighting(s).await,
            CameraReport::Fault(why) => {
                self.view
                    .send_modify(|v| v.camera_fault = Some(why.clone()));
                self.feed(Event::CameraFault(why)).await;
            }
            CameraReport::Restored => {
                self.view.send_modify(|v| v.camera_fault = None);
                self.feed(Event::CameraRestored).await;
            }
        }
    }

    /// One frame's markers: `LANDING_TARGET` for the task's, then the frame to the machine.
    async fn on_sighting(&mut self, s: Sighting) {
        if !self.detecting() {
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
        self.feed(Event::CameraFrame(Frame {
            now_s,
            markers,
            pose,
        }))
        .await;
    }

    pub(super) async fn tick_approach(&mut self) {
        let now_s = self.epoch.elapsed().as_secs_f64();
        self.feed(Event::ApproachTick { now_s }).await;
    }
}
