//! Issue 12: the fence through the hal against the sim, both flavours, over real sockets: stored
//! with the mission protocol's fence type, read back equal, parameters set and enabled; then the
//! vehicle pushed out (the control socket's `push`) breaches it and the autopilot flies RTL by
//! itself, saying why its own way (ArduPilot: FENCE_STATUS and "Polygon fence breached"; PX4: an
//! event).

use crate::common;

use common::{offset, rig};
use hal::flight::{
    Fence, FenceAction, FenceBreachKind, FenceZone, FlightController, FlightModeKind,
};
use sim::vehicle::{Fault, Flavour};

async fn fence_stored_then_breached(flavour: Flavour) {
    let r = rig(flavour).await;
    r.ready().await;
    let home = r.wait("home", |s| s.home.is_some()).await.home.unwrap();
    let square: Vec<(f64, f64)> = [(-20.0, 60.0), (-20.0, 80.0), (20.0, 80.0), (20.0, 60.0)]
        .iter()
        .map(|(n, e)| offset(home.lat_deg, home.lon_deg, *n, *e))
        .collect();
    let fence = Fence {
        zones: vec![
            FenceZone::Circle {
                inclusion: true,
                center: (home.lat_deg, home.lon_deg),
                radius_m: 100.0,
            },
            FenceZone::Polygon {
                inclusion: false,
                vertices: square,
            },
        ],
        max_alt_m: 60.0,
        action: FenceAction::ReturnToLaunch,
    };
    r.fc.set_fence(&fence)
        .await
        .expect("fence stored and verified");
    // the view is refreshed every real tick: wait for the one after the upload
    let v = r
        .vehicle
        .wait_for(common::WAIT, |v| v.fence_items == 5)
        .await
        .expect("one circle item and four vertices stored");
    assert_eq!(v.mission_len, 0, "the fence is not the mission");

    r.airborne(10.0).await;
    assert!(!r.vehicle.view().borrow().fence_breached);
    r.vehicle.inject(Fault::Push(150.0, 0.0, 0.0));
    let s = r
        .wait("the autopilot's RTL for the breach", |s| {
            s.mode.kind == FlightModeKind::ReturnToLaunch
                && s.autopilot_mode_change
                    .as_ref()
                    .and_then(|c| c.reason.as_deref())
                    .is_some_and(|r| r.to_ascii_lowercase().contains("fence"))
        })
        .await;
    let reason = s.autopilot_mode_change.unwrap().reason.unwrap();
    match flavour {
        Flavour::ArduPilot => {
            assert!(reason.contains("Polygon fence breached"), "{reason}");
            let f = r
                .wait("FENCE_STATUS breached", |s| {
                    s.fence.as_ref().is_some_and(|f| f.breached)
                })
                .await
                .fence
                .unwrap();
            assert_eq!(f.kind, FenceBreachKind::Boundary);
            assert_eq!(f.breach_count, 1);
        }
        Flavour::Px4 => {
            assert!(reason.contains("Geofence"), "{reason}");
            assert_eq!(
                r.fc.snapshot().borrow().fence,
                None,
                "PX4 sends no FENCE_STATUS"
            );
        }
    }
    // the autopilot brings it home and lands by itself
    r.wait("landed at home", |s| {
        !s.armed
            && s.position
                .is_some_and(|p| p.distance_m(home.lat_deg, home.lon_deg) < 3.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ardupilot_fence_stored_read_back_and_enforced() {
    fence_stored_then_breached(Flavour::ArduPilot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_fence_stored_read_back_and_enforced() {
    fence_stored_then_breached(Flavour::Px4).await;
}
