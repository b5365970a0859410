//! The whole agent flying precision approaches: the sim vehicle with GPS error, the sim's
//! downward camera rendering into a frame directory (the agent's `[camera]` reads it, the same
//! code path as any directory source), OpenCV's ArUco detector in the agent, and the scripted
//! backend. The vehicle's *true* position is what is checked.
//!
//! `cargo test -p drone-agent --features opencv --test precision_agent`
#![cfg(feature = "opencv")]

mod common;

use common::precision::*;
use common::*;
use protocol::ws::{CommandKind, EventType, Message};
use sim::vehicle::{Flavour, VehicleConfig};

/// `arrived` only once hovering centred on the marker: checked against the true position.
async fn centres(gps_error: (f64, f64), locker_ne: (f64, f64)) {
    let mut f = fly(Setup {
        gps_error,
        locker_ne,
        shown: Some(23),
        camera_present: true,
        precision: "",
    })
    .await;
    f.backend.event(EventType::Arrived).await;
    let v = f.vehicle.view().borrow().clone();
    let off = metres_between(f.marker, (v.lat_deg, v.lon_deg));
    eprintln!(
        "gps error {gps_error:?}, locker {locker_ne:?}: arrived {off:.3} m off at {:.2} m, heading {:.0}°, {} LANDING_TARGETs",
        v.alt_rel_m, v.heading_deg, v.landing_targets
    );
    assert!(off < 0.3, "arrived {off:.2} m off the marker");
    assert!((v.alt_rel_m - 4.0).abs() < 0.6, "height {}", v.alt_rel_m);
    assert!(v.landing_targets >= 3, "LANDING_TARGETs sent while seen");
    assert!(
        !f.backend
            .event_types()
            .contains(&EventType::RetryNavigation),
        "{:?}",
        f.backend.event_types()
    );
    // and the delivery carries on from there
    f.backend.command(CommandKind::DropCargo);
    f.backend.event(EventType::DropConfirmed).await;
    f.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centres_from_three_metres_south_heading_north_east() {
    centres((3.0, 0.0), (15.0, 12.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centres_from_three_metres_north_east_heading_south_west() {
    centres((-2.1, -2.1), (-14.0, -10.0)).await;
}

/// Another locker's marker: not taken for ours; retried, then home with the parcel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_marker_retries_then_flies_the_parcel_home() {
    let mut f = fly(Setup {
        gps_error: (1.0, 0.0),
        locker_ne: (15.0, 12.0),
        shown: Some(9),
        camera_present: true,
        precision: "",
    })
    .await;
    let retry = f.backend.event(EventType::RetryNavigation).await;
    let why = retry.reason.unwrap_or_default();
    assert!(why.contains("saw ids [9]"), "{why}");
    let aborted = f.backend.event(EventType::Aborted).await;
    let why = aborted.reason.unwrap_or_default();
    assert!(why.contains("gave up after 2"), "{why}");
    assert!(!f.backend.event_types().contains(&EventType::Arrived));
    let home = VehicleConfig::standard(Flavour::ArduPilot).home;
    let v = f
        .vehicle
        .wait_for(WAIT, |v| v.on_ground && !v.armed)
        .await
        .expect("lands");
    assert!(!v.gripper_released, "the parcel stays on board");
    assert!(metres_between((home.0, home.1), (v.lat_deg, v.lon_deg)) < 5.0);
    f.agent.stop().await;
}

/// Camera unplugged, GPS fallback allowed: reported, then the approach finishes by GPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_unplugged_falls_back_to_gps_when_allowed() {
    let mut f = fly(Setup {
        gps_error: (0.0, 0.0),
        locker_ne: (15.0, 12.0),
        shown: Some(23),
        camera_present: false,
        precision: "gps_fallback = true",
    })
    .await;
    let fault = f.backend.event(EventType::CameraFault).await;
    let why = fault.reason.unwrap_or_default();
    assert!(why.contains("finishing the approach by GPS"), "{why}");
    f.backend.event(EventType::Arrived).await;
    assert_eq!(f.vehicle.view().borrow().landing_targets, 0);
    f.agent.stop().await;
}

/// Camera unplugged, no fallback: the approach fails (retry), it is never `arrived` blind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_unplugged_without_fallback_fails_the_approach() {
    let mut f = fly(Setup {
        gps_error: (0.0, 0.0),
        locker_ne: (15.0, 12.0),
        shown: Some(23),
        camera_present: false,
        precision: "",
    })
    .await;
    f.backend.event(EventType::CameraFault).await;
    let retry = f.backend.event(EventType::RetryNavigation).await;
    let why = retry.reason.unwrap_or_default();
    assert!(why.contains("camera failed"), "{why}");
    f.backend.event(EventType::Aborted).await;
    assert!(!f.backend.event_types().contains(&EventType::Arrived));
    // the technician-facing side: no video frames were asked for
    assert!(!f
        .backend
        .others
        .iter()
        .any(|e| matches!(e.message, Message::VideoFrame(_))));
    f.agent.stop().await;
}
