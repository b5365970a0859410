//! The delivery's airspace in the runtime (issue 12): chosen and checked in pre-flight (the
//! destination inside, then the fence stored in the autopilot and verified), and every go-to the
//! machine asks for checked against it before the autopilot hears of it.

use super::{Agent, Cloud, Internal};
use crate::geofence::Volume;
use crate::machine::Event;
use hal::flight::{FcError, FenceAction, FlightController};
use hal::payload::PayloadRelease;
use tracing::{info, warn};

/// What pre-flight does about the airspace, decided on the agent's task and run in the check's.
pub(super) struct FencePlan {
    volume: Option<Volume>,
    /// Where the leg to the destination starts (home, else here) and the destination.
    leg: Option<((f64, f64), (f64, f64))>,
    cruise_alt_m: f64,
    action: FenceAction,
    required: bool,
    /// `required` but there is nothing to build a fence from (no home for the circle).
    missing: Option<&'static str>,
}

impl FencePlan {
    /// The rule the destination breaks, as the pre-flight's refusal.
    pub(super) fn destination_refusal(&self) -> Option<String> {
        let (v, (from, to)) = (self.volume.as_ref()?, self.leg?);
        v.check_leg(from, to, self.cruise_alt_m).err().map(|why| {
            format!(
                "destination {:.6},{:.6} is outside the operational volume: {why}",
                to.0, to.1
            )
        })
    }

    /// Stores the fence in the autopilot; a refusal if one is required and it failed.
    pub(super) async fn store<F: FlightController>(self, fc: std::sync::Arc<F>) -> Option<String> {
        if let Some(what) = self.missing {
            return Some(format!("geofence required, but {what}"));
        }
        let volume = self.volume?;
        let fence = volume.fence(self.action);
        match fc.set_fence(&fence).await {
            Ok(()) => {
                info!(
                    zones = fence.zones.len(),
                    max_alt_m = fence.max_alt_m,
                    "geofence verified in the autopilot"
                );
                None
            }
            Err(e) if self.required => Some(format!("geofence not verified in the autopilot: {e}")),
            Err(e) => {
                warn!(error = %e, "geofence not stored; flying without it ([geofence] required = false)");
                None
            }
        }
    }
}

impl<F: FlightController, P: PayloadRelease, C: Cloud> Agent<F, P, C> {
    /// Chooses the delivery's volume (the task's, else `[geofence]` around home) and remembers
    /// it for the go-to checks.
    pub(super) fn fence_plan(&mut self) -> FencePlan {
        let g = self.cfg.geofence.as_ref();
        let home = self
            .snap
            .home
            .as_ref()
            .or(self.snap.position.as_ref())
            .map(|p| (p.lat_deg, p.lon_deg));
        let delivery = self.machine.delivery();
        let task_volume = match (&self.task_volume, delivery) {
            (Some((id, v)), Some(d)) if *id == d.delivery_id => v.as_ref(),
            _ => None,
        };
        let volume = Volume::choose(task_volume, g, home);
        self.volume = volume.clone();
        let required = g.is_some_and(|g| g.required);
        FencePlan {
            missing: (required && volume.is_none())
                .then_some("there is no home position to centre it on"),
            leg: delivery.map(|d| (home.unwrap_or((d.lat, d.lon)), (d.lat, d.lon))),
            volume,
            cruise_alt_m: self.cfg.flight.cruise_alt_m,
            action: g.map_or(FenceAction::ReturnToLaunch, |g| g.action()),
            required,
        }
    }

    /// Why a go-to must not be sent: the leg from here leaves the delivery's volume.
    pub(super) fn goto_refusal(&self, lat: f64, lon: f64, alt_m: f64) -> Option<FcError> {
        let v = self.volume.as_ref()?;
        let from = self
            .snap
            .position
            .as_ref()
            .map_or((lat, lon), |p| (p.lat_deg, p.lon_deg));
        let why = v.check_leg(from, (lat, lon), alt_m).err()?;
        warn!(lat, lon, alt_m, %why, "go-to outside the operational volume not sent");
        Some(FcError::InvalidArgument {
            command: "goto",
            reason: format!(
                "{lat:.6},{lon:.6} at {alt_m:.1} m is outside the operational volume: {why}"
            ),
        })
    }
}

/// The pre-flight's order: the destination (no autopilot needed to refuse it), the autopilot's
/// checks, then the fence (stored last: it is what the take-off waits on).
pub(super) async fn preflight<F: FlightController>(
    fc: std::sync::Arc<F>,
    min_battery: f64,
    plan: FencePlan,
    tx: tokio::sync::mpsc::UnboundedSender<Internal>,
) {
    let event = if let Some(why) = plan.destination_refusal() {
        Event::PreflightFailed(why)
    } else {
        match fc.preflight_check(min_battery).await {
            Ok(r) if r.passed() => match plan.store(fc).await {
                None => Event::PreflightPassed,
                Some(why) => Event::PreflightFailed(why),
            },
            Ok(r) => Event::PreflightFailed(
                r.failures()
                    .map(|c| format!("{}: {}", c.name, c.detail))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Err(e) => Event::PreflightFailed(e.to_string()),
        }
    };
    let _ = tx.send(Internal::Event(event));
}
