//! The video path's cost: JPEG encoding per frame and the camera worker's CPU at a video rate.
//!
//! ```text
//! cargo bench -p drone-agent --bench video_cpu                  # 640x480 at 5 fps for 20 s
//! VIDEO_SECONDS=60 VIDEO_FPS=5 cargo bench -p drone-agent --bench video_cpu
//! ```
//!
//! The camera is an in-memory source handing out one sim-rendered 640×480 downward frame (what
//! a V4L2 capture costs is the driver's, not ours); the worker (`drone_agent::camera`) grabs at the
//! video rate, encodes each frame as JPEG, base64s it and hands it to a sink standing in for the
//! cloud link's video queue. CPU is this process's user+system time over the run, as a share of
//! one core.

use drone_agent::camera::{self, CameraWork, WorkerConfig};
use drone_agent::config::VideoConfig;
use hal::camera::{Camera, CameraError, Frame};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct StillCamera(Frame);

impl Camera for StillCamera {
    fn grab(&mut self) -> Result<Frame, CameraError> {
        Ok(self.0.clone())
    }
    fn describe(&self) -> String {
        "still frame in memory".into()
    }
}

fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env_f64("VIDEO_SECONDS", 20.0);
    let fps = env_f64("VIDEO_FPS", 5.0);
    let scene = sim::camera::Scene {
        marker_lat: 47.0,
        marker_lon: 8.0,
        marker_id: Some(7),
        marker_size_m: 0.4,
    };
    let cam = sim::camera::CameraModel {
        noise: 6,
        ..sim::camera::CameraModel::default()
    };
    let pose = sim::camera::Pose {
        lat: 47.00001,
        lon: 8.0,
        height_m: 6.0,
        heading_deg: 30.0,
    };
    let frame = sim::camera::render(&scene, &cam, &pose);
    let video = VideoConfig {
        enabled: true,
        fps,
        width: 640,
        height: 480,
        jpeg_quality: 60,
    };

    // encoding alone
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..50 {
        let t = Instant::now();
        let jpeg = camera::encode_jpeg(&frame, 640, 480, video.jpeg_quality).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = jpeg.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "JPEG encode 640x480 q{}: median {:.2} ms, p90 {:.2} ms, {} KiB per frame ({} KiB base64)",
        video.jpeg_quality,
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        bytes / 1024,
        bytes.div_ceil(3) * 4 / 1024
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let (_pose_tx, pose_rx) = tokio::sync::watch::channel(hal::flight::FcSnapshot::initial());
        let still = frame.clone();
        let rig = camera::spawn(
            Box::new(move || Ok(Box::new(StillCamera(still.clone())) as Box<dyn Camera>)),
            pose_rx,
            None,
            WorkerConfig {
                fps,
                lost_after: Duration::from_secs(5),
                video,
            },
            Box::new(move |_frame| {
                counter.fetch_add(1, Ordering::Relaxed);
                true
            }),
            "still".into(),
        )
        .unwrap();
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        rig.work.send_replace(CameraWork {
            detect: false,
            video: true,
        });
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let n = sent.load(Ordering::Relaxed);
        println!(
            "video path at {fps} fps 640x480 for {wall:.1} s: {n} frames ({:.2} fps), CPU {:.2} % of one core",
            n as f64 / wall,
            cpu / wall * 100.0
        );
    });
}
