//! The precision approach's whole loop against the sim: the sim vehicle (ArduPilot flavour over
//! TCP, 3 m of GPS error) flown by hal's MavlinkFc; each frame rendered by the sim's downward
//! camera from the vehicle's *true* pose, detected by OpenCV's ArUco detector, decided by
//! `precision::Approach`, and sent as LANDING_TARGET and a corrected goto. It must end hovering
//! within 0.3 m of the marker at the drop height.
//!
//! `cargo test -p drone-agent --features opencv --test precision_sim`
#![cfg(feature = "opencv")]

use drone_agent::precision::{landing_target, Approach, Decision, PrecisionConfig};
use hal::flight::mavlink::MavlinkFc;
use hal::flight::{FcLinkConfig, FlightController, GeoPoint};
use hal::marker::{ArucoDetector, Dictionary, MarkerConfig, MarkerDetector};
use protocol::geo::{LatLon, NorthEast};
use sim::camera::{render, CameraModel, Pose, Scene};
use sim::vehicle::{self, Flavour, Transport, VehicleConfig};
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(30);

fn offset(lat: f64, lon: f64, n: f64, e: f64) -> (f64, f64) {
    let p = LatLon::new(lat, lon).offset(NorthEast::new(n, e));
    (p.lat_deg, p.lon_deg)
}

fn ne(lat0: f64, lon0: f64, lat: f64, lon: f64) -> (f64, f64) {
    let d = LatLon::new(lat0, lon0).north_east_to(LatLon::new(lat, lon));
    (d.north_m, d.east_m)
}

/// How an approach ended.
enum End {
    Centred,
    Failed(drone_agent::precision::ApproachFailure),
}

async fn centres_from(gps_error_ne: (f64, f64), id: u32) {
    match fly(gps_error_ne, Some(id), id).await {
        End::Centred => {}
        End::Failed(f) => panic!("approach failed: {f}"),
    }
}

/// Flies over a locker showing `shown` (None: no marker) and approaches looking for `want`.
async fn fly(gps_error_ne: (f64, f64), shown: Option<u32>, id: u32) -> End {
    let mut vc = VehicleConfig::standard(Flavour::ArduPilot);
    // slow enough that the debug-built renderer gives several frames per sim second
    vc.speedup = 2.0;
    vc.seed = 9;
    vc.transport = Transport::Tcp {
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    vc.params.gps_offset_ne_m = gps_error_ne;
    let home = vc.home;
    let veh = vehicle::spawn(vc).await.unwrap();
    let mut link = FcLinkConfig::new(format!("tcpout:{}", veh.local_addr()).parse().unwrap());
    link.command_timeout_ms = 400;
    link.mode_change_timeout_ms = 3000;
    let fc = MavlinkFc::start(link);

    // the locker 20 m north-east of home, its marker 0.4 m wide
    let (m_lat, m_lon) = offset(home.0, home.1, 15.0, 12.0);
    let scene = Scene {
        marker_lat: m_lat,
        marker_lon: m_lon,
        marker_id: shown,
        marker_size_m: 0.4,
    };
    let cam = CameraModel {
        blur_sigma: 0.6,
        noise: 6,
        ..CameraModel::default()
    };
    let mcfg = MarkerConfig {
        dictionary: Dictionary::Dict4x4_50,
        marker_size_m: 0.4,
        hfov_deg: Some(cam.hfov_deg),
        fx: None,
        fy: None,
        cx: None,
        cy: None,
    };
    let intr = mcfg.intrinsics(cam.width, cam.height);
    let mut det = ArucoDetector::new(&mcfg).unwrap();

    // ready, up, and over the destination by GPS
    fc.wait_for(WAIT, |s| s.home.is_some()).await.expect("home");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = fc.preflight_check(30.0).await.unwrap();
        if r.passed() {
            break;
        }
        let mut rx = fc.snapshot();
        assert!(
            tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_ok(),
            "preflight: {r:?}"
        );
    }
    fc.arm().await.unwrap();
    fc.takeoff(8.0).await.unwrap();
    fc.wait_for(WAIT, |s| s.position.is_some_and(|p| p.alt_rel_m > 7.5))
        .await
        .expect("take-off");
    fc.goto(GeoPoint::new(m_lat, m_lon, 8.0)).await.unwrap();
    fc.wait_for(WAIT, |s| {
        s.position.is_some_and(|p| p.distance_m(m_lat, m_lon) < 0.5)
    })
    .await
    .expect("GPS arrival");
    let v = veh.view().borrow().clone();
    let (n, e) = ne(m_lat, m_lon, v.lat_deg, v.lon_deg);
    let start_error = n.hypot(e);
    assert!(
        start_error > 2.5,
        "GPS error should leave us off: {start_error}"
    );

    // the loop: one frame per vehicle view change, decisions until centred
    let mut approach = Approach::new(PrecisionConfig::default(), id, 3.0, v.t_s);
    let mut views = veh.view();
    let mut landing_targets = 0;
    let end = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(tokio::time::Instant::now() < end, "approach took too long");
        tokio::time::timeout(WAIT, views.changed())
            .await
            .expect("vehicle view")
            .unwrap();
        let v = views.borrow_and_update().clone();
        let snap = fc.snapshot().borrow().clone();
        let Some(p) = snap.position else { continue };
        let heading = snap.heading_deg.unwrap_or(v.heading_deg);
        let frame = render(&scene, &cam, &Pose::of_view(&v));
        let found = det.detect(&frame).unwrap();
        if let Some(m) = found.iter().find(|m| m.id == id) {
            fc.send_landing_target(landing_target(m, &intr, SystemTime::now()))
                .await
                .unwrap();
            landing_targets += 1;
        }
        let at = GeoPoint::new(p.lat_deg, p.lon_deg, p.alt_rel_m);
        let speed_mps = snap.velocity_ned_mps.map_or(0.0, |v| v[0].hypot(v[1]));
        let pose = drone_agent::precision::Pose {
            at,
            heading_deg: heading,
            speed_mps,
        };
        match approach.frame(v.t_s, &found, pose) {
            Decision::Steer(to) => fc.goto(to).await.unwrap(),
            Decision::Centred => break,
            Decision::Failed(f) => return End::Failed(f),
            Decision::Wait => {}
        }
        if let Decision::Failed(f) = approach.tick(v.t_s) {
            return End::Failed(f);
        }
    }
    let v = veh.view().borrow().clone();
    let (n, e) = ne(m_lat, m_lon, v.lat_deg, v.lon_deg);
    let error = n.hypot(e);
    eprintln!(
        "gps error {gps_error_ne:?}: started {start_error:.2} m off, ended {error:.3} m off at {:.2} m, {landing_targets} LANDING_TARGETs",
        v.alt_rel_m
    );
    assert!(
        error < 0.3,
        "ended {error:.2} m off the marker (started {start_error:.2} m)"
    );
    assert!((v.alt_rel_m - 3.0).abs() < 0.6, "height {}", v.alt_rel_m);
    assert!(landing_targets >= 3);
    veh.wait_for(WAIT, |v| v.landing_targets >= landing_targets)
        .await
        .expect("the autopilot got every LANDING_TARGET");
    End::Centred
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_metres_of_gps_error_south() {
    centres_from((3.0, 0.0), 23).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_metres_of_gps_error_north_east() {
    centres_from((-2.1, -2.1), 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_lockers_marker_fails_naming_it() {
    match fly((3.0, 0.0), Some(9), 23).await {
        End::Failed(drone_agent::precision::ApproachFailure::WrongMarker {
            want, seen, ..
        }) => {
            assert_eq!((want, seen), (23, vec![9]));
        }
        End::Failed(f) => panic!("wrong failure: {f}"),
        End::Centred => panic!("centred over the wrong marker"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_marker_fails() {
    match fly((3.0, 0.0), None, 23).await {
        End::Failed(drone_agent::precision::ApproachFailure::NotSeen { want: 23, .. }) => {}
        End::Failed(f) => panic!("wrong failure: {f}"),
        End::Centred => panic!("centred without a marker"),
    }
}
