//! Marker detection time per 640×480 frame (target: median under 5 ms), on frames rendered by the
//! sim's downward camera from a spread of poses (heights 2–10 m, offsets up to height/4, any heading,
//! blur and noise on), one marker in view.
//!
//! `cargo run --release -p hal --features opencv --example bench-aruco [FRAMES]`

#[cfg(feature = "opencv")]
fn main() {
    use hal::marker::{ArucoDetector, Dictionary, MarkerConfig, MarkerDetector};
    use protocol::geo::{LatLon, NorthEast};
    use sim::camera::{render, CameraModel, Pose, Scene};
    use std::time::Instant;

    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let (lat, lon) = (47.397_742, 8.545_594);
    let scene = Scene {
        marker_lat: lat,
        marker_lon: lon,
        marker_id: Some(23),
        marker_size_m: 0.4,
    };
    let cam = CameraModel {
        blur_sigma: 0.8,
        noise: 8,
        ..CameraModel::default()
    };
    let frames: Vec<_> = (0..n.min(50))
        .map(|i| {
            let k = i as f64;
            // offsets up to a quarter of the height: the marker stays in a 70° view
            let height = 2.0 + (k * 0.37) % 8.0;
            let (north, east) = (
                0.25 * height * (k * 0.7).sin(),
                0.25 * height * (k * 1.3).cos(),
            );
            let at = LatLon::new(lat, lon).offset(NorthEast::new(north, east));
            render(
                &scene,
                &cam,
                &Pose {
                    lat: at.lat_deg,
                    lon: at.lon_deg,
                    height_m: height,
                    heading_deg: (k * 47.0) % 360.0,
                },
            )
        })
        .collect();
    let cfg = MarkerConfig {
        dictionary: Dictionary::Dict4x4_50,
        marker_size_m: 0.4,
        hfov_deg: Some(70.0),
        fx: None,
        fy: None,
        cx: None,
        cy: None,
    };
    let mut det = match ArucoDetector::new(&cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut times = Vec::with_capacity(n);
    let mut seen = 0;
    for i in 0..n {
        let t = Instant::now();
        let found = det.detect(&frames[i % frames.len()]).unwrap_or_default();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        seen += usize::from(found.iter().any(|m| m.id == 23));
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "aruco 640x480: frames={n} found={seen} median={:.2}ms p90={:.2}ms max={:.2}ms",
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
}

#[cfg(not(feature = "opencv"))]
fn main() {
    eprintln!("build with --features opencv");
}
