//! OpenCV's ArUco detector on frames the sim's downward camera renders: ids, and where the
//! marker is relative to the vehicle, against the truth the sim drew it from.
//!
//! `cargo test -p hal --features opencv --test aruco_sim`
#![cfg(feature = "opencv")]

use hal::marker::{ArucoDetector, Dictionary, MarkerConfig, MarkerDetector};
use protocol::geo::{LatLon, NorthEast};
use sim::camera::{render, CameraModel, Pose, Scene};

const LAT: f64 = 47.397_742;
const LON: f64 = 8.545_594;

fn cfg() -> MarkerConfig {
    MarkerConfig {
        dictionary: Dictionary::Dict4x4_50,
        marker_size_m: 0.4,
        hfov_deg: Some(70.0),
        fx: None,
        fy: None,
        cx: None,
        cy: None,
    }
}

fn scene(id: Option<u32>) -> Scene {
    Scene {
        marker_lat: LAT,
        marker_lon: LON,
        marker_id: id,
        marker_size_m: 0.4,
    }
}

/// A vehicle `north`, `east` metres from the marker.
fn pose(north: f64, east: f64, height_m: f64, heading_deg: f64) -> Pose {
    let at = LatLon::new(LAT, LON).offset(NorthEast::new(north, east));
    Pose {
        lat: at.lat_deg,
        lon: at.lon_deg,
        height_m,
        heading_deg,
    }
}

#[test]
fn finds_the_marker_and_where_it_is_from_many_poses() {
    let cam = CameraModel {
        blur_sigma: 0.8,
        noise: 8,
        ..CameraModel::default()
    };
    let mut det = ArucoDetector::new(&cfg()).unwrap();
    for &(n, e, h, hdg) in &[
        (0.0, 0.0, 3.0, 0.0),
        (3.0, 0.0, 8.0, 0.0),
        (-1.5, 2.0, 6.0, 45.0),
        (0.5, -0.7, 2.0, 200.0),
        (2.0, 2.0, 10.0, 300.0),
    ] {
        let img = render(&scene(Some(23)), &cam, &pose(n, e, h, hdg));
        let found = det.detect(&img).unwrap();
        assert_eq!(found.len(), 1, "pose {n},{e},{h},{hdg}: {found:?}");
        let m = &found[0];
        assert_eq!(m.id, 23);
        // the marker is at (-n, -e) from the vehicle in north/east; in the body frame:
        let (s, c) = hdg.to_radians().sin_cos();
        let fwd = -n * c - e * s;
        let right = n * s - e * c;
        let g = m.target;
        let tol = 0.03 * h;
        assert!(
            (g.forward_m - fwd).abs() < tol,
            "{n},{e},{h},{hdg}: {g:?} want fwd {fwd}"
        );
        assert!(
            (g.right_m - right).abs() < tol,
            "{n},{e},{h},{hdg}: {g:?} want right {right}"
        );
        // distance comes from the apparent size: at 10 m a 0.4 m marker is 18 px, and a tenth
        // of a pixel per corner is half a percent
        assert!(
            (g.distance_m - h).abs() < 0.05 * h,
            "{n},{e},{h},{hdg}: {g:?}"
        );
    }
}

#[test]
fn other_ids_and_no_marker() {
    let mut det = ArucoDetector::new(&cfg()).unwrap();
    let cam = CameraModel::default();
    for id in [0, 1, 17, 49] {
        let found = det
            .detect(&render(&scene(Some(id)), &cam, &pose(0.3, 0.2, 4.0, 10.0)))
            .unwrap();
        assert_eq!(found.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    }
    let found = det
        .detect(&render(&scene(None), &cam, &pose(0.0, 0.0, 4.0, 0.0)))
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
}
