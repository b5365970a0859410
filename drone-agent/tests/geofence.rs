//! Issue 12, the fence half, as whole-agent tests against the sim vehicle: a destination outside
//! the task's operational volume refused in pre-flight with the rule broken (before this issue the
//! agent flew it); the `[geofence]` stored and verified before take-off, and a breach (the
//! vehicle pushed out over the sim's control path) reported with where and why while the agent
//! follows the autopilot's RTL home.

use crate::common;

use common::*;
use protocol::ws::{DroneState, EventType};
use sim::vehicle::{Fault, Flavour};

const ARM_DISARM: u32 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_outside_the_tasks_volume_is_refused_in_preflight() {
    let mut w = World::start(Flavour::ArduPilot, |c| c).await;
    let home = north_of_home(Flavour::ArduPilot, 0.0);
    let end = north_of_home(Flavour::ArduPilot, 300.0);
    let mut t = task(north_of_home(Flavour::ArduPilot, 500.0));
    // a 300 m corridor north: the destination, 500 m north, is 200 m beyond its end
    t.volume = Some(
        serde_json::from_value(serde_json::json!({
            "inclusion": {"type": "corridor", "width_m": 60.0,
                          "route": [{"lat": home.0, "lon": home.1}, {"lat": end.0, "lon": end.1}]},
            "max_alt_m": 60.0
        }))
        .unwrap(),
    );
    assert!(w.backend.send(protocol::Envelope::new(t)));
    let refused = w.backend.event(EventType::PreflightFailed).await;
    let why = refused.reason.unwrap_or_default();
    assert!(
        why.contains("outside the operational volume")
            && why.contains("outside the approved volume"),
        "{why}"
    );
    w.backend.telemetry_state(|s| s == DroneState::Idle).await;
    let v = w.vehicle.view().borrow().clone();
    assert!(!v.armed);
    assert!(
        !v.commands.iter().any(|(c, _)| *c == ARM_DISARM),
        "never armed"
    );
    w.stop().await;
}

async fn breach_followed_home(flavour: Flavour) {
    let mut w = World::start(flavour, |c| {
        c + "\n[geofence]\nradius_m = 300.0\nmax_alt_m = 80.0\naction = \"rtl\"\nrequired = true\n"
    })
    .await;
    w.fly_to_locker(100.0).await;
    let v = w
        .vehicle
        .wait_for(WAIT, |v| v.fence_items == 1)
        .await
        .expect("the circle stored in the autopilot before take-off");
    assert!(!v.fence_breached);
    w.vehicle.inject(Fault::Push(400.0, 0.0, 0.0));
    let took = w.backend.event(EventType::AutopilotTookOver).await;
    let why = took.reason.unwrap_or_default();
    assert!(why.to_ascii_lowercase().contains("fence"), "{why}");
    assert!(why.contains("m above home"), "where: {why}");
    assert_eq!(took.to_state, Some(DroneState::AutopilotControl));
    // the autopilot's RTL, followed to the ground at home
    let landed = w.backend.event(EventType::ArrivedBase).await;
    assert_eq!(landed.to_state, Some(DroneState::Completed));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ardupilot_breach_is_reported_and_its_rtl_followed() {
    breach_followed_home(Flavour::ArduPilot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn px4_breach_is_reported_and_its_rtl_followed() {
    breach_followed_home(Flavour::Px4).await;
}
