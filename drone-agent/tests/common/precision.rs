//! A precision approach set up for tests and benches: the sim vehicle with GPS error, the sim's
//! downward camera rendering into a frame directory (read by the agent's `[camera]`), the agent
//! with `[precision]`, and a task for the locker.

use super::*;
use protocol::geo::{LatLon, NorthEast};
use protocol::Envelope;
use sim::camera::{spawn_feed, CameraModel, FeedHandle, Scene};
use sim::vehicle::{self, Flavour, Transport, VehicleConfig, VehicleHandle};
use std::net::SocketAddr;
use std::time::Duration;

/// Slow enough that a debug build's render + detect keeps up with the vehicle.
pub const PRECISION_SPEEDUP: f64 = 3.0;

pub fn offset(p: (f64, f64), n: f64, e: f64) -> (f64, f64) {
    let q = LatLon::new(p.0, p.1).offset(NorthEast::new(n, e));
    (q.lat_deg, q.lon_deg)
}

/// Horizontal metres between two points (the flat offset's length, as the approach measures).
pub fn metres_between(a: (f64, f64), b: (f64, f64)) -> f64 {
    LatLon::new(a.0, a.1)
        .north_east_to(LatLon::new(b.0, b.1))
        .length_m()
}

pub struct Setup {
    /// GPS error of the vehicle, north/east metres.
    pub gps_error: (f64, f64),
    /// The locker from home, north/east metres.
    pub locker_ne: (f64, f64),
    /// The marker id painted on the locker (None: no marker).
    pub shown: Option<u32>,
    /// The camera's frame directory exists (false: camera unplugged).
    pub camera_present: bool,
    /// Extra lines for `[precision]`.
    pub precision: &'static str,
}

/// One flight at a time: each renders and detects ~12 frames a second, and two cores shared by
/// several would fall behind the vehicle.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Flight {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    pub vehicle: VehicleHandle,
    pub backend: Backend,
    pub agent: InProcessAgent,
    pub marker: (f64, f64),
    _feed: FeedHandle,
    _dir: tempfile::TempDir,
}

pub async fn fly(s: Setup) -> Flight {
    let turn = ONE_AT_A_TIME.lock().await;
    let mut vc = VehicleConfig::standard(Flavour::ArduPilot);
    vc.speedup = PRECISION_SPEEDUP;
    vc.seed = 11;
    vc.transport = Transport::Tcp {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    vc.params.gps_offset_ne_m = s.gps_error;
    let marker = offset((vc.home.0, vc.home.1), s.locker_ne.0, s.locker_ne.1);
    let vehicle = vehicle::spawn(vc).await.unwrap();
    let connection = format!("tcpout:{}", vehicle.local_addr());
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let cam = CameraModel {
        blur_sigma: 0.6,
        noise: 6,
        ..CameraModel::default()
    };
    let feed = spawn_feed(
        vehicle.view(),
        Scene {
            marker_lat: marker.0,
            marker_lon: marker.1,
            marker_id: s.shown,
            marker_size_m: 0.4,
        },
        cam.clone(),
        frames.clone(),
        Duration::from_millis(80),
    );
    let camera_dir = if s.camera_present {
        frames
    } else {
        dir.path().join("unplugged")
    };
    let toml = config_toml(&backend.url, &connection, &dir.path().join("state"))
        .replace("cruise_alt_m = 20.0", "cruise_alt_m = 10.0")
        .replace(
            "alt_tolerance_m = 0.5\n",
            "alt_tolerance_m = 0.5\nmax_nav_attempts = 2\n",
        )
        + &format!(
            r#"
[camera]
source = {{ kind = "directory", path = "{}" }}
fps = 12.0
hfov_deg = {}
[precision]
marker_size_m = 0.4
acquire_timeout_s = 5.0
{}
"#,
            camera_dir.display(),
            cam.hfov_deg,
            s.precision
        );
    let agent = InProcessAgent::start(parse_config(&toml));
    let mut backend = backend;
    backend.registered().await;
    arm_ready(&vehicle, Flavour::ArduPilot).await;
    let mut t = task(marker);
    t.destination.aruco_id = 23;
    assert!(backend.send(Envelope::new(t)));
    Flight {
        _turn: turn,
        vehicle,
        backend,
        agent,
        marker,
        _feed: feed,
        _dir: dir,
    }
}
