//! The downward camera's worker: one thread that grabs frames while something needs them, finds
//! markers while an approach is running, and encodes video frames while video is on.
//!
//! Cameras and detectors block and burn CPU, so they live on a thread of their own; the runtime
//! talks to it through two channels: [`CameraRig::work`] says what is wanted (detection, video),
//! [`CameraRig::reports`] brings back sightings and faults. Detection results go through a small
//! bounded queue and are dropped when the runtime is behind: a stale sighting is worse than none.
//! Video frames go straight to the cloud link's own queue ([`VideoSink`]), which drops and counts
//! when the link is slow; the count rides in every frame (`dropped`).
//!
//! The thread is `hal::camera::grab::GrabLoop`, the locker's too: a camera that errors or stops
//! delivering is reported once ([`CameraReport::Fault`]), reopened with a backoff from a quarter
//! of a second up to [`REOPEN_MAX`], and reported again when it is back
//! ([`CameraReport::Restored`]).

use crate::config::VideoConfig;
use base64::Engine as _;
use hal::camera::grab::{CameraHealth, FrameSink, GrabConfig, GrabLoop, Opener};
use hal::camera::Frame;
use hal::flight::{FcSnapshot, GeoPoint};
use hal::marker::{MarkerDetection, MarkerDetector};
use protocol::ws::VideoFrame;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// What the runtime currently needs from the camera.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CameraWork {
    /// Run the marker detector on every frame and report sightings.
    pub detect: bool,
    /// Encode and send video frames.
    pub video: bool,
}

/// One frame's detections.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// When `grab` returned the frame (monotonic, for latency and the approach's clock).
    pub captured: Instant,
    /// The same moment on the wall clock (LANDING_TARGET carries it).
    pub captured_wall: SystemTime,
    /// Width and height of the frame, pixels.
    pub frame_size: (u32, u32),
    /// Where the autopilot said the vehicle was, and its heading, when the frame was grabbed:
    /// an offset seen in the frame is relative to that pose, not to a later one.
    pub at: Option<GeoPoint>,
    pub heading_deg: Option<f64>,
    /// Horizontal speed then, m/s.
    pub speed_mps: Option<f64>,
    pub markers: Result<Vec<MarkerDetection>, String>,
}

#[derive(Debug, Clone)]
pub enum CameraReport {
    Sighting(Sighting),
    /// The camera failed (unplugged, errors, no frames); it is being reopened.
    Fault(String),
    /// Frames are arriving again after a fault.
    Restored,
}

/// Where video frames go: `true` if taken, `false` if dropped (the link's queue is full).
pub type VideoSink = Box<dyn FnMut(VideoFrame) -> bool + Send>;

/// Opens (and after a fault, reopens) the camera.
pub type CameraOpener = Opener;

/// The runtime's end of the worker.
pub struct CameraRig {
    pub work: watch::Sender<CameraWork>,
    pub reports: mpsc::Receiver<CameraReport>,
    /// What the camera is, for logs and the technician.
    pub describe: String,
    /// The grab loop's health: frames, errors, reopens.
    pub health: watch::Receiver<CameraHealth>,
}

/// Sightings waiting for the runtime: a few, then the newest are dropped rather than queued.
const REPORT_QUEUE: usize = 4;
/// The longest wait between attempts to reopen a failed camera (an approach cannot wait long).
pub const REOPEN_MAX: Duration = Duration::from_secs(1);

pub struct WorkerConfig {
    pub fps: f64,
    pub lost_after: Duration,
    pub video: VideoConfig,
}

/// Starts the worker thread. It ends when the [`CameraRig`] is dropped.
pub fn spawn(
    open: CameraOpener,
    pose: watch::Receiver<FcSnapshot>,
    detector: Option<Box<dyn MarkerDetector>>,
    cfg: WorkerConfig,
    video_sink: VideoSink,
    describe: String,
) -> std::io::Result<CameraRig> {
    let (work_tx, work_rx) = watch::channel(CameraWork::default());
    let (report_tx, reports) = mpsc::channel(REPORT_QUEUE);
    // the worker thread is outside the runtime; it waits for work through the runtime's handle
    let runtime = tokio::runtime::Handle::current();
    let grab_cfg = GrabConfig {
        lost_after: cfg.lost_after,
        reopen_max: REOPEN_MAX,
        ..GrabConfig::new(cfg.fps)
    };
    let worker = Worker {
        pose,
        detector,
        cfg,
        video_sink,
        reports: report_tx,
        video: VideoState::default(),
        work_rx,
        work: CameraWork::default(),
        runtime,
    };
    // it ends with the rig: the worker says so once `work` or `reports` is dropped
    let health = GrabLoop::spawn("camera", describe.clone(), open, grab_cfg, worker)?.detach();
    Ok(CameraRig {
        work: work_tx,
        reports,
        describe,
        health,
    })
}

#[derive(Default)]
struct VideoState {
    next_due: Option<Instant>,
    seq: u64,
    dropped: u64,
    last_drop_log: Option<Instant>,
}

struct Worker {
    pose: watch::Receiver<FcSnapshot>,
    detector: Option<Box<dyn MarkerDetector>>,
    cfg: WorkerConfig,
    video_sink: VideoSink,
    reports: mpsc::Sender<CameraReport>,
    video: VideoState,
    work_rx: watch::Receiver<CameraWork>,
    /// What the current frame is for.
    work: CameraWork,
    runtime: tokio::runtime::Handle,
}

impl FrameSink for Worker {
    fn wanted(&mut self) -> bool {
        loop {
            self.work = *self.work_rx.borrow_and_update();
            if self.work.detect || self.work.video {
                // the rig is gone: stop
                return self.work_rx.has_changed().is_ok();
            }
            // idle: no frames, no CPU; wake when something is wanted (or the rig is gone)
            if self.runtime.block_on(self.work_rx.changed()).is_err() {
                return false;
            }
        }
    }

    fn frame(&mut self, frame: Frame, captured: Instant, captured_wall: SystemTime) -> bool {
        if self.work.detect {
            self.detect(&frame, captured, captured_wall);
        }
        if self.work.video {
            self.video_frame(&frame, captured);
        }
        !self.reports.is_closed()
    }

    fn fault(&mut self, why: &str, first: bool) {
        if first {
            error!(reason = %why, "camera failed; reopening it");
            // blocking: a fault must not be lost to a queue full of sightings
            let _ = self
                .reports
                .blocking_send(CameraReport::Fault(why.to_owned()));
        } else {
            debug!(reason = %why, "camera still unavailable");
        }
    }

    fn restored(&mut self) {
        info!("camera delivering frames again");
        let _ = self.reports.blocking_send(CameraReport::Restored);
    }
}

impl Worker {
    fn detect(&mut self, frame: &Frame, captured: Instant, captured_wall: SystemTime) {
        let Some(det) = self.detector.as_mut() else {
            return;
        };
        let (at, heading_deg, speed_mps) = {
            let snap = self.pose.borrow();
            (
                snap.position
                    .map(|p| GeoPoint::new(p.lat_deg, p.lon_deg, p.alt_rel_m)),
                snap.heading_deg,
                snap.velocity_ned_mps.map(|v| v[0].hypot(v[1])),
            )
        };
        let markers = det.detect(frame).map_err(|e| e.to_string());
        let sighting = Sighting {
            captured,
            captured_wall,
            frame_size: frame.dimensions(),
            at,
            heading_deg,
            speed_mps,
            markers,
        };
        if self
            .reports
            .try_send(CameraReport::Sighting(sighting))
            .is_err()
        {
            debug!("runtime behind: sighting dropped");
        }
    }

    fn video_frame(&mut self, frame: &Frame, captured: Instant) {
        let v = &self.cfg.video;
        let due = self.video.next_due.is_none_or(|d| captured >= d);
        if !due {
            return;
        }
        // on a grid of the video period, unless more than a period behind
        let period = Duration::from_secs_f64(1.0 / v.fps.max(0.1));
        let next = self.video.next_due.unwrap_or(captured) + period;
        self.video.next_due = Some(if next <= captured {
            captured + period
        } else {
            next
        });
        let jpeg = match encode_jpeg(frame, v.width, v.height, v.jpeg_quality) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "video frame could not be encoded");
                return;
            }
        };
        let msg = VideoFrame {
            frame: base64::engine::general_purpose::STANDARD.encode(&jpeg),
            width: v.width,
            height: v.height,
            seq: self.video.seq,
            dropped: (self.video.dropped > 0).then_some(self.video.dropped),
        };
        self.video.seq += 1;
        if !(self.video_sink)(msg) {
            self.video.dropped += 1;
            let quiet = self
                .video
                .last_drop_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if quiet {
                warn!(
                    dropped_total = self.video.dropped,
                    "cloud link slower than the video: frames dropped"
                );
                self.video.last_drop_log = Some(Instant::now());
            }
        }
    }
}

/// JPEG of `frame` scaled to `width`×`height` (grey: the camera path is greyscale end to end).
pub fn encode_jpeg(
    frame: &Frame,
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, image::ImageError> {
    let scaled;
    let img = if frame.dimensions() == (width, height) {
        frame
    } else {
        scaled =
            image::imageops::resize(frame, width, height, image::imageops::FilterType::Triangle);
        &scaled
    };
    let mut out = Vec::with_capacity((width * height / 8) as usize);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img)?;
    Ok(out)
}
